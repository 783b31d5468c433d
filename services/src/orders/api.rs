//! The order API's HTTP contract without an HTTP framework (spec 003-004): `/init`, `/order`,
//! `/products/{id}`. axum (real build) and the simulator both call these functions.
//!
//! `/order`: idempotency key required (400 without); load shedding to the waiting room (302)
//! when the in-flight bound is passed; per-user rate limit (429); one atomic reservation in the
//! stock cache (409 when sold out); the order is then produced to the queue (200). When the
//! produce fails, the reservation is compensated (given back) and the answer is 503: this is the
//! fix of the spec's flaw "Kafka Broker Down" (stock decremented, order never queued). A retry
//! with the same key then starts afresh and names the same order id, so even a produce that did
//! land (a timeout) yields one order: the worker's insert is idempotent on the order id, and its
//! `stock > 0` guard keeps PostgreSQL from overselling while the caches disagree.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use models::orders::{InitSale, InvalidField, PlaceOrder, validate_key};
use serde_json::{Value, json};

use crate::ledger::api::Reply;
use crate::ports::orders::{CacheError, OrderProducer, OrderStore, OrderStoreError, Release, Reservation, StockCache};

/// Longest accepted request body.
pub const BODY_LEN_MAX: usize = 16 * 1024;
/// `/order` requests in flight in one API process before new ones go to the waiting room.
pub const ORDERS_IN_FLIGHT_MAX: usize = 256;
/// Orders a user may place per rate-limit window.
pub const USER_ORDERS_PER_WINDOW_MAX: u32 = 5;
/// The rate-limit window.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The idempotency header (spec 003).
pub const KEY_HEADER: &str = "x-idempotency-key";
/// The header of a waiting-room admission.
pub const ADMISSION_HEADER: &str = "x-admission-token";

/// Everything `/order` needs.
pub struct OrderApi<C, P, S> {
    pub cache: C,
    pub producer: P,
    pub store: S,
    /// Base URL of the waiting room, for the 302 `Location`.
    pub waiting_room_url: String,
    pub in_flight_max: usize,
    pub rate_limit: u32,
    in_flight: Arc<AtomicUsize>,
}

/// An HTTP answer with an optional `Location` (the 302 to the waiting room).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderReply {
    pub reply: Reply,
    pub location: Option<String>,
}

impl From<Reply> for OrderReply {
    fn from(reply: Reply) -> Self {
        OrderReply { reply, location: None }
    }
}

fn invalid(e: &InvalidField) -> Reply {
    Reply::error(422, "invalid_field", Some(e.field), e.to_string())
}

fn cache_down(e: &CacheError) -> Reply {
    tracing::warn!(error = %e, "stock cache failed");
    match e {
        CacheError::OutOfMemory(_) => Reply::error(503, "cache_out_of_memory", None, "the stock cache is full"),
        CacheError::Unavailable(_) => Reply::error(503, "cache_unavailable", None, "the stock cache is unavailable"),
    }
}

fn store_down(e: &OrderStoreError) -> Reply {
    tracing::warn!(error = %e, "order store failed");
    Reply::error(503, "store_unavailable", None, "the order store is unavailable")
}

/// Parses a JSON object body, naming what is wrong.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Reply> {
    if body.len() > BODY_LEN_MAX {
        return Err(Reply::error(413, "body_too_large", None, format!("at most {BODY_LEN_MAX} bytes")));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Reply::error(400, "malformed_json", None, "body must be a JSON object")),
        Err(e) => Err(Reply::error(400, "malformed_json", None, format!("body is not JSON: {e}"))),
    }
}

fn string_field(map: &serde_json::Map<String, Value>, field: &'static str) -> Result<String, Reply> {
    match map.get(field) {
        None | Some(Value::Null) => {
            Err(Reply::error(422, "missing_field", Some(field), format!("{field} is required")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Reply::error(422, "invalid_field", Some(field), format!("{field} must be a string"))),
    }
}

fn only(map: &serde_json::Map<String, Value>, fields: &[&str]) -> Result<(), Reply> {
    match map.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(unknown) => Err(Reply::error(422, "unknown_field", Some(unknown), format!("{unknown} is not a field"))),
        None => Ok(()),
    }
}

/// Parses `POST /init {productId, quantity}`.
///
/// # Errors
/// A 4xx [`Reply`] naming the field.
pub fn parse_init(body: &[u8]) -> Result<InitSale, Reply> {
    let map = object(body)?;
    only(&map, &["productId", "quantity"])?;
    let product_id = string_field(&map, "productId")?;
    let quantity = match map.get("quantity") {
        None | Some(Value::Null) => {
            return Err(Reply::error(422, "missing_field", Some("quantity"), "quantity is required"));
        }
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            Reply::error(422, "invalid_field", Some("quantity"), "quantity must be a whole number, zero or more")
        })?,
        Some(_) => return Err(Reply::error(422, "invalid_field", Some("quantity"), "quantity must be a number")),
    };
    let init = InitSale { product_id, quantity };
    init.validate().map_err(|e| invalid(&e))?;
    Ok(init)
}

/// Parses `POST /order {productId, userId}`.
///
/// # Errors
/// A 4xx [`Reply`] naming the field.
pub fn parse_order(body: &[u8]) -> Result<PlaceOrder, Reply> {
    let map = object(body)?;
    only(&map, &["productId", "userId"])?;
    let order = PlaceOrder { product_id: string_field(&map, "productId")?, user_id: string_field(&map, "userId")? };
    order.validate().map_err(|e| invalid(&e))?;
    Ok(order)
}

fn accepted(order_id: &str) -> OrderReply {
    Reply::new(200, json!({"status": "accepted", "orderId": order_id})).into()
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<C: StockCache, P: OrderProducer, S: OrderStore> OrderApi<C, P, S> {
    pub fn new(cache: C, producer: P, store: S, waiting_room_url: String) -> Self {
        OrderApi {
            cache,
            producer,
            store,
            waiting_room_url,
            in_flight_max: ORDERS_IN_FLIGHT_MAX,
            rate_limit: USER_ORDERS_PER_WINDOW_MAX,
            in_flight: Arc::default(),
        }
    }

    /// Requests in flight now (for `/health` and metrics).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// `POST /init`: the sale's stock, in PostgreSQL (the truth) then in the cache.
    pub async fn init(&self, body: &[u8]) -> Reply {
        let init = match parse_init(body) {
            Ok(init) => init,
            Err(reply) => return reply,
        };
        let quantity = init.quantity as i64;
        if let Err(e) = self.store.init_sale(&init.product_id, quantity).await {
            return store_down(&e);
        }
        if let Err(e) = self.cache.set_stock(&init.product_id, quantity).await {
            return cache_down(&e);
        }
        Reply::new(200, json!({"status": "initialized", "productId": init.product_id, "quantity": quantity}))
    }

    /// `POST /order`.
    pub async fn order(&self, key: Option<&[u8]>, admission_token: Option<&[u8]>, body: &[u8]) -> OrderReply {
        let Some(key) = key else {
            return Reply::error(400, "missing_header", Some(KEY_HEADER), format!("{KEY_HEADER} is required")).into();
        };
        let key =
            match std::str::from_utf8(key).map_err(|_| ()).and_then(|k| validate_key(k).map(|()| k).map_err(|_| ())) {
                Ok(key) => key.to_string(),
                Err(()) => {
                    return Reply::error(
                        400,
                        "invalid_header",
                        Some(KEY_HEADER),
                        "must be 1 to 200 visible ASCII characters",
                    )
                    .into();
                }
            };
        let request = match parse_order(body) {
            Ok(request) => request,
            Err(reply) => return reply.into(),
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(self.in_flight.clone());
        if now > self.in_flight_max && !self.admitted(admission_token).await {
            let location = format!(
                "{}/waiting-room?productId={}&userId={}",
                self.waiting_room_url.trim_end_matches('/'),
                request.product_id,
                request.user_id
            );
            crate::bugs::coverage::mark("waiting-room-redirect");
            let mut reply = Reply::error(302, "waiting_room", None, "too many orders at once: wait your turn");
            reply.body["location"] = json!(location);
            return OrderReply { reply, location: Some(location) };
        }
        match self.cache.admit(&request.user_id, self.rate_limit, RATE_WINDOW).await {
            Ok(true) => {}
            Ok(false) => {
                crate::bugs::coverage::mark("rate-limited");
                return Reply::error(429, "rate_limited", Some("userId"), "too many orders from this user").into();
            }
            Err(e) => return cache_down(&e).into(),
        }
        let order = request.order(&key);
        let attempt: u64 = madsim::rand::Rng::r#gen(&mut madsim::rand::thread_rng());
        let reserved = match self.cache.reserve(&order.product_id, &key, attempt).await {
            Ok(Reservation::Reserved | Reservation::Repeat { reserved: true }) => true,
            Ok(Reservation::SoldOut | Reservation::Repeat { reserved: false }) => false,
            Ok(Reservation::NoSale) => {
                #[cfg(madsim)]
                if crate::bugs::active(crate::bugs::Bug::NoReinitAfterRedisRestart)
                    && let Ok(Some(row)) = self.store.product(&order.product_id).await
                {
                    // Planted bug: "the cache lost the sale, so start it again".
                    let _ = self.cache.set_stock(&order.product_id, row.initial_stock).await;
                    return Reply::error(503, "cache_not_ready", None, "the sale was restarted; retry").into();
                }
                return match self.store.product(&order.product_id).await {
                    Ok(None) => Reply::error(404, "no_sale", Some("productId"), "no sale for this product").into(),
                    Ok(Some(_)) => {
                        Reply::error(503, "cache_not_ready", None, "the stock cache lost the sale: reconcile").into()
                    }
                    Err(e) => store_down(&e).into(),
                };
            }
            // The script may have run before the answer was lost: the key holds the truth.
            Err(CacheError::Unavailable(e)) => {
                tracing::warn!(key = %key, error = %e, "reservation outcome unknown");
                return Reply::error(
                    503,
                    "cache_ambiguous",
                    None,
                    "the item may have been reserved: retry with the same x-idempotency-key",
                )
                .into();
            }
            Err(e) => return cache_down(&e).into(),
        };
        if !reserved {
            return Reply::error(409, "sold_out", Some("productId"), "sold out").into();
        }
        match self.producer.produce(&order).await {
            Ok(()) => accepted(&order.order_id),
            Err(e) => {
                #[cfg(madsim)]
                if crate::bugs::active(crate::bugs::Bug::NoCompensation) {
                    // Planted bug, the spec's own code: log, answer 500, keep the stock taken.
                    tracing::error!(order_id = %order.order_id, error = %e, "Kafka failed");
                    return Reply::error(500, "error", None, "Order processing failed").into();
                }
                // The fix of the spec's flaw: give the item back, unless the worker already
                // claimed the order (then the produce did land and the order is going through).
                match self.cache.release(&order.product_id, &key, attempt).await {
                    Ok(Release::Released) => {
                        crate::bugs::coverage::mark("compensation-after-failed-produce");
                        tracing::warn!(order_id = %order.order_id, key = %key, error = %e, "produce failed: reservation released");
                        Reply::error(
                            503,
                            "queue_unavailable",
                            None,
                            "the order could not be queued; nothing was reserved",
                        )
                        .into()
                    }
                    Ok(Release::Claimed) => {
                        crate::bugs::coverage::mark("claimed-after-failed-produce");
                        accepted(&order.order_id)
                    }
                    Ok(Release::Unknown) | Err(_) => {
                        tracing::error!(order_id = %order.order_id, key = %key, error = %e, "produce failed and nothing could be released");
                        Reply::error(
                            503,
                            "queue_ambiguous",
                            None,
                            "the order may have been queued: retry with the same x-idempotency-key",
                        )
                        .into()
                    }
                }
            }
        }
    }

    async fn admitted(&self, token: Option<&[u8]>) -> bool {
        let Some(token) = token.and_then(|t| std::str::from_utf8(t).ok()) else { return false };
        self.cache.take_admission(token).await.unwrap_or(false)
    }

    /// `GET /products/{id}`: stock in the cache and in PostgreSQL, and persisted orders.
    pub async fn product(&self, product_id: &str) -> Reply {
        if let Err(e) = models::orders::validate_id("productId", product_id) {
            return invalid(&e);
        }
        let row = match self.store.product(product_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Reply::error(404, "no_sale", Some("productId"), "no sale for this product"),
            Err(e) => return store_down(&e),
        };
        let cached = match self.cache.stock(product_id).await {
            Ok(stock) => json!(stock),
            Err(_) => Value::Null,
        };
        Reply::new(
            200,
            json!({
                "productId": product_id,
                "redisStock": cached,
                "dbStock": row.stock,
                "initialStock": row.initial_stock,
                "persistedOrders": row.orders,
            }),
        )
    }
}
