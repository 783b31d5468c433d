//! The real runner's transport: the workloads' requests over HTTP, with the wall clock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sim::http::{HttpReq, HttpResp};
use sim::ledger::workload::{Target, Transport};

use super::{Clock, RealError};

/// An HTTP client for one service.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    /// The service's idempotency header.
    key_header: &'static str,
    /// Sent as `Authorization: Bearer` when set.
    token: Option<String>,
}

impl Http {
    pub fn new(key_header: &'static str, token: Option<String>) -> Result<Http, RealError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would turn refusals and timeouts into its own answers.
            .no_proxy()
            .build()
            .map_err(|e| RealError::Setup(format!("http client: {e}")))?;
        Ok(Http { client, key_header, token })
    }

    /// Sends a request to `base` and waits at most `timeout`. A connection that could not be
    /// made is a definite refusal (503 `unavailable`: nothing was sent); a timeout or a broken
    /// exchange is no answer (`None`: the request may have been applied).
    pub async fn send(&self, base: &str, req: HttpReq, timeout: Duration) -> Option<HttpResp> {
        let mut url = format!("{base}{}", req.path);
        let mut builder = match req.method.as_str() {
            "POST" => {
                let builder = self.client.post(&url).body(req.body).header("content-type", "application/json");
                match (&req.query, req.path.as_str()) {
                    (Some(admission), "/order") => builder.header(services::orders::api::ADMISSION_HEADER, admission),
                    _ => builder,
                }
            }
            _ => {
                if let Some(query) = &req.query {
                    url = format!("{url}?{query}");
                }
                self.client.get(&url)
            }
        };
        if let Some(key) = &req.idempotency_key {
            builder = builder.header(self.key_header, key);
        }
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        match builder.timeout(timeout).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = match response.bytes().await {
                    Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    Err(_) => return None,
                };
                Some(HttpResp { status, body, replayed: false })
            }
            Err(e) if e.is_connect() => {
                Some(HttpResp { status: 503, body: json!({"error": "unavailable"}), replayed: false })
            }
            Err(_) => None,
        }
    }
}

/// One command API request as a client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    /// Milliseconds since the run began.
    pub at_ms: u64,
    pub took: Duration,
    /// 0: no answer in time.
    pub status: u16,
    /// The instance it went to (index into the instances).
    pub api: usize,
}

/// The ledger's command API instances and its query API.
#[derive(Debug, Clone)]
pub struct LedgerTransport {
    pub http: Http,
    pub apis: Arc<Vec<String>>,
    pub query: String,
    pub clock: Clock,
    /// Every command API request, when set.
    pub requests: Option<Arc<std::sync::Mutex<Vec<Sent>>>>,
}

impl Transport for LedgerTransport {
    async fn call(&self, target: Target, api: usize, req: HttpReq, timeout: Duration) -> Option<HttpResp> {
        let base = match target {
            Target::Command => &self.apis[api % self.apis.len()],
            Target::Query => &self.query,
        };
        let (sent_ms, sent) = (self.clock.millis(), std::time::Instant::now());
        let answer = self.http.send(base, req, timeout).await;
        if let (Target::Command, Some(requests)) = (target, &self.requests) {
            let status = answer.as_ref().map_or(0, |a| a.status);
            let api = api % self.apis.len();
            requests.lock().expect("not poisoned").push(Sent { at_ms: sent_ms, took: sent.elapsed(), status, api });
        }
        answer
    }

    async fn pause(&self, pause: Duration) {
        tokio::time::sleep(pause).await;
    }

    fn now_nanos(&self) -> u64 {
        self.clock.nanos()
    }

    fn note(&self, client: &str, line: &str) {
        tracing::debug!(client, "{line}");
    }
}
