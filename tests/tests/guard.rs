//! The blast-radius guard (issue 3): every request carrying a registered sandbox's key spends
//! that sandbox's budget at this proxy — a token bucket and an in-flight cap, one budget per
//! proxy shared by all workers — rerouted or sent to the baseline. Unlisted keys and keyless
//! requests are never limited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_SANDBOX, KEY,
    PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::upstream::DELAY_HEADER;
use integration_tests::{expect, wait};
use integration_tests::{Connection, Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// The load tests run one at a time: they measure time, and the machine has two cores.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STAT_DEADLINE: Duration = Duration::from_secs(10);

/// The default configuration with these fields set on sandbox `feature-x`.
fn sandbox_with(fields: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("an object of fields") {
        config["sandboxes"][KEY][name.as_str()] = value.clone();
    }
    config
}

async fn start(config: Value) -> SandboxEnv {
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        ..SandboxOptions::default()
    })
    .await
}

fn keyed(authority: &str) -> TestRequest {
    TestRequest::get(authority, "/orders").header("baggage", "sandbox=feature-x")
}

fn is_rate_limited(response: &TestResponse) -> bool {
    response.status == 429 && response.body_text().contains("rate limit exceeded")
}

fn is_in_flight_limited(response: &TestResponse) -> bool {
    response.status == 429 && response.body_text().contains("in-flight limit exceeded")
}

// ---- token bucket accuracy under load ----

/// One request of the load: when it was sent and what came back.
struct Shot {
    sent_at: Instant,
    outcome: Result<(u16, String), String>,
}

/// Hammers `payment` with sandbox requests from `tasks_per_connection` tasks on each
/// connection, as fast as they go, for `duration`.
async fn hammer(
    connections: &[Connection],
    tasks_per_connection: usize,
    duration: Duration,
) -> Vec<Shot> {
    let deadline = Instant::now() + duration;
    let mut tasks = JoinSet::new();
    for connection in connections {
        for _ in 0..tasks_per_connection {
            let mut connection = connection.share().expect("h2c connections can be shared");
            tasks.spawn(async move {
                let mut shots = Vec::new();
                while Instant::now() < deadline {
                    let sent_at = Instant::now();
                    let outcome = connection
                        .send(keyed("payment").timeout(Duration::from_secs(10)))
                        .await
                        .map(|r| (r.status.as_u16(), r.body_text()));
                    let failed = outcome.is_err();
                    shots.push(Shot { sent_at, outcome });
                    if failed {
                        break;
                    }
                }
                shots
            });
        }
    }
    let mut shots = Vec::new();
    while let Some(done) = tasks.join_next().await {
        shots.extend(done.expect("load task"));
    }
    shots
}

async fn rate_limit_holds_across_workers(workers: u32) {
    const RATE: f64 = 20.0;
    const BURST: u32 = 20;
    let _serial = LOAD.lock().await;
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({
            "rate_limit": { "requests_per_second": RATE, "burst": BURST }
        }))),
        concurrency: workers,
        ..SandboxOptions::default()
    })
    .await;
    let connections = env.connections_on_every_worker(workers).await;
    let shots = hammer(&connections, 4, Duration::from_secs(3)).await;

    let errors: Vec<&String> = shots
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(errors.is_empty(), "requests failed: {errors:?}");
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for shot in &shots {
        let (status, body) = shot.outcome.as_ref().expect("checked above");
        let kind = match status {
            200 => "accepted".to_owned(),
            429 if body.contains("rate limit exceeded") => "rate_limited".to_owned(),
            429 if body.contains("budget unavailable") => "budget_unavailable".to_owned(),
            other => format!("{other}: {body}"),
        };
        *by_outcome.entry(kind).or_default() += 1;
    }
    let first = shots
        .iter()
        .map(|s| s.sent_at)
        .min()
        .expect("some requests");
    let last = shots
        .iter()
        .map(|s| s.sent_at)
        .max()
        .expect("some requests");
    let elapsed = last.duration_since(first).as_secs_f64();
    let accepted = by_outcome.get("accepted").copied().unwrap_or(0);
    let expected = f64::from(BURST) + RATE * elapsed;
    let error = (accepted as f64 - expected) / expected;
    println!(
        "--concurrency {workers}: {} connections, {} requests in {elapsed:.3} s ({:.0}/s): \
         accepted {accepted}, expected {expected:.1} (burst {BURST} + {RATE}/s × {elapsed:.3} s), \
         error {:+.1}%; outcomes {by_outcome:?}",
        connections.len(),
        shots.len(),
        shots.len() as f64 / elapsed,
        error * 100.0
    );
    assert!(
        shots.len() as f64 >= 5.0 * expected,
        "the load ({} requests) was not far above the limit ({expected:.0})",
        shots.len()
    );
    assert!(
        error.abs() <= 0.10,
        "--concurrency {workers}: accepted {accepted}, expected {expected:.1} ± 10% \
         (outcomes {by_outcome:?})"
    );
    assert_eq!(
        env.upstream(PAYMENT_SANDBOX).request_count(),
        accepted,
        "only accepted requests reach the sandbox"
    );
    let unexpected: Vec<&String> = by_outcome
        .keys()
        .filter(|k| !["accepted", "rate_limited", "budget_unavailable"].contains(&k.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_accurate_with_one_worker() {
    rate_limit_holds_across_workers(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_one_budget_across_two_workers() {
    rate_limit_holds_across_workers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_one_budget_across_four_workers() {
    rate_limit_holds_across_workers(4).await;
}

#[tokio::test]
async fn fractional_rates_refill_at_the_configured_pace() {
    let _serial = LOAD.lock().await;
    let env = start(sandbox_with(json!({
        "rate_limit": { "requests_per_second": 2.5, "burst": 1 }
    })))
    .await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let started = Instant::now();
    let (mut accepted, mut limited, mut sent) = (0u32, 0u32, 0u32);
    let mut last_sent = started;
    let mut limited_body = String::new();
    while started.elapsed() < Duration::from_secs(2) {
        last_sent = Instant::now();
        let response = connection.send(keyed("payment")).await.expect("request");
        sent += 1;
        match response.status.as_u16() {
            200 => accepted += 1,
            429 => {
                limited += 1;
                limited_body = response.body_text();
            }
            other => panic!("unexpected {other}: {response:?}"),
        }
    }
    let elapsed = last_sent.duration_since(started).as_secs_f64();
    let expected = 1.0 + 2.5 * elapsed;
    println!("rate 2.5/s burst 1: {sent} requests in {elapsed:.3} s, accepted {accepted}, expected {expected:.2}");
    assert!(
        (f64::from(accepted) - expected).abs() <= 1.0,
        "accepted {accepted} of {sent}, expected {expected:.2}"
    );
    assert!(limited > 0);
    assert!(
        limited_body.starts_with(
            "sandbox feature-x: rate limit exceeded (2.5 requests/s, burst 1); retry in "
        ),
        "{limited_body:?}"
    );
}

// ---- what a rejected (and an admitted) request looks like ----

#[tokio::test]
async fn over_budget_requests_get_429_with_rate_limit_headers() {
    let env = start(sandbox_with(json!({
        "rate_limit": { "requests_per_second": 1, "burst": 2 }
    })))
    .await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    for remaining in ["1", "0"] {
        let response = connection.send(keyed("payment")).await.expect("request");
        expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            response.header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        let reset: u64 = response
            .header("x-ratelimit-reset")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no numeric x-ratelimit-reset: {response:?}"));
        assert!((1..=2).contains(&reset), "{response:?}");
    }
    let response = connection.send(keyed("payment")).await.expect("request");
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.upstream(), None);
    let retry_after = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {response:?}"));
    assert_eq!(retry_after, "1", "{response:?}");
    assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let reset: u64 = response
        .header("x-ratelimit-reset")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no numeric x-ratelimit-reset: {response:?}"));
    assert!((1..=2).contains(&reset), "{response:?}");
    assert_eq!(
        response.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    assert_eq!(
        response.body_text(),
        format!("sandbox feature-x: rate limit exceeded (1 requests/s, burst 2); retry in {retry_after}s")
    );
    // The same over HTTP/2.
    let response = env.send(keyed("payment").h2c()).await;
    assert!(is_rate_limited(&response), "{response:?}");
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 2);
}

#[tokio::test]
async fn over_budget_grpc_calls_get_resource_exhausted() {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({
            "rate_limit": { "requests_per_second": 0.01, "burst": 1 }
        }))),
        upstream_http2: true,
        ..SandboxOptions::default()
    })
    .await;
    let call = || TestRequest::grpc("payment", "/shop.Payment/Pay").header("x-sandbox", KEY);
    let response = env.send(call()).await;
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");
    assert_eq!(response.upstream().as_deref(), Some(PAYMENT_SANDBOX));
    let response = env.send(call()).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.grpc_status().as_deref(), Some("8"), "{response:?}");
    let message = response
        .grpc_message()
        .unwrap_or_else(|| panic!("no grpc-message: {response:?}"));
    assert!(message.contains("rate limit exceeded"), "{message:?}");
    assert_eq!(response.upstream(), None);
}

#[tokio::test]
async fn shadow_mode_rejects_nothing_and_counts_what_it_would_have_rejected() {
    let env = start(sandbox_with(json!({
        "rate_limit": { "requests_per_second": 0.01, "burst": 1 },
        "enforce": false
    })))
    .await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    for _ in 0..10 {
        let response = connection.send(keyed("payment")).await.expect("request");
        expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(response.header("x-sandbox-router-limited"), None);
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 10);
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.sandbox_requests.decision.shadow_rejected.sandbox.feature-x",
            9,
            STAT_DEADLINE,
        )
        .await;
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.shadow_rejected",
            9,
            STAT_DEADLINE,
        )
        .await;
    let stats = env.envoy.stats().await;
    assert_eq!(
        stats.get("wasmcustom.sandbox_router.requests_total.decision.rate_limited"),
        None,
        "nothing was rejected"
    );
}

#[tokio::test]
async fn keyless_and_unknown_key_requests_are_never_limited() {
    // A tiny default budget: every registered sandbox inherits it.
    let mut config = sandbox::default_filter_config();
    config["defaults"] = json!({
        "rate_limit": { "requests_per_second": 0.01, "burst": 1 },
        "max_in_flight": 1
    });
    let env = start(config).await;
    // Many at once, each held by the upstream for a while: no in-flight cap applies.
    let mut batch = JoinSet::new();
    let addr = env.addr();
    for i in 0..60 {
        let request = match i % 3 {
            0 => TestRequest::get("payment", "/"),
            1 => TestRequest::get("payment", "/").header("x-sandbox", &format!("made-up-{i}")),
            _ => TestRequest::get("payment", "/").header("x-sandbox", "not a key!"),
        }
        .header(DELAY_HEADER, "300");
        batch.spawn(async move { request.send(addr).await });
    }
    while let Some(response) = batch.join_next().await {
        let response = response.expect("request task");
        expect::answered_by(&response, PAYMENT_BASELINE);
    }
    // And fast, one after another.
    let mut connection = Connection::open(env.addr(), Protocol::H2c, None)
        .await
        .expect("connect");
    for i in 0..150 {
        let request = if i % 2 == 0 {
            TestRequest::get("catalog", "/")
        } else {
            TestRequest::post("catalog", "/").header("baggage", "sandbox=some-other-team")
        };
        let response = connection.send(request).await.expect("request");
        expect::answered_by(&response, CATALOG_BASELINE);
    }
    // The registered sandbox is limited by the same defaults.
    let response = env.send(keyed("payment")).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    let response = env.send(keyed("payment")).await;
    assert!(is_rate_limited(&response), "{response:?}");
}

#[tokio::test]
async fn keyed_requests_to_baseline_services_spend_the_budget() {
    let env = start(sandbox_with(json!({
        "rate_limit": { "requests_per_second": 0.01, "burst": 3 }
    })))
    .await;
    for (authority, upstream, remaining) in [
        ("catalog", CATALOG_BASELINE, "2"),
        ("some-other-service", DEFAULT_UPSTREAM, "1"),
    ] {
        let response = env.send(keyed(authority)).await;
        expect::baseline_at(&response, upstream, &[expect::NO_OVERRIDE]);
        assert_eq!(
            response.header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("3"));
    }
    let response = env.send(keyed("payment")).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    assert_eq!(
        response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    // The budget is spent, whichever service the next request is for.
    for authority in ["payment", "catalog", "inventory"] {
        let response = env.send(keyed(authority)).await;
        assert!(is_rate_limited(&response), "{authority}: {response:?}");
    }
    assert_eq!(env.upstream(CATALOG_BASELINE).request_count(), 1);
}

// ---- the in-flight cap ----

const MAX_IN_FLIGHT: usize = 4;
/// How long the upstream holds each request of a batch: every request of the batch must reach
/// Envoy within this time (margin for a busy two-core machine).
const BATCH_HOLD_MS: u64 = 1500;
/// The route timeout of the in-flight test (longer than a batch's hold).
const ROUTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `count` keyed requests at once (one connection each) that the upstream holds for
/// `hold_ms`; returns the responses.
async fn concurrent_batch(
    env: &SandboxEnv,
    authority: &str,
    count: usize,
    hold_ms: u64,
) -> Vec<TestResponse> {
    let addr = env.addr();
    let mut batch = JoinSet::new();
    for _ in 0..count {
        let request = keyed(authority).header(DELAY_HEADER, &hold_ms.to_string());
        batch.spawn(async move { request.send(addr).await });
    }
    let mut responses = Vec::new();
    while let Some(response) = batch.join_next().await {
        responses.push(response.expect("request task"));
    }
    responses
}

/// A batch of one more than the cap to the slow sandbox upstream: exactly `MAX_IN_FLIGHT`
/// are admitted (all of them reaching the upstream at once), the extra one gets the in-flight
/// 429. Fails if a slot leaked (fewer admitted) or was released twice (more admitted).
async fn exactly_the_cap_is_admitted(env: &SandboxEnv, after: &str) {
    env.wait_until_idle().await;
    let upstream = env.upstream(PAYMENT_SANDBOX);
    upstream.reset_peak();
    let responses = concurrent_batch(env, "payment", MAX_IN_FLIGHT + 1, BATCH_HOLD_MS).await;
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    let capped: Vec<&TestResponse> = responses
        .iter()
        .filter(|r| is_in_flight_limited(r))
        .collect();
    assert_eq!(
        (admitted, capped.len()),
        (MAX_IN_FLIGHT, 1),
        "after {after}: {responses:#?}"
    );
    assert_eq!(
        upstream.peak_in_progress(),
        MAX_IN_FLIGHT,
        "after {after}: the upstream's peak concurrency"
    );
}

#[tokio::test]
async fn in_flight_cap_admits_at_most_n_and_every_ending_returns_the_slot() {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({ "max_in_flight": MAX_IN_FLIGHT }))),
        route_timeout: Some(ROUTE_TIMEOUT),
        ..SandboxOptions::default()
    })
    .await;

    // N + 3 at once against a slow upstream: N get through, 3 are refused.
    let responses = concurrent_batch(&env, "payment", MAX_IN_FLIGHT + 3, BATCH_HOLD_MS).await;
    let admitted: Vec<&TestResponse> = responses.iter().filter(|r| r.status == 200).collect();
    let capped: Vec<&TestResponse> = responses
        .iter()
        .filter(|r| is_in_flight_limited(r))
        .collect();
    assert_eq!(
        (admitted.len(), capped.len()),
        (MAX_IN_FLIGHT, 3),
        "{responses:#?}"
    );
    assert_eq!(
        env.upstream(PAYMENT_SANDBOX).peak_in_progress(),
        MAX_IN_FLIGHT
    );
    for response in admitted {
        expect::routed_to(response, PAYMENT_SANDBOX);
    }
    for response in capped {
        assert_eq!(
            response.body_text(),
            format!("sandbox feature-x: in-flight limit exceeded (at most {MAX_IN_FLIGHT} requests in progress)")
        );
        assert_eq!(
            response.header("x-sandbox-router-limited").as_deref(),
            Some(KEY)
        );
        assert!(response.header("retry-after").is_some(), "{response:?}");
    }
    exactly_the_cap_is_admitted(&env, "normal completion and 429 replies").await;

    // Clients that hang up mid-request (HTTP/1.1: the connection closes). These go to a
    // baseline service: keyed baseline requests hold slots too.
    let catalog = env.upstream(CATALOG_BASELINE);
    let mut abandoned = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let request = keyed("catalog").header(DELAY_HEADER, "30000");
        abandoned.push(request.send_and_abandon(env.addr()).await.expect("send"));
    }
    wait::until("the held requests reach catalog", STAT_DEADLINE, || {
        catalog.in_progress() == MAX_IN_FLIGHT
    })
    .await;
    let response = env.send(keyed("payment")).await;
    assert!(
        is_in_flight_limited(&response),
        "the slots are held: {response:?}"
    );
    let response = env
        .send(TestRequest::grpc("payment", "/shop.Payment/Pay").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.grpc_status().as_deref(), Some("8"), "{response:?}");
    drop(abandoned);
    exactly_the_cap_is_admitted(&env, "client disconnects").await;

    // HTTP/2 stream resets (the connection stays open).
    let before_resets = env
        .envoy
        .stat("http.ingress.downstream_rq_rx_reset")
        .await
        .unwrap_or(0);
    let connection = Connection::open(env.addr(), Protocol::H2c, None)
        .await
        .expect("connect");
    let default_upstream = env.upstream(DEFAULT_UPSTREAM);
    let mut streams = JoinSet::new();
    for _ in 0..MAX_IN_FLIGHT {
        let mut stream = connection.share().expect("h2c");
        streams.spawn(async move {
            stream
                .send(keyed("some-other-service").header(DELAY_HEADER, "30000"))
                .await
        });
    }
    wait::until(
        "the held streams reach the default upstream",
        STAT_DEADLINE,
        || default_upstream.in_progress() == MAX_IN_FLIGHT,
    )
    .await;
    streams.abort_all();
    while streams.join_next().await.is_some() {}
    env.envoy
        .wait_for_stat("http.ingress.downstream_rq_rx_reset", STAT_DEADLINE, |v| {
            v.unwrap_or(0) >= before_resets + MAX_IN_FLIGHT as u64
        })
        .await;
    exactly_the_cap_is_admitted(&env, "h2 stream resets").await;
    drop(connection);

    // Upstream timeouts: the route gives up (504) long before the upstream answers.
    let responses = concurrent_batch(&env, "inventory", MAX_IN_FLIGHT, 30_000).await;
    for response in &responses {
        assert_eq!(response.status, 504, "{response:?}");
    }
    assert_eq!(
        env.upstream(INVENTORY_SANDBOX).request_count(),
        MAX_IN_FLIGHT
    );
    exactly_the_cap_is_admitted(&env, "upstream timeouts").await;
}
