//! The ledger's axum routes: commands on the API address, balances on the query address,
//! `/health` on both. Each handler only moves bytes between HTTP and `ledger::api`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::health::Health;
use crate::ledger::api::{self, BODY_LEN_MAX, IDEMPOTENCY_HEADER};
use crate::ledger::command::CommandHandler;
use crate::ports::ledger::{EventStore, ReadModel};
use crate::reply::Reply;

/// Turns a [`Reply`] into a JSON response; a replayed outcome says so in a header.
pub fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(reply.body)).into_response();
    if reply.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn not_found() -> Response {
    respond(Reply::error(404, "not_found", None, "no such route"))
}

async fn get_health(State(health): State<Arc<Health>>) -> Response {
    let (status, body) = health.report().await;
    respond(Reply::new(status, body))
}

struct CommandState<S> {
    handler: CommandHandler<S>,
}

async fn post_command<S: EventStore>(
    State(state): State<Arc<CommandState<S>>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = to_bytes(body, BODY_LEN_MAX).await else {
        return respond(Reply::error(413, "body_too_large", None, format!("at most {BODY_LEN_MAX} bytes")));
    };
    let key = headers.get(IDEMPOTENCY_HEADER).map(HeaderValue::as_bytes);
    respond(api::command(&state.handler, &kind, key, &body).await)
}

async fn get_strong_balance<S: EventStore>(
    State(state): State<Arc<CommandState<S>>>,
    Path(account_id): Path<String>,
) -> Response {
    respond(api::strong_balance(&state.handler, &account_id).await)
}

/// The command API: `POST /api/v1/commands/{kind}`, the linearizable
/// `GET /api/v1/accounts/{id}/balance` (folded from the event store) and `GET /health`.
pub fn command_router<S: EventStore>(handler: CommandHandler<S>, health: Health, token: Option<String>) -> Router {
    Router::new()
        .route("/api/v1/commands/{kind}", post(post_command::<S>))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(token), super::auth::bearer))
        .route("/api/v1/accounts/{id}/balance", get(get_strong_balance::<S>))
        .with_state(Arc::new(CommandState { handler }))
        .route("/health", get(get_health).with_state(Arc::new(health)))
        .fallback(not_found)
}

struct QueryState<R> {
    read: R,
}

async fn get_balance<R: ReadModel>(
    State(state): State<Arc<QueryState<R>>>,
    Path(account_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let min_position = query.as_deref().and_then(|q| {
        q.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == "min_position").map(|(_, v)| v)
    });
    respond(api::balance(&state.read, &account_id, min_position).await)
}

/// The query API: `GET /api/v1/accounts/{id}/balance` and `GET /health`.
pub fn query_router<R: ReadModel>(read: R, health: Health) -> Router {
    Router::new()
        .route("/api/v1/accounts/{id}/balance", get(get_balance::<R>))
        .with_state(Arc::new(QueryState { read }))
        .route("/health", get(get_health).with_state(Arc::new(health)))
        .fallback(not_found)
}
