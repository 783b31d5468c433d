//! The run's trace: every message, fault and client result, in order, with the simulated
//! time and the node. Its hash is the run's fingerprint: the same seed must give the same hash.
//!
//! One simulation runs on one thread, so the trace is thread-local. Lines are kept only when
//! asked (repro); otherwise only hashed (FNV-1a, 64 bits), which keeps sweeps cheap.

use std::cell::RefCell;

struct TraceState {
    hash: u64,
    count: u64,
    lines: Option<Vec<String>>,
    start: Option<madsim::time::Instant>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

thread_local! {
    static TRACE: RefCell<TraceState> =
        const { RefCell::new(TraceState { hash: FNV_OFFSET, count: 0, lines: None, start: None }) };
    /// Every node the run created, so that its end can kill them: madsim does not drop the
    /// tasks still pending when a runtime is dropped (madsim issue 242), and a sweep would keep
    /// every seed's world in memory.
    static NODES: RefCell<Vec<madsim::task::NodeId>> = const { RefCell::new(Vec::new()) };
    /// The raw gauges the simulated dependencies set (`crate::metrics`): not part of the trace
    /// or its hash.
    static GAUGES: RefCell<Vec<crate::metrics::GaugeSet>> = const { RefCell::new(Vec::new()) };
}

/// Sets raw gauge `name` to `value` at the current simulated time.
pub fn gauge(name: &str, value: i64) {
    let time = now_nanos();
    GAUGES.with(|g| g.borrow_mut().push(crate::metrics::GaugeSet { time, name: name.to_string(), value }));
}

/// The gauges set so far in this run.
pub fn gauges() -> Vec<crate::metrics::GaugeSet> {
    GAUGES.with(|g| g.borrow().clone())
}

/// Builds a node and remembers it for [`kill_all_nodes`].
pub trait BuildTracked {
    fn build_tracked(self) -> madsim::runtime::NodeHandle;
}

impl BuildTracked for madsim::runtime::NodeBuilder<'_> {
    fn build_tracked(self) -> madsim::runtime::NodeHandle {
        let node = self.build();
        NODES.with(|n| n.borrow_mut().push(node.id()));
        node
    }
}

/// Kills every node the run created, then lets the executor drop their tasks. Called once the
/// run's outcome is known: it records nothing in the trace.
pub async fn kill_all_nodes() {
    let nodes = NODES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    let handle = madsim::runtime::Handle::current();
    for id in nodes {
        handle.kill(id);
    }
    madsim::time::sleep(std::time::Duration::from_millis(1)).await;
}

/// Starts a fresh trace for a run; `keep_lines` keeps the text for printing.
pub fn reset(keep_lines: bool) {
    NODES.with(|n| n.borrow_mut().clear());
    GAUGES.with(|g| g.borrow_mut().clear());
    TRACE.with(|t| {
        *t.borrow_mut() = TraceState {
            hash: FNV_OFFSET,
            count: 0,
            lines: keep_lines.then(Vec::new),
            start: Some(madsim::time::Instant::now()),
        }
    });
}

/// Nanoseconds of simulated time since the run started.
pub fn now_nanos() -> u64 {
    TRACE.with(|t| t.borrow().start.map_or(0, |s| s.elapsed().as_nanos() as u64))
}

/// Records one line: `time node what`.
pub fn record(node: &str, what: &str) {
    record_fmt(node, format_args!("{what}"));
}

/// Records one line whose text is formatted straight into the hash (no string is built unless
/// the lines are kept): the simulation's hot paths trace every statement.
pub fn record_fmt(node: &str, what: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    let time = now_nanos();
    TRACE.with(|t| {
        let mut t = t.borrow_mut();
        let t = &mut *t;
        t.count += 1;
        let seconds = time as f64 / 1e9;
        match t.lines.as_mut() {
            Some(lines) => {
                let line = format!("{seconds:>12.6} {node:<12} {what}");
                let mut hasher = Fnv(&mut t.hash);
                let _ = hasher.write_str(&line);
                let _ = hasher.write_str("\n");
                lines.push(line);
            }
            None => {
                let _ = writeln!(Fnv(&mut t.hash), "{seconds:>12.6} {node:<12} {what}");
            }
        }
    });
}

/// FNV-1a over the bytes written to it.
struct Fnv<'a>(&'a mut u64);

impl std::fmt::Write for Fnv<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for byte in s.as_bytes() {
            *self.0 ^= u64::from(*byte);
            *self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        Ok(())
    }
}

/// The hash and number of lines so far, and the lines if kept.
pub fn finish() -> (u64, u64, Vec<String>) {
    TRACE.with(|t| {
        let mut t = t.borrow_mut();
        (t.hash, t.count, t.lines.take().unwrap_or_default())
    })
}
