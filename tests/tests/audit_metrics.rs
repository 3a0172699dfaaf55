//! Audit and metrics (issue 5): every keyed request leaves an audit record in Envoy filter
//! state `wasm.sandbox_router`, which a stock file access log (with a CEL filter: keyed requests
//! only) writes as one JSON line; decision counters flushed to Envoy stats, tagged by decision
//! and sandbox through bootstrap `stats_tags`, and exported by `/stats/prometheus`.
//!
//! The traffic of each test is a table of cases: a request (method, authority, path, headers,
//! protocol, source) and its one answer (served by an upstream with a decision, or refused by
//! the filter), plus, for the audit test, the record its line must hold. Every failure message
//! names the case.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use integration_tests::audit::DEFAULT_WAIT;
use integration_tests::envoy::{Sample, Scrape};
use integration_tests::expect::{self, Outcome, INVALID_KEY, NO_KEY, NO_OVERRIDE, UNKNOWN_KEY};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_BASELINE,
    INVENTORY_SANDBOX, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::{observability, Connection, Protocol, SandboxEnv, TestRequest};
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

const TRUSTED_SOURCE: &str = "127.0.0.1";
const UNTRUSTED_SOURCE: &str = "127.0.0.3";

const PAYMENT_SERVICE: &str = "payment.shop.svc.cluster.local";
const PAYMENT_TARGET: &str = "authority:payment-feature-x.shop.svc.cluster.local";
const ALICE: &str = r#"{"user":"alice@example.com","change":"shop#1234"}"#;
const BOB: &str = r#"{"user":"bob@example.com","change":null}"#;

// ---- cases ----

/// What a request must get back.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Served by an upstream, with this decision.
    Served(Outcome),
    /// Answered by the filter itself: this status, no upstream, exactly this debug header.
    Refused { status: u16, debug: &'static str },
}

impl Answer {
    /// The status the client gets, and the audit line records.
    fn status(self) -> u16 {
        match self {
            Answer::Served(_) => 200,
            Answer::Refused { status, .. } => status,
        }
    }
}

const ROUTED: Answer = Answer::Served(Outcome::Routed {
    upstream: PAYMENT_SANDBOX,
});

const fn baseline(upstream: &'static str, reason: &'static str) -> Answer {
    Answer::Served(Outcome::Baseline { upstream, reason })
}

const WRITE_DENIED: Answer = Answer::Refused {
    status: 403,
    debug: "rejected; key=feature-x; reason=write_denied",
};

const RATE_LIMITED: Answer = Answer::Refused {
    status: 429,
    debug: "rejected; key=feature-x; reason=rate_limited",
};

/// The fields of an audit record that the request itself does not give (method, path and
/// authority are the request's).
#[derive(Clone, Copy, Debug)]
struct Audit {
    key: Option<&'static str>,
    /// The sandbox's owner as JSON text; `None`: the record has no `owner` field.
    owner: Option<&'static str>,
    service: Option<&'static str>,
    target: Option<&'static str>,
    decision: &'static str,
    reason: &'static str,
}

/// One request and the one answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    authority: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    protocol: Protocol,
    source: &'static str,
    answer: Answer,
    /// Header → every value the upstream must receive.
    forwarded: Vec<(&'static str, Vec<&'static str>)>,
    /// Response headers the client must get, with these values.
    response_headers: Vec<(&'static str, &'static str)>,
    /// The record of the request's audit line; `None`: keyless, so no line.
    audit: Option<Audit>,
}

impl Case {
    /// An HTTP/1.1 request from the trusted source, without headers.
    fn new(
        name: &'static str,
        method: Method,
        authority: &'static str,
        path: &'static str,
        answer: Answer,
    ) -> Case {
        Case {
            name,
            method,
            authority,
            path,
            headers: Vec::new(),
            protocol: Protocol::Http1,
            source: TRUSTED_SOURCE,
            answer,
            forwarded: Vec::new(),
            response_headers: Vec::new(),
            audit: None,
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    fn h2c(mut self) -> Case {
        self.protocol = Protocol::H2c;
        self
    }

    fn from(mut self, source: &'static str) -> Case {
        self.source = source;
        self
    }

    fn forwards(mut self, header: &'static str, values: &[&'static str]) -> Case {
        self.forwarded.push((header, values.to_vec()));
        self
    }

    fn responds_with(mut self, header: &'static str, value: &'static str) -> Case {
        self.response_headers.push((header, value));
        self
    }

    fn audited(mut self, audit: Audit) -> Case {
        self.audit = Some(audit);
        self
    }

    fn request(&self) -> TestRequest {
        let source: IpAddr = self.source.parse().expect("an IP address");
        self.headers.iter().fold(
            TestRequest::new(self.method.clone(), self.authority, self.path)
                .protocol(self.protocol)
                .source(source),
            |request, (name, value)| request.header(name, value),
        )
    }

    /// The `sandbox_router` object its audit line must hold, if it has a line.
    fn record(&self) -> Option<Value> {
        let audit = self.audit?;
        let mut record = json!({
            "key": audit.key,
            "method": self.method.as_str(),
            "path": self.path,
            "service": audit.service,
            "authority": self.authority,
            "target": audit.target,
            "decision": audit.decision,
            "reason": audit.reason,
        });
        if let Some(owner) = audit.owner {
            record["owner"] = serde_json::from_str(owner).expect("owner JSON");
        }
        Some(record)
    }
}

/// Sends `case` and asserts its answer, what the upstream received and the response headers,
/// naming the case in every message.
async fn send_and_check(env: &SandboxEnv, case: &Case) {
    let name = case.name;
    let response = env.send(case.request()).await;
    match case.answer {
        Answer::Served(outcome) => {
            let echo = expect::outcome(name, &response, outcome);
            for (header, values) in &case.forwarded {
                assert_eq!(
                    echo.header_values(header),
                    *values,
                    "{name}: {header} received by the upstream: {:?}",
                    echo.0
                );
            }
        }
        Answer::Refused { status, debug } => {
            assert!(
                case.forwarded.is_empty(),
                "{name}: a refused request reaches no upstream to forward to"
            );
            assert_eq!(response.status, status, "{name}: {response:?}");
            assert_eq!(response.upstream(), None, "{name}: {response:?}");
            assert_eq!(
                sandbox::decision(&response).as_deref(),
                Some(debug),
                "{name}: {response:?}"
            );
        }
    }
    for (header, value) in &case.response_headers {
        assert_eq!(
            response.header(header).as_deref(),
            Some(*value),
            "{name}: response header {header}: {response:?}"
        );
    }
}

// ---- the audit log ----

/// `feature-x` (owned by alice): routed to payment's sandbox authority.
const PAYMENT_ROUTED: Audit = Audit {
    key: Some(KEY),
    owner: Some(ALICE),
    service: Some(PAYMENT_SERVICE),
    target: Some(PAYMENT_TARGET),
    decision: "routed",
    reason: "override",
};

/// `feature-x` left on the baseline of `service` (`None`: one no sandbox names).
const fn no_override(service: Option<&'static str>) -> Audit {
    Audit {
        key: Some(KEY),
        owner: Some(ALICE),
        service,
        target: None,
        decision: "baseline",
        reason: "no-override",
    }
}

/// Requests for every decision a sequence of requests can reach, in order (the budget of
/// `feature-x` is 5 requests, refilled at 0.01/s), with keyless requests between them. The last
/// case is keyless.
fn audited_cases() -> Vec<Case> {
    vec![
        Case::new(
            "keyless read",
            Method::GET,
            "payment",
            "/",
            baseline(PAYMENT_BASELINE, NO_KEY),
        ),
        Case::new("routed", Method::POST, "payment:8080", "/orders", ROUTED)
            .header("baggage", "sandbox=feature-x")
            .audited(Audit {
                target: Some("authority:payment-feature-x.shop.svc.cluster.local:8080"),
                ..PAYMENT_ROUTED
            }),
        Case::new(
            "routed, cluster mode",
            Method::GET,
            "inventory.shop",
            "/stock",
            Answer::Served(Outcome::Routed {
                upstream: INVENTORY_SANDBOX,
            }),
        )
        .header("x-sandbox", KEY)
        .h2c()
        .audited(Audit {
            key: Some(KEY),
            owner: Some(ALICE),
            service: Some("inventory.shop.svc.cluster.local"),
            target: Some("cluster:inventory-feature-x"),
            decision: "routed",
            reason: "override",
        }),
        Case::new(
            "baseline: a service no sandbox names",
            Method::GET,
            "catalog",
            "/items?id=1",
            baseline(CATALOG_BASELINE, NO_OVERRIDE),
        )
        .header("x-sandbox", KEY)
        .audited(no_override(None)),
        Case::new(
            "baseline: the write exception, a service the router knows by name",
            Method::POST,
            "audit-log",
            "/entries",
            baseline(DEFAULT_UPSTREAM, NO_OVERRIDE),
        )
        .header("x-sandbox", KEY)
        .audited(no_override(Some("audit-log.shop.svc.cluster.local"))),
        Case::new(
            "write_denied",
            Method::DELETE,
            "catalog",
            "/items/7",
            WRITE_DENIED,
        )
        .header("x-sandbox", KEY)
        .audited(Audit {
            decision: "write_denied",
            reason: "sandbox_router_baseline_write_denied",
            ..no_override(None)
        }),
        Case::new(
            "unknown_key",
            Method::GET,
            "payment",
            "/",
            baseline(PAYMENT_BASELINE, UNKNOWN_KEY),
        )
        .header("baggage", "sandbox=nope")
        .audited(Audit {
            key: Some("nope"),
            owner: None,
            service: None,
            target: None,
            decision: "unknown_key",
            reason: "unknown-key",
        }),
        Case::new(
            "untrusted (stripped)",
            Method::POST,
            "payment",
            "/orders",
            baseline(PAYMENT_BASELINE, "untrusted"),
        )
        .header("baggage", "sandbox=feature-x,user=eve")
        .from(UNTRUSTED_SOURCE)
        .forwards("baggage", &["user=eve"])
        .audited(Audit {
            key: Some(KEY),
            owner: None,
            service: None,
            target: None,
            decision: "untrusted",
            reason: "untrusted",
        }),
        Case::new(
            "expired",
            Method::GET,
            "payment",
            "/",
            baseline(PAYMENT_BASELINE, "expired"),
        )
        .header("x-sandbox", EXPIRED_KEY)
        .audited(Audit {
            key: Some(EXPIRED_KEY),
            owner: Some(BOB),
            service: Some(PAYMENT_SERVICE),
            target: None,
            decision: "expired",
            reason: "expired",
        }),
        Case::new(
            "invalid_key",
            Method::GET,
            "payment",
            "/",
            baseline(PAYMENT_BASELINE, INVALID_KEY),
        )
        .header("x-sandbox", "not a key!")
        .audited(Audit {
            key: None,
            owner: None,
            service: None,
            target: None,
            decision: "invalid_key",
            reason: "invalid-key",
        }),
        Case::new(
            "keyless write",
            Method::POST,
            "catalog",
            "/items",
            baseline(CATALOG_BASELINE, NO_KEY),
        ),
        // 4 of the 5 tokens are spent (2 routed + catalog + audit-log): this takes the last.
        Case::new(
            "routed with the last token",
            Method::GET,
            "payment",
            "/pay",
            ROUTED,
        )
        .header("x-sandbox", KEY)
        .responds_with("x-ratelimit-remaining", "0")
        .audited(PAYMENT_ROUTED),
        Case::new("rate_limited", Method::GET, "payment", "/pay", RATE_LIMITED)
            .header("x-sandbox", KEY)
            .audited(Audit {
                decision: "rate_limited",
                reason: "sandbox_router_rate_limited",
                ..PAYMENT_ROUTED
            }),
        Case::new(
            "keyless read, last",
            Method::GET,
            "catalog",
            "/",
            baseline(CATALOG_BASELINE, NO_KEY),
        ),
    ]
}

/// A keyed request sent after every case, whose line marks the end of theirs.
fn marker() -> Case {
    Case::new("marker", Method::GET, "payment", "/marker", ROUTED)
        .header("x-sandbox", DOTTED_KEY)
        .audited(Audit {
            key: Some(DOTTED_KEY),
            owner: None,
            ..PAYMENT_ROUTED
        })
}

/// The audit line of `case`: its status, source, a time, and exactly its record.
fn assert_line(case: &Case, line: &Value) {
    let context = format!("{}: {line}", case.name);
    let record = case
        .record()
        .unwrap_or_else(|| panic!("{context}: a line for a keyless case"));
    assert_eq!(line["status"], json!(case.answer.status()), "{context}");
    let logged_source = line["source"].as_str().unwrap_or_default();
    assert!(
        logged_source.starts_with(&format!("{}:", case.source)),
        "source {logged_source:?}, expected {}:<port>; {context}",
        case.source
    );
    assert!(
        line["time"]
            .as_str()
            .is_some_and(|t| t.len() >= 20 && t.starts_with("20")),
        "{context}"
    );
    assert_eq!(line["sandbox_router"], record, "{context}");
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

#[tokio::test]
async fn every_keyed_request_writes_one_audit_line_and_keyless_ones_none() {
    let env = start().await;
    let cases = audited_cases();
    for case in &cases {
        send_and_check(&env, case).await;
    }
    let audited: Vec<&Case> = cases.iter().filter(|case| case.audit.is_some()).collect();
    let lines = env
        .audit_log()
        .wait_for_records(audited.len(), DEFAULT_WAIT)
        .await;
    // The keyless request that came last is logged (if at all) after every keyed one: give
    // Envoy a moment to flush it by waiting for one more keyed line.
    let marker = marker();
    send_and_check(&env, &marker).await;
    let lines_with_marker = env
        .audit_log()
        .wait_for_records(audited.len() + 1, DEFAULT_WAIT)
        .await;
    assert_eq!(
        lines_with_marker.len(),
        audited.len() + 1,
        "exactly one line per keyed request:\n{}",
        pretty(&lines_with_marker)
    );
    assert_eq!(lines.len(), audited.len(), "{}", pretty(&lines));
    for (line, case) in lines.iter().zip(&audited) {
        assert_line(case, line);
    }
    assert_line(
        &marker,
        lines_with_marker.last().expect("the marker's line"),
    );
}

fn pretty(lines: &[Value]) -> String {
    lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- counters ----

/// A decision's total: (decision, count).
type Total = (&'static str, u64);
/// A sandbox's count of a decision: (sandbox, decision, count).
type PerSandbox = (&'static str, &'static str, u64);

fn total_stat(decision: &str) -> String {
    format!("wasmcustom.sandbox_router.requests_total.decision.{decision}")
}

fn sandbox_stat(key: &str, decision: &str) -> String {
    format!("wasmcustom.sandbox_router.sandbox_requests.decision.{decision}.sandbox.{key}")
}

/// The counters reach these values in Envoy's stats, and Prometheus shows the same values with
/// the decision (and sandbox) as labels.
async fn assert_counters(env: &SandboxEnv, totals: &[Total], per_sandbox: &[PerSandbox]) {
    for (decision, count) in totals {
        env.envoy
            .wait_for_stat_eq(&total_stat(decision), *count, STAT_DEADLINE)
            .await;
    }
    for (key, decision, count) in per_sandbox {
        env.envoy
            .wait_for_stat_eq(&sandbox_stat(key, decision), *count, STAT_DEADLINE)
            .await;
    }
    let scrape = env.envoy.prometheus().await;
    for (decision, count) in totals {
        assert_eq!(
            scrape.value("sandbox_router_requests_total", &[("decision", decision)]),
            Some(*count as f64),
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
            Some(*count as f64),
            "{key} {decision}:\n{}",
            scrape.lines_with("sandbox_router")
        );
    }
}

/// `x-sandbox: <key>` to payment.
fn keyed(name: &'static str, key: &'static str, answer: Answer) -> Case {
    Case::new(name, Method::GET, "payment", "/", answer).header("x-sandbox", key)
}

/// Every decision the issue's configuration can produce with sequential requests (the budget
/// of `feature-x` is 5 requests).
fn counted_cases() -> Vec<Case> {
    vec![
        keyed("routed", KEY, ROUTED),
        keyed("routed again", KEY, ROUTED),
        Case::new(
            "baseline",
            Method::GET,
            "catalog",
            "/",
            baseline(CATALOG_BASELINE, NO_OVERRIDE),
        )
        .header("x-sandbox", KEY),
        Case::new("write_denied", Method::POST, "catalog", "/", WRITE_DENIED)
            .header("x-sandbox", KEY),
        keyed(
            "unknown_key",
            "nope",
            baseline(PAYMENT_BASELINE, UNKNOWN_KEY),
        ),
        keyed(
            "another unknown_key",
            "nope-2",
            baseline(PAYMENT_BASELINE, UNKNOWN_KEY),
        ),
        keyed(
            "expired",
            EXPIRED_KEY,
            baseline(PAYMENT_BASELINE, "expired"),
        ),
        keyed(
            "invalid_key",
            "bad key",
            baseline(PAYMENT_BASELINE, INVALID_KEY),
        ),
        keyed("routed, the second sandbox", DOTTED_KEY, ROUTED),
        Case::new(
            "keyless",
            Method::GET,
            "payment",
            "/",
            baseline(PAYMENT_BASELINE, NO_KEY),
        ),
        keyed("untrusted", KEY, baseline(PAYMENT_BASELINE, "untrusted")).from(UNTRUSTED_SOURCE),
        // 3 tokens of feature-x are spent (2 routed, 1 baseline): 2 more, then rate_limited.
        keyed("routed, 4th token", KEY, ROUTED),
        keyed("routed, 5th token", KEY, ROUTED),
        keyed("rate_limited", KEY, RATE_LIMITED),
    ]
}

#[tokio::test]
async fn decision_counters_reach_stats_and_prometheus_with_tags() {
    let env = start().await;
    for case in &counted_cases() {
        send_and_check(&env, case).await;
    }
    let totals: [Total; 8] = [
        ("routed", 5),
        ("baseline", 1),
        ("write_denied", 1),
        ("unknown_key", 2),
        ("expired", 1),
        ("invalid_key", 1),
        ("untrusted", 1),
        ("rate_limited", 1),
    ];
    // No per-sandbox series for unknown, invalid or untrusted keys.
    let per_sandbox: [PerSandbox; 6] = [
        (KEY, "routed", 4),
        (KEY, "baseline", 1),
        (KEY, "write_denied", 1),
        (KEY, "rate_limited", 1),
        (EXPIRED_KEY, "expired", 1),
        (DOTTED_KEY, "routed", 1),
    ];
    assert_counters(&env, &totals, &per_sandbox).await;

    // Nothing else. Every decision's total exists from the moment the configuration is applied
    // (at 0 until its first request); per-sandbox series only for what happened to registered
    // sandboxes.
    let names: BTreeSet<String> = env
        .envoy
        .stats()
        .await
        .into_keys()
        .filter(|name| name.starts_with("wasmcustom.sandbox_router."))
        .collect();
    let expected: BTreeSet<String> = observability::ALL_DECISIONS
        .iter()
        .map(|decision| total_stat(decision))
        .chain(
            per_sandbox
                .iter()
                .map(|(key, decision, _)| sandbox_stat(key, decision)),
        )
        .collect();
    assert_eq!(names, expected);
    let scrape = env.envoy.prometheus().await;
    assert_eq!(
        scrape.series("sandbox_router_").len(),
        observability::ALL_DECISIONS.len() + per_sandbox.len(),
        "{}",
        scrape.lines_with("sandbox_router")
    );

    // The counters move with further requests.
    for _ in 0..3 {
        send_and_check(
            &env,
            &keyed("routed, the second sandbox, again", DOTTED_KEY, ROUTED),
        )
        .await;
    }
    assert_counters(
        &env,
        &[("routed", 8)],
        &[(DOTTED_KEY, "routed", 4), (KEY, "routed", 4)],
    )
    .await;
}

/// How made-up keys arrive, in turn: the request's method and authority, the carrier, and the
/// baseline that answers.
struct Carrier {
    method: Method,
    authority: &'static str,
    header: &'static str,
    baseline: &'static str,
}

fn carriers() -> [Carrier; 4] {
    let carrier = |method, authority, header, baseline| Carrier {
        method,
        authority,
        header,
        baseline,
    };
    [
        carrier(Method::GET, "payment", "x-sandbox", PAYMENT_BASELINE),
        carrier(Method::GET, "payment", "baggage", PAYMENT_BASELINE),
        carrier(
            Method::GET,
            "catalog",
            "ot-baggage-sandbox",
            CATALOG_BASELINE,
        ),
        carrier(
            Method::POST,
            "inventory",
            "uberctx-sandbox",
            INVENTORY_BASELINE,
        ),
    ]
}

impl Carrier {
    /// The request, carrying `key` if any; and its case name.
    fn request(&self, key: Option<&str>) -> (TestRequest, String) {
        let request = TestRequest::new(self.method.clone(), self.authority, "/");
        let name = format!(
            "{} {} {}: {}",
            self.method,
            self.authority,
            self.header,
            key.unwrap_or("no key")
        );
        let request = match (key, self.header) {
            (None, _) => request,
            (Some(key), "baggage") => request.header(self.header, &format!("sandbox={key}")),
            (Some(key), _) => request.header(self.header, key),
        };
        (request, name)
    }

    fn answer(&self, reason: &'static str) -> Outcome {
        Outcome::Baseline {
            upstream: self.baseline,
            reason,
        }
    }
}

#[tokio::test]
async fn made_up_keys_create_no_series_beyond_the_unknown_key_total() {
    let env = start().await;
    let carriers = carriers();
    let mut connection = Connection::open(env.addr(), Protocol::H2c, None)
        .await
        .expect("connect");
    // Warm up: the same requests without a key (so Envoy's own per-cluster and HTTP/2 series
    // exist), and one sandbox request.
    for carrier in &carriers {
        let (request, name) = carrier.request(None);
        let response = connection.send(request).await.expect("request");
        expect::outcome(&name, &response, carrier.answer(NO_KEY));
    }
    let response = connection
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await
        .expect("request");
    expect::outcome(
        "warm-up, feature-x",
        &response,
        Outcome::Routed {
            upstream: PAYMENT_SANDBOX,
        },
    );
    env.envoy
        .wait_for_stat_eq(&total_stat("routed"), 1, STAT_DEADLINE)
        .await;
    let before = env.envoy.prometheus().await;
    let stats_before: BTreeSet<String> = env.envoy.stats().await.into_keys().collect();

    let keys: Vec<String> = (0..200).map(|i| format!("made-up-{i:03}-zq")).collect();
    for (carrier, key) in carriers.iter().cycle().zip(&keys) {
        let (request, name) = carrier.request(Some(key));
        let response = connection.send(request).await.expect("request");
        expect::outcome(&name, &response, carrier.answer(UNKNOWN_KEY));
    }
    env.envoy
        .wait_for_stat_eq(&total_stat("unknown_key"), 200, STAT_DEADLINE)
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
