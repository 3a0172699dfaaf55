//! Property tests of the pure core: nothing from the wire or the configuration can make it
//! panic or find a key that was not sent.
//!
//! Runs natively (`cargo test`) and, like every test file here, as 32-bit Wasm under Node.js
//! (`scripts/test-wasm-core`): on wasm32-unknown-unknown `#[test]` is `#[wasm_bindgen_test]`.
//! `PROPTEST_CASES` raises or lowers the number of cases (default 256 per property).

// Test code: a panic is a test failure, and inputs are small.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;
use common::{router, test, IN_WASM};

use proptest::prelude::*;
use proptest::test_runner::Config;
use sandbox_router::core::audit::audit_record;
use sandbox_router::core::baggage::{
    find_baggage_member, find_tracestate_member, whole_value, Lookup,
};
use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::describe::describe;
use sandbox_router::core::header_map::{serialize, HeaderPairs};
use sandbox_router::core::key::RoutingKey;
use sandbox_router::core::policy::evaluate;
use sandbox_router::core::request::{scan, KeySearch};
use sandbox_router::core::router::{Decision, Router, Target};
use sandbox_router::core::strip::{strip_plan, HeaderEdit};

// ------------------------------------------------------------------ helpers ---

fn config() -> Config {
    let mut config = Config::default();
    // Under Wasm there is no file system to keep regressions in (natively they go to
    // proptest-regressions/properties.txt).
    if IN_WASM {
        config.failure_persistence = None;
    }
    config
}

fn key_of(lookup: Lookup) -> Option<String> {
    match lookup {
        Lookup::Key(k) => Some(k.as_str().to_owned()),
        _ => None,
    }
}

fn baggage_key(header: &[u8]) -> Option<String> {
    key_of(find_baggage_member(header, b"sandbox"))
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

fn well_formed(key: &[u8]) -> bool {
    (1..=128).contains(&key.len()) && key.iter().all(|&b| is_key_byte(b))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// A name or value as OpenTelemetry Python reads it: `unquote_plus(text).strip()` (Python's
/// whitespace, plus U+FEFF); `None` when the bytes are not UTF-8 (Python would read U+FFFD,
/// which no key or configured name contains).
fn app_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let plus_as_space: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let text = String::from_utf8(lossy_decode(&plus_as_space)).ok()?;
    let is_space =
        |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) || c == '\u{feff}';
    Some(text.trim_matches(is_space).as_bytes().to_vec())
}

/// `%XX` decoding that keeps malformed escapes as they are.
fn lossy_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        if let Some(b) = escape {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Percent-encodes the bytes `mask` selects, in upper or lower case hex.
fn encode(key: &str, mask: &[bool], upper: bool) -> String {
    key.bytes()
        .zip(mask.iter().chain(std::iter::repeat(&false)))
        .map(|(b, &enc)| match (enc, upper) {
            (false, _) => char::from(b).to_string(),
            (true, true) => format!("%{b:02X}"),
            (true, false) => format!("%{b:02x}"),
        })
        .collect()
}

const CONFIG: &str = r#"{
    "routing_key": { "baggage": ["sandbox", "sb"], "headers": ["x-sandbox", "x-alt"] },
    "namespace": "shop",
    "sandboxes": {
        "feature-x": { "routes": {
            "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" }
        } }
    }
}"#;

fn scan_key(router: &Router, headers: &[(Vec<u8>, Vec<u8>)]) -> KeySearch {
    let buffer = serialize(
        &headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect::<Vec<_>>(),
    );
    scan(&router.settings, HeaderPairs::new(&buffer)).key
}

// --------------------------------------------------------------- strategies ---

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,128}"
}

fn ows() -> impl Strategy<Value = String> {
    "[ \t]{0,3}"
}

/// Any bytes but `,` (which would end the list member).
fn member_value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            Just(b'='),
            Just(b';'),
            Just(b'%'),
            Just(b' '),
            Just(b'a')
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().filter(|&b| b != b',').collect())
}

/// Member names near `sandbox`, and tokens.
fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("sandbox".to_owned()),
        Just("sandboxx".to_owned()),
        Just("xsandbox".to_owned()),
        Just("Sandbox".to_owned()),
        Just("sb".to_owned()),
        // Names an app decodes to `sandbox`, and near misses.
        Just("sand%62ox".to_owned()),
        Just("%73andbox+".to_owned()),
        Just("sandbox%09".to_owned()),
        Just("sandbox%C2%A0".to_owned()),
        Just("%2573andbox".to_owned()),
        Just("sand+box".to_owned()),
        "[a-z0-9!#$%&'*+.^_`|~-]{1,12}",
    ]
}

/// Properties after a member's value.
fn properties() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(";ttl=3".to_owned()),
            Just(";flag".to_owned()),
            Just(" ; p = v ".to_owned()),
            Just(";sandbox=other".to_owned()),
            "; ?[a-z]{1,5}(=[a-z0-9%]{0,5})?",
        ],
        0..3,
    )
    .prop_map(|v| v.concat())
}

/// Whether a (lower-case) header name can carry a key under [`CONFIG`]: generated noise must
/// not be one, or the properties would hold keys their oracles do not know of.
fn is_carrier_name(name: &[u8]) -> bool {
    name.starts_with(b"ot-baggage-")
        || name.starts_with(b"uberctx-")
        || [&b"x-sandbox"[..], b"x-alt", b"baggage", b"tracestate"].contains(&name)
}

/// Members not named `sandbox`.
fn other_member() -> impl Strategy<Value = String> {
    ("[a-z][a-z0-9_-]{0,8}", "[A-Za-z0-9%=;]{0,10}")
        // Not a routing member name of any configuration used here (`sandbox`, `sb`).
        .prop_filter("not a routing member", |(n, _)| n != "sandbox" && n != "sb")
        .prop_map(|(n, v)| format!("{n}={v}"))
}

/// A header sent in a precedence test: (carrier rank, the key it held, the header).
type SentHeader = (Option<usize>, Option<String>, (Vec<u8>, Vec<u8>));

// --------------------------------------------------------------- properties ---

proptest! {
    #![proptest_config(config())]

    /// The key found is the first `sandbox` member whose value decodes to a well-formed key,
    /// so always one that was literally in the header (after percent-decoding).
    #[test]
    fn a_found_key_was_in_the_header(
        members in prop::collection::vec(
            (ows(), member_name(), ows(), ows(), member_value_bytes()), 0..8),
        separators in prop::collection::vec(ows(), 8),
    ) {
        let mut header = Vec::new();
        let mut expected: Option<Option<Vec<u8>>> = None; // None: no member named sandbox
        for (i, (lead, name, before_eq, after_eq, value)) in members.iter().enumerate() {
            if i > 0 {
                header.extend_from_slice(separators[i].as_bytes());
                header.push(b',');
            }
            header.extend_from_slice(lead.as_bytes());
            header.extend_from_slice(name.as_bytes());
            header.extend_from_slice(before_eq.as_bytes());
            header.push(b'=');
            header.extend_from_slice(after_eq.as_bytes());
            header.extend_from_slice(value);
            let is_routing_member = app_decode(format!("{lead}{name}{before_eq}").as_bytes())
                .is_some_and(|n| n == b"sandbox");
            if is_routing_member && !matches!(expected, Some(Some(_))) {
                let raw = value.split(|&b| b == b';').next().unwrap_or_default();
                let raw = [after_eq.as_bytes(), raw].concat();
                let decoded = app_decode(&raw).filter(|k| well_formed(k));
                expected = Some(decoded);
            }
        }
        let found = find_baggage_member(&header, b"sandbox");
        match (&found, &expected) {
            (Lookup::Key(k), Some(Some(want))) => {
                prop_assert_eq!(k.as_bytes(), want.as_slice());
                prop_assert!(contains(&lossy_decode(&header), k.as_bytes()));
                prop_assert!(well_formed(k.as_bytes()));
            }
            (Lookup::Invalid, Some(None)) | (Lookup::Absent, None) => {}
            _ => prop_assert!(false, "{:?} for {:?}, expected {:?}", found, String::from_utf8_lossy(&header), expected),
        }
    }

    /// Percent-encoding any subset of a valid key's bytes, in either hex case, decodes back
    /// to the key, in every carrier that decodes.
    #[test]
    fn percent_encoding_round_trips(
        key in key(),
        mask in prop::collection::vec(any::<bool>(), 128),
        upper in any::<bool>(),
    ) {
        let encoded = encode(&key, &mask, upper);
        let decoded = RoutingKey::from_encoded(encoded.as_bytes()).unwrap();
        prop_assert_eq!(decoded.as_str(), key.as_str());
        prop_assert_eq!(baggage_key(format!("sandbox={encoded}").as_bytes()), Some(key.clone()));
        prop_assert_eq!(key_of(whole_value(encoded.as_bytes(), true)), Some(key.clone()));
        let router = router(CONFIG);
        for carrier in ["ot-baggage-sandbox", "uberctx-sb"] {
            let headers = vec![(carrier.as_bytes().to_vec(), encoded.clone().into_bytes())];
            prop_assert_eq!(scan_key(&router, &headers), KeySearch::Found(decoded));
        }
        // Plain headers and tracestate take the value literally: an encoded byte is no key byte.
        if mask.iter().take(key.len()).any(|&m| m) {
            prop_assert_eq!(key_of(whole_value(encoded.as_bytes(), false)), None);
            prop_assert_eq!(key_of(find_tracestate_member(
                format!("sandbox={encoded}").as_bytes(), b"sandbox")), None);
        }
    }

    /// `sandbox=<key>` inside another member's value (plain, percent-encoded, after `=` or in
    /// a property) is never taken for the member.
    #[test]
    fn no_member_from_inside_another_value(
        other in "[a-z][a-z0-9_-]{0,8}".prop_filter("not sandbox", |n| n != "sandbox"),
        key in key(),
        disguise in prop_oneof![
            Just("sandbox={}"), Just("sandbox%3D{}"), Just("sandbox%3d{}"), Just("=sandbox={}"),
            Just("x;sandbox={}"), Just("x; sandbox = {}"), Just("%2Csandbox={}"),
            Just("x%2C%20sandbox%3D{}"),
        ],
        prefix in "[A-Za-z0-9 ;=%]{0,6}",
        suffix in "[A-Za-z0-9 ;=%]{0,6}",
        real in prop::option::of(key()),
    ) {
        let inner = disguise.replace("{}", &key);
        let mut header = format!("{other}={prefix}{inner}{suffix}");
        prop_assert_eq!(baggage_key(header.as_bytes()), None, "{}", header);
        prop_assert_eq!(
            key_of(find_tracestate_member(header.as_bytes(), b"sandbox")), None, "{}", header);
        // A property named sandbox is a property, not a member.
        let as_property = format!("{other}=v;{inner}");
        prop_assert_eq!(baggage_key(as_property.as_bytes()), None, "{}", as_property);
        // And a real member after it is still found.
        if let Some(real) = real {
            header.push_str(&format!(",sandbox={real}"));
            prop_assert_eq!(baggage_key(header.as_bytes()), Some(real), "{}", header);
        }
    }

    /// Optional whitespace around every part, properties after the value and other members
    /// around it do not change what is found.
    #[test]
    fn whitespace_properties_and_neighbours_do_not_matter(
        key in key(),
        encode_mask in prop::collection::vec(any::<bool>(), 128),
        pad in prop::collection::vec(ows(), 4),
        props in properties(),
        before in prop::collection::vec(other_member(), 0..4),
        after in prop::collection::vec(other_member(), 0..4),
    ) {
        let value = encode(&key, &encode_mask, true);
        let member = format!("{}sandbox{}={}{value}{}{props}", pad[0], pad[1], pad[2], pad[3]);
        let mut members = before.clone();
        members.push(member);
        members.extend(after.iter().cloned());
        let header = members.join(",");
        prop_assert_eq!(baggage_key(header.as_bytes()), Some(key.clone()), "{}", header);
        prop_assert_eq!(baggage_key(header.as_bytes()), baggage_key(format!("sandbox={key}").as_bytes()));
        // Whole-value carriers trim whitespace too.
        let padded = format!("{}{key}{}", pad[0], pad[3]);
        prop_assert_eq!(key_of(whole_value(padded.as_bytes(), false)), Some(key.clone()));
        let tracestate = format!("{}sandbox{}={}{key}{}", pad[0], pad[1], pad[2], pad[3]);
        prop_assert_eq!(key_of(find_tracestate_member(tracestate.as_bytes(), b"sandbox")), Some(key));
    }

    /// Arbitrary bytes anywhere: no panic, and any key found is well formed.
    #[test]
    fn arbitrary_bytes_never_panic(
        header in prop::collection::vec(any::<u8>(), 0..200),
        name in prop::collection::vec(any::<u8>(), 0..10),
        buffer in prop::collection::vec(any::<u8>(), 0..200),
        json in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        for lookup in [
            find_baggage_member(&header, &name),
            find_baggage_member(&header, b"sandbox"),
            find_tracestate_member(&header, &name),
            whole_value(&header, true),
            whole_value(&header, false),
        ] {
            if let Lookup::Key(k) = lookup {
                prop_assert!(well_formed(k.as_bytes()));
            }
        }
        let _ = RoutingKey::from_bytes(&header);
        let _ = RoutingKey::from_encoded(&header);
        let router = router(CONFIG);
        for buffer in [&buffer[..], &header[..]] {
            let request = scan(&router.settings, HeaderPairs::new(buffer));
            if let KeySearch::Found(k) = request.key {
                prop_assert!(well_formed(k.as_bytes()));
            }
            let text = describe(&router.decide(&request), request.authority.unwrap_or_default());
            prop_assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}", text);
        }
        let _ = compile(&json, &HostFacts::default()).map(|r| r.sandbox_count());
        let _ = compile(&header, &HostFacts { namespace: Some("shop".into()) }).map(|r| r.sandbox_count());
    }

    /// The header map reader gives back exactly what `serialize` wrote, and a truncated
    /// buffer only ever yields a prefix of it.
    #[test]
    fn header_map_round_trips_and_truncates_safely(
        pairs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(any::<u8>(), 0..40)),
            0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let borrowed: Vec<(&[u8], &[u8])> =
            pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let buffer = serialize(&borrowed);
        prop_assert_eq!(HeaderPairs::new(&buffer).collect::<Vec<_>>(), borrowed.clone());
        let cut = cut.index(buffer.len() + 1);
        let truncated: Vec<_> = HeaderPairs::new(&buffer[..cut]).collect();
        prop_assert!(truncated.len() <= borrowed.len());
        prop_assert_eq!(&truncated[..], &borrowed[..truncated.len()]);
    }

    /// Carriers, from highest precedence: plain headers in the order listed, baggage members
    /// in the order listed, `ot-baggage-*`, `uberctx-*`, tracestate; within one carrier the
    /// first header to arrive wins. The best carrier with a well-formed key wins whatever the
    /// arrival order; a malformed value hides nothing.
    #[test]
    fn extraction_precedence_holds(
        sent in prop::collection::vec((0usize..10, any::<bool>()), 0..12),
        noise in prop::collection::vec(
            ("[a-z-]{1,12}", "[ -~]{0,12}").prop_map(|(n, v)| (n.into_bytes(), v.into_bytes())),
            0..4),
        order in Just((0..16).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        // (name, value) of carrier `rank` holding `value`.
        let carrier = |rank: usize, value: &str| -> (Vec<u8>, Vec<u8>) {
            let (name, value) = match rank {
                0 => ("x-sandbox".to_owned(), value.to_owned()),
                1 => ("X-Alt".to_owned(), value.to_owned()),
                2 => ("baggage".to_owned(), format!("a=1, sandbox={value};p")),
                3 => ("baggage".to_owned(), format!("sb = {value}")),
                4 => ("ot-baggage-sandbox".to_owned(), value.to_owned()),
                5 => ("OT-Baggage-SB".to_owned(), value.to_owned()),
                6 => ("uberctx-sandbox".to_owned(), value.to_owned()),
                7 => ("uberctx-sb".to_owned(), value.to_owned()),
                8 => ("tracestate".to_owned(), format!("rojo=1,sandbox={value}")),
                _ => ("tracestate".to_owned(), format!("sb={value}")),
            };
            (name.into_bytes(), value.into_bytes())
        };
        // Each header: (rank, key if valid), the key naming its position so that every
        // header carries a different one.
        let mut entries: Vec<SentHeader> = sent
            .iter()
            .enumerate()
            .map(|(i, &(rank, valid))| {
                let key = valid.then(|| format!("k{rank}-{i}"));
                let header = carrier(rank, key.as_deref().unwrap_or("bad key"));
                (Some(rank), key, header)
            })
            .collect();
        entries.extend(
            noise
                .into_iter()
                .filter(|(n, _)| !is_carrier_name(n))
                .map(|h| (None, None, h)),
        );
        let arrived: Vec<_> = order.iter().filter_map(|&i| entries.get(i).cloned()).collect();
        prop_assert_eq!(arrived.len(), entries.len());
        // The best rank with a valid key; among its headers, the first to arrive.
        let expected = arrived
            .iter()
            .filter_map(|(rank, key, _)| Some(((*rank)?, key.clone()?)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, key)| KeySearch::Found(RoutingKey::from_bytes(key.as_bytes()).unwrap()))
            .unwrap_or(if arrived.iter().any(|(rank, _, _)| rank.is_some()) {
                KeySearch::Invalid
            } else {
                KeySearch::Absent
            });
        let headers: Vec<_> = arrived.into_iter().map(|(_, _, h)| h).collect();
        let router = router(CONFIG);
        prop_assert_eq!(scan_key(&router, &headers), expected);
    }

    /// The shell answers a request as keyless when none of `Settings::probed_headers` is
    /// present, without reading the other headers: that must be exactly what a full scan would
    /// conclude. Names arrive lowercase, as Envoy hands them over.
    #[test]
    fn absent_carrier_headers_mean_no_key(
        headers in prop::collection::vec(
            (
                prop_oneof![
                    "[a-z-]{1,14}",
                    "(ot-baggage-|uberctx-)[a-z]{1,8}",
                    Just("ot-baggage-sb".to_owned()),
                    Just("uberctx-sandbox".to_owned()),
                    Just("baggage".to_owned()),
                    Just("tracestate".to_owned()),
                    Just("x-sandbox".to_owned()),
                    Just("x-alt".to_owned()),
                    Just("x-sandbox-cluster".to_owned()),
                    Just("x-sandbox-key".to_owned()),
                ],
                prop_oneof![Just("feature-x"), Just("sandbox=feature-x"), Just("sb=feature-x")],
            ),
            0..8,
        ),
    ) {
        let router = router(CONFIG);
        let settings = &router.settings;
        let probed = |name: &str| settings.probed_headers().any(|n| n == name.as_bytes());
        let unprobed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .filter(|(name, _)| !probed(name))
            .map(|(name, value)| (name.clone().into_bytes(), value.as_bytes().to_vec()))
            .collect();
        let buffer = serialize(
            &unprobed.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect::<Vec<_>>(),
        );
        let request = scan(settings, HeaderPairs::new(&buffer));
        prop_assert_eq!(request.key, KeySearch::Absent);
        prop_assert!(!request.has_cluster_header);
        prop_assert!(!request.has_key_header);
    }

    /// A route for `name.ns` matches every Kubernetes form of the service, in any case, with
    /// a trailing dot or not, with any port; the short name only from the local namespace.
    #[test]
    fn route_lookup_matches_every_kubernetes_form(
        name in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?",
        ns in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?",
        local in any::<bool>(),
        written_form in 0usize..4,
        form in 0usize..4,
        case in prop::collection::vec(any::<bool>(), 64),
        trailing_dot in any::<bool>(),
        port in prop::option::of(1u32..=65535),
        bad_port in prop_oneof![Just("0".to_owned()), Just("65536".to_owned()), Just("".to_owned()),
                                Just("8o".to_owned()), Just("123456".to_owned()), Just("99999".to_owned())],
    ) {
        let local_ns = if local { ns.clone() } else { format!("{ns}-other") };
        let forms = [
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
            name.clone(),
        ];
        // The route may be written in any form but the short one (valid only locally).
        let written = if written_form == 3 && !local { &forms[2] } else { &forms[written_form] };
        let config = format!(r#"{{"namespace": "{local_ns}", "sandboxes": {{"feature-x": {{"routes": {{
            "{written}": {{"cluster": "c"}}}}}}}}}}"#);
        let router = router(&config);
        let host: String = forms[form]
            .chars()
            .zip(case.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let host = if trailing_dot { format!("{host}.") } else { host };
        let decide = |authority: &str| {
            let headers: Vec<(&[u8], &[u8])> = vec![
                (b":authority", authority.as_bytes()),
                (b"baggage", b"sandbox=feature-x"),
            ];
            let request = scan(&router.settings, headers);
            match router.decide(&request) {
                Decision::Route { target, service, .. } => {
                    assert_eq!(service, forms[0]);
                    Some(target.clone())
                }
                Decision::Baseline { .. } => None,
            }
        };
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let routes = form != 3 || local;
        let expected = routes.then(|| Target::Cluster("c".into()));
        prop_assert_eq!(decide(&authority), expected, "{}", authority);
        // A malformed port never routes.
        prop_assert_eq!(decide(&format!("{host}:{bad_port}")), None);
    }

    /// Stripping (for untrusted sources) leaves no carrier holding a key, valid or not, keeps
    /// every other header, and keeps the other baggage members in order.
    #[test]
    fn stripping_leaves_no_key_and_keeps_the_rest(
        carriers in prop::collection::vec((0usize..10, prop_oneof![key(), Just("bad key".to_owned())]), 0..6),
        others in prop::collection::vec(other_member(), 0..4),
        noise in prop::collection::vec(
            ("x-[a-z]{1,8}", "[ -~]{0,12}")
                .prop_map(|(n, v)| (n.into_bytes(), v.into_bytes()))
                .prop_filter("not a carrier of CONFIG", |(n, _)| !is_carrier_name(n)),
            0..3),
    ) {
        let router = router(CONFIG);
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = noise.clone();
        headers.push((b":authority".to_vec(), b"payment".to_vec()));
        if !others.is_empty() {
            headers.push((b"baggage".to_vec(), others.join(",").into_bytes()));
        }
        for (rank, value) in &carriers {
            let (name, value) = match rank {
                0 => ("x-sandbox", value.clone()),
                1 => ("X-Alt", value.clone()),
                2 => ("baggage", format!("FILLER=1, sandbox={value};p")),
                3 => ("baggage", format!("sb = {value}")),
                4 => ("ot-baggage-sandbox", value.clone()),
                5 => ("OT-Baggage-SB", value.clone()),
                6 => ("uberctx-sandbox", value.clone()),
                7 => ("uberctx-sb", value.clone()),
                8 => ("tracestate", format!("rojo=1,sandbox={value}")),
                _ => ("tracestate", format!("sb={value}")),
            };
            headers.push((name.as_bytes().to_vec(), value.into_bytes()));
        }
        let borrowed: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let plan = strip_plan(&router.settings, borrowed.iter().copied());
        let mut stripped = headers.clone();
        for edit in &plan {
            match edit {
                HeaderEdit::Remove(name) => stripped.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
                HeaderEdit::Replace(name, value) => {
                    stripped.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                    stripped.push((name.to_vec(), value.clone()));
                }
            }
        }
        prop_assert_eq!(scan_key(&router, &stripped), KeySearch::Absent, "{:?}", plan);
        for header in noise.iter().chain([&(b":authority".to_vec(), b"payment".to_vec())]) {
            prop_assert!(stripped.contains(header));
        }
        // The other members survive, in order (with `FILLER=1`, a name `other_member` never
        // makes, from the carriers' own headers).
        let kept: Vec<String> = stripped
            .iter()
            .filter(|(n, _)| n == b"baggage")
            .flat_map(|(_, v)| String::from_utf8_lossy(v).split(',').map(|m| m.trim().to_owned()).collect::<Vec<_>>())
            .filter(|m| m != "FILLER=1")
            .collect();
        let others: Vec<String> = others.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
        prop_assert_eq!(kept, others);
    }

    /// The audit record is one JSON object whatever the request held, naming the decision
    /// and the key, with the method and path as sent (lossily decoded, the path cut at 512).
    #[test]
    fn audit_record_is_json(
        key in prop_oneof![key(), Just("bad key".to_owned()), Just("nope".to_owned()), Just("feature-x".to_owned())],
        method in prop::collection::vec(any::<u8>(), 0..12),
        path in prop::collection::vec(any::<u8>(), 0..700),
        authority in prop::collection::vec(any::<u8>(), 0..20),
        trusted in any::<bool>(),
    ) {
        let router = router(CONFIG);
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", &method),
            (b":path", &path),
            (b":authority", &authority),
            (b"x-sandbox", key.as_bytes()),
        ];
        let request = scan(&router.settings, headers);
        let evaluation = evaluate(&router, &request, || trusted, || Some(0));
        let label = evaluation.label.unwrap();
        let record = audit_record(&request, &evaluation, label);
        let json: serde_json::Value = serde_json::from_str(&record).unwrap();
        prop_assert_eq!(&json["decision"], label.as_str());
        match request.key {
            KeySearch::Found(k) => prop_assert_eq!(&json["key"], k.as_str()),
            _ => prop_assert!(json["key"].is_null()),
        }
        prop_assert_eq!(&json["method"], &*String::from_utf8_lossy(&method));
        // A path over 512 bytes is cut before a byte that starts a character, and marked.
        let recorded = if path.len() <= 512 {
            String::from_utf8_lossy(&path).into_owned()
        } else {
            let end = (0..=512).rev().find(|&i| path[i] & 0xc0 != 0x80).unwrap_or(0);
            format!("{}…", String::from_utf8_lossy(&path[..end]))
        };
        prop_assert_eq!(&json["path"], &*recorded);
    }
}
