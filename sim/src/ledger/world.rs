//! The ledger's simulated world: dependency nodes (CockroachDB cluster, NATS, PostgreSQL) and
//! the ledger's roles (api, query, relay, processor) as madsim nodes running the very code of
//! the real build (`services::ledger`), and the HTTP-like requests clients send them.
//!
//! State that must survive a crash (the databases' and JetStream's disks) is created here,
//! outside the nodes' init closures; everything a role keeps in memory is lost when it is killed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use madsim::net::Endpoint;
use madsim::net::rpc::Request;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use services::ledger::api;
use services::ledger::command::{BugHooks, CommandHandler};
use services::ledger::{processor, relay};
use services::metrics::{Kind, Metrics};
use services::ports::ledger::{EventPublisher, ReadModel};
use services::reply::Reply;

use super::crdb::{self, CrdbCluster, CrdbFaultRates, SimEventStore};
use super::jetstream::{self, JetStreamState, SimBus};
use super::readdb::{self, ReadDbState, SimReadModel};
pub use crate::http::{HttpReq, HttpResp};
use crate::mid_request::{MidRequestKill, traced};
use crate::trace::{self, BuildTracked};

/// Port of the command API on every api node.
pub const API_PORT: u16 = 4000;
/// Port of the query API.
pub const QUERY_PORT: u16 = 4001;

pub fn api_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 4, index as u8 + 1], API_PORT))
}

pub fn query_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 4, 100], QUERY_PORT))
}

impl Request for HttpReq {
    type Response = HttpResp;
    const ID: u64 = 0x4854_5450;
}

impl From<Reply> for HttpResp {
    fn from(reply: Reply) -> Self {
        HttpResp { status: reply.status, body: reply.body, replayed: reply.replayed }
    }
}

/// The shape of the world.
#[derive(Debug, Clone, Copy)]
pub struct WorldConfig {
    pub crdb_nodes: usize,
    pub api_nodes: usize,
    pub crdb_rates: CrdbFaultRates,
}

/// The world's durable state and its nodes, by name.
pub struct LedgerWorld {
    pub cluster: CrdbCluster,
    pub mid_request_kill: Arc<Mutex<MidRequestKill>>,
    pub jetstream: Arc<Mutex<JetStreamState>>,
    pub readdb: ReadDbState,
    pub nodes: BTreeMap<String, NodeId>,
    pub config: WorldConfig,
}

impl LedgerWorld {
    /// Creates every node. Roles start serving at once; dependencies too.
    pub fn build(handle: &Handle, config: WorldConfig) -> LedgerWorld {
        let cluster = CrdbCluster::new(config.crdb_nodes, config.crdb_rates);
        let jetstream = Arc::new(Mutex::new(JetStreamState::default()));
        let readdb: ReadDbState = Arc::default();
        let mid_request_kill: Arc<Mutex<MidRequestKill>> = Arc::default();
        let mut nodes = BTreeMap::new();
        for index in 0..config.crdb_nodes {
            let cluster = cluster.clone();
            let node = handle
                .create_node()
                .name(format!("crdb-{}", index + 1))
                .ip(crdb::crdb_addr(index).ip())
                .init(move || crdb::serve_node(index, cluster.clone()))
                .build_tracked();
            nodes.insert(format!("crdb-{}", index + 1), node.id());
        }
        let js = jetstream.clone();
        let node = handle
            .create_node()
            .name("nats")
            .ip(jetstream::NATS_ADDR.ip())
            .init(move || jetstream::serve(js.clone()))
            .build_tracked();
        nodes.insert("nats".into(), node.id());
        let rd = readdb.clone();
        let node = handle
            .create_node()
            .name("readdb")
            .ip(readdb::READ_DB_ADDR.ip())
            .init(move || readdb::serve(rd.clone()))
            .build_tracked();
        nodes.insert("readdb".into(), node.id());
        for index in 0..config.api_nodes {
            let gateway = crdb::crdb_addr(index % config.crdb_nodes);
            let name = format!("api-{}", index + 1);
            let node_name = name.clone();
            let kill = mid_request_kill.clone();
            let node = handle
                .create_node()
                .name(name.clone())
                .ip(api_addr(index).ip())
                .init(move || serve_api(index, gateway, node_name.clone(), kill.clone()))
                .build_tracked();
            nodes.insert(name, node.id());
        }
        let node = handle.create_node().name("query").ip(query_addr().ip()).init(serve_query).build_tracked();
        nodes.insert("query".into(), node.id());
        let gateways: Vec<SocketAddr> = (0..config.crdb_nodes).map(crdb::crdb_addr).collect();
        let relay_gateways = gateways.clone();
        let node = handle
            .create_node()
            .name("relay")
            .ip([10, 0, 5, 1].into())
            .init(move || {
                let gateways = relay_gateways.clone();
                async move {
                    let store = SimEventStore::connect(gateways).await;
                    let bus = SimBus::connect().await;
                    let metrics = Metrics::new(Kind::Ledger, "ledger-relay");
                    relay::run_relay(&store, &bus, &metrics).await;
                }
            })
            .build_tracked();
        nodes.insert("relay".into(), node.id());
        let node = handle
            .create_node()
            .name("processor")
            .ip([10, 0, 5, 2].into())
            .init(|| async {
                let bus = SimBus::connect().await;
                let read = SimReadModel::connect().await;
                let metrics = Metrics::new(Kind::Ledger, "ledger-processor");
                processor::run_processor(&bus, &read, &metrics).await;
            })
            .build_tracked();
        nodes.insert("processor".into(), node.id());
        LedgerWorld { cluster, mid_request_kill, jetstream, readdb, nodes, config }
    }

    pub fn node(&self, name: &str) -> NodeId {
        *self.nodes.get(name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Names of the dependency nodes and of the role nodes.
    pub fn crdb_names(&self) -> Vec<String> {
        (1..=self.config.crdb_nodes).map(|i| format!("crdb-{i}")).collect()
    }
}

/// The api role: commands, and the linearizable balance folded from the event store.
async fn serve_api(index: usize, gateway: SocketAddr, name: String, kill: Arc<Mutex<MidRequestKill>>) {
    let store = SimEventStore::connect(vec![gateway]).await;
    let read = SimReadModel::connect().await;
    let bus = SimBus::connect().await;
    let hooks = BugHooks {
        read_model_balance: Some(Arc::new(move |id: String| {
            let read = read.clone();
            async move { read.balance(&id).await.ok().flatten().map(|v| v.balance) }.boxed()
        })),
        publish: Some(Arc::new(move |events| {
            let bus = bus.clone();
            async move {
                for event in events {
                    if let Err(e) = bus.publish(&event).await {
                        tracing::warn!(error = %e, "NATS publish failed, event safely in DB");
                    }
                }
            }
            .boxed()
        })),
    };
    let handler = Arc::new(CommandHandler::new(store).with_bug_hooks(hooks));
    let ep = Endpoint::bind(api_addr(index)).await.expect("bind api");
    ep.add_rpc_handler(move |req: HttpReq| {
        let (handler, name, kill) = (handler.clone(), name.clone(), kill.clone());
        async move {
            let reply = route_api(&handler, &req).await;
            // A first outcome (not a replay of one): committed by this request, and the process
            // dies before the answer leaves it.
            if reply.status == 201 && !reply.replayed && MidRequestKill::hold(&kill, &name, &req, "committed") {
                futures::future::pending::<()>().await;
            }
            traced(&name, &req, reply)
        }
    });
    futures::future::pending::<()>().await;
}

async fn route_api(handler: &CommandHandler<SimEventStore>, req: &HttpReq) -> Reply {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", ["api", "v1", "commands", kind]) => {
            api::command(handler, kind, req.idempotency_key.as_deref().map(str::as_bytes), &req.body).await
        }
        ("GET", ["api", "v1", "accounts", id, "balance"]) => api::strong_balance(handler, id).await,
        _ => Reply::error(404, "not_found", None, "no such route"),
    }
}

/// The query role: balances from the read model.
async fn serve_query() {
    let read = Arc::new(SimReadModel::connect().await);
    let ep = Endpoint::bind(query_addr()).await.expect("bind query");
    ep.add_rpc_handler(move |req: HttpReq| {
        let read = read.clone();
        async move {
            let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
            let reply = match (req.method.as_str(), parts.as_slice()) {
                ("GET", ["api", "v1", "accounts", id, "balance"]) => {
                    let min = req.query.as_deref().and_then(|q| q.strip_prefix("min_position="));
                    api::balance(read.as_ref(), id, min).await
                }
                _ => Reply::error(404, "not_found", None, "no such route"),
            };
            trace::record_fmt("query", format_args!("GET {} -> {} {}", req.path, reply.status, reply.body));
            HttpResp::from(reply)
        }
    });
    futures::future::pending::<()>().await;
}
