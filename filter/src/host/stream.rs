//! One request: read its headers once, decide, guard, apply.

use crate::core::describe::describe;
use crate::core::guard::{admit, release, Quota, Verdict};
use crate::core::header_map::HeaderPairs;
use crate::core::request::{scan, RequestScan};
use crate::core::router::{rewritten_authority, Decision, Router, Sandbox, Target};

use super::abi::{self, LogLevel, MapType};
use super::budget::{reject, SharedData};

const DEBUG_HEADER: &[u8] = b"x-sandbox-router";

/// What a stream still has to do on its response or when it ends.
#[derive(Default)]
pub struct StreamState {
    debug: Option<String>,
    quota: Option<Quota>,
    /// The budget cell whose in-flight slot this request holds.
    slot: Option<Box<str>>,
}

pub struct Handled {
    pub state: Option<StreamState>,
    /// The request was answered locally; the filter chain must stop.
    pub answered: bool,
}

/// Routes the current request. A request without a key reads its headers once and returns.
pub fn route_request(router: &Router) -> Handled {
    let mut handled = Handled {
        state: None,
        answered: false,
    };
    let Ok(headers) = abi::header_pairs(MapType::RequestHeaders) else {
        return handled;
    };
    let request = scan(&router.settings, HeaderPairs::new(headers.bytes()));
    let decision = router.decide(&request);
    let authority = request.authority.unwrap_or_default();
    let mut state = StreamState::default();

    if let Some(sandbox) = sandbox_of(&decision) {
        match guard(sandbox, request.is_grpc) {
            Guarded::Admitted { quota, slot } => {
                state.quota = quota;
                state.slot = slot;
            }
            Guarded::Rejected { reason } => {
                handled.answered = true;
                if router.settings.debug {
                    state.debug = Some(format!("rejected; key={}; reason={reason}", sandbox.key));
                }
            }
            Guarded::Unlimited => {}
        }
    }
    if !handled.answered {
        apply(router, &decision, &request);
    }
    if router.settings.debug && state.debug.is_none() {
        state.debug = Some(describe(&decision, authority));
    }
    if state.debug.is_some() || state.quota.is_some() || state.slot.is_some() {
        handled.state = Some(state);
    }
    handled
}

fn sandbox_of<'r>(decision: &Decision<'r>) -> Option<&'r Sandbox> {
    match decision {
        Decision::Route { sandbox, .. } => Some(sandbox),
        Decision::Baseline { sandbox, .. } => *sandbox,
    }
}

enum Guarded {
    Unlimited,
    Admitted {
        quota: Option<Quota>,
        slot: Option<Box<str>>,
    },
    Rejected {
        reason: &'static str,
    },
}

/// Every request of a registered sandbox counts against its budget, rerouted or not.
fn guard(sandbox: &Sandbox, is_grpc: bool) -> Guarded {
    let Some(budget) = &sandbox.budget else {
        return Guarded::Unlimited;
    };
    let verdict = match abi::now_nanos() {
        Ok(now) => admit(&mut SharedData, budget, now),
        Err(_) => Verdict::Unavailable,
    };
    match verdict {
        Verdict::Admitted { quota, holds_slot } => Guarded::Admitted {
            quota,
            slot: holds_slot.then(|| budget.store_key.clone()),
        },
        rejected if budget.enforce => {
            reject(&sandbox.key, &rejected, is_grpc);
            Guarded::Rejected {
                reason: rejected.name(),
            }
        }
        rejected => {
            abi::log(
                LogLevel::Info,
                &format!(
                    "sandbox-router: shadow mode: sandbox {} would have been rejected: {}",
                    sandbox.key,
                    rejected.name()
                ),
            );
            Guarded::Unlimited
        }
    }
}

fn apply(router: &Router, decision: &Decision<'_>, request: &RequestScan<'_>) {
    let cluster_header = &*router.settings.cluster_header;
    let rerouted = match decision {
        Decision::Route { target, .. } => {
            match target {
                Target::Authority { host, port } => {
                    let authority = request.authority.unwrap_or_default();
                    let new_authority = rewritten_authority(host, *port, authority);
                    let _ = abi::replace_header(
                        MapType::RequestHeaders,
                        b":authority",
                        new_authority.as_bytes(),
                    );
                    if request.has_cluster_header {
                        let _ = abi::remove_header(MapType::RequestHeaders, cluster_header);
                    }
                }
                Target::Cluster(cluster) => {
                    let _ = abi::replace_header(
                        MapType::RequestHeaders,
                        cluster_header,
                        cluster.as_bytes(),
                    );
                }
            }
            true
        }
        // Only this filter may pick a cluster: a client-supplied cluster header is dropped.
        Decision::Baseline { .. } if request.has_cluster_header => {
            let _ = abi::remove_header(MapType::RequestHeaders, cluster_header);
            true
        }
        Decision::Baseline { .. } => false,
    };
    if rerouted {
        clear_route_cache();
    }
}

/// Makes Envoy pick the route again from the rewritten headers, even when an earlier filter
/// already resolved it. Envoy (since 1.33) only does this by itself for ABI <= 0.2.1 plugins;
/// the foreign function is the supported way. Hosts without it (NotFound) still clear the
/// cache for this ABI version, so the error is ignored.
fn clear_route_cache() {
    let _ = abi::call_foreign_function("clear_route_cache", &[]);
}

pub fn decorate_response(state: &StreamState) {
    if let Some(debug) = &state.debug {
        let _ = abi::add_header(MapType::ResponseHeaders, DEBUG_HEADER, debug.as_bytes());
    }
    if let Some(quota) = &state.quota {
        let limit = quota.limit.to_string();
        let remaining = quota.remaining.to_string();
        let reset = quota.reset_seconds.to_string();
        for (name, value) in [
            (&b"x-ratelimit-limit"[..], limit),
            (b"x-ratelimit-remaining", remaining),
            (b"x-ratelimit-reset", reset),
        ] {
            let _ = abi::replace_header(MapType::ResponseHeaders, name, value.as_bytes());
        }
    }
}

/// The request ended, however it ended (complete, reset, timeout, local reply).
pub fn finish(state: StreamState) {
    if let Some(slot) = state.slot {
        if !release(&mut SharedData, &slot) {
            abi::log(
                LogLevel::Error,
                &format!("sandbox-router: could not release an in-flight slot of {slot}"),
            );
        }
    }
}
