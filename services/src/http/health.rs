//! `/health`: each dependency's state, and the service's overall state derived from them.
//!
//! A dependency is `up`, `degraded` (working, but something to look at: a backlog, a lag) or
//! `down`. The service is `down` (HTTP 503) when a dependency it cannot work without is down,
//! `degraded` when anything is not up, else `ok`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Degraded,
    Down,
}

/// One dependency's state, with details (backlog sizes, lags, the error).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepHealth {
    pub state: State,
    #[serde(flatten)]
    pub details: BTreeMap<String, Value>,
}

impl DepHealth {
    pub fn up() -> Self {
        DepHealth { state: State::Up, details: BTreeMap::new() }
    }

    pub fn down(reason: &str) -> Self {
        DepHealth::up().with_state(State::Down).detail("error", reason)
    }

    pub fn with_state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

type ProbeFn = Arc<dyn Fn() -> BoxFuture<'static, DepHealth> + Send + Sync>;

/// A named probe and whether the service can work without it.
#[derive(Clone)]
struct Probe {
    name: String,
    critical: bool,
    run: ProbeFn,
}

/// The probes of one process.
#[derive(Clone, Default)]
pub struct Health {
    probes: Vec<Probe>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a probe. `critical`: the service is down when this dependency is down.
    pub fn probe<F>(mut self, name: &str, critical: bool, run: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, DepHealth> + Send + Sync + 'static,
    {
        self.probes.push(Probe { name: name.to_string(), critical, run: Arc::new(run) });
        self
    }

    /// Runs every probe; returns the HTTP status and the report.
    pub async fn report(&self) -> (u16, Value) {
        let mut dependencies = BTreeMap::new();
        let mut overall = "ok";
        for probe in &self.probes {
            let health = (probe.run)().await;
            match (health.state, probe.critical) {
                (State::Down, true) => overall = "down",
                (State::Up, _) => {}
                _ if overall == "ok" => overall = "degraded",
                _ => {}
            }
            dependencies.insert(probe.name.clone(), health);
        }
        let status = if overall == "down" { 503 } else { 200 };
        (status, serde_json::json!({"status": overall, "dependencies": dependencies}))
    }
}
