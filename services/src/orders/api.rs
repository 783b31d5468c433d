//! The order API's HTTP contract without an HTTP framework (spec 003-004): `/init`, `/order`,
//! `/products/{id}`. axum (real build) and the simulator both call these functions.
//!
//! `/order`: idempotency key required (400 without); load shedding to the waiting room (302)
//! when the in-flight bound is passed; per-user rate limit (429); one atomic reservation in the
//! stock cache (409 when sold out); the order is then produced to the queue (200). When the
//! produce fails, the reservation is compensated and the answer is 503: this is the fix of the
//! spec's flaw "Kafka Broker Down" (stock decremented, order never queued). A produce that timed
//! out may still land, so the compensation locks the reservation in the cache, cancels it
//! durably in the order store (serialised with the worker's persist on the product's row: the
//! order ends persisted or cancelled, never both), and only then gives the item back (ADR 5). A
//! retry with the same key names the same order id, so the worker persists at most one order
//! per key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use models::orders::{InitSale, InvalidField, PlaceOrder, validate_key};
use serde_json::{Value, json};

use crate::reply::Reply;
use models::orders::Order;

use crate::ports::orders::{
    CacheError, Cancel, OrderProducer, OrderStore, OrderStoreError, ReleaseLock, Reservation, StockCache,
};

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

/// A request attempt's id: who holds a reservation now (only the holder can lock it for its
/// cancellation). Random, never 0 (the holder of a reservation whose order was found
/// persisted). Reservations themselves are named by the cache's clock, not by attempts.
pub fn attempt_id() -> u64 {
    madsim::rand::Rng::r#gen::<u64>(&mut madsim::rand::thread_rng()).max(1)
}

fn queue_ambiguous() -> Reply {
    Reply::error(503, "queue_ambiguous", None, "the order may have been queued: retry with the same x-idempotency-key")
}

/// The order is cancelled, or being cancelled, but its item is not given back yet.
fn cancel_pending() -> Reply {
    Reply::error(
        503,
        "queue_ambiguous",
        None,
        "the order is being cancelled after a failed produce: retry with the same x-idempotency-key",
    )
}

/// How a locked reservation's cancellation ended.
enum Cancelled {
    /// Cancelled in the order store and the item given back: nothing was ordered.
    Released,
    /// The worker persisted the order first: it stands.
    Persisted,
    /// Not finished: the answer to give (the key stays locked; its next attempt finishes it).
    Pending(Reply),
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
        let mut order = request.order(&key);
        let attempt = attempt_id();
        // At most one earlier attempt's cancellation is finished before reserving again: after
        // it the key is released, and the next reservation cannot find it cancelling.
        let mut helped = false;
        let reservation = loop {
            let reservation = match self.cache.reserve(&order.product_id, &key, attempt).await {
                Ok(reservation) => reservation,
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
            match reservation {
                Reservation::Reserved { reservation } | Reservation::Held { reservation } => break reservation,
                Reservation::Ordered => return accepted(&order.order_id),
                Reservation::SoldOut | Reservation::RepeatSoldOut => {
                    return Reply::error(409, "sold_out", Some("productId"), "sold out").into();
                }
                Reservation::SoldOutAfterLoss { floor } => {
                    // Redis lost its keys: an earlier attempt of this key may have an order in
                    // the queue. Cancel the key's reservations up to now before saying "sold
                    // out", or find the order persisted.
                    crate::bugs::coverage::mark("sold-out-after-loss-checked");
                    order.reservation = floor;
                    return match self.store.cancel(&order).await {
                        Ok(Cancel::Cancelled) => {
                            // Remembered, so that retries stop asking the order store.
                            let _ = self.cache.remember_sold_out(&order.product_id, &key).await;
                            Reply::error(409, "sold_out", Some("productId"), "sold out").into()
                        }
                        Ok(Cancel::Persisted) => accepted(&order.order_id),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "sold out, but an earlier order cannot be ruled out");
                            queue_ambiguous().into()
                        }
                    };
                }
                Reservation::Stale { reservation } if !helped => {
                    // Reserved before the stock was last set exactly, which counted the item as
                    // free: cancel the reservation (or find its order persisted), forget it
                    // without giving the item back, and reserve afresh.
                    helped = true;
                    crate::bugs::coverage::mark("stale-reservation-cancelled");
                    order.reservation = reservation;
                    match self.store.cancel(&order).await {
                        Ok(Cancel::Cancelled) => {
                            match self.cache.forget_stale(&order.product_id, &key, reservation).await {
                                Ok(_) => continue,
                                Err(e) => return cache_down(&e).into(),
                            }
                        }
                        Ok(Cancel::Persisted) => return accepted(&order.order_id),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "a stale reservation could not be cancelled");
                            return queue_ambiguous().into();
                        }
                    }
                }
                Reservation::Stale { .. } => return queue_ambiguous().into(),
                Reservation::OtherProduct => {
                    return Reply::error(
                        422,
                        "key_reused",
                        Some(KEY_HEADER),
                        "this x-idempotency-key was used for an order of another product",
                    )
                    .into();
                }
                Reservation::Cancelling { reservation } if !helped => {
                    // An earlier attempt of this key failed to produce and did not finish giving
                    // its item back: finish it, then reserve afresh.
                    helped = true;
                    crate::bugs::coverage::mark("cancellation-finished-by-retry");
                    order.reservation = reservation;
                    match self.finish_cancellation(&order).await {
                        Cancelled::Released => continue,
                        Cancelled::Persisted => return accepted(&order.order_id),
                        Cancelled::Pending(reply) => return reply.into(),
                    }
                }
                Reservation::Cancelling { .. } => return cancel_pending().into(),
                Reservation::NoSale => return self.no_sale(&order.product_id).await.into(),
            }
        };
        order.reservation = reservation;
        match self.producer.produce(&order).await {
            Ok(()) => accepted(&order.order_id),
            Err(e) => {
                #[cfg(madsim)]
                if crate::bugs::active(crate::bugs::Bug::NoCompensation) {
                    // Planted bug, the spec's own code: log, answer 500, keep the stock taken.
                    tracing::error!(order_id = %order.order_id, error = %e, "Kafka failed");
                    return Reply::error(500, "error", None, "Order processing failed").into();
                }
                // The fix of the spec's flaw: give the item back. The produce may have landed
                // (a timeout), so first lock the reservation in the cache (no retry can re-arm
                // it), then cancel it durably in the order store (the worker then skips its
                // messages, unless it persisted the order first: then the order stands), and
                // only then give the item back (ADR 5).
                match self.cache.lock_release(&order.product_id, &key, attempt).await {
                    Ok(ReleaseLock::Locked { reservation }) => {
                        order.reservation = reservation;
                        match self.finish_cancellation(&order).await {
                            Cancelled::Released => {
                                crate::bugs::coverage::mark("compensation-after-failed-produce");
                                tracing::warn!(order_id = %order.order_id, key = %key, error = %e, "produce failed: reservation cancelled and released");
                                Reply::error(
                                    503,
                                    "queue_unavailable",
                                    None,
                                    "the order could not be queued; nothing was reserved",
                                )
                                .into()
                            }
                            Cancelled::Persisted => {
                                #[cfg(madsim)]
                                if crate::bugs::active(crate::bugs::Bug::MisclassifiedRefusal) {
                                    // Planted bug: "the produce failed, so the order failed".
                                    return Reply::error(
                                        503,
                                        "queue_unavailable",
                                        None,
                                        "the order could not be queued; nothing was reserved",
                                    )
                                    .into();
                                }
                                accepted(&order.order_id)
                            }
                            Cancelled::Pending(reply) => reply.into(),
                        }
                    }
                    // Another attempt holds the key, or Redis lost it: this attempt cannot
                    // cancel (a later attempt may have been answered "accepted" for the same
                    // reservation), and the order may be in the queue.
                    Ok(ReleaseLock::NotHeld | ReleaseLock::Unknown) | Err(_) => {
                        tracing::error!(order_id = %order.order_id, key = %key, error = %e, "produce failed and the reservation could not be locked");
                        queue_ambiguous().into()
                    }
                }
            }
        }
    }

    /// A locked reservation's cancellation: durably in the order store, then the item given back.
    async fn finish_cancellation(&self, order: &Order) -> Cancelled {
        let (product, key, reservation) = (&order.product_id, &order.idempotency_key, order.reservation);
        match self.store.cancel(order).await {
            Ok(Cancel::Cancelled) => match self.cache.finish_release(product, key, reservation, true).await {
                Ok(_) => Cancelled::Released,
                // Cancelled for good, but the item may still be held under the lock: the next
                // attempt of the key finishes the release.
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "cancelled, but the item is not given back yet");
                    Cancelled::Pending(cancel_pending())
                }
            },
            Ok(Cancel::Persisted) => {
                crate::bugs::coverage::mark("persisted-before-cancel");
                // The key holds its item again; if this fails, the next attempt finds the lock and
                // the order store answers Persisted again.
                let _ = self.cache.finish_release(product, key, reservation, false).await;
                Cancelled::Persisted
            }
            // Neither persisted nor cancelled for sure: the lock stays, the next attempt of the
            // key finishes it.
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a failed produce could not be cancelled");
                Cancelled::Pending(queue_ambiguous())
            }
        }
    }

    async fn no_sale(&self, product_id: &str) -> Reply {
        #[cfg(madsim)]
        if crate::bugs::active(crate::bugs::Bug::NoReinitAfterRedisRestart)
            && let Ok(Some(row)) = self.store.product(product_id).await
        {
            // Planted bug: "the cache lost the sale, so start it again".
            let _ = self.cache.set_stock(product_id, row.initial_stock).await;
            return Reply::error(503, "cache_not_ready", None, "the sale was restarted; retry");
        }
        match self.store.product(product_id).await {
            Ok(None) => Reply::error(404, "no_sale", Some("productId"), "no sale for this product"),
            Ok(Some(_)) => Reply::error(503, "cache_not_ready", None, "the stock cache lost the sale: reconcile"),
            Err(e) => store_down(&e),
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
