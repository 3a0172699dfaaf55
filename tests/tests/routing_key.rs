//! Where the sandbox key comes from: every carrier, precedence between them, W3C baggage
//! parsing, key validation, and hostile inputs. All requests go to `payment` (authority mode):
//! a recognised key `feature-x` sends them to `payment-feature-x`, anything else leaves them at
//! `payment-baseline`, with the one baseline reason the README's precedence rules give.
//!
//! Each test is a table of cases (headers sent, the one expected outcome), every case sent over
//! HTTP/1.1 and h2c.

use integration_tests::expect::{self, Outcome, INVALID_KEY, NO_KEY, UNKNOWN_KEY};
use integration_tests::sandbox::{
    SandboxOptions, DEFAULT_UPSTREAM, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
    PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest};

const ROUTED: Outcome = Outcome::Routed {
    upstream: PAYMENT_SANDBOX,
};

const fn baseline(reason: &'static str) -> Outcome {
    Outcome::Baseline {
        upstream: PAYMENT_BASELINE,
        reason,
    }
}

/// One request to `payment` and the one answer it must get.
struct Case {
    name: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    expected: Outcome,
}

impl Case {
    fn new(name: impl Into<String>, headers: &[(&'static str, &str)], expected: Outcome) -> Case {
        Case {
            name: name.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (*n, v.as_bytes().to_vec()))
                .collect(),
            expected,
        }
    }

    /// A case whose header values are raw bytes (non-UTF-8, obs-text).
    fn bytes(
        name: impl Into<String>,
        headers: &[(&'static str, &[u8])],
        expected: Outcome,
    ) -> Case {
        Case {
            name: name.into(),
            headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
            expected,
        }
    }

    fn request(&self, protocol: Protocol) -> TestRequest {
        self.headers.iter().fold(
            TestRequest::get("payment", "/pay").protocol(protocol),
            |request, (name, value)| request.header_bytes(name, value),
        )
    }

    fn describe(&self, protocol: Protocol) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown: String = String::from_utf8_lossy(v).chars().take(120).collect();
                format!("{n}: {shown:?} ({} bytes)", v.len())
            })
            .collect();
        format!("{protocol:?} {} [{}]", self.name, headers.join(", "))
    }
}

/// Sends every case over both protocols and asserts its outcome, and the authority the upstream
/// received: the sandbox's when routed, `payment` untouched otherwise.
async fn run(env: &SandboxEnv, cases: &[Case]) {
    for protocol in Protocol::ALL {
        for case in cases {
            let context = case.describe(protocol);
            let response = env.send(case.request(protocol)).await;
            let echo = expect::outcome(&context, &response, case.expected);
            let authority = match case.expected {
                Outcome::Routed { .. } => PAYMENT_SANDBOX_AUTHORITY,
                Outcome::Baseline { .. } => "payment",
            };
            assert_eq!(echo.authority(), authority, "{context}: authority");
        }
    }
}

// ---- each carrier on its own ----

#[tokio::test]
async fn key_in_any_single_carrier_is_routed() {
    let env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::new("W3C baggage", &[("baggage", "sandbox=feature-x")], ROUTED),
            Case::new("plain header", &[("x-sandbox", KEY)], ROUTED),
            Case::new("OpenTracing", &[("ot-baggage-sandbox", KEY)], ROUTED),
            Case::new("Jaeger", &[("uberctx-sandbox", KEY)], ROUTED),
            Case::new("tracestate", &[("tracestate", "sandbox=feature-x")], ROUTED),
            Case::new(
                "tracestate among vendors",
                &[(
                    "tracestate",
                    "congo=t61rcWkgMzE,sandbox=feature-x,rojo=00f067aa0ba902b7",
                )],
                ROUTED,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn no_carrier_means_no_key() {
    let env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::new("no header at all", &[], baseline(NO_KEY)),
            Case::new(
                "baggage without the member",
                &[("baggage", "userId=alice,isProduction=false")],
                baseline(NO_KEY),
            ),
            Case::new(
                "tracestate without the member",
                &[("tracestate", "congo=t61rcWkgMzE")],
                baseline(NO_KEY),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn unknown_key_stays_on_baseline() {
    let env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::new(
                "unknown in baggage",
                &[("baggage", "sandbox=nope")],
                baseline(UNKNOWN_KEY),
            ),
            Case::new(
                "unknown in a plain header",
                &[("x-sandbox", "feature-y")],
                baseline(UNKNOWN_KEY),
            ),
            Case::new(
                "keys are case-sensitive",
                &[("x-sandbox", "Feature-X")],
                baseline(UNKNOWN_KEY),
            ),
        ],
    )
    .await;
}

// ---- precedence: plain headers > baggage > ot-baggage > uberctx > tracestate ----

/// Carriers in precedence order, as (header name, value template with the key).
const CARRIERS: [(&str, &str); 5] = [
    ("x-sandbox", "{}"),
    ("baggage", "sandbox={}"),
    ("ot-baggage-sandbox", "{}"),
    ("uberctx-sandbox", "{}"),
    ("tracestate", "sandbox={}"),
];

/// Every (higher, lower) pair of carriers, by precedence.
fn carrier_pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..CARRIERS.len()).flat_map(|higher| (higher + 1..CARRIERS.len()).map(move |l| (higher, l)))
}

/// `carriers[i]` holding `key`, as a header.
fn carrier(index: usize, key: &str) -> (&'static str, String) {
    let (name, template) = CARRIERS[index];
    (name, template.replace("{}", key))
}

/// A case with two carriers (sent lower first, so arrival order is not what decides).
fn two_carriers(
    name: String,
    (h_name, h_value): (&'static str, String),
    (l_name, l_value): (&'static str, String),
    expected: Outcome,
) -> Case {
    Case::new(name, &[(l_name, &l_value), (h_name, &h_value)], expected)
}

#[tokio::test]
async fn higher_carrier_wins_when_carriers_disagree() {
    let env = SandboxEnv::start().await;
    let mut cases = Vec::new();
    for (higher, lower) in carrier_pairs() {
        let (h, l) = (CARRIERS[higher].0, CARRIERS[lower].0);
        cases.push(two_carriers(
            format!("{h} holds the known key, {l} another"),
            carrier(higher, KEY),
            carrier(lower, "other-key"),
            ROUTED,
        ));
        // A valid but unknown key in the higher carrier still wins.
        cases.push(two_carriers(
            format!("{h} holds an unknown key, {l} the known one"),
            carrier(higher, "other-key"),
            carrier(lower, KEY),
            baseline(UNKNOWN_KEY),
        ));
    }
    run(&env, &cases).await;
}

#[tokio::test]
async fn invalid_key_in_higher_carrier_falls_through_to_valid_one() {
    let env = SandboxEnv::start().await;
    let cases: Vec<Case> = carrier_pairs()
        .map(|(higher, lower)| {
            let (h_name, h_value) = carrier(higher, "bad/key");
            let (l_name, l_value) = carrier(lower, KEY);
            Case::new(
                format!("{h_name} invalid, {l_name} valid"),
                &[(h_name, &h_value), (l_name, &l_value)],
                ROUTED,
            )
        })
        .collect();
    run(&env, &cases).await;
}

// ---- W3C baggage parsing ----

#[tokio::test]
async fn baggage_values_are_percent_decoded() {
    let env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::new("one escape", &[("baggage", "sandbox=feature%2Dx")], ROUTED),
            Case::new(
                "every byte escaped",
                &[("baggage", "sandbox=%66%65%61%74%75%72%65%2d%78")],
                ROUTED,
            ),
            // The member is there, and decodes to "feature x": not a well-formed key.
            Case::new(
                "decodes to an invalid key",
                &[("baggage", "sandbox=feature%20x")],
                baseline(INVALID_KEY),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn key_in_a_later_baggage_header() {
    let env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::new(
                "second header",
                &[
                    ("baggage", "userId=alice"),
                    ("baggage", "sandbox=feature-x"),
                ],
                ROUTED,
            ),
            Case::new(
                "third header",
                &[
                    ("baggage", "a=1,b=2"),
                    ("baggage", "c=3"),
                    ("baggage", "d=4,sandbox=feature-x"),
                ],
                ROUTED,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn baggage_whitespace_and_properties_are_ignored() {
    let env = SandboxEnv::start().await;
    let cases: Vec<Case> = [
        " sandbox=feature-x ",
        "sandbox = feature-x",
        "\tsandbox\t=\tfeature-x\t",
        "userId=alice , sandbox=feature-x ; ttl=30 ; shared, other=1",
        "sandbox=feature-x;propertyWithoutValue",
        "sandbox=feature-x ;p1=v1;p2",
    ]
    .into_iter()
    .map(|value| Case::new(value, &[("baggage", value)], ROUTED))
    .collect();
    run(&env, &cases).await;
}

#[tokio::test]
async fn malformed_baggage_members_are_skipped() {
    let env = SandboxEnv::start().await;
    let cases: Vec<Case> = [
        "novalue,sandbox=feature-x",
        "=emptykey,sandbox=feature-x,trailing",
        "bad key=1, sandbox=feature-x ,\"quoted\"=2",
        ",,sandbox=feature-x,,",
        "a=%zz,sandbox=feature-x",
        "sandbox=feature-x,novalue",
    ]
    .into_iter()
    .map(|value| Case::new(value, &[("baggage", value)], ROUTED))
    .collect();
    run(&env, &cases).await;
}

#[tokio::test]
async fn look_alike_member_names_are_not_the_key() {
    let env = SandboxEnv::start().await;
    let mut cases: Vec<Case> = [
        "xsandbox=feature-x",
        "sandboxx=feature-x",
        "sandbox-id=feature-x",
        "Sandbox=feature-x",
        "a=sandbox=feature-x",
        "a=1;sandbox=feature-x",
    ]
    .into_iter()
    .map(|value| Case::new(value, &[("baggage", value)], baseline(NO_KEY)))
    .collect();
    cases.extend([
        Case::new(
            "tracestate look-alike",
            &[("tracestate", "xsandbox=feature-x")],
            baseline(NO_KEY),
        ),
        Case::new(
            "ot-baggage look-alike",
            &[("ot-baggage-xsandbox", KEY)],
            baseline(NO_KEY),
        ),
        Case::new(
            "uberctx look-alike",
            &[("uberctx-sandboxx", KEY)],
            baseline(NO_KEY),
        ),
    ]);
    run(&env, &cases).await;
}

// ---- key validation: 1-128 chars of [A-Za-z0-9._-] ----

/// A carrier that names the key but holds no well-formed one: `invalid-key`, never `no-key`.
#[tokio::test]
async fn invalid_keys_stay_on_baseline() {
    let env = SandboxEnv::start().await;
    let too_long = "a".repeat(129);
    let mut cases = Vec::new();
    for key in [
        too_long.as_str(),
        "feature/x",
        "feature x",
        "feature+x",
        "feature:x",
        "feature%x",
        "f\u{e9}ature",
    ] {
        cases.push(Case::new(
            format!("plain header {key}"),
            &[("x-sandbox", key)],
            baseline(INVALID_KEY),
        ));
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        cases.push(Case::new(
            format!("baggage, every byte escaped, {key}"),
            &[("baggage", &format!("sandbox={encoded}"))],
            baseline(INVALID_KEY),
        ));
    }
    cases.push(Case::new(
        "empty plain header",
        &[("x-sandbox", "")],
        baseline(INVALID_KEY),
    ));
    cases.push(Case::new(
        "empty baggage value",
        &[("baggage", "sandbox=")],
        baseline(INVALID_KEY),
    ));
    run(&env, &cases).await;
}

#[tokio::test]
async fn longest_valid_key_is_accepted() {
    let env = SandboxEnv::start().await;
    // 128 characters is valid (so the key is looked up, and unknown).
    let key = format!("{}.A_9", "k-".repeat(62));
    assert_eq!(key.len(), 128);
    run(
        &env,
        &[
            Case::new(
                "plain header",
                &[("x-sandbox", &key)],
                baseline(UNKNOWN_KEY),
            ),
            Case::new(
                "baggage",
                &[("baggage", &format!("sandbox={key}"))],
                baseline(UNKNOWN_KEY),
            ),
        ],
    )
    .await;
}

// ---- hostile inputs ----

/// `count` baggage members `member<i>=value<i>`, then a member of `padding` bytes.
fn filler_members(count: usize, padding: usize) -> String {
    let mut members: Vec<String> = (0..count).map(|i| format!("member{i}=value{i}")).collect();
    members.push(format!("padding={}", "p".repeat(padding)));
    members.join(",")
}

/// Beyond the W3C limits (8,192 bytes, 180 members) the header is still scanned in full: the
/// key is found wherever it is.
#[tokio::test]
async fn oversized_baggage_is_scanned_in_full() {
    let mut env = SandboxEnv::start().await;
    let filler = filler_members(200, 8192);
    let key_first = format!("sandbox=feature-x,{filler}");
    let key_last = format!("{filler},sandbox=feature-x");
    assert!(key_last.len() > 8192 && key_last.split(',').count() > 180);
    run(
        &env,
        &[
            Case::new("key first", &[("baggage", &key_first)], ROUTED),
            Case::new("key last", &[("baggage", &key_last)], ROUTED),
            Case::new("no key", &[("baggage", &filler)], baseline(NO_KEY)),
        ],
    )
    .await;
    expect::filter_healthy(&mut env).await;
}

/// Envoy's default `max_request_headers_kb` (60 KiB): a baggage header just under it is routed
/// by a key at its very end; one over it is refused by Envoy before any filter runs (HTTP/1.1:
/// 431; HTTP/2: the stream is reset, counted as `http2.header_list_size_too_large`).
#[tokio::test]
async fn baggage_over_envoys_header_limit_is_refused_by_envoy() {
    let env = SandboxEnv::start_with(SandboxOptions {
        max_request_headers_kb: None,
        ..SandboxOptions::default()
    })
    .await;
    let under = format!("{},sandbox=feature-x", filler_members(200, 50 * 1024));
    assert!(under.len() < 58 * 1024, "{}", under.len());
    run(
        &env,
        &[Case::new(
            "key last, 53 KiB",
            &[("baggage", &under)],
            ROUTED,
        )],
    )
    .await;

    let over = format!("{},sandbox=feature-x", filler_members(200, 62 * 1024));
    let before = env.upstream(PAYMENT_SANDBOX).request_count();
    let request = || TestRequest::get("payment", "/pay").header("baggage", &over);
    let response = env.send(request().http1()).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(response.upstream(), None, "{response:?}");
    assert_eq!(
        integration_tests::sandbox::decision(&response),
        None,
        "the filter never saw it: {response:?}"
    );
    let h2 = request().h2c().try_send(env.addr()).await;
    assert!(h2.is_err(), "h2c: expected a stream reset, got {h2:?}");
    for stat in ["http2.header_list_size_too_large", "http2.tx_reset"] {
        assert_eq!(env.envoy.stat(stat).await, Some(1), "{stat}");
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), before);
    assert_eq!(env.upstream(PAYMENT_BASELINE).request_count(), 0);
}

#[tokio::test]
async fn non_utf8_carriers_are_invalid_keys_and_other_members_still_count() {
    let mut env = SandboxEnv::start().await;
    run(
        &env,
        &[
            Case::bytes(
                "baggage value of non-UTF-8 bytes",
                &[("baggage", b"sandbox=\xff\xfe")],
                baseline(INVALID_KEY),
            ),
            Case::bytes(
                "baggage value with a stray Latin-1 byte",
                &[("baggage", b"sandbox=feature-x\xe9")],
                baseline(INVALID_KEY),
            ),
            // A name that is not UTF-8 is no name an app can read: not the member.
            Case::bytes(
                "non-UTF-8 member name",
                &[("baggage", b"\xc3\x28=\xa0\xa1")],
                baseline(NO_KEY),
            ),
            Case::bytes(
                "UTF-8 value outside the key alphabet",
                &[("baggage", b"sandbox=caf\xc3\xa9")],
                baseline(INVALID_KEY),
            ),
            Case::bytes(
                "plain header with a non-UTF-8 byte",
                &[("x-sandbox", b"feature-x\xff")],
                baseline(INVALID_KEY),
            ),
            Case::bytes(
                "non-UTF-8 member next to the key",
                &[("baggage", b"junk=\xff\xfe,sandbox=feature-x")],
                ROUTED,
            ),
        ],
    )
    .await;
    expect::filter_healthy(&mut env).await;
}

/// Envoy itself answers 400 to a non-UTF-8 (invalid) authority, before any filter runs.
#[tokio::test]
async fn non_utf8_authority_is_refused_by_envoy() {
    let mut env = SandboxEnv::start().await;
    for authority in [&b"pay\xffment"[..], b"payment\xc3\xa9", b"\xfe\xff:8080"] {
        let response = env
            .send(
                TestRequest::get("unused", "/")
                    .authority_bytes(authority)
                    .header("x-sandbox", KEY),
            )
            .await;
        let context = String::from_utf8_lossy(authority);
        assert_eq!(response.status, 400, "{context}: {response:?}");
        assert_eq!(response.upstream(), None, "{context}: {response:?}");
        assert_eq!(
            integration_tests::sandbox::decision(&response),
            None,
            "{context}: the filter never saw it: {response:?}"
        );
    }
    for upstream in [PAYMENT_BASELINE, PAYMENT_SANDBOX, DEFAULT_UPSTREAM] {
        assert_eq!(env.upstream(upstream).request_count(), 0, "{upstream}");
    }
    expect::filter_healthy(&mut env).await;
}
