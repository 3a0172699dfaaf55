//! `istio/fast-path-envoyfilter.yaml` in the Istio-shaped sidecar of [`crate::istio`]: its
//! HTTP_FILTER patch applied as istiod applies it, and its EXTENSION_CONFIG resource delivered
//! by ECDS the way a sidecar receives it, after istio-agent converted it (the remote module
//! fetched to a local file). A watched file stands in for istiod's ADS stream.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::filter_entry;
use crate::istio;

/// The manifest, in `istio/`.
pub const MANIFEST: &str = "fast-path-envoyfilter.yaml";

/// The prefix of the environment variables istiod adds for istio-agent (stripped by the agent).
const ISTIO_META_PREFIX: &str = "ISTIO_META_";

/// `istio/fast-path-envoyfilter.yaml`'s EnvoyFilter.
pub fn envoy_filter() -> Value {
    istio::load_manifest(MANIFEST, "EnvoyFilter")
}

/// The patches of an EnvoyFilter that apply to `apply_to`.
pub fn patches<'a>(envoy_filter: &'a Value, apply_to: &str) -> Vec<&'a Value> {
    envoy_filter["spec"]["configPatches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["applyTo"] == apply_to)
        .collect()
}

/// The EXTENSION_CONFIG resources of an EnvoyFilter as istio-agent hands them to Envoy: each
/// Wasm module's remote source replaced by the local file `wasm` (where the agent stores what it
/// fetched), and the agent's own environment variables removed.
pub fn agent_converted_extension_configs(envoy_filter: &Value, wasm: &Path) -> Vec<Value> {
    patches(envoy_filter, "EXTENSION_CONFIG")
        .into_iter()
        .map(|patch| {
            assert_eq!(patch["patch"]["operation"], "ADD", "{patch}");
            let mut resource = patch["patch"]["value"].clone();
            let vm = &mut resource["typed_config"]["config"]["vm_config"];
            if vm["code"].get("remote").is_some() {
                vm["code"] = json!({ "local": { "filename": wasm.to_string_lossy() } });
            }
            if let Some(values) = vm["environment_variables"]["key_values"].as_object_mut() {
                values.retain(|key, _| !key.starts_with(ISTIO_META_PREFIX));
            }
            resource["@type"] =
                json!("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig");
            resource
        })
        .collect()
}

/// Writes `resources` as one ECDS discovery response into `dir`; returns the file's path.
pub fn write_ecds_file(dir: &Path, resources: Vec<Value>) -> PathBuf {
    let file = dir.join("ecds.json");
    std::fs::write(&file, json!({ "resources": resources }).to_string())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    file
}

/// Points every composite `dynamic_config` of `filters` that reads from ADS at `file` instead.
pub fn read_ecds_from(filters: &mut [Value], file: &Path) {
    for filter in filters {
        let source = filter
            .pointer_mut(
                "/typed_config/xds_matcher/matcher_list/matchers/0/on_match/action/typed_config\
                 /dynamic_config/config_discovery/config_source",
            )
            .and_then(Value::as_object_mut);
        if let Some(source) = source.filter(|s| s.contains_key("ads")) {
            source.remove("ads");
            source.insert(
                "path_config_source".to_owned(),
                json!({ "path": file.to_string_lossy() }),
            );
        }
    }
}

/// The outbound sidecar's HTTP filters with the fast-path manifest applied, its ECDS resource
/// served from a file in `dir`, the module at `wasm`.
pub fn http_filters(dir: &Path, wasm: &Path) -> Vec<Value> {
    let manifest = envoy_filter();
    let file = write_ecds_file(dir, agent_converted_extension_configs(&manifest, wasm));
    let mut filters = istio::outbound_http_filters(Vec::new());
    istio::apply_envoy_filter(&mut filters, &manifest, wasm);
    read_ecds_from(&mut filters, &file);
    assert!(
        filters
            .iter()
            .any(|f| filter_entry::execute_filter_action(f).is_some()),
        "istio/{MANIFEST} inserted no composite filter"
    );
    filters
}
