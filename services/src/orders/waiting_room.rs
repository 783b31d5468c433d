//! The waiting room (spec 003): when an API process has more orders in flight than its bound,
//! `/order` answers 302 here. Each user gets a ticket and a place; tickets are admitted at a
//! steady rate; an admitted user receives a one-time admission token (kept in the stock cache,
//! so every API process can check it) and orders again with it.
//!
//! State is one process's memory: a restart hands out new tickets (users come back and queue
//! again). The queue is bounded by [`WAITING_ROOM_QUEUE_MAX`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use madsim::rand::Rng;
use madsim::time::Instant;
use serde_json::json;

use crate::ports::orders::StockCache;
use crate::reply::Reply;

/// Users waiting at once; more get 503.
pub const WAITING_ROOM_QUEUE_MAX: usize = 100_000;
/// Tickets admitted per second.
pub const ADMIT_PER_SECOND: u64 = 100;
/// How long an admission token stays valid.
pub const ADMISSION_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Room {
    last_ticket: u64,
    admitted_through: u64,
    /// Fractional admissions carried between calls, in thousandths of a ticket.
    carry_milli: u64,
    last_advance: Instant,
    tickets: BTreeMap<String, u64>,
    tokens: BTreeMap<u64, String>,
}

/// One waiting room.
#[derive(Debug)]
pub struct WaitingRoom {
    room: Mutex<Room>,
    rate: u64,
}

impl Default for WaitingRoom {
    fn default() -> Self {
        Self::new(ADMIT_PER_SECOND)
    }
}

impl WaitingRoom {
    pub fn new(rate: u64) -> Self {
        assert!(rate > 0);
        WaitingRoom {
            room: Mutex::new(Room {
                last_ticket: 0,
                admitted_through: 0,
                carry_milli: 0,
                last_advance: Instant::now(),
                tickets: BTreeMap::new(),
                tokens: BTreeMap::new(),
            }),
            rate,
        }
    }

    fn advance(&self, room: &mut Room) {
        let now = Instant::now();
        let elapsed_ms = now.duration_since(room.last_advance).as_millis() as u64;
        room.last_advance = now;
        let milli = room.carry_milli + elapsed_ms * self.rate;
        room.admitted_through = (room.admitted_through + milli / 1000).min(room.last_ticket);
        room.carry_milli = if room.admitted_through == room.last_ticket { 0 } else { milli % 1000 };
    }

    fn place(&self, room: &Room, ticket: u64) -> (u64, u64) {
        let position = ticket.saturating_sub(room.admitted_through);
        (position, position * 1000 / self.rate)
    }

    /// `GET /waiting-room?productId=&userId=`: a ticket (the same one on a repeat visit).
    pub fn join(&self, user_id: &str, product_id: &str) -> Reply {
        for (field, id) in [("userId", user_id), ("productId", product_id)] {
            if let Err(e) = models::orders::validate_id(field, id) {
                return Reply::error(422, "invalid_field", Some(e.field), e.to_string());
            }
        }
        let mut room = self.room.lock().expect("not poisoned");
        self.advance(&mut room);
        let ticket = match room.tickets.get(user_id) {
            Some(ticket) => *ticket,
            None => {
                if room.tickets.len() >= WAITING_ROOM_QUEUE_MAX {
                    return Reply::error(503, "waiting_room_full", None, "the waiting room is full; try again later");
                }
                room.last_ticket += 1;
                let ticket = room.last_ticket;
                room.tickets.insert(user_id.to_string(), ticket);
                ticket
            }
        };
        let (position, retry_after_ms) = self.place(&room, ticket);
        Reply::new(
            200,
            json!({"ticket": ticket, "position": position, "retryAfterMs": retry_after_ms,
                   "productId": product_id, "statusUrl": format!("/status/{ticket}")}),
        )
    }

    /// `GET /status/{ticket}`: the place, or, once admitted, a one-time admission token.
    pub async fn status<C: StockCache>(&self, cache: &C, ticket: &str) -> Reply {
        let Ok(ticket) = ticket.parse::<u64>() else {
            return Reply::error(400, "invalid_ticket", Some("ticket"), "a ticket is a number");
        };
        let (position, retry_after_ms, token) = {
            let mut room = self.room.lock().expect("not poisoned");
            self.advance(&mut room);
            if ticket == 0 || ticket > room.last_ticket {
                return Reply::error(404, "unknown_ticket", Some("ticket"), "no such ticket");
            }
            let (position, retry_after_ms) = self.place(&room, ticket);
            let token = if position == 0 {
                let fresh = format!("{:032x}", madsim::rand::thread_rng().r#gen::<u128>());
                Some(room.tokens.entry(ticket).or_insert(fresh).clone())
            } else {
                None
            };
            (position, retry_after_ms, token)
        };
        match token {
            None => Reply::new(
                200,
                json!({"ticket": ticket, "admitted": false, "position": position, "retryAfterMs": retry_after_ms}),
            ),
            Some(token) => match cache.grant_admission(&token, ADMISSION_TTL).await {
                Ok(()) => Reply::new(
                    200,
                    json!({"ticket": ticket, "admitted": true, "position": 0, "retryAfterMs": 0,
                           "admissionToken": token, "header": crate::orders::api::ADMISSION_HEADER}),
                ),
                Err(e) => Reply::error(503, "cache_unavailable", None, e.to_string()),
            },
        }
    }

    /// Users waiting (tickets handed out and not yet admitted).
    pub fn waiting(&self) -> u64 {
        let mut room = self.room.lock().expect("not poisoned");
        self.advance(&mut room);
        room.last_ticket - room.admitted_through
    }
}
