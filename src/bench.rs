//! `testbed bench`: throughput and latency of the real services on this machine, each beside a
//! reference run of the same infrastructure in the same run (pgbench's TPC-B-like script for
//! the ledger, redis-benchmark running the stock script with EVALSHA for the order API), as
//! markdown tables (`testbed bench ledger|orders|services`, which `--write` puts into
//! BENCHMARKS.md with the machine, the commit and the command).
//!
//! The services run as the real runner deploys them (`real::*::deploy_local`): processes of
//! their own on free ports, on databases of the run's own.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use sim::http::HttpReq;

use crate::real::procs::{Action, Backend};
use crate::real::transport::Http;
use crate::real::{self, LocalTools, RealError};

/// Client counts of the ledger benchmark (the issue's 1, 8 and 64).
pub const LEDGER_CONCURRENCY: [usize; 3] = [1, 8, 64];
/// Accounts the ledger benchmark spreads its deposits over.
pub const LEDGER_ACCOUNTS: usize = 100;
/// pgbench's scale factor (100,000 accounts per unit).
pub const PGBENCH_SCALE: u32 = 10;
/// Longest `pgbench -i` (and the slack of a timed pgbench run).
pub const PGBENCH_INIT_MAX: Duration = Duration::from_secs(120);
/// Longest redis-benchmark run, and any other helper command.
pub const HELPER_COMMAND_MAX: Duration = Duration::from_secs(120);
/// How long the persisted count must hold still before the worker counts as caught up.
pub const CAUGHT_UP_STILL: Duration = Duration::from_secs(2);
/// Fixed request rates of the order benchmark, per second.
pub const ORDER_RATES: [u64; 2] = [500, 1000];
/// The unrecorded warm-up before the order API's levels.
pub const WARM_UP: Duration = Duration::from_secs(2);
/// Its rate, per second.
pub const WARM_UP_RATE: u64 = 200;
/// Closed-loop clients of the order API's saturation run.
pub const ORDER_SATURATION_CLIENTS: usize = 64;
/// Requests in flight at most in an open-loop run (beyond it, the run is overloaded and
/// further requests are counted as errors rather than queued without bound).
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 4096;
/// How long one request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the worker to persist the orders of the worker benchmark.
pub const WORKER_DRAIN_MAX: Duration = Duration::from_secs(300);

/// One measured load level.
#[derive(Debug, Clone, Default)]
pub struct Level {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    latencies_us: Vec<u64>,
}

impl Level {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// The latency at quantile `q` (0..=1) of the successful requests, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index] as f64 / 1000.0
    }

    fn record(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.ok += 1;
            self.latencies_us.push(latency.as_micros() as u64);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Level) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }
}

fn setup(e: impl std::fmt::Display) -> RealError {
    RealError::Setup(e.to_string())
}

/// The ledger: deposits through the command API at each concurrency, then (the ledger's
/// processes stopped, so their pools hold no connections) pgbench at the same client counts.
pub async fn ledger(tools: &LocalTools, seconds: u64, out: &Path) -> Result<String, RealError> {
    let id = format!("bench{}", real::run_id(0));
    let d = real::ledger::deploy_local(out, tools, &id, real::Extras::default()).await?;
    let levels = ledger_levels(&d, seconds).await;
    if let Backend::Local(local) = &d.backend {
        local.shutdown();
    }
    real::drop_databases(&d.databases).await;
    let levels = levels?;
    let pg_url = format!("{}/{id}_pgbench", tools.postgres);
    let reference = pgbench_levels(&pg_url, seconds).await;
    real::drop_databases(&[pg_url]).await;
    let reference = reference?;
    let mut table = String::from(
        "| clients | ledger deposits/s | p50 ms | p99 ms | errors | pgbench TPC-B tps | pgbench mean ms | ledger / pgbench |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for ((clients, level), (tps, mean)) in levels.iter().zip(reference) {
        table.push_str(&format!(
            "| {clients} | {:.0} | {:.1} | {:.1} | {} | {tps:.0} | {mean:.1} | {:.2} |\n",
            level.per_second(),
            level.quantile_ms(0.5),
            level.quantile_ms(0.99),
            level.errors,
            level.per_second() / tps
        ));
    }
    Ok(table)
}

async fn ledger_levels(d: &real::ledger::Deployment, seconds: u64) -> Result<Vec<(usize, Level)>, RealError> {
    let http = Http::new(services::ledger::api::IDEMPOTENCY_HEADER, None)?;
    let api = d.apis[0].clone();
    for i in 0..LEDGER_ACCOUNTS {
        let body = json!({"account_id": format!("b-{i}"), "owner_name": "Bench", "initial_balance": "1000000.00",
                          "currency": "USD"});
        let req = HttpReq::post("/api/v1/commands/create-account", Some(&format!("open-{i}")), &body);
        match http.send(&api, req, REQUEST_TIMEOUT).await {
            Some(answer) if answer.status == 201 || answer.status == 200 => {}
            other => return Err(setup(format!("opening account b-{i}: {other:?}"))),
        }
    }
    let mut levels = Vec::new();
    for clients in LEDGER_CONCURRENCY {
        let level = closed_loop(clients, Duration::from_secs(seconds), {
            let (http, api) = (http.clone(), api.clone());
            move |client, n, rng| {
                let (http, api) = (http.clone(), api.clone());
                let account = format!("b-{}", rng.gen_range(0..LEDGER_ACCOUNTS));
                async move {
                    let body = json!({"account_id": account, "amount": "1.00"});
                    let key = format!("d{clients}-{client}-{n}");
                    let req = HttpReq::post("/api/v1/commands/deposit", Some(&key), &body);
                    matches!(http.send(&api, req, REQUEST_TIMEOUT).await, Some(a) if a.status == 201 || a.status == 200)
                }
            }
        })
        .await;
        levels.push((clients, level));
    }
    Ok(levels)
}

/// pgbench's TPC-B-like script at each client count: (tps, mean latency in ms).
async fn pgbench_levels(pg_url: &str, seconds: u64) -> Result<Vec<(f64, f64)>, RealError> {
    services::adapters::pg::ensure_database(pg_url).await.map_err(setup)?;
    pgbench(pg_url, &["-i", "-q", "-s", &PGBENCH_SCALE.to_string()], PGBENCH_INIT_MAX)?;
    let mut out = Vec::new();
    for clients in LEDGER_CONCURRENCY {
        let jobs = clients.min(2).to_string();
        let report = pgbench(
            pg_url,
            &["-n", "-c", &clients.to_string(), "-j", &jobs, "-T", &seconds.to_string()],
            Duration::from_secs(seconds) + PGBENCH_INIT_MAX,
        )?;
        out.push(parse_pgbench(&report).ok_or_else(|| setup(format!("pgbench printed no tps: {report}")))?);
    }
    Ok(out)
}

fn pgbench(url: &str, args: &[&str], max: Duration) -> Result<String, RealError> {
    let mut command = Command::new("pgbench");
    command.args(args).arg(url);
    let output = output_within(command, max)?;
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() { Ok(text) } else { Err(setup(format!("pgbench failed: {text}"))) }
}

/// Runs a command to its end, killing it after `max`.
fn output_within(mut command: Command, max: Duration) -> Result<std::process::Output, RealError> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| setup(format!("{shown}: {e}")))?;
    let deadline = Instant::now() + max;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| setup(format!("{shown}: {e}"))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(setup(format!("{shown} did not finish within {max:?}")));
            }
            Err(e) => return Err(setup(format!("{shown}: {e}"))),
        }
    }
}

/// `tps = 1234.5 (without initial connection time)` and `latency average = 6.4 ms`.
pub fn parse_pgbench(report: &str) -> Option<(f64, f64)> {
    let number_after = |prefix: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
    };
    Some((number_after("tps =")?, number_after("latency average =")?))
}

/// `clients` tasks, each issuing one request after the other for `duration`.
async fn closed_loop<F, Fut>(clients: usize, duration: Duration, request: F) -> Level
where
    F: Fn(usize, u64, &mut ChaCha8Rng) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let request = request.clone();
        tasks.spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(client as u64);
            let mut level = Level::default();
            let mut n = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let ok = request(client, n, &mut rng).await;
                level.record(ok, t0.elapsed());
                n += 1;
            }
            level
        });
    }
    let mut total = Level::default();
    while let Some(level) = tasks.join_next().await {
        total.merge(level.unwrap_or_default());
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// Requests started at a fixed rate for `duration`, whatever the answers' latency.
async fn open_loop<F, Fut>(rate: u64, duration: Duration, request: F) -> Level
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let total = rate * duration.as_secs();
    let level = Arc::new(Mutex::new(Level::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= OPEN_LOOP_IN_FLIGHT_MAX {
            level.lock().expect("not poisoned").errors += 1;
            continue;
        }
        let (future, level) = (request(n), level.clone());
        tasks.spawn(async move {
            // Latency from when the request was due: a late start counts against the service.
            let ok = future.await;
            level.lock().expect("not poisoned").record(ok, due.elapsed());
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut level = Arc::try_unwrap(level).map(|m| m.into_inner().expect("not poisoned")).unwrap_or_default();
    level.seconds = duration.as_secs_f64();
    level
}

/// The order system, once per Redis fsync policy of [`REDIS_FSYNC_POLICIES`]: `/order` at
/// fixed rates and at saturation (64 in-process clients, then wrk), beside redis-benchmark
/// running the stock script with EVALSHA on the same Redis; then the worker alone, persisting
/// what the saturation runs left in the topic.
pub async fn orders(tools: &LocalTools, seconds: u64, out: &Path) -> Result<String, RealError> {
    let wrk = which("wrk").ok_or_else(|| setup("wrk is not installed (Debian: apt-get install wrk)"))?;
    let mut table = String::from(
        "| Redis AOF fsync | load | /order ok/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n",
    );
    let mut notes = String::new();
    for fsync in REDIS_FSYNC_POLICIES {
        let id = format!("bench{}", real::run_id(0));
        let limits = real::orders::Limits { rate_limit: 1_000_000, in_flight_max: 1_000_000, redis_appendfsync: fsync };
        let d = real::orders::deploy_local(&out.join(fsync), tools, &id, limits, real::Extras::default()).await?;
        let result = order_levels(&d, seconds, fsync, &wrk).await;
        if let Backend::Local(local) = &d.backend {
            local.shutdown();
        }
        real::drop_databases(&d.databases).await;
        let (rows, note) = result?;
        table.push_str(&rows);
        notes.push_str(&note);
    }
    Ok(format!("{table}\n{notes}"))
}

/// Redis's append-only fsync policies the order benchmark runs under: `everysec` (Redis's
/// default for AOF) and `always` (what the real runner's kill faults need).
pub const REDIS_FSYNC_POLICIES: [&str; 2] = ["everysec", "always"];
/// wrk's connections and threads in the saturation run.
pub const WRK_CONNECTIONS: usize = 64;
pub const WRK_THREADS: usize = 2;

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// One deployment's rows (fixed rates, saturation by the in-process clients and by wrk) and its
/// notes (redis-benchmark; the worker's drain).
async fn order_levels(
    d: &real::orders::Deployment,
    seconds: u64,
    fsync: &str,
    wrk: &Path,
) -> Result<(String, String), RealError> {
    use services::ports::orders::OrderStore;
    let http = Http::new(services::orders::api::KEY_HEADER, None)?;
    let api = d.apis[0].clone();
    let product = "bench-sku";
    let init = sim::orders::workload::init_request(product, 1_000_000_000);
    match http.send(&api, init, REQUEST_TIMEOUT).await {
        Some(answer) if answer.status == 200 => {}
        other => return Err(setup(format!("starting the sale: {other:?}"))),
    }
    let order = {
        let (http, api) = (http.clone(), api.clone());
        move |tag: String| {
            let (http, api) = (http.clone(), api.clone());
            async move {
                let req = sim::orders::workload::order_request(product, &format!("u{tag}"), &format!("k{tag}"), None);
                matches!(http.send(&api, req, REQUEST_TIMEOUT).await, Some(a) if a.status == 200)
            }
        }
    };
    // Warm-up, not recorded: connections, the producer's metadata, the script cache.
    let warm = order.clone();
    open_loop(WARM_UP_RATE, WARM_UP, move |n| warm(format!("w{n}"))).await;
    let mut rows = String::new();
    let row = |rows: &mut String, load: &str, per_second: f64, p50: f64, p99: f64, errors: u64| {
        rows.push_str(&format!("| {fsync} | {load} | {per_second:.0} | {p50:.1} | {p99:.1} | {errors} |\n"));
    };
    for rate in ORDER_RATES {
        let order = order.clone();
        let level = open_loop(rate, Duration::from_secs(seconds), move |n| order(format!("r{rate}-{n}"))).await;
        let (p50, p99) = (level.quantile_ms(0.5), level.quantile_ms(0.99));
        row(&mut rows, &format!("{rate}/s offered"), level.per_second(), p50, p99, level.errors);
    }
    // Saturation with the worker stopped: the orders wait in the topic for the worker run. The
    // worker first catches up with the fixed-rate levels, so that what it drains after is
    // exactly what saturation accepted.
    let store = services::adapters::pg_orders::PgOrderStore::new(
        services::adapters::pg::lazy_pool(&d.database_url, 2).map_err(setup)?,
    );
    let mut still = (0, Instant::now());
    let caught_up_by = Instant::now() + WORKER_DRAIN_MAX;
    loop {
        let persisted = store.product(product).await.map_err(setup)?.map_or(0, |r| r.orders);
        if persisted != still.0 {
            still = (persisted, Instant::now());
        } else if still.1.elapsed() >= CAUGHT_UP_STILL || Instant::now() >= caught_up_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.backend.act(Action::Kill, "worker").await?;
    let persisted_before = store.product(product).await.map_err(setup)?.map_or(0, |r| r.orders);
    // The highest fixed rate again, with no consumer fetching from the broker meanwhile.
    let rate = ORDER_RATES[ORDER_RATES.len() - 1];
    let level = open_loop(rate, Duration::from_secs(seconds), {
        let order = order.clone();
        move |n| order(format!("q{rate}-{n}"))
    })
    .await;
    let (p50, p99) = (level.quantile_ms(0.5), level.quantile_ms(0.99));
    row(&mut rows, &format!("{rate}/s offered, worker stopped"), level.per_second(), p50, p99, level.errors);
    // Orders accepted while the worker is stopped: they wait in the topic for its drain.
    let mut waiting = level.ok;
    let level = closed_loop(ORDER_SATURATION_CLIENTS, Duration::from_secs(seconds), {
        let order = order.clone();
        move |client, n, _rng| order(format!("s{client}-{n}"))
    })
    .await;
    let (p50, p99) = (level.quantile_ms(0.5), level.quantile_ms(0.99));
    let load = format!("saturation: {ORDER_SATURATION_CLIENTS} clients in the bench process");
    row(&mut rows, &load, level.per_second(), p50, p99, level.errors);
    let by_wrk = run_wrk(wrk, &api, product, &format!("{fsync}-"), seconds)?;
    let load = format!("saturation: wrk, {WRK_CONNECTIONS} connections, {WRK_THREADS} threads");
    row(&mut rows, &load, by_wrk.ok as f64 / by_wrk.seconds, by_wrk.p50_ms, by_wrk.p99_ms, by_wrk.errors);
    let redis_rps = redis_benchmark(&d.redis_url, product)?;
    let mut notes = format!(
        "Redis with appendfsync {fsync}: redis-benchmark, the stock script by EVALSHA (50 connections, one key per request): {redis_rps:.0} requests/s.\n"
    );
    let started = Instant::now();
    d.backend.act(Action::Start, "worker").await?;
    waiting += level.ok + by_wrk.ok;
    let target = persisted_before + waiting as i64;
    let mut persisted = persisted_before;
    while persisted < target && started.elapsed() < WORKER_DRAIN_MAX {
        tokio::time::sleep(Duration::from_millis(100)).await;
        persisted = store.product(product).await.map_err(setup)?.map_or(0, |r| r.orders);
    }
    let secs = started.elapsed().as_secs_f64();
    notes.push_str(&format!(
        "Redis with appendfsync {fsync}: the worker persisted the {} orders waiting in the topic in {secs:.1} s from its start: {:.0} orders/s{}.\n",
        persisted - persisted_before,
        (persisted - persisted_before) as f64 / secs,
        if persisted < target { " (did not finish)" } else { "" }
    ));
    store.pool().close().await;
    Ok((rows, notes))
}

/// What wrk reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Answers 2xx or 3xx (an accepted order is 200; nothing here is redirected or sold out).
    pub ok: u64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// wrk's request script: a new idempotency key and user for every request, unique per thread.
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
function request()
  n = n + 1
  local tag = prefix .. tid .. "-" .. n
  local body = '{"productId":"' .. product .. '","userId":"u' .. tag .. '"}'
  return wrk.format("POST", "/order", {["Content-Type"] = "application/json", ["x-idempotency-key"] = "k" .. tag}, body)
end
"#;

/// Runs wrk against `/order` for `seconds`.
fn run_wrk(wrk: &Path, api: &str, product: &str, prefix: &str, seconds: u64) -> Result<WrkReport, RealError> {
    let script = std::env::temp_dir().join(format!("testbed-wrk-{}.lua", std::process::id()));
    let script_text = format!("product = {product:?}\nprefix = {:?}\n{WRK_SCRIPT}", format!("wrk{prefix}"));
    std::fs::write(&script, script_text).map_err(|e| setup(format!("writing the wrk script: {e}")))?;
    let mut command = Command::new(wrk);
    command.args([
        "--latency",
        "-c",
        &WRK_CONNECTIONS.to_string(),
        "-t",
        &WRK_THREADS.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--timeout",
        &format!("{}s", REQUEST_TIMEOUT.as_secs()),
        "-s",
        &script.display().to_string(),
        api,
    ]);
    let output = output_within(command, Duration::from_secs(seconds) + HELPER_COMMAND_MAX);
    let _ = std::fs::remove_file(&script);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_wrk(&text).ok_or_else(|| setup(format!("wrk printed no report: {text}")))
}

/// Reads wrk's `--latency` report: the requests, the time, the 50% and 99% latencies, the
/// non-2xx/3xx answers and socket errors.
pub fn parse_wrk(text: &str) -> Option<WrkReport> {
    let ms = |value: &str| -> Option<f64> {
        let split = value.find(|c: char| c.is_ascii_alphabetic())?;
        let (n, unit) = value.split_at(split);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let mut report = WrkReport { ok: 0, errors: 0, seconds: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN };
    let mut requests = None;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => report.p50_ms = ms(value)?,
            ["99%", value] => report.p99_ms = ms(value)?,
            [n, "requests", "in", time, ..] => {
                requests = Some(n.parse::<u64>().ok()?);
                report.seconds = ms(time.trim_end_matches(','))? / 1000.0;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => report.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                report.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            _ => {}
        }
    }
    let requests = requests?;
    report.ok = requests.saturating_sub(report.errors);
    (report.seconds > 0.0).then_some(report)
}

/// redis-benchmark calling the stock script by its SHA on the deployment's Redis.
fn redis_benchmark(redis_url: &str, product: &str) -> Result<f64, RealError> {
    let port = redis_url.rsplit(':').next().unwrap_or("6379").trim_end_matches('/');
    let sha = redis::Script::new(services::adapters::redis::STOCK_SCRIPT).get_hash().to_string();
    let mut load = Command::new("redis-cli");
    load.args(["-p", port, "SCRIPT", "LOAD", services::adapters::redis::STOCK_SCRIPT]);
    let load = output_within(load, HELPER_COMMAND_MAX)?;
    if !load.status.success() {
        return Err(setup("redis-cli SCRIPT LOAD failed"));
    }
    let stock_key = services::adapters::redis::stock_key(product);
    let mut bench = Command::new("redis-benchmark");
    bench.args(["-p", port, "-n", "200000", "-c", "50", "-r", "100000000", "-q", "EVALSHA", &sha, "2"]).args([
        stock_key.as_str(),
        "idem:__rand_int__",
        "reserve",
        "86400",
        "1",
    ]);
    let output = output_within(bench, HELPER_COMMAND_MAX)?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `EVALSHA ...: 81234.56 requests per second, p50=0.303 msec`
    text.split("requests per second")
        .next()
        .and_then(|head| head.rsplit(':').next())
        .and_then(|n| n.trim().rsplit(' ').next().and_then(|n| n.parse().ok()))
        .ok_or_else(|| setup(format!("redis-benchmark printed no rate: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_reports_parse() {
        let report = "number of failed transactions: 0 (0.000%)\nlatency average = 6.383 ms\n\
                      initial connection time = 3.112 ms\ntps = 1253.377813 (without initial connection time)\n";
        assert_eq!(parse_pgbench(report), Some((1253.377813, 6.383)));
        assert_eq!(parse_pgbench("nothing"), None);
    }

    #[test]
    fn wrk_reports_parse() {
        let report = "Running 10s test @ http://127.0.0.1:4000\n  2 threads and 64 connections\n\
                      Latency Distribution\n     50%    5.12ms\n     75%    7.00ms\n     90%    9.10ms\n     99%   1.20s\n\
                      101234 requests in 10.01s, 20.1MB read\n  Socket errors: connect 0, read 2, write 0, timeout 3\n\
                      Non-2xx or 3xx responses: 5\nRequests/sec:  10113.29\n";
        let parsed = parse_wrk(report).expect("a report");
        assert_eq!(parsed.errors, 10);
        assert_eq!(parsed.ok, 101_224);
        assert_eq!(parsed.p50_ms, 5.12);
        assert_eq!(parsed.p99_ms, 1200.0);
        assert!((parsed.seconds - 10.01).abs() < 1e-9);
        assert_eq!(parse_wrk("wrk: connection refused"), None);
    }

    #[test]
    fn quantiles_of_a_level() {
        let mut level = Level::default();
        for ms in 1..=100 {
            level.record(true, Duration::from_millis(ms));
        }
        level.record(false, Duration::ZERO);
        level.seconds = 2.0;
        assert_eq!(level.per_second(), 50.0);
        assert_eq!(level.quantile_ms(0.5), 51.0);
        assert_eq!(level.quantile_ms(0.99), 99.0);
        assert_eq!(level.errors, 1);
    }
}
