//! An HTTP answer without a framework: a status and a JSON body, with the error body both
//! services use (`{"error": CODE, "message": TEXT}` plus `field` when one field is at fault).
//! Both APIs build replies; axum (real build) and the simulator's network (simulation build)
//! carry them.

use serde_json::{Value, json};

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// True when the body is the stored first outcome of an idempotency key.
    pub replayed: bool,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Reply {
        Reply { status, body, replayed: false }
    }

    /// An error body with an optional field name.
    pub fn error(status: u16, code: &str, field: Option<&str>, message: impl Into<String>) -> Reply {
        let mut body = json!({"error": code, "message": message.into()});
        if let Some(field) = field {
            body["field"] = json!(field);
        }
        Reply::new(status, body)
    }
}
