//! The edge holds (issue 16): a key an instrumented app would read never gets past a trust
//! point, and routing agrees with what apps read (the oracle is the real OpenTelemetry Python
//! W3C baggage propagator, `tests/otel/baggage.py`, not hand-written expectations); and no guard
//! lapses: expired sandboxes, method overrides and upgrades, a VM that fails with slots taken.

use integration_tests::audit;
use integration_tests::expect::{self, answered_by};
use integration_tests::otel::{app_views, AppView};
use std::time::{Duration, Instant};

use integration_tests::sandbox::{
    self, FailurePolicy, SandboxOptions, CATALOG_BASELINE, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::upstream::DELAY_HEADER;
use integration_tests::{paths, FilterEntry, Protocol, SandboxEnv, TestRequest};
use serde_json::json;

/// Member spellings that OpenTelemetry Python (and, for the `%XX` ones, JavaScript's
/// `decodeURIComponent`) reads as `sandbox=feature-x`, each next to an unrelated member.
const ENCODED_NAMES: &[&str] = &[
    "sand%62ox=feature-x",
    "sandbox+=feature-x",
    "sandbox%20=feature-x",
    "%73andbox=feature-x",
    "sandbox%09=feature-x",
    "sandbox%0A=feature-x",
    "sandbox%C2%A0=feature-x",
    "sandbox%0D%0A=feature-x",
    "%73%61%6E%64%62%6F%78=feature-x",
    "sandbox=feature-x%20",
    "sandbox=feature%2Dx",
];

/// Spellings that are not the member for the app (nor, then, for the filter).
const NEAR_MISSES: &[&str] = &[
    "Sandbox=feature-x",
    "sandboxx=feature-x",
    "sand+box=feature-x",
    "%2573andbox=feature-x",
    "sandbox%E2%80%8B=feature-x",
    "a=sandbox=feature-x",
];

fn headers(members: &[&str]) -> Vec<String> {
    members.iter().map(|m| format!("user=alice,{m}")).collect()
}

/// The ingress gateway exactly as shipped (no debug header: decisions are read from the audit
/// log), with the audit log on.
async fn shipped_gateway() -> SandboxEnv {
    let shipped = sandbox::shipped_filter("envoy-config/ingress-gateway.yaml");
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(shipped.filter_config),
        hcm_options: shipped.hcm_options,
        entry: shipped.entry,
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await
}

#[tokio::test]
async fn every_member_an_app_reads_as_the_key_is_stripped_at_the_edge() {
    let sent = headers(ENCODED_NAMES);
    // The cases are real: the app reads each of them as the key.
    for (header, view) in sent.iter().zip(app_views(&sent)) {
        assert_eq!(view.member("sandbox"), Some(KEY), "{header}: {view:?}");
    }
    let env = shipped_gateway().await;
    let mut received = Vec::new();
    for protocol in Protocol::ALL {
        for header in &sent {
            // From 127.0.0.1: the internet, as far as the gateway's trust knows.
            let tracestate = format!("vendor=1,{}", header.replace("user=alice,", ""));
            let response = env
                .send(
                    TestRequest::get("payment", "/checkout")
                        .protocol(protocol)
                        .header("baggage", header)
                        .header("tracestate", &tracestate),
                )
                .await;
            let echo = answered_by(&response, PAYMENT_BASELINE);
            let baggage = echo.header_values("baggage");
            assert_eq!(baggage.len(), 1, "{header}: {baggage:?}");
            received.push(baggage[0].clone());
            assert_eq!(echo.header_values("tracestate"), ["vendor=1"], "{header}");
        }
    }
    // What the app behind the gateway reads from what arrived: no key, the other member kept.
    for (header, view) in received.iter().zip(app_views(&received)) {
        let AppView { members, .. } = &view;
        assert_eq!(members.get("sandbox"), None, "{header}: {view:?}");
        assert_eq!(view.member("user"), Some("alice"), "{header}: {view:?}");
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    let records = env
        .audit_log()
        .wait_for_records(received.len(), audit::DEFAULT_WAIT)
        .await;
    for record in &records {
        assert_eq!(
            record["sandbox_router"]["decision"], "untrusted",
            "{record}"
        );
    }
}

/// A trusted caller's request goes where the app behind the filter would take it: to the
/// sandbox exactly when the propagator reads `sandbox=feature-x`. The header the app re-injects
/// is routed the same way at the next hop.
#[tokio::test]
async fn routing_agrees_with_what_the_app_reads() {
    let sent = headers(&[ENCODED_NAMES, NEAR_MISSES].concat());
    let views = app_views(&sent);
    let env = SandboxEnv::start().await;
    for (header, view) in sent.iter().zip(&views) {
        let expected = if view.member("sandbox") == Some(KEY) {
            PAYMENT_SANDBOX
        } else {
            PAYMENT_BASELINE
        };
        let response = env
            .send(TestRequest::get("payment", "/").header("baggage", header))
            .await;
        answered_by(&response, expected);
        if let Some(next_hop) = &view.reinjected {
            let response = env
                .send(TestRequest::get("payment", "/").header("baggage", next_hop))
                .await;
            answered_by(&response, expected);
        }
    }
    // Both outcomes occur: the table is not one-sided.
    let routed = views
        .iter()
        .filter(|v| v.member("sandbox") == Some(KEY))
        .count();
    assert_eq!(routed, ENCODED_NAMES.len());
}

/// W3C baggage properties (`;p=1`) are metadata, not part of the value, and the filter routes by
/// the value, as the Go, Java and JavaScript propagators read it. OpenTelemetry Python keeps
/// them in the value (`feature-x;p=1`) and re-injects `sandbox=feature-x%3Bp%3D1`, which the
/// next hop reports as an invalid key and keeps on the baseline (README, "Where the key comes
/// from"). At a trust point the member is stripped either way.
#[tokio::test]
async fn properties_are_metadata_even_where_python_keeps_them_in_the_value() {
    let header = "user=alice,sandbox=feature-x;p=1".to_owned();
    let view = &app_views(std::slice::from_ref(&header))[0];
    assert_eq!(view.member("sandbox"), Some("feature-x;p=1"));
    let reinjected = view.reinjected.clone().expect("the app re-injects baggage");
    let env = SandboxEnv::start().await;
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", &header))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", &reinjected))
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &[expect::INVALID_KEY]);
}

// ---- guards that must not lapse ----

/// The default configuration with these fields set on sandbox `feature-x`.
fn feature_x_with(fields: serde_json::Value) -> serde_json::Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("an object of fields") {
        config["sandboxes"][KEY][name.as_str()] = value.clone();
    }
    config
}

async fn start_with_config(config: serde_json::Value) -> SandboxEnv {
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await
}

/// Finding 2: an expired sandbox keeps its write guard and its budget (before, its key was an
/// unknown key: the POST below got 200 and nothing was limited).
#[tokio::test]
async fn an_expired_sandbox_keeps_its_write_guard_and_budget() {
    let env = start_with_config(feature_x_with(json!({
        "expires_at": "2020-01-01T00:00:00Z",
        "baseline_writes": "deny",
        "rate_limit": { "requests_per_second": 0.001, "burst": 2 }
    })))
    .await;
    let keyed = |method: &str, authority: &str| {
        TestRequest::new(method.parse().unwrap(), authority, "/orders")
            .header("baggage", "sandbox=feature-x")
    };
    // A write to a baseline service, the one it used to override included: 403.
    for authority in ["catalog", "payment"] {
        let response = env.send(keyed("POST", authority)).await;
        assert_eq!(response.status, 403, "{authority}: {response:?}");
        assert!(
            response.body_text().contains("may not send POST requests"),
            "{response:?}"
        );
    }
    assert_eq!(env.upstream(CATALOG_BASELINE).request_count(), 0);
    // Reads go to the baseline, within the budget: 2, then 429.
    for _ in 0..2 {
        let response = env.send(keyed("GET", "payment")).await;
        expect::baseline_at(&response, PAYMENT_BASELINE, &["expired"]);
    }
    let response = env.send(keyed("GET", "payment")).await;
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(
        response.header("x-sandbox-router-limited").as_deref(),
        Some(KEY)
    );
    let records = env
        .audit_log()
        .wait_for_records(5, audit::DEFAULT_WAIT)
        .await;
    let decisions: Vec<&str> = records
        .iter()
        .map(|r| r["sandbox_router"]["decision"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        decisions,
        [
            "write_denied",
            "write_denied",
            "expired",
            "expired",
            "rate_limited"
        ]
    );
}

/// Finding 7: a read method with a method-override header, or a protocol upgrade, is a write.
#[tokio::test]
async fn method_overrides_and_upgrades_are_writes_under_deny() {
    // Envoy passes WebSocket upgrades to the filters only where the listener allows them.
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(feature_x_with(json!({ "baseline_writes": "deny" }))),
        hcm_options: vec![(
            "upgrade_configs".to_owned(),
            json!([{ "upgrade_type": "websocket" }]),
        )],
        ..SandboxOptions::default()
    })
    .await;
    let keyed_get = || TestRequest::get("catalog", "/items").header("baggage", "sandbox=feature-x");
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "PUT"),
        ("x-method-override", "patch"),
    ] {
        let response = env.send(keyed_get().header(name, value)).await;
        assert_eq!(response.status, 403, "{name}: {response:?}");
        assert!(
            response
                .body_text()
                .contains(&format!("may not send {value} requests")),
            "{response:?}"
        );
    }
    // A WebSocket upgrade opens a channel the guard cannot see into.
    let response = env
        .send(
            keyed_get()
                .http1()
                .header("connection", "upgrade")
                .header("upgrade", "websocket"),
        )
        .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(
        response
            .body_text()
            .contains("may not send protocol upgrade"),
        "{response:?}"
    );
    // An override naming a read is a read.
    let response = env
        .send(keyed_get().header("x-http-method-override", "GET"))
        .await;
    expect::baseline_at(&response, CATALOG_BASELINE, &[expect::NO_OVERRIDE]);
    assert_eq!(env.upstream(CATALOG_BASELINE).request_count(), 1);
}

/// Finding 8: a path longer than the record keeps is cut visibly.
#[tokio::test]
async fn a_long_path_is_cut_with_a_marker_in_the_audit_record() {
    let env = start_with_config(sandbox::default_filter_config()).await;
    let path = format!("/{}", "p".repeat(599));
    let response = env
        .send(TestRequest::get("payment", &path).header("baggage", "sandbox=feature-x"))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    let records = env
        .audit_log()
        .wait_for_records(1, audit::DEFAULT_WAIT)
        .await;
    let recorded = records[0]["sandbox_router"]["path"].as_str().unwrap();
    assert_eq!(recorded, format!("{}…", &path[..512]));
}

/// Finding 3: a VM that fails while a request holds an in-flight slot does not keep the slot
/// for good. Before, every keyed request of the sandbox got 429 long after the reload.
#[tokio::test]
async fn the_slot_of_a_request_on_a_failed_vm_is_reclaimed() {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(feature_x_with(json!({ "max_in_flight": 1 }))),
        failure_policy: FailurePolicy::FailReload,
        wasm: Some(paths::fault_injection_wasm()),
        concurrency: 1,
        ..SandboxOptions::default()
    })
    .await;
    let keyed = || TestRequest::get("payment", "/orders").header("baggage", "sandbox=feature-x");
    // A slow keyed request takes the one slot, and keeps its connection for 60 s.
    let addr = env.addr();
    let slow = tokio::spawn(
        keyed()
            .header(DELAY_HEADER, "60000")
            .timeout(Duration::from_secs(90))
            .try_send(addr),
    );
    poll_until(Duration::from_secs(10), || async {
        env.upstream(PAYMENT_SANDBOX).request_count() == 1
    })
    .await;
    let response = env.send(keyed()).await;
    assert_eq!(response.status, 429, "the cap holds: {response:?}");
    // The VM traps; FAIL_RELOAD brings a new one after its backoff.
    let response = env
        .send(TestRequest::get("catalog", "/").header("x-sandbox-router-fault", "trap"))
        .await;
    assert_eq!(response.status, 503, "{response:?}");
    let trapped = Instant::now();
    // The slow request is still in progress upstream, but its VM is gone: once the dead VM's
    // heartbeat is 5 s old, the new VM reclaims the slot.
    let recovered = poll_until(Duration::from_secs(20), || async {
        let response = env.send(keyed()).await;
        response.status == 200 && response.upstream().as_deref() == Some(PAYMENT_SANDBOX)
    })
    .await;
    let waited = trapped.elapsed();
    assert!(
        recovered <= Duration::from_secs(20) && waited >= Duration::from_secs(4),
        "recovered after {waited:?}: the slot must be held while its VM might be alive"
    );
    assert!(!slow.is_finished(), "the slow request is still in progress");
    slow.abort();
}

/// Polls `condition` every 100 ms until it holds; panics after `deadline`. Returns how long it
/// took.
async fn poll_until<F, Fut>(deadline: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- failure policy by role (finding 4) ----

/// Each shipped Envoy config carries the failure policy of its role: a trust point (it strips
/// keys from untrusted sources) fails closed, since an open failure would let unstripped keys
/// through; a sidecar fails open, since baseline traffic must not pay for a fault in test
/// tooling. Each is then run as shipped (its entry form too), with the fault-injection build
/// made to trap, and its policy must hold. On the fast path the VM only ever sees requests with
/// a carrier header, so a trust point whose VM is down still serves keyless requests.
#[tokio::test]
async fn each_shipped_config_fails_as_its_role_requires() {
    for (file, trust_point) in [
        ("envoy-config/ingress-gateway.yaml", true),
        ("envoy-config/observability.yaml", true),
        ("envoy-config/demo.yaml", false),
    ] {
        let shipped = sandbox::shipped_filter(file);
        assert_eq!(
            !shipped.filter_config["trust"].is_null(),
            trust_point,
            "{file}: a trust point configures `trust`, a sidecar here does not"
        );
        let expected = if trust_point {
            FailurePolicy::FailClosed
        } else {
            FailurePolicy::FailOpen
        };
        assert_eq!(shipped.failure_policy, expected, "{file}");
        assert_eq!(shipped.entry, FilterEntry::FastPath, "{file}");
        let env = SandboxEnv::start_with(SandboxOptions {
            filter_config: Some(shipped.filter_config),
            hcm_options: shipped.hcm_options,
            failure_policy: shipped.failure_policy,
            entry: shipped.entry,
            wasm: Some(paths::fault_injection_wasm()),
            concurrency: 1,
            ..SandboxOptions::default()
        })
        .await;
        // The trap needs a request the filter sees: one with a carrier header.
        let trap = env
            .send(
                TestRequest::get("payment", "/")
                    .header("x-sandbox-router-fault", "trap")
                    .header("x-sandbox", KEY),
            )
            .await;
        assert_eq!(trap.status, 503, "{file}: {trap:?}");
        // From 127.0.0.1, which neither trust point trusts.
        let keyed = env
            .send(
                TestRequest::get("payment", "/")
                    .header("baggage", "sandbox=feature-x")
                    .header("x-sandbox", KEY),
            )
            .await;
        let keyless = env.send(TestRequest::get("payment", "/")).await;
        // Keyless requests never reach the VM, whatever its state.
        answered_by(&keyless, PAYMENT_BASELINE);
        if trust_point {
            assert_eq!(keyed.status, 503, "{file}: {keyed:?}");
            assert_eq!(env.upstream(PAYMENT_BASELINE).request_count(), 1, "{file}");
        } else {
            answered_by(&keyed, PAYMENT_BASELINE);
        }
        assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0, "{file}");
    }
    // The sidecar forms that carry no inline configuration (the ECDS resource that
    // scripts/sandboxes publishes, the mesh sidecar template) say FAIL_OPEN too.
    for file in [
        "envoy-config/ecds/sandbox-router.yaml",
        "envoy-config/_mesh-sidecar.template.yaml",
    ] {
        let text = std::fs::read_to_string(paths::workspace_root().join(file)).unwrap();
        let policies: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once("failure_policy").map(|(_, rest)| rest))
            .collect();
        assert_eq!(policies.len(), 1, "{file}: {policies:?}");
        assert!(policies[0].contains("FAIL_OPEN"), "{file}: {policies:?}");
    }
}

/// Finding 5: an IPv4-mapped trust range is the IPv4 range it maps. Before, it could never match
/// (mapped peers are compared as IPv4), so a trusted caller's key was stripped.
#[tokio::test]
async fn an_ipv4_mapped_trust_range_trusts_its_ipv4_peers() {
    let mut config = sandbox::default_filter_config();
    config["trust"] = json!({ "sources": ["::ffff:127.0.0.0/104"], "untrusted": "strip" });
    let env = start_with_config(config).await;
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", "sandbox=feature-x"))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
}
