//! The order system's axum routes: the API (`/init`, `/order`, `/products/{id}`, `/health`)
//! and the waiting room (`/waiting-room`, `/status/{ticket}`, `/health`). Each handler only
//! moves bytes between HTTP and `orders::api` / `orders::waiting_room`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use super::health::Health;
use super::ledger::respond;
use crate::orders::api::{ADMISSION_HEADER, BODY_LEN_MAX, KEY_HEADER, OrderApi};
use crate::orders::waiting_room::WaitingRoom;
use crate::ports::orders::{OrderProducer, OrderStore, StockCache};
use crate::reply::Reply;

async fn read_body(body: Body) -> Result<axum::body::Bytes, Response> {
    to_bytes(body, BODY_LEN_MAX)
        .await
        .map_err(|_| respond(Reply::error(413, "body_too_large", None, format!("at most {BODY_LEN_MAX} bytes"))))
}

async fn post_init<C: StockCache, P: OrderProducer, S: OrderStore>(
    State(api): State<Arc<OrderApi<C, P, S>>>,
    body: Body,
) -> Response {
    match read_body(body).await {
        Ok(body) => respond(api.init(&body).await),
        Err(response) => response,
    }
}

async fn post_order<C: StockCache, P: OrderProducer, S: OrderStore>(
    State(api): State<Arc<OrderApi<C, P, S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let key = headers.get(KEY_HEADER).map(HeaderValue::as_bytes);
    let admission = headers.get(ADMISSION_HEADER).map(HeaderValue::as_bytes);
    let answer = api.order(key, admission, &body).await;
    let mut response = respond(answer.reply);
    if let Some(location) = answer.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn get_product<C: StockCache, P: OrderProducer, S: OrderStore>(
    State(api): State<Arc<OrderApi<C, P, S>>>,
    Path(id): Path<String>,
) -> Response {
    respond(api.product(&id).await)
}

async fn get_health(State(health): State<Arc<Health>>) -> Response {
    let (status, body) = health.report().await;
    respond(Reply::new(status, body))
}

async fn not_found() -> Response {
    respond(Reply::error(404, "not_found", None, "no such route"))
}

/// The order API.
pub fn api_router<C: StockCache, P: OrderProducer, S: OrderStore>(
    api: Arc<OrderApi<C, P, S>>,
    health: Health,
    token: Option<String>,
) -> Router {
    Router::new()
        .route("/init", post(post_init::<C, P, S>))
        .route("/order", post(post_order::<C, P, S>))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(token), super::auth::bearer))
        .route("/products/{id}", get(get_product::<C, P, S>))
        .with_state(api)
        .route("/health", get(get_health).with_state(Arc::new(health)))
        .fallback(not_found)
}

struct RoomState<C> {
    room: WaitingRoom,
    cache: C,
}

fn query_param<'a>(query: &'a Option<String>, name: &str) -> &'a str {
    query
        .as_deref()
        .and_then(|q| q.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v))
        .unwrap_or("")
}

async fn join_room<C: StockCache>(State(state): State<Arc<RoomState<C>>>, RawQuery(query): RawQuery) -> Response {
    respond(state.room.join(query_param(&query, "userId"), query_param(&query, "productId")))
}

async fn room_status<C: StockCache>(State(state): State<Arc<RoomState<C>>>, Path(ticket): Path<String>) -> Response {
    respond(state.room.status(&state.cache, &ticket).await)
}

/// The waiting room.
pub fn waiting_room_router<C: StockCache>(room: WaitingRoom, cache: C, health: Health) -> Router {
    Router::new()
        .route("/waiting-room", get(join_room::<C>))
        .route("/status/{ticket}", get(room_status::<C>))
        .with_state(Arc::new(RoomState { room, cache }))
        .route("/health", get(get_health).with_state(Arc::new(health)))
        .fallback(not_found)
}
