//! The README's PromQL, evaluated by a real Prometheus: an Envoy with the shipped `stats_tags`
//! routes, throttles, refuses untrusted and mistyped keys and trips a circuit breaker; a
//! Prometheus scrapes its `/stats/prometheus`; every query in the README's "Audit and
//! observability" section must return exactly the series this traffic calls for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use integration_tests::envoy::Sample;
use integration_tests::promql::{self, Prometheus};
use integration_tests::sandbox::{
    self, SandboxOptions, INVENTORY_SANDBOX_CLUSTER, KEY, PAYMENT_SANDBOX,
    PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::upstream::Behavior;
use integration_tests::{observability, paths, skip, SandboxEnv, TestRequest};
use serde_json::json;

const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);
const SCRAPED_WITHIN: Duration = Duration::from_secs(30);
/// The throttled sandbox; `feature-x` is the one whose circuit opens.
const THROTTLED_KEY: &str = "feature-y";
const EXPIRED_KEY: &str = "old-feature";
/// The README section whose `promql` blocks are checked.
const SECTION: &str = "## Audit and observability";

/// feature-x (payment) with a breaker; feature-y (inventory, cluster mode) with a tiny rate
/// limit and a breaker of its own that never trips; an expired sandbox; only 127.0.0.1 trusted.
fn config() -> serde_json::Value {
    json!({
        "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
        "namespace": sandbox::NAMESPACE,
        "cluster_header": sandbox::CLUSTER_HEADER,
        "trust": { "sources": ["127.0.0.1/32"], "untrusted": "strip" },
        "sandboxes": {
            KEY: {
                "routes": { "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY } },
                "circuit_breaker": { "consecutive_failures": 2, "min_requests": 0, "open_seconds": 300 }
            },
            THROTTLED_KEY: {
                "routes": {
                    "inventory.shop.svc.cluster.local": { "cluster": INVENTORY_SANDBOX_CLUSTER }
                },
                "rate_limit": { "requests_per_second": 0.01, "burst": 1 },
                "circuit_breaker": {}
            },
            EXPIRED_KEY: {
                "routes": { "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY } },
                "expires_at": "2020-01-01T00:00:00Z"
            }
        }
    })
}

/// What a query must return: exactly these label sets (without Prometheus's `job` and
/// `instance`), each with a value that passes `value`.
struct Expected {
    series: Vec<Vec<(&'static str, &'static str)>>,
    value: Value,
}

#[derive(Clone, Copy, Debug)]
enum Value {
    /// A rate: above zero.
    Positive,
    Exactly(f64),
    /// `increase()`, which Prometheus extrapolates to the window's end: the count it rounds to.
    RoundsTo(f64),
}

impl Value {
    fn holds(self, value: f64) -> bool {
        match self {
            Value::Positive => value > 0.0,
            Value::Exactly(expected) => value == expected,
            Value::RoundsTo(expected) => value.round() == expected,
        }
    }
}

/// The expected answer of each README query to the traffic of the test, by query text.
fn expectations() -> BTreeMap<&'static str, Expected> {
    let one = |labels: Vec<(&'static str, &'static str)>, value| Expected {
        series: vec![labels],
        value,
    };
    BTreeMap::from([
        (
            r#"sandbox_router_requests_total{decision="routed"}"#,
            one(vec![("decision", "routed")], Value::Exactly(4.0)),
        ),
        (
            r#"sandbox_router_sandbox_requests{decision="routed",sandbox="feature-x"}"#,
            one(
                vec![("decision", "routed"), ("sandbox", KEY)],
                Value::Exactly(3.0),
            ),
        ),
        (
            r#"sandbox_router_circuit_opened{sandbox="feature-x"}"#,
            one(vec![("sandbox", KEY)], Value::Exactly(1.0)),
        ),
        (
            r#"sandbox_router_circuit_open{sandbox="feature-x"}"#,
            one(vec![("sandbox", KEY)], Value::Exactly(1.0)),
        ),
        (
            r#"sum by (sandbox) (rate(sandbox_router_sandbox_requests{decision=~"rate_limited|in_flight_rejected"}[5m]))"#,
            one(vec![("sandbox", THROTTLED_KEY)], Value::Positive),
        ),
        (
            r#"rate(sandbox_router_requests_total{decision="untrusted"}[5m])"#,
            one(vec![("decision", "untrusted")], Value::Positive),
        ),
        (
            r#"rate(sandbox_router_requests_total{decision=~"unknown_key|expired|invalid_key"}[15m])"#,
            Expected {
                series: vec![
                    vec![("decision", "expired")],
                    vec![("decision", "invalid_key")],
                    vec![("decision", "unknown_key")],
                ],
                value: Value::Positive,
            },
        ),
        (
            "sandbox_router_circuit_open == 1",
            one(vec![("sandbox", KEY)], Value::Exactly(1.0)),
        ),
        (
            "sum by (sandbox) (increase(sandbox_router_circuit_opened[1h])) > 0",
            one(vec![("sandbox", KEY)], Value::RoundsTo(1.0)),
        ),
    ])
}

/// Every query in the `promql` blocks of the README's observability section.
fn readme_queries() -> Vec<String> {
    let path = paths::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut queries = Vec::new();
    for block in section.split("```promql\n").skip(1) {
        let block = &block[..block.find("```").expect("a closed promql block")];
        queries.extend(
            block
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned),
        );
    }
    queries
}

fn untrusted_source() -> IpAddr {
    "127.0.0.3".parse().expect("an IP")
}

/// One of each kind of keyed request the queries are about (the throttled sandbox sends
/// `throttled` requests).
async fn drive_keyed_traffic(env: &SandboxEnv, throttled: usize) {
    let keyed =
        |authority: &str, key: &str| TestRequest::get(authority, "/").header("x-sandbox", key);
    for _ in 0..throttled {
        env.send(keyed("inventory", THROTTLED_KEY)).await;
    }
    for (request, status) in [
        (keyed("payment", KEY).source(untrusted_source()), 200),
        (keyed("payment", "no-such-sandbox"), 200),
        (keyed("payment", EXPIRED_KEY), 200),
        (keyed("payment", "not a key"), 200),
    ] {
        let response = env.send(request).await;
        assert_eq!(response.status, status, "{response:?}");
    }
}

/// The `decision` label → value of every `sandbox_router_requests_total` series.
fn by_decision(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| {
            (
                s.labels.get("decision").cloned().unwrap_or_default(),
                s.value,
            )
        })
        .collect()
}

/// Every decision's total exists from the moment the configuration is applied, at 0 until its
/// first request; `expected` names those above 0.
fn totals(expected: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let mut totals: BTreeMap<String, f64> = observability::ALL_DECISIONS
        .iter()
        .map(|d| ((*d).to_owned(), 0.0))
        .collect();
    for (decision, value) in expected {
        totals.insert((*decision).to_owned(), *value);
    }
    totals
}

#[tokio::test]
async fn the_readme_promql_returns_what_it_says() {
    let binary = match promql::binary() {
        Ok(binary) => binary,
        Err(why) => {
            skip::prerequisite_missing("the README's PromQL through Prometheus", &why);
            return;
        }
    };
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config()),
        stats_tags: true,
        ..SandboxOptions::default()
    })
    .await;
    let prometheus = Prometheus::start(
        &binary,
        env.envoy.admin_addr(),
        "/stats/prometheus",
        SCRAPE_INTERVAL,
    )
    .await;

    // First every series appears; after a scrape, the counters rise.
    let ok = env
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await;
    assert_eq!(ok.upstream().as_deref(), Some(PAYMENT_SANDBOX), "{ok:?}");
    drive_keyed_traffic(&env, 2).await;
    let first = totals(&[
        ("routed", 2.0),
        ("rate_limited", 1.0),
        ("untrusted", 1.0),
        ("unknown_key", 1.0),
        ("expired", 1.0),
        ("invalid_key", 1.0),
    ]);
    prometheus
        .query_until("sandbox_router_requests_total", SCRAPED_WITHIN, |r| {
            by_decision(r) == first
        })
        .await;

    drive_keyed_traffic(&env, 3).await;
    env.upstream(PAYMENT_SANDBOX).behave(Behavior::Status(503));
    for status in [503, 503, 503] {
        let response = env
            .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
            .await;
        assert_eq!(response.status, status, "{response:?}");
    }
    let second = totals(&[
        ("routed", 4.0),
        ("rate_limited", 4.0),
        ("untrusted", 2.0),
        ("unknown_key", 2.0),
        ("expired", 2.0),
        ("invalid_key", 2.0),
        ("circuit_open", 1.0),
    ]);
    prometheus
        .query_until("sandbox_router_requests_total", SCRAPED_WITHIN, |r| {
            by_decision(r) == second
        })
        .await;
    prometheus
        .query_until(
            r#"sandbox_router_circuit_opened{sandbox="feature-x"} == 1"#,
            SCRAPED_WITHIN,
            |r| r.len() == 1,
        )
        .await;
    // Enough samples that increase() extrapolates by well under half a trip.
    prometheus
        .query_until(
            r#"count_over_time(sandbox_router_circuit_opened{sandbox="feature-x"}[1h]) >= 6"#,
            SCRAPED_WITHIN,
            |r| r.len() == 1,
        )
        .await;

    let expectations = expectations();
    let queries = readme_queries();
    assert_eq!(
        queries.len(),
        expectations.len(),
        "README queries {queries:#?}"
    );
    for query in &queries {
        let expected = expectations
            .get(query.as_str())
            .unwrap_or_else(|| panic!("a README query this test does not know: {query}"));
        let result = prometheus.query(query).await;
        let mut series: Vec<Vec<(String, String)>> = result
            .iter()
            .map(|sample| {
                sample
                    .labels
                    .iter()
                    .filter(|(name, _)| !matches!(name.as_str(), "job" | "instance"))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            })
            .collect();
        series.sort();
        let wanted: Vec<Vec<(String, String)>> = expected
            .series
            .iter()
            .map(|labels| {
                labels
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect()
            })
            .collect();
        assert_eq!(series, wanted, "{query}: {result:?}");
        for sample in &result {
            assert!(
                expected.value.holds(sample.value),
                "{query}: {sample} is not {:?}",
                expected.value
            );
        }
    }
}
