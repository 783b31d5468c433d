//! `postgres-self-check`: every acknowledged order insert survives PostgreSQL restarts, exactly once.
//!
//! A setup client starts a sale with ample stock (`init_sale`). One or two clients, each on a
//! node of its own, persist 10-15 orders each through `SimOrderStore::persist` (the worker's
//! insert: idempotent on the order id, the stock decremented in the same transaction), each
//! retried while its outcome is unknown; an acknowledged order is persisted again now and then,
//! as a redelivery would. The PostgreSQL node is crashed and restarted once or twice meanwhile;
//! its disk (`OrderDb`, created outside the node's init) survives. After the heal a reader lists
//! the orders and the product row through the same adapter.
//!
//! Checked: every order whose insert was acknowledged (`Inserted` or `Duplicate`) is listed,
//! and listed once; no order is listed that no client persisted; no order is answered `Inserted`
//! twice; stock left plus orders equals the initial stock; a persist of this sale is never
//! answered sold out, no sale or cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use models::orders::{Order, PlaceOrder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use services::orders::mem::OrderDb;
use services::ports::orders::{OrderStore, Persisted, ProductRow};

use super::{BOOT_WAIT, Recorder, SelfCheckRun, client_node, outage, secs};
use crate::faults::{Injector, Targets};
use crate::history::{EventKind, HistoryEvent};
use crate::orders::deps::{self, SimOrderStore};
use crate::trace::{self, BuildTracked};
use crate::verdict::Violation;

/// The product of the sale.
pub const PRODUCT: &str = "pg-check";
/// Its stock: more than the orders, so that no persist is refused for stock.
pub const STOCK: i64 = 1_000;
/// Clients, drawn, and orders per client, drawn.
pub const CLIENTS_MIN: usize = 1;
pub const CLIENTS_MAX: usize = 2;
pub const ORDERS_MIN: usize = 10;
pub const ORDERS_MAX: usize = 15;
const _: () = assert!((CLIENTS_MAX * ORDERS_MAX) as i64 * 2 < STOCK);
/// Tries of one order while its outcome is unknown.
pub const TRIES_MAX: usize = 3;
/// Pause before such a retry.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Probability that an acknowledged order is persisted again (a redelivery).
pub const REPERSIST_PROBABILITY: f64 = 0.25;
/// Pause between two orders, drawn (milliseconds).
pub const THINK_MS_MIN: u64 = 40;
pub const THINK_MS_MAX: u64 = 150;
/// PostgreSQL outages per run, drawn; each after a drawn pause and lasting a drawn time (ms).
pub const OUTAGES_MIN: usize = 1;
pub const OUTAGES_MAX: usize = 2;
pub const OUTAGE_AFTER_MS_MIN: u64 = 200;
pub const OUTAGE_AFTER_MS_MAX: u64 = 1_000;
pub const OUTAGE_MS_MIN: u64 = 300;
pub const OUTAGE_MS_MAX: u64 = 1_500;
/// Tries of a setup or reader call, and the pause between them (a restarted node needs a
/// moment to listen again).
pub const SETUP_TRIES: usize = 20;
pub const SETUP_PAUSE: Duration = Duration::from_millis(100);
/// Longest the clients may take (15 orders, each at worst four calls timing out).
pub const CLIENTS_MAX_TIME: Duration = Duration::from_secs(120);
/// Process ids: the setup and reader client's; each client's is its index plus a multiple of
/// PROCESS_STRIDE (a new one after each answer of unknown outcome).
const SETUP_PROCESS: u64 = 9_000;
const PROCESS_STRIDE: u64 = 10;
const _: () = assert!((CLIENTS_MAX as u64) < PROCESS_STRIDE);

/// Runs the self-check and checks it.
pub async fn run(seed: u64) -> SelfCheckRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk: Arc<Mutex<OrderDb>> = Arc::default();
    let d = disk.clone();
    let node = Handle::current()
        .create_node()
        .name("orders-db")
        .ip(deps::ORDERS_DB_ADDR.ip())
        .init(move || deps::serve_db(d.clone()))
        .build_tracked();
    let injector = Injector::new(Targets { nodes: vec![("orders-db".to_string(), node.id())] });
    let recorder = Recorder::new("pg-check");
    let setup = client_node("setup", [10, 1, 22, 250]);
    madsim::time::sleep(BOOT_WAIT).await;
    let mut violations = Vec::new();
    if !setup.spawn(init_sale(recorder.clone())).await.unwrap_or(false) {
        violations.push(Violation::new(
            "dependency-contract",
            format!(
                "PostgreSQL did not acknowledge the sale's start in {SETUP_TRIES} tries (until {})",
                secs(trace::now_nanos())
            ),
        ));
        return recorder.finish(&injector, violations);
    }
    let clients = rng.gen_range(CLIENTS_MIN..=CLIENTS_MAX);
    let mut handles = Vec::new();
    for client in 0..clients {
        let orders = rng.gen_range(ORDERS_MIN..=ORDERS_MAX);
        let client_rng = ChaCha8Rng::seed_from_u64(rng.r#gen());
        let node = client_node(&format!("client-{}", client + 1), [10, 1, 22, client as u8 + 1]);
        handles.push(node.spawn(persist_all(recorder.clone(), client, orders, client_rng)));
    }
    let restarts = outages(&injector, &mut rng).await;
    if madsim::time::timeout(CLIENTS_MAX_TIME, futures::future::join_all(handles)).await.is_err() {
        violations.push(Violation::new(
            "liveness",
            format!("postgres-self-check: the clients did not finish within {CLIENTS_MAX_TIME:?}"),
        ));
    }
    injector.heal();
    let read = setup.spawn(read_back(recorder.clone())).await.ok().flatten();
    match read {
        Some((orders, row)) => violations.extend(check(&recorder.events(), &orders, row.as_ref(), &restarts)),
        None => violations.push(Violation::new(
            "dependency-contract",
            format!(
                "after the heal PostgreSQL did not answer the reads of the orders in {SETUP_TRIES} tries (until {})",
                secs(trace::now_nanos())
            ),
        )),
    }
    let rows = disk.lock().expect("not poisoned").orders.len();
    trace::record("checker", &format!("{rows} order rows on disk"));
    recorder.finish(&injector, violations)
}

/// PostgreSQL crashed and restarted once or twice; returns the restart times (nanoseconds).
async fn outages(injector: &Injector, rng: &mut ChaCha8Rng) -> Vec<u64> {
    let count = rng.gen_range(OUTAGES_MIN..=OUTAGES_MAX);
    let mut restarts = Vec::new();
    for _ in 0..count {
        let after = OUTAGE_AFTER_MS_MIN..=OUTAGE_AFTER_MS_MAX;
        restarts.push(outage(injector, rng, "orders-db", after, OUTAGE_MS_MIN..=OUTAGE_MS_MAX).await.1);
    }
    restarts
}

/// Starts the sale; true once acknowledged.
async fn init_sale(recorder: Recorder) -> bool {
    let store = SimOrderStore::connect().await;
    for attempt in 0..SETUP_TRIES {
        let op = recorder.invoke(format!("init#{attempt}"), SETUP_PROCESS, "init", PRODUCT, Some(json!(STOCK)));
        match store.init_sale(PRODUCT, STOCK).await {
            Ok(()) => {
                recorder.complete(op, EventKind::Ok, None, None);
                return true;
            }
            Err(e) => {
                recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                madsim::time::sleep(SETUP_PAUSE).await;
            }
        }
    }
    false
}

/// After the heal: every order of the product, and its row (`None` when PostgreSQL never
/// answered).
async fn read_back(recorder: Recorder) -> Option<(Vec<Order>, Option<ProductRow>)> {
    let store = SimOrderStore::connect().await;
    for attempt in 0..SETUP_TRIES {
        let op = recorder.invoke(format!("read#{attempt}"), SETUP_PROCESS, "orders", PRODUCT, None);
        let answer = match store.orders(PRODUCT).await {
            Ok(orders) => match store.product(PRODUCT).await {
                Ok(row) => Ok((orders, row)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match answer {
            Ok((orders, row)) => {
                recorder.complete(op, EventKind::Ok, Some(json!(orders.len())), None);
                return Some((orders, row));
            }
            Err(e) => {
                recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                madsim::time::sleep(SETUP_PAUSE).await;
            }
        }
    }
    None
}

/// A client's orders, each persisted until acknowledged (bounded), some persisted again.
async fn persist_all(recorder: Recorder, client: usize, orders: usize, mut rng: ChaCha8Rng) {
    let store = SimOrderStore::connect().await;
    let mut process = client as u64;
    for n in 0..orders {
        let key = format!("c{}-o{n}", client + 1);
        let order =
            PlaceOrder { product_id: PRODUCT.to_string(), user_id: format!("user-{}-{n}", client + 1) }.order(&key);
        let mut acked = false;
        for attempt in 1..=TRIES_MAX {
            match persist(&store, &recorder, process, &order, attempt).await {
                Some(answer) => {
                    acked = answer;
                    break;
                }
                None => {
                    process += PROCESS_STRIDE;
                    madsim::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        if acked
            && rng.gen_bool(REPERSIST_PROBABILITY)
            && persist(&store, &recorder, process, &order, TRIES_MAX + 1).await.is_none()
        {
            process += PROCESS_STRIDE;
        }
        madsim::time::sleep(Duration::from_millis(rng.gen_range(THINK_MS_MIN..=THINK_MS_MAX))).await;
    }
}

/// One persist: `Some(true)` acknowledged (inserted, or already there), `Some(false)` refused
/// (a contract breach for this sale), `None` unknown (PostgreSQL did not answer).
async fn persist(
    store: &SimOrderStore,
    recorder: &Recorder,
    process: u64,
    order: &Order,
    attempt: usize,
) -> Option<bool> {
    let id = format!("{}#{attempt}", order.idempotency_key);
    let op = recorder.invoke(id, process, "persist", &order.order_id, Some(json!(order.idempotency_key)));
    let at = op.at;
    match store.persist(order).await {
        Ok(answer @ (Persisted::Inserted | Persisted::Duplicate)) => {
            recorder.complete(op, EventKind::Ok, Some(json!(format!("{answer:?}"))), None);
            Some(true)
        }
        Ok(answer) => {
            recorder.complete(op, EventKind::Fail, None, Some(format!("{answer:?}")));
            recorder.breach(format!(
                "persist of order {} (key {}) at {} answered {answer:?}: the sale has stock {STOCK} and nothing is \
                 cancelled",
                order.order_id,
                order.idempotency_key,
                secs(at)
            ));
            Some(false)
        }
        Err(e) => {
            recorder.complete(op, EventKind::Info, None, Some(e.to_string()));
            None
        }
    }
}

/// The contract, from the history and what the reader got back.
fn check(history: &[HistoryEvent], orders: &[Order], row: Option<&ProductRow>, restarts: &[u64]) -> Vec<Violation> {
    let restarts: Vec<String> = restarts.iter().map(|t| secs(*t)).collect();
    let restarts = restarts.join(", ");
    // Order id -> first acknowledgement; order ids persisted; order id -> times answered Inserted.
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut attempted: BTreeSet<&str> = BTreeSet::new();
    let mut inserted: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for event in history.iter().filter(|e| e.f == "persist") {
        let Some(id) = event.key.as_deref() else { continue };
        match event.kind {
            EventKind::Invoke => {
                attempted.insert(id);
            }
            EventKind::Ok => {
                acked.entry(id).or_insert(event.time);
                if event.value.as_ref().and_then(|v| v.as_str()) == Some("Inserted") {
                    inserted.entry(id).or_default().push(event.time);
                }
            }
            _ => {}
        }
    }
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for order in orders {
        *rows.entry(order.order_id.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for (id, at) in &acked {
        if !rows.contains_key(id) {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "order {id}, whose insert was acknowledged at {}, is missing after PostgreSQL restarted at \
                     {restarts}",
                    secs(*at)
                ),
            ));
        }
    }
    for (id, count) in &rows {
        if *count > 1 {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "order {id} is stored {count} times (restarts at {restarts}); the insert is idempotent on its id"
                ),
            ));
        }
        if !attempted.contains(id) {
            out.push(Violation::new(
                "dependency-contract",
                format!("order {id} is stored, but no client persisted it"),
            ));
        }
    }
    for (id, times) in &inserted {
        if times.len() > 1 {
            let times: Vec<String> = times.iter().map(|t| secs(*t)).collect();
            out.push(Violation::new(
                "dependency-contract",
                format!("persist of order {id} answered Inserted {} times (at {})", times.len(), times.join(", ")),
            ));
        }
    }
    match row {
        Some(row) if row.initial_stock == STOCK && row.stock + row.orders == row.initial_stock => {}
        Some(row) => out.push(Violation::new(
            "dependency-contract",
            format!(
                "the row of {PRODUCT} after restarts at {restarts} reads stock {} + orders {} against initial stock {} \
                 (set to {STOCK}): an insert and its decrement are one transaction",
                row.stock, row.orders, row.initial_stock
            ),
        )),
        None => out.push(Violation::new(
            "dependency-contract",
            format!("the row of {PRODUCT}, whose sale start was acknowledged, is missing after restarts at {restarts}"),
        )),
    }
    out
}
