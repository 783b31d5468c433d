//! Faults: crashes and restarts, partitions (one node isolated, two sides, one way), latency
//! and loss, and buggify. The swarm (`FaultPlan::draw`) turns every kind on at once, each seed
//! drawing how often each comes, how long faults last and how often they overlap, so faults
//! that need each other (a broker failing while a reply is lost) meet; the injector then draws
//! each fault from the same seeded generator. Overlapping faults compose: a link cut by two
//! partitions heals when both have ended, the network stays slow or lossy while any latency or
//! loss fault is on. `heal` undoes everything, so every run ends with a heal-and-quiesce phase.
//!
//! Every fault is written to the trace and kept as a `FaultRecord` (for timelines).

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::trace;

/// The kinds of fault the injector can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    Crash,
    Isolate,
    Split,
    OneWay,
    Latency,
    Loss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Crash,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Latency,
        FaultKind::Loss,
    ];
}

/// Which faults a seed gets, and how often: drawn once per seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub kinds: Vec<FaultKind>,
    /// Relative weight of each kind of `kinds` (same order): how often the injector picks it.
    pub weights: Vec<u32>,
    /// Mean pause between two faults.
    pub mean_gap: Duration,
    /// Longest a fault lasts before it is undone.
    pub duration_max: Duration,
    /// Latency range while a latency fault is on.
    pub latency: Range<Duration>,
    /// Packet loss rate while a loss fault is on, in percent.
    pub loss_percent: u32,
    /// Buggify points in service code are on.
    pub buggify: bool,
    /// Names of the nodes that may be crashed.
    pub crashable: Vec<String>,
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> FaultPlan {
        FaultPlan {
            kinds: Vec::new(),
            weights: Vec::new(),
            mean_gap: Duration::from_secs(3600),
            duration_max: Duration::ZERO,
            latency: Duration::from_millis(1)..Duration::from_millis(10),
            loss_percent: 0,
            buggify: false,
            crashable: Vec::new(),
        }
    }

    /// Every kind at once (ADR 10: faults that need each other must meet), with a weight each
    /// drawn from 1 to [`FAULT_WEIGHT_MAX`] (so one seed is mostly crashes, another mostly
    /// partitions, none lacks a kind), and gaps, durations, latency and loss of its own.
    pub fn draw(rng: &mut ChaCha8Rng, crashable: Vec<String>) -> FaultPlan {
        let kinds = FaultKind::ALL.to_vec();
        let weights = kinds.iter().map(|_| rng.gen_range(1..=FAULT_WEIGHT_MAX)).collect();
        let latency_max = [50u64, 100, 500, 1500][rng.gen_range(0..4)];
        FaultPlan {
            kinds,
            weights,
            mean_gap: Duration::from_millis(rng.gen_range(500..4000)),
            duration_max: Duration::from_millis(rng.gen_range(1000..8000)),
            latency: Duration::from_millis(1)..Duration::from_millis(latency_max),
            loss_percent: rng.gen_range(1..=20),
            buggify: rng.gen_bool(0.5),
            crashable,
        }
    }
}

/// Largest weight of one fault kind in a plan (the smallest is 1).
pub const FAULT_WEIGHT_MAX: u32 = 4;

impl FaultPlan {
    /// Draws a kind by the plan's weights (uniformly when it has none).
    fn pick(&self, rng: &mut ChaCha8Rng) -> FaultKind {
        let total: u32 = self.weights.iter().sum();
        if self.weights.len() != self.kinds.len() || total == 0 {
            return self.kinds[rng.gen_range(0..self.kinds.len())];
        }
        let mut roll = rng.gen_range(0..total);
        for (kind, weight) in self.kinds.iter().zip(&self.weights) {
            if roll < *weight {
                return *kind;
            }
            roll -= weight;
        }
        self.kinds[self.kinds.len() - 1]
    }

    /// One line per fault kind with its weight, and the rates: what `repro` prints.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k:?}x{}", self.weights.get(i).copied().unwrap_or(1)))
            .collect();
        format!(
            "kinds {} | mean gap {:?} | faults last up to {:?} | latency {:?}..{:?} | loss {}% | buggify {} | crashable {}",
            kinds.join(" "),
            self.mean_gap,
            self.duration_max,
            self.latency.start,
            self.latency.end,
            self.loss_percent,
            self.buggify,
            self.crashable.join(",")
        )
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub targets: Vec<String>,
    pub start: u64,
    pub end: Option<u64>,
}

/// The world as the injector sees it: nodes by name.
#[derive(Clone)]
pub struct Targets {
    pub nodes: Vec<(String, NodeId)>,
}

impl Targets {
    fn id(&self, name: &str) -> NodeId {
        self.nodes.iter().find(|(n, _)| n == name).map(|(_, id)| *id).unwrap_or_else(|| panic!("no node {name}"))
    }
}

/// Injects faults and remembers what to undo.
#[derive(Clone)]
pub struct Injector {
    targets: Targets,
    down: Arc<Mutex<BTreeSet<String>>>,
    records: Arc<Mutex<Vec<FaultRecord>>>,
    /// How many open faults cut each directed link: it heals when the last one ends.
    cuts: Arc<Mutex<std::collections::BTreeMap<(NodeId, NodeId), u32>>>,
    /// Latency and loss faults open now, and their settings: the network is slow while any
    /// latency fault is on, lossy while any loss fault is.
    slow: Arc<Mutex<NetworkFaults>>,
}

#[derive(Debug, Default)]
struct NetworkFaults {
    latency_on: u32,
    loss_on: u32,
    latency: Option<Range<Duration>>,
    loss_percent: u32,
}

/// The network's latency when no latency fault is on.
pub const BASE_LATENCY: Range<Duration> = Duration::from_millis(1)..Duration::from_millis(10);

impl Injector {
    pub fn new(targets: Targets) -> Injector {
        Injector { targets, down: Arc::default(), records: Arc::default(), cuts: Arc::default(), slow: Arc::default() }
    }

    pub fn records(&self) -> Vec<FaultRecord> {
        self.records.lock().expect("not poisoned").clone()
    }

    fn open(&self, kind: FaultKind, targets: Vec<String>) -> usize {
        trace::record("faults", &format!("{kind:?} {}", targets.join(",")));
        let mut records = self.records.lock().expect("not poisoned");
        records.push(FaultRecord { kind, targets, start: trace::now_nanos(), end: None });
        records.len() - 1
    }

    fn close(&self, index: usize) {
        let mut records = self.records.lock().expect("not poisoned");
        if records[index].end.is_none() {
            records[index].end = Some(trace::now_nanos());
            trace::record("faults", &format!("end {:?} {}", records[index].kind, records[index].targets.join(",")));
        }
    }

    /// Kills a node now.
    pub fn crash(&self, name: &str) -> usize {
        self.down.lock().expect("not poisoned").insert(name.to_string());
        Handle::current().kill(self.targets.id(name));
        self.open(FaultKind::Crash, vec![name.to_string()])
    }

    /// Restarts a killed node (its init runs again).
    pub fn restart(&self, name: &str) {
        if self.down.lock().expect("not poisoned").remove(name) {
            Handle::current().restart(self.targets.id(name));
            trace::record("faults", &format!("restart {name}"));
            let open: Vec<usize> = {
                let records = self.records.lock().expect("not poisoned");
                (0..records.len())
                    .filter(|i| {
                        records[*i].end.is_none()
                            && records[*i].kind == FaultKind::Crash
                            && records[*i].targets[0] == name
                    })
                    .collect()
            };
            for i in open {
                self.close(i);
            }
        }
    }

    /// A scripted outage: after `after`, kills `name`; restarts it `lasts` later.
    pub fn outage(&self, name: &'static str, after: Duration, lasts: Duration) -> madsim::task::JoinHandle<()> {
        let this = self.clone();
        madsim::task::spawn(async move {
            madsim::time::sleep(after).await;
            this.crash(name);
            madsim::time::sleep(lasts).await;
            this.restart(name);
        })
    }

    /// Cuts the links between two groups of nodes, both ways.
    pub fn split(&self, side_a: &[String], side_b: &[String]) -> usize {
        for a in side_a {
            for b in side_b {
                self.cut(self.targets.id(a), self.targets.id(b));
                self.cut(self.targets.id(b), self.targets.id(a));
            }
        }
        let kind = if side_a.len() == 1 { FaultKind::Isolate } else { FaultKind::Split };
        let mut targets = side_a.to_vec();
        targets.push("|".into());
        targets.extend(side_b.iter().cloned());
        self.open(kind, targets)
    }

    /// Cuts the link from `src` to `dst` only.
    pub fn one_way(&self, src: &str, dst: &str) -> usize {
        self.cut(self.targets.id(src), self.targets.id(dst));
        self.open(FaultKind::OneWay, vec![src.to_string(), dst.to_string()])
    }

    /// Ends a one-way cut.
    pub fn end_one_way(&self, src: &str, dst: &str, index: usize) {
        self.uncut(self.targets.id(src), self.targets.id(dst));
        self.close(index);
    }

    /// One more open fault cuts the link from `a` to `b`.
    fn cut(&self, a: NodeId, b: NodeId) {
        let mut cuts = self.cuts.lock().expect("not poisoned");
        let n = cuts.entry((a, b)).or_insert(0);
        *n += 1;
        if *n == 1 {
            NetSim::current().clog_link(a, b);
        }
    }

    /// One fault fewer cuts the link from `a` to `b`; it heals when none does.
    fn uncut(&self, a: NodeId, b: NodeId) {
        let mut cuts = self.cuts.lock().expect("not poisoned");
        if let Some(n) = cuts.get_mut(&(a, b)) {
            *n -= 1;
            if *n == 0 {
                cuts.remove(&(a, b));
                NetSim::current().unclog_link(a, b);
            }
        }
    }

    /// A latency (or loss) fault begins: the network is slow (lossy) until the last one ends.
    fn slow_down(&self, latency: Option<Range<Duration>>, loss_percent: u32) {
        let mut slow = self.slow.lock().expect("not poisoned");
        if let Some(latency) = latency {
            slow.latency_on += 1;
            slow.latency = Some(latency);
        } else {
            slow.loss_on += 1;
            slow.loss_percent = loss_percent;
        }
        self.apply_network(&slow);
    }

    /// A latency (`latency`) or loss fault ends.
    fn speed_up(&self, latency: bool) {
        let mut slow = self.slow.lock().expect("not poisoned");
        if latency {
            slow.latency_on = slow.latency_on.saturating_sub(1);
        } else {
            slow.loss_on = slow.loss_on.saturating_sub(1);
        }
        self.apply_network(&slow);
    }

    fn apply_network(&self, slow: &NetworkFaults) {
        let latency = match (&slow.latency, slow.latency_on) {
            (Some(latency), 1..) => latency.clone(),
            _ => BASE_LATENCY,
        };
        let loss = if slow.loss_on > 0 { slow.loss_percent } else { 0 };
        self.network(latency, loss);
    }

    /// Heals every link.
    fn unclog_all(&self) {
        self.cuts.lock().expect("not poisoned").clear();
        *self.slow.lock().expect("not poisoned") = NetworkFaults::default();
        let net = NetSim::current();
        for (_, a) in &self.targets.nodes {
            for (_, b) in &self.targets.nodes {
                if a != b {
                    net.unclog_link(*a, *b);
                }
            }
        }
    }

    /// Sets the network's latency range and loss rate.
    pub fn network(&self, latency: Range<Duration>, loss_percent: u32) {
        NetSim::current().update_config(|c| {
            c.send_latency = latency.clone();
            c.packet_loss_rate = f64::from(loss_percent) / 100.0;
        });
    }

    /// Undoes everything: restarts every killed node, heals every link, resets the network.
    pub fn heal(&self) {
        let down: Vec<String> = self.down.lock().expect("not poisoned").iter().cloned().collect();
        for name in down {
            self.restart(&name);
        }
        self.unclog_all();
        self.network(BASE_LATENCY, 0);
        services::bugs::set_buggify(false);
        let open: Vec<usize> = {
            let records = self.records.lock().expect("not poisoned");
            (0..records.len()).filter(|i| records[*i].end.is_none()).collect()
        };
        for i in open {
            self.close(i);
        }
        trace::record("faults", "heal");
    }

    /// Draws and injects faults from `plan` until `until` (simulated time from now), each
    /// undone after a drawn duration.
    pub async fn run_swarm(&self, plan: &FaultPlan, rng: &mut ChaCha8Rng, until: Duration) {
        if plan.kinds.is_empty() {
            return;
        }
        if plan.buggify {
            services::bugs::set_buggify(true);
        }
        let deadline = madsim::time::Instant::now() + until;
        let names: Vec<String> = self.targets.nodes.iter().map(|(n, _)| n.clone()).collect();
        let limits = crate::limits::get();
        loop {
            if !limits.fault_allowed(self.records.lock().expect("not poisoned").len()) {
                return;
            }
            let gap = Duration::from_millis(rng.gen_range(0..=plan.mean_gap.as_millis() as u64 * 2));
            madsim::time::sleep(gap).await;
            if madsim::time::Instant::now() >= deadline {
                return;
            }
            let kind = plan.pick(rng);
            let lasts = Duration::from_millis(rng.gen_range(100..=plan.duration_max.as_millis().max(101) as u64));
            let this = self.clone();
            match kind {
                FaultKind::Crash if !plan.crashable.is_empty() => {
                    let name = plan.crashable[rng.gen_range(0..plan.crashable.len())].clone();
                    if self.down.lock().expect("not poisoned").contains(&name) {
                        continue;
                    }
                    self.crash(&name);
                    madsim::task::spawn(async move {
                        madsim::time::sleep(lasts).await;
                        this.restart(&name);
                    });
                }
                FaultKind::Crash => {}
                FaultKind::Isolate | FaultKind::Split => {
                    let mut shuffled = names.clone();
                    for i in (1..shuffled.len()).rev() {
                        shuffled.swap(i, rng.gen_range(0..=i));
                    }
                    let cut = if kind == FaultKind::Isolate { 1 } else { rng.gen_range(1..shuffled.len()) };
                    let (a, b) = shuffled.split_at(cut);
                    let (a, b) = (a.to_vec(), b.to_vec());
                    let index = self.split(&a, &b);
                    madsim::task::spawn(async move {
                        madsim::time::sleep(lasts).await;
                        this.unsplit(&a, &b, index);
                    });
                }
                FaultKind::OneWay => {
                    let src = names[rng.gen_range(0..names.len())].clone();
                    let dst = names[rng.gen_range(0..names.len())].clone();
                    if src == dst {
                        continue;
                    }
                    let index = self.one_way(&src, &dst);
                    madsim::task::spawn(async move {
                        madsim::time::sleep(lasts).await;
                        this.end_one_way(&src, &dst, index);
                    });
                }
                FaultKind::Latency | FaultKind::Loss => {
                    let latency = kind == FaultKind::Latency;
                    self.slow_down(latency.then(|| plan.latency.clone()), plan.loss_percent);
                    let index = self.open(kind, vec!["network".into()]);
                    madsim::task::spawn(async move {
                        madsim::time::sleep(lasts).await;
                        this.speed_up(latency);
                        this.close(index);
                    });
                }
            }
        }
    }

    /// Heals the links of one split.
    pub fn unsplit(&self, side_a: &[String], side_b: &[String], index: usize) {
        for a in side_a {
            for b in side_b {
                self.uncut(self.targets.id(a), self.targets.id(b));
                self.uncut(self.targets.id(b), self.targets.id(a));
            }
        }
        self.close(index);
    }
}
