//! Every Envoy configuration shipped in `envoy-config/` passes `envoy --mode validate`
//! (run from the workspace root, so relative Wasm paths resolve; files starting with `_` are
//! skipped), and the shipped fast-path entries are what `scripts/sandboxes render-envoy`
//! generates.

use std::fs;
use std::path::PathBuf;

use integration_tests::envoy::validate;
use integration_tests::sandbox;
use integration_tests::{filter_entry, paths, FilterEntry};
use serde_json::Value;

fn shipped_configs() -> Vec<PathBuf> {
    let dir = paths::workspace_root().join("envoy-config");
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut configs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            path.is_file() && name.ends_with(".yaml") && !name.starts_with('_')
        })
        .collect();
    configs.sort();
    configs
}

#[test]
fn shipped_envoy_configs_validate() {
    let configs = shipped_configs();
    assert!(
        !configs.is_empty(),
        "no *.yaml in {}/envoy-config (expected at least demo.yaml)",
        paths::workspace_root().display()
    );
    for expected in ["demo.yaml", "global-rate-limit.yaml"] {
        assert!(
            configs.iter().any(|c| c.ends_with(expected)),
            "envoy-config/{expected} is not among the validated configs: {configs:?}"
        );
    }
    let root = paths::workspace_root();
    let mut failures = Vec::new();
    for config in &configs {
        let text = fs::read_to_string(config).unwrap_or_default();
        if text.contains("sandbox_router.wasm") {
            // Fail with build instructions rather than Envoy's "Invalid path".
            paths::filter_wasm();
        }
        let outcome = validate(config, &root);
        if !outcome.status.success() {
            let tail: Vec<&str> = outcome.output.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            failures.push(format!(
                "{} ({}):\n{}",
                config.display(),
                outcome.status,
                tail.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid Envoy configs:\n\n{}",
        failures.join("\n\n")
    );
}

/// The sandbox-router entry of a shipped file, with the Wasm `configuration` text parsed (a
/// file writes it pretty-printed, the generator compactly: the same JSON either way).
fn comparable(mut entry: Value) -> Value {
    let action = &mut entry["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]
        ["on_match"]["action"]["typed_config"];
    let configuration = &mut action["typed_config"]["typed_config"]["config"]["configuration"];
    if let Some(text) = configuration["value"].as_str() {
        let parsed: Value = serde_json::from_str(text).expect("the configuration is JSON");
        configuration["value"] = parsed;
    }
    entry
}

/// The sandbox-router entry of an Envoy bootstrap (YAML text).
fn shipped_entry(file: &str, yaml: &str) -> Value {
    let bootstrap: Value =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    filter_entry::http_filters(&bootstrap)
        .into_iter()
        .map(|(_, filter)| filter)
        .find(|filter| filter["name"] == "sandbox-router")
        .cloned()
        .unwrap_or_else(|| panic!("{file} has no sandbox-router entry"))
}

fn read(file: &str) -> String {
    let path = paths::workspace_root().join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn assert_generated(file: &str, shipped: Value, generated: Value) {
    assert_eq!(
        comparable(shipped),
        comparable(generated.clone()),
        "{file}: the sandbox-router entry is not what scripts/sandboxes render-envoy generates \
         from its configuration; regenerate it (as JSON):\n{}",
        serde_json::to_string_pretty(&generated).unwrap_or_default()
    );
}

/// Every shipped config runs the fast path, and its entry is exactly what the generator makes
/// of the configuration it carries (`envoy-config/ecds.yaml`: of the table that
/// `scripts/sandboxes` publishes; the mesh template: of `envoy-config/mesh-filter.json`), so the
/// matcher cannot drift from the carriers the filter reads.
#[test]
fn shipped_fast_path_entries_are_what_the_generator_makes() {
    for file in [
        "envoy-config/demo.yaml",
        "envoy-config/ingress-gateway.yaml",
        "envoy-config/observability.yaml",
    ] {
        let shipped = sandbox::shipped_filter(file);
        assert_eq!(shipped.entry, FilterEntry::FastPath, "{file}");
        let entry = shipped_entry(file, &read(file));
        let wasm = filter_entry::wasm_config(&entry).expect("an inline Wasm configuration");
        let filename = wasm["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .expect("a local module");
        let generated = filter_entry::generate(
            &shipped.filter_config,
            &["--wasm", filename],
            &[
                "render-envoy",
                "--failure-policy",
                shipped.failure_policy.as_str(),
            ],
        );
        assert_generated(file, entry, generated);
    }

    let file = "envoy-config/ecds.yaml";
    let table: Value = serde_json::from_str(&read("envoy-config/sandboxes.json")).unwrap();
    let generated =
        filter_entry::generate(&table, &[], &["render-envoy", "--ecds", "sandbox-router"]);
    assert_generated(file, shipped_entry(file, &read(file)), generated);

    // The template as scripts/demo renders it: the module path and the configuration filled in,
    // the lines that only hold a list of listeners' parts left empty.
    let file = "envoy-config/_mesh-sidecar.template.yaml";
    let mesh_filter = read("envoy-config/mesh-filter.json");
    let table: Value = serde_json::from_str(&mesh_filter).unwrap();
    let wasm = "/opt/sandbox-router/sandbox_router.wasm";
    let rendered: String = read(file)
        .lines()
        .filter(|line| !line.trim_start().starts_with("@@"))
        .map(|line| {
            line.replace("@@WASM@@", wasm)
                .replace(
                    "@@FILTER_CONFIG@@",
                    &Value::String(table.to_string()).to_string(),
                )
                .replace("@@SIDECAR@@", "sidecar")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let generated = filter_entry::generate(&table, &["--wasm", wasm], &["render-envoy"]);
    assert_generated(file, shipped_entry(file, &rendered), generated);
}
