//! The transport of the ledger's simulated clients: an endpoint on a node of their own, madsim's
//! network to the api nodes, and simulated time.

use std::time::Duration;

use madsim::net::Endpoint;

use super::workload::{Target, Transport};
use super::world::{HttpReq, HttpResp, api_addr, query_addr};
use crate::trace;

pub use super::workload::Client;

/// A simulated client's endpoint.
pub struct SimTransport {
    ep: Endpoint,
}

impl SimTransport {
    pub async fn bind() -> SimTransport {
        SimTransport { ep: Endpoint::bind("0.0.0.0:0").await.expect("bind client") }
    }
}

impl Transport for SimTransport {
    async fn call(&self, target: Target, api: usize, req: HttpReq, timeout: Duration) -> Option<HttpResp> {
        let addr = match target {
            Target::Command => api_addr(api),
            Target::Query => query_addr(),
        };
        self.ep.call_timeout(addr, req, timeout).await.ok()
    }

    async fn pause(&self, pause: Duration) {
        madsim::time::sleep(pause).await;
    }

    fn now_nanos(&self) -> u64 {
        trace::now_nanos()
    }

    fn note(&self, client: &str, line: &str) {
        trace::record(client, line);
    }
}

/// A simulated client of the ledger.
pub async fn client(
    index: usize,
    clients: usize,
    api_nodes: usize,
    history: crate::history::History,
    ops: std::sync::Arc<std::sync::Mutex<Vec<super::invariants::OpRecord>>>,
) -> Client<SimTransport> {
    Client::new(index, clients, api_nodes, SimTransport::bind().await, history, ops)
}
