//! The configuration contract: what is accepted, and how every refusal is worded.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::core::bucket::RateLimit;
use crate::core::router::UntrustedMode;

fn err(json: &str) -> String {
    compile(json.as_bytes(), &HostFacts::default())
        .expect_err("configuration should be rejected")
        .to_string()
}

const VALID: &str = r#"{
    "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
    "namespace": "shop",
    "cluster_header": "x-sandbox-cluster",
    "debug": false,
    "sandboxes": {
        "feature-x": {
            "routes": {
                "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" },
                "inventory.shop.svc.cluster.local": { "cluster": "inventory-feature-x" }
            }
        }
    }
}"#;

#[test]
fn accepts_the_contract_example() {
    compile(VALID.as_bytes(), &HostFacts::default()).unwrap();
}

#[test]
fn empty_configuration_has_no_sandboxes() {
    let router = compile(b"", &HostFacts::default()).unwrap();
    assert_eq!(router.sandbox_count(), 0);
    compile(b"{}", &HostFacts::default()).unwrap();
}

#[test]
fn names_the_field_and_reason() {
    let e = err(
        r#"{"sandboxes": {"feature-x": {"routes": {"payment": {"authority": "a", "cluster": "b"}}}}, "namespace": "shop"}"#,
    );
    assert!(e.starts_with("sandboxes.feature-x.routes.payment: "), "{e}");
    assert!(e.contains("not both"), "{e}");
    let e =
        err(r#"{"namespace": "shop", "sandboxes": {"feature-x": {"routes": {"payment": {}}}}}"#);
    assert!(
        e.contains("sandboxes.feature-x.routes.payment: set exactly one"),
        "{e}"
    );
    let e = err(r#"{"sandboxes": {"feature-x": {"routez": {}}}}"#);
    assert!(e.starts_with("sandboxes.feature-x"), "{e}");
    assert!(e.contains("unknown field `routez`"), "{e}");
    let e = err(r#"{"sandboxes": {"bad key!": {}}}"#);
    assert!(e.starts_with("sandboxes.bad key!: a sandbox key"), "{e}");
    let e = err(
        r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"pay_ment": {"cluster": "c"}}}}}"#,
    );
    assert!(e.starts_with("sandboxes.x.routes.pay_ment: "), "{e}");
    let e = err(
        r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {"authority": "a b"}}}}}"#,
    );
    assert!(e.contains("not a valid host name"), "{e}");
    let e = err(r#"{"debug": "yes"}"#);
    assert!(e.starts_with("debug: "), "{e}");
    let e = err(r#"{"routing_key": {"baggage": ["a b"]}}"#);
    assert!(e.starts_with("routing_key.baggage[0]: "), "{e}");
    let e = err(r#"{"routing_key": {"baggage": []}}"#);
    assert!(e.starts_with("routing_key: no carrier"), "{e}");
    let e = err(r#"{"namespace": "Shop"}"#);
    assert!(e.starts_with("namespace: "), "{e}");
    assert!(!err("{").is_empty());
    assert!(!err("[]").is_empty());
    assert!(err("{} x").contains("trailing"));
}

#[test]
fn budgets_inherit_defaults_field_by_field() {
    let router = compile(
        br#"{
        "defaults": { "rate_limit": { "requests_per_second": 50, "burst": 100 }, "max_in_flight": 20 },
        "sandboxes": {
            "own": { "rate_limit": { "requests_per_second": 0.5, "burst": 1 }, "enforce": false },
            "inherits": {}
        }}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let own = router.sandbox("own").unwrap().budget.as_ref().unwrap();
    assert_eq!(own.rate, RateLimit::new(0.5, 1));
    assert_eq!(own.max_in_flight, Some(20));
    assert!(!router.sandbox("own").unwrap().enforce);
    assert_eq!(&*own.store_key, "sandbox-router/budget/own");
    let inherits = router.sandbox("inherits").unwrap().budget.as_ref().unwrap();
    assert_eq!(inherits.rate, RateLimit::new(50.0, 100));
    assert!(router.sandbox("inherits").unwrap().enforce);
    let unlimited = compile(br#"{"sandboxes": {"free": {}}}"#, &HostFacts::default()).unwrap();
    assert!(unlimited.sandbox("free").unwrap().budget.is_none());
}

#[test]
fn rejects_bad_budgets() {
    let e = err(r#"{"sandboxes": {"x": {"rate_limit": {"requests_per_second": 0, "burst": 1}}}}"#);
    assert!(e.starts_with("sandboxes.x.rate_limit: "), "{e}");
    let e = err(r#"{"defaults": {"max_in_flight": 0}}"#);
    assert!(e.starts_with("defaults.max_in_flight: "), "{e}");
    let e =
        err(r#"{"sandboxes": {"x": {"rate_limit": {"requests_per_second": 1, "burst": 1.5}}}}"#);
    assert!(e.starts_with("sandboxes.x.rate_limit.burst: "), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"max_in_flight": -1}}}"#);
    assert!(e.starts_with("sandboxes.x.max_in_flight: "), "{e}");
}

#[test]
fn trust_owner_expiry_and_write_policy() {
    let router = compile(
        br#"{
        "namespace": "shop",
        "trust": { "sources": ["10.0.0.0/8", "fd00::/8"], "untrusted": "reject" },
        "unknown_keys": "reject",
        "sandboxes": { "feature-x": {
            "owner": { "user": "alice@example.com", "change": "shop#1234" },
            "routes": { "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" } },
            "baseline_writes": "deny",
            "baseline_write_exceptions": ["audit-log"],
            "expires_at": "2026-12-01T00:00:00Z"
        } } }"#,
        &HostFacts::default(),
    )
    .unwrap();
    let trust = router.settings.trust.as_ref().unwrap();
    assert_eq!(trust.untrusted, UntrustedMode::Reject);
    assert!(router.settings.reject_unknown_keys);
    let x = router.sandbox("feature-x").unwrap();
    assert_eq!(
        x.owner.as_ref().unwrap().user.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(x.expires_at_ns, Some(1_796_083_200_000_000_000));
    assert!(!x.may_write_to(Some("inventory.shop.svc.cluster.local")));
    assert!(x.may_write_to(Some("audit-log.shop.svc.cluster.local")));
    assert!(!x.may_write_to(None));
}

#[test]
fn rejects_bad_trust_and_policy_values() {
    let e = err(r#"{"trust": {"sources": ["10.0.0.0/33"]}}"#);
    assert!(e.starts_with("trust.sources[0]: "), "{e}");
    let e = err(r#"{"trust": {"sources": []}}"#);
    assert!(e.starts_with("trust.sources: "), "{e}");
    let e = err(r#"{"trust": {"sources": ["10.0.0.0/8"], "untrusted": "drop"}}"#);
    assert!(
        e.starts_with("trust.untrusted: unknown variant `drop`"),
        "{e}"
    );
    let e = err(r#"{"unknown_keys": "ignore"}"#);
    assert!(e.starts_with("unknown_keys: "), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"expires_at": "tomorrow"}}}"#);
    assert!(e.starts_with("sandboxes.x.expires_at: "), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"baseline_writes": "maybe"}}}"#);
    assert!(e.starts_with("sandboxes.x.baseline_writes: "), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"owner": {"team": "a"}}}}"#);
    assert!(
        e.starts_with("sandboxes.x.owner.team: unknown field `team`"),
        "{e}"
    );
    let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "a\nb"}}}}"#);
    assert!(e.starts_with("sandboxes.x.owner.user: "), "{e}");
}

#[test]
fn short_names_need_a_namespace_from_config_or_istio() {
    let json = r#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}}"#;
    assert!(err(json).contains("sandboxes.x.routes.payment: "));
    let facts = HostFacts {
        namespace: Some("shop".into()),
    };
    compile(json.as_bytes(), &facts).unwrap();
}

#[test]
fn one_service_written_twice_in_a_sandbox_is_rejected() {
    let e = err(r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {
        "payment": {"cluster": "a"}, "payment.shop": {"cluster": "b"}}}}}"#);
    assert!(e.starts_with("sandboxes.x: "), "{e}");
    assert!(e.contains("payment.shop.svc.cluster.local"), "{e}");
}

#[test]
fn key_order_does_not_matter() {
    // What sandboxes are compiled against may come after them.
    let late = compile(
        br#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}},
            "cluster_domain": "corp.example", "namespace": "shop",
            "defaults": {"max_in_flight": 7}, "routing_key": {"headers": ["x-key"]}}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let x = late.sandbox("x").unwrap();
    assert_eq!(x.budget.as_ref().unwrap().max_in_flight, Some(7));
    assert!(x.may_write_to(Some("inventory.shop.svc.corp.example")));
    assert_eq!(
        &*late.settings.carriers.headers,
        &[b"x-key".to_vec().into_boxed_slice()]
    );
    let e = err(
        r#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}, "namespace": "Shop"}"#,
    );
    assert!(e.starts_with("namespace: "), "{e}");
}

#[test]
fn duplicate_keys_are_rejected_everywhere() {
    let e = err(r#"{"sandboxes": {"x": {}, "y": {}, "x": {"enforce": false}}}"#);
    assert!(e.starts_with("sandboxes: duplicate key `x`"), "{e}");
    // The same key spelled with an escape.
    let e = err(r#"{"sandboxes": {"x": {}, "\u0078": {}}}"#);
    assert!(e.starts_with("sandboxes: duplicate key `x`"), "{e}");
    let e = err(r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {
        "payment": {"cluster": "a"}, "payment": {"cluster": "b"}}}}}"#);
    assert!(
        e.starts_with("sandboxes.x.routes: duplicate key `payment`"),
        "{e}"
    );
    let e = err(r#"{"debug": true, "debug": false}"#);
    assert!(e.starts_with("duplicate field `debug`"), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "a", "user": "b"}}}}"#);
    assert!(
        e.starts_with("sandboxes.x.owner: duplicate field `user`"),
        "{e}"
    );
    let e = err(r#"{"sandboxes": {}, "sandboxes": {}}"#);
    assert!(e.starts_with("duplicate field `sandboxes`"), "{e}");
    // Many distinct keys are fine, however their hashes fall.
    let many: Vec<String> = (0..2000).map(|i| format!(r#""k{i}": {{}}"#)).collect();
    let json = format!(r#"{{"sandboxes": {{{}}}}}"#, many.join(","));
    assert_eq!(
        compile(json.as_bytes(), &HostFacts::default())
            .unwrap()
            .sandbox_count(),
        2000
    );
    let json = format!(r#"{{"sandboxes": {{{}, "k1999": {{}}}}}}"#, many.join(","));
    assert!(err(&json).starts_with("sandboxes: duplicate key `k1999`"));
}

#[test]
fn unknown_fields_are_named_at_every_level() {
    for (json, path) in [
        (r#"{"sandboxez": {}}"#, "sandboxez"),
        (r#"{"routing_key": {"cookie": []}}"#, "routing_key.cookie"),
        (
            r#"{"trust": {"sources": ["10.0.0.0/8"], "mode": 1}}"#,
            "trust.mode",
        ),
        (r#"{"defaults": {"burst": 1}}"#, "defaults.burst"),
        (
            r#"{"defaults": {"rate_limit": {"requests_per_second": 1, "burst": 1, "x": 1}}}"#,
            "defaults.rate_limit.x",
        ),
        (
            r#"{"sandboxes": {"x": {"routes": {"p": {"cluster": "c", "port": 1}}}}}"#,
            "sandboxes.x.routes.p.port",
        ),
    ] {
        let e = err(json);
        let leaf = path.rsplit('.').next().unwrap();
        assert!(
            e.starts_with(&format!("{path}: unknown field `{leaf}`, expected ")),
            "{e}"
        );
    }
}

#[test]
fn null_is_absent_only_where_a_field_is_optional() {
    compile(
        br#"{"namespace": null, "cluster_domain": null, "cluster_header": null,
            "defaults": null, "trust": null, "sandboxes": null}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let router = compile(
        br#"{"namespace": "shop", "sandboxes": {"x": {"owner": null, "rate_limit": null,
            "max_in_flight": null, "expires_at": null,
            "routes": {"p": {"authority": null, "cluster": "c"}}}}}"#,
        &HostFacts::default(),
    )
    .unwrap();
    assert!(router.sandbox("x").unwrap().budget.is_none());
    for (json, path) in [
        (r#"{"debug": null}"#, "debug: "),
        (r#"{"routing_key": null}"#, "routing_key: "),
        (
            r#"{"routing_key": {"baggage": null}}"#,
            "routing_key.baggage: ",
        ),
        (
            r#"{"routing_key": {"baggage": [null]}}"#,
            "routing_key.baggage[0]: ",
        ),
        (r#"{"unknown_keys": null}"#, "unknown_keys: "),
        (r#"{"sandboxes": {"x": null}}"#, "sandboxes.x: "),
        (
            r#"{"sandboxes": {"x": {"routes": null}}}"#,
            "sandboxes.x.routes: ",
        ),
        (
            r#"{"sandboxes": {"x": {"enforce": null}}}"#,
            "sandboxes.x.enforce: ",
        ),
    ] {
        let e = err(json);
        assert!(
            e.starts_with(path) && e.contains("invalid type: null"),
            "{e}"
        );
    }
}

#[test]
fn numbers_are_read_strictly() {
    let burst = |text: &str| {
        compile(
            format!(
                r#"{{"sandboxes": {{"x": {{"rate_limit": {{"requests_per_second": 1, "burst": {text}}}}}}}}}"#
            )
            .as_bytes(),
            &HostFacts::default(),
        )
        .map(|r| r.sandbox("x").unwrap().budget.as_ref().unwrap().rate)
        .map_err(|e| e.to_string())
    };
    assert_eq!(burst("4294967295").unwrap(), RateLimit::new(1.0, u32::MAX));
    assert_eq!(burst("7").unwrap(), RateLimit::new(1.0, 7));
    for bad in [
        "4294967296",
        "99999999999999999999",
        "-1",
        "-0",
        "1.5",
        "1.0",
        "1e2",
        "1E0",
        "\"7\"",
        "true",
    ] {
        let e = burst(bad).unwrap_err();
        assert!(
            e.starts_with("sandboxes.x.rate_limit.burst: "),
            "{bad}: {e}"
        );
    }
    // A syntax error inside `sandboxes` is found when the top level is first read.
    let e = burst("07").unwrap_err();
    assert!(
        e.starts_with("sandboxes: invalid number at line 1 column "),
        "{e}"
    );
    let rate = |text: &str| {
        compile(
            format!(
                r#"{{"defaults": {{"rate_limit": {{"requests_per_second": {text}, "burst": 1}}}}, "sandboxes": {{"x": {{}}}}}}"#
            )
            .as_bytes(),
            &HostFacts::default(),
        )
        .map(|r| r.sandbox("x").unwrap().budget.as_ref().unwrap().rate)
        .map_err(|e| e.to_string())
    };
    for (text, value) in [
        ("5", 5.0),
        ("0.25", 0.25),
        ("2.5e2", 250.0),
        ("1E6", 1e6),
        ("1e-6", 1e-6),
    ] {
        assert_eq!(rate(text).unwrap(), RateLimit::new(value, 1), "{text}");
    }
    for bad in [
        "0", "-1", "1e400", "1000001", "01", "1.", ".5", "+1", "NaN", "\"1\"",
    ] {
        let e = rate(bad).unwrap_err();
        assert!(e.starts_with("defaults.rate_limit"), "{bad}: {e}");
    }
    let e = err(r#"{"sandboxes": {"x": {"max_in_flight": 4294967296}}}"#);
    assert!(e.starts_with("sandboxes.x.max_in_flight: "), "{e}");
}

#[test]
fn syntax_errors_name_where_they_are() {
    assert!(compile(b" \n\t\r ", &HostFacts::default()).is_ok());
    let e = err("{} x");
    assert!(e.starts_with("trailing characters"), "{e}");
    assert!(e.ends_with("at line 1 column 4"), "{e}");
    let e = err("[]");
    assert!(
        e.starts_with("invalid type: sequence, expected an object"),
        "{e}"
    );
    assert!(err("null").starts_with("invalid type: null"));
    assert!(err("\"x\"").starts_with("invalid type: string"));
    // Inside `sandboxes`, found when the top level is first read.
    let e = err("{\"namespace\": \"shop\",\n \"sandboxes\": {\"x\": {\"routes\": {]}}}}");
    assert!(e.starts_with("sandboxes: "), "{e}");
    assert!(e.ends_with("at line 2 column 33"), "{e}");
    let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "\ud800"}}}}"#);
    assert!(
        e.starts_with("sandboxes.x.owner.user: ") && e.contains("escape"),
        "{e}"
    );
    let e = compile(
        b"{\"sandboxes\": {\"x\": {\"expires_at\": \"\xff\"}}}",
        &HostFacts::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "sandboxes");
    assert!(e.reason.starts_with("invalid unicode code point"), "{e}");
    let e = compile(b"{\"namespace\": \"a\xffb\"}", &HostFacts::default()).unwrap_err();
    assert_eq!(e.field, "namespace");
    assert!(e.reason.starts_with("invalid unicode code point"), "{e}");
    let deep = format!(
        r#"{{"sandboxes": {}{}}}"#,
        r#"{"a":"#.repeat(100),
        "}".repeat(100)
    );
    assert!(err(&deep).starts_with("sandboxes: expected value"));
    // Nesting where a flat value belongs is refused at its first level.
    let deep = format!(
        r#"{{"sandboxes": {{"x": {{"owner": {{"user": {}{}}}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(err(&deep).starts_with("sandboxes.x.owner.user: invalid type: sequence"));
    let deep = format!(r#"{{"sandboxes": {}"#, r#"{"a":"#.repeat(10_000));
    assert!(err(&deep).starts_with("sandboxes: "));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(!err(&deep).is_empty());
}

#[test]
fn every_truncation_of_a_valid_configuration_is_an_error() {
    let json = br#"{"namespace": "shop", "routing_key": {"baggage": ["sandbox"], "headers": []},
        "defaults": {"rate_limit": {"requests_per_second": 1.5e1, "burst": 3}},
        "trust": {"sources": ["10.0.0.0/8"], "untrusted": "reject"},
        "sandboxes": {"x\u002d1": {"routes": {"payment": {"authority": "p.shop:8080"}},
            "owner": {"user": "\u00e9\ud83d\ude00"}, "enforce": false, "max_in_flight": 2,
            "baseline_writes": "deny", "baseline_write_exceptions": ["audit"]}}}"#;
    compile(json, &HostFacts::default()).unwrap();
    for cut in 0..json.len() {
        let prefix = &json[..cut];
        if prefix.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        assert!(
            compile(prefix, &HostFacts::default()).is_err(),
            "{}",
            String::from_utf8_lossy(prefix)
        );
    }
}

#[test]
fn headers_the_filter_may_not_own_are_refused() {
    for name in [
        "authorization",
        "Proxy-Authorization",
        "cookie",
        "host",
        ":authority",
        "connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "x-envoy-original-path",
        "baggage",
        "tracestate",
        "content-type",
        "x-http-method-override",
    ] {
        for field in ["cluster_header", "key_header"] {
            let e = err(&format!(r#"{{"{field}": "{name}"}}"#));
            assert!(e.starts_with(&format!("{field}: `{name}`")), "{e}");
        }
        let e = err(&format!(r#"{{"routing_key": {{"headers": ["{name}"]}}}}"#));
        assert!(e.starts_with("routing_key.headers[0]: "), "{e}");
    }
    // No header plays two roles.
    let e = err(r#"{"key_header": "x-sandbox-cluster"}"#);
    assert!(e.starts_with("key_header: "), "{e}");
    let e = err(r#"{"routing_key": {"headers": ["x-k"]}, "key_header": "x-k"}"#);
    assert!(
        e.starts_with("key_header: `x-k` is also a routing key carrier"),
        "{e}"
    );
    let e = err(r#"{"cluster_header": "uberctx-sandbox"}"#);
    assert!(e.starts_with("cluster_header: "), "{e}");
    // A carrier kind that is off frees its header names.
    compile(
        br#"{"routing_key": {"carriers": ["baggage"]}, "cluster_header": "uberctx-sandbox"}"#,
        &HostFacts::default(),
    )
    .unwrap();
}

#[test]
fn key_header_defaults_on_and_can_be_turned_off() {
    let router = compile(b"{}", &HostFacts::default()).unwrap();
    assert_eq!(&*router.settings.key_header, b"x-sandbox-key");
    let router = compile(br#"{"key_header": "X-Test-Key"}"#, &HostFacts::default()).unwrap();
    assert_eq!(&*router.settings.key_header, b"x-test-key");
    let router = compile(br#"{"key_header": ""}"#, &HostFacts::default()).unwrap();
    assert!(router.settings.key_header.is_empty());
    let probed: Vec<&[u8]> = router.settings.probed_headers().collect();
    assert!(!probed.contains(&&b""[..]), "{probed:?}");
}

#[test]
fn carriers_are_chosen_by_kind() {
    let router = compile(
        br#"{"routing_key": {"carriers": ["baggage"]}}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let probed: Vec<&[u8]> = router.settings.probed_headers().collect();
    assert_eq!(
        probed,
        [&b"baggage"[..], b"x-sandbox-cluster", b"x-sandbox-key"]
    );
    let e = err(r#"{"routing_key": {"carriers": ["baggage", "baggage"]}}"#);
    assert!(
        e.starts_with("routing_key.carriers[1]: listed twice"),
        "{e}"
    );
    let e = err(r#"{"routing_key": {"carriers": ["b3"]}}"#);
    assert!(
        e.starts_with("routing_key.carriers[0]: unknown variant `b3`"),
        "{e}"
    );
    let e = err(r#"{"routing_key": {"carriers": []}}"#);
    assert!(e.starts_with("routing_key.carriers: no carrier"), "{e}");
    // Only plain headers: no kinds needed.
    compile(
        br#"{"routing_key": {"baggage": [], "headers": ["x-k"], "carriers": []}}"#,
        &HostFacts::default(),
    )
    .unwrap();
}

#[test]
fn a_route_target_may_not_be_a_routed_service() {
    let e = err(r#"{"namespace": "shop", "sandboxes": {
        "x": {"routes": {"payment": {"authority": "inventory.shop.svc.cluster.local"}}},
        "y": {"routes": {"inventory": {"cluster": "inventory-y"}}}}}"#);
    assert!(e.starts_with("sandboxes.x.routes: the target `inventory.shop.svc.cluster.local` of `payment.shop.svc.cluster.local` is itself a service the table routes"), "{e}");
    // In any order, and in any form the table knows.
    let e = err(r#"{"namespace": "shop", "sandboxes": {
        "y": {"routes": {"inventory": {"cluster": "inventory-y"}}},
        "x": {"routes": {"payment": {"authority": "inventory.shop:8080"}}}}}"#);
    assert!(e.starts_with("sandboxes.x.routes: "), "{e}");
    compile(
        br#"{"namespace": "shop", "sandboxes": {
        "x": {"routes": {"payment": {"authority": "payment-x.shop.svc.cluster.local"}}}}}"#,
        &HostFacts::default(),
    )
    .unwrap();
}

#[test]
fn ipv4_mapped_trust_sources_mean_their_ipv4_range() {
    let router = compile(
        br#"{"trust": {"sources": ["::ffff:10.0.0.0/104"]}}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let trust = router.settings.trust.as_ref().unwrap();
    assert!(trust.allows(Some("10.1.2.3".parse().unwrap())));
    assert!(trust.allows(Some("::ffff:10.1.2.3".parse().unwrap())));
}

#[test]
fn circuit_breakers_take_the_documented_defaults() {
    let router = compile(
        br#"{"defaults": {"circuit_breaker": {}},
            "sandboxes": {"x": {}, "y": {"circuit_breaker": {"open_seconds": 400, "half_open_requests": 1}}}}"#,
        &HostFacts::default(),
    )
    .unwrap();
    let x = router.sandbox("x").unwrap().breaker.as_ref().unwrap();
    let sec = 1_000_000_000;
    assert_eq!(
        (
            x.consecutive_failures,
            x.failure_ratio_ppm,
            x.min_requests,
            x.window_ns,
            x.open_ns,
            x.max_open_ns,
            x.half_open_requests
        ),
        (5, 500_000, 20, 10 * sec, 30 * sec, 300 * sec, 3)
    );
    assert_eq!(&*x.store_key, "sandbox-router/circuit/x");
    let y = router.sandbox("y").unwrap().breaker.as_ref().unwrap();
    assert_eq!(
        (y.open_ns, y.max_open_ns, y.half_open_requests),
        (400 * sec, 400 * sec, 1)
    );
    let none = compile(br#"{"sandboxes": {"x": {}}}"#, &HostFacts::default()).unwrap();
    assert!(none.sandbox("x").unwrap().breaker.is_none());
}

#[test]
fn circuit_breaker_errors_name_the_field() {
    for (breaker, field) in [
        (r#"{"consecutive_failures": -1}"#, "consecutive_failures"),
        (r#"{"failure_ratio": 0}"#, "failure_ratio"),
        (r#"{"failure_ratio": 1.5}"#, "failure_ratio"),
        (r#"{"failure_ratio": -0.5}"#, "failure_ratio"),
        (r#"{"window_seconds": 0}"#, "window_seconds"),
        (r#"{"open_seconds": 0}"#, "open_seconds"),
        (r#"{"half_open_requests": 0}"#, "half_open_requests"),
        (
            r#"{"open_seconds": 60, "max_open_seconds": 30}"#,
            "max_open_seconds",
        ),
        (r#"{"min_requests": 1.5}"#, "min_requests"),
        (r#"{"trip_after": 3}"#, "trip_after"),
    ] {
        for (json, prefix) in [
            (
                format!(r#"{{"sandboxes": {{"x": {{"circuit_breaker": {breaker}}}}}}}"#),
                "sandboxes.x.circuit_breaker",
            ),
            (
                format!(r#"{{"defaults": {{"circuit_breaker": {breaker}}}}}"#),
                "defaults.circuit_breaker",
            ),
        ] {
            let e = err(&json);
            assert!(e.starts_with(&format!("{prefix}.{field}: ")), "{e}");
        }
    }
    // A zero window is fine when the ratio trigger is off.
    compile(
        br#"{"sandboxes": {"x": {"circuit_breaker": {"window_seconds": 0, "min_requests": 0}}}}"#,
        &HostFacts::default(),
    )
    .unwrap();
}
