//! The timeline of one case as an inline SVG: answers per 100 ms bucket stacked by
//! outcome, the fault windows shaded and numbered, the recovery marked, axes and a
//! legend. Plain SVG, no script.

use std::fmt::Write as _;
use std::time::Duration;

use super::escape;
use super::series::{BUCKET, Buckets};
use crate::timeline::Timeline;

/// Width of the drawing, in CSS pixels.
const WIDTH: f64 = 960.0;
/// Room left of the plot for the count axis.
const LEFT: f64 = 48.0;
/// Room right of the plot.
const RIGHT: f64 = 16.0;
/// Room above the plot: a row for the fault numbers, one for the recovery mark.
const TOP: f64 = 36.0;
/// Baseline of the fault numbers.
const NUMBER_ROW: f64 = 12.0;
/// Baseline of the recovery label; its bar lies just below.
const RECOVERY_ROW: f64 = 26.0;
/// Height of the plot.
const PLOT_HEIGHT: f64 = 170.0;
/// Room below the plot for the time axis.
const AXIS_HEIGHT: f64 = 30.0;
/// Height of one legend row.
const LEGEND_ROW: f64 = 20.0;
/// A rough width of one character of the 12 px labels, to lay out the legend.
const CHAR_WIDTH: f64 = 6.8;

/// Fill of a fault window, and the color of an instant fault's line.
const FAULT_FILL: &str = "#ffd7d5";
const FAULT_LINE: &str = "#d1242f";
/// Color of the recovery mark.
const RECOVERY: &str = "#116329";

/// The fault windows' numbers: one per distinct label, in order of first appearance
/// (a fault repeated, like FO-02's replay pauses, keeps its number).
pub(crate) fn fault_numbers(timeline: &Timeline) -> Vec<(usize, &str)> {
    let mut labels: Vec<&str> = Vec::new();
    timeline
        .faults
        .iter()
        .map(|fault| {
            let n = match labels.iter().position(|l| *l == fault.label) {
                Some(i) => i + 1,
                None => {
                    labels.push(&fault.label);
                    labels.len()
                }
            };
            (n, fault.label.as_str())
        })
        .collect()
}

/// The SVG of `timeline`, for a case that ran `elapsed`.
pub(crate) fn svg(timeline: &Timeline, elapsed: Duration) -> String {
    let fault_end = timeline
        .faults
        .iter()
        .filter_map(|f| f.end)
        .max()
        .unwrap_or_default();
    let recovery_end = timeline.recovery.map(|r| r.end).unwrap_or_default();
    let buckets = Buckets::count(&timeline.requests, elapsed.max(fault_end).max(recovery_end));
    let span = BUCKET.as_secs_f64() * buckets.buckets as f64;
    // The servers start before anything happens: the axis begins at the whole second
    // half a second or more before the first request or fault.
    let first = timeline
        .requests
        .iter()
        .map(|r| r.start)
        .chain(timeline.faults.iter().map(|f| f.start))
        .min()
        .unwrap_or_default();
    let origin = (first.as_secs_f64() - 0.5)
        .floor()
        .clamp(0.0, (span - 1.0).max(0.0));
    let first_bucket = (origin / BUCKET.as_secs_f64()).round() as usize;
    let plot_width = WIDTH - LEFT - RIGHT;
    let x = |t: Duration| LEFT + (t.as_secs_f64() - origin).max(0.0) / (span - origin) * plot_width;
    let peak = buckets.peak().max(1);
    // Counts are whole: no step below one.
    let step = nice_step(f64::from(peak), 5.0).max(1.0);
    let y_max = (f64::from(peak) / step).ceil() * step;
    let y = |count: f64| TOP + PLOT_HEIGHT - count / y_max * PLOT_HEIGHT;

    let legend = legend_items(&buckets, timeline);
    let rows = legend_rows(&legend);
    let height = TOP + PLOT_HEIGHT + AXIS_HEIGHT + rows.len() as f64 * LEGEND_ROW + 6.0;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} {height:.0}" width="{WIDTH}" height="{height:.0}" role="img" aria-label="answers per 100 ms, fault windows and recovery">"#
    );
    // Faults first, so the bars are drawn over them.
    let numbers = fault_numbers(timeline);
    let span_end = Duration::from_secs_f64(span);
    // Where the last number drawn ends: faults close together get theirs side by side.
    let mut numbers_end = 0.0_f64;
    for (fault, (n, _)) in timeline.faults.iter().zip(&numbers) {
        let x0 = x(fault.start);
        let end = fault.end.unwrap_or(span_end);
        let label = escape(&fault.label);
        if end > fault.start {
            let w = (x(end) - x0).max(1.0);
            let _ = write!(
                out,
                r#"<rect class="fault" x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{PLOT_HEIGHT}" fill="{FAULT_FILL}" fill-opacity="0.75"><title>{n}. {label}</title></rect>"#
            );
        } else {
            let _ = write!(
                out,
                r#"<line class="fault" x1="{x0:.1}" y1="{TOP}" x2="{x0:.1}" y2="{bottom}" stroke="{FAULT_LINE}" stroke-width="1.5" stroke-dasharray="3 2"><title>{n}. {label}</title></line>"#,
                bottom = TOP + PLOT_HEIGHT
            );
        }
        let tx = (x0 + 2.0).max(numbers_end + 4.0);
        numbers_end = tx + n.to_string().len() as f64 * CHAR_WIDTH;
        let _ = write!(
            out,
            r#"<text x="{tx:.1}" y="{NUMBER_ROW}" font-size="11" fill="{FAULT_LINE}">{n}</text>"#
        );
    }

    // The count axis: grid lines and labels.
    let ticks = (y_max / step).round() as u32;
    for k in 0..=ticks {
        let tick = f64::from(k) * step;
        let ty = y(tick);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{x2}" y2="{ty:.1}" stroke="#d0d7de" stroke-width="0.5"/><text x="{lx}" y="{ly:.1}" font-size="11" text-anchor="end" fill="#57606a">{tick}</text>"##,
            x2 = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ly = ty + 4.0,
        );
    }

    // The bars: one group per non-empty bucket, outcomes stacked, a tooltip each.
    let bar = plot_width / (buckets.buckets - first_bucket).max(1) as f64;
    let gap = if bar > 4.0 { 1.0 } else { 0.0 };
    for i in first_bucket..buckets.buckets {
        let parts: Vec<(&str, &str, u32)> = buckets
            .series
            .iter()
            .filter(|s| s.counts[i] > 0)
            .map(|s| (s.label.as_str(), s.color, s.counts[i]))
            .collect();
        if parts.is_empty() {
            continue;
        }
        let from = BUCKET.as_secs_f64() * i as f64;
        let tally: Vec<String> = parts
            .iter()
            .map(|(label, _, n)| format!("{}×{n}", escape(label)))
            .collect();
        let _ = write!(
            out,
            "<g><title>{from:.1}–{to:.1} s: {}</title>",
            tally.join(", "),
            to = from + BUCKET.as_secs_f64()
        );
        let mut stacked = 0.0;
        for (_, color, n) in parts {
            let top = y(stacked + f64::from(n));
            let h = y(stacked) - top;
            let _ = write!(
                out,
                r#"<rect x="{bx:.2}" y="{top:.2}" width="{bw:.2}" height="{h:.2}" fill="{color}"/>"#,
                bx = LEFT + bar * (i - first_bucket) as f64,
                bw = (bar - gap).max(0.5)
            );
            stacked += f64::from(n);
        }
        out.push_str("</g>");
    }

    // The recovery: a bar over the measured interval and a line where it ended.
    if let Some(recovery) = timeline.recovery {
        let (x0, x1) = (x(recovery.start), x(recovery.end));
        let took = recovery.end.saturating_sub(recovery.start).as_secs_f64();
        let anchor = if x1 > WIDTH - 200.0 { "end" } else { "start" };
        let lx = if anchor == "end" { x1 - 4.0 } else { x1 + 4.0 };
        let _ = write!(
            out,
            r#"<g class="recovery"><title>recovered {took:.2} s after the fault ended</title><line x1="{x0:.1}" y1="{ry}" x2="{x1r:.1}" y2="{ry}" stroke="{RECOVERY}" stroke-width="4"/><line x1="{x1:.1}" y1="{ry}" x2="{x1:.1}" y2="{bottom}" stroke="{RECOVERY}" stroke-width="1.5" stroke-dasharray="5 3"/><text x="{lx:.1}" y="{ty}" font-size="12" text-anchor="{anchor}" fill="{RECOVERY}">recovered in {took:.2} s</text></g>"#,
            x1r = x1.max(x0 + 2.0),
            ry = RECOVERY_ROW + 5.0,
            bottom = TOP + PLOT_HEIGHT,
            ty = RECOVERY_ROW,
        );
    }

    // The time axis.
    let axis_y = TOP + PLOT_HEIGHT;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{x2}" y2="{axis_y}" stroke="#57606a" stroke-width="1"/>"##,
        x2 = WIDTH - RIGHT
    );
    let t_step = nice_step(span - origin, 12.0);
    let decimals = if t_step >= 1.0 { 0 } else { 1 };
    let first_tick = (origin / t_step - 1e-9).ceil() as u32;
    let last_tick = (span / t_step + 1e-9).floor() as u32;
    for k in first_tick..=last_tick {
        let t = f64::from(k) * t_step;
        let tx = x(Duration::from_secs_f64(t));
        let _ = write!(
            out,
            r##"<line x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{y2}" stroke="#57606a"/><text x="{tx:.1}" y="{ly}" font-size="11" text-anchor="middle" fill="#57606a">{t:.decimals$} s</text>"##,
            y2 = axis_y + 4.0,
            ly = axis_y + 16.0
        );
    }

    // The legend.
    let mut ly = TOP + PLOT_HEIGHT + AXIS_HEIGHT + 10.0;
    for row in rows {
        let mut lx = LEFT;
        for item in row {
            let swatch = match item.kind {
                Swatch::Fill(color) => format!(
                    r#"<rect x="{lx:.1}" y="{sy:.1}" width="12" height="12" fill="{color}"/>"#,
                    sy = ly - 10.0
                ),
                Swatch::Line(color) => format!(
                    r#"<line x1="{lx:.1}" y1="{sy:.1}" x2="{ex:.1}" y2="{sy:.1}" stroke="{color}" stroke-width="4"/>"#,
                    sy = ly - 4.0,
                    ex = lx + 12.0
                ),
                Swatch::Dashed(color) => format!(
                    r#"<line x1="{mx:.1}" y1="{sy:.1}" x2="{mx:.1}" y2="{ey:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="3 2"/>"#,
                    mx = lx + 6.0,
                    sy = ly - 11.0,
                    ey = ly + 1.0
                ),
            };
            let _ = write!(
                out,
                r##"{swatch}<text x="{tx:.1}" y="{ly:.1}" font-size="12" fill="#24292f">{}</text>"##,
                escape(&item.text),
                tx = lx + 16.0
            );
            lx += item.width();
        }
        ly += LEGEND_ROW;
    }
    out.push_str("</svg>");
    out
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    /// A filled square (an outcome, a fault window).
    Fill(&'static str),
    /// A thick line (the recovery).
    Line(&'static str),
    /// A dashed line (an instant fault).
    Dashed(&'static str),
}

/// One legend entry.
#[derive(Debug, Clone)]
struct LegendItem {
    kind: Swatch,
    text: String,
}

impl LegendItem {
    /// Its width on the row, swatch and spacing included.
    fn width(&self) -> f64 {
        16.0 + self.text.chars().count() as f64 * CHAR_WIDTH + 18.0
    }
}

/// The outcomes with their totals, then the fault window and the recovery when the
/// chart has them.
fn legend_items(buckets: &Buckets, timeline: &Timeline) -> Vec<LegendItem> {
    let mut items: Vec<LegendItem> = buckets
        .series
        .iter()
        .map(|s| LegendItem {
            kind: Swatch::Fill(s.color),
            text: format!("{} ({})", s.label, s.total),
        })
        .collect();
    let instant = |f: &&crate::timeline::Fault| f.end == Some(f.start);
    if timeline.faults.iter().any(|f| !instant(&f)) {
        items.push(LegendItem {
            kind: Swatch::Fill(FAULT_FILL),
            text: "fault window (numbered, see below)".to_owned(),
        });
    }
    if timeline.faults.iter().any(|f| instant(&f)) {
        items.push(LegendItem {
            kind: Swatch::Dashed(FAULT_LINE),
            text: "instant fault".to_owned(),
        });
    }
    if timeline.recovery.is_some() {
        items.push(LegendItem {
            kind: Swatch::Line(RECOVERY),
            text: "time to recover".to_owned(),
        });
    }
    items
}

/// The legend entries laid out in rows that fit the drawing's width.
fn legend_rows(items: &[LegendItem]) -> Vec<Vec<LegendItem>> {
    let mut rows: Vec<Vec<LegendItem>> = Vec::new();
    let mut used = f64::INFINITY;
    for item in items {
        if used + item.width() > WIDTH - LEFT - RIGHT {
            rows.push(Vec::new());
            used = 0.0;
        }
        used += item.width();
        if let Some(row) = rows.last_mut() {
            row.push(item.clone());
        }
    }
    rows
}

/// A step of 1, 2 or 5 times a power of ten that splits `range` into at most
/// `most` parts.
fn nice_step(range: f64, most: f64) -> f64 {
    let rough = (range / most).max(1e-9);
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Fault, RequestSample, Span};

    fn timeline() -> Timeline {
        let request = |end_ms: u64, status: u16, code: &str| RequestSample {
            start: Duration::from_millis(end_ms - 20),
            end: Duration::from_millis(end_ms),
            status,
            code: code.to_owned(),
        };
        Timeline {
            requests: vec![
                request(120, 200, ""),
                request(700, 503, "database_unavailable"),
                request(1500, 200, ""),
            ],
            faults: vec![
                Fault {
                    label: "server <stopped>".to_owned(),
                    start: Duration::from_millis(500),
                    end: Some(Duration::from_millis(1400)),
                },
                Fault {
                    label: "connections terminated".to_owned(),
                    start: Duration::from_millis(1450),
                    end: Some(Duration::from_millis(1450)),
                },
                Fault {
                    label: "server <stopped>".to_owned(),
                    start: Duration::from_millis(1600),
                    end: None,
                },
            ],
            recovery: Some(Span {
                start: Duration::from_millis(1400),
                end: Duration::from_millis(1500),
            }),
        }
    }

    #[test]
    fn the_svg_has_bars_faults_recovery_and_a_legend() {
        let svg = svg(&timeline(), Duration::from_secs(2));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches(r#"<rect class="fault""#).count(), 2);
        assert_eq!(svg.matches(r#"<line class="fault""#).count(), 1);
        assert!(svg.contains("server &lt;stopped&gt;"), "labels are escaped");
        assert!(svg.contains("recovered in 0.10 s"), "{svg}");
        assert!(svg.contains("ok (2)") && svg.contains("503 database_unavailable (1)"));
        assert!(
            svg.contains("0.7–0.8 s: 503 database_unavailable×1"),
            "{svg}"
        );
    }

    #[test]
    fn a_repeated_fault_keeps_its_number() {
        let timeline = timeline();
        let numbers: Vec<usize> = fault_numbers(&timeline).iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 1]);
    }

    #[test]
    fn an_empty_timeline_still_draws() {
        let svg = svg(&Timeline::default(), Duration::ZERO);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(17.0, 12.0), 2.0);
        assert_eq!(nice_step(3.0, 5.0), 1.0);
        assert_eq!(nice_step(240.0, 5.0), 50.0);
        assert_eq!(nice_step(0.4, 12.0), 0.05);
    }
}
