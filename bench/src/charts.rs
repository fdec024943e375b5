//! The report's SVG charts, drawn with plotters' SVG backend alone: text is written as SVG
//! `<text>` (sans-serif) and laid out by whatever shows the file, so no font is read here.
//!
//! Each function takes plain figures (the report extracts them from the results) and writes
//! one file: drain and enqueue rates side by side, latency distributions, drain vs
//! concurrency, the soak's row counts and RSS over time.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::tables::fmt;

/// Who a bar or a line stands for; decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Keel on PostgreSQL.
    KeelPostgres,
    /// Keel on SQLite.
    KeelSqlite,
    /// The i-th peer mode (same index in every chart).
    Peer(usize),
}

impl Who {
    fn color(self) -> RGBColor {
        const PEERS: [RGBColor; 6] = [
            RGBColor(0xe6, 0x7e, 0x22),
            RGBColor(0xc0, 0x39, 0x2b),
            RGBColor(0x8e, 0x5c, 0xb8),
            RGBColor(0x9c, 0x6b, 0x4a),
            RGBColor(0xc2, 0x54, 0x9a),
            RGBColor(0x7f, 0x7f, 0x7f),
        ];
        match self {
            Self::KeelPostgres => RGBColor(0x1f, 0x5f, 0xa8),
            Self::KeelSqlite => RGBColor(0x2e, 0x9e, 0x5b),
            Self::Peer(i) => PEERS[i % PEERS.len()],
        }
    }
}

/// One system of the drain chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Its label, e.g. `Keel, PostgreSQL`.
    pub label: String,
    /// Its colour.
    pub who: Who,
    /// Drain, jobs/s.
    pub drain: Option<f64>,
    /// Bulk enqueue, jobs/s.
    pub enqueue: Option<f64>,
}

/// One latency distribution: (percentile in %, ms) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// e.g. `idle` or `200 req/s`.
    pub label: String,
    /// Colour index (the same load has the same colour in every panel).
    pub color: usize,
    /// (percentile, milliseconds), percentiles ascending.
    pub points: Vec<(f64, f64)>,
}

/// One panel of the latency chart (one backend).
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// e.g. `SQLite`.
    pub title: String,
    /// Its distributions.
    pub curves: Vec<Curve>,
}

/// One line of the concurrency chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// e.g. `Keel, PostgreSQL`.
    pub label: String,
    /// Its colour.
    pub who: Who,
    /// (concurrency, drain jobs/s).
    pub points: Vec<(f64, f64)>,
}

/// One backend's soak: row counts and RSS over time.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakPanel {
    /// e.g. `SQLite`.
    pub title: String,
    /// (table, (seconds, rows) points).
    pub tables: Vec<(String, Vec<(f64, f64)>)>,
    /// (seconds, MiB).
    pub rss: Vec<(f64, f64)>,
    /// When the warm-up ended (seconds), drawn as a vertical line.
    pub warmup: Option<f64>,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A line over time: its label, its colour, its (seconds, value) points.
type TimeLine = (String, RGBColor, Vec<(f64, f64)>);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

const FONT: &str = "sans-serif";

/// An axis label: the table format without trailing zeros (`10`, not `10.0`; `0`, not `0.00`).
fn tick(x: f64) -> String {
    let s = fmt(x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn title(area: &Area<'_>, title: &str, subtitle: &str) -> anyhow::Result<()> {
    area.draw(&Text::new(
        title.to_owned(),
        (16, 10),
        (FONT, 22).into_font().style(FontStyle::Bold),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        subtitle.to_owned(),
        (16, 38),
        (FONT, 14).into_font().color(&RGBColor(0x55, 0x55, 0x55)),
    ))
    .map_err(err)
}

/// Horizontal bars, one panel for drain and one for bulk enqueue, every system on its row.
///
/// # Errors
/// Fails when the file cannot be written.
pub fn drain_chart(path: &Path, subtitle: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let rows = u32::try_from(bars.len().max(1)).unwrap_or(u32::MAX);
    let panel = 80 + 36 * rows;
    let root = SVGBackend::new(path, (960, 2 * panel + 70)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(70);
    title(
        &head,
        "Drain and enqueue: Keel and the peers, jobs/s",
        subtitle,
    )?;
    let (top, bottom) = body.split_vertically(panel);
    bar_panel(
        &top,
        "drain (start workers → last completion committed)",
        bars,
        |b| b.drain,
    )?;
    bar_panel(&bottom, "enqueue, in bulk", bars, |b| b.enqueue)?;
    root.present().map_err(err)
}

fn bar_panel(
    area: &Area<'_>,
    caption: &str,
    bars: &[Bar],
    value: fn(&Bar) -> Option<f64>,
) -> anyhow::Result<()> {
    let n = bars.len().max(1);
    let max = bars.iter().filter_map(value).fold(0.0, f64::max);
    let xmax = if max > 0.0 { max * 1.2 } else { 1.0 };
    // Row i (top first) is centred on y = 10 (n - 1 - i): integer coordinates, because
    // plotters formats key points only on integer axes.
    let rows = i32::try_from(n).unwrap_or(i32::MAX);
    let y_of = |i: usize| 10 * (rows - 1 - i32::try_from(i).unwrap_or(rows - 1));
    let label_of = |y: i32| -> String {
        let i = usize::try_from(rows - 1 - (y + 5).div_euclid(10)).unwrap_or(usize::MAX);
        bars.get(i).map(|b| b.label.clone()).unwrap_or_default()
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(28)
        .y_label_area_size(250)
        .build_cartesian_2d(
            0f64..xmax,
            (-5i32..10 * rows - 5).with_key_points((0..rows).map(|i| 10 * i).collect()),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| label_of(*y))
        .y_label_style((FONT, 14))
        .x_label_style((FONT, 13))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        let y = y_of(i);
        let text = match value(b) {
            Some(v) => {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y - 3), (v, y + 3)],
                        b.who.color().filled(),
                    )))
                    .map_err(err)?;
                (v, fmt(v))
            }
            None => (0.0, "not measured".to_owned()),
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((text.0, y)) + Text::new(text.1, (6, -7), (FONT, 13)),
            ))
            .map_err(err)?;
    }
    Ok(())
}

const LOAD_COLORS: [RGBColor; 6] = [
    RGBColor(0x2e, 0x9e, 0x5b),
    RGBColor(0x1f, 0x5f, 0xa8),
    RGBColor(0xe6, 0x7e, 0x22),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x8e, 0x5c, 0xb8),
    RGBColor(0x55, 0x55, 0x55),
];

/// Where a percentile sits on the latency chart's x axis, in thousandths of
/// `-log10(1 - q)`: 90, 99 and 99.9 are evenly spaced (1 000, 2 000, 3 000); the maximum
/// (q = 100) is drawn at 3 500. Integer, because plotters formats key points only on integer
/// axes.
pub fn percentile_x(q: f64) -> i32 {
    if q >= 100.0 {
        3500
    } else {
        ((-(1.0 - q / 100.0).log10()).clamp(0.0, 3.0) * 1000.0).round() as i32
    }
}

/// Latency distributions, one panel per backend, one curve per offered load; the y axis is
/// logarithmic (ms).
///
/// # Errors
/// Fails when the file cannot be written.
pub fn latency_chart(path: &Path, subtitle: &str, panels: &[Panel]) -> anyhow::Result<()> {
    let width = 560 * u32::try_from(panels.len().max(1)).unwrap_or(1);
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(70);
    title(
        &head,
        "Chain latency, POST /records → webhook received (ms, log scale)",
        subtitle,
    )?;
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|p| &p.curves)
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|ms| *ms > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if all.is_empty() {
        (0.1, 10.0)
    } else {
        // Headroom above the highest curve for the legend (upper left).
        ((lo / 1.6).max(0.01), hi * 12.0)
    };
    let ticks = [
        (0.0, "0"),
        (50.0, "50"),
        (90.0, "90"),
        (99.0, "99"),
        (99.9, "99.9"),
        (100.0, "max"),
    ];
    let tick_label = |x: i32| -> String {
        ticks
            .iter()
            .min_by_key(|t| (percentile_x(t.0) - x).abs())
            .map(|t| t.1.to_owned())
            .unwrap_or_default()
    };
    let areas = body.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (-100i32..3650).with_key_points(ticks.iter().map(|t| percentile_x(t.0)).collect()),
                (lo..hi).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_label_formatter(&|x| tick_label(*x))
            .y_label_formatter(&|y| tick(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .map_err(err)?;
        for curve in &panel.curves {
            let color = LOAD_COLORS[curve.color % LOAD_COLORS.len()];
            let points: Vec<(i32, f64)> = curve
                .points
                .iter()
                .map(|&(q, ms)| (percentile_x(q), ms.max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(curve.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0xaa, 0xaa, 0xaa))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Drain rate against the queue's concurrency for Keel (lines), with the peers as points at
/// their own concurrency.
///
/// # Errors
/// Fails when the file cannot be written.
pub fn concurrency_chart(
    path: &Path,
    subtitle: &str,
    keel: &[Series],
    peers: &[Series],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(70);
    title(&head, "Drain rate against concurrency, jobs/s", subtitle)?;
    let points = || keel.iter().chain(peers).flat_map(|s| s.points.iter());
    let ymax = points().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut cs: Vec<f64> = points().map(|p| p.0).collect();
    cs.sort_by(f64::total_cmp);
    cs.dedup();
    let xmax = cs.last().copied().unwrap_or(32.0).max(2.0) * 1.4;
    let mut chart = ChartBuilder::on(&body)
        .margin(14)
        .margin_right(30)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((0.8f64..xmax).log_scale().with_key_points(cs), 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("concurrency (log scale)")
        .y_desc("drain, jobs/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(err)?;
    for s in keel {
        let color = s.who.color();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    for s in peers {
        let color = s.who.color();
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 7, color.filled())),
            )
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| TriangleMarker::new((x + 11, y), 6, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xaa, 0xaa, 0xaa))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The soak: per backend, a row of two panels — the row count of each table over time, and
/// this process's RSS over time — with the end of the warm-up marked.
///
/// # Errors
/// Fails when the file cannot be written.
pub fn soak_chart(path: &Path, subtitle: &str, panels: &[SoakPanel]) -> anyhow::Result<()> {
    let rows = u32::try_from(panels.len().max(1)).unwrap_or(1);
    let root = SVGBackend::new(path, (1120, 70 + 380 * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(70);
    title(
        &head,
        "Soak: the runtime's row counts and RSS under sustained drain",
        subtitle,
    )?;
    let areas = body.split_evenly((panels.len().max(1), 2));
    for (i, panel) in panels.iter().enumerate() {
        let (Some(left), Some(right)) = (areas.get(2 * i), areas.get(2 * i + 1)) else {
            break;
        };
        let series: Vec<TimeLine> = panel
            .tables
            .iter()
            .enumerate()
            .map(|(k, (name, points))| {
                (
                    name.clone(),
                    LOAD_COLORS[k % LOAD_COLORS.len()],
                    points.clone(),
                )
            })
            .collect();
        time_panel(
            left,
            &format!("{}: rows", panel.title),
            "rows",
            &series,
            panel.warmup,
        )?;
        time_panel(
            right,
            &format!("{}: RSS of the Keel process", panel.title),
            "MiB",
            &[("RSS".to_owned(), LOAD_COLORS[5], panel.rss.clone())],
            panel.warmup,
        )?;
    }
    root.present().map_err(err)
}

/// Lines over time (seconds), from 0, with a dashed vertical line at `mark`.
fn time_panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    series: &[TimeLine],
    mark: Option<f64>,
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|s| s.2.iter());
    let xmax = points().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    // Headroom above the highest line for the legend (up to six entries).
    let ymax = points().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.7;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workers started")
        .y_desc(unit)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(err)?;
    if let Some(x) = mark {
        let grey = RGBColor(0x99, 0x99, 0x99);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, 0.0), (x, ymax)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(err)?
            .label("end of warm-up")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], grey));
    }
    for (label, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xaa, 0xaa, 0xaa))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_drop_trailing_zeros() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(10.0), "10");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(20_000.0), "20 000");
    }

    #[test]
    fn percentiles_spread_their_tails() {
        assert_eq!(percentile_x(0.0), 0);
        assert_eq!(percentile_x(50.0), 301);
        assert_eq!(percentile_x(90.0), 1000);
        assert_eq!(percentile_x(99.0), 2000);
        assert_eq!(percentile_x(99.9), 3000);
        assert_eq!(percentile_x(100.0), 3500);
    }

    #[test]
    fn charts_are_svg_with_their_text() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let bars = [
            Bar {
                label: "Keel, PostgreSQL".into(),
                who: Who::KeelPostgres,
                drain: Some(12_000.0),
                enqueue: Some(5_000.0),
            },
            Bar {
                label: "graphile-worker 0.17.3, batched".into(),
                who: Who::Peer(0),
                drain: Some(27_000.0),
                enqueue: None,
            },
        ];
        let drain = dir.path().join("drain.svg");
        drain_chart(&drain, "N = 20 000, C = 10", &bars)?;
        let svg = std::fs::read_to_string(&drain)?;
        assert!(svg.starts_with("<svg"));
        for text in [
            "Keel, PostgreSQL",
            "graphile-worker 0.17.3, batched",
            "12 000",
            "not measured",
        ] {
            assert!(svg.contains(text), "no `{text}` in the drain chart");
        }

        let panels = [Panel {
            title: "SQLite".into(),
            curves: vec![Curve {
                label: "idle".into(),
                color: 0,
                points: vec![(0.0, 3.0), (50.0, 5.0), (99.0, 9.0), (100.0, 15.0)],
            }],
        }];
        let latency = dir.path().join("latency.svg");
        latency_chart(&latency, "one round", &panels)?;
        let svg = std::fs::read_to_string(&latency)?;
        assert!(svg.contains("idle") && svg.contains("99.9") && svg.contains("max"));

        let keel = [Series {
            label: "Keel, SQLite".into(),
            who: Who::KeelSqlite,
            points: vec![(1.0, 800.0), (8.0, 5_000.0), (32.0, 13_000.0)],
        }];
        let conc = dir.path().join("conc.svg");
        concurrency_chart(&conc, "N = 20 000", &keel, &[])?;
        assert!(std::fs::read_to_string(&conc)?.contains("Keel, SQLite"));

        let soak = dir.path().join("soak.svg");
        soak_chart(
            &soak,
            "retention 30 s",
            &[SoakPanel {
                title: "PostgreSQL".into(),
                tables: vec![(
                    "keel_jobs".into(),
                    vec![
                        (0.0, 0.0),
                        (5.0, 40_000.0),
                        (40.0, 300_000.0),
                        (45.0, 310_000.0),
                    ],
                )],
                rss: vec![(0.0, 30.0), (45.0, 42.5)],
                warmup: Some(40.0),
            }],
        )?;
        let svg = std::fs::read_to_string(&soak)?;
        for text in ["keel_jobs", "PostgreSQL: rows", "RSS", "end of warm-up"] {
            assert!(svg.contains(text), "no `{text}` in the soak chart");
        }
        Ok(())
    }
}
