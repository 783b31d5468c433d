//! Toxiproxy's HTTP API over the runner's latency proxies (`testbed real --toxiproxy-api
//! ADDR`): what `toxiproxy-cli` and Toxiproxy's client libraries speak, for the part these
//! proxies do (the latency toxic, downstream). During a run an operator can list the proxies and
//! add or remove latency by hand (`toxiproxy-cli -h ADDR toxic add -t latency -a latency=200
//! redis`), beside the levels the scenario sets itself.
//!
//! Routes: `GET /version`, `GET /proxies`, `GET /proxies/{proxy}`, `GET` and `POST
//! /proxies/{proxy}/toxics`, `GET`, `POST` or `PATCH` (update) and `DELETE
//! /proxies/{proxy}/toxics/{toxic}`, `POST /reset`. The scenario's own levels replace whatever
//! toxic an operator added when they change. A toxic these proxies cannot carry (another
//! type, the upstream stream, a toxicity below 1, jitter) is refused with 400 and a JSON body
//! naming the field; an unknown proxy or toxic is 404; a second toxic on a proxy is 409.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::RealError;
use super::toxics::ToxicProxy;

/// The proxies the API serves, by name.
pub type Proxies = Arc<BTreeMap<String, Arc<ToxicProxy>>>;

/// The version `GET /version` answers.
pub const VERSION: &str = "2.12.0-testbed";

/// A refusal: its status, the field it names, and why.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "status": self.status.as_u16()});
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> ApiError {
    ApiError { status, field: field.map(str::to_string), message: message.into() }
}

fn toxic_json(proxy: &ToxicProxy) -> Option<Value> {
    let (name, latency) = proxy.toxic()?;
    Some(json!({
        "name": name,
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": latency, "jitter": 0},
    }))
}

fn proxy_json(proxy: &ToxicProxy) -> Value {
    json!({
        "name": proxy.name,
        "listen": proxy.addr(),
        "upstream": proxy.upstream,
        "enabled": true,
        "toxics": toxic_json(proxy).into_iter().collect::<Vec<_>>(),
    })
}

fn find<'a>(proxies: &'a Proxies, name: &str) -> Result<&'a Arc<ToxicProxy>, ApiError> {
    proxies.get(name).ok_or_else(|| error(StatusCode::NOT_FOUND, Some("proxy"), format!("proxy not found: {name}")))
}

/// Reads a toxic Toxiproxy's way (`type`, `stream`, `toxicity`, `attributes`); returns its name
/// and latency, or the 400 naming what these proxies cannot do.
fn parse_toxic(body: &Value) -> Result<(String, u64), ApiError> {
    let bad = |field: &str, message: &str| error(StatusCode::BAD_REQUEST, Some(field), message.to_string());
    let Some(object) = body.as_object() else { return Err(bad("body", "the toxic must be a JSON object")) };
    match object.get("type").and_then(Value::as_str) {
        Some("latency") => {}
        Some(_) => return Err(bad("type", "only the latency toxic is supported")),
        None => return Err(bad("type", "type is required")),
    }
    match object.get("stream").map(Value::as_str) {
        None | Some(Some("downstream")) => {}
        _ => return Err(bad("stream", "only the downstream stream is supported")),
    }
    match object.get("toxicity") {
        None => {}
        Some(t) if t.as_f64() == Some(1.0) => {}
        Some(_) => return Err(bad("toxicity", "only a toxicity of 1 is supported")),
    }
    let attributes = object.get("attributes").cloned().unwrap_or_else(|| json!({}));
    let latency = match attributes.get("latency") {
        Some(v) => v.as_u64().ok_or_else(|| bad("attributes.latency", "latency must be whole milliseconds"))?,
        None => return Err(bad("attributes.latency", "latency is required")),
    };
    if attributes.get("jitter").is_some_and(|j| j.as_u64() != Some(0)) {
        return Err(bad("attributes.jitter", "jitter is not supported"));
    }
    // toxiproxy-cli sends an empty name when none is given; Toxiproxy names it `<type>_<stream>`.
    let name = match object.get("name") {
        None | Some(Value::Null) => super::toxics::DEFAULT_TOXIC.to_string(),
        Some(Value::String(s)) if s.is_empty() => super::toxics::DEFAULT_TOXIC.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("name", "name must be a string")),
    };
    Ok((name, latency))
}

/// The latency of an update (`toxiproxy-cli toxic update -a latency=MS`): only attributes.
fn parse_update(body: &[u8]) -> Result<u64, ApiError> {
    let bad = |field: &str, message: &str| error(StatusCode::BAD_REQUEST, Some(field), message.to_string());
    let body: Value = serde_json::from_slice(body).map_err(|_| bad("body", "the body is not JSON"))?;
    if body.get("toxicity").is_some_and(|t| t.as_f64() != Some(1.0)) {
        return Err(bad("toxicity", "only a toxicity of 1 is supported"));
    }
    if body.pointer("/attributes/jitter").is_some_and(|j| j.as_u64() != Some(0)) {
        return Err(bad("attributes.jitter", "jitter is not supported"));
    }
    body.pointer("/attributes/latency")
        .ok_or_else(|| bad("attributes.latency", "latency is required"))?
        .as_u64()
        .ok_or_else(|| bad("attributes.latency", "latency must be whole milliseconds"))
}

/// `POST` or `PATCH /proxies/{proxy}/toxics/{toxic}`: a new latency for the toxic.
async fn update(
    State(p): State<Proxies>,
    Path((name, toxic)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let proxy = match find(&p, &name) {
        Ok(proxy) => proxy,
        Err(e) => return e.into_response(),
    };
    let latency = match parse_update(&body) {
        Ok(latency) => latency,
        Err(e) => return e.into_response(),
    };
    if proxy.update(&toxic, latency) {
        Json(toxic_json(proxy).unwrap_or(Value::Null)).into_response()
    } else {
        error(StatusCode::NOT_FOUND, Some("toxic"), format!("toxic not found: {toxic}")).into_response()
    }
}

/// The API's routes over `proxies`.
pub fn router(proxies: Proxies) -> axum::Router {
    axum::Router::new()
        .route("/version", get(|| async { VERSION }))
        .route(
            "/proxies",
            get(|State(p): State<Proxies>| async move {
                let all: serde_json::Map<String, Value> =
                    p.iter().map(|(name, proxy)| (name.clone(), proxy_json(proxy))).collect();
                Json(Value::Object(all))
            }),
        )
        .route(
            "/proxies/{proxy}",
            get(|State(p): State<Proxies>, Path(name): Path<String>| async move {
                find(&p, &name)
                    .map(|proxy| Json(proxy_json(proxy)).into_response())
                    .unwrap_or_else(|e| e.into_response())
            }),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(|State(p): State<Proxies>, Path(name): Path<String>| async move {
                find(&p, &name)
                    .map(|proxy| Json(json!(toxic_json(proxy).into_iter().collect::<Vec<_>>())).into_response())
                    .unwrap_or_else(|e| e.into_response())
            }),
        )
        .route(
            "/proxies/{proxy}/toxics",
            post(|State(p): State<Proxies>, Path(name): Path<String>, body: axum::body::Bytes| async move {
                let proxy = match find(&p, &name) {
                    Ok(proxy) => proxy,
                    Err(e) => return e.into_response(),
                };
                let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                    return error(StatusCode::BAD_REQUEST, Some("body"), "the body is not JSON").into_response();
                };
                let (toxic, latency) = match parse_toxic(&body) {
                    Ok(parsed) => parsed,
                    Err(e) => return e.into_response(),
                };
                if let Err(existing) = proxy.try_add(&toxic, latency) {
                    let message = format!("toxic already exists: {existing}");
                    return error(StatusCode::CONFLICT, Some("name"), message).into_response();
                }
                Json(toxic_json(proxy).unwrap_or(Value::Null)).into_response()
            }),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(|State(p): State<Proxies>, Path((name, toxic)): Path<(String, String)>| async move {
                let proxy = match find(&p, &name) {
                    Ok(proxy) => proxy,
                    Err(e) => return e.into_response(),
                };
                match proxy.toxic() {
                    Some((existing, _)) if existing == toxic => {
                        Json(toxic_json(proxy).unwrap_or(Value::Null)).into_response()
                    }
                    _ => {
                        error(StatusCode::NOT_FOUND, Some("toxic"), format!("toxic not found: {toxic}")).into_response()
                    }
                }
            })
            .post(update)
            .patch(update)
            .delete(|State(p): State<Proxies>, Path((name, toxic)): Path<(String, String)>| async move {
                let proxy = match find(&p, &name) {
                    Ok(proxy) => proxy,
                    Err(e) => return e.into_response(),
                };
                if proxy.remove_if(&toxic) {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    error(StatusCode::NOT_FOUND, Some("toxic"), format!("toxic not found: {toxic}")).into_response()
                }
            }),
        )
        .route(
            "/reset",
            post(|State(p): State<Proxies>| async move {
                for proxy in p.values() {
                    proxy.clear_toxic();
                }
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(proxies)
}

/// Serves the API on `addr` until the returned task is aborted.
pub async fn serve(addr: SocketAddr, proxies: Proxies) -> Result<tokio::task::JoinHandle<()>, RealError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RealError::Setup(format!("the Toxiproxy API cannot listen on {addr}: {e}")))?;
    let app = router(proxies);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the Toxiproxy API stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{addr}{path}");
        let request = match method {
            "POST" => client.post(&url).body(body.map(|b| b.to_string()).unwrap_or_default()),
            "DELETE" => client.delete(&url),
            _ => client.get(&url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// What `toxiproxy-cli toxic add -t latency -a latency=100 redis` sends, then `toxic remove`.
    #[tokio::test]
    async fn toxiproxy_clients_add_list_and_remove_latency() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(ToxicProxy::start("redis", &upstream.local_addr().unwrap().to_string()).await.unwrap());
        let proxies: Proxies = Arc::new(BTreeMap::from([("redis".to_string(), proxy.clone())]));
        let addr: SocketAddr = format!("127.0.0.1:{}", super::super::procs::free_port().unwrap()).parse().unwrap();
        let api = serve(addr, proxies).await.unwrap();

        let (status, body) = call(addr, "GET", "/proxies", None).await;
        assert_eq!(status, 200);
        assert_eq!(body["redis"]["listen"], json!(proxy.addr()), "{body}");
        assert_eq!(body["redis"]["toxics"], json!([]));

        let toxic = json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
                           "toxicity": 1.0, "attributes": {"latency": 100}});
        let (status, body) = call(addr, "POST", "/proxies/redis/toxics", Some(toxic.clone())).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["attributes"]["latency"], 100);
        assert_eq!(proxy.latency_ms(), 100);
        let (status, _) = call(addr, "POST", "/proxies/redis/toxics", Some(toxic)).await;
        assert_eq!(status, 409);
        // `toxic update -a latency=150`, then the toxic read back.
        let (status, body) = call(
            addr,
            "POST",
            "/proxies/redis/toxics/latency_downstream",
            Some(json!({"attributes": {"latency": 150}})),
        )
        .await;
        assert_eq!((status, body["attributes"]["latency"].as_u64()), (200, Some(150)), "{body}");
        assert_eq!(proxy.latency_ms(), 150);
        assert_eq!(call(addr, "GET", "/proxies/redis/toxics/latency_downstream", None).await.0, 200);

        // What these proxies cannot do is refused, naming the field, and changes nothing.
        for (bad, field) in [
            (json!({"type": "bandwidth", "attributes": {"rate": 1}}), "type"),
            (json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 5}}), "stream"),
            (json!({"type": "latency", "toxicity": 0.5, "attributes": {"latency": 5}}), "toxicity"),
            (json!({"type": "latency", "attributes": {"latency": 5, "jitter": 3}}), "attributes.jitter"),
            (json!({"type": "latency", "attributes": {"latency": "soon"}}), "attributes.latency"),
            (json!([1, 2]), "body"),
        ] {
            let (status, body) = call(addr, "POST", "/proxies/redis/toxics", Some(bad)).await;
            assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{body}");
        }
        assert_eq!(proxy.latency_ms(), 150);
        assert_eq!(call(addr, "GET", "/proxies/nope", None).await.0, 404);
        assert_eq!(call(addr, "DELETE", "/proxies/redis/toxics/other", None).await.0, 404);

        let (status, _) = call(addr, "DELETE", "/proxies/redis/toxics/latency_downstream", None).await;
        assert_eq!(status, 204);
        assert_eq!(proxy.latency_ms(), 0);
        assert_eq!(call(addr, "GET", "/proxies/redis/toxics", None).await.1, json!([]));
        // What toxiproxy-cli sends without `-n`: an empty name, which gets Toxiproxy's default.
        let unnamed = json!({"name": "", "type": "latency", "stream": "downstream", "toxicity": 1,
                             "attributes": {"latency": 200}});
        let (status, body) = call(addr, "POST", "/proxies/redis/toxics", Some(unnamed)).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("latency_downstream")), "{body}");
        assert_eq!(proxy.latency_ms(), 200);
        api.abort();
    }
}
