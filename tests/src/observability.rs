//! The shipped `envoy-config/observability.yaml`, read as tests use it: its bootstrap
//! `stats_tags` and its audit access log (format and CEL filter), so the tests exercise exactly
//! what users deploy and cannot drift from it.

use std::sync::OnceLock;

use serde_json::Value;

use crate::audit::FILTER_STATE_KEY;
use crate::paths;

/// Every decision the filter counts: each has a total from the moment a configuration is applied.
pub const ALL_DECISIONS: [&str; 13] = [
    "routed",
    "baseline",
    "rate_limited",
    "in_flight_rejected",
    "untrusted",
    "unknown_key",
    "expired",
    "write_denied",
    "invalid_key",
    "shadow_rejected",
    "budget_unavailable",
    "circuit_open",
    "routed_to_passthrough",
];

/// The shipped observability setup, relative to the workspace root.
pub const OBSERVABILITY_YAML: &str = "envoy-config/observability.yaml";

fn shipped() -> &'static Value {
    static SHIPPED: OnceLock<Value> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let path = paths::workspace_root().join(OBSERVABILITY_YAML);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
    })
}

/// Its `stats_config.stats_tags`, verbatim.
pub fn stats_tags() -> Vec<Value> {
    shipped()["stats_config"]["stats_tags"]
        .as_array()
        .cloned()
        .filter(|tags| !tags.is_empty())
        .unwrap_or_else(|| panic!("{OBSERVABILITY_YAML} has no stats_config.stats_tags"))
}

/// The regex of its tag extractor `tag_name`.
pub fn stats_tag_regex(tag_name: &str) -> String {
    stats_tags()
        .iter()
        .find(|tag| tag["tag_name"] == tag_name)
        .and_then(|tag| tag["regex"].as_str())
        .unwrap_or_else(|| panic!("{OBSERVABILITY_YAML} has no stats tag {tag_name:?}"))
        .to_owned()
}

/// Its audit access log (the HCM `access_log` entry that logs the filter state), verbatim but
/// for the file it writes: `path`.
pub fn audit_access_log(path: &std::path::Path) -> Value {
    let mut entry = audit_access_log_as_shipped();
    entry["typed_config"]["path"] = Value::String(path.to_string_lossy().into_owned());
    entry
}

/// Its audit log line format (`log_format.text_format_source.inline_string`).
pub fn audit_log_format() -> String {
    audit_access_log_as_shipped()["typed_config"]["log_format"]["text_format_source"]
        ["inline_string"]
        .as_str()
        .unwrap_or_else(|| panic!("{OBSERVABILITY_YAML}: the audit log has no inline format"))
        .to_owned()
}

fn audit_access_log_as_shipped() -> Value {
    let listeners = shipped()["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listeners
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["filters"].as_array().cloned().unwrap_or_default())
        .flat_map(|f| f["typed_config"]["access_log"].as_array().cloned().unwrap_or_default())
        .find(|log| {
            log["typed_config"]["log_format"]["text_format_source"]["inline_string"]
                .as_str()
                .is_some_and(|format| format.contains(FILTER_STATE_KEY))
        })
        .unwrap_or_else(|| {
            panic!("{OBSERVABILITY_YAML} has no access log writing the {FILTER_STATE_KEY} filter state")
        })
}
