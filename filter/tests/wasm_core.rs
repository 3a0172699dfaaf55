//! Deterministic tests of the pure core aimed at the 32-bit build: the filter runs as
//! wasm32, where `usize` is 32 bits, so lengths near `u32::MAX` overflow `usize` arithmetic
//! that is harmless on 64-bit hosts. These run natively (`cargo test`) and as wasm32 under
//! Node.js (`scripts/test-wasm-core`), where `#[test]` is wasm-bindgen-test's.

// Test code: a panic is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;
use common::{header_map, pairs, router, test};

use sandbox_router::core::baggage::{
    find_baggage_member, find_tracestate_member, whole_value, Lookup,
};
use sandbox_router::core::bucket::{BudgetCell, RateLimit, MICRO};
use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::describe::describe;
use sandbox_router::core::header_map::{serialize, HeaderPairs};
use sandbox_router::core::key::{is_valid_key, RoutingKey, MAX_KEY_LEN};
use sandbox_router::core::names::{normalize_host, split_authority};
use sandbox_router::core::request::{scan, KeySearch};
use sandbox_router::core::router::{BaselineReason, Decision, Router, Target};
use sandbox_router::core::slots::{Slots, MAX_HOLDERS};

#[test]
fn runs_on_the_expected_word_size() {
    // The point of the Wasm run: the same tests on a 32-bit usize.
    if cfg!(target_arch = "wasm32") {
        assert_eq!(usize::BITS, 32);
        assert_eq!(usize::MAX as u64, u64::from(u32::MAX));
    }
}

// ---------------------------------------------------------------------- keys ---

#[test]
fn key_length_limits() {
    let max = "k".repeat(MAX_KEY_LEN);
    assert_eq!(
        RoutingKey::from_bytes(max.as_bytes()).unwrap().as_str(),
        max
    );
    assert!(RoutingKey::from_bytes(format!("{max}k").as_bytes()).is_none());
    assert!(RoutingKey::from_bytes(b"").is_none());
    let encoded = "%6B".repeat(MAX_KEY_LEN);
    assert_eq!(
        RoutingKey::from_encoded(encoded.as_bytes())
            .unwrap()
            .as_str(),
        max
    );
    assert!(RoutingKey::from_encoded(format!("{encoded}%6B").as_bytes()).is_none());
    assert!(is_valid_key("Feature_x-1.2"));
    assert!(!is_valid_key("a b"));
}

#[test]
fn key_percent_decoding_edge_cases() {
    for (raw, want) in [
        (&b"a%2Db"[..], Some("a-b")),
        (b"a%2db", Some("a-b")),
        (b"%41%5A%30%39%2E%5F%2D", Some("AZ09._-")),
        (b"%", None),
        (b"a%", None),
        (b"a%2", None),
        (b"a%G0", None),
        (b"a%20b", None),
        (b"a%20", Some("a")),
        (b"%09a%C2%A0", Some("a")),
        (b"a+b", None),
        (b"a%00", None),
        (b"a%FF", None),
        (b"%%41", None),
    ] {
        let got = RoutingKey::from_encoded(raw);
        assert_eq!(got.as_ref().map(RoutingKey::as_str), want, "{raw:?}");
    }
}

// ------------------------------------------------------------------- baggage ---

fn baggage(header: &str) -> Option<String> {
    match find_baggage_member(header.as_bytes(), b"sandbox") {
        Lookup::Key(k) => Some(k.as_str().to_owned()),
        _ => None,
    }
}

#[test]
fn baggage_members() {
    assert_eq!(baggage("sandbox=feature-x").as_deref(), Some("feature-x"));
    assert_eq!(
        baggage(" a=1 ,\tsandbox \t= feature%2Dx ; ttl=3;flag , b=2").as_deref(),
        Some("feature-x")
    );
    for header in [
        "other=sandbox%3Dkey",
        "a=sandbox=x",
        "a=1;sandbox=x",
        "xsandbox=x",
        "Sandbox=x",
        "sandbox=",
        "sandbox=a b",
        "",
        ",,,",
        "=",
    ] {
        assert_eq!(baggage(header), None, "{header}");
    }
    assert_eq!(
        baggage("sandbox=bad value,sandbox=good").as_deref(),
        Some("good")
    );
    assert_eq!(
        find_baggage_member(b"sandbox=%ZZ", b"sandbox"),
        Lookup::Invalid
    );
    assert!(matches!(
        find_tracestate_member(b"congo=t61rcWkgMzE, sandbox=feature-x", b"sandbox"),
        Lookup::Key(k) if k.as_str() == "feature-x"
    ));
    assert_eq!(whole_value(b"  ", true), Lookup::Invalid);
}

#[test]
fn large_baggage_header() {
    // 64 KiB of members before the one that counts.
    let mut header: String = (0..4000).map(|i| format!("m{i}=v{i},")).collect();
    header.push_str("sandbox=feature-x");
    assert!(header.len() > 32 * 1024);
    assert_eq!(baggage(&header).as_deref(), Some("feature-x"));
}

// ---------------------------------------------------------------- header map ---

fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn map_with_sizes(count: u32, sizes: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
    let mut buffer = u32le(count).to_vec();
    for (name, value) in sizes {
        buffer.extend_from_slice(&u32le(*name));
        buffer.extend_from_slice(&u32le(*value));
    }
    buffer.extend_from_slice(data);
    buffer
}

#[test]
fn header_map_counts_near_u32_max() {
    // count * 8 overflows a 32-bit usize for these counts; each must read as empty.
    for count in [
        u32::MAX,
        u32::MAX - 1,
        0x2000_0000,
        0x1FFF_FFFF,
        0x8000_0000,
        0x1000_0000,
    ] {
        let buffer = map_with_sizes(count, &[(4, 5)], b"name\0value\0");
        assert_eq!(HeaderPairs::new(&buffer).count(), 0, "count {count:#x}");
    }
}

#[test]
fn header_map_lengths_near_u32_max() {
    let data = b"name\0value\0";
    for (name_len, value_len) in [
        (u32::MAX, 0),
        (u32::MAX, u32::MAX),
        (u32::MAX - 1, 0),
        (u32::MAX - 1, 1),
        (0, u32::MAX),
        (0, u32::MAX - 1),
        (1, u32::MAX - 1),
        (4, u32::MAX - 4),
        (4, u32::MAX - 5),
        (4, u32::MAX - 6),
        (0x8000_0000, 0x8000_0000),
        (0x7FFF_FFFF, 0x7FFF_FFFF),
    ] {
        let buffer = map_with_sizes(1, &[(name_len, value_len)], data);
        assert_eq!(
            HeaderPairs::new(&buffer).count(),
            0,
            "{name_len:#x}/{value_len:#x}"
        );
        // A good pair, then the lying one: the good one is read, then iteration stops.
        let buffer = map_with_sizes(2, &[(4, 5), (name_len, value_len)], data);
        let pairs: Vec<_> = HeaderPairs::new(&buffer).collect();
        assert_eq!(pairs, vec![(&b"name"[..], &b"value"[..])]);
    }
}

#[test]
fn header_map_truncations_and_round_trip() {
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b":authority", b"payment:8080"),
        (b"baggage", b"sandbox=feature-x"),
        (b"", b""),
        (b"x", b"\xff\x00"),
    ];
    let buffer = serialize(&pairs);
    assert_eq!(HeaderPairs::new(&buffer).collect::<Vec<_>>(), pairs);
    for cut in 0..buffer.len() {
        let got: Vec<_> = HeaderPairs::new(&buffer[..cut]).collect();
        assert!(got.len() <= pairs.len());
        assert_eq!(&got[..], &pairs[..got.len()], "cut at {cut}");
    }
}

// --------------------------------------------------------------------- names ---

#[test]
fn authority_parsing() {
    assert_eq!(
        split_authority(b"Payment.Shop.:8080"),
        Some((&b"Payment.Shop."[..], Some(&b"8080"[..])))
    );
    for bad in [
        &b"a:"[..],
        b"a:0",
        b"a:65536",
        b"a:4294967296",
        b"a:18446744073709551616",
        b"a:1:2",
        b"[::1]:80",
        b"a:+1",
        b"a:-1",
    ] {
        assert!(split_authority(bad).is_none(), "{bad:?}");
    }
    assert_eq!(
        normalize_host(b"PAYMENT.shop.").unwrap().as_str(),
        "payment.shop"
    );
    assert!(normalize_host(&[b'a'; 254]).is_none());
    assert!(normalize_host(&[b'a'; 253]).is_some());
}

// ------------------------------------------------------------ config + routing ---

const CONFIG: &str = r#"{
    "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
    "namespace": "shop",
    "sandboxes": {
        "feature-x": { "routes": {
            "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" },
            "inventory.shop.svc.cluster.local": { "cluster": "inventory-feature-x" },
            "ledger.billing": { "authority": "ledger-x.billing:9090" }
        } }
    }
}"#;

fn decide(router: &Router, headers: &[(&str, &str)]) -> String {
    let buffer = header_map(headers);
    let request = scan(&router.settings, HeaderPairs::new(&buffer));
    let decision = router.decide(&request);
    let text = describe(&decision, request.authority.unwrap_or_default());
    match decision {
        Decision::Route { key, target, .. } => match target {
            Target::Authority { host, port } => {
                format!("routed:{}:{host}:{port:?}", key.as_str())
            }
            Target::Cluster(c) => format!("routed:{}:cluster={c}", key.as_str()),
        },
        Decision::Baseline { reason, .. } => {
            assert!(text.starts_with("baseline"), "{text}");
            format!("baseline:{}", reason.as_str())
        }
    }
}

#[test]
fn config_compiles_and_rejects() {
    assert_eq!(router(CONFIG).sandbox_count(), 1);
    assert_eq!(
        compile(b"", &HostFacts::default()).unwrap().sandbox_count(),
        0
    );
    assert_eq!(
        compile(b" \n\t ", &HostFacts::default())
            .unwrap()
            .sandbox_count(),
        0
    );
    for bad in [
        &b"{"[..],
        b"[]",
        b"null",
        b"{} x",
        b"\xff",
        br#"{"debug": 1}"#,
        br#"{"namespace": "Shop"}"#,
        br#"{"routing_key": {"baggage": []}}"#,
        br#"{"sandboxes": {"a b": {}}}"#,
        br#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}}"#,
        br#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {"authority": "a:99999"}}}}}"#,
        br#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {"authority": "a:4294967297"}}}}}"#,
        br#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {}}}}}"#,
    ] {
        let e = compile(bad, &HostFacts::default()).map(|r| r.sandbox_count());
        assert!(e.is_err(), "{}", String::from_utf8_lossy(bad));
        assert!(!e.unwrap_err().to_string().is_empty());
    }
    // Deep nesting is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(compile(deep.as_bytes(), &HostFacts::default()).is_err());
    let deep = format!(r#"{{"sandboxes": {}"#, r#"{"a":"#.repeat(10_000));
    assert!(compile(deep.as_bytes(), &HostFacts::default()).is_err());
}

#[test]
fn routing_decisions() {
    let router = router(CONFIG);
    let pay_x = "routed:feature-x:payment-feature-x.shop.svc.cluster.local:None";
    for authority in [
        "payment",
        "payment.shop",
        "payment.shop.svc",
        "payment.shop.svc.cluster.local",
        "payment.shop.svc.cluster.local.",
        "PAYMENT.Shop:8080",
        "payment:65535",
        "payment:1",
    ] {
        assert_eq!(
            decide(
                &router,
                &[(":authority", authority), ("baggage", "sandbox=feature-x")]
            ),
            pay_x,
            "{authority}"
        );
    }
    for authority in [
        "payment:0",
        "payment:65536",
        "payment:4294967297",
        "payment.other",
        "ledger",
        "",
    ] {
        assert_eq!(
            decide(
                &router,
                &[(":authority", authority), ("baggage", "sandbox=feature-x")]
            ),
            "baseline:no-override",
            "{authority}"
        );
    }
    assert_eq!(
        decide(
            &router,
            &[(":authority", "ledger.billing"), ("x-sandbox", "feature-x")]
        ),
        "routed:feature-x:ledger-x.billing:Some(9090)"
    );
    assert_eq!(
        decide(
            &router,
            &[(":authority", "inventory:8080"), ("x-sandbox", "feature-x")]
        ),
        "routed:feature-x:cluster=inventory-feature-x"
    );
    assert_eq!(
        decide(&router, &[(":authority", "payment")]),
        "baseline:no-key"
    );
    assert_eq!(
        decide(
            &router,
            &[(":authority", "payment"), ("x-sandbox", "bad key")]
        ),
        "baseline:invalid-key"
    );
    assert_eq!(
        decide(
            &router,
            &[(":authority", "payment"), ("baggage", "sandbox=nope")]
        ),
        "baseline:unknown-key"
    );
    assert_eq!(BaselineReason::NoKey.as_str(), "no-key");
}

#[test]
fn carrier_precedence() {
    let router = router(CONFIG);
    let winner = |headers: &[(&str, &str)]| match scan(&router.settings, pairs(headers)).key {
        KeySearch::Found(k) => k.as_str().to_owned(),
        other => format!("{other:?}"),
    };
    let all = [
        ("tracestate", "sandbox=t"),
        ("uberctx-sandbox", "u"),
        ("ot-baggage-sandbox", "o"),
        ("baggage", "sandbox=b"),
        ("x-sandbox", "h"),
    ];
    for (i, expected) in ["h", "b", "o", "u", "t"].iter().enumerate() {
        assert_eq!(winner(&all[..all.len() - i]), *expected);
        let mut reversed = all[..all.len() - i].to_vec();
        reversed.reverse();
        assert_eq!(winner(&reversed), *expected);
    }
    assert_eq!(
        winner(&[("x-sandbox", "bad key"), ("baggage", "sandbox=b")]),
        "b"
    );
    assert_eq!(winner(&[("x-sandbox", "bad key")]), "Invalid");
    assert_eq!(winner(&[]), "Absent");
}

// -------------------------------------------------------------- bucket math ---

const SEC: u64 = 1_000_000_000;

#[test]
fn bucket_refill_and_take() {
    let limit = RateLimit::new(2.0, 3).unwrap();
    let mut cell = BudgetCell::full(Some(&limit), 5 * SEC);
    for _ in 0..3 {
        cell.refill(&limit, 5 * SEC);
        assert!(cell.take_token());
    }
    assert!(!cell.take_token());
    assert_eq!(cell.seconds_until_token(&limit), 1);
    assert_eq!(cell.seconds_until_full(&limit), 2);
    cell.refill(&limit, 5 * SEC + SEC / 2);
    assert!(cell.take_token());
    assert!(!cell.take_token());
}

#[test]
fn bucket_extremes_do_not_overflow() {
    for (rps, burst) in [(1e6, u32::MAX), (1e-6, u32::MAX), (1e-6, 1), (1e6, 1)] {
        let limit = RateLimit::new(rps, burst).unwrap();
        let capacity = u64::from(burst) * MICRO;
        for (stored, from, to) in [
            (u64::MAX, 0, u64::MAX),
            (0, 0, u64::MAX),
            (0, u64::MAX, 0),
            (u64::MAX, u64::MAX, u64::MAX),
            (0, u64::MAX - 1, u64::MAX),
            (MICRO - 1, 0, 1),
        ] {
            let mut cell = BudgetCell {
                micro_tokens: stored,
                refilled_at_ns: from,
                slots: Slots::default(),
            };
            for _ in 0..3 {
                cell.slots.take(u64::MAX);
            }
            let slots = cell.slots;
            cell.refill(&limit, to);
            assert!(cell.micro_tokens <= capacity);
            assert_eq!(cell.refilled_at_ns, to);
            assert_eq!(cell.slots, slots);
            assert_eq!(cell.remaining_tokens(), cell.micro_tokens / MICRO);
            let _ = cell.seconds_until_full(&limit);
            let _ = cell.seconds_until_token(&limit);
        }
    }
}

#[test]
fn bucket_rejects_nonsense_limits_and_cells() {
    for rps in [
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::MIN_POSITIVE,
        1e6 + 1.0,
    ] {
        assert!(RateLimit::new(rps, 1).is_none(), "{rps}");
    }
    assert!(RateLimit::new(1.0, 0).is_none());
    let mut cell = BudgetCell {
        micro_tokens: u64::MAX,
        refilled_at_ns: u64::MAX - 1,
        slots: Slots::default(),
    };
    for vm in 0..MAX_HOLDERS as u64 {
        cell.slots.take(u64::MAX - vm);
    }
    assert_eq!(BudgetCell::decode(cell.encode().as_bytes()), Some(cell));
    for len in [0, 19, 21, 40] {
        assert_eq!(BudgetCell::decode(&vec![0xff; len]), None, "{len}");
    }
}
