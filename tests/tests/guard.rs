//! The blast-radius guard (issue 3): every request carrying a registered sandbox's key spends
//! that sandbox's budget at this proxy — a token bucket and an in-flight cap, one budget per
//! proxy shared by all workers — rerouted or sent to the baseline. Unlisted keys and keyless
//! requests are never limited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use integration_tests::load::{self, Shot};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_SANDBOX, KEY, LISTENER,
    PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::upstream::{DELAY_HEADER, HOLD_HEADER};
use integration_tests::workers::{self, WorkerConnection};
use integration_tests::{audit, expect};
use integration_tests::{Connection, Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// The tests that measure time run one at a time, never next to the load of another: the
/// machine has two cores. Their times are Envoy's (audit log), not the client's.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STAT_DEADLINE: Duration = Duration::from_secs(10);
/// Envoy's gauge of requests in progress on the test listener.
const ACTIVE_REQUESTS: &str = "http.ingress.downstream_rq_active";

/// The default configuration with these fields set on sandbox `feature-x`.
fn sandbox_with(fields: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("an object of fields") {
        config["sandboxes"][KEY][name.as_str()] = value.clone();
    }
    config
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

/// Hammers `payment` with sandbox requests from `tasks_per_connection` tasks on each
/// connection, as fast as they go, for `duration`; keeps each answer's status and body.
async fn hammer(
    connections: &[Connection],
    tasks_per_connection: usize,
    duration: Duration,
) -> Vec<Shot<(u16, String)>> {
    load::hammer_reading(
        connections,
        tasks_per_connection,
        duration,
        || keyed("payment").timeout(Duration::from_secs(10)),
        |r| (r.status.as_u16(), r.body_text()),
    )
    .await
}

/// What Envoy saw of a run of requests, from the audit log (one line per keyed request, with
/// Envoy's start time): how long it lasted and the longest pause between two requests.
struct EnvoyTimeline {
    span: Duration,
    longest_gap: Duration,
}

impl EnvoyTimeline {
    fn of(lines: &[Value]) -> EnvoyTimeline {
        let mut times: Vec<SystemTime> = lines.iter().map(audit::start_time).collect();
        times.sort();
        let first = *times.first().expect("some requests");
        let last = *times.last().expect("some requests");
        let longest_gap = times
            .windows(2)
            .map(|pair| pair[1].duration_since(pair[0]).unwrap_or_default())
            .max()
            .unwrap_or_default();
        EnvoyTimeline {
            span: last.duration_since(first).unwrap_or_default(),
            longest_gap,
        }
    }

    /// The token bucket's prediction: `burst` plus what refills over the run. It holds while
    /// the bucket never overflows, i.e. no pause is as long as `burst / rate` (tokens earned
    /// during a shorter pause, a stalled machine's included, are all spent afterwards).
    fn admissions(&self, rate: f64, burst: u32, what: &str) -> f64 {
        assert!(
            self.longest_gap.as_secs_f64() < f64::from(burst) / rate,
            "{what}: Envoy saw no request for {:?}, long enough for the bucket to overflow",
            self.longest_gap
        );
        f64::from(burst) + rate * self.span.as_secs_f64()
    }
}

async fn rate_limit_holds_across_workers(workers: u32) {
    const RATE: f64 = 20.0;
    /// Three seconds of refill: a stall of a second cannot overflow the bucket.
    const BURST: u32 = 60;
    let _serial = LOAD.lock().await;
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({
            "rate_limit": { "requests_per_second": RATE, "burst": BURST }
        }))),
        concurrency: workers,
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await;
    let connections = load::connections_on_every_worker(&env.envoy, LISTENER, workers).await;
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
    let lines = env
        .audit_log()
        .wait_for_records(shots.len(), STAT_DEADLINE)
        .await;
    let timeline = EnvoyTimeline::of(&lines);
    let accepted = by_outcome.get("accepted").copied().unwrap_or(0);
    let limited = by_outcome.get("rate_limited").copied().unwrap_or(0);
    let expected = timeline.admissions(RATE, BURST, &format!("--concurrency {workers}"));
    println!(
        "--concurrency {workers}: {} connections, {} requests over {:.3} s on Envoy's clock \
         (longest pause {:?}): accepted {accepted}, expected {expected:.1} (burst {BURST} + \
         {RATE}/s × {:.3} s); outcomes {by_outcome:?}",
        connections.len(),
        shots.len(),
        timeline.span.as_secs_f64(),
        timeline.longest_gap,
        timeline.span.as_secs_f64(),
    );
    // Over the limit all along: the bucket ends empty, so nothing earned is left unspent.
    assert!(
        limited >= accepted,
        "the load ({} requests) was not well above the limit ({expected:.0})",
        shots.len()
    );
    // Whole tokens only: at most one earned token is not yet a request.
    assert!(
        (expected - 1.0..=expected + 1.0).contains(&(accepted as f64)),
        "--concurrency {workers}: accepted {accepted}, expected {expected:.1} ± 1 \
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
    const RATE: f64 = 2.5;
    /// Two seconds of refill: a stall of a second cannot overflow the bucket.
    const BURST: u32 = 5;
    let _serial = LOAD.lock().await;
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({
            "rate_limit": { "requests_per_second": RATE, "burst": BURST }
        }))),
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let started = Instant::now();
    let (mut accepted, mut limited, mut sent) = (0u32, 0u32, 0usize);
    let mut limited_body = String::new();
    while started.elapsed() < Duration::from_secs(3) {
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
    let lines = env.audit_log().wait_for_records(sent, STAT_DEADLINE).await;
    let timeline = EnvoyTimeline::of(&lines);
    let expected = timeline.admissions(RATE, BURST, "rate 2.5/s");
    println!(
        "rate {RATE}/s burst {BURST}: {sent} requests over {:.3} s on Envoy's clock, \
         accepted {accepted}, expected {expected:.2}",
        timeline.span.as_secs_f64()
    );
    assert!(
        (f64::from(accepted) - expected).abs() <= 1.0,
        "accepted {accepted} of {sent}, expected {expected:.2} ± 1"
    );
    assert!(limited > accepted, "the load was not above the limit");
    assert!(
        limited_body.starts_with(
            "sandbox feature-x: rate limit exceeded (2.5 requests/s, burst 5); retry in "
        ),
        "{limited_body:?}"
    );
}

// ---- what a rejected (and an admitted) request looks like ----

/// Whole seconds until a bucket of `rate` holding `micro_tokens` holds `wanted` micro-tokens,
/// as the filter computes `retry-after` and `x-ratelimit-reset`.
fn seconds_to_earn(wanted: u64, micro_tokens: u64, rate: f64) -> u64 {
    let micro_per_second = (rate * 1e6).round() as u64;
    wanted
        .saturating_sub(micro_tokens)
        .div_ceil(micro_per_second)
}

#[tokio::test]
async fn over_budget_requests_get_429_with_rate_limit_headers() {
    /// One token every 10 s: no stall of the machine refills one during the test.
    const RATE: f64 = 0.1;
    const MICRO: u64 = 1_000_000;
    let _serial = LOAD.lock().await;
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({
            "rate_limit": { "requests_per_second": RATE, "burst": 2 }
        }))),
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let mut responses = Vec::new();
    for _ in 0..3 {
        responses.push(connection.send(keyed("payment")).await.expect("request"));
    }
    // What the bucket held at each request follows from Envoy's clock: full (2 tokens) at the
    // first, then refilled at RATE since then.
    let lines = env.audit_log().wait_for_records(3, STAT_DEADLINE).await;
    let first = audit::start_time(&lines[0]);
    let earned = |line: &Value| {
        let since_first = audit::start_time(line)
            .duration_since(first)
            .unwrap_or_default();
        (since_first.as_secs_f64() * RATE * 1e6) as u64
    };
    // Tokens left after each admitted request, in micro-tokens.
    let left = [MICRO, earned(&lines[1])];
    for (i, remaining) in ["1", "0"].into_iter().enumerate() {
        let response = &responses[i];
        expect::routed_to(response, PAYMENT_SANDBOX);
        assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            response.header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(
            response.header("x-ratelimit-reset"),
            Some(seconds_to_earn(2 * MICRO, left[i], RATE).to_string()),
            "seconds until the bucket is full again: {response:?}"
        );
    }
    let response = &responses[2];
    let held = earned(&lines[2]);
    let retry_after = seconds_to_earn(MICRO, held, RATE).to_string();
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.upstream(), None);
    assert_eq!(
        response.header("retry-after"),
        Some(retry_after.clone()),
        "seconds until the next token: {response:?}"
    );
    assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        response.header("x-ratelimit-reset"),
        Some(seconds_to_earn(2 * MICRO, held, RATE).to_string()),
        "{response:?}"
    );
    assert_eq!(
        response.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    assert_eq!(
        response.body_text(),
        format!("sandbox feature-x: rate limit exceeded (0.1 requests/s, burst 2); retry in {retry_after}s")
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
        .header("grpc-message")
        .or_else(|| {
            response
                .trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
        .unwrap_or_else(|| panic!("no grpc-message: {response:?}"));
    assert!(message.contains("rate limit exceeded"), "{message:?}");
    assert_eq!(response.upstream(), None);
}

#[tokio::test]
async fn shadow_mode_rejects_nothing_and_counts_what_it_would_have_rejected() {
    let env = SandboxEnv::start_with_config(sandbox_with(json!({
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
    // The counter exists from the start, at 0.
    assert_eq!(
        stats.get("wasmcustom.sandbox_router.requests_total.decision.rate_limited"),
        Some(&0),
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
    let env = SandboxEnv::start_with_config(config).await;
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
    let env = SandboxEnv::start_with_config(sandbox_with(json!({
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
/// Envoy's per-request upstream timeout, honoured from a request header.
const UPSTREAM_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// Sends `requests` at once, each held by its upstream until released (see [`HOLD_HEADER`]):
/// every request but the `admitted` ones must come back with the in-flight 429 while the
/// admitted ones are held at `upstream`; then they are released and must all be answered 200.
/// No timing is involved: the admitted requests stay in progress as long as the test needs.
async fn exactly_admitted_while_held(
    env: &SandboxEnv,
    upstream: &str,
    requests: Vec<(TestRequest, Option<Connection>)>,
    admitted: usize,
    what: &str,
) {
    let upstream = env.upstream(upstream);
    let before = upstream.request_count();
    upstream.reset_peak();
    let total = requests.len();
    let addr = env.addr();
    let mut batch = JoinSet::new();
    for (request, connection) in requests {
        let request = request.header(HOLD_HEADER, "1");
        batch.spawn(async move {
            match connection {
                Some(mut connection) => connection.send(request).await,
                None => request.try_send(addr).await,
            }
        });
    }
    let mut capped = 0;
    while capped < total - admitted {
        let response = tokio::time::timeout(STAT_DEADLINE, batch.join_next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: {capped} of {total} requests answered within {STAT_DEADLINE:?}, \
                     expected {}; {} in progress at the upstream",
                    total - admitted,
                    upstream.in_progress()
                )
            })
            .expect("requests left")
            .expect("request task")
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        assert!(
            is_in_flight_limited(&response),
            "{what}: while {admitted} are held, the others get the in-flight 429: {response:?}"
        );
        assert_eq!(
            response.body_text(),
            format!("sandbox feature-x: in-flight limit exceeded (at most {MAX_IN_FLIGHT} requests in progress)")
        );
        assert_eq!(
            response.header("x-sandbox-router-limited").as_deref(),
            Some(KEY)
        );
        assert_eq!(response.header("retry-after").as_deref(), Some("1"));
        capped += 1;
    }
    wait_for(
        || upstream.in_progress() == admitted,
        &format!("{what}: the admitted requests reach the upstream"),
    )
    .await;
    assert_eq!(
        upstream.request_count() - before,
        admitted,
        "{what}: exactly the cap reached the upstream"
    );
    upstream.release_held();
    while let Some(response) = batch.join_next().await {
        let response = response
            .expect("request task")
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        expect::routed_to(&response, upstream.name());
    }
    assert_eq!(upstream.peak_in_progress(), admitted, "{what}: peak");
}

/// Waits until Envoy has finished every request (their filter contexts are gone).
async fn wait_until_idle(env: &SandboxEnv) {
    env.envoy
        .wait_for_stat_eq(ACTIVE_REQUESTS, 0, STAT_DEADLINE)
        .await;
}

/// One more than the cap to the sandbox upstream, held there: exactly `MAX_IN_FLIGHT` are
/// admitted, the extra one gets the in-flight 429. Fails if a slot leaked (fewer admitted) or
/// was released twice (more admitted).
async fn exactly_the_cap_is_admitted(env: &SandboxEnv, after: &str) {
    wait_until_idle(env).await;
    let requests = (0..=MAX_IN_FLIGHT)
        .map(|_| (keyed("payment"), None))
        .collect();
    exactly_admitted_while_held(
        env,
        PAYMENT_SANDBOX,
        requests,
        MAX_IN_FLIGHT,
        &format!("after {after}"),
    )
    .await;
}

#[tokio::test]
async fn in_flight_cap_admits_at_most_n_and_every_ending_returns_the_slot() {
    let env =
        SandboxEnv::start_with_config(sandbox_with(json!({ "max_in_flight": MAX_IN_FLIGHT })))
            .await;

    // N + 3 at once, held at the sandbox: N get through, 3 are refused.
    let requests = (0..MAX_IN_FLIGHT + 3)
        .map(|_| (keyed("payment"), None))
        .collect();
    exactly_admitted_while_held(
        &env,
        PAYMENT_SANDBOX,
        requests,
        MAX_IN_FLIGHT,
        "N + 3 at once",
    )
    .await;
    exactly_the_cap_is_admitted(&env, "normal completion and 429 replies").await;

    // Clients that hang up mid-request (HTTP/1.1: the connection closes). These go to a
    // baseline service: keyed baseline requests hold slots too.
    let catalog = env.upstream(CATALOG_BASELINE);
    let mut abandoned = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let request = keyed("catalog").header(DELAY_HEADER, "30000");
        abandoned.push(request.send_and_abandon(env.addr()).await.expect("send"));
    }
    wait_for(
        || catalog.in_progress() == MAX_IN_FLIGHT,
        "the held requests reach catalog",
    )
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
    wait_for(
        || default_upstream.in_progress() == MAX_IN_FLIGHT,
        "the held streams reach the default upstream",
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

    // Upstream timeouts: Envoy gives up (504) long before the upstream answers.
    let addr = env.addr();
    let mut batch = JoinSet::new();
    for _ in 0..MAX_IN_FLIGHT {
        let request = keyed("inventory")
            .header(HOLD_HEADER, "1")
            .header(UPSTREAM_TIMEOUT_HEADER, "200");
        batch.spawn(async move { request.send(addr).await });
    }
    while let Some(response) = batch.join_next().await {
        let response = response.expect("request task");
        assert_eq!(response.status, 504, "{response:?}");
    }
    assert_eq!(
        env.upstream(INVENTORY_SANDBOX).request_count(),
        MAX_IN_FLIGHT
    );
    exactly_the_cap_is_admitted(&env, "upstream timeouts").await;
}

/// With `max_in_flight: N` and 2N requests held open at once, spread evenly over every worker
/// (each worker serves as many as N when there are two), exactly N reach the upstream and N get
/// the in-flight 429: one budget per proxy, not per worker.
async fn in_flight_cap_is_one_budget_across(workers: u32) {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(sandbox_with(json!({ "max_in_flight": MAX_IN_FLIGHT }))),
        concurrency: workers,
        ..SandboxOptions::default()
    })
    .await;
    let connections =
        workers::connections_on_every_worker(&env.envoy, LISTENER, workers, 1, Protocol::H2c).await;
    let requests_per_worker = 2 * MAX_IN_FLIGHT / workers as usize;
    let requests = connections
        .iter()
        .flat_map(|WorkerConnection { connection, .. }| {
            (0..requests_per_worker).map(move |_| {
                let stream = connection.share().expect("h2c connections can be shared");
                (keyed("payment"), Some(stream))
            })
        })
        .collect::<Vec<_>>();
    assert_eq!(requests.len(), 2 * MAX_IN_FLIGHT);
    exactly_admitted_while_held(
        &env,
        PAYMENT_SANDBOX,
        requests,
        MAX_IN_FLIGHT,
        &format!("--concurrency {workers}"),
    )
    .await;
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.in_flight_rejected",
            MAX_IN_FLIGHT as u64,
            STAT_DEADLINE,
        )
        .await;
    // Every slot came back, whichever worker took it.
    exactly_the_cap_is_admitted(&env, "a batch across workers").await;
}

#[tokio::test]
async fn in_flight_cap_is_one_budget_across_two_workers() {
    in_flight_cap_is_one_budget_across(2).await;
}

#[tokio::test]
async fn in_flight_cap_is_one_budget_across_four_workers() {
    in_flight_cap_is_one_budget_across(4).await;
}

/// Polls a condition on in-process state (an upstream's counters) until it holds.
async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + STAT_DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
