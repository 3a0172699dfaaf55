//! Trust and policy (issue 5): routing keys are honoured only from `trust.sources` (the
//! downstream peer address); from anywhere else they are stripped from every carrier before
//! forwarding (or the request is refused). Unknown and expired keys, and the baseline write
//! guard.
//!
//! Every test connects from loopback addresses: 127.0.0.1 by default, other 127.0.0.0/8
//! addresses by binding the client socket, and ::1 through a listener on ::1.

use std::net::IpAddr;

use integration_tests::client::raw_http1_exchange;
use integration_tests::expect::{self, lacks_header, UNKNOWN_KEY};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DEFAULT_UPSTREAM, INVENTORY_SANDBOX, KEY,
    PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Echo, Protocol, SandboxEnv, TestRequest, TestResponse};
use serde_json::{json, Value};

/// The default filter configuration with `trust` (and any other top-level fields) added.
fn config_with(fields: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("an object of fields") {
        config[name.as_str()] = value.clone();
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

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// Internal ranges only: 127.0.0.1 is an untrusted (internet) source.
fn internal_only(untrusted: &str) -> Value {
    config_with(json!({
        "trust": { "sources": ["10.0.0.0/8", "fd00::/8"], "untrusted": untrusted }
    }))
}

/// The request was left on the baseline because its source is untrusted.
fn untrusted_at(response: &TestResponse, upstream: &str) -> Echo {
    expect::baseline_at(response, upstream, &["untrusted"])
}

/// No routing carrier reached the upstream.
fn carries_no_key(echo: &Echo) {
    for header in ["x-sandbox", "ot-baggage-sandbox", "uberctx-sandbox"] {
        lacks_header(echo, header);
    }
    for list in ["baggage", "tracestate"] {
        for value in echo.header_values(list) {
            assert!(
                !value.contains("sandbox"),
                "{list} still carries a sandbox member: {value:?} ({:?})",
                echo.0
            );
        }
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
    let env = start(internal_only("strip")).await;
    for protocol in Protocol::ALL {
        for (case, sent, expected) in strip_cases() {
            let mut request = TestRequest::get("payment", "/orders").protocol(protocol);
            for (name, value) in &sent {
                request = request.header(name, value);
            }
            let response = env.send(request).await;
            let echo = untrusted_at(&response, PAYMENT_BASELINE);
            for (name, values) in &expected {
                assert_eq!(
                    echo.header_values(name),
                    *values,
                    "{protocol:?} {case}: header {name}; upstream received {:?}",
                    echo.0
                );
            }
            carries_no_key(&echo);
        }
    }
}

#[tokio::test]
async fn header_name_case_does_not_smuggle_a_key_past_the_strip() {
    let env = start(internal_only("strip")).await;
    let cases: [&[&str]; 5] = [
        &["X-Sandbox: feature-x"],
        &["X-SANDBOX: feature-x", "OT-Baggage-Sandbox: feature-x"],
        &["Uberctx-SANDBOX: feature-x", "UBERCTX-Other: y"],
        &[
            "Baggage: sandbox=feature-x,user=alice",
            "BAGGAGE: tier=gold",
        ],
        &[
            "TraceState: sandbox=feature-x,vendor=abc",
            "ot-baggage-SANDBOX: feature%2Dx",
        ],
    ];
    for headers in cases {
        let mut raw = String::from("GET /orders HTTP/1.1\r\nHost: payment\r\n");
        for header in headers {
            raw.push_str(header);
            raw.push_str("\r\n");
        }
        raw.push_str("Connection: close\r\n\r\n");
        let response = raw_http1_exchange(env.addr(), None, raw.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        let echo = untrusted_at(&response, PAYMENT_BASELINE);
        carries_no_key(&echo);
        if headers.iter().any(|h| h.starts_with("Baggage")) {
            assert_eq!(
                echo.header_values("baggage"),
                ["user=alice,tier=gold"],
                "{headers:?}"
            );
        }
        if headers.iter().any(|h| h.starts_with("UBERCTX-Other")) {
            assert_eq!(echo.header_values("uberctx-other"), ["y"], "{headers:?}");
        }
        if headers.iter().any(|h| h.starts_with("TraceState")) {
            assert_eq!(
                echo.header_values("tracestate"),
                ["vendor=abc"],
                "{headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn untrusted_source_never_reaches_any_sandbox_upstream() {
    let env = start(internal_only("strip")).await;
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
                ("inventory", sandbox::INVENTORY_BASELINE),
            ] {
                let response = env
                    .send(
                        TestRequest::post(authority, "/orders")
                            .protocol(protocol)
                            .header(name, value),
                    )
                    .await;
                let echo = untrusted_at(&response, baseline);
                carries_no_key(&echo);
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
    let echo = untrusted_at(&response, sandbox::INVENTORY_BASELINE);
    lacks_header(&echo, sandbox::CLUSTER_HEADER);
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    assert_eq!(env.upstream(INVENTORY_SANDBOX).request_count(), 0);
    // Requests without a key are untouched.
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", "user=alice"))
        .await;
    let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &[expect::NO_KEY]);
    assert_eq!(echo.header_values("baggage"), ["user=alice"]);
}

// ---- untrusted + reject ----

#[tokio::test]
async fn untrusted_source_with_reject_gets_403() {
    let env = start(internal_only("reject")).await;
    for protocol in Protocol::ALL {
        for (name, value) in [
            ("x-sandbox", "feature-x"),
            ("baggage", "user=alice,sandbox=feature-x"),
            ("ot-baggage-sandbox", "feature%2Dx"),
            ("x-sandbox", "unknown-key"),
        ] {
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header(name, value),
                )
                .await;
            assert_eq!(
                response.status, 403,
                "{protocol:?} {name}: {value}\n{response:?}"
            );
            assert_eq!(response.upstream(), None);
            assert!(
                response
                    .body_text()
                    .contains("sandbox routing keys are not accepted from this source"),
                "{response:?}"
            );
        }
        // Keyless traffic is not affected.
        let response = env
            .send(TestRequest::get("payment", "/").protocol(protocol))
            .await;
        expect::answered_by(&response, PAYMENT_BASELINE);
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
    let v4 = start(config.clone()).await;
    let v6 = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        listener_address: Some("::1".to_owned()),
        ..SandboxOptions::default()
    })
    .await;
    assert!(v6.addr().is_ipv6(), "{}", v6.addr());
    for env in [&v4, &v6] {
        for protocol in Protocol::ALL {
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header("baggage", "sandbox=feature-x,user=alice"),
                )
                .await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert_eq!(echo.authority(), PAYMENT_SANDBOX_AUTHORITY);
            // A trusted key travels on to the next hops.
            assert_eq!(
                echo.header_values("baggage"),
                ["sandbox=feature-x,user=alice"]
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
    let env = start(config.clone()).await;
    let keyed = || TestRequest::get("payment", "/").header("x-sandbox", KEY);
    for protocol in Protocol::ALL {
        let response = env
            .send(keyed().protocol(protocol).source(ip("127.0.0.2")))
            .await;
        let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(echo.header("x-sandbox").as_deref(), Some(KEY));
        for source in ["127.0.0.1", "127.0.0.3"] {
            let response = env
                .send(keyed().protocol(protocol).source(ip(source)))
                .await;
            let echo = untrusted_at(&response, PAYMENT_BASELINE);
            lacks_header(&echo, "x-sandbox");
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
    let response = v6.send(keyed()).await;
    let echo = untrusted_at(&response, PAYMENT_BASELINE);
    lacks_header(&echo, "x-sandbox");
}

/// With `use_remote_address: true` (the HCM setting for an edge proxy), a client cannot make
/// itself trusted by claiming an internal address in `x-forwarded-for`.
#[tokio::test]
async fn forwarded_for_cannot_make_a_source_trusted_when_envoy_uses_the_remote_address() {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(internal_only("strip")),
        hcm_options: vec![("use_remote_address".to_owned(), json!(true))],
        ..SandboxOptions::default()
    })
    .await;
    for xff in ["10.0.0.1", "203.0.113.9, 10.1.2.3", "10.0.0.1,10.0.0.2"] {
        let response = env
            .send(
                TestRequest::get("payment", "/")
                    .header("x-forwarded-for", xff)
                    .header("x-sandbox", KEY),
            )
            .await;
        let echo = untrusted_at(&response, PAYMENT_BASELINE);
        lacks_header(&echo, "x-sandbox");
    }
}

/// The same spoof against an HCM with Envoy's default `use_remote_address: false`: Envoy then
/// takes the downstream address from the last `x-forwarded-for` entry, and the filter reads
/// that address (`source.address`). Ignored: it fails today (the key is honoured) — see the
/// report; run with `--ignored` to reproduce.
#[tokio::test]
#[ignore = "reproduces the x-forwarded-for trust bypass with Envoy's default use_remote_address: false"]
async fn forwarded_for_cannot_make_a_source_trusted_with_the_default_hcm() {
    let env = start(internal_only("strip")).await;
    let response = env
        .send(
            TestRequest::get("payment", "/")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-sandbox", KEY),
        )
        .await;
    let echo = untrusted_at(&response, PAYMENT_BASELINE);
    lacks_header(&echo, "x-sandbox");
}

// ---- unknown and expired keys ----

#[tokio::test]
async fn unknown_keys_reject_answers_400_naming_the_sandbox() {
    let env = start(config_with(json!({ "unknown_keys": "reject" }))).await;
    for protocol in Protocol::ALL {
        for (name, value) in [
            ("x-sandbox", "feature-y"),
            ("baggage", "sandbox=feature-y"),
            ("uberctx-sandbox", "feature%2Dy"),
        ] {
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header(name, value),
                )
                .await;
            assert_eq!(response.status, 400, "{response:?}");
            assert_eq!(response.upstream(), None);
            assert_eq!(
                response.body_text(),
                "sandbox `feature-y` does not exist",
                "{response:?}"
            );
        }
        // The registered sandbox and keyless requests are unaffected.
        let response = env
            .send(
                TestRequest::get("payment", "/")
                    .protocol(protocol)
                    .header("x-sandbox", KEY),
            )
            .await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
        let response = env
            .send(TestRequest::get("payment", "/").protocol(protocol))
            .await;
        expect::answered_by(&response, PAYMENT_BASELINE);
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
    let expired = start(expiring_config("2020-01-01T00:00:00Z", "baseline")).await;
    for protocol in Protocol::ALL {
        let response = expired
            .send(
                TestRequest::get("payment", "/")
                    .protocol(protocol)
                    .header("x-sandbox", KEY),
            )
            .await;
        let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &["expired"]);
        assert_eq!(echo.authority(), "payment");
    }
    assert_eq!(expired.upstream(PAYMENT_SANDBOX).request_count(), 0);

    let rejected = start(expiring_config("2020-01-01T00:00:00Z", "reject")).await;
    let response = rejected
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.body_text(), "sandbox `feature-x` has expired");

    // Not yet expired: routed.
    let live = start(expiring_config("2099-01-01T00:00:00Z", "reject")).await;
    let response = live
        .send(TestRequest::get("payment", "/").header("x-sandbox", KEY))
        .await;
    expect::routed_to(&response, PAYMENT_SANDBOX);
}

// ---- baseline write guard ----

fn write_guard_config() -> Value {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["baseline_writes"] = json!("deny");
    config["sandboxes"][KEY]["baseline_write_exceptions"] = json!(["audit-log"]);
    config
}

fn request(method: &str, authority: &str) -> TestRequest {
    TestRequest::new(method.parse().expect("a method"), authority, "/orders")
}

#[tokio::test]
async fn baseline_writes_deny_refuses_writes_to_baseline_services() {
    let env = start(write_guard_config()).await;
    for protocol in Protocol::ALL {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            for authority in ["catalog", "catalog.shop.svc.cluster.local:8080"] {
                let response = env
                    .send(
                        request(method, authority)
                            .protocol(protocol)
                            .header("baggage", "sandbox=feature-x")
                            .body("{}"),
                    )
                    .await;
                assert_eq!(response.status, 403, "{method} {authority}: {response:?}");
                assert_eq!(response.upstream(), None);
                let body = response.body_text();
                assert!(
                    body.contains("sandbox `feature-x`")
                        && body.contains(&format!("may not send {method} requests"))
                        && body.contains(&format!("baseline service `{authority}`")),
                    "{method} {authority}: body {body:?}"
                );
            }
        }
        // Reads pass to the baseline.
        for method in ["GET", "HEAD", "OPTIONS"] {
            let response = env
                .send(
                    request(method, "catalog")
                        .protocol(protocol)
                        .header("x-sandbox", KEY),
                )
                .await;
            assert_eq!(response.status, 200, "{method}: {response:?}");
            assert_eq!(response.upstream().as_deref(), Some(CATALOG_BASELINE));
        }
        // The exception may be written to, under every name form.
        for authority in [
            "audit-log",
            "audit-log.shop",
            "audit-log.shop.svc.cluster.local:80",
        ] {
            let response = env
                .send(
                    request("POST", authority)
                        .protocol(protocol)
                        .header("x-sandbox", KEY)
                        .body("{}"),
                )
                .await;
            expect::baseline_at(&response, DEFAULT_UPSTREAM, &[expect::NO_OVERRIDE]);
        }
        // Writes to an overridden service go to the sandbox.
        for method in ["POST", "PUT", "DELETE"] {
            let response = env
                .send(
                    request(method, "payment")
                        .protocol(protocol)
                        .header("x-sandbox", KEY),
                )
                .await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert_eq!(echo.method(), method);
            let response = env
                .send(
                    request(method, "inventory")
                        .protocol(protocol)
                        .header("x-sandbox", KEY),
                )
                .await;
            expect::routed_to(&response, INVENTORY_SANDBOX);
        }
        // Writes without a key, or with an unknown key, are not this guard's business.
        let response = env
            .send(request("POST", "catalog").protocol(protocol))
            .await;
        expect::answered_by(&response, CATALOG_BASELINE);
        let response = env
            .send(
                request("POST", "catalog")
                    .protocol(protocol)
                    .header("x-sandbox", "feature-y"),
            )
            .await;
        expect::baseline_at(&response, CATALOG_BASELINE, &[UNKNOWN_KEY]);
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
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(shipped.filter_config),
        hcm_options: shipped.hcm_options,
        ..SandboxOptions::default()
    })
    .await;
    for protocol in Protocol::ALL {
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
        let echo = untrusted_at(&response, PAYMENT_BASELINE);
        carries_no_key(&echo);
        assert_eq!(echo.header_values("baggage"), ["user=alice"]);
        assert_eq!(echo.header_values("tracestate"), ["vendor=1"]);
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
}
