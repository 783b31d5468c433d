//! An API instance killed exactly mid-request, in both services' simulations: the switch that
//! makes an instance hold the answer of a request it has done until the scenario kills it, and
//! the traced HTTP reply every simulated API node answers with.

use std::sync::Mutex;
use std::time::Duration;

use services::reply::Reply;

use crate::http::{HttpReq, HttpResp};
use crate::trace;

/// Longest an armed kill waits for a request to be done on its instance.
pub const MID_REQUEST_ARM_MAX: Duration = Duration::from_secs(5);
/// How often an armed kill looks for its held answer.
pub const MID_REQUEST_POLL: Duration = Duration::from_millis(5);

/// A command that committed on an api instance whose process died before it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReply {
    pub node: String,
    pub key: Option<String>,
    pub at: u64,
}

/// The `api-killed-mid-request` scenario's switch: when armed for an api node, that node's next
/// command that commits is never answered (its reply is held until the scenario kills the
/// node), so the kill lands exactly between the commit and the answer: the window in which a
/// client cannot know whether its write applied.
#[derive(Debug, Default)]
pub struct MidRequestKill {
    pub armed: Option<String>,
    pub held: Vec<HeldReply>,
}

impl MidRequestKill {
    /// Whether `node`, which has just `done` the request `req`, must hold its
    /// answer: it is armed. Disarms it and records the held answer (in the trace too).
    pub fn hold(kill: &Mutex<MidRequestKill>, node: &str, req: &HttpReq, done: &str) -> bool {
        let mut kill = kill.lock().expect("not poisoned");
        if kill.armed.as_deref() != Some(node) {
            return false;
        }
        kill.armed = None;
        let key = req.idempotency_key.clone();
        trace::record(
            node,
            &format!("{} {} key={key:?} {done}; the answer is held until the kill", req.method, req.path),
        );
        kill.held.push(HeldReply { node: node.to_string(), key, at: trace::now_nanos() });
        true
    }

    /// Messages for the held answers whose client did not end `ok`: its retry on another
    /// instance must have got the first outcome.
    pub fn unresolved(&self, ops: &[crate::verdict::OpRecord]) -> Vec<String> {
        self.held
            .iter()
            .filter_map(|reply| {
                let key = reply.key.as_ref()?;
                let outcome = ops.iter().find(|o| &o.key == key).map(|o| o.outcome.as_str());
                (outcome != Some("ok")).then(|| {
                    format!(
                        "{key} was applied by {} before it died, and its client ended with {outcome:?}, not ok",
                        reply.node
                    )
                })
            })
            .collect()
    }
}

/// Records an HTTP exchange in the trace and turns the reply into the answer.
pub fn traced(node: &str, req: &HttpReq, reply: Reply) -> HttpResp {
    trace::record_fmt(
        node,
        format_args!("{} {} key={:?} -> {} {}", req.method, req.path, req.idempotency_key, reply.status, reply.body),
    );
    HttpResp::from(reply)
}
