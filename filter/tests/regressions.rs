//! Regression tests for what fuzzing (scripts/fuzz) found. Each names the target and input.
//! Ignored tests are open bugs: remove `#[ignore]` with the fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{pairs, test};

use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::request::scan;
use sandbox_router::core::router::Decision;

/// Compiles `config` and asks where a request with these headers goes: `Ok(true)` routed,
/// `Ok(false)` baseline, `Err` the configuration was rejected.
fn routes(config: &str, headers: &[(&str, &str)]) -> Result<bool, String> {
    let router = compile(config.as_bytes(), &HostFacts::default()).map_err(|e| e.to_string())?;
    Ok(matches!(
        router.decide(&scan(&router.settings, pairs(headers))),
        Decision::Route { .. }
    ))
}

/// config_structured: a routing-key header that is also the cluster header (or
/// `content-type`) is accepted, but the scanner reads it as that other header first, so a key
/// sent in it is never seen. Found as `"cluster_header": "-shop"` with
/// `"routing_key": {"headers": ["-shop", ...]}`. Either the configuration is rejected or the
/// key routes; a carrier that silently never works is neither.
#[test]
fn carrier_header_shadowed_by_cluster_header() {
    // (routing_key, cluster_header, the request header that should carry the key)
    for (routing_key, cluster_header, carrier) in [
        (
            r#"{"headers": ["x-sandbox-cluster"]}"#,
            None,
            "x-sandbox-cluster",
        ),
        (r#"{"headers": ["X-Route"]}"#, Some("x-route"), "x-route"),
        (r#"{"headers": ["-shop"]}"#, Some("-shop"), "-shop"),
        (r#"{"headers": ["content-type"]}"#, None, "content-type"),
        (
            r#"{"baggage": ["sandbox"]}"#,
            Some("uberctx-sandbox"),
            "uberctx-sandbox",
        ),
    ] {
        let cluster_header = cluster_header
            .map(|h| format!(r#""cluster_header": "{h}","#))
            .unwrap_or_default();
        let config = format!(
            r#"{{ {cluster_header} "namespace": "shop", "routing_key": {routing_key},
                "sandboxes": {{ "feature-x": {{ "routes": {{ "payment": {{ "cluster": "c" }} }} }} }} }}"#
        );
        let result = routes(
            &config,
            &[(":authority", "payment"), (carrier, "feature-x")],
        );
        assert_ne!(
            result,
            Ok(false),
            "carrier {carrier} accepted but never read; config {config}"
        );
    }
}

/// parsers (fuzz): `2274-10-14T22:10:07Z` parses to `None` although its Unix nanoseconds,
/// 9_618_127_807_000_000_000, fit the `u64` the parser returns: it computes in i64, which ends
/// at 2262-04-11T23:47:16.854775807Z. A sandbox `expires_at` after that is refused as "not an
/// RFC 3339 time". Expected: the value (or a message saying the year is out of range).
#[test]
fn expiry_after_2262_is_refused() {
    use sandbox_router::core::time::parse_rfc3339;
    assert_eq!(
        parse_rfc3339("2262-04-11T23:47:16.854775807Z"),
        Some(9_223_372_036_854_775_807)
    );
    assert_eq!(
        parse_rfc3339("2274-10-14T22:10:07Z"),
        Some(9_618_127_807_000_000_000)
    );
    assert_eq!(
        parse_rfc3339("2262-04-11T23:47:16.854775808Z"),
        Some(9_223_372_036_854_775_808)
    );
}
