//! Mesh-wide sandbox budgets (issue 15): the sandbox-router, then Envoy's global rate limit
//! filter calling one RateLimitService (`integration_tests::ratelimit`: Limitador's in-memory
//! counters behind Envoy's gRPC API) shared by every proxy. The rate limit filter, its route
//! `rate_limits` and its cluster are those of the shipped `envoy-config/global-rate-limit.yaml`.
//!
//! The filter hands the key over in the request header `x-sandbox-key` (its `key_header`),
//! which it sets only for a registered, trusted, unexpired sandbox, after removing any copy a
//! client sent. Requests of the rate limit tests carry the routing key (`x-sandbox`) and also
//! `x-sandbox-key` with the same key: the filter replaces that copy with its own, equal one, so
//! these requests mean the same whether the header reaches the rate limit filter from the
//! client or from the filter. The tests of the filter's side of that contract
//! (`a_key_header_forged_by_a_client_…`, `only_a_registered_trusted_unexpired_key_…`) send no
//! key header of their own but forged ones.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use integration_tests::expect::{self, lacks_header};
use integration_tests::load::{self, Answer, Shot};
use integration_tests::ratelimit::{
    Limits, RateLimitService, ShippedRateLimit, KEY_HEADER, WINDOW,
};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_BASELINE, KEY, LISTENER,
    PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::json;

/// The load tests run one at a time: they measure time, and the machine has two cores.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Workers of each Envoy.
const WORKERS: u32 = 2;

/// A counter of Envoy's rate limit filter; it counts under the route's target cluster.
fn ratelimit_stat(cluster: &str, name: &str) -> String {
    format!("cluster.{cluster}.ratelimit.{name}")
}

/// The sandbox topology with the shipped global rate limit calling `service`.
async fn start(service: &RateLimitService, options: SandboxOptions) -> SandboxEnv {
    SandboxEnv::start_with(ShippedRateLimit::shipped().calling(service, options)).await
}

/// Two proxies with `WORKERS` workers each and the harness's default filter configuration,
/// both calling `service` through `rate_limit`.
async fn two_proxies(service: &RateLimitService, rate_limit: &ShippedRateLimit) -> [SandboxEnv; 2] {
    let options = || {
        rate_limit.calling(
            service,
            SandboxOptions {
                concurrency: WORKERS,
                ..SandboxOptions::default()
            },
        )
    };
    [
        SandboxEnv::start_with(options()).await,
        SandboxEnv::start_with(options()).await,
    ]
}

/// A request of sandbox `feature-x` as the rate limit tests send it (see the module doc).
fn keyed(authority: &str) -> TestRequest {
    TestRequest::get(authority, "/orders")
        .header("x-sandbox", KEY)
        .header(KEY_HEADER, KEY)
}

fn keyed_grpc_payment() -> TestRequest {
    TestRequest::grpc("payment", "/shop.Payment/Pay")
        .header("x-sandbox", KEY)
        .header(KEY_HEADER, KEY)
}

fn keyless(authority: &str) -> TestRequest {
    TestRequest::get(authority, "/orders")
}

/// A counter summed over both proxies (0 where a proxy does not have it).
async fn stat_sum(envs: &[SandboxEnv], name: &str) -> u64 {
    let mut sum = 0;
    for env in envs {
        sum += env.envoy.stat(name).await.unwrap_or(0);
    }
    sum
}

/// How many shots got exactly `answer`.
fn count(shots: &[Shot], answer: &Answer) -> usize {
    shots
        .iter()
        .filter(|s| s.outcome.as_ref() == Ok(answer))
        .count()
}

fn from(upstream: &str) -> Answer {
    Answer {
        status: 200,
        upstream: Some(upstream.to_owned()),
    }
}

/// Envoy's rate limit filter's refusal (no upstream answered).
fn over_the_limit() -> Answer {
    Answer {
        status: 429,
        upstream: None,
    }
}

/// Every shot's outcome other than the expected ones, counted (errors included).
fn unexpected(shots: &[Shot], expected: &[Answer]) -> BTreeMap<String, usize> {
    let mut others = BTreeMap::new();
    for shot in shots {
        let kind = match &shot.outcome {
            Ok(answer) if expected.contains(answer) => continue,
            Ok(answer) => format!("{answer:?}"),
            Err(err) => err.clone(),
        };
        *others.entry(kind).or_default() += 1;
    }
    others
}

// ---- one budget for the mesh ----

/// Limitador counts in fixed windows that open at the first hit after the previous window
/// closed: each window admits `limit` hits. Under a load that never pauses, the windows follow
/// each other back to back from the first hit, so between the first hit at `first` and the last
/// at `last`, `floor((last - first) / window) + 1` windows open (a run of 3.5 windows keeps the
/// count clear of the boundary), and the service admits `limit` times that.
fn limitador_allowance(limit: u32, first: Instant, last: Instant) -> (u64, u64) {
    let run = last.duration_since(first);
    let windows = u64::try_from(run.as_nanos() / WINDOW.as_nanos()).expect("a short run") + 1;
    (windows, u64::from(limit) * windows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_budget_is_one_budget_across_two_proxies_with_two_workers_each() {
    const LIMIT: u32 = 25;
    let _serial = LOAD.lock().await;
    let service = RateLimitService::start(&Limits::new().sandbox(KEY, LIMIT));
    // The run must count the service's answer to every request. Here the service, both proxies
    // and the load share two cores, and a call can take longer than the shipped 100 ms, which
    // `failure_mode_deny: false` turns into an admission without an answer; so a longer wait
    // (and such admissions are counted below: none).
    let envs = two_proxies(&service, &ShippedRateLimit::shipped().with_timeout("2s")).await;
    let mut connections = Vec::new();
    for env in &envs {
        connections.push(load::connections_on_every_worker(&env.envoy, LISTENER, WORKERS).await);
    }
    let (shots_a, shots_b) = tokio::join!(
        load::hammer(&connections[0], 4, Duration::from_millis(3500), || keyed(
            "payment"
        )),
        load::hammer(&connections[1], 4, Duration::from_millis(3500), || keyed(
            "payment"
        )),
    );

    let calls = service.calls();
    let first = calls.iter().map(|c| c.at).min().expect("calls were made");
    let last = calls.iter().map(|c| c.at).max().expect("calls were made");
    let (windows, allowance) = limitador_allowance(LIMIT, first, last);
    let accepted_a = count(&shots_a, &from(PAYMENT_SANDBOX));
    let accepted_b = count(&shots_b, &from(PAYMENT_SANDBOX));
    let accepted = accepted_a + accepted_b;
    let sent = shots_a.len() + shots_b.len();
    let error = (accepted as f64 - allowance as f64) / allowance as f64;
    println!(
        "{sent} requests through 2 proxies × {WORKERS} workers ({} + {} connections), {} calls \
         over {:.3} s = {windows} windows of {LIMIT}: accepted {accepted} ({accepted_a} + \
         {accepted_b}), allowance {allowance}, error {:+.1}%",
        connections[0].len(),
        connections[1].len(),
        calls.len(),
        last.duration_since(first).as_secs_f64(),
        error * 100.0
    );
    let expected = [from(PAYMENT_SANDBOX), over_the_limit()];
    let others = unexpected(&shots_a, &expected);
    assert!(others.is_empty(), "proxy A: unexpected answers {others:?}");
    let others = unexpected(&shots_b, &expected);
    assert!(others.is_empty(), "proxy B: unexpected answers {others:?}");
    assert!(
        sent as u64 >= 5 * allowance,
        "the load ({sent} requests) was not far above the limit ({allowance})"
    );
    assert!(
        accepted_a > 0 && accepted_b > 0,
        "both proxies admit some: {accepted_a} + {accepted_b}"
    );
    assert!(
        error.abs() <= 0.10,
        "accepted {accepted}, Limitador allows {allowance} ± 10% ({windows} windows of {LIMIT})"
    );
    // Every request asked the service once; none was let through for want of an answer.
    assert_eq!(calls.len(), sent);
    let allowed_blind = stat_sum(
        &envs,
        &ratelimit_stat(PAYMENT_SANDBOX, "failure_mode_allowed"),
    )
    .await;
    assert_eq!(allowed_blind, 0, "requests allowed without an answer");
    assert_eq!(
        envs[0].upstream(PAYMENT_SANDBOX).request_count()
            + envs[1].upstream(PAYMENT_SANDBOX).request_count(),
        accepted,
        "only accepted requests reach the sandbox"
    );
}

// ---- keyless traffic pays nothing ----

#[tokio::test]
async fn keyless_requests_make_no_calls_to_the_service() {
    let service = RateLimitService::start(&Limits::new().sandbox(KEY, 1000).default_per_second(1));
    let envs = two_proxies(&service, &ShippedRateLimit::shipped()).await;
    for env in &envs {
        for protocol in Protocol::ALL {
            for (request, upstream) in [
                (keyless("payment"), PAYMENT_BASELINE),
                (
                    TestRequest::post("payment.shop", "/orders"),
                    PAYMENT_BASELINE,
                ),
                (keyless("inventory"), INVENTORY_BASELINE),
                (keyless("catalog"), CATALOG_BASELINE),
                (keyless("example.com"), DEFAULT_UPSTREAM),
                (
                    keyless("payment").header("baggage", "user=alice,tenant=7"),
                    PAYMENT_BASELINE,
                ),
            ] {
                let response = env.send(request.protocol(protocol)).await;
                expect::answered_by(&response, upstream);
            }
        }
    }
    assert_eq!(service.call_count(), 0, "{:?}", service.calls());
    for name in ["ok", "over_limit", "error", "failure_mode_allowed"] {
        assert_eq!(
            stat_sum(&envs, &ratelimit_stat(PAYMENT_BASELINE, name)).await,
            0,
            "{name}"
        );
    }

    // The same proxies do call it for a sandbox's request.
    let response = envs[0].send(keyed("payment")).await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    assert_eq!(service.sandbox_values(), [KEY]);
}

// ---- what a client sees over the limit ----

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
    // Four requests well within one window of one second: 2 admitted, then refused.
    let first = env.send(keyed("payment")).await;
    let second = env.send(keyed("payment")).await;
    let refused = env.send(keyed("payment")).await;
    let refused_grpc = env.send(keyed_grpc_payment()).await;

    // Admitted: Envoy adds the draft-03 headers from the service's answer.
    for (response, remaining) in [(&first, "1"), (&second, "0")] {
        expect::routed_to(response, PAYMENT_SANDBOX);
        assert_eq!(
            response.header("x-ratelimit-limit").as_deref(),
            Some("2, 2;w=1")
        );
        assert_eq!(
            response.header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert_eq!(response.header("x-ratelimit-reset").as_deref(), Some("1"));
        assert_eq!(response.header("x-envoy-ratelimited"), None);
    }

    // Refused by Envoy's rate limit filter: 429, an empty body, its own headers; none of the
    // local guard's (retry-after, x-sandbox-router-limited, a body naming the sandbox).
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.upstream(), None, "{refused:?}");
    assert_eq!(
        refused.header("x-envoy-ratelimited").as_deref(),
        Some("true")
    );
    assert_eq!(
        refused.header("x-ratelimit-limit").as_deref(),
        Some("2, 2;w=1")
    );
    assert_eq!(
        refused.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(refused.header("x-ratelimit-reset").as_deref(), Some("1"));
    assert_eq!(refused.body_text(), "");
    assert_eq!(refused.header("retry-after"), None);
    assert_eq!(refused.header("x-sandbox-router-limited"), None);
    // The filter had routed it (its debug header is on the refusal too).
    assert!(expect::decision(&refused).starts_with("routed;"));

    // gRPC: RESOURCE_EXHAUSTED (rate_limited_as_resource_exhausted), HTTP 200.
    assert_eq!(refused_grpc.status, 200, "{refused_grpc:?}");
    assert_eq!(refused_grpc.grpc_status().as_deref(), Some("8"));
    assert_eq!(refused_grpc.header("grpc-message"), None);
    assert_eq!(
        refused_grpc.header("x-envoy-ratelimited").as_deref(),
        Some("true")
    );
    assert_eq!(refused_grpc.upstream(), None);

    // The audit record of each request, with the status the client got.
    let records = env
        .audit_log()
        .wait_for_records(4, Duration::from_secs(10))
        .await;
    let statuses: Vec<&serde_json::Value> = records.iter().map(|r| &r["status"]).collect();
    assert_eq!(
        statuses,
        [&json!(200), &json!(200), &json!(429), &json!(200)]
    );
    for record in &records {
        assert_eq!(record["sandbox_router"]["key"], KEY, "{record}");
        assert_eq!(record["sandbox_router"]["decision"], "routed", "{record}");
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 2);
    assert_eq!(service.sandbox_values(), [KEY; 4]);
}

#[tokio::test]
async fn the_local_guard_applies_first_and_its_refusals_make_no_call() {
    let service = RateLimitService::start(&Limits::new().sandbox(KEY, 1000));
    let mut config = sandbox::default_filter_config();
    // Two requests, then (almost) nothing: the per-proxy bucket runs dry first.
    config["sandboxes"][KEY]["rate_limit"] = json!({ "requests_per_second": 0.01, "burst": 2 });
    let env = start(
        &service,
        SandboxOptions {
            filter_config: Some(config),
            ..SandboxOptions::default()
        },
    )
    .await;
    for remaining in ["1", "0"] {
        let response = env.send(keyed("payment")).await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
        // Both filters write x-ratelimit-*; the sandbox-router, which sees the response last,
        // replaces Envoy's figures (1000 per second) with its own bucket's.
        assert_eq!(response.header("x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            response.header("x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let refused = env.send(keyed("payment")).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(
        refused.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    assert_eq!(
        refused.header("retry-after").as_deref(),
        Some("100"),
        "{refused:?}"
    );
    const MESSAGE: &str =
        "sandbox feature-x: rate limit exceeded (0.01 requests/s, burst 2); retry in 100s";
    assert_eq!(refused.body_text(), MESSAGE);
    assert_eq!(
        expect::decision(&refused),
        "rejected; key=feature-x; reason=rate_limited"
    );
    assert_eq!(refused.header("x-envoy-ratelimited"), None);
    let refused_grpc = env.send(keyed_grpc_payment()).await;
    assert_eq!(refused_grpc.status, 200, "{refused_grpc:?}");
    assert_eq!(refused_grpc.grpc_status().as_deref(), Some("8"));
    assert_eq!(
        refused_grpc.header("grpc-message").as_deref(),
        Some(MESSAGE)
    );
    // Only the two admitted requests asked the service.
    assert_eq!(service.sandbox_values(), [KEY; 2]);
}

// ---- the service fails ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_service_mid_run_lets_keyed_traffic_through_and_leaves_baseline_alone() {
    const RUN: Duration = Duration::from_secs(3);
    let _serial = LOAD.lock().await;
    // A limit the run never reaches: every refusal would be a failure.
    let mut service = RateLimitService::start(&Limits::new().sandbox(KEY, 100_000));
    let mut envs = two_proxies(&service, &ShippedRateLimit::shipped()).await;
    let mut connections = Vec::new();
    for env in &envs {
        connections.push(load::connections_on_every_worker(&env.envoy, LISTENER, WORKERS).await);
    }
    let load = {
        let connections: Vec<_> = connections
            .iter()
            .flatten()
            .map(|c| c.share().expect("h2c"))
            .collect();
        tokio::spawn(async move {
            tokio::join!(
                load::hammer(&connections, 1, RUN, || keyed("payment")),
                load::hammer(&connections, 1, RUN, || keyless("payment")),
            )
        })
    };
    // Kill it once it has answered for a while (a condition, polled with a deadline).
    let deadline = Instant::now() + RUN;
    while service.call_count() < 200 {
        assert!(
            Instant::now() < deadline,
            "the service got only {} calls",
            service.call_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.kill();
    let killed_at = Instant::now();
    assert!(
        std::net::TcpStream::connect(service.addr()).is_err(),
        "the port is closed"
    );
    let (keyed_shots, keyless_shots) = load.await.expect("load task");

    let others = unexpected(&keyless_shots, &[from(PAYMENT_BASELINE)]);
    assert!(others.is_empty(), "baseline traffic: {others:?}");
    let others = unexpected(&keyed_shots, &[from(PAYMENT_SANDBOX)]);
    assert!(others.is_empty(), "keyed traffic: {others:?}");
    let after = |shots: &[Shot]| shots.iter().filter(|s| s.sent_at > killed_at).count();
    println!(
        "keyed {} ({} after the kill), keyless {} ({} after the kill)",
        keyed_shots.len(),
        after(&keyed_shots),
        keyless_shots.len(),
        after(&keyless_shots)
    );
    assert!(after(&keyed_shots) >= 100, "keyed requests after the kill");
    assert!(
        after(&keyless_shots) >= 100,
        "keyless requests after the kill"
    );
    // Each keyed request made one call: admitted by the service before the kill (calls in
    // flight at the kill among the others), by failure_mode_deny: false after. Exact, however
    // the machine's load spread the requests around the kill.
    let answered = stat_sum(&envs, &ratelimit_stat(PAYMENT_SANDBOX, "ok")).await;
    let allowed_blind = stat_sum(
        &envs,
        &ratelimit_stat(PAYMENT_SANDBOX, "failure_mode_allowed"),
    )
    .await;
    assert_eq!(answered + allowed_blind, keyed_shots.len() as u64);
    assert!(answered >= 1 && allowed_blind >= after(&keyed_shots) as u64);
    assert_eq!(
        stat_sum(&envs, &ratelimit_stat(PAYMENT_SANDBOX, "over_limit")).await,
        0
    );
    // The Wasm VM of neither proxy failed (trap, panic) at any point.
    for env in &mut envs {
        expect::filter_healthy(env).await;
    }
}

// ---- the filter's side of the contract (needs the filter's key_header) ----

/// What the payment sandbox received of the key header.
fn key_header_values(response: &TestResponse) -> Vec<String> {
    response.echo().header_values(KEY_HEADER)
}

#[tokio::test]
async fn a_key_header_forged_by_a_client_reaches_neither_the_service_nor_the_app() {
    let service =
        RateLimitService::start(&Limits::new().sandbox(KEY, 1000).default_per_second(1000));
    let env = start(&service, SandboxOptions::default()).await;
    for protocol in Protocol::ALL {
        // Keyless requests claiming a sandbox, in any case, any number of times.
        for forged in [
            vec![(KEY_HEADER, KEY)],
            vec![("X-Sandbox-Key", KEY)],
            vec![(KEY_HEADER, KEY), ("X-SANDBOX-KEY", "feature-y")],
        ] {
            let request = forged
                .iter()
                .fold(keyless("payment").protocol(protocol), |r, (name, value)| {
                    r.header(name, value)
                });
            let response = env.send(request).await;
            let echo = expect::answered_by(&response, PAYMENT_BASELINE);
            lacks_header(&echo, KEY_HEADER);
        }
        // A sandbox's request with a forged copy naming another sandbox: the filter's value
        // alone, once.
        let response = env
            .send(
                TestRequest::get("payment", "/orders")
                    .protocol(protocol)
                    .header("x-sandbox", KEY)
                    .header(KEY_HEADER, "feature-y")
                    .header(KEY_HEADER, "feature-z"),
            )
            .await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(key_header_values(&response), [KEY]);
    }
    // One descriptor per sandbox request, with the filter's key; none for the forgeries.
    assert_eq!(service.sandbox_values(), [KEY; 2]);
}

/// Sandbox `feature-x`, plus `feature-old` (expired), trusted only from 127.0.0.2.
fn contract_config() -> serde_json::Value {
    let mut config = sandbox::default_filter_config();
    config["trust"] = json!({ "sources": ["127.0.0.2/32"], "untrusted": "strip" });
    config["sandboxes"]["feature-old"] = json!({
        "routes": { "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY } },
        "expires_at": "2020-01-01T00:00:00Z"
    });
    config
}

#[tokio::test]
async fn only_a_registered_trusted_unexpired_key_builds_a_descriptor() {
    let trusted: IpAddr = "127.0.0.2".parse().expect("an IP");
    let untrusted: IpAddr = "127.0.0.1".parse().expect("an IP");
    // A default limit: any key that reached the service would be counted.
    let service = RateLimitService::start(&Limits::new().default_per_second(1000));
    let env = start(
        &service,
        SandboxOptions {
            filter_config: Some(contract_config()),
            ..SandboxOptions::default()
        },
    )
    .await;
    for protocol in Protocol::ALL {
        let send = |key: &str, source: IpAddr| {
            env.send(
                TestRequest::get("payment", "/orders")
                    .protocol(protocol)
                    .header("x-sandbox", key)
                    .source(source),
            )
        };
        // Registered, trusted, live: the filter sets the header.
        let response = send(KEY, trusted).await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(key_header_values(&response), [KEY]);

        for (key, source, reason) in [
            ("no-such-sandbox", trusted, "unknown-key"),
            ("feature-old", trusted, "expired"),
            (KEY, untrusted, "untrusted"),
        ] {
            let response = send(key, source).await;
            let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &[reason]);
            lacks_header(&echo, KEY_HEADER);
        }
    }
    assert_eq!(service.sandbox_values(), [KEY; 2]);
}

// ---- the shipped Istio manifest ----

/// `istio/global-rate-limit.yaml` patches in the same filter and route action as the tested
/// `envoy-config/global-rate-limit.yaml` (which Envoy validates and these tests run).
#[test]
fn the_istio_envoyfilter_adds_the_tested_filter_and_rate_limits() {
    let shipped = ShippedRateLimit::shipped();
    let manifest = integration_tests::istio::load_manifest("global-rate-limit.yaml", "EnvoyFilter");
    let patches = manifest["spec"]["configPatches"]
        .as_array()
        .expect("configPatches");
    let patch = |apply_to: &str| {
        patches
            .iter()
            .find(|p| p["applyTo"] == apply_to)
            .unwrap_or_else(|| panic!("no {apply_to} patch"))
    };

    let filter = patch("HTTP_FILTER");
    assert_eq!(filter["match"]["context"], "SIDECAR_OUTBOUND");
    assert_eq!(filter["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_eq!(filter["patch"]["value"], shipped.http_filter);

    let vhost = patch("VIRTUAL_HOST");
    assert_eq!(vhost["match"]["context"], "SIDECAR_OUTBOUND");
    assert_eq!(vhost["patch"]["operation"], "MERGE");
    assert_eq!(
        vhost["patch"]["value"]["rate_limits"],
        json!(shipped.rate_limits)
    );

    let cluster = patch("CLUSTER");
    assert_eq!(cluster["patch"]["operation"], "ADD");
    assert_eq!(
        cluster["patch"]["value"]["name"],
        shipped.cluster_name.as_str()
    );
    assert_eq!(
        cluster["patch"]["value"]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"],
        json!({ "http2_protocol_options": {} })
    );
}
