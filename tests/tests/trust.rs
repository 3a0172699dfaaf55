//! Trust and policy (issue 5): routing keys are honoured only from `trust.sources` (the
//! downstream peer address); from anywhere else they are stripped from every carrier before
//! forwarding (or the request is refused). Unknown and expired keys, and the baseline write
//! guard.
//!
//! Every test connects from loopback addresses: 127.0.0.1 by default, other 127.0.0.0/8
//! addresses by binding the client socket, and ::1 through a listener on ::1. Tests are tables
//! of cases, each with its one expected answer; every failure message names the case.

use std::net::IpAddr;

use integration_tests::client::raw_http1_exchange;
use integration_tests::expect::{self, lacks_header, Outcome, NO_KEY, NO_OVERRIDE, UNKNOWN_KEY};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_BASELINE,
    INVENTORY_SANDBOX, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Echo, Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};

const UNTRUSTED: &str = "untrusted";
const EXPIRED: &str = "expired";
const UNTRUSTED_BODY: &str = "sandbox routing keys are not accepted from this source";

/// The default filter configuration with `trust` (and any other top-level fields) added.
fn config_with(fields: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("an object of fields") {
        config[name.as_str()] = value.clone();
    }
    config
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// Internal ranges only: 127.0.0.1 is an untrusted (internet) source.
fn internal_only(untrusted: &str) -> Value {
    config_with(json!({
        "trust": { "sources": ["10.0.0.0/8", "fd00::/8"], "untrusted": untrusted }
    }))
}

/// Left on `upstream` because the source is untrusted.
const fn untrusted_at(upstream: &'static str) -> Outcome {
    Outcome::Baseline {
        upstream,
        reason: UNTRUSTED,
    }
}

/// What a case must get back.
#[derive(Clone, Debug)]
enum Answer {
    /// Served by an upstream, with this decision.
    Served(Outcome),
    /// Answered by the filter itself, before any upstream: status and the exact body.
    Refused(u16, String),
}

/// Asserts `answer` of `response`, naming `case` in every message; returns what the upstream
/// received, if one did.
fn check(case: &str, response: &TestResponse, answer: &Answer) -> Option<Echo> {
    match answer {
        Answer::Served(outcome) => Some(expect::outcome(case, response, *outcome)),
        Answer::Refused(status, body) => {
            assert_eq!(response.status, *status, "{case}: {response:?}");
            assert_eq!(response.upstream(), None, "{case}: {response:?}");
            assert_eq!(response.body_text(), *body, "{case}: {response:?}");
            None
        }
    }
}

/// No routing carrier reached the upstream.
fn carries_no_key(case: &str, echo: &Echo) {
    for header in ["x-sandbox", "ot-baggage-sandbox", "uberctx-sandbox"] {
        assert_eq!(
            echo.header(header),
            None,
            "{case}: {header} reached the upstream: {:?}",
            echo.0
        );
    }
    for list in ["baggage", "tracestate"] {
        for value in echo.header_values(list) {
            assert!(
                !value.contains("sandbox"),
                "{case}: {list} still carries a sandbox member: {value:?} ({:?})",
                echo.0
            );
        }
    }
}

/// Header name → every value an upstream must receive (none: `vec![]`).
type Received = Vec<(&'static str, Vec<&'static str>)>;

/// The upstream received exactly these values of each header.
fn received(case: &str, echo: &Echo, expected: &[(&str, Vec<&str>)]) {
    for (name, values) in expected {
        assert_eq!(
            echo.header_values(name),
            *values,
            "{case}: header {name}; upstream received {:?}",
            echo.0
        );
    }
}

// ---- untrusted + strip ----

/// A strip case: its name, the headers sent, and what must arrive (header → exact values).
type StripCase = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, Vec<&'static str>)>,
);

fn strip_cases() -> Vec<StripCase> {
    vec![
        (
            "plain header",
            vec![("x-sandbox", "feature-x"), ("x-other", "1")],
            vec![("x-sandbox", vec![]), ("x-other", vec!["1"])],
        ),
        (
            "ot-baggage-*",
            vec![
                ("ot-baggage-sandbox", "feature-x"),
                ("ot-baggage-user", "alice"),
            ],
            vec![
                ("ot-baggage-sandbox", vec![]),
                ("ot-baggage-user", vec!["alice"]),
            ],
        ),
        (
            "uberctx-*",
            vec![("uberctx-sandbox", "feature-x"), ("uberctx-other", "y")],
            vec![("uberctx-sandbox", vec![]), ("uberctx-other", vec!["y"])],
        ),
        (
            "baggage member among others, with properties",
            vec![("baggage", "user=alice,sandbox=feature-x;ttl=3, tier=gold")],
            vec![("baggage", vec!["user=alice,tier=gold"])],
        ),
        (
            "baggage with only the routing member",
            vec![("baggage", "sandbox=feature-x")],
            vec![("baggage", vec![])],
        ),
        (
            "repeated baggage headers are merged into one",
            vec![
                ("baggage", "user=alice"),
                ("baggage", "sandbox=feature-x"),
                ("baggage", "tier=gold,region=eu"),
            ],
            vec![("baggage", vec!["user=alice,tier=gold,region=eu"])],
        ),
        (
            "tracestate member",
            vec![("tracestate", "vendor=abc,sandbox=feature-x,other=1")],
            vec![("tracestate", vec!["vendor=abc,other=1"])],
        ),
        (
            "percent-encoded baggage value",
            vec![("baggage", "sandbox=feature%2Dx,user=alice")],
            vec![("baggage", vec!["user=alice"])],
        ),
        (
            "percent-encoded ot-baggage value",
            vec![("ot-baggage-sandbox", "feature%2dx")],
            vec![("ot-baggage-sandbox", vec![])],
        ),
        (
            "whitespace around members and values",
            vec![
                (
                    "baggage",
                    " user=alice ,\t sandbox \t= feature-x ; p=1 , tier=gold ",
                ),
                ("x-sandbox", "  feature-x  "),
            ],
            vec![
                ("baggage", vec!["user=alice,tier=gold"]),
                ("x-sandbox", vec![]),
            ],
        ),
        (
            "every carrier at once",
            vec![
                ("x-sandbox", "feature-x"),
                ("ot-baggage-sandbox", "feature-x"),
                ("uberctx-sandbox", "feature-x"),
                ("baggage", "sandbox=feature-x,a=1"),
                ("tracestate", "sandbox=feature-x"),
            ],
            vec![
                ("x-sandbox", vec![]),
                ("ot-baggage-sandbox", vec![]),
                ("uberctx-sandbox", vec![]),
                ("baggage", vec!["a=1"]),
                ("tracestate", vec![]),
            ],
        ),
        (
            "repeated plain, ot-baggage and tracestate headers",
            vec![
                ("x-sandbox", "feature-x"),
                ("x-sandbox", "other"),
                ("ot-baggage-sandbox", "feature-x"),
                ("ot-baggage-sandbox", "feature-x"),
                ("tracestate", "a=1,sandbox=feature-x"),
                ("tracestate", "sandbox=feature-x,b=2"),
            ],
            vec![
                ("x-sandbox", vec![]),
                ("ot-baggage-sandbox", vec![]),
                ("tracestate", vec!["a=1,b=2"]),
            ],
        ),
        (
            "an unknown key is stripped too",
            vec![
                ("x-sandbox", "no-such-sandbox"),
                ("baggage", "sandbox=nope,a=1"),
            ],
            vec![("x-sandbox", vec![]), ("baggage", vec!["a=1"])],
        ),
        (
            "an invalid key is stripped too",
            vec![("x-sandbox", "not a key!")],
            vec![("x-sandbox", vec![])],
        ),
    ]
}

#[tokio::test]
async fn untrusted_source_is_routed_to_baseline_with_the_key_stripped_from_every_carrier() {
    let env = SandboxEnv::start_with_config(internal_only("strip")).await;
    for protocol in Protocol::ALL {
        for (case, sent, expected) in strip_cases() {
            let case = format!("{protocol:?} {case}");
            let request = sent.iter().fold(
                TestRequest::get("payment", "/orders").protocol(protocol),
                |request, (name, value)| request.header(name, value),
            );
            let response = env.send(request).await;
            let echo = expect::outcome(&case, &response, untrusted_at(PAYMENT_BASELINE));
            received(&case, &echo, &expected);
            carries_no_key(&case, &echo);
        }
    }
}

#[tokio::test]
async fn header_name_case_does_not_smuggle_a_key_past_the_strip() {
    let env = SandboxEnv::start_with_config(internal_only("strip")).await;
    // (raw header lines sent, what must arrive of the headers that are not the key)
    let cases: [(&[&str], Received); 5] = [
        (&["X-Sandbox: feature-x"], vec![]),
        (
            &["X-SANDBOX: feature-x", "OT-Baggage-Sandbox: feature-x"],
            vec![],
        ),
        (
            &["Uberctx-SANDBOX: feature-x", "UBERCTX-Other: y"],
            vec![("uberctx-other", vec!["y"])],
        ),
        (
            &[
                "Baggage: sandbox=feature-x,user=alice",
                "BAGGAGE: tier=gold",
            ],
            vec![("baggage", vec!["user=alice,tier=gold"])],
        ),
        (
            &[
                "TraceState: sandbox=feature-x,vendor=abc",
                "ot-baggage-SANDBOX: feature%2Dx",
            ],
            vec![("tracestate", vec!["vendor=abc"])],
        ),
    ];
    for (headers, expected) in cases {
        let case = format!("{headers:?}");
        let mut raw = String::from("GET /orders HTTP/1.1\r\nHost: payment\r\n");
        for header in headers {
            raw.push_str(header);
            raw.push_str("\r\n");
        }
        raw.push_str("Connection: close\r\n\r\n");
        let response = raw_http1_exchange(env.addr(), None, raw.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let echo = expect::outcome(&case, &response, untrusted_at(PAYMENT_BASELINE));
        carries_no_key(&case, &echo);
        received(&case, &echo, &expected);
    }
}

#[tokio::test]
async fn untrusted_source_never_reaches_any_sandbox_upstream() {
    let env = SandboxEnv::start_with_config(internal_only("strip")).await;
    let carriers: [(&str, &str); 6] = [
        ("x-sandbox", "feature-x"),
        ("baggage", "sandbox=feature-x"),
        ("baggage", "sandbox=feature%2Dx"),
        ("ot-baggage-sandbox", "feature-x"),
        ("uberctx-sandbox", "feature%2dx"),
        ("tracestate", "sandbox=feature-x"),
    ];
    for protocol in Protocol::ALL {
        for (name, value) in carriers {
            for (authority, baseline) in [
                ("payment:8080", PAYMENT_BASELINE),
                ("inventory", INVENTORY_BASELINE),
            ] {
                let case = format!("{protocol:?} POST {authority} {name}: {value}");
                let response = env
                    .send(
                        TestRequest::post(authority, "/orders")
                            .protocol(protocol)
                            .header(name, value),
                    )
                    .await;
                let echo = expect::outcome(&case, &response, untrusted_at(baseline));
                carries_no_key(&case, &echo);
            }
        }
    }
    // Nor by naming the sandbox cluster itself.
    let response = env
        .send(
            TestRequest::get("inventory", "/")
                .header("x-sandbox", KEY)
                .header(sandbox::CLUSTER_HEADER, sandbox::INVENTORY_SANDBOX_CLUSTER),
        )
        .await;
    let echo = expect::outcome(
        "cluster header",
        &response,
        untrusted_at(INVENTORY_BASELINE),
    );
    lacks_header(&echo, sandbox::CLUSTER_HEADER);
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    assert_eq!(env.upstream(INVENTORY_SANDBOX).request_count(), 0);
    // Requests without a key are untouched.
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", "user=alice"))
        .await;
    let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &[NO_KEY]);
    assert_eq!(echo.header_values("baggage"), ["user=alice"]);
}

// ---- untrusted + reject ----

#[tokio::test]
async fn untrusted_source_with_reject_gets_403() {
    let env = SandboxEnv::start_with_config(internal_only("reject")).await;
    let refused = Answer::Refused(403, UNTRUSTED_BODY.to_owned());
    let served = Answer::Served(Outcome::Baseline {
        upstream: PAYMENT_BASELINE,
        reason: NO_KEY,
    });
    // (header sent, if any; answer)
    let cases = [
        (Some(("x-sandbox", "feature-x")), &refused),
        (Some(("baggage", "user=alice,sandbox=feature-x")), &refused),
        (Some(("ot-baggage-sandbox", "feature%2Dx")), &refused),
        (Some(("x-sandbox", "unknown-key")), &refused),
        // Keyless traffic is not affected.
        (None, &served),
    ];
    for protocol in Protocol::ALL {
        for (header, answer) in &cases {
            let case = format!("{protocol:?} {header:?}");
            let request = TestRequest::get("payment", "/").protocol(protocol);
            let request = match header {
                Some((name, value)) => request.header(name, value),
                None => request,
            };
            check(&case, &env.send(request).await, answer);
        }
    }
    // gRPC callers get PERMISSION_DENIED.
    let response = env
        .send(TestRequest::grpc("payment", "/shop.Payment/Pay").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.grpc_status().as_deref(), Some("7"), "{response:?}");
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    assert_eq!(env.upstream(PAYMENT_BASELINE).request_count(), 2);
}

// ---- trusted sources ----

#[tokio::test]
async fn trusted_loopback_sources_are_routed_over_ipv4_and_ipv6() {
    let config = config_with(json!({
        "trust": { "sources": ["127.0.0.0/8", "::1/128"], "untrusted": "strip" }
    }));
    let v4 = SandboxEnv::start_with_config(config.clone()).await;
    let v6 = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        listener_address: Some("::1".to_owned()),
        ..SandboxOptions::default()
    })
    .await;
    assert!(v6.addr().is_ipv6(), "{}", v6.addr());
    for env in [&v4, &v6] {
        for protocol in Protocol::ALL {
            let case = format!("{} {protocol:?}", env.addr());
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header("baggage", "sandbox=feature-x,user=alice"),
                )
                .await;
            let echo = expect::outcome(
                &case,
                &response,
                Outcome::Routed {
                    upstream: PAYMENT_SANDBOX,
                },
            );
            assert_eq!(echo.authority(), PAYMENT_SANDBOX_AUTHORITY, "{case}");
            // A trusted key travels on to the next hops.
            received(
                &case,
                &echo,
                &[("baggage", vec!["sandbox=feature-x,user=alice"])],
            );
        }
    }
}

#[tokio::test]
async fn trust_follows_the_cidr_exactly() {
    // Only 127.0.0.2 is trusted; 127.0.0.1 and 127.0.0.3 are not, and neither is ::1.
    let config = config_with(json!({
        "trust": { "sources": ["127.0.0.2/32", "10.0.0.0/8"], "untrusted": "strip" }
    }));
    let env = SandboxEnv::start_with_config(config.clone()).await;
    let routed = Outcome::Routed {
        upstream: PAYMENT_SANDBOX,
    };
    // (source, outcome, the x-sandbox values the upstream receives)
    let cases = [
        ("127.0.0.2", routed, vec![KEY]),
        ("127.0.0.1", untrusted_at(PAYMENT_BASELINE), vec![]),
        ("127.0.0.3", untrusted_at(PAYMENT_BASELINE), vec![]),
    ];
    for protocol in Protocol::ALL {
        for (source, outcome, forwarded) in &cases {
            let case = format!("{protocol:?} from {source}");
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .header("x-sandbox", KEY)
                        .protocol(protocol)
                        .source(ip(source)),
                )
                .await;
            let echo = expect::outcome(&case, &response, *outcome);
            received(&case, &echo, &[("x-sandbox", forwarded.clone())]);
        }
    }
    // IPv4 ranges never match an IPv6 peer.
    let mut config = config;
    config["trust"]["sources"] = json!(["127.0.0.0/8"]);
    let v6 = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        listener_address: Some("::1".to_owned()),
        ..SandboxOptions::default()
    })
    .await;
    let response = v6
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await;
    let echo = expect::outcome("from ::1", &response, untrusted_at(PAYMENT_BASELINE));
    lacks_header(&echo, "x-sandbox");
}

/// Requests from 127.0.0.1 (untrusted: only internal ranges are) claiming other sources in
/// `x-forwarded-for`, through an HCM with `use_remote_address` as given: (x-forwarded-for, the
/// one outcome). A routed request keeps its key; an untrusted one arrives without it.
async fn forwarded_for_cases(use_remote_address: bool, cases: &[(Option<&str>, Outcome)]) {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(internal_only("strip")),
        hcm_options: vec![("use_remote_address".to_owned(), json!(use_remote_address))],
        ..SandboxOptions::default()
    })
    .await;
    for (xff, outcome) in cases {
        let case = format!("use_remote_address: {use_remote_address}, x-forwarded-for: {xff:?}");
        let request = TestRequest::get("payment", "/").header("x-sandbox", KEY);
        let request = match xff {
            Some(xff) => request.header("x-forwarded-for", xff),
            None => request,
        };
        let response = env.send(request).await;
        let echo = expect::outcome(&case, &response, *outcome);
        let forwarded = match outcome {
            Outcome::Routed { .. } => vec![KEY],
            Outcome::Baseline { .. } => vec![],
        };
        received(&case, &echo, &[("x-sandbox", forwarded)]);
    }
}

/// With `use_remote_address: true` (the HCM setting for an edge proxy), a client cannot make
/// itself trusted by claiming an internal address in `x-forwarded-for`.
#[tokio::test]
async fn forwarded_for_cannot_make_a_source_trusted_when_envoy_uses_the_remote_address() {
    let untrusted = untrusted_at(PAYMENT_BASELINE);
    forwarded_for_cases(
        true,
        &[
            (Some("10.0.0.1"), untrusted),
            (Some("203.0.113.9, 10.1.2.3"), untrusted),
            (Some("10.0.0.1,10.0.0.2"), untrusted),
        ],
    )
    .await;
}

/// The documented limit (README, "Security model"): with Envoy's default
/// `use_remote_address: false`, Envoy takes the downstream address from the last
/// `x-forwarded-for` entry, the filter reads that address (`source.address`), and so a client
/// that writes an internal address there is trusted. Hence `use_remote_address: true` wherever
/// `trust` matters.
#[tokio::test]
async fn forwarded_for_decides_the_trusted_source_with_the_default_hcm() {
    let routed = Outcome::Routed {
        upstream: PAYMENT_SANDBOX,
    };
    let untrusted = untrusted_at(PAYMENT_BASELINE);
    forwarded_for_cases(
        false,
        &[
            (None, untrusted),
            (Some("10.0.0.1"), routed),
            (Some("203.0.113.9, 10.1.2.3"), routed),
            (Some("10.1.2.3, 203.0.113.9"), untrusted),
        ],
    )
    .await;
}

// ---- unknown and expired keys ----

#[tokio::test]
async fn unknown_keys_reject_answers_400_naming_the_sandbox() {
    let env = SandboxEnv::start_with_config(config_with(json!({ "unknown_keys": "reject" }))).await;
    let refused = Answer::Refused(400, "sandbox `feature-y` does not exist".to_owned());
    // (header sent, if any; answer)
    let cases = [
        (Some(("x-sandbox", "feature-y")), refused.clone()),
        (Some(("baggage", "sandbox=feature-y")), refused.clone()),
        (Some(("uberctx-sandbox", "feature%2Dy")), refused),
        // The registered sandbox and keyless requests are unaffected.
        (
            Some(("x-sandbox", KEY)),
            Answer::Served(Outcome::Routed {
                upstream: PAYMENT_SANDBOX,
            }),
        ),
        (
            None,
            Answer::Served(Outcome::Baseline {
                upstream: PAYMENT_BASELINE,
                reason: NO_KEY,
            }),
        ),
    ];
    for protocol in Protocol::ALL {
        for (header, answer) in &cases {
            let case = format!("{protocol:?} {header:?}");
            let request = TestRequest::get("payment", "/").protocol(protocol);
            let request = match header {
                Some((name, value)) => request.header(name, value),
                None => request,
            };
            check(&case, &env.send(request).await, answer);
        }
    }
    let response = env
        .send(TestRequest::grpc("payment", "/shop.Payment/Pay").header("x-sandbox", "feature-y"))
        .await;
    assert_eq!(response.grpc_status().as_deref(), Some("3"), "{response:?}");
}

fn expiring_config(expires_at: &str, unknown_keys: &str) -> Value {
    let mut config = config_with(json!({ "unknown_keys": unknown_keys }));
    config["sandboxes"][KEY]["expires_at"] = json!(expires_at);
    config
}

#[tokio::test]
async fn an_expired_sandbox_behaves_as_an_unknown_key() {
    const PAST: &str = "2020-01-01T00:00:00Z";
    // (expires_at, unknown_keys, answer)
    let cases = [
        (
            PAST,
            "baseline",
            Answer::Served(Outcome::Baseline {
                upstream: PAYMENT_BASELINE,
                reason: EXPIRED,
            }),
        ),
        (
            PAST,
            "reject",
            Answer::Refused(400, "sandbox `feature-x` has expired".to_owned()),
        ),
        // Not yet expired: routed.
        (
            "2099-01-01T00:00:00Z",
            "reject",
            Answer::Served(Outcome::Routed {
                upstream: PAYMENT_SANDBOX,
            }),
        ),
    ];
    for (expires_at, unknown_keys, answer) in &cases {
        let env = SandboxEnv::start_with_config(expiring_config(expires_at, unknown_keys)).await;
        for protocol in Protocol::ALL {
            let case = format!("{protocol:?} expires_at {expires_at}, unknown_keys {unknown_keys}");
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header("x-sandbox", KEY),
                )
                .await;
            if let Some(echo) = check(&case, &response, answer) {
                let authority = match answer {
                    Answer::Served(Outcome::Routed { .. }) => PAYMENT_SANDBOX_AUTHORITY,
                    _ => "payment",
                };
                assert_eq!(echo.authority(), authority, "{case}");
            }
        }
        if *expires_at == PAST {
            assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
        }
    }
}

// ---- baseline write guard ----

fn write_guard_config() -> Value {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["baseline_writes"] = json!("deny");
    config["sandboxes"][KEY]["baseline_write_exceptions"] = json!(["audit-log"]);
    config
}

/// One write-guard case: method, authority, the key header sent (if any), body, answer.
struct WriteCase {
    method: &'static str,
    authority: &'static str,
    key: Option<(&'static str, &'static str)>,
    body: &'static str,
    answer: Answer,
}

fn write_guard_cases() -> Vec<WriteCase> {
    let served = |outcome| Answer::Served(outcome);
    let mut cases = Vec::new();
    // Writes to a baseline service: 403 naming sandbox, method and service.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for authority in ["catalog", "catalog.shop.svc.cluster.local:8080"] {
            cases.push(WriteCase {
                method,
                authority,
                key: Some(("baggage", "sandbox=feature-x")),
                body: "{}",
                answer: Answer::Refused(
                    403,
                    format!(
                        "sandbox `feature-x` may not send {method} requests to baseline service `{authority}`"
                    ),
                ),
            });
        }
    }
    // Reads pass to the baseline.
    for method in ["GET", "HEAD", "OPTIONS"] {
        cases.push(WriteCase {
            method,
            authority: "catalog",
            key: Some(("x-sandbox", KEY)),
            body: "",
            answer: served(Outcome::Baseline {
                upstream: CATALOG_BASELINE,
                reason: NO_OVERRIDE,
            }),
        });
    }
    // The exception may be written to, under every name form.
    for authority in [
        "audit-log",
        "audit-log.shop",
        "audit-log.shop.svc.cluster.local:80",
    ] {
        cases.push(WriteCase {
            method: "POST",
            authority,
            key: Some(("x-sandbox", KEY)),
            body: "{}",
            answer: served(Outcome::Baseline {
                upstream: DEFAULT_UPSTREAM,
                reason: NO_OVERRIDE,
            }),
        });
    }
    // Writes to an overridden service go to the sandbox.
    for method in ["POST", "PUT", "DELETE"] {
        for (authority, upstream) in [
            ("payment", PAYMENT_SANDBOX),
            ("inventory", INVENTORY_SANDBOX),
        ] {
            cases.push(WriteCase {
                method,
                authority,
                key: Some(("x-sandbox", KEY)),
                body: "",
                answer: served(Outcome::Routed { upstream }),
            });
        }
    }
    // Writes without a key, or with an unknown key, are not this guard's business.
    for (key, reason) in [
        (None, NO_KEY),
        (Some(("x-sandbox", "feature-y")), UNKNOWN_KEY),
    ] {
        cases.push(WriteCase {
            method: "POST",
            authority: "catalog",
            key,
            body: "",
            answer: served(Outcome::Baseline {
                upstream: CATALOG_BASELINE,
                reason,
            }),
        });
    }
    cases
}

#[tokio::test]
async fn baseline_writes_deny_refuses_writes_to_baseline_services() {
    let env = SandboxEnv::start_with_config(write_guard_config()).await;
    for protocol in Protocol::ALL {
        for case in write_guard_cases() {
            let name = format!(
                "{protocol:?} {} {} {:?}",
                case.method, case.authority, case.key
            );
            let request = TestRequest::new(
                case.method.parse().expect("a method"),
                case.authority,
                "/orders",
            )
            .protocol(protocol)
            .body(case.body);
            let request = match case.key {
                Some((header, value)) => request.header(header, value),
                None => request,
            };
            let response = env.send(request).await;
            match &case.answer {
                // A HEAD answer has no body, so no echo to read.
                Answer::Served(outcome) if case.method == "HEAD" => {
                    expect::assert_outcome(&name, &response, *outcome);
                }
                answer => {
                    if let Some(echo) = check(&name, &response, answer) {
                        assert_eq!(echo.method(), case.method, "{name}");
                    }
                }
            }
        }
    }
    // gRPC writes (POST) to a baseline service: PERMISSION_DENIED.
    let response = env
        .send(TestRequest::grpc("catalog", "/shop.Catalog/Update").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.grpc_status().as_deref(), Some("7"), "{response:?}");
}

// ---- the shipped edge configuration ----

/// `envoy-config/ingress-gateway.yaml` runs its filter configuration (and its HCM's
/// downstream-address settings) in the harness: a key from 127.0.0.1 — the internet, as far
/// as that configuration knows — is stripped before the request is forwarded.
#[tokio::test]
async fn the_ingress_gateway_config_strips_keys_from_the_internet() {
    let shipped = sandbox::shipped_filter("envoy-config/ingress-gateway.yaml");
    let sources: Vec<&str> = shipped.filter_config["trust"]["sources"]
        .as_array()
        .expect("the gateway lists trusted sources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!sources.is_empty());
    assert!(
        !sources
            .iter()
            .any(|s| s.starts_with("127.") || s.starts_with("::1")),
        "loopback must not be trusted by the gateway config: {sources:?}"
    );
    assert_eq!(shipped.filter_config["trust"]["untrusted"], "strip");
    assert!(
        shipped
            .hcm_options
            .contains(&("use_remote_address".to_owned(), json!(true))),
        "the gateway must take the downstream address from the connection: {:?}",
        shipped.hcm_options
    );
    // An edge tells internet clients nothing about its decisions (issue 16, finding 6): they are
    // read from the audit log instead.
    assert_eq!(shipped.filter_config["debug"], json!(false));
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(shipped.filter_config),
        hcm_options: shipped.hcm_options,
        entry: shipped.entry,
        audit_log: true,
        ..SandboxOptions::default()
    })
    .await;
    for protocol in Protocol::ALL {
        let case = format!("{protocol:?}");
        let response = env
            .send(
                TestRequest::get("payment", "/checkout")
                    .protocol(protocol)
                    .header("baggage", "user=alice,sandbox=feature-x")
                    .header("x-sandbox", KEY)
                    .header("tracestate", "sandbox=feature-x,vendor=1")
                    .header("ot-baggage-sandbox", KEY)
                    .header("uberctx-sandbox", KEY)
                    .header("x-forwarded-for", "10.0.0.7"),
            )
            .await;
        assert_eq!(response.header(sandbox::DECISION_HEADER), None, "{case}");
        let echo = expect::answered_by(&response, PAYMENT_BASELINE);
        carries_no_key(&case, &echo);
        received(
            &case,
            &echo,
            &[
                ("baggage", vec!["user=alice"]),
                ("tracestate", vec!["vendor=1"]),
            ],
        );
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    let records = env
        .audit_log()
        .wait_for_records(Protocol::ALL.len(), integration_tests::audit::DEFAULT_WAIT)
        .await;
    for record in &records {
        assert_eq!(
            record["sandbox_router"]["decision"], "untrusted",
            "{record}"
        );
    }
}
