//! The dashboard's webhook pages: every endpoint with its state, and one endpoint's page —
//! its settings, its success rate over the last 24 hours, and its latest deliveries with
//! every attempt (status code, duration, the first KiB of the answer, the error), as the
//! delivery log (`GET /webhook-endpoints/{id}/deliveries`) has them.

use maud::{Markup, html};
use notifications::report::{EndpointReport, EndpointRow};

use super::pages::{Page, clock, layout, path_segment, state_badge};

/// `/admin/webhooks`: every live endpoint.
pub fn endpoints(page: &Page<'_>, endpoints: &[EndpointRow]) -> Markup {
    layout(
        page,
        html! {
            h1 { "Webhook endpoints" }
            @if endpoints.is_empty() {
                p.empty { "No webhook endpoint yet." }
            } @else {
                table #endpoints {
                    thead { tr { th { "Endpoint" } th { "URL" } th { "Events" } th { "State" } } }
                    tbody {
                        @for e in endpoints {
                            tr {
                                td { a href={ "/admin/webhooks/" (path_segment(&e.id.to_string())) } { code { (e.id) } } }
                                td { (e.url) @if !e.description.is_empty() { br; span.muted.small { (e.description) } } }
                                td { (e.events.join(", ")) }
                                td { (status(e)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn status(e: &EndpointRow) -> Markup {
    html! {
        @match &e.disabled {
            Some((at, reason)) => { (state_badge("disabled")) " " span.small { (reason) ", since " (clock(*at)) } }
            None => { (state_badge("enabled")) }
        }
    }
}

/// `/admin/webhooks/{id}`: one endpoint, its 24 h success rate and its latest deliveries.
pub fn endpoint(page: &Page<'_>, report: &EndpointReport) -> Markup {
    let e = &report.endpoint;
    let rate = if report.attempts_24h == 0 {
        "—".to_owned()
    } else {
        // Counts are far below 2^52: exact as floats.
        #[allow(clippy::cast_precision_loss)]
        let share = report.succeeded_24h as f64 * 100.0 / report.attempts_24h as f64;
        format!("{share:.1} %")
    };
    layout(
        page,
        html! {
            p.crumbs { a href="/admin/webhooks" { "Webhook endpoints" } " / endpoint" }
            h1 { (e.url) " " (status(e)) }
            section.cards {
                div.card #success-rate { span.label { "Success rate, last 24 h" } span.value { (rate) } }
                div.card { span.label { "Attempts, last 24 h" } span.value { (report.attempts_24h) } }
                div.card { span.label { "Max in flight" } span.value { (e.max_in_flight) } }
                div.card { span.label { "Rate limit" } span.value { (e.rate_limit.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"))) } }
            }
            dl.facts {
                dt { "Id" } dd { code { (e.id) } }
                dt { "Events" } dd { (e.events.join(", ")) }
                @if !e.description.is_empty() { dt { "Description" } dd { (e.description) } }
            }
            h2 { "Latest deliveries" }
            @if report.deliveries.is_empty() {
                p.empty { "No delivery yet." }
            } @else {
                table #deliveries {
                    thead { tr { th { "Message" } th { "Event" } th { "Happened" } th { "Status" } th { "Attempts" } } }
                    tbody {
                        @for d in &report.deliveries {
                            tr.delivery {
                                td { code { (d.message_id) } }
                                td { (d.event) }
                                td.nowrap { (clock(d.occurred_at)) }
                                td { (state_badge(&d.status)) }
                                td {
                                    @if d.attempts.is_empty() { span.muted { "none" } }
                                    @for a in &d.attempts {
                                        div.attempt {
                                            span.nowrap { (clock(a.attempted_at)) } " · "
                                            strong { (a.status_code.map_or_else(|| "no answer".to_owned(), |c| c.to_string())) }
                                            " · " (a.duration_ms) " ms"
                                            @if let Some(err) = &a.error { " · " span.error { (err) } }
                                            @if !a.response.is_empty() { details { summary { "answer" } code { (a.response) } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
