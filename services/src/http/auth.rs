//! Optional bearer token on the endpoints that change state (`LEDGER_API_TOKEN`,
//! `ORDERS_API_TOKEN`): when a token is configured, a request without it gets 401 with a JSON
//! body. Health and read endpoints stay open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::ledger::respond;
use crate::reply::Reply;

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: lets the request through when no token is configured or it carries the token.
pub async fn bearer(State(token): State<Arc<Option<String>>>, request: Request, next: Next) -> Response {
    if let Some(expected) = token.as_deref() {
        let given =
            request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|t| same(t.as_bytes(), expected.as_bytes())) {
            return respond(Reply::error(401, "unauthorized", Some("Authorization"), "a bearer token is required"));
        }
    }
    next.run(request).await
}
