//! The services' health metrics on simulated time: what an operator's dashboard would show
//! during a run (issue 11). The simulated dependencies set raw gauges as they change (events
//! stored, outbox rows, events applied by the read model, orders produced and committed), so
//! the derived series are exact step functions, not polls: recording them adds no task and no
//! timer, and leaves the run's schedule (and trace hash) as it was. The error rate comes from
//! the history. Series are then sampled every [`SAMPLE_PERIOD_NS`] for the timeline and for
//! `repro`'s `*.metrics.json`.
//!
//! Pure: both builds (the timeline draws the series of real runs too).

use serde::{Deserialize, Serialize};

use crate::history::{EventKind, HistoryEvent};

/// One sample every 250 ms of simulated time.
pub const SAMPLE_PERIOD_NS: u64 = 250_000_000;
/// The window of the error rate: the completions of the last second.
pub const ERROR_WINDOW_NS: u64 = 1_000_000_000;

/// A raw gauge set: at `time` (ns since the run's start), `name` became `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaugeSet {
    pub time: u64,
    pub name: String,
    pub value: i64,
}

/// A named series of (time ns, value) samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(u64, f64)>,
}

impl Series {
    /// The last time the series was above 0 and the first sample after it back at 0, when it
    /// came back; `None` when it was never above 0 at or after `from`.
    pub fn recovered_after(&self, from: u64) -> Option<Result<u64, u64>> {
        let last_up = self.points.iter().rfind(|(t, v)| *t >= from && *v > 0.0).map(|(t, _)| *t)?;
        Some(self.points.iter().find(|(t, v)| *t > last_up && *v == 0.0).map(|(t, _)| *t).ok_or(last_up))
    }

    /// The first sample at or after `from` whose value is at most `level`.
    pub fn first_at_most_after(&self, from: u64, level: f64) -> Option<u64> {
        self.points.iter().find(|(t, v)| *t >= from && *v <= level).map(|(t, _)| *t)
    }

    /// The largest value between `from` and `to`.
    pub fn max_between(&self, from: u64, to: u64) -> f64 {
        self.points.iter().filter(|(t, _)| (from..=to).contains(t)).map(|(_, v)| *v).fold(0.0, f64::max)
    }

    pub fn max(&self) -> f64 {
        self.points.iter().map(|(_, v)| *v).fold(0.0, f64::max)
    }
}

/// The value of gauge `name` at every sample time up to `end` (0 before its first set).
fn step(gauges: &[GaugeSet], name: &str, end: u64) -> Vec<(u64, i64)> {
    let mut sets = gauges.iter().filter(|g| g.name == name).peekable();
    let mut value = 0;
    let mut out = Vec::new();
    let mut t = 0;
    loop {
        while let Some(g) = sets.next_if(|g| g.time <= t) {
            value = g.value;
        }
        out.push((t, value));
        if t >= end {
            return out;
        }
        t = (t + SAMPLE_PERIOD_NS).min(end);
    }
}

/// `a - b` sampled, as a series (never below 0).
fn difference(gauges: &[GaugeSet], name: &str, a: &str, b: &str, end: u64) -> Series {
    let (a, b) = (step(gauges, a, end), step(gauges, b, end));
    let points = a.iter().zip(&b).map(|((t, x), (_, y))| (*t, (x - y).max(0) as f64)).collect();
    Series { name: name.to_string(), points }
}

fn is_error(done: &HistoryEvent) -> bool {
    match done.kind {
        EventKind::Info => true,
        EventKind::Fail => {
            !matches!(done.error.as_deref(), Some("insufficient_funds" | "sold_out" | "rate_limited" | "no_sale"))
        }
        _ => false,
    }
}

/// The share of completions in the last [`ERROR_WINDOW_NS`] that failed for want of the system
/// (unavailable, timeouts, unknown outcomes), not the business's refusals.
pub fn error_rate(history: &[HistoryEvent], end: u64) -> Series {
    let done: Vec<(u64, bool)> =
        history.iter().filter(|e| e.kind != EventKind::Invoke).map(|e| (e.time, is_error(e))).collect();
    let mut points = Vec::new();
    let mut t = 0;
    loop {
        let window = done.iter().filter(|(time, _)| *time <= t && *time + ERROR_WINDOW_NS > t);
        let (n, errors) = window.fold((0u64, 0u64), |(n, e), (_, error)| (n + 1, e + u64::from(*error)));
        points.push((t, if n == 0 { 0.0 } else { errors as f64 / n as f64 }));
        if t >= end {
            break;
        }
        t = (t + SAMPLE_PERIOD_NS).min(end);
    }
    Series { name: "error_rate".into(), points }
}

/// The series of a ledger run: outbox backlog, read-model lag (events stored minus applied),
/// error rate.
pub fn ledger_series(gauges: &[GaugeSet], history: &[HistoryEvent], end: u64) -> Vec<Series> {
    let backlog = step(gauges, "outbox_backlog", end).into_iter().map(|(t, v)| (t, v.max(0) as f64)).collect();
    vec![
        Series { name: "outbox_backlog".into(), points: backlog },
        difference(gauges, "read_model_lag", "events", "applied", end),
        error_rate(history, end),
    ]
}

/// The series of an order run: consumer lag (orders produced minus committed), error rate.
pub fn orders_series(gauges: &[GaugeSet], history: &[HistoryEvent], end: u64) -> Vec<Series> {
    vec![difference(gauges, "consumer_lag", "produced", "committed", end), error_rate(history, end)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(time_ms: u64, name: &str, value: i64) -> GaugeSet {
        GaugeSet { time: time_ms * 1_000_000, name: name.into(), value }
    }

    #[test]
    fn lag_is_a_step_function_sampled_every_period() {
        let gauges = [
            set(100, "events", 3),
            set(300, "applied", 1),
            set(600, "events", 5),
            set(900, "applied", 5),
            set(100, "outbox_backlog", 3),
            set(700, "outbox_backlog", 0),
        ];
        let series = ledger_series(&gauges, &[], 1_000_000_000);
        let lag = &series[1];
        assert_eq!(lag.name, "read_model_lag");
        let values: Vec<f64> = lag.points.iter().map(|(_, v)| *v).collect();
        // t = 0, 250, 500, 750, 1000 ms.
        assert_eq!(values, vec![0.0, 3.0, 2.0, 4.0, 0.0]);
        let backlog: Vec<f64> = series[0].points.iter().map(|(_, v)| *v).collect();
        assert_eq!(backlog, vec![0.0, 3.0, 3.0, 0.0, 0.0]);
        assert_eq!(lag.recovered_after(0), Some(Ok(1_000_000_000)));
        assert_eq!(lag.recovered_after(900_000_000), None);
    }

    #[test]
    fn a_lag_that_never_recovers_says_since_when() {
        let gauges = [set(100, "events", 3)];
        let lag = &ledger_series(&gauges, &[], 600_000_000)[1];
        assert_eq!(lag.recovered_after(0), Some(Err(600_000_000)));
    }
}
