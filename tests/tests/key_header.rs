//! The key header (issue 15): the filter hands the validated key to later filters and to the app
//! in `x-sandbox-key`, only for a registered, trusted, unexpired sandbox's request that goes on,
//! and removes every copy a client made, in any case and however often repeated, from every
//! request that enters the filter.

use integration_tests::expect::{self, answered_by};
use integration_tests::sandbox::{
    self, CATALOG_BASELINE, INVENTORY_BASELINE, KEY, PAYMENT_BASELINE, PAYMENT_SANDBOX,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest};
use serde_json::{json, Value};

const KEY_HEADER: &str = "x-sandbox-key";

/// The default configuration plus a budget-less second sandbox, a limited one, an expired one,
/// and a write guard on feature-x.
fn config() -> Value {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"][KEY]["baseline_writes"] = json!("deny");
    config["sandboxes"]["limited"] = json!({
        "rate_limit": { "requests_per_second": 0.001, "burst": 1 }
    });
    config["sandboxes"]["old"] = json!({ "expires_at": "2020-01-01T00:00:00Z" });
    config
}

/// What reached the upstream in the key header.
fn key_header_received(response: &integration_tests::TestResponse, upstream: &str) -> Vec<String> {
    answered_by(response, upstream).header_values(KEY_HEADER)
}

#[tokio::test]
async fn the_validated_key_reaches_the_upstream_and_forgeries_do_not() {
    let env = SandboxEnv::start_with_config(config()).await;
    for protocol in Protocol::ALL {
        // (case, request, upstream, key header it must receive)
        let cases: Vec<(&str, TestRequest, &str, Vec<&str>)> = vec![
            (
                "rerouted",
                TestRequest::get("payment", "/").header("baggage", "sandbox=feature-x"),
                PAYMENT_SANDBOX,
                vec![KEY],
            ),
            (
                "keyed, to a service it does not override",
                TestRequest::get("catalog", "/").header("x-sandbox", KEY),
                CATALOG_BASELINE,
                vec![KEY],
            ),
            (
                "a forged header replaced by the validated key",
                TestRequest::get("payment", "/")
                    .header("baggage", "sandbox=feature-x")
                    .header(KEY_HEADER, "someone-else")
                    .header("X-Sandbox-Key", "another"),
                PAYMENT_SANDBOX,
                vec![KEY],
            ),
            (
                "keyless with a forged header, repeated and in mixed case",
                TestRequest::get("payment", "/")
                    .header(KEY_HEADER, KEY)
                    .header("X-SANDBOX-KEY", KEY)
                    .header("x-Sandbox-Key", "limited"),
                PAYMENT_BASELINE,
                vec![],
            ),
            (
                "unknown key with a forged header",
                TestRequest::get("payment", "/")
                    .header("baggage", "sandbox=nope")
                    .header(KEY_HEADER, KEY),
                PAYMENT_BASELINE,
                vec![],
            ),
            (
                "expired key",
                TestRequest::get("payment", "/").header("baggage", "sandbox=old"),
                PAYMENT_BASELINE,
                vec![],
            ),
            (
                "malformed key with a forged header",
                TestRequest::get("inventory", "/")
                    .header("x-sandbox", "bad key!")
                    .header(KEY_HEADER, KEY),
                INVENTORY_BASELINE,
                vec![],
            ),
        ];
        for (case, request, upstream, expected) in cases {
            let response = env.send(request.protocol(protocol)).await;
            assert_eq!(
                key_header_received(&response, upstream),
                expected,
                "{case} ({protocol:?}): {response:?}"
            );
        }
    }
}

#[tokio::test]
async fn no_key_header_on_a_refused_request_and_none_from_an_untrusted_source() {
    let env = SandboxEnv::start_with_config(config()).await;
    // Refused by the write guard: nothing goes upstream.
    let response = env
        .send(TestRequest::post("catalog", "/").header("x-sandbox", KEY))
        .await;
    assert_eq!(response.status, 403, "{response:?}");
    // Over budget: the first request of `limited` carries its key, the second is refused.
    let response = env
        .send(TestRequest::get("catalog", "/").header("x-sandbox", "limited"))
        .await;
    assert_eq!(
        key_header_received(&response, CATALOG_BASELINE),
        ["limited"]
    );
    let response = env
        .send(TestRequest::get("catalog", "/").header("x-sandbox", "limited"))
        .await;
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(env.upstream(CATALOG_BASELINE).request_count(), 1);

    // From an untrusted source the key is stripped and no key header is set; a forged one goes.
    let mut untrusted = config();
    untrusted["trust"] = json!({ "sources": ["10.0.0.0/8"], "untrusted": "strip" });
    let env = SandboxEnv::start_with_config(untrusted).await;
    let response = env
        .send(
            TestRequest::get("payment", "/")
                .header("baggage", "sandbox=feature-x")
                .header(KEY_HEADER, KEY),
        )
        .await;
    expect::baseline_at(&response, PAYMENT_BASELINE, &["untrusted"]);
    assert!(response.echo().header_values(KEY_HEADER).is_empty());
}

#[tokio::test]
async fn the_key_header_can_be_renamed_or_turned_off() {
    let mut renamed = config();
    renamed["key_header"] = json!("x-test-key");
    let env = SandboxEnv::start_with_config(renamed).await;
    let response = env
        .send(
            TestRequest::get("payment", "/")
                .header("baggage", "sandbox=feature-x")
                .header(KEY_HEADER, "left-alone"),
        )
        .await;
    let echo = answered_by(&response, PAYMENT_SANDBOX);
    assert_eq!(echo.header_values("x-test-key"), [KEY]);
    // Not the filter's header any more: passed through as any other header.
    assert_eq!(echo.header_values(KEY_HEADER), ["left-alone"]);

    let mut off = config();
    off["key_header"] = json!("");
    let env = SandboxEnv::start_with_config(off).await;
    let response = env
        .send(TestRequest::get("payment", "/").header("baggage", "sandbox=feature-x"))
        .await;
    assert!(answered_by(&response, PAYMENT_SANDBOX)
        .header_values(KEY_HEADER)
        .is_empty());
}
