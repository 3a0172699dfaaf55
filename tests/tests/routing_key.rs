//! Where the sandbox key comes from: every carrier, precedence between them, W3C baggage
//! parsing, key validation, and hostile inputs. All requests go to `payment` (authority mode):
//! a recognised key `feature-x` sends them to `payment-feature-x`, anything else leaves them at
//! `payment-baseline`.

use integration_tests::expect::{self, INVALID_KEY, NO_KEY, UNKNOWN_KEY};
use integration_tests::sandbox::{
    KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest, TestResponse};

/// A request to `payment` carrying the given headers.
async fn to_payment(
    env: &SandboxEnv,
    protocol: Protocol,
    headers: &[(&str, &str)],
) -> TestResponse {
    let request = headers.iter().fold(
        TestRequest::get("payment", "/pay").protocol(protocol),
        |r, (name, value)| r.header(name, value),
    );
    env.send(request).await
}

async fn assert_routed(env: &SandboxEnv, headers: &[(&str, &str)]) {
    for protocol in Protocol::ALL {
        let response = to_payment(env, protocol, headers).await;
        let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(
            echo.authority(),
            PAYMENT_SANDBOX_AUTHORITY,
            "{protocol:?} {headers:?}"
        );
    }
}

async fn assert_baseline(env: &SandboxEnv, headers: &[(&str, &str)], reasons: &[&str]) {
    for protocol in Protocol::ALL {
        let response = to_payment(env, protocol, headers).await;
        let echo = expect::baseline_at(&response, PAYMENT_BASELINE, reasons);
        assert_eq!(
            echo.authority(),
            "payment",
            "{protocol:?} {headers:?}: authority untouched"
        );
    }
}

// ---- each carrier on its own ----

#[tokio::test]
async fn key_in_w3c_baggage() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("baggage", "sandbox=feature-x")]).await;
}

#[tokio::test]
async fn key_in_plain_header() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("x-sandbox", KEY)]).await;
}

#[tokio::test]
async fn key_in_ot_baggage_header() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("ot-baggage-sandbox", KEY)]).await;
}

#[tokio::test]
async fn key_in_jaeger_uberctx_header() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("uberctx-sandbox", KEY)]).await;
}

#[tokio::test]
async fn key_in_tracestate() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("tracestate", "sandbox=feature-x")]).await;
    assert_routed(
        &env,
        &[(
            "tracestate",
            "congo=t61rcWkgMzE,sandbox=feature-x,rojo=00f067aa0ba902b7",
        )],
    )
    .await;
}

#[tokio::test]
async fn no_carrier_means_no_key() {
    let env = SandboxEnv::start().await;
    assert_baseline(&env, &[], &[NO_KEY]).await;
    assert_baseline(
        &env,
        &[("baggage", "userId=alice,isProduction=false")],
        &[NO_KEY],
    )
    .await;
    assert_baseline(&env, &[("tracestate", "congo=t61rcWkgMzE")], &[NO_KEY]).await;
}

#[tokio::test]
async fn unknown_key_stays_on_baseline() {
    let env = SandboxEnv::start().await;
    assert_baseline(&env, &[("baggage", "sandbox=nope")], &[UNKNOWN_KEY]).await;
    assert_baseline(&env, &[("x-sandbox", "feature-y")], &[UNKNOWN_KEY]).await;
    assert_baseline(&env, &[("x-sandbox", "Feature-X")], &[UNKNOWN_KEY]).await;
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

fn carrier(index: usize, key: &str) -> (&'static str, String) {
    let (name, template) = CARRIERS[index];
    (name, template.replace("{}", key))
}

#[tokio::test]
async fn higher_carrier_wins_when_carriers_disagree() {
    let env = SandboxEnv::start().await;
    for higher in 0..CARRIERS.len() {
        for lower in higher + 1..CARRIERS.len() {
            // Higher carrier holds the known key: routed.
            let (h_name, h_value) = carrier(higher, KEY);
            let (l_name, l_value) = carrier(lower, "other-key");
            assert_routed(&env, &[(l_name, &l_value), (h_name, &h_value)]).await;

            // Higher carrier holds a valid but unknown key: it still wins, so baseline.
            let (h_name, h_value) = carrier(higher, "other-key");
            let (l_name, l_value) = carrier(lower, KEY);
            assert_baseline(
                &env,
                &[(l_name, &l_value), (h_name, &h_value)],
                &[UNKNOWN_KEY],
            )
            .await;
        }
    }
}

#[tokio::test]
async fn invalid_key_in_higher_carrier_falls_through_to_valid_one() {
    let env = SandboxEnv::start().await;
    for higher in 0..CARRIERS.len() {
        for lower in higher + 1..CARRIERS.len() {
            let (h_name, h_value) = carrier(higher, "bad/key");
            let (l_name, l_value) = carrier(lower, KEY);
            assert_routed(&env, &[(h_name, &h_value), (l_name, &l_value)]).await;
        }
    }
}

// ---- W3C baggage parsing ----

#[tokio::test]
async fn baggage_values_are_percent_decoded() {
    let env = SandboxEnv::start().await;
    assert_routed(&env, &[("baggage", "sandbox=feature%2Dx")]).await;
    assert_routed(&env, &[("baggage", "sandbox=%66%65%61%74%75%72%65%2d%78")]).await;
    // Decodes to "feature x": not a valid key.
    assert_baseline(
        &env,
        &[("baggage", "sandbox=feature%20x")],
        &[INVALID_KEY, NO_KEY],
    )
    .await;
}

#[tokio::test]
async fn key_in_second_baggage_header() {
    let env = SandboxEnv::start().await;
    assert_routed(
        &env,
        &[
            ("baggage", "userId=alice"),
            ("baggage", "sandbox=feature-x"),
        ],
    )
    .await;
    assert_routed(
        &env,
        &[
            ("baggage", "a=1,b=2"),
            ("baggage", "c=3"),
            ("baggage", "d=4,sandbox=feature-x"),
        ],
    )
    .await;
}

#[tokio::test]
async fn baggage_whitespace_and_properties_are_ignored() {
    let env = SandboxEnv::start().await;
    for value in [
        " sandbox=feature-x ",
        "sandbox = feature-x",
        "\tsandbox\t=\tfeature-x\t",
        "userId=alice , sandbox=feature-x ; ttl=30 ; shared, other=1",
        "sandbox=feature-x;propertyWithoutValue",
        "sandbox=feature-x ;p1=v1;p2",
    ] {
        assert_routed(&env, &[("baggage", value)]).await;
    }
}

#[tokio::test]
async fn malformed_baggage_members_are_skipped() {
    let env = SandboxEnv::start().await;
    for value in [
        "novalue,sandbox=feature-x",
        "=emptykey,sandbox=feature-x,trailing",
        "bad key=1, sandbox=feature-x ,\"quoted\"=2",
        ",,sandbox=feature-x,,",
        "a=%zz,sandbox=feature-x",
        "sandbox=feature-x,novalue",
    ] {
        assert_routed(&env, &[("baggage", value)]).await;
    }
}

#[tokio::test]
async fn look_alike_member_names_are_not_the_key() {
    let env = SandboxEnv::start().await;
    for value in [
        "xsandbox=feature-x",
        "sandboxx=feature-x",
        "sandbox-id=feature-x",
        "Sandbox=feature-x",
        "a=sandbox=feature-x",
        "a=1;sandbox=feature-x",
    ] {
        assert_baseline(&env, &[("baggage", value)], &[NO_KEY]).await;
    }
    assert_baseline(&env, &[("tracestate", "xsandbox=feature-x")], &[NO_KEY]).await;
    assert_baseline(&env, &[("ot-baggage-xsandbox", KEY)], &[NO_KEY]).await;
    assert_baseline(&env, &[("uberctx-sandboxx", KEY)], &[NO_KEY]).await;
}

// ---- key validation: 1-128 chars of [A-Za-z0-9._-] ----

#[tokio::test]
async fn invalid_keys_stay_on_baseline() {
    let env = SandboxEnv::start().await;
    let too_long = "a".repeat(129);
    for key in [
        too_long.as_str(),
        "feature/x",
        "feature x",
        "feature+x",
        "feature:x",
        "feature%x",
        "f\u{e9}ature",
    ] {
        assert_baseline(&env, &[("x-sandbox", key)], &[INVALID_KEY, NO_KEY]).await;
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_baseline(
            &env,
            &[("baggage", &format!("sandbox={encoded}"))],
            &[INVALID_KEY, NO_KEY],
        )
        .await;
    }
    assert_baseline(&env, &[("x-sandbox", "")], &[INVALID_KEY, NO_KEY]).await;
    assert_baseline(&env, &[("baggage", "sandbox=")], &[INVALID_KEY, NO_KEY]).await;
}

#[tokio::test]
async fn longest_valid_key_is_accepted() {
    let env = SandboxEnv::start().await;
    // 128 characters is valid (so the key is looked up, and unknown).
    let key = format!("{}.A_9", "k-".repeat(62));
    assert_eq!(key.len(), 128);
    assert_baseline(&env, &[("x-sandbox", &key)], &[UNKNOWN_KEY]).await;
    assert_baseline(
        &env,
        &[("baggage", &format!("sandbox={key}"))],
        &[UNKNOWN_KEY],
    )
    .await;
}

// ---- hostile inputs: answered, never a 5xx ----

#[tokio::test]
async fn oversized_baggage_is_answered() {
    let mut env = SandboxEnv::start().await;
    let mut members: Vec<String> = (0..200).map(|i| format!("member{i}=value{i}")).collect();
    members.push(format!("padding={}", "p".repeat(8192)));
    let with_key_first = format!("sandbox=feature-x,{}", members.join(","));
    let with_key_last = format!("{},sandbox=feature-x", members.join(","));
    assert!(with_key_last.len() > 8192 && members.len() > 180);
    for protocol in Protocol::ALL {
        for baggage in [&with_key_first, &with_key_last, &members.join(",")] {
            let response = to_payment(&env, protocol, &[("baggage", baggage)]).await;
            assert_eq!(response.status, 200, "{protocol:?}: {response:?}");
            let upstream = response.upstream().unwrap_or_default();
            assert!(
                upstream == PAYMENT_BASELINE || upstream == PAYMENT_SANDBOX,
                "{protocol:?}: {response:?}"
            );
            expect::decision(&response);
        }
    }
    expect::filter_healthy(&mut env).await;
}

#[tokio::test]
async fn non_utf8_baggage_stays_on_baseline() {
    let mut env = SandboxEnv::start().await;
    let values: [&[u8]; 4] = [
        b"sandbox=\xff\xfe",
        b"sandbox=feature-x\xe9",
        b"\xc3\x28=\xa0\xa1",
        b"sandbox=caf\xc3\xa9",
    ];
    for protocol in Protocol::ALL {
        for value in values {
            let response = env
                .send(
                    TestRequest::get("payment", "/")
                        .protocol(protocol)
                        .header_bytes("baggage", value),
                )
                .await;
            expect::baseline_at(&response, PAYMENT_BASELINE, &[INVALID_KEY, NO_KEY]);
        }
        let response = env
            .send(
                TestRequest::get("payment", "/")
                    .protocol(protocol)
                    .header_bytes("x-sandbox", b"feature-x\xff"),
            )
            .await;
        expect::baseline_at(&response, PAYMENT_BASELINE, &[INVALID_KEY, NO_KEY]);
        // A non-UTF-8 member next to a valid one: answered either way, never a 5xx.
        let response = env
            .send(
                TestRequest::get("payment", "/")
                    .protocol(protocol)
                    .header_bytes("baggage", b"junk=\xff\xfe,sandbox=feature-x"),
            )
            .await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    expect::filter_healthy(&mut env).await;
}

#[tokio::test]
async fn non_utf8_authority_never_reaches_a_sandbox() {
    let mut env = SandboxEnv::start().await;
    for authority in [&b"pay\xffment"[..], b"payment\xc3\xa9", b"\xfe\xff:8080"] {
        let response = env
            .send(
                TestRequest::get("unused", "/")
                    .authority_bytes(authority)
                    .header("x-sandbox", KEY),
            )
            .await;
        // Envoy itself rejects an invalid authority with 400 before any filter runs; if it
        // ever lets one through, the filter must leave it on the baseline.
        assert!(response.status.as_u16() < 500, "{response:?}");
        if let Some(upstream) = response.upstream() {
            assert_ne!(upstream, PAYMENT_SANDBOX, "{response:?}");
            expect::assert_baseline_decision(&response, &[]);
        }
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
    expect::filter_healthy(&mut env).await;
}
