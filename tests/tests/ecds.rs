//! Live sandboxes: the filter configuration arrives by ECDS from a file, and replacing that file
//! changes routing in the running Envoy: whole or not at all, with no failed request, keeping the
//! rate-limit state of sandboxes that remain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::envoy::EnvoyBuilder;
use integration_tests::sandbox::{
    self, SandboxOptions, LISTENER, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::upstream::Upstream;
use integration_tests::{paths, TestRequest};
use serde_json::{json, Value};

const UPSTREAMS: [&str; 6] = [
    "payment-baseline",
    "payment-feature-x",
    "inventory-baseline",
    "inventory-feature-x",
    "catalog-baseline",
    "default",
];

/// The filter configuration with the given sandboxes, all routing `payment` to the sandbox
/// upstream.
fn filter_config(sandboxes: &[(&str, Value)]) -> Value {
    let mut table = serde_json::Map::new();
    for (key, extra) in sandboxes {
        let mut sandbox =
            json!({ "routes": { "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY } } });
        if let (Some(object), Some(extra)) = (sandbox.as_object_mut(), extra.as_object()) {
            object.extend(extra.clone());
        }
        table.insert((*key).to_owned(), sandbox);
    }
    json!({ "namespace": "shop", "debug": true, "sandboxes": table })
}

/// An ECDS discovery response holding the sandbox-router Wasm filter with `configuration`.
fn ecds_resource(configuration: &str) -> Value {
    let mut filter = sandbox::wasm_filter(configuration, sandbox::FailurePolicy::FailOpen);
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
fn publish(path: &Path, configuration: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, ecds_resource(configuration).to_string()).expect("write ECDS file");
    std::fs::rename(&staging, path).expect("rename ECDS file");
}

struct LiveEnvoy {
    envoy: integration_tests::envoy::Envoy,
    ecds_file: PathBuf,
    _dir: tempfile::TempDir,
    _upstreams: Vec<Upstream>,
}

async fn start(initial: &Value) -> LiveEnvoy {
    let dir = tempfile::tempdir().expect("temp dir");
    let ecds_file = dir.path().join("sandbox-router.json");
    publish(&ecds_file, &initial.to_string());
    let mut upstreams = Vec::new();
    for name in UPSTREAMS {
        upstreams.push(Upstream::start(name).await);
    }
    let mut bootstrap = sandbox::sandbox_bootstrap(&upstreams, &SandboxOptions::without_filter());
    let listener = bootstrap
        .listeners
        .iter_mut()
        .find(|l| l.name == LISTENER)
        .expect("the sandbox listener");
    listener.http_filters.push(json!({
        "name": "sandbox-router",
        "config_discovery": {
            "config_source": {
                "path_config_source": { "path": ecds_file.to_string_lossy() },
                "resource_api_version": "V3"
            },
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
        }
    }));
    let envoy = EnvoyBuilder::new(bootstrap).concurrency(2).start().await;
    LiveEnvoy {
        envoy,
        ecds_file,
        _dir: dir,
        _upstreams: upstreams,
    }
}

fn payment(key: &str) -> TestRequest {
    TestRequest::get("payment", "/").header("baggage", &format!("sandbox={key}"))
}

async fn answered_by(env: &LiveEnvoy, key: &str) -> (u16, Option<String>) {
    let response = payment(key).send(env.envoy.listener(LISTENER)).await;
    (response.status.as_u16(), response.upstream())
}

async fn statuses(env: &LiveEnvoy, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(answered_by(env, key).await.0);
    }
    out
}

/// Polls until `key` is served by `upstream`, returning how long that took.
async fn wait_until_served(
    env: &LiveEnvoy,
    key: &str,
    upstream: &str,
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if answered_by(env, key).await.1.as_deref() == Some(upstream) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{key} not served by {upstream} within {deadline:?}\n{}",
            env.envoy.log_tail(40)
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_update_under_load_switches_within_two_seconds_with_no_failed_request() {
    let env = start(&filter_config(&[("feature-x", json!({}))])).await;
    assert_eq!(
        answered_by(&env, "feature-y").await.1.as_deref(),
        Some(PAYMENT_BASELINE)
    );

    let addr = env.envoy.listener(LISTENER);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let key = if worker % 2 == 0 {
                "feature-x"
            } else {
                "feature-y"
            };
            while !stop.load(Ordering::Relaxed) {
                let response = payment(key)
                    .timeout(Duration::from_secs(5))
                    .send(addr)
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if response.status.as_u16() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    while sent.load(Ordering::Relaxed) < 200 {
        tokio::task::yield_now().await;
    }
    publish(
        &env.ecds_file,
        &filter_config(&[("feature-x", json!({})), ("feature-y", json!({}))]).to_string(),
    );
    let switch =
        wait_until_served(&env, "feature-y", PAYMENT_SANDBOX, Duration::from_secs(10)).await;
    let after = sent.load(Ordering::Relaxed);
    while sent.load(Ordering::Relaxed) < after + 200 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("ECDS switch after {switch:?}; {sent} requests across the update, {failed} failed");
    assert_eq!(failed, 0, "requests failed across the update");
    assert!(
        switch <= Duration::from_secs(2),
        "switched after {switch:?}"
    );
}

#[tokio::test]
async fn an_invalid_update_is_rejected_whole_and_the_previous_table_keeps_serving() {
    let env = start(&filter_config(&[("feature-x", json!({}))])).await;
    assert_eq!(
        answered_by(&env, "feature-x").await.1.as_deref(),
        Some(PAYMENT_SANDBOX)
    );

    // feature-y is valid, feature-z is not: nothing of this update may apply.
    let mut broken = filter_config(&[("feature-y", json!({})), ("feature-z", json!({}))]);
    broken["sandboxes"]["feature-z"]["routes"]["payment"]["cluster"] = json!("both-modes");
    publish(&env.ecds_file, &broken.to_string());

    let deadline = Instant::now() + Duration::from_secs(10);
    while !env
        .envoy
        .log()
        .contains("sandbox-router: invalid configuration:")
    {
        assert!(
            Instant::now() < deadline,
            "no rejection logged\n{}",
            env.envoy.log_tail(40)
        );
        tokio::task::yield_now().await;
    }
    let log = env.envoy.log();
    let line = log
        .lines()
        .find(|l| l.contains("sandbox-router: invalid configuration:"))
        .unwrap_or_default();
    assert!(
        line.contains("sandboxes.feature-z.routes.payment"),
        "{line}"
    );
    for _ in 0..20 {
        assert_eq!(
            answered_by(&env, "feature-x").await,
            (200, Some(PAYMENT_SANDBOX.to_owned()))
        );
        assert_eq!(
            answered_by(&env, "feature-y").await,
            (200, Some(PAYMENT_BASELINE.to_owned()))
        );
    }

    // A later valid update still applies.
    publish(
        &env.ecds_file,
        &filter_config(&[("feature-y", json!({}))]).to_string(),
    );
    wait_until_served(&env, "feature-y", PAYMENT_SANDBOX, Duration::from_secs(10)).await;
    wait_until_served(&env, "feature-x", PAYMENT_BASELINE, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rate_limit_state_of_remaining_sandboxes_survives_an_update() {
    // One token per ~30 minutes: a bucket that was reset would answer again at once.
    let limited = json!({ "rate_limit": { "requests_per_second": 0.0005, "burst": 3 } });
    let env = start(&filter_config(&[("feature-x", limited.clone())])).await;
    assert_eq!(statuses(&env, "feature-x", 4).await, [200, 200, 200, 429]);

    publish(
        &env.ecds_file,
        &filter_config(&[("feature-x", limited), ("feature-y", json!({}))]).to_string(),
    );
    wait_until_served(&env, "feature-y", PAYMENT_SANDBOX, Duration::from_secs(10)).await;
    assert_eq!(
        statuses(&env, "feature-x", 3).await,
        [429, 429, 429],
        "the bucket must not refill on update"
    );
}

#[test]
fn the_shipped_ecds_setup_validates() {
    let root = paths::workspace_root();
    let validation =
        integration_tests::envoy::validate(&root.join("envoy-config/ecds.yaml"), &root);
    assert!(validation.status.success(), "{}", validation.output);
}
