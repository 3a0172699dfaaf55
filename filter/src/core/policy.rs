//! What happens to a request that carries a routing key, beyond routing: trust, unknown and
//! expired keys, the baseline write guard. The budget is applied afterwards by the shell, since
//! it needs the shared store.

use super::guard::Verdict;
use super::request::{KeySearch, RequestScan};
use super::router::{BaselineReason, Decision, Router, Sandbox, UntrustedMode};

/// The decision recorded in stats and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    Routed,
    Baseline,
    RateLimited,
    InFlightRejected,
    Untrusted,
    UnknownKey,
    Expired,
    WriteDenied,
    InvalidKey,
    /// Over budget in shadow mode (`enforce: false`): counted, not rejected.
    ShadowRejected,
    /// The budget store failed or stayed contended; the request was refused.
    BudgetUnavailable,
    /// The sandbox's circuit breaker is open; the request was refused.
    CircuitOpen,
    /// Not a decision: a routed request that the proxy sent to its catch-all passthrough
    /// cluster (the rewritten authority matched no route), so it reached the original
    /// destination, the baseline.
    RoutedToPassthrough,
}

impl Label {
    /// Every label, for defining their counters up front.
    pub const ALL: [Label; 13] = [
        Label::Routed,
        Label::Baseline,
        Label::RateLimited,
        Label::InFlightRejected,
        Label::Untrusted,
        Label::UnknownKey,
        Label::Expired,
        Label::WriteDenied,
        Label::InvalidKey,
        Label::ShadowRejected,
        Label::BudgetUnavailable,
        Label::CircuitOpen,
        Label::RoutedToPassthrough,
    ];

    /// The decision a refused budget verdict records.
    pub fn of_verdict(verdict: &Verdict) -> Label {
        match verdict {
            Verdict::RateLimited { .. } => Label::RateLimited,
            Verdict::InFlightCapped { .. } => Label::InFlightRejected,
            Verdict::Unavailable | Verdict::Admitted { .. } => Label::BudgetUnavailable,
        }
    }

    /// Why the budget or the breaker refused (or, in shadow mode, would have refused) a
    /// request, as Envoy response code details; `None` for decisions made before them.
    pub fn budget_details(self) -> Option<&'static str> {
        match self {
            Label::RateLimited => Some("sandbox_router_rate_limited"),
            Label::InFlightRejected => Some("sandbox_router_in_flight_limited"),
            Label::BudgetUnavailable => Some("sandbox_router_budget_unavailable"),
            Label::ShadowRejected => Some("sandbox_router_over_budget_in_shadow_mode"),
            Label::CircuitOpen => Some(CIRCUIT_OPEN_DETAILS),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Routed => "routed",
            Label::Baseline => "baseline",
            Label::RateLimited => "rate_limited",
            Label::InFlightRejected => "in_flight_rejected",
            Label::Untrusted => "untrusted",
            Label::UnknownKey => "unknown_key",
            Label::Expired => "expired",
            Label::WriteDenied => "write_denied",
            Label::InvalidKey => "invalid_key",
            Label::ShadowRejected => "shadow_rejected",
            Label::BudgetUnavailable => "budget_unavailable",
            Label::CircuitOpen => "circuit_open",
            Label::RoutedToPassthrough => "routed_to_passthrough",
        }
    }
}

/// Response code details of the reply an open circuit gets.
pub const CIRCUIT_OPEN_DETAILS: &str = "sandbox_router_circuit_open";
/// Audit reason of a request an open circuit would have refused, in shadow mode.
pub const CIRCUIT_OPEN_SHADOW_DETAILS: &str = "sandbox_router_circuit_open_in_shadow_mode";

/// A local reply instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u32,
    /// Envoy's response code details (no spaces).
    pub details: &'static str,
    pub body: String,
}

impl Evaluation<'_> {
    /// The sandbox whose budget the request spends, on a request still going ahead: a live
    /// one, or an expired one (an expired key is never less guarded than a live one).
    pub fn budget_sandbox(&self) -> Option<&Sandbox> {
        match self.label {
            Some(Label::Routed | Label::Baseline | Label::Expired) if self.reject.is_none() => {
                self.sandbox
            }
            _ => None,
        }
    }

    /// The key an app may trust (the key header): a live, registered sandbox's, from a trusted
    /// source, on a request going ahead.
    pub fn validated_key(&self) -> Option<&Sandbox> {
        match self.label {
            Some(Label::Routed | Label::Baseline) if self.reject.is_none() => self.sandbox,
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Evaluation<'r> {
    pub decision: Decision<'r>,
    /// `None` for requests without any routing key: they are not counted or audited.
    pub label: Option<Label>,
    /// The registered sandbox the key names (live or expired), for stats and audit.
    pub sandbox: Option<&'r Sandbox>,
    /// Remove the routing key from every carrier before forwarding.
    pub strip: bool,
    pub reject: Option<Rejection>,
}

const SAFE_METHODS: [&[u8]; 3] = [b"GET", b"HEAD", b"OPTIONS"];

/// Whether a request may change state at its destination: a method other than GET, HEAD and
/// OPTIONS; a read method that a method-override header turns into another one (frameworks such
/// as Rails, Laravel and ASP.NET honour `X-HTTP-Method-Override`, `X-HTTP-Method` and
/// `X-Method-Override`); or a protocol upgrade such as WebSocket, which opens a channel the
/// guard cannot see into.
pub fn is_write(request: &RequestScan<'_>) -> bool {
    !SAFE_METHODS.contains(&request.method.unwrap_or_default())
        || request
            .method_override
            .is_some_and(|m| !is_safe_override(m))
        || request.upgrade
}

/// Frameworks upper-case an override before they act on it.
fn is_safe_override(method: &[u8]) -> bool {
    SAFE_METHODS.iter().any(|m| method.eq_ignore_ascii_case(m))
}

/// The 403 a write to a baseline service gets under `baseline_writes: deny`.
fn write_denial(
    sandbox: &Sandbox,
    service: Option<&str>,
    request: &RequestScan<'_>,
) -> Option<Rejection> {
    if !is_write(request) || sandbox.may_write_to(service) {
        return None;
    }
    let destination = service.map_or_else(
        || String::from_utf8_lossy(request.authority.unwrap_or_default()).into_owned(),
        str::to_owned,
    );
    let what = if request.upgrade {
        "protocol upgrade".to_owned()
    } else {
        let method = request
            .method_override
            .filter(|m| !is_safe_override(m))
            .or(request.method)
            .unwrap_or_default();
        format!("{} requests", String::from_utf8_lossy(method))
    };
    Some(Rejection {
        status: 403,
        details: "sandbox_router_baseline_write_denied",
        body: format!(
            "sandbox `{}` may not send {what} to baseline service `{destination}`",
            sandbox.key
        ),
    })
}

/// `trusted` is asked only when a carrier is present and `trust` is configured; `now_ns` only
/// when the sandbox has an expiry. Requests without a key never reach either.
pub fn evaluate<'r>(
    router: &'r Router,
    request: &RequestScan<'_>,
    trusted: impl FnOnce() -> bool,
    now_ns: impl FnOnce() -> Option<u64>,
) -> Evaluation<'r> {
    let settings = &router.settings;
    let outcome = |decision, label, sandbox, reject| Evaluation {
        decision,
        label: Some(label),
        sandbox,
        strip: false,
        reject,
    };
    if request.key == KeySearch::Absent {
        return Evaluation {
            decision: router.decide(request),
            label: None,
            sandbox: None,
            strip: false,
            reject: None,
        };
    }
    if let Some(trust) = &settings.trust {
        if !trusted() {
            let decision = Decision::Baseline {
                reason: BaselineReason::Untrusted,
                key: None,
                sandbox: None,
                service: None,
            };
            let mut evaluation = outcome(decision, Label::Untrusted, None, None);
            match trust.untrusted {
                UntrustedMode::Strip => evaluation.strip = true,
                UntrustedMode::Reject => {
                    evaluation.reject = Some(Rejection {
                        status: 403,
                        details: "sandbox_router_untrusted_source",
                        body: "sandbox routing keys are not accepted from this source".into(),
                    });
                }
            }
            return evaluation;
        }
    }
    let decision = router.decide(request);
    let (key, sandbox, service) = match decision {
        Decision::Route {
            key,
            sandbox,
            service,
            ..
        } => (key, sandbox, Some(service)),
        Decision::Baseline {
            reason: BaselineReason::NoOverride,
            key: Some(key),
            sandbox: Some(sandbox),
            service,
        } => (key, sandbox, service),
        Decision::Baseline {
            reason: BaselineReason::UnknownKey,
            key: Some(key),
            ..
        } => {
            let reject = settings.reject_unknown_keys.then(|| Rejection {
                status: 400,
                details: "sandbox_router_unknown_sandbox",
                body: format!("sandbox `{}` does not exist", key.as_str()),
            });
            return outcome(decision, Label::UnknownKey, None, reject);
        }
        _ => return outcome(decision, Label::InvalidKey, None, None),
    };
    if sandbox.expires_at_ns.is_some() && now_ns().is_none_or(|now| sandbox.is_expired(now)) {
        // Expired: no more routing, but never less guarded than a live sandbox (its write guard
        // and budget still apply), or refused outright under `unknown_keys: reject`.
        let decision = Decision::Baseline {
            reason: BaselineReason::Expired,
            key: Some(key),
            sandbox: None,
            service,
        };
        if settings.reject_unknown_keys {
            let reject = Rejection {
                status: 400,
                details: "sandbox_router_expired_sandbox",
                body: format!("sandbox `{}` has expired", key.as_str()),
            };
            return outcome(decision, Label::Expired, Some(sandbox), Some(reject));
        }
        if let Some(reject) = write_denial(sandbox, service, request) {
            return outcome(decision, Label::WriteDenied, Some(sandbox), Some(reject));
        }
        return outcome(decision, Label::Expired, Some(sandbox), None);
    }
    if let Decision::Baseline { .. } = decision {
        if let Some(reject) = write_denial(sandbox, service, request) {
            return outcome(decision, Label::WriteDenied, Some(sandbox), Some(reject));
        }
        return outcome(decision, Label::Baseline, Some(sandbox), None);
    }
    outcome(decision, Label::Routed, Some(sandbox), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{compile, HostFacts};
    use crate::core::request::scan;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_790_000_000_000_000_000; // 2026-09-21

    fn router(unknown_keys: &str) -> Router {
        let config = format!(
            r#"{{"namespace": "shop", "unknown_keys": "{unknown_keys}", "sandboxes": {{
                "live": {{"routes": {{"payment": {{"authority": "payment-live.shop.svc.cluster.local"}}}},
                    "baseline_writes": "deny", "baseline_write_exceptions": ["audit-log"]}},
                "old": {{"routes": {{"payment": {{"authority": "payment-old.shop.svc.cluster.local"}}}},
                    "baseline_writes": "deny", "expires_at": "2026-01-01T00:00:00Z",
                    "rate_limit": {{"requests_per_second": 1, "burst": 1}}}}}}}}"#
        );
        compile(config.as_bytes(), &HostFacts::default()).unwrap()
    }

    /// (label, rejection status, whether the budget applies, whether the key is validated).
    fn outcome(
        router: &Router,
        headers: &[(&str, &str)],
    ) -> (Option<&'static str>, Option<u32>, bool, bool) {
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let request = scan(&router.settings, pairs);
        let e = evaluate(router, &request, || true, || Some(NOW));
        (
            e.label.map(Label::as_str),
            e.reject.as_ref().map(|r| r.status),
            e.budget_sandbox().is_some(),
            e.validated_key().is_some(),
        )
    }

    fn request<'a>(
        key: &'a str,
        method: &'a str,
        authority: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut headers = vec![
            (":method", method),
            (":authority", authority),
            ("baggage", key),
        ];
        headers.extend_from_slice(extra);
        headers
    }

    #[test]
    fn an_expired_sandbox_keeps_its_write_guard_and_budget() {
        let r = router("baseline");
        // Reads go to the baseline, spending the budget; no key is handed on.
        assert_eq!(
            outcome(&r, &request("sandbox=old", "GET", "payment", &[])),
            (Some("expired"), None, true, false)
        );
        // Writes to any baseline service are refused, the one it used to override included.
        for authority in ["payment", "inventory"] {
            assert_eq!(
                outcome(&r, &request("sandbox=old", "POST", authority, &[])),
                (Some("write_denied"), Some(403), false, false),
                "{authority}"
            );
        }
        // Under `unknown_keys: reject` it is refused outright.
        assert_eq!(
            outcome(
                &router("reject"),
                &request("sandbox=old", "GET", "payment", &[])
            ),
            (Some("expired"), Some(400), false, false)
        );
    }

    #[test]
    fn a_live_key_is_validated_only_on_requests_that_go_ahead() {
        let r = router("baseline");
        assert_eq!(
            outcome(&r, &request("sandbox=live", "POST", "payment", &[])),
            (Some("routed"), None, true, true)
        );
        assert_eq!(
            outcome(&r, &request("sandbox=live", "GET", "inventory", &[])),
            (Some("baseline"), None, true, true)
        );
        assert_eq!(
            outcome(&r, &request("sandbox=live", "POST", "inventory", &[])),
            (Some("write_denied"), Some(403), false, false)
        );
        assert_eq!(
            outcome(&r, &request("sandbox=nope", "GET", "payment", &[])),
            (Some("unknown_key"), None, false, false)
        );
    }

    #[test]
    fn method_overrides_and_upgrades_count_as_writes() {
        let r = router("baseline");
        for (name, value) in [
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "put"),
            ("x-method-override", "PATCH"),
            ("upgrade", "websocket"),
        ] {
            let (label, status, _, _) = outcome(
                &r,
                &request("sandbox=live", "GET", "inventory", &[(name, value)]),
            );
            assert_eq!((label, status), (Some("write_denied"), Some(403)), "{name}");
        }
        // A read override is a read; exceptions still apply.
        let (label, _, _, _) = outcome(
            &r,
            &request(
                "sandbox=live",
                "POST",
                "inventory",
                &[("x-http-method-override", "GET")],
            ),
        );
        assert_eq!(label, Some("write_denied"));
        let (label, _, _, _) = outcome(
            &r,
            &request(
                "sandbox=live",
                "GET",
                "inventory",
                &[("x-http-method-override", "get")],
            ),
        );
        assert_eq!(label, Some("baseline"));
        let (label, _, _, _) = outcome(
            &r,
            &request(
                "sandbox=live",
                "GET",
                "audit-log",
                &[("upgrade", "websocket")],
            ),
        );
        assert_eq!(label, Some("baseline"));
        // The method itself is compared exactly: `get` is not GET.
        let (label, _, _, _) = outcome(&r, &request("sandbox=live", "get", "inventory", &[]));
        assert_eq!(label, Some("write_denied"));
    }
}
