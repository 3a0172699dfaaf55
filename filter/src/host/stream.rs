//! One request: read its headers once, decide, guard, apply, record.

use std::rc::Rc;

use crate::core::audit::audit_record_with_reason;
use crate::core::breaker;
use crate::core::cidr::peer_ip;
use crate::core::describe::describe;
use crate::core::guard::{admit, release, Quota, Verdict};
use crate::core::header_map::HeaderPairs;
use crate::core::policy::{evaluate, Evaluation, Label, Rejection, CIRCUIT_OPEN_SHADOW_DETAILS};
use crate::core::request::{scan, KeySearch, RequestScan};
use crate::core::router::{rewritten_authority, Decision, Router, Sandbox, Settings, Target};
use crate::core::slots::VmId;
use crate::core::strip::{strip_plan, HeaderEdit};

use super::abi::{self, MapType};
use super::budget::{reject_over_budget, SharedData};
use super::circuit::{self, Checked, Tracked};
use super::metrics::Metrics;

const DEBUG_HEADER: &[u8] = b"x-sandbox-router";
/// Filter state key of the audit record: `%FILTER_STATE(wasm.sandbox_router:PLAIN)%`.
const AUDIT_FILTER_STATE: &str = "sandbox_router";

/// What a stream still has to do on its response or when it ends.
#[derive(Default)]
pub struct StreamState {
    debug: Option<String>,
    quota: Option<Quota>,
    /// The budget cell whose in-flight slot this request holds.
    slot: Option<Box<str>>,
    /// The sandbox of a request that went upstream, and what its end must report.
    outcome: Option<Awaited>,
}

/// A sandboxed request that went upstream: its breaker verdict, and whether a rerouted request
/// really reached the sandbox, are known when it ends.
struct Awaited {
    sandbox: Rc<str>,
    circuit: Option<Tracked>,
    routed: bool,
    is_grpc: bool,
    /// The `grpc-status` of the response headers (trailers-only) or trailers, as they passed.
    grpc_status: Option<u64>,
}

pub struct Handled {
    pub state: Option<StreamState>,
    /// The request was answered locally; the filter chain must stop.
    pub answered: bool,
}

/// Routes the current request. A request without any carrier or cluster header is answered by
/// probing for those few headers (no copy into the VM, no allocation); any other request
/// reads its headers once, in one host call.
pub fn route_request(router: &Router, metrics: &mut Metrics, vm: VmId) -> Handled {
    let mut handled = Handled {
        state: None,
        answered: false,
    };
    if !may_carry_a_key(&router.settings) {
        if router.settings.debug {
            handled.state = Some(debug_only(describe(&Decision::keyless(), b"")));
        }
        return handled;
    }
    let Ok(headers) = abi::header_pairs(MapType::RequestHeaders) else {
        return handled;
    };
    let request = scan(&router.settings, HeaderPairs::new(headers.bytes()));
    if request.key == KeySearch::Absent {
        let decision = router.decide(&request);
        apply(router, &decision, &request, None);
        if router.settings.debug {
            let line = describe(&decision, request.authority.unwrap_or_default());
            handled.state = Some(debug_only(line));
        }
        return handled;
    }

    let evaluation = evaluate(router, &request, source_is_trusted(router), now);
    let mut state = StreamState::default();
    let mut label = evaluation.label.unwrap_or(Label::InvalidKey);
    let mut reason = None;
    if evaluation.strip {
        strip_key(router, HeaderPairs::new(headers.bytes()));
    }
    if let Some(rejection) = &evaluation.reject {
        send_rejection(rejection, request.is_grpc);
        handled.answered = true;
    } else if let Some(sandbox) = evaluation.budget_sandbox() {
        let contained = contain(
            sandbox,
            &evaluation.decision,
            &request,
            vm,
            metrics,
            &mut state,
        );
        handled.answered = contained.answered;
        label = contained.label.unwrap_or(label);
        reason = contained.reason;
    }
    if !handled.answered {
        let validated = evaluation.validated_key().map(|s| &*s.key);
        apply(router, &evaluation.decision, &request, validated);
    }
    metrics.count(evaluation.sandbox.map(|s| &s.key), label);
    let record = audit_record_with_reason(&request, &evaluation, label, reason);
    let _ = abi::set_filter_state(AUDIT_FILTER_STATE, record.as_bytes());
    if router.settings.debug {
        state.debug = Some(debug_line(&evaluation, &request, label, handled.answered));
    }
    if state.debug.is_some()
        || state.quota.is_some()
        || state.slot.is_some()
        || state.outcome.is_some()
    {
        handled.state = Some(state);
    }
    handled
}

/// What the breaker and the budget made of a request of a registered sandbox going ahead.
struct Contained {
    /// Refused, and answered.
    answered: bool,
    /// The decision, when they changed it.
    label: Option<Label>,
    /// The audit reason, when the label alone does not tell it.
    reason: Option<&'static str>,
}

/// The breaker, then the budget (a request the breaker refuses takes nothing from the budget);
/// a request that goes upstream leaves in `state` what its end must report.
fn contain(
    sandbox: &Sandbox,
    decision: &Decision<'_>,
    request: &RequestScan<'_>,
    vm: VmId,
    metrics: &mut Metrics,
    state: &mut StreamState,
) -> Contained {
    let mut out = Contained {
        answered: false,
        label: None,
        reason: None,
    };
    let mut tracked = None;
    match circuit::check(sandbox, request.is_grpc, metrics) {
        Checked::Go(ticket) => tracked = ticket,
        Checked::Refused => {
            out.label = Some(Label::CircuitOpen);
            out.answered = true;
        }
        Checked::Shadow => {
            out.label = Some(Label::ShadowRejected);
            out.reason = Some(CIRCUIT_OPEN_SHADOW_DETAILS);
        }
    }
    if !out.answered {
        match guard(sandbox, request.is_grpc, vm) {
            Guarded::Admitted { quota, slot } => {
                state.quota = quota;
                state.slot = slot;
            }
            // Counted and audited as what it would have been; it goes on.
            Guarded::Shadow(would_be) => {
                out.label = Some(would_be);
                out.reason = None;
            }
            Guarded::Rejected(rejected) => {
                out.label = Some(rejected);
                out.reason = None;
                out.answered = true;
            }
            Guarded::Unlimited => {}
        }
    }
    match tracked {
        Some(tracked) if out.answered => circuit::untrack(tracked),
        circuit => {
            let routed = matches!(decision, Decision::Route { .. });
            if !out.answered && (circuit.is_some() || routed) {
                state.outcome = Some(Awaited {
                    sandbox: Rc::clone(&sandbox.key),
                    circuit,
                    routed,
                    is_grpc: request.is_grpc,
                    grpc_status: None,
                });
            }
        }
    }
    out
}

fn debug_only(line: String) -> StreamState {
    StreamState {
        debug: Some(line),
        ..StreamState::default()
    }
}

fn debug_line(
    evaluation: &Evaluation<'_>,
    request: &RequestScan<'_>,
    label: Label,
    answered: bool,
) -> String {
    if answered {
        let key = evaluation.sandbox.map_or("-", |s| &*s.key);
        format!("rejected; key={key}; reason={}", label.as_str())
    } else {
        describe(&evaluation.decision, request.authority.unwrap_or_default())
    }
}

/// Whether any header that can carry a key, the cluster header or the key header is present
/// (the last two only the filter may set, so a client's copy must be removed). Probing absent
/// headers one by one is cheaper than copying every header into the VM: the host calls back
/// into the VM to allocate for a copy, and that call costs more than several probes
/// (scripts/bench). A host error counts as present, so the request takes the full path.
fn may_carry_a_key(settings: &Settings) -> bool {
    settings
        .probed_headers()
        .any(|name| abi::has_header(MapType::RequestHeaders, name).unwrap_or(true))
}

/// Reads the peer address only when asked (a key is present and `trust` is configured).
fn source_is_trusted(router: &Router) -> impl FnOnce() -> bool + '_ {
    move || {
        let Some(trust) = &router.settings.trust else {
            return true;
        };
        let peer = abi::property(&["source", "address"]).ok().flatten();
        trust.allows(peer.as_ref().and_then(|p| peer_ip(p.bytes())))
    }
}

fn now() -> Option<u64> {
    abi::now_nanos().ok()
}

fn strip_key(router: &Router, pairs: HeaderPairs<'_>) {
    let edits = strip_plan(&router.settings, pairs.collect::<Vec<_>>());
    for edit in edits {
        let _ = match edit {
            HeaderEdit::Remove(name) => abi::remove_header(MapType::RequestHeaders, name),
            HeaderEdit::Replace(name, value) => {
                abi::replace_header(MapType::RequestHeaders, name, &value)
            }
        };
    }
}

/// gRPC codes for the 4xx answers of the policy.
fn grpc_status_for(status: u32) -> i32 {
    match status {
        400 => 3, // INVALID_ARGUMENT
        403 => 7, // PERMISSION_DENIED
        _ => 2,   // UNKNOWN
    }
}

fn send_rejection(rejection: &Rejection, is_grpc: bool) {
    let grpc_status = if is_grpc {
        grpc_status_for(rejection.status)
    } else {
        -1
    };
    let _ = abi::send_local_response(
        rejection.status,
        rejection.details,
        rejection.body.as_bytes(),
        &[],
        grpc_status,
    );
}

enum Guarded {
    Unlimited,
    Admitted {
        quota: Option<Quota>,
        slot: Option<Box<str>>,
    },
    /// Over budget in shadow mode: counted as this, let through.
    Shadow(Label),
    Rejected(Label),
}

/// Every request of a registered sandbox counts against its budget, rerouted or not.
fn guard(sandbox: &Sandbox, is_grpc: bool, vm: VmId) -> Guarded {
    let Some(budget) = &sandbox.budget else {
        return Guarded::Unlimited;
    };
    let verdict = match abi::now_nanos() {
        Ok(now) => admit(&mut SharedData, budget, now, vm),
        Err(_) => Verdict::Unavailable,
    };
    match verdict {
        Verdict::Admitted { quota, holds_slot } => Guarded::Admitted {
            quota,
            slot: holds_slot.then(|| budget.store_key.clone()),
        },
        rejected if sandbox.enforce => {
            reject_over_budget(&sandbox.key, &rejected, is_grpc);
            Guarded::Rejected(Label::of_verdict(&rejected))
        }
        rejected => {
            log::info!(
                "shadow mode: sandbox {} would have been rejected: {}",
                sandbox.key,
                rejected.name()
            );
            Guarded::Shadow(Label::ShadowRejected)
        }
    }
}

/// Rewrites the request's headers: the route target, and the key header (set to the validated
/// key, or a client's copy removed: only this filter may set it). Envoy picks the route again
/// after any request header change by a plugin of ABI 0.2.1 (this one), even when an earlier
/// filter already resolved it; the `clear_route_cache` foreign function would only repeat that
/// at the cost of a host call. Tested with a Lua filter that resolves the route first
/// (tests/tests/routing.rs).
fn apply(
    router: &Router,
    decision: &Decision<'_>,
    request: &RequestScan<'_>,
    validated_key: Option<&str>,
) {
    let settings = &router.settings;
    let cluster_header = &*settings.cluster_header;
    match decision {
        Decision::Route { target, .. } => match target {
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
        },
        // Only this filter may pick a cluster: a client-supplied cluster header is dropped.
        Decision::Baseline { .. } if request.has_cluster_header => {
            let _ = abi::remove_header(MapType::RequestHeaders, cluster_header);
        }
        Decision::Baseline { .. } => {}
    }
    let key_header = &*settings.key_header;
    match validated_key {
        // Replacing removes every copy a client made, in any case.
        Some(key) if !key_header.is_empty() => {
            let _ = abi::replace_header(MapType::RequestHeaders, key_header, key.as_bytes());
        }
        _ if request.has_key_header => {
            let _ = abi::remove_header(MapType::RequestHeaders, key_header);
        }
        _ => {}
    }
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

/// Notes the `grpc-status` of a tracked gRPC call from `map` (the response headers of a
/// trailers-only answer, or the trailers). Envoy's `response.grpc_status` attribute cannot
/// serve: once a callback has returned, Envoy no longer shows the headers and trailers to the
/// filter, so at the stream's end it infers the status from the HTTP code (200: UNKNOWN).
pub fn note_grpc_status(state: &mut StreamState, map: MapType) {
    let Some(awaited) = &mut state.outcome else {
        return;
    };
    if !awaited.is_grpc || awaited.circuit.is_none() {
        return;
    }
    if let Ok(Some(value)) = abi::header_value(map, b"grpc-status") {
        if let Some(status) = breaker::grpc_status(value.bytes()) {
            awaited.grpc_status = Some(status);
        }
    }
}

/// The request ended, however it ended (complete, reset, timeout, local reply).
pub fn finish(state: StreamState, vm: VmId, metrics: &mut Metrics) {
    if let Some(slot) = state.slot {
        if !release(&mut SharedData, &slot, vm) {
            log::error!("could not release an in-flight slot of {slot}");
        }
    }
    if let Some(awaited) = state.outcome {
        report_outcome(&awaited, metrics);
    }
}

/// Envoy's upstream cluster of a request whose route matched no virtual host for the rewritten
/// authority (Istio with `outboundTrafficPolicy: ALLOW_ANY`): the original destination, the
/// baseline the app dialed.
const PASSTHROUGH_CLUSTER: &[u8] = b"PassthroughCluster";

/// What the end of a sandboxed request tells: the breaker's verdict, from Envoy's response code
/// and flags (still readable in `proxy_on_delete`, so the filter exports no log callback that
/// every stream would pay for) and the gRPC status noted on the way; and whether a rerouted
/// request fell through to the passthrough cluster.
fn report_outcome(awaited: &Awaited, metrics: &mut Metrics) {
    if awaited.routed {
        let cluster = abi::property(&["xds", "cluster_name"]).ok().flatten();
        if cluster.is_some_and(|c| c.bytes() == PASSTHROUGH_CLUSTER) {
            log::warn!(
                "sandbox {}: a rerouted request went to {}: the target authority matched no route",
                awaited.sandbox,
                String::from_utf8_lossy(PASSTHROUGH_CLUSTER)
            );
            metrics.count(Some(&awaited.sandbox), Label::RoutedToPassthrough);
        }
    }
    if let Some(tracked) = &awaited.circuit {
        let code = abi::u64_property(&["response", "code"]).unwrap_or(0);
        let flags = abi::u64_property(&["response", "flags"]).unwrap_or(0);
        let failed = breaker::verdict(code, awaited.grpc_status, flags);
        circuit::record(tracked, &awaited.sandbox, failed, metrics);
    }
}
