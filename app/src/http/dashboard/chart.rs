//! The queue page's small charts: a queue's last hour, minute by minute, as inline SVG
//! drawn on the server — jobs completed as green bars, failed attempts stacked on them in
//! red — so the page needs no JavaScript and no second request.

use maud::{Markup, html};
use runtime::activity::QueueActivity;

/// Width of one minute's bar, in SVG units.
const BAR: usize = 2;
/// Height of the chart.
const HEIGHT: i64 = 24;

/// One queue's last hour as a stacked bar chart, with its totals as the accessible name.
pub fn last_hour(activity: &QueueActivity) -> Markup {
    let completed: i64 = activity.completed.iter().sum();
    let failed: i64 = activity.failed.iter().sum();
    let label = format!(
        "{}, last hour: {completed} completed, {failed} failed attempts",
        activity.queue
    );
    let peak = activity
        .completed
        .iter()
        .zip(&activity.failed)
        .map(|(c, f)| c + f)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = |n: i64| -> i64 {
        if n == 0 {
            0
        } else {
            (n * HEIGHT / peak).max(1)
        }
    };
    let width = activity.completed.len() * BAR;
    html! {
        svg.activity xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(label)
            width=(width) height=(HEIGHT) viewBox={ "0 0 " (width) " " (HEIGHT) } {
            title { (label) }
            line.axis x1="0" y1=(HEIGHT) x2=(width) y2=(HEIGHT) {}
            @for (minute, (c, f)) in activity.completed.iter().zip(&activity.failed).enumerate() {
                @let x = minute * BAR;
                @let done = height(*c);
                @let bad = height(*f);
                @if done > 0 {
                    rect.done x=(x) y=(HEIGHT - done) width=(BAR) height=(done) {}
                }
                @if bad > 0 {
                    rect.failed x=(x) y=(HEIGHT - done - bad) width=(BAR) height=(bad) {}
                }
            }
        }
        span.spark-totals.small {
            span.ok-text { (completed) } " / " span class={ (if failed > 0 { "bad-text" } else { "muted" }) } { (failed) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_the_minutes_and_the_label_says_the_totals() {
        let mut a = QueueActivity {
            queue: "webhooks".into(),
            completed: vec![0; 60],
            failed: vec![0; 60],
        };
        a.completed[59] = 4;
        a.failed[59] = 4;
        a.completed[0] = 1;
        let svg = last_hour(&a).into_string();
        assert!(
            svg.contains("aria-label=\"webhooks, last hour: 5 completed, 4 failed attempts\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect class=\"done\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<rect class=\"failed\"").count(), 1, "{svg}");
        // The last minute is the peak: its two halves fill the chart.
        assert!(
            svg.contains("<rect class=\"failed\" x=\"118\" y=\"0\" width=\"2\" height=\"12\">"),
            "{svg}"
        );
    }
}
