//! Every Envoy configuration shipped in `envoy-config/` passes `envoy --mode validate`
//! (run from the workspace root, so relative Wasm paths resolve). Files starting with `_`
//! are skipped.

use std::fs;
use std::path::PathBuf;

use integration_tests::envoy::validate;
use integration_tests::paths;

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
