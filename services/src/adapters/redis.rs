//! Redis adapter of the stock cache: one Lua script (reserve, lock and finish a release), loaded once and
//! called with EVALSHA; rate limits and admission tokens with plain commands.
//!
//! The connection is created on first use and re-created after a failure, so the API starts
//! while Redis is down; every call has a timeout. Keys: `product:{id}:stock` (spec 004),
//! `idem:{key}` (the key's first answer), `rl:{user}` (rate window), `admit:{token}`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use crate::ports::orders::{CacheError, Release, ReleaseLock, Reservation, StockCache};

/// Longest wait for one Redis call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Keys restored as `ordered` per pipelined round trip (each has its own [`REDIS_TIMEOUT`]).
pub const ORDERED_PIPELINE_MAX: usize = 500;
/// How long an idempotency key's answer is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The one script, each op one atomic step. A key's value: `reserved|<holder>|<reservation>|<product>`
/// (holds an item; `holder` is the request attempt using it now), `cancelling|<reservation>|<product>`
/// (locked by a failed produce while the order store cancels it; the item still held),
/// `released|<reservation>` (its reservations up to this one cancelled), `soldout`, `ordered`
/// (its order persisted, restored after Redis lost the key) (`|` appears in no product id). A fresh reservation is named by Redis's clock (`TIME`, microseconds), and
/// always after the key's released one: every API instance reads the one clock. Per product:
/// `product:{id}:stock`, `product:{id}:locks` (the unfinished locks, `<reservation>|<key>`),
/// `product:{id}:after_loss` (set by a re-initialisation after Redis lost the sale, cleared by
/// an exact set) and `product:{id}:floor` (when the stock was last set exactly: a reservation
/// made before is stale).
/// `reserve` answers a known key with its state (re-arming a held one under the attempt) or
/// takes one item if any is left; `lock` locks the key for the attempt that holds it; `finish`
/// gives the item back (`cancelled` = 1) or keeps it, for a key locked for that reservation;
/// `forget` releases a stale reservation without giving its item back; `soldout` and `ordered`
/// remember a key unless Redis knows it; `set` and `reinit` set the stock.
pub const STOCK_SCRIPT: &str = r#"
local stock_key, idem_key, locks_key, loss_key, floor_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local key = string.sub(idem_key, 6)
local op, ttl, attempt, reservation, cancelled, product, quantity =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local seen = redis.call('GET', idem_key)
local r_holder, r_res, r_product, c_res, c_product, released
if seen then
  r_holder, r_res, r_product = string.match(seen, '^reserved|(%d+)|(%d+)|(.+)$')
  c_res, c_product = string.match(seen, '^cancelling|(%d+)|(.+)$')
  released = string.match(seen, '^released|(%d+)$')
end
if op == 'reserve' then
  if r_holder then
    if r_product ~= product then return 'otherproduct' end
    local floor = redis.call('GET', floor_key)
    if floor and tonumber(r_res) < tonumber(floor) then return 'stale:' .. r_res end
    redis.call('SET', idem_key, 'reserved|' .. attempt .. '|' .. r_res .. '|' .. product, 'EX', ttl)
    return 'held:' .. r_res
  end
  if c_res then
    if c_product ~= product then return 'otherproduct' end
    return 'cancelling:' .. c_res
  end
  if seen == 'soldout' then return 'repeat:soldout' end
  if seen == 'ordered' then return 'ordered' end
  local stock = redis.call('GET', stock_key)
  if not stock then return 'nosale' end
  local t = now()
  if tonumber(stock) > 0 then
    if released and tonumber(released) >= t then t = tonumber(released) + 1 end
    local floor = redis.call('GET', floor_key)
    if floor and tonumber(floor) > t then t = tonumber(floor) end
    local id = string.format('%.0f', t)
    redis.call('DECR', stock_key)
    redis.call('SET', idem_key, 'reserved|' .. attempt .. '|' .. id .. '|' .. product, 'EX', ttl)
    return 'reserved:' .. id
  end
  if not seen and redis.call('EXISTS', loss_key) == 1 then
    return 'soldout:afterloss:' .. string.format('%.0f', t)
  end
  redis.call('SET', idem_key, 'soldout', 'EX', ttl)
  return 'soldout'
elseif op == 'lock' then
  if not seen then return 'unknown' end
  if r_holder == attempt and r_product == product then
    redis.call('SET', idem_key, 'cancelling|' .. r_res .. '|' .. product, 'EX', ttl)
    redis.call('SADD', locks_key, r_res .. '|' .. key)
    return 'locked:' .. r_res
  end
  return 'notheld'
elseif op == 'finish' then
  redis.call('SREM', locks_key, reservation .. '|' .. key)
  if seen ~= 'cancelling|' .. reservation .. '|' .. product then return 'unknown' end
  if cancelled == '1' then
    redis.call('SET', idem_key, 'released|' .. reservation, 'EX', ttl)
    -- A reservation older than the last exact set: that set already counted its item.
    local floor = redis.call('GET', floor_key)
    local counted = floor and tonumber(reservation) < tonumber(floor)
    if redis.call('EXISTS', stock_key) == 1 and not counted then redis.call('INCR', stock_key) end
    return 'released'
  end
  redis.call('SET', idem_key, 'reserved|0|' .. reservation .. '|' .. product, 'EX', ttl)
  return 'kept'
elseif op == 'forget' then
  if r_res == reservation and r_product == product then
    redis.call('SET', idem_key, 'released|' .. reservation, 'EX', ttl)
    return 1
  end
  return 0
elseif op == 'ordered' then
  if not seen then redis.call('SET', idem_key, 'ordered', 'EX', ttl) end
  return 'ok'
elseif op == 'soldout' then
  if not seen then redis.call('SET', idem_key, 'soldout', 'EX', ttl) end
  return 'ok'
elseif op == 'set' then
  redis.call('SET', stock_key, quantity)
  redis.call('DEL', loss_key)
  redis.call('SET', floor_key, string.format('%.0f', now() + 1))
  return 'ok'
elseif op == 'reinit' then
  redis.call('SET', stock_key, quantity)
  redis.call('SET', loss_key, 1)
  return 'ok'
end
return redis.error_reply('unknown op ' .. tostring(op))
"#;

/// The number after `prefix` in a script's answer.
fn number_after(answer: &str, prefix: &str) -> Option<u64> {
    answer.strip_prefix(prefix).and_then(|n| n.parse().ok())
}

pub fn stock_key(product_id: &str) -> String {
    format!("product:{product_id}:stock")
}

/// The product's `cancelling` locks not yet finished: a set of `<reservation>|<key>`.
pub fn locks_key(product_id: &str) -> String {
    format!("product:{product_id}:locks")
}

/// Set while the sale runs on a stock re-initialised after Redis lost it.
pub fn loss_key(product_id: &str) -> String {
    format!("product:{product_id}:after_loss")
}

/// When the stock was last set exactly, on Redis's clock.
pub fn floor_key(product_id: &str) -> String {
    format!("product:{product_id}:floor")
}

/// The stock cache on Redis.
#[derive(Clone)]
pub struct RedisStockCache {
    client: redis::Client,
    connection: Arc<Mutex<Option<ConnectionManager>>>,
    script: redis::Script,
    /// Where each call's time and failures go (`redis_command_duration_seconds`,
    /// `redis_errors_total`, `redis_up`), when set.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn cache_error(e: redis::RedisError) -> CacheError {
    if e.code() == Some("OOM") {
        CacheError::OutOfMemory(e.to_string())
    } else {
        CacheError::Unavailable(e.to_string())
    }
}

impl RedisStockCache {
    /// # Errors
    /// [`CacheError::Unavailable`] when the url does not parse; connecting happens on use.
    pub fn new(url: &str) -> Result<RedisStockCache, CacheError> {
        use redis::IntoConnectionInfo;
        // TCP_NODELAY: requests share one multiplexed connection, and with Nagle's algorithm a
        // small write waits for the previous one's ACK (delayed up to 40 ms by the server).
        let info = url
            .into_connection_info()
            .map_err(cache_error)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(cache_error)?;
        Ok(RedisStockCache {
            client,
            connection: Arc::default(),
            script: redis::Script::new(STOCK_SCRIPT),
            metrics: None,
        })
    }

    /// Records every call in these metrics.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        // While another call (re)connects, wait at most one call's timeout: a Redis that
        // answers slowly must not queue every request behind the reconnects (spec 003 test 2).
        let mut slot = tokio::time::timeout(REDIS_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| CacheError::Unavailable("waited too long for a connection".into()))?;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let connection =
            tokio::time::timeout(REDIS_TIMEOUT * 2, self.client.get_connection_manager_with_config(config))
                .await
                .map_err(|_| CacheError::Unavailable("connect timed out".into()))?
                .map_err(cache_error)?;
        // Load the script once; EVALSHA calls it from then on (and reloads it after a restart).
        let mut loading = connection.clone();
        let load = self.script.prepare_invoke();
        let loaded: Result<redis::RedisResult<String>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, load.load_async(&mut loading)).await;
        if !matches!(loaded, Ok(Ok(_))) {
            tracing::debug!("stock script not loaded on connect; EVALSHA loads it on first use");
        }
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn run<T, F, Fut>(&self, call: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        let result = self.run_untimed(call).await;
        if let Some(metrics) = &self.metrics {
            metrics.redis_duration.observe(started.elapsed().as_secs_f64());
            match &result {
                Ok(_) => {
                    metrics.redis_up.set(1);
                }
                Err(e) => {
                    metrics.redis_errors.inc();
                    // Out of memory is an answer: Redis is up.
                    metrics.redis_up.set(i64::from(matches!(e, CacheError::OutOfMemory(_))));
                }
            }
        }
        result
    }

    async fn run_untimed<T, F, Fut>(&self, call: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, call(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.connection.lock().await = None;
                }
                Err(cache_error(e))
            }
            Err(_) => Err(CacheError::Unavailable("redis call timed out".into())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn script_op<T: redis::FromRedisValue + Send + 'static>(
        &self,
        op: &'static str,
        product_id: &str,
        key: &str,
        attempt: u64,
        reservation: u64,
        cancelled: bool,
        quantity: i64,
    ) -> Result<T, CacheError> {
        let keys = [
            stock_key(product_id),
            format!("idem:{key}"),
            locks_key(product_id),
            loss_key(product_id),
            floor_key(product_id),
        ];
        let script = self.script.clone();
        let product = product_id.to_string();
        self.run(|mut c| async move {
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            invocation
                .arg(op)
                .arg(IDEMPOTENCY_TTL.as_secs())
                .arg(attempt)
                .arg(reservation)
                .arg(u8::from(cancelled))
                .arg(product)
                .arg(quantity)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// PING, for `/health`.
    ///
    /// # Errors
    /// [`CacheError`] when Redis does not answer.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.map(|_| ())
    }

    /// Deletes every key of the order system (tests and a fresh sale).
    ///
    /// # Errors
    /// [`CacheError`] when Redis does not answer.
    pub async fn flush_product(&self, product_id: &str) -> Result<(), CacheError> {
        let keys = [stock_key(product_id), locks_key(product_id), loss_key(product_id), floor_key(product_id)];
        self.run(|mut c| async move { redis::cmd("DEL").arg(&keys).query_async::<i64>(&mut c).await }).await.map(|_| ())
    }
}

impl StockCache for RedisStockCache {
    async fn set_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.script_op::<String>("set", product_id, "", 0, 0, false, quantity).await.map(|_| ())
    }

    async fn reinit_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        self.script_op::<String>("reinit", product_id, "", 0, 0, false, quantity).await.map(|_| ())
    }

    async fn remember_sold_out(&self, product_id: &str, key: &str) -> Result<(), CacheError> {
        self.script_op::<String>("soldout", product_id, key, 0, 0, false, 0).await.map(|_| ())
    }

    async fn remember_ordered(&self, _product_id: &str, keys: &[String]) -> Result<(), CacheError> {
        // The script's `ordered` op, as plain `SET NX` (the same write), pipelined: one round
        // trip per chunk however many orders the sale had.
        for chunk in keys.chunks(ORDERED_PIPELINE_MAX) {
            let chunk = chunk.to_vec();
            self.run(|mut c| async move {
                let mut pipe = redis::pipe();
                for key in &chunk {
                    pipe.cmd("SET")
                        .arg(format!("idem:{key}"))
                        .arg("ordered")
                        .arg("NX")
                        .arg("EX")
                        .arg(IDEMPOTENCY_TTL.as_secs())
                        .ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        }
        Ok(())
    }

    async fn forget_stale(&self, product_id: &str, key: &str, reservation: u64) -> Result<bool, CacheError> {
        self.script_op::<i64>("forget", product_id, key, 0, reservation, false, 0).await.map(|n| n == 1)
    }

    async fn locks(&self, product_id: &str) -> Result<Vec<(String, u64)>, CacheError> {
        let set = locks_key(product_id);
        let members: Vec<String> =
            self.run(|mut c| async move { redis::cmd("SMEMBERS").arg(set).query_async(&mut c).await }).await?;
        let mut locks = Vec::with_capacity(members.len());
        for member in members {
            let parsed = member.split_once('|').and_then(|(r, k)| Some((k.to_string(), r.parse::<u64>().ok()?)));
            match parsed {
                Some(lock) => locks.push(lock),
                None => return Err(CacheError::Unavailable(format!("a malformed lock {member:?}"))),
            }
        }
        locks.sort();
        Ok(locks)
    }

    async fn stock(&self, product_id: &str) -> Result<Option<i64>, CacheError> {
        let key = stock_key(product_id);
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async::<Option<i64>>(&mut c).await }).await
    }

    async fn reserve(&self, product_id: &str, key: &str, attempt: u64) -> Result<Reservation, CacheError> {
        let answer: String = self.script_op("reserve", product_id, key, attempt, 0, false, 0).await?;
        if let Some(reservation) = number_after(&answer, "reserved:") {
            return Ok(Reservation::Reserved { reservation });
        }
        if let Some(reservation) = number_after(&answer, "held:") {
            return Ok(Reservation::Held { reservation });
        }
        if let Some(reservation) = number_after(&answer, "cancelling:") {
            return Ok(Reservation::Cancelling { reservation });
        }
        if let Some(reservation) = number_after(&answer, "stale:") {
            return Ok(Reservation::Stale { reservation });
        }
        if let Some(floor) = number_after(&answer, "soldout:afterloss:") {
            return Ok(Reservation::SoldOutAfterLoss { floor });
        }
        match answer.as_str() {
            "soldout" => Ok(Reservation::SoldOut),
            "repeat:soldout" => Ok(Reservation::RepeatSoldOut),
            "otherproduct" => Ok(Reservation::OtherProduct),
            "ordered" => Ok(Reservation::Ordered),
            "nosale" => Ok(Reservation::NoSale),
            other => Err(CacheError::Unavailable(format!("unexpected answer of the reservation script: {other}"))),
        }
    }

    async fn lock_release(&self, product_id: &str, key: &str, attempt: u64) -> Result<ReleaseLock, CacheError> {
        let answer: String = self.script_op("lock", product_id, key, attempt, 0, false, 0).await?;
        if let Some(reservation) = number_after(&answer, "locked:") {
            return Ok(ReleaseLock::Locked { reservation });
        }
        match answer.as_str() {
            "notheld" => Ok(ReleaseLock::NotHeld),
            "unknown" => Ok(ReleaseLock::Unknown),
            other => Err(CacheError::Unavailable(format!("unexpected answer of the lock script: {other}"))),
        }
    }

    async fn finish_release(
        &self,
        product_id: &str,
        key: &str,
        reservation: u64,
        cancelled: bool,
    ) -> Result<Release, CacheError> {
        Ok(match self.script_op::<String>("finish", product_id, key, 0, reservation, cancelled, 0).await?.as_str() {
            "released" => Release::Released,
            "kept" => Release::Kept,
            _ => Release::Unknown,
        })
    }

    async fn grant_admission(&self, token: &str, ttl: Duration) -> Result<(), CacheError> {
        let key = format!("admit:{token}");
        let ms = ttl.as_millis() as u64;
        self.run(|mut c| async move {
            redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ms).query_async::<String>(&mut c).await
        })
        .await
        .map(|_| ())
    }

    async fn take_admission(&self, token: &str) -> Result<bool, CacheError> {
        let key = format!("admit:{token}");
        self.run(|mut c| async move { redis::cmd("GETDEL").arg(key).query_async::<Option<i64>>(&mut c).await })
            .await
            .map(|v| v.is_some())
    }

    async fn admit(&self, user_id: &str, limit: u32, window: Duration) -> Result<bool, CacheError> {
        let key = format!("rl:{user_id}");
        let ms = window.as_millis() as u64;
        let (count,): (u32,) = self
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("INCR")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ms)
                    .arg("NX")
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(count <= limit)
    }
}
