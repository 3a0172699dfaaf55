//! The per-sandbox circuit breaker (issue 14): a sandbox whose requests keep failing is
//! contained. Its upstream fails on command; while the circuit is open, the filter answers 503
//! itself and nothing reaches the upstream; after `open_seconds` exactly `half_open_requests`
//! probes go through, across every worker; baseline traffic and other sandboxes go on
//! throughout.

use std::time::{Duration, Instant};

use integration_tests::audit;
use integration_tests::expect::{self, Outcome, NO_KEY, NO_OVERRIDE};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, INVENTORY_SANDBOX, INVENTORY_SANDBOX_CLUSTER, KEY,
    PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::upstream::{Behavior, DELAY_HEADER};
use integration_tests::{wait, Connection, Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// The bystander: a second sandbox, with a breaker that trips on its first failure.
const OTHER_KEY: &str = "feature-y";
const STAT_DEADLINE: Duration = Duration::from_secs(10);
/// Envoy stamps a trip when the failing request's stream ends, which can be a moment after the
/// client read the answer; waiting out an open time starts after Envoy went idle, plus this.
const CLOCK_MARGIN: Duration = Duration::from_millis(100);
const CIRCUIT_HEADER: &str = "x-sandbox-router-circuit";
/// Audit records each bystander check writes (feature-y's two requests; keyless ones write none).
const BYSTANDER_RECORDS: usize = 2;

/// The default configuration with `breaker` on `feature-x`, and sandbox `feature-y` (inventory
/// in cluster mode, to the healthy `inventory-feature-x`) with a breaker of its own.
fn with_breaker(breaker: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["circuit_breaker"] = breaker;
    config["sandboxes"][OTHER_KEY] = json!({
        "routes": {
            "inventory.shop.svc.cluster.local": { "cluster": INVENTORY_SANDBOX_CLUSTER }
        },
        "circuit_breaker": { "consecutive_failures": 1, "min_requests": 0 }
    });
    config
}

/// Audit log and stats tags on; routes time out after 500 ms (the timeout failure kind).
fn options(config: Value) -> SandboxOptions {
    SandboxOptions {
        filter_config: Some(config),
        audit_log: true,
        stats_tags: true,
        route_timeout: Some(Duration::from_millis(500)),
        ..SandboxOptions::default()
    }
}

async fn start(config: Value) -> SandboxEnv {
    SandboxEnv::start_with(options(config)).await
}

fn keyed() -> TestRequest {
    TestRequest::get("payment", "/orders").header("baggage", "sandbox=feature-x")
}

fn trips_stat(key: &str) -> String {
    format!("wasmcustom.sandbox_router.circuit_opened.sandbox.{key}")
}

fn open_gauge(key: &str) -> String {
    format!("wasmcustom.sandbox_router.circuit_open.sandbox.{key}")
}

fn decision_stat(decision: &str) -> String {
    format!("wasmcustom.sandbox_router.requests_total.decision.{decision}")
}

fn sandbox_decision_stat(decision: &str, key: &str) -> String {
    format!("wasmcustom.sandbox_router.sandbox_requests.decision.{decision}.sandbox.{key}")
}

/// The `retry-after` of a refusal while an open time (or half-open round) of `open_s` runs
/// that started no earlier than `since`: exactly `open_s` when the answer came within a second
/// of `since`; on a slower run, no less than what can be left of it.
fn assert_retry_after(response: &TestResponse, open_s: u64, since: Instant) -> u64 {
    let elapsed = since.elapsed().as_secs_f64();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let least = ((open_s as f64 - elapsed).ceil().max(1.0)) as u64;
    let value: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {response:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("retry-after is not a number ({e}): {response:?}"));
    assert!(
        (least..=open_s).contains(&value),
        "retry-after {value}, expected {least}..={open_s} ({elapsed:.3}s after the trip)"
    );
    value
}

/// The filter's own 503 for an open circuit (nothing upstream answered), naming the sandbox
/// and `cause`; the open time is `open_s` and started no earlier than `since`.
fn assert_circuit_open(response: &TestResponse, cause: &str, open_s: u64, since: Instant) {
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.upstream(), None, "{response:?}");
    assert_eq!(
        response.header(CIRCUIT_HEADER).as_deref(),
        Some("open"),
        "{response:?}"
    );
    let retry_after = assert_retry_after(response, open_s, since);
    assert_eq!(
        response.body_text(),
        format!("sandbox feature-x: circuit open {cause}; retry in {retry_after}s")
    );
    assert_eq!(
        expect::decision(response),
        "rejected; key=feature-x; reason=circuit_open"
    );
}

/// The request reached the failing sandbox upstream, which answered `status`.
fn assert_upstream_answered(response: &TestResponse, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.upstream().as_deref(),
        Some(PAYMENT_SANDBOX),
        "{response:?}"
    );
    assert_eq!(response.header(CIRCUIT_HEADER), None, "{response:?}");
}

/// Baseline traffic and sandbox `feature-y` are served exactly as without `feature-x`'s
/// breaker, and `feature-y`'s own breaker never opened.
async fn assert_bystanders_unaffected(env: &SandboxEnv, phase: &str) {
    let other = |authority: &str| {
        TestRequest::get(authority, "/").header("baggage", &format!("sandbox={OTHER_KEY}"))
    };
    let cases = [
        (
            "keyless payment",
            TestRequest::get("payment", "/orders"),
            Outcome::Baseline {
                upstream: PAYMENT_BASELINE,
                reason: NO_KEY,
            },
        ),
        (
            "feature-y inventory",
            other("inventory"),
            Outcome::Routed {
                upstream: INVENTORY_SANDBOX,
            },
        ),
        (
            "feature-y payment",
            other("payment"),
            Outcome::Baseline {
                upstream: PAYMENT_BASELINE,
                reason: NO_OVERRIDE,
            },
        ),
    ];
    for (what, request, outcome) in cases {
        let response = env.send(request).await;
        expect::outcome(&format!("{phase}: {what}"), &response, outcome);
    }
    assert_eq!(
        env.envoy.stat(&open_gauge(OTHER_KEY)).await,
        Some(0),
        "{phase}: feature-y's breaker opened"
    );
}

/// Waits until Envoy has ended every stream (so every verdict is recorded), then returns when
/// that was: an open time that started with those streams is over `open` after it.
async fn idle_since(env: &SandboxEnv) -> Instant {
    env.wait_until_idle().await;
    Instant::now()
}

/// Waits out an open time of `open` that started before `since`. The breaker is driven by
/// the clock: half-open begins `open_seconds` after the trip, with nothing to poll for.
async fn wait_out(open: Duration, since: Instant) {
    tokio::time::sleep_until((since + open + CLOCK_MARGIN).into()).await;
}

#[tokio::test]
async fn consecutive_failures_open_the_circuit_and_while_open_nothing_reaches_the_upstream() {
    const OPEN_S: u64 = 30;
    const REFUSED_PAYMENT: usize = 60;
    const REFUSED_CATALOG: usize = 20;
    let env = start(with_breaker(json!({
        "consecutive_failures": 3, "min_requests": 0, "open_seconds": OPEN_S
    })))
    .await;
    // Both series exist from the start, at 0: Prometheus sees the first trip as an increase.
    assert_eq!(env.envoy.stat(&trips_stat(KEY)).await, Some(0));
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(0));
    assert_bystanders_unaffected(&env, "closed").await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.behave(Behavior::Status(503));
    let mut since = Instant::now();
    for _ in 0..3 {
        since = Instant::now();
        assert_upstream_answered(&env.send(keyed()).await, 503);
    }
    assert_bystanders_unaffected(&env, "tripped").await;

    // Open: every request of the sandbox is refused, to its own services and to baseline
    // services alike; none reaches an upstream.
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let catalog_before = env.upstream(CATALOG_BASELINE).request_count();
    for i in 0..REFUSED_PAYMENT + REFUSED_CATALOG {
        let request = if i < REFUSED_PAYMENT {
            keyed()
        } else {
            TestRequest::get("catalog", "/").header("baggage", "sandbox=feature-x")
        };
        let response = connection.send(request).await.expect("request");
        assert_circuit_open(&response, "after 3 consecutive failures", OPEN_S, since);
    }
    assert_eq!(upstream.request_count(), 3);
    assert_eq!(
        env.upstream(CATALOG_BASELINE).request_count(),
        catalog_before
    );
    assert_bystanders_unaffected(&env, "open").await;

    let refused = (REFUSED_PAYMENT + REFUSED_CATALOG) as u64;
    for (stat, value) in [
        (decision_stat("circuit_open"), refused),
        (sandbox_decision_stat("circuit_open", KEY), refused),
        (sandbox_decision_stat("routed", KEY), 3),
        (trips_stat(KEY), 1),
        (open_gauge(KEY), 1),
    ] {
        env.envoy
            .wait_for_stat_eq(&stat, value, STAT_DEADLINE)
            .await;
    }
    let records = env
        .audit_log()
        .wait_for_records(
            3 + REFUSED_PAYMENT + REFUSED_CATALOG + 3 * BYSTANDER_RECORDS,
            audit::DEFAULT_WAIT,
        )
        .await;
    let decisions: Vec<(String, String, u16)> = records
        .iter()
        .filter(|r| r["sandbox_router"]["key"] == KEY)
        .map(|r| {
            (
                r["sandbox_router"]["decision"].as_str().unwrap().to_owned(),
                r["sandbox_router"]["reason"].as_str().unwrap().to_owned(),
                u16::try_from(r["status"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut expected = vec![("routed".to_owned(), "override".to_owned(), 503); 3];
    expected.extend(vec![
        (
            "circuit_open".to_owned(),
            "sandbox_router_circuit_open".to_owned(),
            503
        );
        REFUSED_PAYMENT + REFUSED_CATALOG
    ]);
    assert_eq!(decisions, expected);
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
        let since = Instant::now();
        for _ in 0..2 {
            let response = env.send(keyed()).await;
            assert_eq!(
                response.header(CIRCUIT_HEADER),
                None,
                "{what}: {response:?}"
            );
        }
        let response = env.send(keyed()).await;
        assert_circuit_open(&response, "after 2 consecutive failures", 30, since);
        assert_bystanders_unaffected(&env, what).await;
    }
}

/// gRPC UNAVAILABLE is a failure whether the status comes in trailers or trailers-only; OK and
/// other codes (NOT_FOUND) are answers. The open circuit answers a gRPC call with UNAVAILABLE.
#[tokio::test]
async fn grpc_unavailable_trips_it_and_the_open_reply_is_grpc_unavailable() {
    for trailers_only in [false, true] {
        let what = if trailers_only {
            "trailers-only"
        } else {
            "in trailers"
        };
        let env = SandboxEnv::start_with(SandboxOptions {
            upstream_http2: true,
            ..options(with_breaker(json!({
                "consecutive_failures": 2, "min_requests": 0, "open_seconds": 30
            })))
        })
        .await;
        let call = || TestRequest::grpc("payment", "/shop.Payment/Pay").header("x-sandbox", KEY);
        let upstream = env.upstream(PAYMENT_SANDBOX);
        for (code, calls) in [(0, 3), (5, 3), (14, 2)] {
            upstream.behave(Behavior::GrpcStatus {
                code,
                trailers_only,
            });
            for _ in 0..calls {
                let response = env.send(call()).await;
                assert_eq!(
                    response.grpc_status(),
                    Some(code.to_string()),
                    "{what}: {response:?}"
                );
                assert_eq!(response.upstream().as_deref(), Some(PAYMENT_SANDBOX));
            }
        }
        let since = Instant::now();
        let response = env.send(call()).await;
        assert_eq!(response.status, 200, "{what}: {response:?}");
        assert_eq!(
            response.grpc_status().as_deref(),
            Some("14"),
            "{what}: {response:?}"
        );
        assert_eq!(response.upstream(), None, "{what}: {response:?}");
        assert_eq!(response.header(CIRCUIT_HEADER).as_deref(), Some("open"));
        let retry_after = assert_retry_after(&response, 30, since);
        assert_eq!(
            response.grpc_message(),
            Some(format!(
                "sandbox feature-x: circuit open after 2 consecutive failures; retry in {retry_after}s"
            )),
            "{what}: {response:?}"
        );
        assert_eq!(upstream.request_count(), 8, "{what}");
        assert_bystanders_unaffected(&env, what).await;
    }
}

/// With the consecutive trigger off, the ratio trigger trips on the request that brings the
/// window to `min_requests` verdicts or more with a failure share of `failure_ratio` or more:
/// here the 12th (6 of 12 failed), not the 10th (4 of 10), the 11th (5 of 11) or the 9th
/// (under `min_requests`), and not on 6 failures in a row.
#[tokio::test]
async fn the_ratio_trigger_alone_trips_at_exactly_the_configured_request() {
    let env = start(with_breaker(json!({
        "consecutive_failures": 0, "failure_ratio": 0.5, "min_requests": 10,
        "window_seconds": 60, "open_seconds": 30
    })))
    .await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let mut since = Instant::now();
    for n in 1..=12 {
        let fails = n > 6;
        upstream.behave(if fails {
            Behavior::Status(503)
        } else {
            Behavior::Echo
        });
        since = Instant::now();
        let response = connection.send(keyed()).await.expect("request");
        assert_upstream_answered(&response, if fails { 503 } else { 200 });
        if n == 6 {
            assert_bystanders_unaffected(&env, "6 successes").await;
        }
    }
    let response = connection.send(keyed()).await.expect("request");
    assert_circuit_open(&response, "after 6 of 12 requests failed in 60s", 30, since);
    assert_eq!(upstream.request_count(), 12);
    env.envoy
        .wait_for_stat_eq(&trips_stat(KEY), 1, STAT_DEADLINE)
        .await;
    assert_bystanders_unaffected(&env, "open").await;
}

/// Half-open admits exactly `half_open_requests` probes across all workers: the probes hang
/// at the upstream while many concurrent requests arrive on connections spread over every
/// worker; all but the probes get the half-open 503.
async fn half_open_admits_exactly_the_probes_across(workers: u32) {
    const PROBES: usize = 3;
    const OPEN_S: u64 = 5;
    const STREAMS_PER_CONNECTION: usize = 5;
    let env = SandboxEnv::start_with(SandboxOptions {
        concurrency: workers,
        route_timeout: Some(Duration::from_secs(120)),
        ..options(with_breaker(json!({
            "consecutive_failures": 2, "min_requests": 0,
            "open_seconds": OPEN_S, "half_open_requests": PROBES
        })))
    })
    .await;
    let connections = env.connections_on_every_worker(workers).await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.behave(Behavior::Status(503));
    let since = Instant::now();
    for _ in 0..2 {
        assert_upstream_answered(&env.send(keyed()).await, 503);
    }
    let tripped_by = idle_since(&env).await;
    let response = env.send(keyed()).await;
    assert_circuit_open(&response, "after 2 consecutive failures", OPEN_S, since);
    assert_bystanders_unaffected(&env, &format!("{workers} workers, open")).await;

    upstream.behave(Behavior::Hang(Duration::from_secs(60)));
    wait_out(Duration::from_secs(OPEN_S), tripped_by).await;
    let round_start = Instant::now();
    let mut burst = JoinSet::new();
    for connection in &connections {
        for _ in 0..STREAMS_PER_CONNECTION {
            let mut stream = connection.share().expect("h2c connections can be shared");
            burst.spawn(async move { stream.send(keyed()).await });
        }
    }
    let total = connections.len() * STREAMS_PER_CONNECTION;
    // Every request but the probes is answered at once; the probes hang.
    let mut refused = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while refused.len() < total - PROBES {
        match tokio::time::timeout_at(give_up, burst.join_next()).await {
            Ok(Some(done)) => refused.push(done.expect("request task").expect("response")),
            Ok(None) | Err(_) => break,
        }
    }
    wait::until("the probes reach the upstream", STAT_DEADLINE, || {
        upstream.in_progress() >= PROBES
    })
    .await;
    assert_eq!(
        (
            refused.len(),
            upstream.request_count(),
            upstream.in_progress()
        ),
        (total - PROBES, 2 + PROBES, PROBES),
        "{workers} workers, {} connections, {total} requests: (answered at once, reached the \
         upstream in all, hanging there)",
        connections.len()
    );
    for response in &refused {
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(response.upstream(), None, "{response:?}");
        assert_eq!(
            response.header(CIRCUIT_HEADER).as_deref(),
            Some("half-open"),
            "{response:?}"
        );
        let retry_after = assert_retry_after(response, OPEN_S, round_start);
        assert_eq!(
            response.body_text(),
            format!(
                "sandbox feature-x: circuit half-open, probing after 2 consecutive failures; \
                 retry in {retry_after}s"
            )
        );
    }
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(1));
    assert_bystanders_unaffected(&env, &format!("{workers} workers, half-open")).await;
    burst.abort_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_the_probes_across_two_workers() {
    half_open_admits_exactly_the_probes_across(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_the_probes_across_four_workers() {
    half_open_admits_exactly_the_probes_across(4).await;
}

/// Each failed probe opens the circuit again for twice as long, up to `max_open_seconds`; a
/// successful round closes it, and the next trip starts over from `open_seconds`.
#[tokio::test]
async fn a_failed_probe_doubles_the_open_time_up_to_the_cap_and_recovery_closes_it() {
    let env = start(with_breaker(json!({
        "consecutive_failures": 1, "min_requests": 0, "open_seconds": 1,
        "max_open_seconds": 4, "half_open_requests": 1
    })))
    .await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.behave(Behavior::Status(503));
    let since = Instant::now();
    assert_upstream_answered(&env.send(keyed()).await, 503);
    let mut tripped_by = idle_since(&env).await;
    assert_circuit_open(&env.send(keyed()).await, "after 1 failure", 1, since);
    let mut open_s = 1;
    for doubled in [2, 4, 4] {
        wait_out(Duration::from_secs(open_s), tripped_by).await;
        let since = Instant::now();
        assert_upstream_answered(&env.send(keyed()).await, 503);
        tripped_by = idle_since(&env).await;
        assert_circuit_open(
            &env.send(keyed()).await,
            "again after a half-open probe failed",
            doubled,
            since,
        );
        assert_bystanders_unaffected(&env, &format!("open for {doubled}s")).await;
        open_s = doubled;
    }
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(1));

    upstream.behave(Behavior::Echo);
    wait_out(Duration::from_secs(open_s), tripped_by).await;
    expect::routed_to(&env.send(keyed()).await, PAYMENT_SANDBOX);
    env.wait_until_idle().await;
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(0));
    for _ in 0..5 {
        expect::routed_to(&env.send(keyed()).await, PAYMENT_SANDBOX);
    }
    assert_bystanders_unaffected(&env, "closed again").await;

    upstream.behave(Behavior::Status(503));
    let since = Instant::now();
    assert_upstream_answered(&env.send(keyed()).await, 503);
    assert_circuit_open(&env.send(keyed()).await, "after 1 failure", 1, since);
    assert_eq!(upstream.request_count(), 1 + 3 + 1 + 5 + 1);
    env.envoy
        .wait_for_stat_eq(&trips_stat(KEY), 5, STAT_DEADLINE)
        .await;
}

/// In shadow mode an open circuit refuses nothing: the requests go on to the sandbox, and the
/// audit log and the counters record what would have been refused.
#[tokio::test]
async fn shadow_mode_lets_requests_through_an_open_circuit_and_records_them() {
    const SHADOWED: usize = 5;
    let mut config = with_breaker(json!({
        "consecutive_failures": 2, "min_requests": 0, "open_seconds": 30
    }));
    config["sandboxes"][KEY]["enforce"] = json!(false);
    let env = start(config).await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.behave(Behavior::Status(503));
    for _ in 0..2 {
        assert_upstream_answered(&env.send(keyed()).await, 503);
    }
    env.envoy
        .wait_for_stat_eq(&trips_stat(KEY), 1, STAT_DEADLINE)
        .await;
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(1));
    upstream.behave(Behavior::Echo);
    for _ in 0..SHADOWED {
        let response = env.send(keyed()).await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(response.header(CIRCUIT_HEADER), None, "{response:?}");
    }
    assert_eq!(upstream.request_count(), 2 + SHADOWED);
    assert_bystanders_unaffected(&env, "shadow, open").await;

    for (stat, value) in [
        (decision_stat("shadow_rejected"), SHADOWED as u64),
        (
            sandbox_decision_stat("shadow_rejected", KEY),
            SHADOWED as u64,
        ),
        (sandbox_decision_stat("routed", KEY), 2),
    ] {
        env.envoy
            .wait_for_stat_eq(&stat, value, STAT_DEADLINE)
            .await;
    }
    // Nothing was refused (the total exists from the start, at 0).
    assert_eq!(
        env.envoy.stat(&decision_stat("circuit_open")).await,
        Some(0)
    );
    let records = env
        .audit_log()
        .wait_for_records(2 + SHADOWED + BYSTANDER_RECORDS, audit::DEFAULT_WAIT)
        .await;
    let decisions: Vec<(String, String, u64)> = records
        .iter()
        .filter(|r| r["sandbox_router"]["key"] == KEY)
        .map(|r| {
            (
                r["sandbox_router"]["decision"].as_str().unwrap().to_owned(),
                r["sandbox_router"]["reason"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![("routed".to_owned(), "override".to_owned(), 503); 2];
    expected.extend(vec![
        (
            "shadow_rejected".to_owned(),
            "sandbox_router_circuit_open_in_shadow_mode".to_owned(),
            200
        );
        SHADOWED
    ]);
    assert_eq!(decisions, expected);
}

/// 4xx answers, clients that hang up (HTTP/1.1 connection closed, HTTP/2 stream reset) are
/// neither failures nor successes: after one failure, 4xx answers reset the count, and
/// cancellations leave it alone, so the second failure after them trips.
#[tokio::test]
async fn client_errors_and_cancellations_are_not_failures() {
    const CANCELLED: usize = 3;
    let env = SandboxEnv::start_with(SandboxOptions {
        route_timeout: Some(Duration::from_secs(60)),
        ..options(with_breaker(json!({
            "consecutive_failures": 2, "min_requests": 0, "open_seconds": 30
        })))
    })
    .await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.behave(Behavior::Status(404));
    for _ in 0..4 {
        assert_upstream_answered(&env.send(keyed()).await, 404);
    }
    upstream.behave(Behavior::Status(503));
    assert_upstream_answered(&env.send(keyed()).await, 503);

    // Requests the upstream holds (it would answer 503 after 30 s), given up by the client.
    let held = keyed().header(DELAY_HEADER, "30000");
    let mut abandoned = Vec::new();
    for _ in 0..CANCELLED {
        abandoned.push(
            held.clone()
                .send_and_abandon(env.addr())
                .await
                .expect("send"),
        );
    }
    let h2 = Connection::open(env.addr(), Protocol::H2c, None)
        .await
        .expect("connect");
    let mut streams = JoinSet::new();
    for _ in 0..CANCELLED {
        let mut stream = h2.share().expect("h2c");
        let request = held.clone();
        streams.spawn(async move { stream.send(request).await });
    }
    wait::until(
        "the held requests reach the upstream",
        STAT_DEADLINE,
        || upstream.request_count() == 5 + 2 * CANCELLED,
    )
    .await;
    drop(abandoned);
    streams.abort_all();
    while streams.join_next().await.is_some() {}
    env.wait_until_idle().await;
    assert_bystanders_unaffected(&env, "after cancellations").await;

    // Still closed, one failure counted: the next failure trips it.
    let since = Instant::now();
    assert_upstream_answered(&env.send(keyed()).await, 503);
    assert_circuit_open(
        &env.send(keyed()).await,
        "after 2 consecutive failures",
        30,
        since,
    );
    env.envoy
        .wait_for_stat_eq(&trips_stat(KEY), 1, STAT_DEADLINE)
        .await;
}

/// The filter's own 429s (the sandbox over its rate limit) are not failures: after one real
/// failure, refusal after refusal stays a 429 instead of opening the circuit.
#[tokio::test]
async fn the_filters_own_rate_limit_replies_are_not_failures() {
    const LIMITED: u64 = 10;
    let mut config = with_breaker(json!({
        "consecutive_failures": 2, "min_requests": 0, "open_seconds": 30
    }));
    config["sandboxes"][KEY]["rate_limit"] = json!({ "requests_per_second": 0.01, "burst": 1 });
    let env = start(config).await;
    env.upstream(PAYMENT_SANDBOX).behave(Behavior::Status(503));
    assert_upstream_answered(&env.send(keyed()).await, 503);
    for _ in 0..LIMITED {
        let response = env.send(keyed()).await;
        assert_eq!(response.status, 429, "{response:?}");
        assert_eq!(
            response.header("x-sandbox-router-limited").as_deref(),
            Some(KEY)
        );
        assert_eq!(response.header(CIRCUIT_HEADER), None, "{response:?}");
    }
    assert_bystanders_unaffected(&env, "rate limited").await;
    // The trip counter is flushed with the decisions that came after it.
    env.envoy
        .wait_for_stat_eq(
            &sandbox_decision_stat("rate_limited", KEY),
            LIMITED,
            STAT_DEADLINE,
        )
        .await;
    assert_eq!(env.envoy.stat(&trips_stat(KEY)).await, Some(0));
    assert_eq!(env.envoy.stat(&open_gauge(KEY)).await, Some(0));
}
