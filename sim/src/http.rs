//! The HTTP exchange clients have with the services, independent of transport: the simulator
//! carries it over madsim's network, the real runner sends it with an HTTP client. Both builds.

use serde::{Deserialize, Serialize};

/// An HTTP request. `query` is the raw query string for the waiting room's join, and the
/// admission token for `/order` (a header on the wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpReq {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
}

impl HttpReq {
    pub fn get(path: impl Into<String>) -> HttpReq {
        HttpReq { method: "GET".into(), path: path.into(), query: None, idempotency_key: None, body: Vec::new() }
    }

    pub fn post(path: impl Into<String>, key: Option<&str>, body: &serde_json::Value) -> HttpReq {
        HttpReq {
            method: "POST".into(),
            path: path.into(),
            query: None,
            idempotency_key: key.map(str::to_string),
            body: body.to_string().into_bytes(),
        }
    }
}

/// An HTTP answer: the status and the JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpResp {
    pub status: u16,
    pub body: serde_json::Value,
    pub replayed: bool,
}
