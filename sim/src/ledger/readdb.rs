//! Simulated PostgreSQL holding the read model: one node, durable, and the client adapter
//! `SimReadModel` (a `ReadModel`).
//!
//! Contract (DESIGN 6): each event's projection and checkpoint commit together (the node
//! applies `services::ledger::mem::project`, the projection the real SQL follows); committed
//! state survives restarts; the node is unavailable while down or cut off, and a client then
//! gets `unavailable` after its timeout (a projection whose answer was lost may have been
//! applied: redelivery is harmless because the projection is idempotent).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::net::rpc::Request;
use serde::{Deserialize, Serialize};
use services::ledger::mem::{project, replay_views};
use services::ports::ledger::{Applied, BalanceView, EventStore, ReadError, ReadModel, RecordedEvent};

use crate::trace;

pub const READ_DB_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 3, 1)), 5432);
/// Client timeout of one statement.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

/// The read model's tables, as PostgreSQL's disk keeps them.
pub type ReadDbState = Arc<Mutex<BTreeMap<String, BalanceView>>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadReq {
    Apply(Box<RecordedEvent>),
    Balance(String),
    All,
    Replace(Vec<BalanceView>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadResp {
    Applied(Applied),
    Views(Vec<BalanceView>),
    Done,
}

impl Request for ReadReq {
    type Response = Result<ReadResp, ReadError>;
    const ID: u64 = 0x5EAD_0001;
}

/// Runs the read model's PostgreSQL node until it is killed.
pub async fn serve(state: ReadDbState) {
    let ep = Endpoint::bind(READ_DB_ADDR).await.expect("bind read db");
    ep.add_rpc_handler(move |req: ReadReq| {
        let state = state.clone();
        async move {
            let mut views = state.lock().expect("not poisoned");
            match req {
                ReadReq::Apply(event) => {
                    let applied = project(&mut views, &event);
                    trace::record_fmt(
                        "readdb",
                        format_args!("apply {}@{} -> {applied:?}", event.stream_id, event.version),
                    );
                    trace::gauge("applied", views.values().map(|v| v.version as i64).sum());
                    applied.map(ReadResp::Applied)
                }
                ReadReq::Balance(id) => Ok(ReadResp::Views(views.get(&id).cloned().into_iter().collect())),
                ReadReq::All => Ok(ReadResp::Views(views.values().cloned().collect())),
                ReadReq::Replace(fresh) => {
                    trace::record("readdb", &format!("replace {} views", fresh.len()));
                    *views = fresh.into_iter().map(|v| (v.account_id.clone(), v)).collect();
                    trace::gauge("applied", views.values().map(|v| v.version as i64).sum());
                    Ok(ReadResp::Done)
                }
            }
        }
    });
    futures::future::pending::<()>().await;
}

/// The read-model adapter of a ledger role.
#[derive(Clone)]
pub struct SimReadModel {
    ep: Arc<Endpoint>,
}

impl SimReadModel {
    pub async fn connect() -> SimReadModel {
        SimReadModel { ep: Arc::new(Endpoint::bind("0.0.0.0:0").await.expect("bind client")) }
    }

    async fn call(&self, req: ReadReq) -> Result<ReadResp, ReadError> {
        match self.ep.call_timeout(READ_DB_ADDR, req, CLIENT_TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => Err(ReadError::Unavailable(format!("read db: {e}"))),
        }
    }
}

fn unexpected(resp: ReadResp) -> ReadError {
    ReadError::Corrupt(format!("unexpected answer {resp:?}"))
}

impl ReadModel for SimReadModel {
    async fn apply(&self, event: &RecordedEvent) -> Result<Applied, ReadError> {
        match self.call(ReadReq::Apply(Box::new(event.clone()))).await? {
            ReadResp::Applied(applied) => Ok(applied),
            other => Err(unexpected(other)),
        }
    }

    async fn balance(&self, account_id: &str) -> Result<Option<BalanceView>, ReadError> {
        match self.call(ReadReq::Balance(account_id.to_string())).await? {
            ReadResp::Views(mut views) => Ok(views.pop()),
            other => Err(unexpected(other)),
        }
    }

    async fn all_balances(&self) -> Result<Vec<BalanceView>, ReadError> {
        match self.call(ReadReq::All).await? {
            ReadResp::Views(views) => Ok(views),
            other => Err(unexpected(other)),
        }
    }

    async fn rebuild<S: EventStore>(&self, source: &S) -> Result<u64, ReadError> {
        // The replay is computed by the caller and swapped in in one statement, as the real
        // adapter does in one transaction: readers never see a half-built model.
        let (fresh, count) = replay_views(source).await?;
        match self.call(ReadReq::Replace(fresh.into_values().collect())).await? {
            ReadResp::Done => Ok(count),
            other => Err(unexpected(other)),
        }
    }
}
