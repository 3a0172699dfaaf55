//! Assertions shared by the filter tests: which upstream answered, what it received, and what
//! the filter's debug header says.

use crate::client::{Echo, TestResponse};
use crate::sandbox::{self, SandboxEnv, DECISION_HEADER};
use crate::TestRequest;

/// Baseline reasons from the contract.
pub const NO_KEY: &str = "no-key";
pub const UNKNOWN_KEY: &str = "unknown-key";
pub const NO_OVERRIDE: &str = "no-override";
pub const INVALID_KEY: &str = "invalid-key";

/// The request was answered 200 by `upstream`; returns what that upstream received.
pub fn answered_by(response: &TestResponse, upstream: &str) -> Echo {
    assert_eq!(
        response.upstream().as_deref(),
        Some(upstream),
        "expected upstream {upstream:?} to answer; got:\n{response:?}"
    );
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.upstream(), upstream);
    echo
}

/// The filter routed the request (debug header starts with `routed;`) and `upstream` answered.
pub fn routed_to(response: &TestResponse, upstream: &str) -> Echo {
    let echo = answered_by(response, upstream);
    let decision = decision(response);
    assert!(
        decision.starts_with("routed;"),
        "expected a `routed;` decision, got {decision:?}:\n{response:?}"
    );
    echo
}

/// The filter left the request on the baseline (debug header starts with `baseline;` and has
/// `reason=<one of reasons>`) and `upstream` answered.
pub fn baseline_at(response: &TestResponse, upstream: &str, reasons: &[&str]) -> Echo {
    let echo = answered_by(response, upstream);
    assert_baseline_decision(response, reasons);
    echo
}

/// The debug header says `baseline;` with one of the given reasons (any reason if empty).
pub fn assert_baseline_decision(response: &TestResponse, reasons: &[&str]) {
    let decision = decision(response);
    assert!(
        decision.starts_with("baseline;"),
        "expected a `baseline;` decision, got {decision:?}:\n{response:?}"
    );
    assert!(
        reasons.is_empty()
            || reasons
                .iter()
                .any(|reason| decision.contains(&format!("reason={reason}"))),
        "expected reason={} in {decision:?}:\n{response:?}",
        reasons.join(" or reason=")
    );
}

/// The one answer a table case expects: which upstream served the request and the filter's
/// decision (`routed;`, or `baseline;` with exactly this reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Routed {
        upstream: &'static str,
    },
    Baseline {
        upstream: &'static str,
        reason: &'static str,
    },
}

/// Asserts `expected` of `response`, naming `case` in every failure message; returns what the
/// upstream received.
pub fn outcome(case: &str, response: &TestResponse, expected: Outcome) -> Echo {
    assert_outcome(case, response, expected);
    let echo = response.echo();
    assert_eq!(echo.upstream(), expected.upstream(), "{case}: {response:?}");
    echo
}

impl Outcome {
    pub fn upstream(self) -> &'static str {
        match self {
            Outcome::Routed { upstream } | Outcome::Baseline { upstream, .. } => upstream,
        }
    }
}

/// [`outcome`] for a response without the upstream's echo (e.g. to a HEAD request).
pub fn assert_outcome(case: &str, response: &TestResponse, expected: Outcome) {
    let upstream = expected.upstream();
    assert_eq!(
        response.upstream().as_deref(),
        Some(upstream),
        "{case}: expected upstream {upstream:?} to answer; got:\n{response:?}"
    );
    assert_eq!(response.status, 200, "{case}: {response:?}");
    let decision = sandbox::decision(response)
        .unwrap_or_else(|| panic!("{case}: no {DECISION_HEADER} header:\n{response:?}"));
    match expected {
        Outcome::Routed { .. } => assert!(
            decision.starts_with("routed;"),
            "{case}: expected a `routed;` decision, got {decision:?}:\n{response:?}"
        ),
        Outcome::Baseline { reason, .. } => {
            let actual = decision
                .split("; ")
                .find_map(|part| part.strip_prefix("reason="));
            assert!(
                decision.starts_with("baseline;") && actual == Some(reason),
                "{case}: expected `baseline; ... reason={reason}`, got {decision:?}:\n{response:?}"
            );
        }
    }
}

/// The filter's debug header (panics if the response has none).
pub fn decision(response: &TestResponse) -> String {
    sandbox::decision(response).unwrap_or_else(|| {
        panic!("response has no {DECISION_HEADER} header (did the filter run?):\n{response:?}")
    })
}

/// The request reached the upstream without a header.
pub fn lacks_header(echo: &Echo, name: &str) {
    assert_eq!(
        echo.header(name),
        None,
        "upstream {} received {name} but should not have: {:?}",
        echo.upstream(),
        echo.0
    );
}

/// Envoy and the filter are healthy after whatever the test did: a keyed request is still
/// routed (a crashed VM under FAIL_OPEN would silently pass it to the baseline), no Wasm stat
/// with "fail" in its name is non-zero, and — after stopping Envoy so its log is flushed —
/// the log has no VM failure (panic, trap, failed plugin).
pub async fn filter_healthy(env: &mut SandboxEnv) {
    let probe = env
        .send(TestRequest::get("payment", "/health-probe").header("x-sandbox", sandbox::KEY))
        .await;
    routed_to(&probe, sandbox::PAYMENT_SANDBOX);

    let stats = env.envoy.stats().await;
    let v8_vms = stats.get("wasm.envoy.wasm.runtime.v8.created").copied();
    assert!(
        v8_vms.unwrap_or(0) > 0,
        "no V8 Wasm VM was created (wasm.envoy.wasm.runtime.v8.created = {v8_vms:?})"
    );
    let failures: Vec<_> = stats
        .iter()
        .filter(|(name, value)| name.contains("wasm") && name.contains("fail") && **value > 0)
        .collect();
    assert!(failures.is_empty(), "Wasm failure stats: {failures:?}");

    env.envoy.stop();
    let log = env.envoy.log();
    let vm_failures: Vec<&str> = log.lines().filter(|line| is_vm_failure(line)).collect();
    assert!(
        vm_failures.is_empty(),
        "the Wasm VM failed:\n{}",
        vm_failures.join("\n")
    );
}

/// A log line that shows the Wasm VM failing (trap, panic, or plugin failure).
pub fn is_vm_failure(line: &str) -> bool {
    line.contains("][wasm]")
        && [
            "panicked",
            "Uncaught",
            "RuntimeError",
            "Wasm VM failed",
            "failed to load",
        ]
        .iter()
        .any(|sign| line.contains(sign))
}
