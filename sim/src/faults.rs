//! Faults: crashes and restarts, partitions (one node isolated, two sides, one way), latency
//! and loss, and buggify. Swarm testing: each seed draws which kinds are on and how often
//! (`FaultPlan::draw`); the injector then draws each fault from the same seeded generator.
//! `heal` undoes everything, so every run ends with a heal-and-quiesce phase.
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
            mean_gap: Duration::from_secs(3600),
            duration_max: Duration::ZERO,
            latency: Duration::from_millis(1)..Duration::from_millis(10),
            loss_percent: 0,
            buggify: false,
            crashable: Vec::new(),
        }
    }

    /// Swarm testing: every kind is on with probability one half (at least one is), with rates
    /// of their own.
    pub fn draw(rng: &mut ChaCha8Rng, crashable: Vec<String>) -> FaultPlan {
        let mut kinds: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|_| rng.gen_bool(0.5)).collect();
        if kinds.is_empty() {
            kinds.push(FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())]);
        }
        let latency_max = [50u64, 100, 500, 1500][rng.gen_range(0..4)];
        FaultPlan {
            kinds,
            mean_gap: Duration::from_millis(rng.gen_range(500..4000)),
            duration_max: Duration::from_millis(rng.gen_range(1000..8000)),
            latency: Duration::from_millis(1)..Duration::from_millis(latency_max),
            loss_percent: rng.gen_range(1..=20),
            buggify: rng.gen_bool(0.5),
            crashable,
        }
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
}

impl Injector {
    pub fn new(targets: Targets) -> Injector {
        Injector { targets, down: Arc::default(), records: Arc::default() }
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
        let net = NetSim::current();
        for a in side_a {
            for b in side_b {
                net.clog_link(self.targets.id(a), self.targets.id(b));
                net.clog_link(self.targets.id(b), self.targets.id(a));
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
        NetSim::current().clog_link(self.targets.id(src), self.targets.id(dst));
        self.open(FaultKind::OneWay, vec![src.to_string(), dst.to_string()])
    }

    /// Heals every link.
    fn unclog_all(&self) {
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
        self.network(Duration::from_millis(1)..Duration::from_millis(10), 0);
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
            let kind = plan.kinds[rng.gen_range(0..plan.kinds.len())];
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
                        NetSim::current().unclog_link(this.targets.id(&src), this.targets.id(&dst));
                        this.close(index);
                    });
                }
                FaultKind::Latency | FaultKind::Loss => {
                    let (latency, loss) = if kind == FaultKind::Latency {
                        (plan.latency.clone(), 0)
                    } else {
                        (Duration::from_millis(1)..Duration::from_millis(10), plan.loss_percent)
                    };
                    self.network(latency, loss);
                    let index = self.open(kind, vec!["network".into()]);
                    madsim::task::spawn(async move {
                        madsim::time::sleep(lasts).await;
                        this.network(Duration::from_millis(1)..Duration::from_millis(10), 0);
                        this.close(index);
                    });
                }
            }
        }
    }

    /// Heals the links of one split.
    pub fn unsplit(&self, side_a: &[String], side_b: &[String], index: usize) {
        let net = NetSim::current();
        for a in side_a {
            for b in side_b {
                net.unclog_link(self.targets.id(a), self.targets.id(b));
                net.unclog_link(self.targets.id(b), self.targets.id(a));
            }
        }
        self.close(index);
    }
}
