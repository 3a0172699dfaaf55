//! `scripts/sandboxes` end to end (README "Live sandboxes"), against a running Envoy with two
//! workers whose filter comes by ECDS from the file the script publishes, as
//! `envoy-config/ecds.yaml` is set up. Every check runs on a connection to each worker. The
//! script works on temp copies (`--table`, `--ecds`), never on the repository's files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration_tests::expect::{self, UNKNOWN_KEY};
use integration_tests::sandbox::{
    SandboxOptions, LISTENER, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::workers::{self, WorkerConnection};
use integration_tests::{paths, Protocol, SandboxEnv};
use serde_json::Value;
use tempfile::TempDir;

const WORKERS: u32 = 2;
const DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The script on temp copies of the table (`envoy-config/sandboxes.json`) and the ECDS file.
struct Script {
    dir: TempDir,
}

impl Script {
    fn new() -> Script {
        let dir = tempfile::Builder::new()
            .prefix("sandboxes-script-")
            .tempdir()
            .expect("temp dir");
        let shipped = paths::workspace_root().join("envoy-config/sandboxes.json");
        fs::copy(&shipped, dir.path().join("sandboxes.json")).expect("copy the table");
        Script { dir }
    }

    fn table(&self) -> PathBuf {
        self.dir.path().join("sandboxes.json")
    }

    fn ecds(&self) -> PathBuf {
        self.dir.path().join("sandbox-router.yaml")
    }

    fn run(&self, args: &[&str]) -> Output {
        let script = paths::workspace_root().join("scripts/sandboxes");
        let wasm = paths::filter_wasm();
        Command::new("python3")
            .arg(&script)
            .arg("--table")
            .arg(self.table())
            .arg("--ecds")
            .arg(self.ecds())
            .arg("--wasm")
            .arg(&wasm)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
    }

    /// Runs the script and asserts it succeeded.
    fn ok(&self, args: &[&str]) {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "scripts/sandboxes {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn table_json(&self) -> Value {
        read_json(&self.table())
    }
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Polls on every worker until `key` is answered by `upstream`.
async fn every_worker_serves(connections: &mut [WorkerConnection], key: &str, upstream: &str) {
    let deadline = Instant::now() + DEADLINE;
    for connection in connections {
        while connection
            .send_payment_keyed(key)
            .await
            .upstream()
            .as_deref()
            != Some(upstream)
        {
            assert!(
                Instant::now() < deadline,
                "worker {}: {key} not served by {upstream} within {DEADLINE:?}",
                connection.worker
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

async fn start(script: &Script) -> (SandboxEnv, Vec<WorkerConnection>) {
    script.ok(&["publish"]);
    let env = SandboxEnv::start_with(SandboxOptions {
        ecds_file: Some(script.ecds()),
        concurrency: WORKERS,
        ..SandboxOptions::default()
    })
    .await;
    let connections =
        workers::connections_on_every_worker(&env.envoy, LISTENER, WORKERS, 1, Protocol::Http1)
            .await;
    (env, connections)
}

#[tokio::test]
async fn add_reject_and_remove_change_routing_on_every_worker() {
    let script = Script::new();
    let (_env, mut connections) = start(&script).await;
    for connection in &mut connections {
        expect::routed_to(
            &connection.send_payment_keyed("feature-x").await,
            PAYMENT_SANDBOX,
        );
        expect::baseline_at(
            &connection.send_payment_keyed("feature-y").await,
            PAYMENT_BASELINE,
            &[UNKNOWN_KEY],
        );
    }

    // add: both workers route the new sandbox.
    script.ok(&[
        "add",
        "feature-y",
        "--route",
        &format!("payment=authority:{PAYMENT_SANDBOX_AUTHORITY}"),
    ]);
    every_worker_serves(&mut connections, "feature-y", PAYMENT_SANDBOX).await;
    for connection in &mut connections {
        expect::routed_to(
            &connection.send_payment_keyed("feature-y").await,
            PAYMENT_SANDBOX,
        );
        expect::routed_to(
            &connection.send_payment_keyed("feature-x").await,
            PAYMENT_SANDBOX,
        );
    }

    // An invalid add: refused by the script, nothing published, the old table keeps serving.
    let ecds_before = fs::read(script.ecds()).expect("the ECDS file");
    let table_before = fs::read(script.table()).expect("the table");
    let output = script.run(&[
        "add",
        "feature-z",
        "--route",
        &format!("payment=authority:{PAYMENT_SANDBOX_AUTHORITY}"),
        "--expires-at",
        "next tuesday",
    ]);
    assert!(!output.status.success(), "an invalid add succeeded");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "sandboxes: sandboxes.feature-z.expires_at: not an RFC 3339 time"
    );
    assert!(
        fs::read(script.ecds()).expect("the ECDS file") == ecds_before,
        "the ECDS file changed"
    );
    assert!(
        fs::read(script.table()).expect("the table") == table_before,
        "the table changed"
    );
    for connection in &mut connections {
        for _ in 0..5 {
            expect::routed_to(
                &connection.send_payment_keyed("feature-y").await,
                PAYMENT_SANDBOX,
            );
            expect::baseline_at(
                &connection.send_payment_keyed("feature-z").await,
                PAYMENT_BASELINE,
                &[UNKNOWN_KEY],
            );
        }
    }

    // remove: back on the baseline, everywhere.
    script.ok(&["remove", "feature-y"]);
    every_worker_serves(&mut connections, "feature-y", PAYMENT_BASELINE).await;
    script.ok(&["remove", "feature-x"]);
    every_worker_serves(&mut connections, "feature-x", PAYMENT_BASELINE).await;
    for connection in &mut connections {
        for key in ["feature-x", "feature-y"] {
            expect::baseline_at(
                &connection.send_payment_keyed(key).await,
                PAYMENT_BASELINE,
                &[UNKNOWN_KEY],
            );
        }
    }
    assert_eq!(script.table_json()["sandboxes"], serde_json::json!({}));
}

/// Every mapping value named `pluginConfig`, wherever it sits in the YAML document.
fn plugin_configs(document: &Value) -> Vec<Value> {
    match document {
        Value::Object(map) => map
            .iter()
            .flat_map(|(name, value)| {
                let mut found = plugin_configs(value);
                if name == "pluginConfig" {
                    found.push(value.clone());
                }
                found
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(plugin_configs).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn render_istio_writes_the_table_as_plugin_config() {
    let script = Script::new();
    script.ok(&[
        "add",
        "feature-y",
        "--route",
        "payment=authority:payment-feature-y.shop.svc.cluster.local",
        "--rate",
        "5",
        "--burst",
        "10",
    ]);
    let manifests: Vec<PathBuf> = ["istio/wasmplugin.yaml", "istio/trafficextension.yaml"]
        .iter()
        .map(|manifest| {
            let copy = script.dir.path().join(
                Path::new(manifest)
                    .file_name()
                    .expect("a manifest file name"),
            );
            fs::copy(paths::workspace_root().join(manifest), &copy).expect("copy a manifest");
            copy
        })
        .collect();
    let mut args = vec!["render-istio"];
    args.extend(
        manifests
            .iter()
            .map(|m| m.to_str().expect("a UTF-8 temp path")),
    );
    script.ok(&args);

    let table = script.table_json();
    assert!(table["sandboxes"]["feature-y"].is_object(), "{table}");
    for manifest in &manifests {
        let text = fs::read_to_string(manifest).expect("the rendered manifest");
        let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|document| {
                serde::Deserialize::deserialize(document)
                    .unwrap_or_else(|e| panic!("{} is not YAML: {e}", manifest.display()))
            })
            .collect();
        let configs: Vec<Value> = documents.iter().flat_map(plugin_configs).collect();
        assert_eq!(
            configs,
            std::slice::from_ref(&table),
            "{}: its one pluginConfig is the table",
            manifest.display()
        );
    }
}
