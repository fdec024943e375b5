//! The dashboard's pages, written with `maud`: HTML checked at compile time, and every
//! dynamic value escaped (only the stylesheet below is inserted as is).

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use runtime::activity::QueueActivity;
use runtime::admin::{AttemptRecord, DeadLetterGroup, JobRecord, QueueStats, Throughput};
use runtime::trace::{Trace, TraceNode};

use super::session::Flash;

/// The stylesheet, embedded in every page (no other request, no build step).
const CSS: &str = include_str!("style.css");

/// Which part of the dashboard a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/admin`.
    Queues,
    /// `/admin/dead` and the job pages.
    Dead,
    /// `/admin/trace`.
    Trace,
    /// `/admin/scheduled`.
    Schedules,
    /// `/admin/webhooks` and an endpoint's page.
    Webhooks,
}

/// What every signed-in page needs besides its content.
#[derive(Debug)]
pub struct Page<'a> {
    /// The `<title>` and heading.
    pub title: &'a str,
    /// The highlighted navigation entry.
    pub section: Section,
    /// The session's CSRF token for forms (`None` for bearer callers).
    pub csrf: Option<&'a str>,
    /// A message left by the last action.
    pub flash: Option<&'a Flash>,
}

fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Keel admin" }
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
}

/// A signed-in page: header with navigation, the flash, then `content`.
pub(super) fn layout(page: &Page<'_>, content: Markup) -> Markup {
    let nav = [
        (Section::Queues, "/admin", "Queues"),
        (Section::Dead, "/admin/dead", "Dead letters"),
        (Section::Schedules, "/admin/scheduled", "Schedules"),
        (Section::Trace, "/admin/trace", "Trace"),
        (Section::Webhooks, "/admin/webhooks", "Webhooks"),
    ];
    document(
        page.title,
        html! {
            header.top {
                a.brand href="/admin" { "Keel" span.muted { " admin" } }
                nav {
                    @for (section, href, label) in nav {
                        a href=(href) class=[(section == page.section).then_some("active")] { (label) }
                    }
                }
                @if let Some(csrf) = page.csrf {
                    form.logout method="post" action="/admin/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.link type="submit" { "Log out" }
                    }
                }
            }
            main {
                @if let Some(flash) = page.flash {
                    p class={ "flash " (if flash.ok { "ok" } else { "bad" }) } role="status" { (flash.text) }
                }
                (content)
            }
        },
    )
}

/// The hidden CSRF field every state-changing form carries.
fn csrf_field(page: &Page<'_>) -> Markup {
    html! {
        @if let Some(csrf) = page.csrf {
            input type="hidden" name="csrf" value=(csrf);
        }
    }
}

/// The login form, with an optional refusal.
pub fn login(error: Option<&str>) -> Markup {
    document(
        "Log in",
        html! {
            main.narrow {
                h1 { "Keel admin" }
                p.muted { "Enter the admin token (" code { "KEEL_ADMIN_TOKEN" } " or " code { "[http] admin_token" } ")." }
                @if let Some(error) = error {
                    p.flash.bad role="alert" { (error) }
                }
                form.card method="post" action="/admin/login" {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// What every admin page says while no admin token is configured.
pub fn disabled() -> Markup {
    problem(
        "Admin is disabled",
        "No admin token is configured, so the dashboard and the admin API are switched off. \
         Set KEEL_ADMIN_TOKEN (or admin_token under [http] in keel.toml) and restart keel.",
    )
}

/// A page that explains why there is nothing else to show.
pub fn problem(title: &str, message: &str) -> Markup {
    document(
        title,
        html! {
            main.narrow {
                h1 { (title) }
                p { (message) }
                p { a href="/admin" { "Back to the dashboard" } }
            }
        },
    )
}

/// `/admin`: every queue's depth, throughput and oldest ready job; workers alive.
pub fn overview(
    page: &Page<'_>,
    stats: &[QueueStats],
    throughput: &[Throughput],
    activity: &[QueueActivity],
    workers_alive: i64,
    now: DateTime<Utc>,
) -> Markup {
    let done: HashMap<&str, &Throughput> =
        throughput.iter().map(|t| (t.queue.as_str(), t)).collect();
    let charts: HashMap<&str, &QueueActivity> =
        activity.iter().map(|a| (a.queue.as_str(), a)).collect();
    let dead: i64 = stats.iter().map(|s| s.dead).sum();
    let waiting: i64 = stats.iter().map(|s| s.ready + s.retrying).sum();
    let last_hour: i64 = throughput.iter().map(|t| t.last_hour).sum();
    layout(
        page,
        html! {
            h1 { "Queues" }
            section.cards {
                div.card { span.label { "Workers alive" } span.value { (workers_alive) } }
                div.card { span.label { "Waiting" } span.value { (waiting) } }
                div.card { span.label { "Completed, last hour" } span.value { (last_hour) } }
                a.card href="/admin/dead" {
                    span.label { "Dead letters" }
                    span class={ "value" (if dead > 0 { " bad" } else { "" }) } { (dead) }
                }
            }
            table #queues {
                thead {
                    tr {
                        th { "Queue" }
                        th.num { "Ready" } th.num { "Scheduled" } th.num { "Reserved" } th.num { "Running" }
                        th.num { "Retrying" } th.num { "Dead" } th.num { "Oldest ready" }
                        th.num { "Done / min" } th.num { "Done / hour" }
                        th { "Last hour: done / failed" }
                    }
                }
                tbody {
                    @for s in stats {
                        @let t = done.get(s.queue.as_str());
                        tr {
                            td { strong { (s.queue) } }
                            td.num { (s.ready) }
                            td.num { (s.scheduled) }
                            td.num { (s.reserved) }
                            td.num { (s.running) }
                            td.num { (s.retrying) }
                            td.num {
                                @if s.dead > 0 { a.badge.bad href="/admin/dead" { (s.dead) } } @else { "0" }
                            }
                            td.num { (s.oldest_ready_age_seconds.map_or_else(|| "—".to_owned(), age)) }
                            td.num { (t.map_or(0, |t| t.last_minute)) }
                            td.num { (t.map_or(0, |t| t.last_hour)) }
                            td.chart {
                                @if let Some(a) = charts.get(s.queue.as_str()) { (super::chart::last_hour(a)) }
                            }
                        }
                    }
                }
            }
            p.muted.small { "As of " (clock(now)) " UTC. Reload for fresh numbers." }
        },
    )
}

/// `/admin/dead`: dead letters grouped by queue, job type and error class.
pub fn dead_groups(page: &Page<'_>, groups: &[DeadLetterGroup]) -> Markup {
    layout(
        page,
        html! {
            h1 { "Dead letters" }
            @if groups.is_empty() {
                p.empty { "No dead letters. Every job either completed or is still being retried." }
            } @else {
                p.muted { "Jobs that used up their attempts, grouped by how they failed. "
                    "Replaying a group runs one job first; the rest follow only if it succeeds." }
                table #groups {
                    thead {
                        tr {
                            th { "Queue" } th { "Job type" } th { "Error class" } th.num { "Count" }
                            th { "Example error" } th { "Latest" } th {}
                        }
                    }
                    tbody {
                        @for g in groups {
                            tr {
                                td { (g.queue) }
                                td { code { (g.job_type) } }
                                td { (g.error_class) }
                                td.num { span.badge.bad { (g.count) } }
                                td.error { (g.example_error) }
                                td.nowrap { (g.latest.map_or_else(|| "—".to_owned(), clock)) }
                                td.actions {
                                    form.replay-group method="post" action={ "/admin/dead/groups/" (path_segment(&g.id)) "/replay" } {
                                        (csrf_field(page))
                                        button type="submit" { "Replay group" }
                                    }
                                    a href={ "/admin/dead/groups/" (path_segment(&g.id)) } { "Members" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/admin/dead/groups/{id}`: the dead jobs of one group.
pub fn group_members(page: &Page<'_>, group: &DeadLetterGroup, jobs: &[JobRecord]) -> Markup {
    layout(
        page,
        html! {
            p.crumbs { a href="/admin/dead" { "Dead letters" } " / group " code { (group.id) } }
            h1 { code { (group.job_type) } " on " (group.queue) }
            p { "Error class: " span.error { (group.error_class) } }
            form.replay-group method="post" action={ "/admin/dead/groups/" (path_segment(&group.id)) "/replay" } {
                (csrf_field(page))
                button type="submit" { "Replay group (" (group.count) ")" }
            }
            table #members {
                thead {
                    tr { th { "Job" } th.num { "Attempts" } th.num { "Replays" } th { "Died" } th { "Last error" } }
                }
                tbody {
                    @for j in jobs {
                        tr {
                            td { a href={ "/admin/jobs/" (path_segment(&j.id)) } { code { (j.id) } } }
                            td.num { (j.attempt) " / " (j.max_attempts) }
                            td.num { (j.replays) }
                            td.nowrap { (j.finished_at.map_or_else(|| "—".to_owned(), clock)) }
                            td.error { (j.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

/// `/admin/jobs/{id}`: one job, every attempt, and — when it is dead — replay and purge.
pub fn job(page: &Page<'_>, job: &JobRecord) -> Markup {
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    layout(
        page,
        html! {
            p.crumbs { a href="/admin/dead" { "Dead letters" } " / job" }
            h1 { code { (job.job_type) } " " (state_badge(&job.state)) }
            dl.facts {
                dt { "Id" } dd { code { (job.id) } }
                dt { "Queue" } dd { (job.queue) }
                dt { "Attempts" } dd { (job.attempt) " of " (job.max_attempts) @if job.replays > 0 { " (replayed " (job.replays) "×)" } }
                dt { "Correlation id" } dd { a href={ "/admin/trace?correlation_id=" (query_value(&job.correlation_id)) } { code { (job.correlation_id) } } }
                dt { "Caused by" } dd { code { (job.causation_id.as_deref().unwrap_or("—")) } }
                dt { "Enqueued" } dd { (clock(job.enqueued_at)) }
                dt { "Finished" } dd { (job.finished_at.map_or_else(|| "—".to_owned(), clock)) }
                dt { "Idempotency key" } dd { code { (job.idempotency_key) } }
                @if let Some(e) = &job.last_error { dt { "Last error" } dd.error { (e) } }
            }
            @if job.state == "dead" {
                div.actions-row {
                    form method="post" action={ "/admin/jobs/" (path_segment(&job.id)) "/replay" } {
                        (csrf_field(page))
                        button type="submit" { "Replay" }
                    }
                    form.purge method="post" action={ "/admin/jobs/" (path_segment(&job.id)) "/purge" } {
                        (csrf_field(page))
                        label {
                            input type="checkbox" name="confirm" value="yes" required;
                            " Delete this job and its attempts for good"
                        }
                        button.danger type="submit" { "Purge" }
                    }
                }
            }
            h2 { "Attempts" }
            (attempts_table(&job.attempts))
            h2 { "Payload" }
            pre { (payload) }
        },
    )
}

fn attempts_table(attempts: &[AttemptRecord]) -> Markup {
    html! {
        @if attempts.is_empty() {
            p.empty { "No attempt yet." }
        } @else {
            table.attempts {
                thead {
                    tr { th.num { "#" } th { "Started" } th.num { "Duration" } th { "Outcome" } th { "Error" } th { "Detail" } }
                }
                tbody {
                    @for a in attempts {
                        tr {
                            td.num { (a.attempt) }
                            td.nowrap { (clock(a.started_at)) }
                            td.num { (a.duration_ms) " ms" }
                            td { (state_badge(&a.outcome)) }
                            td.error { (a.error.as_deref().unwrap_or("")) }
                            td.detail {
                                (detail_text(a))
                                @if let Some(d) = &a.detail { details { summary { "raw" } code { (d.to_string()) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `/admin/trace`: the search box and, when found, the chain as nested lists.
pub fn trace(page: &Page<'_>, wanted: &str, trace: Option<&Trace>) -> Markup {
    layout(
        page,
        html! {
            h1 { "Trace" }
            form.search method="get" action="/admin/trace" {
                label for="correlation_id" { "Correlation id" }
                input #correlation_id type="search" name="correlation_id" value=(wanted)
                    placeholder="x-correlation-id of a request" required;
                button type="submit" { "Show chain" }
            }
            @match trace {
                Some(t) => {
                    p.muted { (t.nodes) " nodes share correlation id " code { (t.correlation_id) } "." }
                    ul.tree #trace { @for node in &t.roots { (trace_node(node)) } }
                }
                None if !wanted.is_empty() => {
                    p.empty { "Nothing is recorded for correlation id " code { (wanted) } "." }
                }
                None => {
                    p.muted { "Every request gets a correlation id (the " code { "x-correlation-id" }
                        " response header); everything it causes carries it." }
                }
            }
        },
    )
}

fn trace_node(node: &TraceNode) -> Markup {
    match node {
        TraceNode::Request {
            at,
            method,
            path,
            status,
            duration_ms,
            children,
            ..
        } => html! {
            li.node {
                div.line {
                    span.kind { "request" }
                    strong { (method) " " (path) }
                    span class={ "badge " (status_class(*status)) } { (status) }
                    span.muted { (duration_ms) " ms · " (clock_ms(*at)) }
                }
                (trace_children(children))
            }
        },
        TraceNode::Event {
            id,
            at,
            name,
            version,
            broker,
            children,
            ..
        } => html! {
            li.node {
                div.line {
                    span.kind.event { "event" }
                    strong { (name) } span.muted { " v" (version) }
                    code.id { (id) }
                    span.muted { (clock_ms(*at)) }
                }
                @for note in broker {
                    div.line { span.muted { "↔ " (note) } }
                }
                (trace_children(children))
            }
        },
        TraceNode::Job {
            id,
            at,
            queue,
            job_type,
            state,
            attempts,
            children,
        } => html! {
            li.node {
                div.line {
                    span.kind.job { "job" }
                    a href={ "/admin/jobs/" (path_segment(id)) } { strong { (job_type) } }
                    span.muted { " on " (queue) }
                    (state_badge(state))
                    span.muted { (clock_ms(*at)) }
                }
                @if !attempts.is_empty() {
                    ul.attempts-list {
                        @for a in attempts {
                            li {
                                "attempt " (a.attempt) " "
                                (state_badge(&a.outcome))
                                span.muted { " " (clock_ms(a.started_at)) " · " (a.duration_ms) " ms" }
                                @let detail = detail_text(a);
                                @if !detail.is_empty() { " · " (detail) }
                                @if let Some(e) = &a.error { " — " span.error { (e) } }
                            }
                        }
                    }
                }
                (trace_children(children))
            }
        },
    }
}

fn trace_children(children: &[TraceNode]) -> Markup {
    html! {
        @if !children.is_empty() {
            ul { @for child in children { (trace_node(child)) } }
        }
    }
}

/// What a handler recorded about an attempt, in words (`→ url status 500`, `to …`); other
/// facts stay in the raw detail on the job page.
fn detail_text(a: &AttemptRecord) -> String {
    let mut out = String::new();
    let Some(d) = &a.detail else {
        return out;
    };
    if let Some(url) = d.get("url").and_then(|v| v.as_str()) {
        let _ = write!(out, "→ {url} ");
    }
    if let Some(status) = d.get("status") {
        let _ = write!(out, "status {status} ");
    }
    if let Some(r) = d.get("recipient").and_then(|v| v.as_str()) {
        let _ = write!(out, "to {r} ");
    }
    if let Some(r) = d.get("smtp_reply").and_then(|v| v.as_str()) {
        let _ = write!(out, "smtp {r} ");
    }
    out.trim_end().to_owned()
}

pub(super) fn state_badge(state: &str) -> Markup {
    let class = match state {
        "completed" | "succeeded" | "enabled" => "ok",
        "dead" | "failed" | "lost" | "disabled" => "bad",
        "running" | "retrying" | "failing" | "skipped" => "warn",
        "available" | "scheduled" | "pending" => "info",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (state) } }
}

fn status_class(status: i32) -> &'static str {
    match status {
        200..=399 => "ok",
        400..=499 => "warn",
        _ => "bad",
    }
}

pub(super) fn clock(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Time of day to the millisecond: what tells the steps of one chain apart.
fn clock_ms(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

/// An age in the unit a person reads fastest.
fn age(seconds: f64) -> String {
    match seconds {
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.0} d", s / 86_400.0),
    }
}

/// `value` safe inside one URL path segment (everything but unreserved bytes escaped).
pub fn path_segment(value: &str) -> String {
    value.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// `value` safe as a query-string value.
fn query_value(value: &str) -> String {
    path_segment(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page<'static> {
        Page {
            title: "t",
            section: Section::Dead,
            csrf: Some("tok"),
            flash: None,
        }
    }

    #[test]
    fn dynamic_values_are_escaped() {
        let group = DeadLetterGroup {
            id: "g1".into(),
            queue: "webhooks".into(),
            job_type: "<script>alert(1)</script>".into(),
            error_class: "a & b".into(),
            count: 1,
            example_error: "\"><img src=x onerror=alert(1)>".into(),
            latest: None,
            job_ids: vec!["j".into()],
        };
        let out = dead_groups(&page(), &[group]).into_string();
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(out.contains("&lt;script&gt;") && out.contains("a &amp; b"));
        assert!(
            out.contains(r#"name="csrf" value="tok""#),
            "forms carry the CSRF token"
        );
    }

    #[test]
    fn ids_are_escaped_in_urls() {
        assert_eq!(path_segment("01a2-b_c.d~e"), "01a2-b_c.d~e");
        assert_eq!(path_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(3.25), "3.2 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(7200.0), "2.0 h");
        assert_eq!(age(864_000.0), "10 d");
    }
}
