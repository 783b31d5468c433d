//! `redis-self-check`: the reservation script is atomic, and a restart empties Redis.
//!
//! Two rounds, each on the same product. A round sets the stock (3-12 items, always at least two
//! fewer than the reservations, so that a script that is not atomic can oversell) through
//! `SimStockCache::set_stock`, then 6-10 clients, each on a node of its own, reserve at once
//! through `SimStockCache::reserve` (the API's atomic script), one or two fresh idempotency keys
//! each, with Redis's latency drawn (0, 2 or 10 ms) so that the requests overlap. Nothing fails in
//! a round, so every answer is definite. Then Redis is crashed and restarted.
//!
//! Checked: in each round, the reservations that succeeded number exactly min(stock, attempts)
//! and never more than the stock, and the stock left plus the reservations equals the stock set
//! (a check-then-act split in two round trips oversells under this concurrency); a fresh key
//! after a `SET` is answered reserved or sold out, nothing else. After each restart, Redis holds
//! nothing: through the port, the product has no stock and a key the round used is unknown
//! (`NoSale`: neither the sale nor the key survived), and the node's memory equals an empty
//! `CacheState`.

use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use services::orders::mem::CacheState;
use services::ports::orders::{Reservation, StockCache};

use super::{BOOT_WAIT, Recorder, SelfCheckRun, client_node, secs};
use crate::faults::{Injector, Targets};
use crate::history::EventKind;
use crate::orders::deps::{self, RedisNode, SimStockCache};
use crate::trace::{self, BuildTracked};
use crate::verdict::Violation;

/// The product of every round.
pub const PRODUCT: &str = "redis-check";
/// Rounds per run, each followed by a restart.
pub const ROUNDS: usize = 2;
/// Stock set at the start of a round, drawn.
pub const STOCK_MIN: i64 = 3;
pub const STOCK_MAX: i64 = 12;
/// Clients of a round, drawn, and reservations per client (1 to this).
pub const CLIENTS_MIN: usize = 6;
pub const CLIENTS_MAX: usize = 10;
pub const ATTEMPTS_PER_CLIENT_MAX: usize = 2;
/// Redis latencies a round may draw (milliseconds): all well under the client timeout.
pub const LATENCIES_MS: [u64; 3] = [0, 2, 10];
const _: () = assert!(10 * 10 < deps::REDIS_TIMEOUT.as_millis());
/// Longest start offset of a client within a round (milliseconds).
pub const JITTER_MS_MAX: u64 = 5;
/// How long Redis stays down, drawn (milliseconds).
pub const DOWN_MS_MIN: u64 = 100;
pub const DOWN_MS_MAX: u64 = 500;
/// Tries of a setup call (set, read) before Redis counts as not answering, and the pause
/// between them: after a restart the node needs a moment to listen again.
pub const SETUP_TRIES: usize = 20;
pub const SETUP_PAUSE: Duration = Duration::from_millis(100);
/// Longest a round's clients may take.
pub const ROUND_MAX: Duration = Duration::from_secs(30);
/// Process ids: the setup client's, and each round's clients' (round * ROUND_PROCESSES + client;
/// plus PROCESS_STRIDE after an answer of unknown outcome).
const SETUP_PROCESS: u64 = 9_000;
const ROUND_PROCESSES: u64 = 100;
const PROCESS_STRIDE: u64 = 1_000;
const _: () = assert!((CLIENTS_MAX as u64) < ROUND_PROCESSES && (ROUNDS as u64) * ROUND_PROCESSES < PROCESS_STRIDE);

/// The nodes of the run.
struct World {
    redis: RedisNode,
    injector: Injector,
    setup: NodeHandle,
    clients: Vec<NodeHandle>,
}

/// Runs the self-check and checks it.
pub async fn run(seed: u64) -> SelfCheckRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let redis = RedisNode::default();
    let r = redis.clone();
    let node = Handle::current()
        .create_node()
        .name("redis")
        .ip(deps::REDIS_ADDR.ip())
        .init(move || deps::serve_redis(r.clone()))
        .build_tracked();
    let injector = Injector::new(Targets { nodes: vec![("redis".to_string(), node.id())] });
    let setup = client_node("setup", [10, 1, 21, 250]);
    let clients =
        (0..CLIENTS_MAX).map(|c| client_node(&format!("client-{}", c + 1), [10, 1, 21, c as u8 + 1])).collect();
    let world = World { redis, injector, setup, clients };
    let recorder = Recorder::new("redis-check");
    madsim::time::sleep(BOOT_WAIT).await;
    let mut violations = Vec::new();
    for round in 0..ROUNDS {
        violations.extend(reserve_round(round, &world, &mut rng, &recorder).await);
        violations.extend(restart_empties(round, &world, &mut rng, &recorder).await);
    }
    world.injector.heal();
    recorder.finish(&world.injector, violations)
}

/// What a client's reservations got.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    reserved: i64,
    sold_out: i64,
    unknown: i64,
}

/// The key of client `client`'s reservation `n` in round `round`.
fn key_of(round: usize, client: usize, n: usize) -> String {
    format!("r{round}-c{client}-k{n}")
}

/// One round of concurrent reservations on a fresh stock, and its check.
async fn reserve_round(round: usize, world: &World, rng: &mut ChaCha8Rng, recorder: &Recorder) -> Vec<Violation> {
    let clients = rng.gen_range(CLIENTS_MIN..=CLIENTS_MAX);
    let attempts: Vec<usize> = (0..clients).map(|_| rng.gen_range(1..=ATTEMPTS_PER_CLIENT_MAX)).collect();
    // Fewer items than reservations, always: a script that is not atomic can then oversell.
    let wanted = attempts.iter().sum::<usize>() as i64;
    let stock = rng.gen_range(STOCK_MIN..=STOCK_MAX.min(wanted - 2).max(STOCK_MIN));
    let latency = LATENCIES_MS[rng.gen_range(0..LATENCIES_MS.len())];
    world.redis.knobs.lock().expect("not poisoned").latency = Duration::from_millis(latency);
    trace::record(
        "redis-check",
        &format!(
            "round {round}: stock {stock}, {clients} clients, {} attempts, latency {latency} ms",
            attempts.iter().sum::<usize>()
        ),
    );
    let set = world.setup.spawn(set_stock(recorder.clone(), round, stock)).await.unwrap_or(false);
    if !set {
        return vec![Violation::new(
            "dependency-contract",
            format!(
                "round {round}: Redis did not acknowledge SET {PRODUCT} {stock} in {SETUP_TRIES} tries, with no fault \
                 on (until {})",
                secs(trace::now_nanos())
            ),
        )];
    }
    let mut handles = Vec::new();
    for (client, &n) in attempts.iter().enumerate() {
        let jitter = Duration::from_millis(rng.gen_range(0..=JITTER_MS_MAX));
        handles.push(world.clients[client].spawn(reserve_all(recorder.clone(), round, client, n, jitter)));
    }
    let started = trace::now_nanos();
    let Ok(tallies) = madsim::time::timeout(ROUND_MAX, futures::future::join_all(handles)).await else {
        return vec![Violation::new(
            "liveness",
            format!("round {round}: the reservations did not end within {ROUND_MAX:?}"),
        )];
    };
    let mut total = Tally::default();
    for (client, tally) in tallies.into_iter().enumerate() {
        match tally {
            Ok(tally) => {
                total.reserved += tally.reserved;
                total.sold_out += tally.sold_out;
                total.unknown += tally.unknown;
            }
            // Its answers are unknown: count them so.
            Err(_) => total.unknown += attempts[client] as i64,
        }
    }
    let attempted = attempts.iter().sum::<usize>() as i64;
    let left = world.setup.spawn(read_stock(recorder.clone(), format!("round-{round}-left"))).await.ok().flatten();
    let when = format!("round {round} (reservations from {} to {})", secs(started), secs(trace::now_nanos()));
    let mut out = Vec::new();
    if total.reserved > stock {
        out.push(Violation::new(
            "dependency-contract",
            format!(
                "{when}: {} reservations succeeded on a stock of {stock}: the script is not atomic",
                total.reserved
            ),
        ));
    }
    // No fault is on during a round (Redis restarts between rounds): every answer must come.
    if total.unknown > 0 {
        out.push(Violation::new(
            "dependency-contract",
            format!("{when}: {} reservations got no answer, with no fault on", total.unknown),
        ));
    } else {
        let expected = stock.min(attempted);
        if total.reserved != expected {
            out.push(Violation::new(
                "dependency-contract",
                format!(
                    "{when}: {} of {attempted} concurrent reservations on a stock of {stock} succeeded and {} were \
                     sold out, every answer definite; expected min(stock, attempts) = {expected} to succeed",
                    total.reserved, total.sold_out
                ),
            ));
        }
        match left {
            Some(Some(left)) if left + total.reserved == stock => {}
            other => out.push(Violation::new(
                "dependency-contract",
                format!(
                    "{when}: the stock left reads {other:?} after {} reservations succeeded on a stock of {stock}; \
                     stock left + reserved must equal the stock set",
                    total.reserved
                ),
            )),
        }
    }
    out
}

/// Sets the round's stock from the setup node; true once Redis acknowledged it.
async fn set_stock(recorder: Recorder, round: usize, stock: i64) -> bool {
    let cache = SimStockCache::connect().await;
    for attempt in 0..SETUP_TRIES {
        let op =
            recorder.invoke(format!("round-{round}-set#{attempt}"), SETUP_PROCESS, "set", PRODUCT, Some(json!(stock)));
        match cache.set_stock(PRODUCT, stock).await {
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

/// Reads the product's stock from the setup node: `None` when Redis never answered.
async fn read_stock(recorder: Recorder, id: String) -> Option<Option<i64>> {
    let cache = SimStockCache::connect().await;
    for attempt in 0..SETUP_TRIES {
        let op = recorder.invoke(format!("{id}#{attempt}"), SETUP_PROCESS, "stock", PRODUCT, None);
        match cache.stock(PRODUCT).await {
            Ok(stock) => {
                recorder.complete(op, EventKind::Ok, Some(json!(stock)), None);
                return Some(stock);
            }
            Err(e) => {
                recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                madsim::time::sleep(SETUP_PAUSE).await;
            }
        }
    }
    None
}

/// A client's reservations of a round, one after the other, each under a fresh key.
async fn reserve_all(recorder: Recorder, round: usize, client: usize, attempts: usize, jitter: Duration) -> Tally {
    let cache = SimStockCache::connect().await;
    madsim::time::sleep(jitter).await;
    let mut tally = Tally::default();
    let mut process = round as u64 * ROUND_PROCESSES + client as u64;
    for n in 0..attempts {
        let key = key_of(round, client, n);
        // The request attempt's id: unique in the run.
        let attempt = process * 10 + n as u64 + 1;
        let op = recorder.invoke(key.clone(), process, "reserve", PRODUCT, Some(json!(key)));
        let at = op.at;
        match cache.reserve(PRODUCT, &key, attempt).await {
            Ok(Reservation::Reserved { .. }) => {
                recorder.complete(op, EventKind::Ok, None, None);
                tally.reserved += 1;
            }
            Ok(Reservation::SoldOut) => {
                recorder.complete(op, EventKind::Fail, None, Some("sold_out".into()));
                tally.sold_out += 1;
            }
            Ok(other) => {
                recorder.complete(op, EventKind::Info, Some(json!(format!("{other:?}"))), None);
                recorder.breach(format!(
                    "round {round}: reserve of the fresh key {key} at {} answered {other:?}; after SET a fresh key is \
                     reserved or sold out",
                    secs(at)
                ));
                tally.unknown += 1;
            }
            Err(e) => {
                recorder.complete(op, EventKind::Info, None, Some(e.to_string()));
                tally.unknown += 1;
                process += PROCESS_STRIDE;
            }
        }
    }
    tally
}

/// Crashes and restarts Redis; then it must hold nothing.
async fn restart_empties(round: usize, world: &World, rng: &mut ChaCha8Rng, recorder: &Recorder) -> Vec<Violation> {
    world.injector.crash("redis");
    madsim::time::sleep(Duration::from_millis(rng.gen_range(DOWN_MS_MIN..=DOWN_MS_MAX))).await;
    world.injector.restart("redis");
    let up = trace::now_nanos();
    let probe = key_of(round, 0, 0);
    let seen = world.setup.spawn(after_restart(recorder.clone(), round, probe.clone())).await.ok();
    let mut out = Vec::new();
    let when = format!("after the restart of redis at {} (round {round})", secs(up));
    match seen {
        Some((Some(None), Some(Reservation::NoSale))) => {}
        Some((stock, reservation)) => out.push(Violation::new(
            "dependency-contract",
            format!(
                "{when}: the stock of {PRODUCT} reads {stock:?} (expected Some(None): no sale) and reserve of the \
                 round's key {probe} answers {reservation:?} (expected Some(NoSale): Redis lost the sale and the key)"
            ),
        )),
        None => out.push(Violation::new("dependency-contract", format!("{when}: the probe of Redis did not finish"))),
    }
    // The probe's answers show the new incarnation serving; it wrote nothing.
    let memory = world.redis.snapshot();
    if memory != CacheState::default() {
        out.push(Violation::new(
            "dependency-contract",
            format!(
                "{when}: Redis's memory holds {} keys (stock {:?}, keys {:?}); a restart empties it",
                memory.size(),
                memory.stock,
                memory.keys.keys().collect::<Vec<_>>()
            ),
        ));
    }
    out
}

/// Through the port, after a restart: the product's stock, then a reservation of a key the
/// round used (`None`: Redis never answered).
async fn after_restart(recorder: Recorder, round: usize, probe: String) -> (Option<Option<i64>>, Option<Reservation>) {
    let stock = read_stock(recorder.clone(), format!("round-{round}-after-restart")).await;
    let cache = SimStockCache::connect().await;
    let mut reservation = None;
    for attempt in 0..SETUP_TRIES {
        let op = recorder.invoke(
            format!("round-{round}-probe#{attempt}"),
            SETUP_PROCESS,
            "reserve",
            PRODUCT,
            Some(json!(probe)),
        );
        match cache.reserve(PRODUCT, &probe, u64::MAX - attempt as u64).await {
            Ok(answer) => {
                recorder.complete(op, EventKind::Ok, Some(json!(format!("{answer:?}"))), None);
                reservation = Some(answer);
                break;
            }
            Err(e) => {
                recorder.complete(op, EventKind::Fail, None, Some(e.to_string()));
                madsim::time::sleep(SETUP_PAUSE).await;
            }
        }
    }
    (stock, reservation)
}
