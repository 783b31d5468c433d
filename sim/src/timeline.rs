//! A self-contained HTML timeline of a history: one lane per client process, each operation a
//! bar from its invoke to its completion coloured by outcome, faults as bands across the lanes
//! (their labels laid out in rows, so overlapping faults stay readable), and the operations a
//! violation is about outlined: those of a linearizability witness and those any violation's
//! message names (an order's idempotency key, an operation by its process or `f` and its time).
//! Inline SVG and CSS only: the page loads nothing from the network and needs no script. Pure:
//! it renders, it does not check (the witness is the checker's, the names are the messages').

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
/// Top margin with one row of fault labels; each further row adds [`LABEL_ROW_PX`].
const TOP_PX: u64 = 40;
/// Rows of fault labels at most. A band whose label finds no free row is still drawn, with its
/// tooltip, but unlabelled: a storm of faults must not push the lanes off the page.
pub const FAULT_LABEL_ROWS_MAX: usize = 6;
/// Height of one row of fault labels.
const LABEL_ROW_PX: u64 = 14;
/// Estimated width of one character of a label (11 px system-ui stays under it).
const LABEL_CHAR_PX: u64 = 7;
const _: () = assert!(FAULT_LABEL_ROWS_MAX >= 1, "the first row is always there");
const _: () = assert!(TOP_PX > LABEL_ROW_PX, "row 0 fits in the top margin");

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

/// The x of time `t` on an axis that ends at `end` (more than 0); later times are at its end.
fn x_at(t: u64, end: u64) -> u64 {
    assert!(end > 0);
    LEFT_PX + t.min(end) * WIDTH_PX / end
}

/// The label row of each band, in the order given; `None` when every one of the
/// [`FAULT_LABEL_ROWS_MAX`] rows is taken where its label would go. Bands are placed in order of
/// start: each takes the first row whose last label ends before the band starts. A label is
/// estimated at [`LABEL_CHAR_PX`] a character and reaches at least to its band's end, so a row
/// reads as one fault after another. `end` is the end of the time axis (more than 0).
fn label_rows(bands: &[Band], end: u64) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..bands.len()).collect();
    order.sort_by_key(|i| bands[*i].start);
    // The x where each row's last label ends.
    let mut rows_end: Vec<u64> = Vec::new();
    let mut rows = vec![None; bands.len()];
    for i in order {
        let band = &bands[i];
        let (x0, x1) = (x_at(band.start, end), x_at(band.end.unwrap_or(end), end));
        let label_px = band.label.chars().count() as u64 * LABEL_CHAR_PX;
        let row = match rows_end.iter().position(|row_end| *row_end < x0) {
            Some(row) => Some(row),
            None if rows_end.len() < FAULT_LABEL_ROWS_MAX => {
                rows_end.push(0);
                Some(rows_end.len() - 1)
            }
            None => None,
        };
        if let Some(row) = row {
            rows_end[row] = x0 + label_px.max(x1.saturating_sub(x0));
        }
        rows[i] = row;
    }
    assert!(rows_end.len() <= FAULT_LABEL_ROWS_MAX);
    rows
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
    let x = |t: u64| x_at(t, end);
    let processes: BTreeSet<u64> = history.iter().map(|e| e.process).collect();
    let lanes: BTreeMap<u64, usize> = processes.iter().take(LANES_MAX).enumerate().map(|(i, p)| (*p, i)).collect();
    let rows = label_rows(bands, end);
    let rows_used = rows.iter().flatten().max().map_or(1, |row| row + 1);
    // The lanes start under the last row of fault labels.
    let top = TOP_PX + (rows_used as u64 - 1) * LABEL_ROW_PX;
    let lanes_bottom = top + lanes.len() as u64 * LANE_PX + 10;
    let height = lanes_bottom + metrics.len() as u64 * CHART_PX + 20;
    let mut svg = String::new();
    for (i, series) in metrics.iter().enumerate() {
        let chart_top = lanes_bottom + i as u64 * CHART_PX + 10;
        let bottom = chart_top + CHART_PX - 20;
        let max = series.max();
        let scale = if max > 0.0 { (bottom - chart_top) as f64 / max } else { 0.0 };
        let points: Vec<String> =
            series.points.iter().map(|(t, v)| format!("{},{:.1}", x(*t), bottom as f64 - v * scale)).collect();
        let shown = if series.name.ends_with("rate") { format!("{:.0}%", max * 100.0) } else { format!("{max}") };
        let _ = write!(
            svg,
            r##"<g class="metric"><text x="4" y="{}">{}</text><text x="4" y="{}">max {}</text><line x1="{LEFT_PX}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#ccc"/><polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"><title>{}</title></polyline></g>"##,
            chart_top + 12,
            escape(&series.name),
            chart_top + 26,
            shown,
            LEFT_PX + WIDTH_PX,
            points.join(" "),
            escape(&series.name)
        );
    }
    for (band, &row) in bands.iter().zip(&rows) {
        let (x0, x1) = (x(band.start), x(band.end.unwrap_or(end)));
        // The group's title is the tooltip of the band and its label alike; it is the only
        // place a label dropped for want of a row is shown.
        let until = band.end.map_or_else(|| "the end".to_string(), |t| format!("{:.3}s", t as f64 / 1e9));
        let tip = format!("{} [{:.3}s .. {until}]", band.label, band.start as f64 / 1e9);
        let label = row.map_or_else(String::new, |row| {
            let y = TOP_PX - 4 + row as u64 * LABEL_ROW_PX;
            format!(r#"<text x="{}" y="{y}">{}</text>"#, x0 + 2, escape(&band.label))
        });
        let _ = write!(
            svg,
            r##"<g class="band"><title>{}</title><rect x="{x0}" y="{}" width="{}" height="{}"/>{label}</g>"##,
            escape(&tip),
            TOP_PX - 14,
            x1.saturating_sub(x0).max(2),
            height - TOP_PX
        );
    }
    for (process, lane) in &lanes {
        let _ = write!(
            svg,
            r#"<text class="lane" x="4" y="{}">process {process}</text>"#,
            top + *lane as u64 * LANE_PX + 15
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
            top + *lane as u64 * LANE_PX + 3,
            x1 - x0,
            LANE_PX - 6,
            colour(kind, error),
            escape(&describe(invoke, done))
        );
    }
    let mut cut = if processes.len() > LANES_MAX {
        format!("<p>Only the first {LANES_MAX} of {} processes are drawn.</p>", processes.len())
    } else {
        String::new()
    };
    let unlabelled = rows.iter().filter(|row| row.is_none()).count();
    if unlabelled > 0 {
        let _ = write!(
            cut,
            "<p>{unlabelled} fault labels did not fit in {FAULT_LABEL_ROWS_MAX} rows: hover their bands.</p>"
        );
    }
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
<p class="legend"><span style="background:#2e9d55">ok</span><span style="background:#e69f00">refused (insufficient funds, sold out)</span><span style="background:#d9534f">failed</span><span style="background:#9aa0a6">unknown (info)</span><span style="background:#7b61ff">fault</span> outlined: the operations a violation names or cannot order. Hover a bar for its operation.</p>
<p>{ops} operations by {procs} processes over {secs:.3} simulated seconds; {faults} faults.</p>
{cut}
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}">
<line x1="{LEFT_PX}" y1="{top}" x2="{LEFT_PX}" y2="{height}" stroke="#ccc"/>
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

/// What a failing run's timeline outlines, as (process, invoke time): the operations of a
/// linearizability witness and those the violations' messages name.
pub fn outlined_ops(history: &[HistoryEvent], messages: &[String]) -> BTreeSet<(u64, u64)> {
    let mut outlined = witness_ops(history);
    outlined.extend(named_ops(history, messages));
    outlined
}

/// The `f` of a flash-sale order, whose `ok` completion carries the order id.
const ORDER_F: &str = "order";

/// Whether `c` can be part of an idempotency key, an order id or a printed time; any other
/// character ends a token of a violation message.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// The whole tokens of a message, with the punctuation that ends a sentence or a label
/// ("order-36.", "acct-1:") trimmed off.
fn tokens(message: &str) -> impl Iterator<Item = &str> {
    message.split(|c: char| !is_token_char(c)).map(|t| t.trim_end_matches(['.', ':'])).filter(|t| !t.is_empty())
}

/// A time in seconds as the violations print it (`at {:.3}s`).
fn seconds_printed(time: u64) -> String {
    format!("{:.3}", time as f64 / 1e9)
}

/// The times a token prints to the millisecond, without their unit: "12.345s" and both ends
/// of "1.200s..1.450s". Other numbers (a `Duration`'s "1.5s", an amount "10.00") are none.
fn printed_times(token: &str) -> impl Iterator<Item = &str> {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    token.split("..").filter_map(|part| part.strip_suffix('s')).filter(move |seconds| {
        seconds.split_once('.').is_some_and(|(whole, millis)| digits(whole) && millis.len() == 3 && digits(millis))
    })
}

/// One violation message, as [`named_ops`] reads it.
struct Message<'a> {
    /// Its whole tokens.
    words: BTreeSet<&'a str>,
    /// The processes it names ("p3").
    processes: BTreeSet<u64>,
}

/// The operations of `history` that a violation message names, as (process, invoke time).
/// Tokens of a message are compared whole (so "order-3" never names "order-36"), four ways:
///
/// - an order's idempotency key: the flash sale records the product as an order's key and the
///   order id on its `ok` completion, and the order id is a hash of the idempotency key, so a
///   token names the order whose completion carries its hash (or the token itself);
/// - a history key unique to one operation (on one invoke only): an account id is on every
///   operation of its account, and outlining them all would hide the one a violation is about,
///   so a key shared by several operations names none;
/// - a process and a time ("p3 read_model acct-1 at 5.120s", "p4 withdraw on acct-1 ended
///   conflict (1.200s..1.450s)"): the operation of that process invoked or answered at a time
///   that prints the same to the millisecond;
/// - in a message that names no process, an operation's `f` and its invoke time, as the calm
///   phases print them ("calm deposit calm-0-1 at 12.345s").
///
/// One pass over the history, each event looked up in sets of the messages' tokens: linear in
/// the history's size times the (few) messages' tokens. An idempotency key that the history
/// cannot link to an operation (the ledger's, an order that failed or whose outcome is
/// unknown) names nothing.
pub fn named_ops(history: &[HistoryEvent], messages: &[String]) -> BTreeSet<(u64, u64)> {
    let read: Vec<Message<'_>> = messages
        .iter()
        .map(|m| {
            let words: BTreeSet<&str> = tokens(m).collect();
            let processes =
                words.iter().filter_map(|w| w.strip_prefix('p').and_then(|n| n.parse::<u64>().ok())).collect();
            Message { words, processes }
        })
        .collect();
    let all: BTreeSet<&str> = read.iter().flat_map(|m| m.words.iter().copied()).collect();
    if all.is_empty() {
        return BTreeSet::new();
    }
    let order_ids: BTreeSet<String> =
        all.iter().map(|w| models::orders::order_id_for(w)).chain(all.iter().map(|w| (*w).to_string())).collect();
    // The times the messages print, each with the messages that print it.
    let mut timed: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (index, message) in read.iter().enumerate() {
        for seconds in message.words.iter().copied().flat_map(printed_times) {
            timed.entry(seconds).or_default().insert(index);
        }
    }
    // A history key names an operation only when it is unique to one (on one invoke): the
    // ledger's key is the account, on every operation of it.
    let mut invokes_per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for invoke in history.iter().filter(|e| e.kind == EventKind::Invoke) {
        if let Some(key) = invoke.key.as_deref()
            && all.contains(key)
        {
            *invokes_per_key.entry(key).or_default() += 1;
        }
    }
    let by_key = |invoke: &HistoryEvent| invoke.key.as_deref().is_some_and(|k| invokes_per_key.get(k) == Some(&1));
    let by_order_id = |done: &HistoryEvent| {
        done.kind == EventKind::Ok
            && done.f == ORDER_F
            && done.value.as_ref().and_then(|v| v.as_str()).is_some_and(|id| order_ids.contains(id))
    };
    // `time` is the invoke's (`invoked`) or the completion's.
    let by_time = |invoke: &HistoryEvent, time: u64, invoked: bool| {
        !timed.is_empty()
            && timed.get(seconds_printed(time).as_str()).is_some_and(|named| {
                named.iter().any(|m| {
                    let message = &read[*m];
                    if message.processes.is_empty() {
                        invoked && message.words.contains(invoke.f.as_str())
                    } else {
                        message.processes.contains(&invoke.process)
                    }
                })
            })
    };
    let mut named = BTreeSet::new();
    let mut open: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
    for event in history {
        if event.kind == EventKind::Invoke {
            if by_key(event) || by_time(event, event.time, true) {
                named.insert((event.process, event.time));
            }
            open.insert(event.process, event);
        } else if let Some(invoke) = open.remove(&event.process)
            && (by_order_id(event) || by_time(invoke, event.time, false))
        {
            named.insert((invoke.process, invoke.time));
        }
    }
    named
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

    /// An order as the flash sale records it: the product as the key, the user as the value,
    /// and on its `ok` completion the order id, a hash of its idempotency key.
    fn order(process: u64, invoke: u64, done: u64, idempotency_key: &str) -> [HistoryEvent; 2] {
        let mut i = HistoryEvent::new(process, EventKind::Invoke, "order", invoke);
        i.key = Some("sale-1".into());
        i.value = Some(serde_json::json!("user-18"));
        let mut d = HistoryEvent::new(process, EventKind::Ok, "order", done);
        d.key = Some("sale-1".into());
        d.value = Some(serde_json::json!(models::orders::order_id_for(idempotency_key)));
        [i, d]
    }

    /// Goal: a violation naming an order outlines that order and no other (issue 19: flash-sale
    /// seed 3428's lost `order-36` was not marked).
    /// Method: three orders whose keys share a prefix; the message names the middle one, as
    /// `acknowledged-persisted` words it. Then the same keys on the invokes themselves.
    #[test]
    fn named_ops_outline_the_order_a_message_names_by_whole_token() {
        let messages = vec!["order order-36 was accepted but never persisted".to_string()];
        let mut history = Vec::new();
        history.extend(order(1, 100, 200, "order-3"));
        history.extend(order(2, 150, 250, "order-36"));
        history.extend(order(3, 160, 260, "order-360"));
        assert_eq!(named_ops(&history, &messages), BTreeSet::from([(2, 150)]));
        let keyed: Vec<HistoryEvent> = history
            .iter()
            .zip(["order-3", "order-3", "order-36", "order-36", "order-360", "order-360"])
            .map(|(e, key)| {
                let mut e = e.clone();
                e.key = Some(key.into());
                e.value = None;
                e
            })
            .collect();
        assert_eq!(named_ops(&keyed, &messages), BTreeSet::from([(2, 150)]), "a key unique to one operation");
        assert!(named_ops(&history, &[]).is_empty());
    }

    /// Goal: a key shared by many operations (an account) outlines none of them; a calm
    /// operation named by its `f` and time is outlined, and so is an operation named by its
    /// process and its invoke or completion time.
    /// Method: deposits and a withdrawal on one account, the calm deposit and the withdrawal in
    /// the same millisecond; messages as the ledger's invariants and calm phase word them.
    #[test]
    fn named_ops_skip_shared_keys_and_find_calm_operations_by_time() {
        let op = |process: u64, f: &str, invoke: u64| {
            let mut i = HistoryEvent::new(process, EventKind::Invoke, f, invoke);
            i.key = Some("acct-1".into());
            let mut d = i.clone();
            d.kind = EventKind::Info;
            d.time = invoke + 50_000;
            [i, d]
        };
        let at = 12_345_000_000;
        let mut history = Vec::new();
        history.extend(op(1, "deposit", 1_000_000_000));
        history.extend(op(2, "deposit", 2_000_000_000));
        history.extend(op(9000, "deposit", at));
        history.extend(op(9001, "withdraw", at + 100_000));
        let messages = vec![
            "acct-1: missing from the read model".to_string(),
            format!("calm deposit calm-0-0 at {:.3}s ended Info with every fault healed", at as f64 / 1e9),
        ];
        assert_eq!(named_ops(&history, &messages), BTreeSet::from([(9000, at)]));
        let by_process = vec![
            "3 of 40 operations in fault-free windows ended server-error (bound 2%): first p2 deposit acct-1 at 2.000s"
                .to_string(),
            "p1 deposit on acct-1 ended conflict (1.000s..1.000s) but nobody committed on those accounts meanwhile"
                .to_string(),
        ];
        assert_eq!(named_ops(&history, &by_process), BTreeSet::from([(1, 1_000_000_000), (2, 2_000_000_000)]));
    }

    /// Goal: overlapping faults get label rows of their own; a fault after them reuses the
    /// first row; past [`FAULT_LABEL_ROWS_MAX`] rows a label is dropped, its band and tooltip
    /// kept.
    /// Method: lay out two overlapping bands and a later one; then a storm of bands that all
    /// overlap, laid out and rendered.
    #[test]
    fn overlapping_bands_get_their_own_label_rows() {
        let band = |label: &str, start: u64, end: Option<u64>| Band { label: label.into(), start, end };
        let bands = vec![
            band("Crash crdb-2", 0, Some(500)),
            band("Partition api-1", 100, Some(600)),
            band("Crash nats-1", 900, Some(950)),
        ];
        assert_eq!(label_rows(&bands, 1000), vec![Some(0), Some(1), Some(0)]);
        let storm: Vec<Band> = (0..=FAULT_LABEL_ROWS_MAX as u64).map(|n| band("Crash crdb-1", n, None)).collect();
        let rows = label_rows(&storm, 1000);
        assert_eq!(rows.iter().flatten().count(), FAULT_LABEL_ROWS_MAX);
        assert_eq!(rows.last(), Some(&None));
        let history = vec![event(1, EventKind::Invoke, 0), event(1, EventKind::Ok, 1000)];
        let page = render("storm", &history, &storm, &BTreeSet::new());
        assert_eq!(page.matches("class=\"band\"").count(), storm.len(), "every band is drawn");
        assert_eq!(page.matches("<title>Crash crdb-1 [").count(), storm.len(), "each with its tooltip");
        assert_eq!(page.matches(">Crash crdb-1</text>").count(), FAULT_LABEL_ROWS_MAX, "labels past the rows dropped");
        assert!(page.contains("1 fault labels did not fit"));
    }

    /// Goal: an operation a message names is outlined as a witness's are.
    /// Method: render two orders with what `named_ops` finds for a message naming one.
    #[test]
    fn a_named_operation_is_outlined_like_a_witness() {
        let mut history = Vec::new();
        history.extend(order(1, 100, 200, "order-3"));
        history.extend(order(2, 150, 250, "order-36"));
        let messages = vec!["order order-36 was accepted but never persisted".to_string()];
        let page = render("named", &history, &[], &named_ops(&history, &messages));
        assert_eq!(page.matches("class=\"witness\"").count(), 1);
        assert!(page.contains("<rect class=\"witness\" x=\"1080\""), "the second order, drawn from its invoke");
    }
}
