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
}

impl Label {
    /// The decision a refused budget verdict records.
    pub fn of_verdict(verdict: &Verdict) -> Label {
        match verdict {
            Verdict::RateLimited { .. } => Label::RateLimited,
            Verdict::InFlightCapped { .. } => Label::InFlightRejected,
            Verdict::Unavailable | Verdict::Admitted { .. } => Label::BudgetUnavailable,
        }
    }

    /// Why the budget refused (or, in shadow mode, would have refused) a request, as Envoy
    /// response code details; `None` for decisions made before the budget.
    pub fn budget_details(self) -> Option<&'static str> {
        match self {
            Label::RateLimited => Some("sandbox_router_rate_limited"),
            Label::InFlightRejected => Some("sandbox_router_in_flight_limited"),
            Label::BudgetUnavailable => Some("sandbox_router_budget_unavailable"),
            Label::ShadowRejected => Some("sandbox_router_over_budget_in_shadow_mode"),
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
        }
    }
}

/// A local reply instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u32,
    /// Envoy's response code details (no spaces).
    pub details: &'static str,
    pub body: String,
}

impl Evaluation<'_> {
    /// The sandbox whose budget the request spends: a live one, on a request still going ahead.
    pub fn budget_sandbox(&self) -> Option<&Sandbox> {
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
        let decision = Decision::Baseline {
            reason: BaselineReason::Expired,
            key: Some(key),
            sandbox: None,
            service,
        };
        let reject = settings.reject_unknown_keys.then(|| Rejection {
            status: 400,
            details: "sandbox_router_expired_sandbox",
            body: format!("sandbox `{}` has expired", key.as_str()),
        });
        return outcome(decision, Label::Expired, Some(sandbox), reject);
    }
    if let Decision::Baseline { .. } = decision {
        let method = request.method.unwrap_or_default();
        if !SAFE_METHODS.contains(&method) && !sandbox.may_write_to(service) {
            let destination = service.map_or_else(
                || String::from_utf8_lossy(request.authority.unwrap_or_default()).into_owned(),
                str::to_owned,
            );
            let reject = Rejection {
                status: 403,
                details: "sandbox_router_baseline_write_denied",
                body: format!(
                    "sandbox `{}` may not send {} requests to baseline service `{destination}`",
                    sandbox.key,
                    String::from_utf8_lossy(method)
                ),
            };
            return outcome(decision, Label::WriteDenied, Some(sandbox), Some(reject));
        }
        return outcome(decision, Label::Baseline, Some(sandbox), None);
    }
    outcome(decision, Label::Routed, Some(sandbox), None)
}
