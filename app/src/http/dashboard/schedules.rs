//! `/admin/scheduled` (the JSON is `/admin/schedules`): every scheduled job with its expression, time zone, next run, last
//! run and the last job's outcome (linked to the job's page).

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use runtime::schedule::ScheduleStatus;

use super::pages::{Page, clock, layout, path_segment, state_badge};

/// The schedules page.
pub fn page(page: &Page<'_>, schedules: &[ScheduleStatus], now: DateTime<Utc>) -> Markup {
    let at = |t: Option<DateTime<Utc>>| t.map_or_else(|| "—".to_owned(), clock);
    layout(
        page,
        html! {
            h1 { "Schedules" }
            @if schedules.is_empty() {
                p.empty { "No schedules. Modules declare them; `[schedules.<name>]` in keel.toml adds or overrides one." }
            } @else {
                table #schedules {
                    thead {
                        tr {
                            th { "Schedule" } th { "Cron" } th { "Zone" } th { "Job type" }
                            th { "Missed ticks" } th { "Next run (UTC)" } th { "Last run (UTC)" } th { "Last outcome" }
                        }
                    }
                    tbody {
                        @for s in schedules {
                            tr {
                                td { strong { (s.name) } br; span.muted.small { (s.source) } }
                                td { code { (s.cron) } }
                                td { (s.zone) }
                                td { (s.job_type) }
                                td { (s.missed) }
                                td {
                                    @if s.paused { span.badge.warn { "paused" } } @else { (at(s.next_run_at)) }
                                }
                                td { (at(s.last_run_at)) }
                                td {
                                    @match (&s.last_outcome, &s.last_job_id) {
                                        (Some(outcome), Some(id)) => {
                                            a href={ "/admin/jobs/" (path_segment(id)) } { (state_badge(outcome)) }
                                        }
                                        (None, Some(_)) => { span.muted { "pruned" } }
                                        _ => { "—" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.muted.small { "As of " (clock(now)) " UTC." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::dashboard::pages::Section;

    #[test]
    fn the_page_shows_each_schedule_escaped_with_its_last_job_linked() {
        let page = Page {
            title: "Schedules",
            section: Section::Schedules,
            csrf: None,
            flash: None,
        };
        let status = ScheduleStatus {
            name: "<b>nightly</b>".into(),
            cron: "0 2 * * *".into(),
            zone: "UTC".into(),
            job_type: "billing.mark_overdue_invoices".into(),
            queue: "events".into(),
            missed: "run_once",
            paused: true,
            source: "keel.toml".into(),
            next_run_at: None,
            last_run_at: None,
            last_job_id: Some("j1".into()),
            last_outcome: Some("completed".into()),
        };
        let out = super::page(&page, &[status], Utc::now()).into_string();
        assert!(out.contains("&lt;b&gt;nightly"), "{out}");
        assert!(!out.contains("<b>nightly"), "{out}");
        assert!(
            out.contains("paused") && out.contains("href=\"/admin/jobs/j1\""),
            "{out}"
        );
        assert!(
            out.contains("href=\"/admin/scheduled\""),
            "the navigation links the page"
        );
    }
}
