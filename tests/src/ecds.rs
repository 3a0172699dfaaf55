//! The sandbox-router configuration delivered by ECDS from a watched file, as
//! `envoy-config/ecds.yaml` and `scripts/sandboxes` do: the file holds a discovery response with
//! the Wasm filter, and replacing it (write aside, rename) updates the running Envoy. Start the
//! topology with [`crate::SandboxOptions::ecds_file`].

use std::path::Path;

use serde_json::{json, Value};

use crate::sandbox::{wasm_filter, FailurePolicy};

/// The type Envoy's ECDS subscription accepts for the filter.
pub const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The HTTP filter entry that takes its configuration from the ECDS file `path`.
pub fn discovered_filter(path: &Path) -> Value {
    json!({
        "name": "sandbox-router",
        "config_discovery": {
            "config_source": {
                "path_config_source": { "path": path.to_string_lossy() },
                "resource_api_version": "V3"
            },
            "type_urls": [WASM_TYPE_URL]
        }
    })
}

/// An ECDS discovery response holding the sandbox-router Wasm filter with `configuration`.
pub fn resource(configuration: &str) -> Value {
    let mut filter = wasm_filter(configuration, FailurePolicy::FailOpen);
    let typed_config = filter["typed_config"].take();
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "sandbox-router",
            "typed_config": typed_config
        }]
    })
}

/// Replaces the ECDS file the way `scripts/sandboxes` does: write aside, then rename over it.
pub fn publish(path: &Path, configuration: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, resource(configuration).to_string()).expect("write ECDS file");
    std::fs::rename(&staging, path).expect("rename ECDS file");
}
