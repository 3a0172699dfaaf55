//! The per-sandbox circuit breaker (issue 14): a sandbox whose requests keep failing is
//! contained. Its upstream fails on command; while the circuit is open, the filter answers 503
//! itself and nothing reaches the upstream; baseline traffic and other sandboxes go on.

use std::time::Duration;

use integration_tests::audit;
use integration_tests::expect;
use integration_tests::sandbox::{self, SandboxOptions, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX};
use integration_tests::upstream::Behavior;
use integration_tests::{SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};

/// The default configuration with a breaker on `feature-x`.
fn with_breaker(breaker: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["circuit_breaker"] = breaker;
    config
}

async fn start(config: Value) -> SandboxEnv {
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        audit_log: true,
        stats_tags: true,
        route_timeout: Some(Duration::from_millis(500)),
        ..SandboxOptions::default()
    })
    .await
}

fn keyed() -> TestRequest {
    TestRequest::get("payment", "/orders").header("baggage", "sandbox=feature-x")
}

fn is_circuit_reply(response: &TestResponse) -> bool {
    response.status == 503
        && response.header("x-sandbox-router-circuit").as_deref() == Some("open")
        && response.upstream().is_none()
}

#[tokio::test]
async fn consecutive_failures_open_the_circuit_and_nothing_reaches_the_upstream() {
    let env = start(with_breaker(json!({
        "consecutive_failures": 3, "min_requests": 0, "open_seconds": 30
    })))
    .await;
    env.upstream(PAYMENT_SANDBOX).behave(Behavior::Status(503));
    for _ in 0..3 {
        let response = env.send(keyed()).await;
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(response.upstream().as_deref(), Some(PAYMENT_SANDBOX));
    }
    for _ in 0..10 {
        let response = env.send(keyed()).await;
        assert!(is_circuit_reply(&response), "{response:?}");
        let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
        assert!((29..=30).contains(&retry_after), "{response:?}");
        assert_eq!(
            response.body_text(),
            format!(
                "sandbox feature-x: circuit open after 3 consecutive failures; retry in {retry_after}s"
            )
        );
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 3);
    // Baseline traffic goes on.
    let response = env.send(TestRequest::get("payment", "/orders")).await;
    expect::answered_by(&response, PAYMENT_BASELINE);
    let records = env
        .audit_log()
        .wait_for_records(13, audit::DEFAULT_WAIT)
        .await;
    let open = records
        .iter()
        .filter(|r| r["sandbox_router"]["decision"] == "circuit_open")
        .count();
    assert_eq!(open, 10);
}

/// Each way a sandbox can fail trips its breaker (2 in a row).
#[tokio::test]
async fn every_kind_of_upstream_failure_counts() {
    for (what, behavior) in [
        ("5xx", Some(Behavior::Status(500))),
        ("reset after the headers", Some(Behavior::ResetAfterHeaders)),
        ("timeout", Some(Behavior::Hang(Duration::from_secs(2)))),
        ("connection refused", None),
    ] {
        let env = start(with_breaker(json!({
            "consecutive_failures": 2, "min_requests": 0, "open_seconds": 30
        })))
        .await;
        let upstream = env.upstream(PAYMENT_SANDBOX);
        match behavior {
            Some(behavior) => upstream.behave(behavior),
            None => upstream.refuse_connections(true).await,
        }
        for _ in 0..2 {
            let response = env.send(keyed()).await;
            assert!(!is_circuit_reply(&response), "{what}: {response:?}");
        }
        let response = env.send(keyed()).await;
        assert!(is_circuit_reply(&response), "{what}: {response:?}");
    }
}
