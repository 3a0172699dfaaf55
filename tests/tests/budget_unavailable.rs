//! The guard fails closed (README "Blast-radius guard"): when the shared-data store of the
//! budgets fails, a request of a sandbox with a budget is refused with 429 and decision
//! `budget_unavailable`, while keyless traffic, unknown keys and sandboxes without a budget,
//! which never touch the store, are served as usual.
//!
//! The store is made to fail by the filter's test-only `fault-injection` build
//! ([`paths::fault_injection_wasm`]): a request carrying `x-sandbox-router-fault:
//! store-unavailable` makes every shared-data access of the budget store fail while that
//! request is admitted.

use std::time::Duration;

use integration_tests::expect::{self, NO_KEY, UNKNOWN_KEY};
use integration_tests::sandbox::{
    self, SandboxOptions, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{paths, SandboxEnv, TestRequest, TestResponse};
use serde_json::json;

const FAULT_HEADER: &str = "x-sandbox-router-fault";
const STORE_UNAVAILABLE: &str = "store-unavailable";
/// A registered sandbox without a budget: the guard has nothing to ask the store.
const UNLIMITED_KEY: &str = "feature-free";
const STAT_DEADLINE: Duration = Duration::from_secs(10);
const REFUSED_BODY: &str =
    "sandbox feature-x: budget unavailable (shared budget store failed or contended); \
                            request refused to protect production";

async fn start() -> SandboxEnv {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["rate_limit"] = json!({ "requests_per_second": 100, "burst": 100 });
    config["sandboxes"][KEY]["max_in_flight"] = json!(10);
    config["sandboxes"][UNLIMITED_KEY] =
        json!({ "routes": { "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY } } });
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        wasm: Some(paths::fault_injection_wasm()),
        upstream_http2: true,
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await
}

fn failing_store(request: TestRequest) -> TestRequest {
    request.header(FAULT_HEADER, STORE_UNAVAILABLE)
}

fn keyed(key: &str) -> TestRequest {
    TestRequest::get("payment", "/pay").header("baggage", &format!("sandbox={key}"))
}

fn assert_refused(response: &TestResponse) {
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.upstream(), None, "{response:?}");
    assert_eq!(response.body_text(), REFUSED_BODY);
    assert_eq!(
        response.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    assert_eq!(
        response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(response.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        expect::decision(response),
        "rejected; key=feature-x; reason=budget_unavailable"
    );
}

#[tokio::test]
async fn a_failing_budget_store_refuses_budgeted_sandbox_requests_and_nothing_else() {
    let env = start().await;

    // The store works: the same request is admitted.
    let response = env.send(keyed(KEY)).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);

    // The store fails: refused, over HTTP/1.1 and HTTP/2.
    assert_refused(&env.send(failing_store(keyed(KEY))).await);
    assert_refused(&env.send(failing_store(keyed(KEY)).h2c()).await);
    // gRPC: RESOURCE_EXHAUSTED.
    let call =
        failing_store(TestRequest::grpc("payment", "/shop.Payment/Pay")).header("x-sandbox", KEY);
    let response = env.send(call).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.grpc_status().as_deref(), Some("8"), "{response:?}");
    assert_eq!(response.upstream(), None, "{response:?}");
    assert_eq!(
        response.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    // Requests that never reach the store are served, fault or not.
    let response = env
        .send(failing_store(TestRequest::get("payment", "/pay")))
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &[NO_KEY]);
    let response = env.send(failing_store(keyed("no-such-sandbox"))).await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &[UNKNOWN_KEY]);
    let response = env.send(failing_store(keyed(UNLIMITED_KEY))).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    // The failure was this request's only: the next one is admitted again.
    let response = env.send(keyed(KEY)).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 3);

    // Audit: one record per keyed request, the refused ones `budget_unavailable`.
    let lines = env.audit_log().wait_for_records(7, STAT_DEADLINE).await;
    let summary: Vec<(u64, String, String)> = lines
        .iter()
        .map(|line| {
            (
                line["status"].as_u64().unwrap_or_default(),
                line["sandbox_router"]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                line["sandbox_router"]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String, String)> = [
        (200, KEY, "routed"),
        (429, KEY, "budget_unavailable"),
        (429, KEY, "budget_unavailable"),
        (200, KEY, "budget_unavailable"), // gRPC: HTTP 200 carrying grpc-status 8
        (200, "no-such-sandbox", "unknown_key"),
        (200, UNLIMITED_KEY, "routed"),
        (200, KEY, "routed"),
    ]
    .iter()
    .map(|(status, key, decision)| (*status, (*key).to_owned(), (*decision).to_owned()))
    .collect();
    assert_eq!(summary, expected, "{lines:#?}");

    // Counters, in total and for the sandbox.
    for (name, count) in [
        ("requests_total.decision.budget_unavailable", 3),
        (
            "sandbox_requests.decision.budget_unavailable.sandbox.feature-x",
            3,
        ),
        ("requests_total.decision.routed", 3),
        ("requests_total.decision.unknown_key", 1),
    ] {
        env.envoy
            .wait_for_stat_eq(
                &format!("wasmcustom.sandbox_router.{name}"),
                count,
                STAT_DEADLINE,
            )
            .await;
    }
}
