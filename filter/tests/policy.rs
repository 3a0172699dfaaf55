//! Trust, unknown and expired keys, the write guard, and the audit record.

// Test code: a panic is a test failure, and inputs are small.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;
use common::{pairs, router, test};

use sandbox_router::core::audit::audit_record;
use sandbox_router::core::policy::{evaluate, Label};
use sandbox_router::core::request::scan;
use sandbox_router::core::router::Router;

const CONFIG: &str = r#"{
    "namespace": "shop",
    "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
    "trust": { "sources": ["10.0.0.0/8"], "untrusted": "strip" },
    "unknown_keys": "reject",
    "sandboxes": {
        "feature-x": {
            "owner": { "user": "alice@example.com", "change": "shop#1234" },
            "routes": { "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" } },
            "baseline_writes": "deny",
            "baseline_write_exceptions": ["audit-log"]
        },
        "old": { "expires_at": "2026-01-01T00:00:00Z" }
    }
}"#;

const NOW: u64 = 1_790_000_000_000_000_000; // 2026-09-21

/// (label, rejection status, strip) for a request.
fn outcome(
    router: &Router,
    trusted: bool,
    headers: &[(&str, &str)],
) -> (Option<&'static str>, Option<u32>, bool) {
    let request = scan(&router.settings, pairs(headers));
    let e = evaluate(router, &request, || trusted, || Some(NOW));
    (
        e.label.map(Label::as_str),
        e.reject.map(|r| r.status),
        e.strip,
    )
}

#[test]
fn keyless_requests_are_not_labelled_and_ask_nothing() {
    let router = router(CONFIG);
    let request = scan(
        &router.settings,
        vec![(&b":authority"[..], &b"payment"[..])],
    );
    let e = evaluate(
        &router,
        &request,
        || panic!("trust asked"),
        || panic!("clock asked"),
    );
    assert!(e.label.is_none());
}

#[test]
fn untrusted_sources_are_stripped_or_rejected() {
    let r = router(CONFIG);
    let key = [(":authority", "payment"), ("baggage", "sandbox=feature-x")];
    assert_eq!(outcome(&r, true, &key), (Some("routed"), None, false));
    assert_eq!(outcome(&r, false, &key), (Some("untrusted"), None, true));
    // An invalid key from an untrusted source is stripped too: deeper hops may parse it otherwise.
    assert_eq!(
        outcome(&r, false, &[("baggage", "sandbox=bad%zz")]),
        (Some("untrusted"), None, true)
    );
    let rejecting = router(&CONFIG.replace("\"strip\"", "\"reject\""));
    assert_eq!(
        outcome(&rejecting, false, &key),
        (Some("untrusted"), Some(403), false)
    );
}

#[test]
fn no_trust_section_trusts_everyone() {
    let r = router(
        r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}}"#,
    );
    let headers = [(":authority", "payment"), ("baggage", "sandbox=x")];
    let request = scan(&r.settings, pairs(&headers));
    let e = evaluate(&r, &request, || panic!("trust asked"), || None);
    assert_eq!(e.label, Some(Label::Routed));
}

#[test]
fn unknown_and_expired_keys() {
    let r = router(CONFIG);
    assert_eq!(
        outcome(
            &r,
            true,
            &[(":authority", "payment"), ("x-sandbox", "nope")]
        ),
        (Some("unknown_key"), Some(400), false)
    );
    assert_eq!(
        outcome(&r, true, &[(":authority", "payment"), ("x-sandbox", "old")]),
        (Some("expired"), Some(400), false)
    );
    let lenient = router(&CONFIG.replace("\"unknown_keys\": \"reject\",", ""));
    assert_eq!(
        outcome(
            &lenient,
            true,
            &[(":authority", "payment"), ("x-sandbox", "old")]
        ),
        (Some("expired"), None, false)
    );
    assert_eq!(
        outcome(
            &lenient,
            true,
            &[(":authority", "payment"), ("x-sandbox", "bad key")]
        ),
        (Some("invalid_key"), None, false)
    );
}

#[test]
fn baseline_writes_are_denied_except_reads_and_exceptions() {
    let r = router(CONFIG);
    let req = |method, host| {
        outcome(
            &r,
            true,
            &[
                (":method", method),
                (":authority", host),
                ("x-sandbox", "feature-x"),
            ],
        )
    };
    assert_eq!(
        req("POST", "inventory"),
        (Some("write_denied"), Some(403), false)
    );
    assert_eq!(
        req("DELETE", "unknown.example.com"),
        (Some("write_denied"), Some(403), false)
    );
    assert_eq!(req("GET", "inventory"), (Some("baseline"), None, false));
    assert_eq!(req("OPTIONS", "inventory"), (Some("baseline"), None, false));
    assert_eq!(req("POST", "audit-log"), (Some("baseline"), None, false));
    assert_eq!(
        req("POST", "audit-log.shop.svc.cluster.local:80"),
        (Some("baseline"), None, false)
    );
    assert_eq!(
        req("POST", "payment"),
        (Some("routed"), None, false),
        "overridden services take writes"
    );
}

#[test]
fn audit_records_name_owner_decision_and_target() {
    let r = router(CONFIG);
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":path", b"/orders?id=\"1\""),
        (b":authority", b"payment:8080"),
        (b"baggage", b"sandbox=feature-x"),
    ];
    let request = scan(&r.settings, pairs);
    let e = evaluate(&r, &request, || true, || Some(NOW));
    let record = audit_record(&request, &e, e.label.unwrap());
    assert_eq!(
        record,
        r#"{"key":"feature-x","owner":{"user":"alice@example.com","change":"shop#1234"},"method":"POST","path":"/orders?id=\"1\"","service":"payment.shop.svc.cluster.local","authority":"payment:8080","target":"authority:payment-feature-x.shop.svc.cluster.local:8080","decision":"routed","reason":"override"}"#
    );
}
