//! Invalid filter configurations: Envoy must refuse to start, and its log must carry the
//! filter's `sandbox-router: invalid configuration:` line naming the offending field.

use integration_tests::sandbox::{self, FailurePolicy, SandboxOptions};
use integration_tests::SandboxEnv;
use serde_json::{json, Value};

/// Starts Envoy with `configuration` (raw text) under `failure_policy` and asserts it is refused
/// with a filter error line that contains every string in `expected`.
async fn assert_refused_with(
    failure_policy: FailurePolicy,
    configuration: &str,
    expected: &[&str],
) {
    let options = SandboxOptions {
        failure_policy,
        ..SandboxOptions::with_raw_config(configuration)
    };
    let failed = SandboxEnv::start_expecting_refusal(options).await;
    let line = failed.filter_config_error(&format!(
        "{failure_policy:?}, configuration {configuration}"
    ));
    for part in expected {
        assert!(
            line.contains(part),
            "{failure_policy:?}: the error should name {part:?}: {line}\nconfiguration: {configuration}"
        );
    }
}

/// Refused under FAIL_OPEN (the policy the contract uses: failing open at runtime must not
/// mean accepting a broken configuration).
async fn assert_refused(configuration: &str, expected: &[&str]) {
    assert_refused_with(FailurePolicy::FailOpen, configuration, expected).await;
}

/// The default configuration with `edit` applied.
fn config_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut config = sandbox::default_filter_config();
    edit(&mut config);
    config.to_string()
}

fn payment_route(config: &mut Value) -> &mut Value {
    &mut config["sandboxes"]["feature-x"]["routes"]["payment"]
}

#[tokio::test]
async fn bad_json_is_refused() {
    assert_refused(r#"{"sandboxes": {"feature-x": "#, &[]).await;
    assert_refused("not json at all", &[]).await;
}

#[tokio::test]
async fn invalid_configuration_is_refused_under_fail_closed_too() {
    assert_refused_with(FailurePolicy::FailClosed, "not json at all", &[]).await;
    let config = config_with(|c| *payment_route(c) = json!({}));
    assert_refused_with(
        FailurePolicy::FailClosed,
        &config,
        &["sandboxes.feature-x.routes.payment"],
    )
    .await;
}

#[tokio::test]
async fn unknown_top_level_field_is_refused() {
    let config = config_with(|c| c["sandboxs"] = json!({}));
    assert_refused(&config, &["sandboxs"]).await;
}

#[tokio::test]
async fn unknown_route_field_is_refused() {
    let config = config_with(|c| payment_route(c)["weight"] = json!(50));
    assert_refused(&config, &["sandboxes.feature-x.routes.payment", "weight"]).await;
}

#[tokio::test]
async fn route_with_both_authority_and_cluster_is_refused() {
    let config = config_with(|c| payment_route(c)["cluster"] = json!("payment-feature-x"));
    assert_refused(
        &config,
        &["sandboxes.feature-x.routes.payment", "authority", "cluster"],
    )
    .await;
}

#[tokio::test]
async fn route_with_neither_authority_nor_cluster_is_refused() {
    let config = config_with(|c| *payment_route(c) = json!({}));
    assert_refused(
        &config,
        &["sandboxes.feature-x.routes.payment", "authority", "cluster"],
    )
    .await;
}

#[tokio::test]
async fn malformed_authority_hostname_is_refused() {
    for authority in [
        "not a host",
        "payment_feature!x.shop",
        "",
        "-payment.shop",
        "payment..shop",
    ] {
        let config = config_with(|c| payment_route(c)["authority"] = json!(authority));
        assert_refused(&config, &["sandboxes.feature-x.routes.payment"]).await;
    }
}

#[tokio::test]
async fn malformed_service_name_is_refused() {
    let config = config_with(|c| {
        c["sandboxes"]["feature-x"]["routes"]["pay ment"] =
            json!({ "authority": "p.shop.svc.cluster.local" })
    });
    assert_refused(&config, &["sandboxes.feature-x.routes"]).await;
}

#[tokio::test]
async fn malformed_sandbox_key_is_refused() {
    let too_long = "k".repeat(129);
    for key in ["feature/x", "feature x", too_long.as_str()] {
        let config = config_with(|c| {
            let sandbox = c["sandboxes"]["feature-x"].take();
            c["sandboxes"] = json!({ key: sandbox });
        });
        assert_refused(&config, &["sandboxes", key]).await;
    }
}

#[tokio::test]
async fn wrongly_typed_field_is_refused() {
    let config = config_with(|c| c["debug"] = json!("yes"));
    assert_refused(&config, &["debug"]).await;
}

/// Configurations that used to load but were unsafe (issue 16, finding 5).
#[tokio::test]
async fn unsafe_configurations_are_refused() {
    // A cluster header that carries credentials: the filter would remove it from baseline
    // requests (before, `authorization` was accepted, then stripped from every request).
    for header in ["authorization", "cookie", "x-forwarded-for", "host", "te"] {
        assert_refused(
            &config_with(|c| c["cluster_header"] = json!(header)),
            &["cluster_header: ", header],
        )
        .await;
    }
    assert_refused(
        &config_with(|c| c["key_header"] = json!("proxy-authorization")),
        &["key_header: ", "proxy-authorization"],
    )
    .await;
    // A route target that is itself a routed service: recorded as routed, served by a baseline.
    assert_refused(
        &config_with(|c| {
            c["sandboxes"]["feature-y"] =
                json!({ "routes": { "catalog": { "authority": "payment.shop.svc.cluster.local" } } })
        }),
        &[
            "sandboxes.feature-y.routes: ",
            "`payment.shop.svc.cluster.local`",
            "is itself a service the table routes",
        ],
    )
    .await;
}

/// Each invalid circuit breaker setting, in a sandbox or in the defaults, is refused with the
/// field's path.
#[tokio::test]
async fn invalid_circuit_breaker_settings_are_refused() {
    for (breaker, field) in [
        (
            json!({ "consecutive_failures": -1 }),
            "consecutive_failures",
        ),
        (json!({ "open_seconds": -30 }), "open_seconds"),
        (json!({ "failure_ratio": 0 }), "failure_ratio"),
        (json!({ "failure_ratio": 1.5 }), "failure_ratio"),
        (json!({ "failure_ratio": -0.5 }), "failure_ratio"),
        (
            json!({ "window_seconds": 0, "min_requests": 20 }),
            "window_seconds",
        ),
        (json!({ "open_seconds": 0 }), "open_seconds"),
        (json!({ "half_open_requests": 0 }), "half_open_requests"),
        (
            json!({ "open_seconds": 60, "max_open_seconds": 30 }),
            "max_open_seconds",
        ),
    ] {
        let config = config_with(|c| c["sandboxes"]["feature-x"]["circuit_breaker"] = breaker);
        assert_refused(
            &config,
            &[&format!("sandboxes.feature-x.circuit_breaker.{field}: ")],
        )
        .await;
    }
    let config =
        config_with(|c| c["defaults"] = json!({ "circuit_breaker": { "open_seconds": 0 } }));
    assert_refused(&config, &["defaults.circuit_breaker.open_seconds: "]).await;
}
