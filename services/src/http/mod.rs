//! HTTP with axum (real build only): thin routes over the framework-free contracts in
//! `ledger::api`, the `/health` report and the Prometheus `/metrics`.

pub mod auth;
pub mod health;
pub mod ledger;
pub mod orders;

/// Serves `router` on `listener` until the task is dropped, with TCP_NODELAY on every accepted
/// connection (a response written in two parts must not wait for the client's delayed ACK).
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router).await
}

/// Adds `GET /metrics` (Prometheus text) to `router`, and counts every answer it gives, by
/// matched route (never the raw path: ids would make a series per account) and status, with
/// its latency.
pub fn with_metrics(router: axum::Router, metrics: std::sync::Arc<crate::metrics::Metrics>) -> axum::Router {
    router
        .route("/metrics", axum::routing::get(get_metrics).with_state(metrics.clone()))
        .layer(axum::middleware::from_fn_with_state(metrics, track))
}

/// A router with only `GET /metrics`, for the roles that serve no HTTP API (relay, processor,
/// worker) on their `METRICS_ADDR`.
pub fn metrics_router(metrics: std::sync::Arc<crate::metrics::Metrics>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(get_metrics).with_state(metrics))
}

async fn get_metrics(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<crate::metrics::Metrics>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], metrics.encode()).into_response()
}

async fn track(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<crate::metrics::Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    // Scrapes are not the service's traffic: they would dilute the error rate.
    if route == "/metrics" {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
