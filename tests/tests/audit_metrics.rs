//! Audit and metrics (issue 5): every keyed request leaves an audit record in Envoy filter
//! state `wasm.sandbox_router`, which a stock file access log (with a CEL filter: keyed requests
//! only) writes as one JSON line; decision counters flushed to Envoy stats, tagged by decision
//! and sandbox through bootstrap `stats_tags`, and exported by `/stats/prometheus`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use integration_tests::audit::DEFAULT_WAIT;
use integration_tests::envoy::{Sample, Scrape};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::{expect, observability};
use integration_tests::{Connection, Protocol, SandboxEnv, TestRequest};
use serde_json::{json, Value};

const STAT_DEADLINE: Duration = Duration::from_secs(10);
/// A sandbox whose expiry has passed.
const EXPIRED_KEY: &str = "old-feature";
/// A second live sandbox, with every character a key may have.
const DOTTED_KEY: &str = "Team.checkout_v2-b";

/// The configuration of the issue: owner, trust, budget, write guard, expiry; plus an expired
/// sandbox and a second live one. 127.0.0.1 is trusted; 127.0.0.3 is not.
fn issue_config() -> Value {
    json!({
        "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
        "namespace": sandbox::NAMESPACE,
        "cluster_header": sandbox::CLUSTER_HEADER,
        "debug": true,
        "defaults": { "rate_limit": { "requests_per_second": 50, "burst": 100 }, "max_in_flight": 20 },
        "trust": { "sources": ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32", "::1/128"], "untrusted": "strip" },
        "unknown_keys": "baseline",
        "sandboxes": {
            "feature-x": {
                "owner": { "user": "alice@example.com", "change": "shop#1234" },
                "routes": {
                    "payment": { "authority": sandbox::PAYMENT_SANDBOX_AUTHORITY },
                    "inventory.shop.svc.cluster.local": { "cluster": sandbox::INVENTORY_SANDBOX_CLUSTER }
                },
                "rate_limit": { "requests_per_second": 0.01, "burst": 5 },
                "max_in_flight": 4,
                "enforce": true,
                "baseline_writes": "deny",
                "baseline_write_exceptions": ["audit-log"],
                "expires_at": "2099-12-01T00:00:00Z"
            },
            EXPIRED_KEY: {
                "owner": { "user": "bob@example.com" },
                "routes": { "payment": { "authority": sandbox::PAYMENT_SANDBOX_AUTHORITY } },
                "expires_at": "2020-01-01T00:00:00Z"
            },
            DOTTED_KEY: {
                "routes": { "payment": { "authority": sandbox::PAYMENT_SANDBOX_AUTHORITY } }
            }
        }
    })
}

async fn start() -> SandboxEnv {
    SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(issue_config()),
        audit_log: true,
        stats_tags: true,
        ..SandboxOptions::default()
    })
    .await
}

fn untrusted_source() -> IpAddr {
    "127.0.0.3".parse().expect("an IP")
}

/// Every decision the filter counts.
const ALL_DECISIONS: [&str; 13] = [
    "routed",
    "baseline",
    "rate_limited",
    "in_flight_rejected",
    "untrusted",
    "unknown_key",
    "expired",
    "write_denied",
    "invalid_key",
    "shadow_rejected",
    "budget_unavailable",
    "circuit_open",
    "routed_to_passthrough",
];

const PAYMENT_SERVICE: &str = "payment.shop.svc.cluster.local";
const TARGET_8080: &str = "authority:payment-feature-x.shop.svc.cluster.local:8080";
const ALICE: &str = r#"{"user":"alice@example.com","change":"shop#1234"}"#;

/// What one audit line must say: (status, source IP, the record).
fn expected_line(status: u16, source: &str, record: Value) -> (u16, String, Value) {
    (status, source.to_owned(), record)
}

#[allow(clippy::too_many_arguments)] // one argument per audit field, in record order
fn record(
    key: Option<&str>,
    owner: Option<&str>,
    method: &str,
    path: &str,
    service: Option<&str>,
    authority: &str,
    target: Option<&str>,
    decision: &str,
    reason: &str,
) -> Value {
    let mut record = json!({
        "key": key,
        "method": method,
        "path": path,
        "service": service,
        "authority": authority,
        "target": target,
        "decision": decision,
        "reason": reason,
    });
    if let Some(owner) = owner {
        record["owner"] = serde_json::from_str(owner).expect("owner JSON");
    }
    record
}

#[tokio::test]
async fn every_keyed_request_writes_one_audit_line_and_keyless_ones_none() {
    let env = start().await;
    let mut expected = Vec::new();

    // Keyless: no line.
    let response = env.send(TestRequest::get("payment", "/")).await;
    expect::answered_by(&response, PAYMENT_BASELINE);

    // routed
    let response = env
        .send(TestRequest::post("payment:8080", "/orders").header("baggage", "sandbox=feature-x"))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "POST",
            "/orders",
            Some(PAYMENT_SERVICE),
            "payment:8080",
            Some(TARGET_8080),
            "routed",
            "override",
        ),
    ));

    // routed, cluster mode
    let response = env
        .send(
            TestRequest::get("inventory.shop", "/stock")
                .header("x-sandbox", KEY)
                .h2c(),
        )
        .await;
    expect::routed_to(&response, sandbox::INVENTORY_SANDBOX);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "GET",
            "/stock",
            Some("inventory.shop.svc.cluster.local"),
            "inventory.shop",
            Some("cluster:inventory-feature-x"),
            "routed",
            "override",
        ),
    ));

    // baseline: a service the sandbox does not override (and that no sandbox names).
    let response = env
        .send(TestRequest::get("catalog", "/items?id=1").header("x-sandbox", KEY))
        .await;
    expect::baseline_at(&response, CATALOG_BASELINE, &[expect::NO_OVERRIDE]);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "GET",
            "/items?id=1",
            None,
            "catalog",
            None,
            "baseline",
            "no-override",
        ),
    ));

    // baseline: the write exception (a service the router knows by name).
    let response = env
        .send(TestRequest::post("audit-log", "/entries").header("x-sandbox", KEY))
        .await;
    expect::baseline_at(&response, sandbox::DEFAULT_UPSTREAM, &[expect::NO_OVERRIDE]);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "POST",
            "/entries",
            Some("audit-log.shop.svc.cluster.local"),
            "audit-log",
            None,
            "baseline",
            "no-override",
        ),
    ));

    // write_denied
    let response = env
        .send(
            TestRequest::new(http::Method::DELETE, "catalog", "/items/7").header("x-sandbox", KEY),
        )
        .await;
    assert_eq!(response.status, 403, "{response:?}");
    expected.push(expected_line(
        403,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "DELETE",
            "/items/7",
            None,
            "catalog",
            None,
            "write_denied",
            "sandbox_router_baseline_write_denied",
        ),
    ));

    // unknown_key
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", "sandbox=nope"))
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &[expect::UNKNOWN_KEY]);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some("nope"),
            None,
            "GET",
            "/",
            None,
            "payment",
            None,
            "unknown_key",
            "unknown-key",
        ),
    ));

    // untrusted (stripped)
    let response = env
        .send(
            TestRequest::post("payment", "/orders")
                .header("baggage", "sandbox=feature-x,user=eve")
                .source(untrusted_source()),
        )
        .await;
    let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &["untrusted"]);
    assert_eq!(echo.header_values("baggage"), ["user=eve"]);
    expected.push(expected_line(
        200,
        "127.0.0.3",
        record(
            Some(KEY),
            None,
            "POST",
            "/orders",
            None,
            "payment",
            None,
            "untrusted",
            "untrusted",
        ),
    ));

    // expired
    let response = env
        .send(TestRequest::get("payment", "/").header("x-sandbox", EXPIRED_KEY))
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &["expired"]);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(EXPIRED_KEY),
            Some(r#"{"user":"bob@example.com","change":null}"#),
            "GET",
            "/",
            Some(PAYMENT_SERVICE),
            "payment",
            None,
            "expired",
            "expired",
        ),
    ));

    // invalid_key
    let response = env
        .send(TestRequest::get("payment", "/").header("x-sandbox", "not a key!"))
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &[expect::INVALID_KEY]);
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            None,
            None,
            "GET",
            "/",
            None,
            "payment",
            None,
            "invalid_key",
            "invalid-key",
        ),
    ));

    // Keyless write: no line.
    let response = env.send(TestRequest::post("catalog", "/items")).await;
    expect::answered_by(&response, CATALOG_BASELINE);

    // rate_limited: 3 of the 5 tokens are spent (2 routed + catalog + audit-log = 4); one
    // more routed request takes the last, the next is refused.
    let response = env
        .send(TestRequest::get("payment", "/pay").header("x-sandbox", KEY))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
    assert_eq!(
        response.header("x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    expected.push(expected_line(
        200,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "GET",
            "/pay",
            Some(PAYMENT_SERVICE),
            "payment",
            Some("authority:payment-feature-x.shop.svc.cluster.local"),
            "routed",
            "override",
        ),
    ));
    let response = env
        .send(TestRequest::get("payment", "/pay").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.status, 429, "{response:?}");
    expected.push(expected_line(
        429,
        "127.0.0.1",
        record(
            Some(KEY),
            Some(ALICE),
            "GET",
            "/pay",
            Some(PAYMENT_SERVICE),
            "payment",
            Some("authority:payment-feature-x.shop.svc.cluster.local"),
            "rate_limited",
            "sandbox_router_rate_limited",
        ),
    ));

    // Keyless again, then wait for the lines: exactly one per keyed request.
    let response = env.send(TestRequest::get("catalog", "/")).await;
    expect::answered_by(&response, CATALOG_BASELINE);
    let lines = env
        .audit_log()
        .wait_for_records(expected.len(), DEFAULT_WAIT)
        .await;
    // The keyless request that came last is logged (if at all) after every keyed one: give
    // Envoy a moment to flush it by waiting for one more keyed line.
    let marker = env
        .send(TestRequest::get("payment", "/marker").header("x-sandbox", DOTTED_KEY))
        .await;
    expect::routed_to(&marker, PAYMENT_SANDBOX);
    let lines_with_marker = env
        .audit_log()
        .wait_for_records(expected.len() + 1, DEFAULT_WAIT)
        .await;
    assert_eq!(
        lines_with_marker.len(),
        expected.len() + 1,
        "exactly one line per keyed request:\n{}",
        pretty(&lines_with_marker)
    );
    assert_eq!(lines.len(), expected.len(), "{}", pretty(&lines));
    assert_eq!(
        lines_with_marker.last().expect("marker")["sandbox_router"]["key"],
        json!(DOTTED_KEY)
    );

    for (i, (line, (status, source, record))) in lines.iter().zip(&expected).enumerate() {
        let context = format!("line {i}: {line}");
        assert_eq!(line["status"], json!(status), "{context}");
        let logged_source = line["source"].as_str().unwrap_or_default();
        assert!(
            logged_source.starts_with(&format!("{source}:")),
            "source {logged_source:?}, expected {source}:<port>; {context}"
        );
        assert!(
            line["time"]
                .as_str()
                .is_some_and(|t| t.len() >= 20 && t.starts_with("20")),
            "{context}"
        );
        assert_eq!(&line["sandbox_router"], record, "{context}");
        let fields: BTreeSet<&str> = line["sandbox_router"]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let expected_fields: BTreeSet<&str> = record
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, expected_fields, "{context}");
    }
}

fn pretty(lines: &[Value]) -> String {
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- counters ----

/// Every decision the issue's configuration can produce with sequential requests, and the
/// per-sandbox series they create.
#[tokio::test]
async fn decision_counters_reach_stats_and_prometheus_with_tags() {
    let env = start().await;
    let mut connection = Connection::open(env.addr(), Protocol::Http1, None)
        .await
        .expect("connect");
    let requests: Vec<(TestRequest, u16)> = vec![
        (
            TestRequest::get("payment", "/").header("x-sandbox", KEY),
            200,
        ), // routed
        (
            TestRequest::get("payment", "/").header("x-sandbox", KEY),
            200,
        ), // routed
        (
            TestRequest::get("catalog", "/").header("x-sandbox", KEY),
            200,
        ), // baseline
        (
            TestRequest::post("catalog", "/").header("x-sandbox", KEY),
            403,
        ), // write_denied
        (
            TestRequest::get("payment", "/").header("x-sandbox", "nope"),
            200,
        ), // unknown_key
        (
            TestRequest::get("payment", "/").header("x-sandbox", "nope-2"),
            200,
        ), // unknown_key
        (
            TestRequest::get("payment", "/").header("x-sandbox", EXPIRED_KEY),
            200,
        ), // expired
        (
            TestRequest::get("payment", "/").header("x-sandbox", "bad key"),
            200,
        ), // invalid_key
        (
            TestRequest::get("payment", "/").header("x-sandbox", DOTTED_KEY),
            200,
        ), // routed
        (TestRequest::get("payment", "/"), 200), // keyless
    ];
    for (request, status) in requests {
        let response = connection.send(request).await.expect("request");
        assert_eq!(response.status, status, "{response:?}");
    }
    // untrusted, from another source address
    let response = env
        .send(
            TestRequest::get("payment", "/")
                .header("x-sandbox", KEY)
                .source(untrusted_source()),
        )
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &["untrusted"]);
    // 3 tokens of feature-x are spent (2 routed, 1 baseline): 2 more, then rate_limited.
    for status in [200, 200, 429] {
        let response = connection
            .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
            .await
            .expect("request");
        assert_eq!(response.status, status, "{response:?}");
    }

    let totals = [
        ("routed", 5),
        ("baseline", 1),
        ("write_denied", 1),
        ("unknown_key", 2),
        ("expired", 1),
        ("invalid_key", 1),
        ("untrusted", 1),
        ("rate_limited", 1),
    ];
    for (decision, count) in totals {
        env.envoy
            .wait_for_stat_eq(
                &format!("wasmcustom.sandbox_router.requests_total.decision.{decision}"),
                count,
                STAT_DEADLINE,
            )
            .await;
    }
    let per_sandbox = [
        (KEY, "routed", 4),
        (KEY, "baseline", 1),
        (KEY, "write_denied", 1),
        (KEY, "rate_limited", 1),
        (EXPIRED_KEY, "expired", 1),
        (DOTTED_KEY, "routed", 1),
    ];
    for (key, decision, count) in per_sandbox {
        env.envoy
            .wait_for_stat_eq(
                &format!(
                    "wasmcustom.sandbox_router.sandbox_requests.decision.{decision}.sandbox.{key}"
                ),
                count,
                STAT_DEADLINE,
            )
            .await;
    }
    // Nothing else: no per-sandbox series for unknown, invalid or untrusted keys.
    let names: BTreeSet<String> = env
        .envoy
        .stats()
        .await
        .into_keys()
        .filter(|name| name.starts_with("wasmcustom.sandbox_router."))
        .collect();
    // Every decision's total exists from the moment the configuration is applied (at 0 until
    // its first request); per-sandbox series only for what happened to registered sandboxes.
    let expected: BTreeSet<String> = ALL_DECISIONS
        .iter()
        .map(|d| format!("wasmcustom.sandbox_router.requests_total.decision.{d}"))
        .chain(per_sandbox.iter().map(|(k, d, _)| {
            format!("wasmcustom.sandbox_router.sandbox_requests.decision.{d}.sandbox.{k}")
        }))
        .collect();
    assert_eq!(names, expected);

    // The Prometheus view: the decision and the sandbox are labels.
    let scrape = env.envoy.prometheus().await;
    for (decision, count) in totals {
        assert_eq!(
            scrape.value("sandbox_router_requests_total", &[("decision", decision)]),
            Some(count as f64),
            "{decision}:\n{}",
            scrape.lines_with("sandbox_router")
        );
    }
    for (key, decision, count) in per_sandbox {
        assert_eq!(
            scrape.value(
                "sandbox_router_sandbox_requests",
                &[("decision", decision), ("sandbox", key)]
            ),
            Some(count as f64),
            "{key} {decision}:\n{}",
            scrape.lines_with("sandbox_router")
        );
    }
    assert_eq!(
        scrape.series("sandbox_router_").len(),
        ALL_DECISIONS.len() + per_sandbox.len(),
        "{}",
        scrape.lines_with("sandbox_router")
    );

    // The counters move with further requests.
    for _ in 0..3 {
        let response = connection
            .send(TestRequest::get("payment", "/").header("x-sandbox", DOTTED_KEY))
            .await
            .expect("request");
        expect::routed_to(&response, PAYMENT_SANDBOX);
    }
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.routed",
            8,
            STAT_DEADLINE,
        )
        .await;
    env.envoy
        .wait_for_stat_eq(
            &format!(
                "wasmcustom.sandbox_router.sandbox_requests.decision.routed.sandbox.{DOTTED_KEY}"
            ),
            4,
            STAT_DEADLINE,
        )
        .await;
    let scrape = env.envoy.prometheus().await;
    assert_eq!(
        scrape.value("sandbox_router_requests_total", &[("decision", "routed")]),
        Some(8.0)
    );
    assert_eq!(
        scrape.value(
            "sandbox_router_sandbox_requests",
            &[("decision", "routed"), ("sandbox", DOTTED_KEY)]
        ),
        Some(4.0)
    );
    assert_eq!(
        scrape.value(
            "sandbox_router_sandbox_requests",
            &[("decision", "routed"), ("sandbox", KEY)]
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn made_up_keys_create_no_series_beyond_the_unknown_key_total() {
    let env = start().await;
    let made_up_request = |i: usize, key: Option<&str>| {
        let (request, header) = match i % 4 {
            0 => (TestRequest::get("payment", "/"), "x-sandbox"),
            1 => (TestRequest::get("payment", "/"), "baggage"),
            2 => (TestRequest::get("catalog", "/"), "ot-baggage-sandbox"),
            _ => (TestRequest::post("inventory", "/"), "uberctx-sandbox"),
        };
        match (key, header) {
            (None, _) => request,
            (Some(key), "baggage") => request.header(header, &format!("sandbox={key}")),
            (Some(key), _) => request.header(header, key),
        }
    };
    let mut connection = Connection::open(env.addr(), Protocol::H2c, None)
        .await
        .expect("connect");
    // Warm up: the same requests without a key (so Envoy's own per-cluster and HTTP/2 series
    // exist), and one sandbox request.
    for i in 0..4 {
        let response = connection
            .send(made_up_request(i, None))
            .await
            .expect("request");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let response = connection
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await
        .expect("request");
    expect::routed_to(&response, PAYMENT_SANDBOX);
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.routed",
            1,
            STAT_DEADLINE,
        )
        .await;
    let before = env.envoy.prometheus().await;
    let stats_before: BTreeSet<String> = env.envoy.stats().await.into_keys().collect();

    let keys: Vec<String> = (0..200).map(|i| format!("made-up-{i:03}-zq")).collect();
    for (i, key) in keys.iter().enumerate() {
        let response = connection
            .send(made_up_request(i, Some(key)))
            .await
            .expect("request");
        assert_eq!(response.status, 200, "{response:?}");
        let echo = response.echo();
        assert!(!echo.upstream().contains("feature-x"), "{echo:?}");
    }
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.unknown_key",
            200,
            STAT_DEADLINE,
        )
        .await;

    let after = env.envoy.prometheus().await;
    let before_series: BTreeSet<String> = before.series("sandbox_router_").into_iter().collect();
    let after_series: BTreeSet<String> = after.series("sandbox_router_").into_iter().collect();
    // Not one new series: the unknown-key total existed (at 0) before the first made-up key.
    let added: Vec<&String> = after_series.difference(&before_series).collect();
    assert!(
        added.is_empty(),
        "{added:?}\n{}",
        after.lines_with("sandbox_router")
    );
    assert_eq!(
        before.value(
            "sandbox_router_requests_total",
            &[("decision", "unknown_key")]
        ),
        Some(0.0)
    );
    assert_eq!(
        after.value(
            "sandbox_router_requests_total",
            &[("decision", "unknown_key")]
        ),
        Some(200.0)
    );
    // No Envoy series at all (Prometheus or /stats) grew from the made-up keys.
    assert_eq!(
        after.samples.len(),
        before.samples.len(),
        "series appeared: {:?}",
        after
            .samples
            .iter()
            .map(|s| s.series())
            .filter(|s| !before.samples.iter().any(|b| b.series() == *s))
            .collect::<Vec<_>>()
    );
    assert!(!after.text.contains("-zq"), "{}", after.lines_with("-zq"));
    let stats_after: BTreeSet<String> = env.envoy.stats().await.into_keys().collect();
    let new_stats: Vec<&String> = stats_after.difference(&stats_before).collect();
    assert!(new_stats.is_empty(), "{new_stats:?}");
    // The audit log still records each of them (the key is data there, not a label).
    let lines = env.audit_log().wait_for_records(201, DEFAULT_WAIT).await;
    let logged: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["sandbox_router"]["key"].as_str())
        .collect();
    for key in &keys {
        assert!(logged.contains(key.as_str()), "{key} not in the audit log");
    }
    every_record_is_an_unknown_key(&lines[1..]);
}

/// Records of made-up keys: `unknown_key`, no owner.
fn every_record_is_an_unknown_key(lines: &[Value]) {
    for line in lines {
        assert_eq!(line["sandbox_router"]["decision"], "unknown_key", "{line}");
        assert_eq!(line["sandbox_router"].get("owner"), None, "{line}");
    }
}

/// The README's Prometheus section: the series it shows are what the shipped
/// `envoy-config/observability.yaml` stats tags produce (the tests' bootstraps use that file's
/// tags, read from it), and the tag extractors it quotes are that file's.
#[tokio::test]
async fn the_readme_prometheus_names_are_what_the_shipped_stats_tags_produce() {
    let readme_path = integration_tests::paths::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    for tag in ["decision", "sandbox"] {
        let regex = observability::stats_tag_regex(tag);
        assert!(
            readme.contains(&format!("`{regex}` for `{tag}`")),
            "README does not quote the shipped `{tag}` extractor `{regex}`"
        );
    }
    let after = readme
        .split_once("Prometheus sees:")
        .expect("README: `Prometheus sees:`")
        .1;
    let block = after
        .split("```")
        .nth(1)
        .expect("README: a code block after `Prometheus sees:`");
    // The first line is the rest of the fence (its language tag).
    let shown: Vec<Sample> = block
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .flat_map(|line| Scrape::parse(&format!("{line} 0")).samples)
        .collect();
    assert_eq!(shown.len(), 4, "README series: {block}");

    // Traffic that produces every series the README shows: feature-x routed, then limited; its
    // circuit series exist (at 0) once it has a breaker.
    let mut config = issue_config();
    config["sandboxes"][KEY]["circuit_breaker"] = serde_json::json!({});
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        audit_log: true,
        stats_tags: true,
        ..SandboxOptions::default()
    })
    .await;
    for status in [200, 200, 200, 200, 200, 429] {
        let response = env
            .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
            .await;
        assert_eq!(response.status, status, "{response:?}");
    }
    env.envoy
        .wait_for_stat_eq(
            "wasmcustom.sandbox_router.requests_total.decision.rate_limited",
            1,
            STAT_DEADLINE,
        )
        .await;
    let scrape = env.envoy.prometheus().await;
    for series in &shown {
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            scrape.value(&series.name, &labels).is_some(),
            "README shows {}, the scrape has:\n{}",
            series.series(),
            scrape.lines_with("sandbox_router")
        );
    }
}
