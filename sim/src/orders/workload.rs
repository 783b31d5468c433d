//! The flash sale's seeded workload, independent of transport: the sale's size, which user
//! places which order under which key, and how a client reads the answers of an order's
//! attempts. Both builds: the simulator's clients and the real runner's share it, so a seed
//! gives both the same sale.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::history::EventKind;
use crate::http::HttpReq;

/// The product on sale in every scenario.
pub const PRODUCT: &str = "sku-1";
/// Attempts of one order by a client.
pub const ORDER_ATTEMPTS_MAX: u32 = 5;
/// How long a client waits for an answer.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before a client's next attempt.
pub const ORDER_RETRY_PAUSE: Duration = Duration::from_millis(300);
/// Extra pause after a 429.
pub const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(1);
/// Status polls of a client in the waiting room.
pub const ROOM_POLLS_MAX: u32 = 50;
/// Orders each user places (under different keys).
pub const ORDERS_PER_USER: usize = 2;
/// How long the clients' arrivals are spread over.
pub const SALE_SPREAD: Duration = Duration::from_secs(10);

/// The sale of a seed: the stock, drawn first from the seed's generator, and twice as many
/// orders as items, so the sale sells out.
pub fn draw_sale(rng: &mut ChaCha8Rng) -> (u64, usize) {
    let stock = rng.gen_range(20..=80u64);
    (stock, stock as usize * 2)
}

/// The generator of flash-sale client `c`.
pub fn client_rng(seed: u64, c: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9))
}

/// The order slots client `c` of `clients` places, in order.
pub fn slots(c: usize, clients: usize, users: usize) -> impl Iterator<Item = usize> {
    (c..users).step_by(clients)
}

/// The pause before a client's next order: its arrivals spread over `spread`.
pub fn arrival_pause(rng: &mut ChaCha8Rng, spread: Duration, users: usize, clients: usize) -> Duration {
    Duration::from_millis(rng.gen_range(0..=spread.as_millis() as u64 / (users / clients).max(1) as u64))
}

/// Slot `n`'s user and idempotency key: slots `2k` and `2k + 1` belong to one user and go to two
/// clients at once.
pub fn slot_user_and_key(slot: usize) -> (String, String) {
    (format!("user-{}", slot / ORDERS_PER_USER), format!("order-{slot}"))
}

/// `POST /init` of the sale.
pub fn init_request(product: &str, stock: u64) -> HttpReq {
    HttpReq::post("/init", None, &json!({"productId": product, "quantity": stock}))
}

/// `POST /order`; `admission` is a waiting-room token, sent as its header.
pub fn order_request(product: &str, user: &str, key: &str, admission: Option<String>) -> HttpReq {
    let mut req = HttpReq::post("/order", Some(key), &json!({"productId": product, "userId": user}));
    req.query = admission;
    req
}

/// `GET /waiting-room?userId=..&productId=..`.
pub fn room_join_request(product: &str, user: &str) -> HttpReq {
    let mut req = HttpReq::get("/waiting-room");
    req.query = Some(format!("userId={user}&productId={product}"));
    req
}

/// `GET /status/{ticket}`.
pub fn room_status_request(ticket: u64) -> HttpReq {
    HttpReq::get(format!("/status/{ticket}"))
}

/// How long to wait before the next status poll, as the waiting room asks (bounded).
pub fn room_poll_pause(body: &Value) -> Duration {
    Duration::from_millis(body["retryAfterMs"].as_u64().unwrap_or(100).clamp(10, 1000))
}

/// What a client does after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStep {
    /// The final answer: the outcome and the order id or the error.
    Done(EventKind, String),
    /// Try again after the usual pause.
    Retry,
    /// Try again after an extra pause.
    RetryAfter(Duration),
    /// Go to the waiting room, then try again with its admission token.
    WaitingRoom,
}

/// How a client reads the answers of one order's attempts, whatever carried them. The outcome
/// is the last answer's: a definite failure about the order (409 sold out, a 4xx, 503
/// `queue_unavailable` "nothing was reserved") ends `fail` even after an ambiguous attempt,
/// since it claims the order does not exist; a transient refusal of one attempt (503
/// `cache_not_ready`, `cache_unavailable`, ...) leaves an earlier ambiguity standing (`info`).
#[derive(Debug, Clone)]
pub struct OrderAttempts {
    ambiguous: bool,
    last: String,
    /// The last answer was a definite failure about the order, not about one attempt.
    definite: bool,
}

impl Default for OrderAttempts {
    fn default() -> Self {
        OrderAttempts { ambiguous: false, last: String::from("unavailable"), definite: false }
    }
}

impl OrderAttempts {
    /// No answer in time: the order may have been taken.
    pub fn timed_out(&mut self) {
        self.ambiguous = true;
        self.definite = false;
    }

    pub fn answered(&mut self, status: u16, body: &Value) -> OrderStep {
        let error = body["error"].as_str().unwrap_or("").to_string();
        self.definite = false;
        match status {
            200 => OrderStep::Done(EventKind::Ok, body["orderId"].as_str().unwrap_or("").to_string()),
            302 => OrderStep::WaitingRoom,
            429 => {
                self.last = error;
                OrderStep::RetryAfter(RATE_LIMITED_PAUSE)
            }
            // The spec's own answer to a failed produce: the user sees an error page and leaves.
            500 => OrderStep::Done(if self.ambiguous { EventKind::Info } else { EventKind::Fail }, error),
            // The reservation is parked under the key: the outcome is open until a retry lands.
            503 if error == "queue_ambiguous" || error == "cache_ambiguous" => {
                self.ambiguous = true;
                OrderStep::Retry
            }
            // "Nothing was reserved": a claim about the order. Try again; if it stays the last
            // answer, the order failed.
            503 if error == "queue_unavailable" => {
                self.last = error;
                self.definite = true;
                OrderStep::Retry
            }
            503 => {
                self.last = error;
                OrderStep::Retry
            }
            // A load balancer's answers when the instance took the request and then died (502)
            // or kept it too long (504): the item may be reserved and the order queued. The
            // retry with the same key gets the first outcome.
            502 | 504 => {
                self.ambiguous = true;
                self.last = if status == 502 { "bad_gateway".into() } else { "gateway_timeout".into() };
                OrderStep::Retry
            }
            // 409 sold out, 4xx: the order does not exist.
            _ => OrderStep::Done(EventKind::Fail, error),
        }
    }

    /// Out of attempts.
    pub fn finish(self) -> (EventKind, String) {
        let kind = if self.ambiguous && !self.definite { EventKind::Info } else { EventKind::Fail };
        (kind, self.last)
    }
}
