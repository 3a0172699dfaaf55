//! Key extraction and routing decisions over whole header sets.

// Test code: a panic is a test failure, and inputs are small.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;
use common::{header_map, router, test};

use sandbox_router::core::header_map::HeaderPairs;
use sandbox_router::core::request::scan;
use sandbox_router::core::router::{rewritten_authority, BaselineReason, Decision, Target};

const CONFIG: &str = r#"{
    "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
    "namespace": "shop",
    "sandboxes": {
        "feature-x": { "routes": {
            "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" },
            "inventory.shop.svc.cluster.local": { "cluster": "inventory-feature-x" },
            "ledger.billing": { "authority": "ledger-x.billing:9090" }
        } },
        "feature-y": { "routes": {
            "payment": { "cluster": "payment-feature-y" }
        } }
    }
}"#;

/// The decision for a request with these headers, as `routed:<key>:<target>` or
/// `baseline:<reason>`.
fn decide(headers: &[(&str, &str)]) -> String {
    let router = router(CONFIG);
    let buffer = header_map(headers);
    let request = scan(&router.settings, HeaderPairs::new(&buffer));
    match router.decide(&request) {
        Decision::Route { key, target, .. } => match target {
            Target::Authority { host, .. } => format!("routed:{}:{host}", key.as_str()),
            Target::Cluster(c) => format!("routed:{}:cluster={c}", key.as_str()),
        },
        Decision::Baseline { reason, .. } => format!("baseline:{}", reason.as_str()),
    }
}

const PAY_X: &str = "routed:feature-x:payment-feature-x.shop.svc.cluster.local";

#[test]
fn routes_by_baggage() {
    assert_eq!(
        decide(&[(":authority", "payment"), ("baggage", "sandbox=feature-x")]),
        PAY_X
    );
}

#[test]
fn no_key_unknown_key_no_override() {
    assert_eq!(decide(&[(":authority", "payment")]), "baseline:no-key");
    assert_eq!(
        decide(&[(":authority", "payment"), ("baggage", "sandbox=nope")]),
        "baseline:unknown-key"
    );
    assert_eq!(
        decide(&[(":authority", "catalog"), ("baggage", "sandbox=feature-x")]),
        "baseline:no-override"
    );
    assert_eq!(
        decide(&[
            (":authority", "inventory"),
            ("baggage", "sandbox=feature-y")
        ]),
        "baseline:no-override"
    );
    assert_eq!(
        decide(&[(":authority", "payment"), ("baggage", "sandbox=bad%20key")]),
        "baseline:invalid-key"
    );
}

#[test]
fn every_kubernetes_form_with_or_without_port_and_case() {
    for host in [
        "payment",
        "payment.shop",
        "payment.shop.svc",
        "payment.shop.svc.cluster.local",
        "payment.shop.svc.cluster.local.",
        "PAYMENT.Shop:8080",
        "payment:80",
    ] {
        assert_eq!(
            decide(&[(":authority", host), ("baggage", "sandbox=feature-x")]),
            PAY_X,
            "{host}"
        );
    }
    for host in [
        "payment.other",
        "payment.shop.svc.cluster",
        "xpayment",
        "[::1]:80",
        "payment:x",
    ] {
        assert_eq!(
            decide(&[(":authority", host), ("baggage", "sandbox=feature-x")]),
            "baseline:no-override",
            "{host}"
        );
    }
}

#[test]
fn other_namespace_needs_its_namespace() {
    let key = ("baggage", "sandbox=feature-x");
    assert_eq!(
        decide(&[(":authority", "ledger.billing"), key]),
        "routed:feature-x:ledger-x.billing"
    );
    assert_eq!(
        decide(&[(":authority", "ledger"), key]),
        "baseline:no-override"
    );
}

#[test]
fn cluster_mode() {
    assert_eq!(
        decide(&[(":authority", "inventory:8080"), ("x-sandbox", "feature-x")]),
        "routed:feature-x:cluster=inventory-feature-x"
    );
}

#[test]
fn every_carrier() {
    for (name, value) in [
        ("x-sandbox", "feature-x"),
        ("X-Sandbox", " feature-x "),
        ("baggage", "sandbox=feature-x"),
        ("ot-baggage-sandbox", "feature-x"),
        ("ot-baggage-sandbox", "feature%2Dx"),
        ("uberctx-sandbox", "feature-x"),
        ("tracestate", "rojo=00f067aa0ba902b7,sandbox=feature-x"),
    ] {
        assert_eq!(
            decide(&[(":authority", "payment"), (name, value)]),
            PAY_X,
            "{name}: {value}"
        );
    }
}

#[test]
fn every_baggage_header_counts() {
    assert_eq!(
        decide(&[
            (":authority", "payment"),
            ("baggage", "a=1,b=2"),
            ("baggage", "sandbox=feature-x"),
        ]),
        PAY_X
    );
    assert_eq!(
        decide(&[
            (":authority", "payment"),
            ("baggage", "sandbox=feature-x"),
            ("baggage", "sandbox=feature-y"),
        ]),
        PAY_X
    );
}

#[test]
fn large_baggage_is_handled() {
    let mut members: Vec<String> = (0..600).map(|i| format!("member{i}=value{i}")).collect();
    members.push("sandbox=feature-x".into());
    let header = members.join(",");
    assert!(header.len() > 8192);
    assert_eq!(
        decide(&[(":authority", "payment"), ("baggage", &header)]),
        PAY_X
    );
}

#[test]
fn grpc_and_cluster_header_are_noticed() {
    let router = router(CONFIG);
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b"content-type", b"application/grpc+proto"),
        (b"x-sandbox-cluster", b"anything"),
    ];
    let request = scan(&router.settings, pairs);
    assert!(request.is_grpc);
    assert!(request.has_cluster_header);
}

#[test]
fn rewritten_authority_keeps_the_port_unless_the_target_names_one() {
    assert_eq!(
        rewritten_authority("a.b", None, b"payment:8080"),
        "a.b:8080"
    );
    assert_eq!(rewritten_authority("a.b", None, b"payment"), "a.b");
    assert_eq!(
        rewritten_authority("a.b", Some(9090), b"payment:8080"),
        "a.b:9090"
    );
}

#[test]
fn baseline_reason_names() {
    assert_eq!(BaselineReason::NoOverride.as_str(), "no-override");
}

#[test]
fn describes_decisions() {
    use sandbox_router::core::describe::describe;
    let router = router(CONFIG);
    let text = |headers: Vec<(&'static [u8], &'static [u8])>| {
        let authority = headers
            .iter()
            .find(|(n, _)| *n == b":authority")
            .map_or(&b""[..], |(_, v)| *v);
        describe(
            &router.decide(&scan(&router.settings, headers.clone())),
            authority,
        )
    };
    assert_eq!(
        text(vec![
            (b":authority", b"payment:8080"),
            (b"baggage", b"sandbox=feature-x")
        ]),
        "routed; key=feature-x; service=payment.shop.svc.cluster.local; \
         target=authority:payment-feature-x.shop.svc.cluster.local:8080"
    );
    assert_eq!(
        text(vec![(b":authority", b"inventory"), (b"x-sandbox", b"feature-x")]),
        "routed; key=feature-x; service=inventory.shop.svc.cluster.local; target=cluster:inventory-feature-x"
    );
    assert_eq!(
        text(vec![(b":authority", b"payment")]),
        "baseline; reason=no-key"
    );
    assert_eq!(
        text(vec![(b":authority", b"payment"), (b"x-sandbox", b"nope")]),
        "baseline; key=nope; reason=unknown-key"
    );
    assert_eq!(
        text(vec![
            (b":authority", b"inventory"),
            (b"x-sandbox", b"feature-y")
        ]),
        "baseline; key=feature-y; service=inventory.shop.svc.cluster.local; reason=no-override"
    );
}
