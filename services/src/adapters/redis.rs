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
/// How long an idempotency key's answer is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The one script, each op one atomic step. A key's value: `reserved:<holder>:<reservation>`
/// (holds an item; `holder` is the request attempt using it now), `cancelling:<reservation>`
/// (locked by a failed produce while the order store cancels it), `released`, `soldout`.
/// `reserve` answers a known key with its state (re-arming a held one under the attempt) or
/// takes one item if any is left; `lock` locks the key for the attempt that holds it;
/// `finish` gives the item back (`cancelled` = 1) or keeps it, for a key locked for that
/// reservation.
pub const STOCK_SCRIPT: &str = r#"
local stock_key, idem_key = KEYS[1], KEYS[2]
local op, ttl, attempt, reservation, cancelled = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local seen = redis.call('GET', idem_key)
local holder, held = nil, nil
if seen then holder, held = string.match(seen, '^reserved:(%d+):(%d+)$') end
if op == 'reserve' then
  if held then
    redis.call('SET', idem_key, 'reserved:' .. attempt .. ':' .. held, 'EX', ttl)
    return 'held:' .. held
  end
  if seen and string.sub(seen, 1, 11) == 'cancelling:' then return seen end
  if seen == 'soldout' then return 'repeat:soldout' end
  local stock = redis.call('GET', stock_key)
  if not stock then return 'nosale' end
  if tonumber(stock) > 0 then
    redis.call('DECR', stock_key)
    redis.call('SET', idem_key, 'reserved:' .. attempt .. ':' .. attempt, 'EX', ttl)
    return 'reserved:' .. attempt
  end
  redis.call('SET', idem_key, 'soldout', 'EX', ttl)
  return 'soldout'
elseif op == 'lock' then
  if not seen then return 'unknown' end
  if holder == attempt then
    redis.call('SET', idem_key, 'cancelling:' .. held, 'EX', ttl)
    return 'locked:' .. held
  end
  return 'notheld'
elseif op == 'finish' then
  if seen ~= 'cancelling:' .. reservation then return 'unknown' end
  if cancelled == '1' then
    redis.call('SET', idem_key, 'released', 'EX', ttl)
    if redis.call('EXISTS', stock_key) == 1 then redis.call('INCR', stock_key) end
    return 'released'
  end
  redis.call('SET', idem_key, 'reserved:0:' .. reservation, 'EX', ttl)
  return 'kept'
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

    async fn script_op(
        &self,
        op: &'static str,
        product_id: &str,
        key: &str,
        attempt: u64,
        reservation: u64,
        cancelled: bool,
    ) -> Result<String, CacheError> {
        let (stock, idem) = (stock_key(product_id), format!("idem:{key}"));
        let script = self.script.clone();
        self.run(|mut c| async move {
            script
                .key(stock)
                .key(idem)
                .arg(op)
                .arg(IDEMPOTENCY_TTL.as_secs())
                .arg(attempt)
                .arg(reservation)
                .arg(u8::from(cancelled))
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
        let key = stock_key(product_id);
        self.run(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await }).await.map(|_| ())
    }
}

impl StockCache for RedisStockCache {
    async fn set_stock(&self, product_id: &str, quantity: i64) -> Result<(), CacheError> {
        let key = stock_key(product_id);
        self.run(|mut c| async move { redis::cmd("SET").arg(key).arg(quantity).query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    async fn stock(&self, product_id: &str) -> Result<Option<i64>, CacheError> {
        let key = stock_key(product_id);
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async::<Option<i64>>(&mut c).await }).await
    }

    async fn reserve(&self, product_id: &str, key: &str, attempt: u64) -> Result<Reservation, CacheError> {
        let answer = self.script_op("reserve", product_id, key, attempt, 0, false).await?;
        if let Some(reservation) = number_after(&answer, "reserved:") {
            return Ok(Reservation::Reserved { reservation });
        }
        if let Some(reservation) = number_after(&answer, "held:") {
            return Ok(Reservation::Held { reservation });
        }
        if let Some(reservation) = number_after(&answer, "cancelling:") {
            return Ok(Reservation::Cancelling { reservation });
        }
        match answer.as_str() {
            "soldout" => Ok(Reservation::SoldOut),
            "repeat:soldout" => Ok(Reservation::RepeatSoldOut),
            "nosale" => Ok(Reservation::NoSale),
            other => Err(CacheError::Unavailable(format!("unexpected answer of the reservation script: {other}"))),
        }
    }

    async fn lock_release(&self, key: &str, attempt: u64) -> Result<ReleaseLock, CacheError> {
        // The lock does not touch the stock; the script still takes a stock key.
        let answer = self.script_op("lock", "-", key, attempt, 0, false).await?;
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
        Ok(match self.script_op("finish", product_id, key, 0, reservation, cancelled).await?.as_str() {
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
