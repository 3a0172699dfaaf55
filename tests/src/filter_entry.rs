//! The sandbox-router's HTTP filter entry, as `scripts/sandboxes render-envoy` generates it:
//! the tests build it by calling the shipped generator, so they cover the generator too.
//!
//! Two forms: the **plain** Wasm filter, created for every request; and the **fast path**,
//! Envoy's composite filter behind a matcher derived from the filter's configuration, which
//! creates the Wasm filter only for requests with a header that may carry a key.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::paths;
use crate::sandbox::FailurePolicy;

/// Which form of the filter entry Envoy runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterEntry {
    /// The bare Wasm filter: every request enters the VM.
    #[default]
    Plain,
    /// The composite filter behind the carrier matcher: keyless requests never enter the VM.
    FastPath,
}

impl FilterEntry {
    pub const ALL: [FilterEntry; 2] = [FilterEntry::Plain, FilterEntry::FastPath];
}

const COMPOSITE_WRAPPER: &str =
    "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher";

/// The entry for `config` in the given form, loading the module at `wasm`.
pub fn render(
    config: &Value,
    wasm: &Path,
    failure_policy: FailurePolicy,
    entry: FilterEntry,
) -> Value {
    let wasm = wasm.to_string_lossy();
    let mut args = vec!["render-envoy", "--failure-policy", failure_policy.as_str()];
    if entry == FilterEntry::Plain {
        args.push("--plain");
    }
    generate(config, &["--wasm", &wasm], &args)
}

/// Runs `scripts/sandboxes` with `args` from the workspace root; panics unless it succeeds.
/// Returns what it wrote to stderr (its warnings).
pub fn run_sandboxes(args: &[&str]) -> String {
    let script = paths::workspace_root().join("scripts/sandboxes");
    let output = Command::new("python3")
        .current_dir(paths::workspace_root())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "scripts/sandboxes {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `scripts/sandboxes [global_args] --table <config> <command_args>` from the workspace
/// root and parses the JSON it prints.
pub fn generate(config: &Value, global_args: &[&str], command_args: &[&str]) -> Value {
    let table = tempfile::NamedTempFile::new().expect("create a temporary table file");
    std::fs::write(table.path(), config.to_string()).expect("write the temporary table");
    let script = paths::workspace_root().join("scripts/sandboxes");
    let output = Command::new("python3")
        .current_dir(paths::workspace_root())
        .arg(&script)
        .args(global_args)
        .arg("--table")
        .arg(table.path())
        .args(command_args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "scripts/sandboxes {global_args:?} {command_args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "scripts/sandboxes printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every HTTP filter of every HTTP connection manager of a bootstrap's static listeners, with
/// the HCM's `typed_config`.
pub fn http_filters(bootstrap: &Value) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    let listeners = bootstrap["static_resources"]["listeners"].as_array();
    for listener in listeners.into_iter().flatten() {
        for chain in listener["filter_chains"].as_array().into_iter().flatten() {
            for filter in chain["filters"].as_array().into_iter().flatten() {
                let hcm = &filter["typed_config"];
                for http_filter in hcm["http_filters"].as_array().into_iter().flatten() {
                    out.push((hcm, http_filter));
                }
            }
        }
    }
    out
}

/// The form of an HTTP filter entry, if it is a sandbox-router entry.
pub fn form_of(entry: &Value) -> Option<FilterEntry> {
    let config = wasm_config(entry)?;
    if config["root_id"] != "sandbox-router" {
        return None;
    }
    Some(if entry["typed_config"]["@type"] == COMPOSITE_WRAPPER {
        FilterEntry::FastPath
    } else {
        FilterEntry::Plain
    })
}

/// The Wasm filter's `config` (root id, VM, configuration, failure policy) inside an HTTP
/// filter entry of either form; `None` for any other filter, and for a fast path whose Wasm
/// configuration comes from ECDS.
pub fn wasm_config(entry: &Value) -> Option<&Value> {
    let typed_config = &entry["typed_config"];
    let wasm = if typed_config["@type"] == COMPOSITE_WRAPPER {
        &execute_filter_action(entry)?["typed_config"]["typed_config"]
    } else {
        typed_config
    };
    let config = &wasm["config"];
    config.is_object().then_some(config)
}

/// The composite's `ExecuteFilterAction` in a fast-path entry.
pub fn execute_filter_action(entry: &Value) -> Option<&Value> {
    let action = &entry["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]["on_match"]
        ["action"]["typed_config"];
    action.is_object().then_some(action)
}

/// The header predicates of a fast-path entry's matcher, as (header name, regex).
pub fn matcher_predicates(entry: &Value) -> Vec<(String, String)> {
    let predicate =
        &entry["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]["predicate"];
    let singles: Vec<&Value> = match predicate["or_matcher"]["predicate"].as_array() {
        Some(list) => list.iter().collect(),
        None => vec![predicate],
    };
    singles
        .into_iter()
        .map(|p| {
            let single = &p["single_predicate"];
            (
                single["input"]["typed_config"]["header_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                single["value_match"]["safe_regex"]["regex"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}
