//! The edge holds (issue 16): a key an instrumented app would read never gets past a trust
//! point, and routing agrees with what apps read. The oracle is the real OpenTelemetry Python
//! W3C baggage propagator (`tests/otel/baggage.py`), not hand-written expectations.

use integration_tests::audit;
use integration_tests::expect::{self, answered_by};
use integration_tests::otel::{app_views, AppView};
use integration_tests::sandbox::{self, SandboxOptions, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX};
use integration_tests::{Protocol, SandboxEnv, TestRequest};

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
