//! The fast path (issue 13): the filter entry that `scripts/sandboxes render-envoy` generates
//! by default, Envoy's composite filter behind a matcher derived from the filter's own
//! configuration, which creates the Wasm filter only for requests with a header that may carry
//! a key.
//!
//! - Every routing behaviour of the plain entry holds through the fast path: a table of cases
//!   runs through both entries, each case with its one expected upstream (or refusal), and the
//!   two entries must agree on everything a client and an upstream see (status, body, the
//!   filter's headers, every carrier the upstream received, the audit record). The only
//!   difference allowed is the one the fast path is for: a request the matcher skips gets no
//!   debug header.
//! - The generated matcher fires exactly as specified (a header the filter probes is present,
//!   or a `baggage` / `tracestate` value contains a configured member name, case-insensitively,
//!   each character itself or its `%XX` escape), and so at least whenever the filter needs the
//!   request (a member an app decodes to a configured name, or a probed header), over several
//!   configurations and generated requests.
//! - The ECDS form applies published tables live.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use integration_tests::audit::AuditLog;
use integration_tests::carrier_oracle::Carriers;
use integration_tests::otel::app_views;
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, DECISION_HEADER, INVENTORY_BASELINE, INVENTORY_SANDBOX,
    KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::{filter_entry, paths, FilterEntry, Protocol, SandboxEnv, TestRequest};
use serde_json::{json, Value};

// ------------------------------------------------------------------ the oracles ---

#[test]
fn the_oracles_read_names_as_the_readme_says() {
    let carriers = Carriers::of(&json!({ "debug": true }));
    let baggage = |value: &str| vec![("baggage".to_owned(), value.as_bytes().to_vec())];
    for needed in [
        "sand%62ox=feature-x",
        "%73andbox=feature-x",
        "sandbox+=feature-x",
        "sandbox%20=feature-x",
        "sandbox%09=feature-x",
        "user=alice, sandbox%C2%A0 =feature-x",
        "sandbox=",
    ] {
        assert!(carriers.filter_needs(&baggage(needed)), "{needed}");
        assert!(carriers.fast_path_fires(&baggage(needed)), "{needed}");
    }
    for (value, fires) in [
        ("Sandbox=feature-x", true),
        ("xsandbox=feature-x", true),
        ("a=sandbox", true),
        ("sand+box=feature-x", false),
        ("%2573andbox=feature-x", false),
        ("userId=alice,isProduction=false", false),
    ] {
        assert!(!carriers.filter_needs(&baggage(value)), "{value}");
        assert_eq!(carriers.fast_path_fires(&baggage(value)), fires, "{value}");
    }
}

// ------------------------------------------- every routing behaviour through both entries ---

/// The carriers and filter-made headers an upstream's echo is compared on.
const CARRIED: [&str; 7] = [
    "baggage",
    "tracestate",
    "x-sandbox",
    "ot-baggage-sandbox",
    "uberctx-sandbox",
    "x-sandbox-cluster",
    "x-sandbox-key",
];

/// The filter's own response headers compared between entries (`retry-after` and
/// `x-ratelimit-reset` count down with the clock, so they are left out).
const FILTER_HEADERS: [&str; 3] = [
    "x-sandbox-router-limited",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
];

/// Every value of each carried header, as an upstream received it.
type Carried = Vec<(&'static str, Vec<String>)>;

/// Everything a client and the upstream see of one request, but the debug decision.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    upstream: Option<String>,
    /// The authority the upstream received and every value of each carried header.
    received: Option<(String, Carried)>,
    /// The body of an answer no upstream gave (a refusal), without its countdown.
    refusal: Option<String>,
    grpc_status: Option<String>,
    filter_headers: Vec<(&'static str, Option<String>)>,
}

impl Seen {
    fn of(response: &integration_tests::TestResponse) -> Seen {
        let upstream = response.upstream();
        // An upstream echoes what it received as JSON; a gRPC answer carries only the
        // authority it received.
        let is_echo = serde_json::from_slice::<Value>(&response.body).is_ok();
        let received = upstream.as_ref().map(|_| {
            if !is_echo {
                let authority = response.header("x-upstream-authority").unwrap_or_default();
                return (authority, Vec::new());
            }
            let echo = response.echo();
            let carried = CARRIED
                .iter()
                .map(|name| (*name, echo.header_values(name)))
                .collect();
            (echo.authority(), carried)
        });
        let refusal = upstream.is_none().then(|| {
            let body = response.body_text();
            match body.split_once("; retry in ") {
                Some((before, _)) => format!("{before}; retry in …"),
                None => body,
            }
        });
        Seen {
            status: response.status.as_u16(),
            upstream,
            received,
            refusal,
            grpc_status: response.grpc_status(),
            filter_headers: FILTER_HEADERS
                .iter()
                .map(|name| (*name, response.header(name)))
                .collect(),
        }
    }
}

/// What a case must get: the upstream that answers, or the filter's refusal status.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Served(&'static str),
    Refused(u16),
}

#[derive(Clone, Copy)]
enum Call {
    Get,
    Grpc,
}

struct Case {
    name: &'static str,
    call: Call,
    authority: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// The downstream address (the default client address 127.0.0.1 when `None`).
    source: Option<&'static str>,
    protocols: &'static [Protocol],
    expect: Expect,
}

const BOTH: &[Protocol] = &Protocol::ALL;
const H2C: &[Protocol] = &[Protocol::H2c];
const HTTP1: &[Protocol] = &[Protocol::Http1];

const fn get(
    name: &'static str,
    authority: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expect: Expect,
) -> Case {
    Case {
        name,
        call: Call::Get,
        authority,
        headers,
        source: None,
        protocols: BOTH,
        expect,
    }
}

const fn from(source: &'static str, case: Case) -> Case {
    Case {
        source: Some(source),
        ..case
    }
}

const fn grpc(
    name: &'static str,
    authority: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expect: Expect,
) -> Case {
    Case {
        name,
        call: Call::Grpc,
        authority,
        headers,
        source: None,
        protocols: H2C,
        expect,
    }
}

const fn only(protocols: &'static [Protocol], case: Case) -> Case {
    Case { protocols, ..case }
}

use Expect::{Refused, Served};

const KEYED: &[(&str, &str)] = &[("x-sandbox", KEY)];
const EVERY_CARRIER: &[(&str, &str)] = &[
    ("baggage", "user=alice,sandbox=feature-x"),
    ("x-sandbox", KEY),
    ("tracestate", "sandbox=feature-x,vendor=1"),
    ("ot-baggage-sandbox", KEY),
    ("uberctx-sandbox", KEY),
];

/// The contract's sidecar configuration (debug on, the key header on by default).
fn sidecar_cases() -> Vec<Case> {
    vec![
        get("keyless", "payment", &[], Served(PAYMENT_BASELINE)),
        get(
            "unrelated baggage",
            "payment",
            &[("baggage", "userId=alice,isProduction=false")],
            Served(PAYMENT_BASELINE),
        ),
        get(
            "W3C baggage",
            "payment",
            &[("baggage", "sandbox=feature-x")],
            Served(PAYMENT_SANDBOX),
        ),
        get("plain header", "payment", KEYED, Served(PAYMENT_SANDBOX)),
        get(
            "OpenTracing",
            "payment",
            &[("ot-baggage-sandbox", KEY)],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "Jaeger",
            "payment",
            &[("uberctx-sandbox", KEY)],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "tracestate",
            "payment",
            &[("tracestate", "vendor=1,sandbox=feature-x")],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "encoded member name",
            "payment",
            &[("baggage", "user=alice, sand%62ox =feature-x")],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "every character encoded",
            "payment",
            &[("baggage", "%73%61%6E%64%62%6F%78=feature-x")],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "key in the second baggage header",
            "payment",
            &[
                ("baggage", "userId=alice"),
                ("baggage", "sandbox=feature-x"),
            ],
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "name with a port",
            "payment:8080",
            KEYED,
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "namespaced name",
            "payment.shop",
            KEYED,
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "svc name",
            "payment.shop.svc:8080",
            KEYED,
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "fully qualified name",
            "payment.shop.svc.cluster.local.",
            KEYED,
            Served(PAYMENT_SANDBOX),
        ),
        get(
            "cluster mode",
            "inventory",
            KEYED,
            Served(INVENTORY_SANDBOX),
        ),
        get(
            "a client's cluster header, keyless",
            "inventory",
            &[("x-sandbox-cluster", INVENTORY_SANDBOX)],
            Served(INVENTORY_BASELINE),
        ),
        get(
            "a client's cluster header, unknown key",
            "inventory",
            &[
                ("x-sandbox-cluster", INVENTORY_SANDBOX),
                ("baggage", "sandbox=feature-z"),
            ],
            Served(INVENTORY_BASELINE),
        ),
        get(
            "unknown key",
            "payment",
            &[("baggage", "sandbox=feature-z")],
            Served(PAYMENT_BASELINE),
        ),
        get(
            "invalid key",
            "payment",
            &[("x-sandbox", "feature/x")],
            Served(PAYMENT_BASELINE),
        ),
        get("no override", "catalog", KEYED, Served(CATALOG_BASELINE)),
        get(
            "a client's key header, keyless",
            "payment",
            &[("x-sandbox-key", "forged")],
            Served(PAYMENT_BASELINE),
        ),
        get(
            "a client's key header, keyed",
            "payment",
            &[("x-sandbox-key", "forged"), ("x-sandbox", KEY)],
            Served(PAYMENT_SANDBOX),
        ),
        grpc(
            "gRPC, keyed",
            "payment:50051",
            KEYED,
            Served(PAYMENT_SANDBOX),
        ),
        grpc(
            "gRPC, keyless",
            "payment:50051",
            &[],
            Served(PAYMENT_BASELINE),
        ),
    ]
}

/// Only 127.0.0.2 is trusted.
fn trust_cases(untrusted: &str) -> Vec<Case> {
    // A refused gRPC call is a trailers-only 200 (grpc-status PERMISSION_DENIED).
    let refused_or = |upstream, refusal| {
        if untrusted == "reject" {
            Refused(refusal)
        } else {
            Served(upstream)
        }
    };
    vec![
        get("keyless", "payment", &[], Served(PAYMENT_BASELINE)),
        get(
            "every carrier from outside",
            "payment",
            EVERY_CARRIER,
            refused_or(PAYMENT_BASELINE, 403),
        ),
        get(
            "encoded name from outside",
            "payment",
            &[("baggage", "user=alice,sand%62ox=feature-x")],
            refused_or(PAYMENT_BASELINE, 403),
        ),
        get(
            "padded name from outside",
            "payment",
            &[("baggage", "sandbox%20=feature-x,user=alice")],
            refused_or(PAYMENT_BASELINE, 403),
        ),
        get(
            "encoded tracestate name from outside",
            "payment",
            &[("tracestate", "vendor=1,%73%61%6E%64%62%6F%78=feature-x")],
            refused_or(PAYMENT_BASELINE, 403),
        ),
        get(
            "malformed key from outside",
            "payment",
            &[("baggage", "sandbox=feature%20x,user=alice")],
            refused_or(PAYMENT_BASELINE, 403),
        ),
        from(
            "127.0.0.2",
            get(
                "every carrier, trusted",
                "payment",
                EVERY_CARRIER,
                Served(PAYMENT_SANDBOX),
            ),
        ),
        from(
            "127.0.0.2",
            grpc(
                "gRPC, trusted",
                "payment:50051",
                KEYED,
                Served(PAYMENT_SANDBOX),
            ),
        ),
        grpc(
            "gRPC from outside",
            "payment:50051",
            KEYED,
            refused_or(PAYMENT_BASELINE, 200),
        ),
    ]
}

/// feature-x may send 2 requests (its bucket refills in hours).
fn budget_cases() -> Vec<Case> {
    vec![
        only(
            HTTP1,
            get("first", "payment", KEYED, Served(PAYMENT_SANDBOX)),
        ),
        only(
            H2C,
            get("second", "payment", KEYED, Served(PAYMENT_SANDBOX)),
        ),
        only(HTTP1, get("over budget", "payment", KEYED, Refused(429))),
        only(H2C, get("over budget, h2", "payment", KEYED, Refused(429))),
        grpc("gRPC over budget", "payment:50051", KEYED, Refused(200)),
        only(
            HTTP1,
            get(
                "keyless, never limited",
                "payment",
                &[],
                Served(PAYMENT_BASELINE),
            ),
        ),
    ]
}

fn config_with(fields: Value) -> Value {
    let mut config = sandbox::default_filter_config();
    for (name, value) in fields.as_object().expect("fields") {
        config[name.as_str()] = value.clone();
    }
    config
}

fn request(case: &Case, protocol: Protocol, path: &str) -> TestRequest {
    let mut request = match case.call {
        Call::Get => TestRequest::get(case.authority, path).protocol(protocol),
        Call::Grpc => TestRequest::grpc(case.authority, path),
    };
    for (name, value) in case.headers {
        request = request.header(name, value);
    }
    if let Some(source) = case.source {
        request = request.source(source.parse::<IpAddr>().expect("an IP"));
    }
    request
}

/// The audit records of a log by request path, once the record of `marker` is written.
async fn audit_by_path(log: &AuditLog, marker: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + integration_tests::audit::DEFAULT_WAIT;
    loop {
        let records: Vec<Value> = log
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).expect("an audit line is JSON"))
            .collect();
        if records
            .iter()
            .any(|r| r["sandbox_router"]["path"] == marker)
        {
            return records
                .into_iter()
                .map(|r| {
                    let path = r["sandbox_router"]["path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    (
                        path,
                        json!({ "status": r["status"], "record": r["sandbox_router"] }),
                    )
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "no audit record for {marker}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `cases` through the plain entry and the fast path, each with `config`: both give each
/// case its expected answer and agree on everything else, but the debug header of a request
/// the matcher skips.
async fn same_through_both(label: &str, config: Value, upstream_http2: bool, cases: Vec<Case>) {
    let start = |entry| {
        SandboxEnv::start_with(SandboxOptions {
            filter_config: Some(config.clone()),
            entry,
            upstream_http2,
            audit_log: true,
            ..SandboxOptions::default()
        })
    };
    let plain = start(FilterEntry::Plain).await;
    let fast = start(FilterEntry::FastPath).await;
    let carriers = Carriers::of(&config);
    for (index, case) in cases.iter().enumerate() {
        for protocol in case.protocols {
            let what = format!("{label}: {} ({protocol:?})", case.name);
            let path = format!("/{label}/{index}/{protocol:?}");
            let by_plain = plain.send(request(case, *protocol, &path)).await;
            let by_fast = fast.send(request(case, *protocol, &path)).await;
            match case.expect {
                Served(upstream) => {
                    assert_eq!(
                        by_plain.upstream().as_deref(),
                        Some(upstream),
                        "{what}: {by_plain:?}"
                    );
                }
                Refused(status) => {
                    assert_eq!(by_plain.upstream(), None, "{what}: {by_plain:?}");
                    assert_eq!(by_plain.status.as_u16(), status, "{what}: {by_plain:?}");
                }
            }
            assert_eq!(Seen::of(&by_fast), Seen::of(&by_plain), "{what}");
            let headers: Vec<(String, Vec<u8>)> = case
                .headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect();
            let plain_decision = by_plain.header(DECISION_HEADER);
            if carriers.fast_path_fires(&headers) {
                assert_eq!(by_fast.header(DECISION_HEADER), plain_decision, "{what}");
            } else {
                assert_eq!(
                    plain_decision.as_deref(),
                    Some("baseline; reason=no-key"),
                    "{what}"
                );
                assert_eq!(by_fast.header(DECISION_HEADER), None, "{what}: {by_fast:?}");
            }
        }
    }
    let marker = format!("/{label}/marker");
    let marker_request = || TestRequest::get("catalog", &marker).header("x-sandbox", KEY);
    plain.send(marker_request()).await;
    fast.send(marker_request()).await;
    let by_plain = audit_by_path(plain.audit_log(), &marker).await;
    let by_fast = audit_by_path(fast.audit_log(), &marker).await;
    assert!(
        by_plain.len() > 1,
        "{label}: the cases made no audit record"
    );
    assert_eq!(by_fast, by_plain, "{label}: audit records");
}

#[tokio::test]
async fn sidecar_routing_is_the_same_through_the_fast_path() {
    same_through_both(
        "sidecar",
        sandbox::default_filter_config(),
        true,
        sidecar_cases(),
    )
    .await;
}

#[tokio::test]
async fn trust_strip_is_the_same_through_the_fast_path() {
    let config = config_with(json!({
        "trust": { "sources": ["127.0.0.2/32"], "untrusted": "strip" }
    }));
    same_through_both("strip", config, true, trust_cases("strip")).await;
}

#[tokio::test]
async fn trust_reject_is_the_same_through_the_fast_path() {
    let config = config_with(json!({
        "trust": { "sources": ["127.0.0.2/32"], "untrusted": "reject" }
    }));
    same_through_both("reject", config, true, trust_cases("reject")).await;
}

#[tokio::test]
async fn budgets_are_the_same_through_the_fast_path() {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["rate_limit"] = json!({ "requests_per_second": 0.0001, "burst": 2 });
    same_through_both("budget", config, true, budget_cases()).await;
}

// ------------------------------------------------------------ the generated matcher ---

/// Configurations whose matchers differ: the contract's; W3C baggage only (the cheapest
/// matcher); custom names and headers in mixed case; names with token symbols and a name too
/// long for one RE2 program; sixteen names (several regexes).
fn matcher_configs() -> Vec<(&'static str, Value)> {
    let sixteen: Vec<String> = (0..16)
        .map(|i| format!("member-name-{i:02}-abcdefg"))
        .collect();
    vec![
        ("contract", sandbox::default_filter_config()),
        (
            "W3C baggage only",
            json!({ "routing_key": { "baggage": ["sandbox"], "carriers": ["baggage"] },
                    "key_header": "", "namespace": "shop", "debug": true }),
        ),
        (
            "custom names",
            json!({ "routing_key": { "baggage": ["sandbox", "Tenant"], "headers": ["X-Route-Key"],
                                     "carriers": ["baggage", "tracestate", "uberctx"] },
                    "cluster_header": "X-Pick-Cluster", "key_header": "x-routed-key",
                    "namespace": "shop", "debug": true }),
        ),
        (
            "symbols and a long name",
            json!({ "routing_key": { "baggage": ["sb.key~1", "a-very-long-member-name-for-routing-keys-x", "q"],
                                     "carriers": ["baggage", "ot-baggage", "tracestate"] },
                    "namespace": "shop", "debug": true }),
        ),
        (
            "sixteen names",
            json!({ "routing_key": { "baggage": sixteen }, "namespace": "shop", "debug": true }),
        ),
    ]
}

/// A small deterministic generator (the same requests on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next()).expect("fits") % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `name` with some characters as `%XX` (hex in random case), the rest in random case when
/// `recase`.
fn encoded(name: &str, rng: &mut Lcg, recase: bool) -> String {
    name.chars()
        .map(|c| match rng.below(3) {
            0 => {
                let hex = format!("%{:02x}", u32::from(c));
                if rng.below(2) == 0 {
                    hex.to_ascii_uppercase()
                } else {
                    hex
                }
            }
            1 if recase => c.to_ascii_uppercase().to_string(),
            _ => c.to_string(),
        })
        .collect()
}

/// A header name in mixed case (Envoy lowercases names; the wire keeps what the client sent).
fn mixed_case(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

type Headers = Vec<(String, Vec<u8>)>;

fn one(name: &str, value: impl Into<Vec<u8>>) -> Headers {
    vec![(name.to_owned(), value.into())]
}

/// Requests for one configuration: every presence header (any case, empty or not) and near
/// misses of them; each member name plain, percent-encoded, padded, upper-cased, inside another
/// member's value, double-encoded, in a repeated header, split across two headers; unrelated
/// lists; and random mixtures. No request holds a strict prefix of a name longer than 16
/// characters (the generator may keep only a prefix of a name too long for one regex).
fn matcher_requests(carriers: &Carriers, rng: &mut Lcg) -> Vec<Headers> {
    let mut out: Vec<Headers> = vec![
        vec![],
        one("x-other", "1"),
        one("baggage", "userId=alice,isProduction=false"),
        one("tracestate", "vendor=1,other=2"),
        one("ot-baggage-other", "1"),
        one("uberctx-other", "1"),
    ];
    for header in &carriers.presence {
        out.push(one(&mixed_case(header), "feature-x"));
        out.push(one(header, ""));
        out.push(one(&format!("{header}x"), "feature-x"));
        out.push(one(&format!("x{header}"), "feature-x"));
    }
    for member in &carriers.members {
        for list in ["baggage", "tracestate", "BaGgAgE"] {
            let m = member.as_str();
            let mut values: Vec<Vec<u8>> = vec![
                format!("{m}=feature-x").into(),
                format!("user=alice,{}=feature-x", encoded(m, rng, false)).into(),
                format!("{}=feature-x", encoded(m, rng, true)).into(),
                format!(" {m} =feature-x").into(),
                format!("{m}+=feature-x").into(),
                format!("%20{m}%09=feature-x").into(),
                format!("{m}%C2%A0=feature-x").into(),
                [&b"\xc2\xa0"[..], m.as_bytes(), b"=feature-x"].concat(),
                format!("a={m}").into(),
                format!("{}=feature-x", m.to_ascii_uppercase()).into(),
                format!("%25{:02X}{}=feature-x", u32::from(m.as_bytes()[0]), &m[1..]).into(),
                format!("{m}=").into(),
            ];
            if m.len() <= 16 && m.len() > 1 {
                values.push(format!("{}=feature-x", &m[..m.len() - 1]).into());
                values.push(format!("x{}y=feature-x", &m[1..]).into());
            }
            for value in values {
                out.push(vec![(list.to_owned(), value)]);
            }
            out.push(vec![
                (list.to_owned(), b"user=alice".to_vec()),
                (list.to_owned(), format!("{m}=feature-x").into()),
            ]);
            if m.len() > 1 {
                let (head, tail) = m.split_at(m.len() / 2);
                out.push(vec![
                    (list.to_owned(), format!("x={head}").into()),
                    (list.to_owned(), format!("{tail}=feature-x").into()),
                ]);
            }
        }
    }
    // Random mixtures of fragments.
    let mut fragments: Vec<String> = vec![
        "userId=alice".into(),
        "=".into(),
        ",".into(),
        ";p=1".into(),
        "%20".into(),
        "+".into(),
        "%".into(),
        "%2".into(),
        "x".into(),
    ];
    for member in &carriers.members {
        fragments.push(member.clone());
        fragments.push(encoded(member, rng, true));
        if member.len() <= 16 && member.len() > 1 {
            fragments.push(member[..member.len() / 2].to_owned());
        }
    }
    for _ in 0..40 {
        let count = 1 + rng.below(5);
        let value: String = (0..count).map(|_| rng.pick(&fragments).clone()).collect();
        let list = *rng.pick(&["baggage", "tracestate", "BAGGAGE"]);
        out.push(one(list, value));
    }
    out
}

fn raw_request(path: &str, headers: &Headers) -> Vec<u8> {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: payment\r\n").into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"connection: close\r\n\r\n");
    raw
}

/// The oracle of what the filter needs agrees with the app's own reading: every `baggage`
/// value in which OpenTelemetry Python reads a configured member is one the oracle says the
/// filter needs.
fn check_needs_oracle_against_the_app(label: &str, carriers: &Carriers, requests: &[Headers]) {
    let values: Vec<String> = requests
        .iter()
        .filter_map(|headers| match headers.as_slice() {
            [(name, value)] if name.eq_ignore_ascii_case("baggage") => {
                String::from_utf8(value.clone()).ok()
            }
            _ => None,
        })
        .collect();
    let views = app_views(&values);
    for (value, view) in values.iter().zip(&views) {
        if carriers.members.iter().any(|m| view.member(m).is_some()) {
            let headers = one("baggage", value.as_bytes());
            assert!(
                carriers.filter_needs(&headers),
                "{label}: the app reads a member of {value:?}, the oracle says the filter need not"
            );
        }
    }
}

/// The generated matcher fires exactly as specified, and so never skips a request the filter
/// needs: observed through the debug header, which the filter adds to every response it
/// handled (keyless ones too); a request the matcher skipped has none.
#[tokio::test]
async fn the_generated_matcher_fires_whenever_the_filter_needs_the_request() {
    let mut rng = Lcg(0x5eed_f00d);
    for (label, config) in matcher_configs() {
        let env = SandboxEnv::start_with(SandboxOptions {
            filter_config: Some(config.clone()),
            entry: FilterEntry::FastPath,
            ..SandboxOptions::default()
        })
        .await;
        let carriers = Carriers::of(&config);
        let requests = matcher_requests(&carriers, &mut rng);
        check_needs_oracle_against_the_app(label, &carriers, &requests);
        let (mut fired, mut skipped) = (0, 0);
        for (i, headers) in requests.iter().enumerate() {
            let raw = raw_request(&format!("/matcher/{i}"), headers);
            let response = integration_tests::client::raw_http1_exchange(env.addr(), None, &raw)
                .await
                .unwrap_or_else(|e| panic!("{label}: request {i}: {e}"));
            let shown = String::from_utf8_lossy(&raw).into_owned();
            assert_eq!(response.status, 200, "{label}: {shown}\n{response:?}");
            let fires = response.header(DECISION_HEADER).is_some();
            if carriers.filter_needs(headers) {
                assert!(
                    fires,
                    "{label}: the matcher skipped a request the filter needs:\n{shown}"
                );
            }
            assert_eq!(
                fires,
                carriers.fast_path_fires(headers),
                "{label}: the matcher fired {fires} against its specification:\n{shown}"
            );
            if fires {
                fired += 1;
            } else {
                skipped += 1;
            }
        }
        assert!(
            fired > 0 && skipped > 0,
            "{label}: fired {fired}, skipped {skipped}"
        );
    }
}

// ------------------------------------------------------------------------- ECDS ---

/// The ECDS form (`render-envoy --ecds`): the matcher in the listener, the Wasm configuration
/// from the file `scripts/sandboxes` publishes; adding and removing sandboxes applies live.
#[tokio::test]
async fn the_ecds_fast_path_applies_published_tables_live() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let table = dir.path().join("sandboxes.json");
    let ecds = dir.path().join("sandbox-router.json");
    let wasm = paths::filter_wasm();
    let (table_arg, ecds_arg, wasm_arg) = (
        table.to_string_lossy().into_owned(),
        ecds.to_string_lossy().into_owned(),
        wasm.to_string_lossy().into_owned(),
    );
    let config = sandbox::default_filter_config();
    std::fs::write(&table, config.to_string()).expect("write the table");
    let sandboxes = |args: &[&str]| {
        let mut all = vec![
            "--table",
            table_arg.as_str(),
            "--ecds",
            ecds_arg.as_str(),
            "--wasm",
            wasm_arg.as_str(),
        ];
        all.extend_from_slice(args);
        filter_entry::run_sandboxes(&all);
    };
    sandboxes(&["publish"]);
    let entry = filter_entry::generate(
        &config,
        &["--ecds", &ecds_arg],
        &["render-envoy", "--ecds", "sandbox-router"],
    );
    let env = SandboxEnv::start_with(SandboxOptions {
        prebuilt_entry: Some(entry),
        ..SandboxOptions::default()
    })
    .await;
    let keyed =
        |key: &str| TestRequest::get("payment", "/").header("baggage", &format!("sandbox={key}"));

    let response = env.send(keyed(KEY)).await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(PAYMENT_SANDBOX),
        "{response:?}"
    );
    let response = env.send(TestRequest::get("payment", "/")).await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(PAYMENT_BASELINE),
        "{response:?}"
    );
    assert_eq!(response.header(DECISION_HEADER), None, "{response:?}");

    sandboxes(&[
        "add",
        "feature-y",
        "--route",
        "payment=authority:payment-feature-x.shop.svc.cluster.local",
    ]);
    wait_for(&env, keyed("feature-y"), PAYMENT_SANDBOX).await;
    sandboxes(&["remove", KEY]);
    wait_for(&env, keyed(KEY), PAYMENT_BASELINE).await;
    let response = env.send(keyed(KEY)).await;
    assert_eq!(
        response.header(DECISION_HEADER).as_deref(),
        Some("baseline; key=feature-x; reason=unknown-key")
    );
}

/// Polls (a new request each time) until `upstream` answers, for up to 10 s.
async fn wait_for(env: &SandboxEnv, request: TestRequest, upstream: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = env.send(request.clone()).await;
        if response.upstream().as_deref() == Some(upstream) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not served by {upstream} in time: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
