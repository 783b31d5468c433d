//! Redis adapter of the stock cache: one Lua script (reserve and release), loaded once and
//! called with EVALSHA; rate limits and admission tokens with plain commands.
//!
//! The connection is created on first use and re-created after a failure, so the API starts
//! while Redis is down; every call has a timeout. Keys: `product:{id}:stock` (spec 004),
//! `idem:{key}` (the key's first answer), `rl:{user}` (rate window), `admit:{token}`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use crate::ports::orders::{CacheError, Claim, Release, Reservation, StockCache};

/// Longest wait for one Redis call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Claims sent in one pipelined round trip (each round trip has its own [`REDIS_TIMEOUT`]).
pub const CLAIM_PIPELINE_MAX: usize = 64;
/// How long an idempotency key's answer is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The one script: `reserve` checks the key and takes one item if any is left; `release` gives
/// back the item of a reservation whose produce failed, unless the worker claimed the order;
/// `claim` is the worker's claim before it persists, refused for a released reservation.
pub const STOCK_SCRIPT: &str = r#"
local stock_key, idem_key = KEYS[1], KEYS[2]
local op, ttl, attempt = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local seen = redis.call('GET', idem_key)
local reserved = seen and string.sub(seen, 1, 9) == 'reserved:'
if op == 'reserve' then
  if reserved then
    redis.call('SET', idem_key, 'reserved:' .. attempt, 'EX', ttl)
    return 'repeat:reserved'
  end
  if seen == 'claimed' then return 'repeat:reserved' end
  if seen == 'soldout' then return 'repeat:soldout' end
  local stock = redis.call('GET', stock_key)
  if not stock then return 'nosale' end
  if tonumber(stock) > 0 then
    redis.call('DECR', stock_key)
    redis.call('SET', idem_key, 'reserved:' .. attempt, 'EX', ttl)
    return 'reserved'
  end
  redis.call('SET', idem_key, 'soldout', 'EX', ttl)
  return 'soldout'
elseif op == 'release' then
  if seen == 'reserved:' .. attempt then
    redis.call('SET', idem_key, 'released', 'EX', ttl)
    if redis.call('EXISTS', stock_key) == 1 then redis.call('INCR', stock_key) end
    return 'released'
  end
  if seen == 'claimed' then return 'claimed' end
  return 'unknown'
elseif op == 'claim' then
  if seen == 'released' or seen == 'soldout' then return 'cancelled' end
  redis.call('SET', idem_key, 'claimed', 'EX', ttl)
  return 'claimed'
end
return redis.error_reply('unknown op ' .. tostring(op))
"#;

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
    ) -> Result<String, CacheError> {
        let (stock, idem) = (stock_key(product_id), format!("idem:{key}"));
        let script = self.script.clone();
        self.run(|mut c| async move {
            script.key(stock).key(idem).arg(op).arg(IDEMPOTENCY_TTL.as_secs()).arg(attempt).invoke_async(&mut c).await
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
        Ok(match self.script_op("reserve", product_id, key, attempt).await?.as_str() {
            "reserved" => Reservation::Reserved,
            "soldout" => Reservation::SoldOut,
            "nosale" => Reservation::NoSale,
            "repeat:reserved" => Reservation::Repeat { reserved: true },
            _ => Reservation::Repeat { reserved: false },
        })
    }

    async fn release(&self, product_id: &str, key: &str, attempt: u64) -> Result<Release, CacheError> {
        Ok(match self.script_op("release", product_id, key, attempt).await?.as_str() {
            "released" => Release::Released,
            "claimed" => Release::Claimed,
            _ => Release::Unknown,
        })
    }

    async fn claim(&self, key: &str) -> Result<Claim, CacheError> {
        // The claim does not touch the stock; the script still takes a stock key.
        Ok(match self.script_op("claim", "-", key, 0).await?.as_str() {
            "cancelled" => Claim::Cancelled,
            _ => Claim::Proceed,
        })
    }

    async fn claim_batch(&self, keys: &[String]) -> Result<Vec<Claim>, CacheError> {
        // Pipelined round trips of at most CLAIM_PIPELINE_MAX claims: the script (re)loaded,
        // then one EVALSHA per key. Each claim is still one atomic script run.
        let sha = self.script.get_hash().to_string();
        let mut claims = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CLAIM_PIPELINE_MAX) {
            let (sha, chunk) = (sha.clone(), chunk.to_vec());
            let answers: Vec<String> = self
                .run(|mut c| async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SCRIPT").arg("LOAD").arg(STOCK_SCRIPT).ignore();
                    for key in &chunk {
                        pipe.cmd("EVALSHA")
                            .arg(&sha)
                            .arg(2)
                            .arg(stock_key("-"))
                            .arg(format!("idem:{key}"))
                            .arg("claim")
                            .arg(IDEMPOTENCY_TTL.as_secs())
                            .arg(0);
                    }
                    pipe.query_async(&mut c).await
                })
                .await?;
            claims.extend(answers.iter().map(|a| if a == "cancelled" { Claim::Cancelled } else { Claim::Proceed }));
        }
        Ok(claims)
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
