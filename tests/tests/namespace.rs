//! `namespace` defaults to the proxy's Istio node metadata `NAMESPACE` (README
//! "Configuration"): with no `namespace` in the filter configuration, short service names
//! resolve in the namespace the bootstrap's `node.metadata` names; with neither, a short route
//! name is refused with the documented error.

use integration_tests::envoy::FILTER_CONFIG_ERROR;
use integration_tests::expect::{self, NO_OVERRIDE};
use integration_tests::sandbox::{
    self, kubernetes_names, SandboxOptions, CATALOG_BASELINE, KEY, NAMESPACE, PAYMENT_SANDBOX,
};
use integration_tests::SandboxEnv;
use serde_json::json;

/// The default configuration (its routes include the short name `payment`) without `namespace`.
fn config_without_namespace() -> serde_json::Value {
    let mut config = sandbox::default_filter_config();
    config
        .as_object_mut()
        .expect("an object")
        .remove("namespace")
        .expect("the default configuration sets a namespace");
    config
}

/// On Envoy 1.40 the node is the attribute `xds.node` (`node` answers NotFound): the filter
/// reads `xds.node.metadata.NAMESPACE`, then `node.metadata.NAMESPACE` for older Envoys.
#[tokio::test]
async fn short_service_names_resolve_in_the_node_metadata_namespace() {
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config_without_namespace()),
        node_metadata: Some(json!({ "NAMESPACE": NAMESPACE })),
        ..SandboxOptions::default()
    })
    .await;
    // Every Kubernetes name of `payment` in `shop`: `payment` was read as `payment.shop`.
    for name in kubernetes_names("payment") {
        let response = env
            .send(integration_tests::TestRequest::get(&name, "/").header("x-sandbox", KEY))
            .await;
        expect::routed_to(&response, PAYMENT_SANDBOX);
    }
    let response = env
        .send(integration_tests::TestRequest::get("catalog.shop", "/").header("x-sandbox", KEY))
        .await;
    expect::baseline_at(&response, CATALOG_BASELINE, &[NO_OVERRIDE]);
}

#[tokio::test]
async fn a_short_route_name_without_any_namespace_is_refused() {
    let options = SandboxOptions {
        filter_config: Some(config_without_namespace()),
        ..SandboxOptions::default()
    };
    let failed = SandboxEnv::start_expecting_refusal(options).await;
    let line = failed.filter_config_error("a short route name without a namespace");
    assert!(
        line.contains(&format!(
            "{FILTER_CONFIG_ERROR} sandboxes.{KEY}.routes.payment: `payment` is a short name but no \
             `namespace` is configured (nor Istio node metadata NAMESPACE)"
        )),
        "{line}"
    );
}
