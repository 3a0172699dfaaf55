//! Routing-key extraction and the routing decision over a whole header set.
//!
//! Input byte 0 even: the rest is a raw proxy-wasm serialized header map (lies included).
//! Odd: the rest drives a structured header set built from carrier-shaped pieces, serialized
//! with `core::header_map::serialize`.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::audit::audit_record;
use sandbox_router::core::cidr::peer_ip;
use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::describe::describe;
use sandbox_router::core::header_map::{serialize, HeaderPairs};
use sandbox_router::core::policy::{evaluate, Label};
use sandbox_router::core::request::{scan, KeySearch};
use sandbox_router::core::router::{BaselineReason, Decision, Router, Target};
use sandbox_router::core::strip::{strip_plan, HeaderEdit};
use sandbox_router_fuzz::{
    assert_printable_header_value, contains, lossy_percent_decode, oracle_lookup_host, oracle_scan,
    Expect,
};

const CONFIG: &str = r#"{
    "routing_key": { "baggage": ["sandbox", "sb"], "headers": ["x-sandbox", "X-Env"] },
    "namespace": "shop",
    "cluster_header": "x-sandbox-cluster",
    "debug": true,
    "sandboxes": {
        "feature-x": { "routes": {
            "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" },
            "inventory.shop.svc.cluster.local": { "cluster": "inventory-feature-x" },
            "ledger.billing": { "authority": "ledger-x.billing:9090" },
            "api.example.com": { "cluster": "outbound|443||api-x.example.com" }
        } },
        "feature-y": { "routes": { "payment": { "cluster": "payment-feature-y" } } },
        "a": { "routes": { "ledger.billing.svc": { "authority": "ledger-a.billing" } } },
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk": {
            "routes": { "payment.shop": { "cluster": "long" } } }
    }
}"#;

/// The same sandboxes under every policy: trusted sources only (untrusted keys stripped),
/// unknown keys rejected, an expiring sandbox, baseline writes denied.
const POLICY_CONFIG: &str = r#"{
    "routing_key": { "baggage": ["sandbox", "sb"], "headers": ["x-sandbox", "X-Env"] },
    "namespace": "shop",
    "trust": { "sources": ["10.0.0.0/8", "::1/128", "fd00::/8"], "untrusted": "strip" },
    "unknown_keys": "reject",
    "sandboxes": {
        "feature-x": {
            "routes": { "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" } },
            "owner": { "user": "a\"lic\u00e9 \\ x", "change": "CR-1" },
            "baseline_writes": "deny",
            "baseline_write_exceptions": ["ledger.billing"],
            "expires_at": "2030-01-01T00:00:00Z",
            "rate_limit": { "requests_per_second": 5, "burst": 10 }
        },
        "feature-y": { "routes": { "payment": { "cluster": "payment-feature-y" } } }
    }
}"#;

fn policy_router() -> &'static Router {
    thread_local! {
        static ROUTER: &'static Router = Box::leak(Box::new(
            match compile(POLICY_CONFIG.as_bytes(), &HostFacts::default()) {
                Ok(router) => router,
                Err(e) => panic!("the fuzz policy configuration does not compile: {e}"),
            },
        ));
    }
    ROUTER.with(|r| *r)
}

const PEERS: &[&[u8]] = &[
    b"10.1.2.3:5000",
    b"11.0.0.1:80",
    b"[::1]:443",
    b"[::ffff:10.0.0.1]:1",
    b"fd12::1",
    b"::2",
    b"",
    b"garbage",
];

/// Everything after routing: trust, unknown and expired keys, the write guard, the audit
/// record and stripping the key from an untrusted request.
fn check_policy(
    router: &Router,
    buffer: &[u8],
    pairs: &[(Vec<u8>, Vec<u8>)],
    peer: &[u8],
    now_ns: Option<u64>,
) {
    let request = scan(&router.settings, HeaderPairs::new(buffer));
    let peer_ip = peer_ip(peer);
    let trusted = router
        .settings
        .trust
        .as_ref()
        .is_none_or(|t| t.allows(peer_ip));
    let evaluation = evaluate(router, &request, || trusted, || now_ns);
    match evaluation.label {
        None => assert_eq!(request.key, KeySearch::Absent),
        Some(label) => {
            assert_ne!(request.key, KeySearch::Absent);
            if !trusted {
                assert_eq!(label, Label::Untrusted);
                assert!(evaluation.strip || evaluation.reject.is_some());
            }
            if label == Label::Routed {
                assert!(matches!(evaluation.decision, Decision::Route { .. }));
            }
            let record = audit_record(&request, &evaluation, label);
            let json: serde_json::Value = match serde_json::from_str(&record) {
                Ok(v) => v,
                Err(e) => panic!("audit record is not JSON ({e}): {record}"),
            };
            assert_eq!(json["decision"], label.as_str(), "{record}");
            let key = match request.key {
                KeySearch::Found(k) => serde_json::Value::from(k.as_str()),
                _ => serde_json::Value::Null,
            };
            assert_eq!(json["key"], key, "{record}");
        }
    }
    if let Some(reject) = &evaluation.reject {
        assert!((400..500).contains(&reject.status), "{reject:?}");
        assert!(!reject.details.is_empty() && reject.details.bytes().all(|b| b.is_ascii_graphic()));
        assert!(!reject.body.is_empty());
    }
    let text = describe(&evaluation.decision, request.authority.unwrap_or_default());
    assert_printable_header_value(&text);

    // Stripping leaves no carrier with a key, valid or not, and touches nothing else.
    let original: Vec<(&[u8], &[u8])> = HeaderPairs::new(buffer).collect();
    let plan = strip_plan(&router.settings, original.iter().copied());
    let mut stripped: Vec<(Vec<u8>, Vec<u8>)> = pairs.to_vec();
    for edit in &plan {
        match edit {
            HeaderEdit::Remove(name) => stripped.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
            HeaderEdit::Replace(name, value) => {
                stripped.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                stripped.push((name.to_vec(), value.clone()));
            }
        }
    }
    let borrowed: Vec<(&[u8], &[u8])> = stripped
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let rescan = scan(&router.settings, borrowed.iter().copied());
    assert_eq!(
        rescan.key,
        KeySearch::Absent,
        "left after strip {plan:?}: {stripped:?}"
    );
    assert_eq!(rescan.authority, request.authority);
    assert_eq!(rescan.method, request.method);
}

fn router() -> &'static Router {
    // Router holds `Rc`s, so it is not `Sync`: one per thread (libFuzzer uses one).
    thread_local! {
        static ROUTER: &'static Router = Box::leak(Box::new(
            match compile(CONFIG.as_bytes(), &HostFacts::default()) {
                Ok(router) => router,
                Err(e) => panic!("the fuzz configuration does not compile: {e}"),
            },
        ));
    }
    ROUTER.with(|r| *r)
}

/// (sandbox key, lookup host) → the target, restated from CONFIG.
fn expected_routes() -> &'static HashMap<(String, String), Target> {
    static ROUTES: OnceLock<HashMap<(String, String), Target>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut routes = HashMap::new();
        let k8s = |name: &str, ns: &str, local: bool| {
            let mut forms = vec![
                format!("{name}.{ns}.svc.cluster.local"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}"),
            ];
            if local {
                forms.push(name.to_owned());
            }
            forms
        };
        let authority = |host: &str, port: Option<u16>| Target::Authority {
            host: host.into(),
            port,
        };
        let cluster = |c: &str| Target::Cluster(c.into());
        let long = "k".repeat(128);
        let table: Vec<(&str, Vec<String>, Target)> = vec![
            (
                "feature-x",
                k8s("payment", "shop", true),
                authority("payment-feature-x.shop.svc.cluster.local", None),
            ),
            (
                "feature-x",
                k8s("inventory", "shop", true),
                cluster("inventory-feature-x"),
            ),
            (
                "feature-x",
                k8s("ledger", "billing", false),
                authority("ledger-x.billing", Some(9090)),
            ),
            (
                "feature-x",
                vec!["api.example.com".into()],
                cluster("outbound|443||api-x.example.com"),
            ),
            (
                "feature-y",
                k8s("payment", "shop", true),
                cluster("payment-feature-y"),
            ),
            (
                "a",
                k8s("ledger", "billing", false),
                authority("ledger-a.billing", None),
            ),
            (&long, k8s("payment", "shop", true), cluster("long")),
        ];
        for (key, forms, target) in table {
            for form in forms {
                routes.insert((key.to_owned(), form), target.clone());
            }
        }
        routes
    })
}

const SANDBOX_KEYS: &[&str] = &["feature-x", "feature-y", "a"];

/// Header names and value pieces the scanner reacts to.
const NAMES: &[&[u8]] = &[
    b":authority",
    b":method",
    b":path",
    b"content-type",
    b"baggage",
    b"tracestate",
    b"x-sandbox",
    b"X-Sandbox",
    b"x-env",
    b"ot-baggage-sandbox",
    b"OT-Baggage-SB",
    b"uberctx-sandbox",
    b"uberctx-sb",
    b"x-sandbox-cluster",
    b"Baggage",
    b"ot-baggage-",
    b"uberctx-other",
    b"",
];
const PIECES: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"OPTIONS",
    b"/api?x=\"y\"",
    b"\r\n",
    b"sandbox",
    b"sb",
    b"=",
    b",",
    b";",
    b" ",
    b"\t",
    b"%",
    b"%2D",
    b"%2d",
    b"%3D",
    b"%2C",
    b"%20",
    b"feature-x",
    b"feature-y",
    b"a",
    b"payment",
    b"payment.shop",
    b"inventory",
    b"ledger.billing",
    b"api.example.com",
    b".",
    b":",
    b":8080",
    b":0",
    b":65536",
    b"PAYMENT",
    b"application/grpc",
    b"\xff",
    b"\0",
    b"[::1]",
    b"svc.cluster.local",
];

#[derive(Arbitrary, Debug)]
enum NameSpec {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Known(u8),
    Raw(Vec<u8>),
    Key(u8, u8),
}

fn build_value(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Known(i) => out.extend_from_slice(PIECES[usize::from(*i) % PIECES.len()]),
            Piece::Raw(bytes) => out.extend_from_slice(bytes),
            // A run of key bytes, up to and beyond the 128-byte limit.
            Piece::Key(c, n) => {
                let c = b"k-._Z9"[usize::from(*c) % 6];
                out.extend(std::iter::repeat_n(c, usize::from(*n)));
            }
        }
    }
    out
}

fn structured(data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut u = Unstructured::new(data);
    let spec: Vec<(NameSpec, Vec<Piece>)> = u.arbitrary().ok()?;
    Some(
        spec.into_iter()
            .map(|(name, value)| {
                let name = match name {
                    NameSpec::Known(i) => NAMES[usize::from(i) % NAMES.len()].to_vec(),
                    NameSpec::Raw(bytes) => bytes,
                };
                (name, build_value(&value))
            })
            .collect(),
    )
}

fn check(buffer: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = HeaderPairs::new(buffer)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    let yielded: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    assert!(
        yielded <= buffer.len(),
        "header map yielded more bytes than it holds"
    );

    let router = router();
    let request = scan(&router.settings, HeaderPairs::new(buffer));

    // The key, by the documented precedence, and only ever a key that was in a carrier.
    let found = Expect::of_search(&request.key);
    assert_eq!(
        found,
        oracle_scan(&router.settings, &pairs),
        "headers {pairs:?}"
    );
    if let Expect::Key(key) = &found {
        assert!(
            pairs
                .iter()
                .any(|(_, v)| contains(&lossy_percent_decode(v), key)),
            "key {key:?} is in no header"
        );
    }
    let first = |wanted: &[u8]| {
        pairs
            .iter()
            .find(|(n, _)| n == wanted)
            .map(|(_, v)| v.as_slice())
    };
    assert_eq!(request.authority, first(b":authority"));
    assert_eq!(request.method, first(b":method"));
    assert_eq!(
        request.has_cluster_header,
        pairs
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"x-sandbox-cluster"))
    );

    let decision = router.decide(&request);
    let authority = request.authority.unwrap_or_default();
    let text = describe(&decision, authority);
    assert_printable_header_value(&text);

    let key_str = |k: &[u8]| String::from_utf8(k.to_vec()).unwrap_or_default();
    let registered = |k: &str| SANDBOX_KEYS.contains(&k) || k == "k".repeat(128);
    let expected_target = match &found {
        Expect::Key(k) => oracle_lookup_host(authority)
            .and_then(|host| expected_routes().get(&(key_str(k), host))),
        _ => None,
    };
    match decision {
        Decision::Route {
            key,
            sandbox,
            target,
            ..
        } => {
            assert_eq!(Expect::Key(key.as_bytes().to_vec()), found);
            assert_eq!(&*sandbox.key, key.as_str());
            assert_eq!(Some(target), expected_target, "{text}");
            assert!(
                text.starts_with(&format!("routed; key={}; ", key.as_str())),
                "{text}"
            );
        }
        Decision::Baseline { reason, key, .. } => {
            assert_eq!(expected_target, None, "should have routed: {text}");
            let reason_ok = match (&request.key, reason) {
                (KeySearch::Absent, BaselineReason::NoKey)
                | (KeySearch::Invalid, BaselineReason::InvalidKey) => key.is_none(),
                (KeySearch::Found(k), BaselineReason::UnknownKey) => {
                    !registered(k.as_str()) && key == Some(*k)
                }
                (KeySearch::Found(k), BaselineReason::NoOverride) => {
                    registered(k.as_str()) && key == Some(*k)
                }
                _ => false,
            };
            assert!(reason_ok, "{reason:?} for {:?}", request.key);
            assert!(text.starts_with("baseline"), "{text}");
            assert!(
                text.ends_with(&format!("reason={}", reason.as_str())),
                "{text}"
            );
        }
    }
    pairs
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: bit 0 raw/structured; bit 1 also run the policy layer; bits 2-4 the peer;
    // bits 5-7 the clock.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let peer = PEERS[usize::from(mode >> 2) % PEERS.len()];
    let now_ns = match mode >> 5 {
        0 => None,
        1 => Some(0),
        2 => Some(1_893_456_000_000_000_000), // 2030-01-01T00:00:00Z, the expiry
        3 => Some(1_893_455_999_999_999_999),
        _ => Some(u64::MAX),
    };
    let (buffer, pairs) = if mode % 2 == 0 {
        (rest.to_vec(), check(rest))
    } else if let Some(headers) = structured(rest) {
        let borrowed: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let buffer = serialize(&borrowed);
        // serialize and HeaderPairs are inverses.
        assert_eq!(check(&buffer), headers);
        (buffer, headers)
    } else {
        return;
    };
    if mode & 2 != 0 {
        check_policy(policy_router(), &buffer, &pairs, peer, now_ns);
    } else {
        check_policy(router(), &buffer, &pairs, peer, now_ns);
    }
});
