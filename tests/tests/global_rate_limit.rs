//! Mesh-wide sandbox budgets (issue 15): the sandbox-router, then Envoy's global rate limit
//! filter calling one RateLimitService (`integration_tests::ratelimit`: Limitador's in-memory
//! counters behind Envoy's gRPC API) shared by every proxy. The rate limit filter, its route
//! `rate_limits` and its cluster are those of the shipped `envoy-config/global-rate-limit.yaml`.
//!
//! The filter hands the key over in the request header `x-sandbox-key` (its `key_header`),
//! which it sets only for a registered, trusted, unexpired sandbox, after removing any copy a
//! client sent. Requests here carry the routing key (`x-sandbox`) and, where a test is about
//! the rate limit plumbing rather than the filter, also `x-sandbox-key` with the same key: the
//! filter replaces that copy with its own, equal one, so such requests mean the same whether or
//! not the filter sets the header itself. The tests of the filter's side of the contract send
//! no key header of their own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::expect;
use integration_tests::load::{self, Answer, Shot};
use integration_tests::ratelimit::{
    Limits, RateLimitService, ShippedRateLimit, KEY_HEADER, WINDOW,
};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, INVENTORY_BASELINE, KEY, LISTENER, PAYMENT_BASELINE,
    PAYMENT_SANDBOX,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};

/// The load tests run one at a time: they measure time, and the machine has two cores.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WORKERS: u32 = 2;

/// Envoy's counters of the rate limit filter, under the route's target cluster.
fn ratelimit_stat(cluster: &str, name: &str) -> String {
    format!("cluster.{cluster}.ratelimit.{name}")
}

/// The sandbox topology with the shipped global rate limit calling `service`.
async fn start(service: &RateLimitService, options: SandboxOptions) -> SandboxEnv {
    SandboxEnv::start_with(ShippedRateLimit::shipped().calling(service, options)).await
}

/// A request of sandbox `feature-x` as the plumbing tests send it (see the module doc).
fn keyed(authority: &str) -> TestRequest {
    TestRequest::get(authority, "/orders")
        .header("x-sandbox", KEY)
        .header(KEY_HEADER, KEY)
}

/// The request was refused by Envoy's rate limit filter: 429, `x-envoy-ratelimited`, and no
/// upstream answered.
fn globally_limited(response: &TestResponse) {
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(
        response.header("x-envoy-ratelimited").as_deref(),
        Some("true"),
        "{response:?}"
    );
    assert_eq!(response.upstream(), None, "{response:?}");
}

#[tokio::test]
async fn over_the_global_limit_envoy_answers_429_with_its_rate_limit_headers() {
    let service = RateLimitService::start(&Limits::new().sandbox(KEY, 2));
    let env = start(
        &service,
        SandboxOptions {
            audit_log: true,
            ..SandboxOptions::default()
        },
    )
    .await;
    let mut responses = Vec::new();
    for _ in 0..3 {
        responses.push(env.send(keyed("payment")).await);
    }
    for r in &responses {
        println!("{r:?}");
    }
    let grpc = env
        .send(
            TestRequest::grpc("payment", "/shop.Payment/Pay")
                .header("x-sandbox", KEY)
                .header(KEY_HEADER, KEY),
        )
        .await;
    println!("{grpc:?}");
    let records = env
        .audit_log()
        .wait_for_records(4, Duration::from_secs(10))
        .await;
    for r in &records {
        println!("{r}");
    }
    println!("{:?}", service.calls());
    globally_limited(&responses[2]);
}
