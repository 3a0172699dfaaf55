//! The circuit breaker on the host: asks the core whether a sandbox's request may go on,
//! answers for an open circuit, and records each tracked request's verdict when it ends.

use std::rc::Rc;

use crate::core::breaker::{self, Admission, BreakerPolicy, Cause, Ticket, Transition};
use crate::core::header_map::serialize;
use crate::core::policy::CIRCUIT_OPEN_DETAILS;
use crate::core::router::Sandbox;

use super::abi;
use super::budget::SharedData;
use super::metrics::Metrics;

/// gRPC UNAVAILABLE.
const GRPC_UNAVAILABLE: i32 = 14;

/// A request that went on while its sandbox has a breaker: its verdict is due when it ends.
pub struct Tracked {
    pub policy: Rc<BreakerPolicy>,
    pub ticket: Ticket,
}

pub enum Checked {
    /// Go on; track the verdict if there is a ticket.
    Go(Option<Tracked>),
    /// Refused, and answered.
    Refused,
    /// Would be refused, but the sandbox is in shadow mode: it goes on, untracked.
    Shadow,
}

/// Whether a request of `sandbox` may go on. Baseline traffic never gets here.
pub fn check(sandbox: &Sandbox, is_grpc: bool, metrics: &mut Metrics) -> Checked {
    let Some(policy) = &sandbox.breaker else {
        return Checked::Go(None);
    };
    let Ok(now) = abi::now_nanos() else {
        return Checked::Go(None);
    };
    let admitted = breaker::admit(&mut SharedData, policy, now);
    if admitted.opened {
        opened(&sandbox.key, metrics, None);
    }
    match admitted.admission {
        Admission::Refuse {
            retry_after_s,
            cause,
            half_open,
        } if sandbox.enforce => {
            reply_open(&sandbox.key, retry_after_s, cause, half_open, is_grpc);
            Checked::Refused
        }
        Admission::Refuse { cause, .. } => {
            log::info!(
                "shadow mode: sandbox {}: circuit open {}; the request goes on",
                sandbox.key,
                cause.text()
            );
            Checked::Shadow
        }
        other => Checked::Go(other.ticket().map(|ticket| Tracked {
            policy: Rc::clone(policy),
            ticket,
        })),
    }
}

/// A probe whose request was refused afterwards brings no verdict: let another request probe.
pub fn untrack(tracked: Tracked) {
    breaker::return_probe(&mut SharedData, &tracked.policy, tracked.ticket);
}

/// Records the verdict of a tracked request that ended (`None`: no verdict).
pub fn record(tracked: &Tracked, sandbox: &Rc<str>, failed: Option<bool>, metrics: &mut Metrics) {
    let (Some(failed), Ok(now)) = (failed, abi::now_nanos()) else {
        return;
    };
    match breaker::record(
        &mut SharedData,
        &tracked.policy,
        tracked.ticket,
        failed,
        now,
    ) {
        Transition::Opened(cause) => opened(sandbox, metrics, Some(cause)),
        Transition::Closed => {
            log::info!("sandbox {sandbox}: circuit closed");
            metrics.set_circuit_open(sandbox, false);
        }
        Transition::None => {}
    }
}

fn opened(sandbox: &Rc<str>, metrics: &mut Metrics, cause: Option<Cause>) {
    let why = cause.map_or_else(|| Cause::ProbeTimedOut.text(), |c| c.text());
    log::warn!("sandbox {sandbox}: circuit opened {why}");
    metrics.count_trip(sandbox);
    metrics.set_circuit_open(sandbox, true);
}

/// 503 (gRPC UNAVAILABLE) naming the sandbox and the cause, with `retry-after`.
fn reply_open(sandbox: &str, retry_after_s: u64, cause: Cause, half_open: bool, is_grpc: bool) {
    let state: &[u8] = if half_open { b"half-open" } else { b"open" };
    let body = if half_open {
        format!(
            "sandbox {sandbox}: circuit half-open, probing {}; retry in {retry_after_s}s",
            cause.text()
        )
    } else {
        format!(
            "sandbox {sandbox}: circuit open {}; retry in {retry_after_s}s",
            cause.text()
        )
    };
    let retry_after = retry_after_s.to_string();
    let headers = serialize(&[
        (b"retry-after", retry_after.as_bytes()),
        (b"x-sandbox-router-circuit", state),
    ]);
    let grpc_status = if is_grpc { GRPC_UNAVAILABLE } else { -1 };
    let _ = abi::send_local_response(
        503,
        CIRCUIT_OPEN_DETAILS,
        body.as_bytes(),
        &headers,
        grpc_status,
    );
}
