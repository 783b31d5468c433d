//! A self-contained HTML timeline of a history: one lane per client process, each operation a
//! bar from its invoke to its completion coloured by outcome, faults as bands across the lanes,
//! and the operations of a linearizability witness outlined. Inline SVG and CSS only: the page
//! loads nothing from the network and needs no script. Pure: it renders, it does not check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::history::{EventKind, HistoryEvent};
use crate::metrics::Series;

/// A fault as a band across every lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub label: String,
    pub start: u64,
    /// None: it lasted to the end of the history.
    pub end: Option<u64>,
}

/// Width of the drawing area, in pixels.
pub const WIDTH_PX: u64 = 1600;
/// Height of one lane.
pub const LANE_PX: u64 = 22;
/// Lanes drawn at most (a history with more processes is cut, and the page says so).
pub const LANES_MAX: usize = 400;
const LEFT_PX: u64 = 120;
const TOP_PX: u64 = 40;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(kind: EventKind, error: Option<&str>) -> &'static str {
    match (kind, error) {
        (EventKind::Ok, _) => "#2e9d55",
        (EventKind::Fail, Some("insufficient_funds" | "sold_out")) => "#e69f00",
        (EventKind::Fail, _) => "#d9534f",
        _ => "#9aa0a6",
    }
}

fn describe(invoke: &HistoryEvent, done: Option<&HistoryEvent>) -> String {
    let mut text = format!("p{} {}", invoke.process, invoke.f);
    if let Some(key) = &invoke.key {
        let _ = write!(text, " {key}");
    }
    if let Some(to) = &invoke.to {
        let _ = write!(text, " -> {to}");
    }
    if let Some(value) = &invoke.value {
        let _ = write!(text, " {value}");
    }
    match done {
        Some(d) => {
            let _ = write!(text, " => {}", d.kind.name());
            if let Some(v) = d.value.as_ref().filter(|_| d.kind == EventKind::Ok) {
                let _ = write!(text, " {v}");
            }
            if let Some(e) = &d.error {
                let _ = write!(text, " ({e})");
            }
            let _ = write!(text, " [{:.6}s .. {:.6}s]", invoke.time as f64 / 1e9, d.time as f64 / 1e9);
        }
        None => {
            let _ = write!(text, " => no answer [{:.6}s ..]", invoke.time as f64 / 1e9);
        }
    }
    text
}

/// Renders the page. `highlight` holds (process, invoke time) of the operations to outline.
pub fn render(title: &str, history: &[HistoryEvent], bands: &[Band], highlight: &BTreeSet<(u64, u64)>) -> String {
    render_with_metrics(title, history, bands, highlight, &[])
}

/// Height of one metric's chart under the lanes.
pub const CHART_PX: u64 = 70;

/// Renders the page with the metrics drawn under the client lanes, one chart each, on the same
/// time axis (so a lag is seen climbing under the fault band that caused it).
pub fn render_with_metrics(
    title: &str,
    history: &[HistoryEvent],
    bands: &[Band],
    highlight: &BTreeSet<(u64, u64)>,
    metrics: &[Series],
) -> String {
    let end = history
        .iter()
        .map(|e| e.time)
        .chain(bands.iter().filter_map(|b| b.end))
        .chain(metrics.iter().filter_map(|m| m.points.last().map(|(t, _)| *t)))
        .max()
        .unwrap_or(1)
        .max(1);
    let x = |t: u64| LEFT_PX + t.min(end) * WIDTH_PX / end;
    let processes: BTreeSet<u64> = history.iter().map(|e| e.process).collect();
    let lanes: BTreeMap<u64, usize> = processes.iter().take(LANES_MAX).enumerate().map(|(i, p)| (*p, i)).collect();
    let lanes_bottom = TOP_PX + lanes.len() as u64 * LANE_PX + 10;
    let height = lanes_bottom + metrics.len() as u64 * CHART_PX + 20;
    let mut svg = String::new();
    for (i, series) in metrics.iter().enumerate() {
        let top = lanes_bottom + i as u64 * CHART_PX + 10;
        let bottom = top + CHART_PX - 20;
        let max = series.max();
        let scale = if max > 0.0 { (bottom - top) as f64 / max } else { 0.0 };
        let points: Vec<String> =
            series.points.iter().map(|(t, v)| format!("{},{:.1}", x(*t), bottom as f64 - v * scale)).collect();
        let shown = if series.name.ends_with("rate") { format!("{:.0}%", max * 100.0) } else { format!("{max}") };
        let _ = write!(
            svg,
            r##"<g class="metric"><text x="4" y="{}">{}</text><text x="4" y="{}">max {}</text><line x1="{LEFT_PX}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#ccc"/><polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"><title>{}</title></polyline></g>"##,
            top + 12,
            escape(&series.name),
            top + 26,
            shown,
            LEFT_PX + WIDTH_PX,
            points.join(" "),
            escape(&series.name)
        );
    }
    for band in bands {
        let (x0, x1) = (x(band.start), x(band.end.unwrap_or(end)));
        let _ = write!(
            svg,
            r##"<g class="band"><rect x="{x0}" y="{}" width="{}" height="{}"><title>{}</title></rect><text x="{}" y="{}">{}</text></g>"##,
            TOP_PX - 14,
            (x1 - x0).max(2),
            height - TOP_PX,
            escape(&band.label),
            x0 + 2,
            TOP_PX - 4,
            escape(&band.label)
        );
    }
    for (process, lane) in &lanes {
        let _ = write!(
            svg,
            r#"<text class="lane" x="4" y="{}">process {process}</text>"#,
            TOP_PX + *lane as u64 * LANE_PX + 15
        );
    }
    let mut open: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
    let mut ops: Vec<(&HistoryEvent, Option<&HistoryEvent>)> = Vec::new();
    for event in history {
        if event.kind == EventKind::Invoke {
            if let Some(previous) = open.insert(event.process, event) {
                ops.push((previous, None));
            }
        } else if let Some(invoke) = open.remove(&event.process) {
            ops.push((invoke, Some(event)));
        }
    }
    ops.extend(open.into_values().map(|invoke| (invoke, None)));
    for (invoke, done) in ops {
        let Some(lane) = lanes.get(&invoke.process) else { continue };
        let x0 = x(invoke.time);
        let x1 = done.map_or(LEFT_PX + WIDTH_PX, |d| x(d.time)).max(x0 + 2);
        let (kind, error) = done.map_or((EventKind::Info, None), |d| (d.kind, d.error.as_deref()));
        let outline = if highlight.contains(&(invoke.process, invoke.time)) { r#" class="witness""# } else { "" };
        let dashed = if kind == EventKind::Info { r#" stroke-dasharray="4 2""# } else { "" };
        let _ = write!(
            svg,
            r#"<rect{outline} x="{x0}" y="{}" width="{}" height="{}" fill="{}"{dashed}><title>{}</title></rect>"#,
            TOP_PX + *lane as u64 * LANE_PX + 3,
            x1 - x0,
            LANE_PX - 6,
            colour(kind, error),
            escape(&describe(invoke, done))
        );
    }
    let cut = if processes.len() > LANES_MAX {
        format!("<p>Only the first {LANES_MAX} of {} processes are drawn.</p>", processes.len())
    } else {
        String::new()
    };
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 16px; background: #fff; color: #222; }}
.legend span {{ display: inline-block; padding: 2px 8px; margin-right: 6px; color: #fff; border-radius: 3px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
.band rect {{ fill: #7b61ff; fill-opacity: 0.12; stroke: #7b61ff; stroke-opacity: 0.5; }}
.band text {{ fill: #5a3fd6; }}
rect.witness {{ stroke: #000; stroke-width: 3; }}
rect {{ stroke: #0003; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="legend"><span style="background:#2e9d55">ok</span><span style="background:#e69f00">refused (insufficient funds, sold out)</span><span style="background:#d9534f">failed</span><span style="background:#9aa0a6">unknown (info)</span><span style="background:#7b61ff">fault</span> outlined: the operations a violation cannot order. Hover a bar for its operation.</p>
<p>{ops} operations by {procs} processes over {secs:.3} simulated seconds; {faults} faults.</p>
{cut}
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}">
<line x1="{LEFT_PX}" y1="{TOP_PX}" x2="{LEFT_PX}" y2="{height}" stroke="#ccc"/>
{svg}
</svg>
</body></html>
"##,
        title = escape(title),
        ops = history.iter().filter(|e| e.kind == EventKind::Invoke).count(),
        procs = processes.len(),
        secs = end as f64 / 1e9,
        faults = bands.len(),
        w = LEFT_PX + WIDTH_PX + 20,
    )
}

/// The operations a bank-model linearizability check cannot order, as (process, invoke time):
/// what a timeline outlines. Empty when the history is linearizable or cannot be checked.
pub fn witness_ops(history: &[HistoryEvent]) -> BTreeSet<(u64, u64)> {
    let events: Vec<HistoryEvent> = history.iter().filter(|e| e.f != "read_model").cloned().collect();
    let checked = checker::check_history(
        checker::ModelKind::Bank,
        &checker::History::from_events(events),
        checker::Budget::steps(crate::ledger::invariants::LINEARIZABILITY_STEPS_MAX),
    );
    match checked {
        Ok(checker::Verdict::Violation(w)) => {
            w.pending.iter().chain(w.last.iter()).map(|op| (op.invoke.process, op.invoke.time)).collect()
        }
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(process: u64, kind: EventKind, time: u64) -> HistoryEvent {
        let mut e = HistoryEvent::new(process, kind, "withdraw", time);
        e.key = Some("acct-<1>".into());
        e
    }

    #[test]
    fn one_lane_per_process_bars_bands_and_highlights() {
        let history = vec![
            event(1, EventKind::Invoke, 0),
            event(2, EventKind::Invoke, 10),
            event(1, EventKind::Ok, 50),
            event(2, EventKind::Info, 60),
            event(3, EventKind::Invoke, 70),
        ];
        let bands = vec![Band { label: "Crash crdb-2".into(), start: 20, end: Some(40) }];
        let highlight = BTreeSet::from([(2, 10)]);
        let lag = crate::metrics::Series {
            name: "read_model_lag".into(),
            points: vec![(0, 0.0), (500_000_000, 7.0), (1_000_000_000, 0.0)],
        };
        let charted = render_with_metrics("test", &history, &bands, &highlight, &[lag]);
        assert!(charted.contains("<polyline") && charted.contains("read_model_lag") && charted.contains("max 7"));
        let page = render("test <run>", &history, &bands, &highlight);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("src=") && !page.contains("href="), "nothing is loaded from elsewhere");
        assert!(!page.contains("<script"), "no script needed");
        assert_eq!(page.matches("class=\"lane\"").count(), 3);
        assert_eq!(page.matches("class=\"witness\"").count(), 1);
        assert_eq!(page.matches("class=\"band\"").count(), 1);
        assert!(page.contains("test &lt;run&gt;") && page.contains("acct-&lt;1&gt;"), "text is escaped");
        assert!(page.contains("no answer"), "an operation without completion runs to the end");
    }
}
