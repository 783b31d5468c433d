//! HTTP with axum (real build only): thin routes over the framework-free contracts in
//! `ledger::api`, and the `/health` report.

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
