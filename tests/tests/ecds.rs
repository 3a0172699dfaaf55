//! Live sandboxes: the filter configuration arrives by ECDS from a file, and replacing that file
//! changes routing in the running Envoy: on every worker, whole or not at all, with no failed
//! request, keeping the rate-limit state of sandboxes that remain. Envoy runs two workers, and
//! the checks that concern every worker use connections on each of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use integration_tests::audit;
use integration_tests::ecds::publish;
use integration_tests::envoy::FILTER_CONFIG_ERROR;
use integration_tests::sandbox::{
    SandboxOptions, DECISION_HEADER, LISTENER, PAYMENT_BASELINE, PAYMENT_SANDBOX,
    PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::workers::{self, WorkerConnection};
use integration_tests::{clock, paths, Protocol, SandboxEnv};
use serde_json::{json, Value};
use tokio::task::JoinSet;

const WORKERS: u32 = 2;
/// How long an update may take to reach every worker (a small table configures in
/// milliseconds: see scripts/bench-ecds; this leaves room for a busy machine).
const SWITCH_BOUND: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Envoy writes its log file every 100 ms (`--file-flush-interval-msec`).
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);

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

/// The sandbox topology with two workers, its filter taken from an ECDS file.
struct Live {
    env: SandboxEnv,
    ecds_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Live {
    async fn start(initial: &Value) -> Live {
        let dir = tempfile::tempdir().expect("temp dir");
        let ecds_file = dir.path().join("sandbox-router.json");
        publish(&ecds_file, &initial.to_string());
        let env = SandboxEnv::start_with(SandboxOptions {
            ecds_file: Some(ecds_file.clone()),
            concurrency: WORKERS,
            audit_log: true,
            ..SandboxOptions::default()
        })
        .await;
        Live {
            env,
            ecds_file,
            _dir: dir,
        }
    }

    fn publish(&self, config: &Value) {
        publish(&self.ecds_file, &config.to_string());
    }

    async fn connections_on_every_worker(&self, per_worker: usize) -> Vec<WorkerConnection> {
        workers::connections_on_every_worker(
            &self.env.envoy,
            LISTENER,
            WORKERS,
            per_worker,
            Protocol::Http1,
        )
        .await
    }

    /// Polls (every 100 ms, as Envoy writes it) until Envoy's log has a line containing
    /// `needle`; returns that line.
    async fn wait_for_log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.env.envoy.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {DEADLINE:?}\n{}",
                self.env.envoy.log_tail(40)
            );
            tokio::time::sleep(LOG_POLL_INTERVAL).await;
        }
    }
}

async fn answered_by(connection: &mut WorkerConnection, key: &str) -> (u16, Option<String>) {
    let response = connection.send_payment_keyed(key).await;
    (response.status.as_u16(), response.upstream())
}

/// Polls on every connection until `key` is served by `upstream` there; returns how many
/// requests that took.
async fn wait_until_every_worker_serves(
    connections: &mut [WorkerConnection],
    key: &str,
    upstream: &str,
) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0;
    for connection in connections {
        loop {
            sent += 1;
            if answered_by(connection, key).await.1.as_deref() == Some(upstream) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker {}: {key} not served by {upstream} within {DEADLINE:?}",
                connection.worker
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    sent
}

/// Polls `condition` until it holds.
async fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One answer of the load on one connection.
struct Answer {
    sent_at: Instant,
    key: &'static str,
    status: u16,
    upstream: Option<String>,
}

#[tokio::test]
async fn an_update_under_load_switches_every_worker_with_no_failed_request() {
    let live = Live::start(&filter_config(&[("feature-x", json!({}))])).await;
    let mut connections = live.connections_on_every_worker(2).await;
    for connection in &mut connections {
        assert_eq!(
            answered_by(connection, "feature-y").await,
            (200, Some(PAYMENT_BASELINE.to_owned()))
        );
    }

    // Every connection asks for feature-x and feature-y in turn until told to stop, and says
    // when it first saw feature-y served by the sandbox.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let switched = Arc::new(AtomicUsize::new(0));
    let mut load = JoinSet::new();
    for mut connection in connections {
        let (stop, sent, switched) = (stop.clone(), sent.clone(), switched.clone());
        load.spawn(async move {
            let mut answers = Vec::new();
            let mut seen_switch = false;
            while !stop.load(Ordering::Relaxed) {
                for key in ["feature-x", "feature-y"] {
                    let sent_at = Instant::now();
                    let response = connection.send_payment_keyed(key).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let upstream = response.upstream();
                    if key == "feature-y"
                        && !seen_switch
                        && upstream.as_deref() == Some(PAYMENT_SANDBOX)
                    {
                        seen_switch = true;
                        switched.fetch_add(1, Ordering::Relaxed);
                    }
                    answers.push(Answer {
                        sent_at,
                        key,
                        status: response.status.as_u16(),
                        upstream,
                    });
                }
            }
            (connection.worker, answers)
        });
    }
    let connection_count = load.len();
    wait_until(
        || sent.load(Ordering::Relaxed) >= 200,
        "the load is running",
    )
    .await;
    let published_at = Instant::now();
    live.publish(&filter_config(&[
        ("feature-x", json!({})),
        ("feature-y", json!({})),
    ]));
    wait_until(
        || switched.load(Ordering::Relaxed) == connection_count,
        "every connection sees feature-y routed",
    )
    .await;
    let after_switch = sent.load(Ordering::Relaxed);
    wait_until(
        || sent.load(Ordering::Relaxed) >= after_switch + 200,
        "more load after the switch",
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut slowest = Duration::ZERO;
    while let Some(done) = load.join_next().await {
        let (worker, answers) = done.expect("load task");
        total += answers.len();
        let failed: Vec<(&str, u16)> = answers
            .iter()
            .filter(|a| a.status != 200)
            .map(|a| (a.key, a.status))
            .collect();
        assert!(
            failed.is_empty(),
            "worker {worker}: failed requests {failed:?}"
        );
        assert!(
            answers
                .iter()
                .filter(|a| a.key == "feature-x")
                .all(|a| a.upstream.as_deref() == Some(PAYMENT_SANDBOX)),
            "worker {worker}: feature-x left its sandbox during the update"
        );
        // feature-y: the baseline, then the sandbox for good.
        let y: Vec<&Answer> = answers.iter().filter(|a| a.key == "feature-y").collect();
        let first_routed = y
            .iter()
            .position(|a| a.upstream.as_deref() == Some(PAYMENT_SANDBOX))
            .unwrap_or_else(|| panic!("worker {worker}: feature-y never routed"));
        assert!(
            y[..first_routed]
                .iter()
                .all(|a| a.upstream.as_deref() == Some(PAYMENT_BASELINE)),
            "worker {worker}: feature-y went somewhere other than the baseline before the update"
        );
        let back: Vec<&Option<String>> = y[first_routed..]
            .iter()
            .filter(|a| a.upstream.as_deref() != Some(PAYMENT_SANDBOX))
            .map(|a| &a.upstream)
            .collect();
        assert!(
            back.is_empty(),
            "worker {worker}: feature-y went back to {back:?} after the switch"
        );
        let switch = y[first_routed]
            .sent_at
            .saturating_duration_since(published_at);
        println!("worker {worker}: switched {switch:?} after publishing");
        slowest = slowest.max(switch);
    }
    println!("ECDS switch on every worker within {slowest:?}; {total} requests, 0 failed");
    assert!(
        slowest <= SWITCH_BOUND,
        "a worker switched {slowest:?} after publishing, more than {SWITCH_BOUND:?}"
    );
}

#[tokio::test]
async fn an_invalid_update_is_rejected_whole_and_the_previous_table_keeps_serving() {
    let live = Live::start(&filter_config(&[("feature-x", json!({}))])).await;
    let mut connections = live.connections_on_every_worker(1).await;

    // feature-y is valid, feature-z is not: nothing of this update may apply.
    let mut broken = filter_config(&[("feature-y", json!({})), ("feature-z", json!({}))]);
    broken["sandboxes"]["feature-z"]["routes"]["payment"]["cluster"] = json!("both-modes");
    live.publish(&broken);

    let line = live.wait_for_log_line(FILTER_CONFIG_ERROR).await;
    assert!(
        line.contains("sandboxes.feature-z.routes.payment"),
        "{line}"
    );
    for connection in &mut connections {
        for _ in 0..10 {
            assert_eq!(
                answered_by(connection, "feature-x").await,
                (200, Some(PAYMENT_SANDBOX.to_owned())),
                "worker {}",
                connection.worker
            );
            assert_eq!(
                answered_by(connection, "feature-y").await,
                (200, Some(PAYMENT_BASELINE.to_owned())),
                "worker {}",
                connection.worker
            );
        }
    }

    // A later valid update still applies, on every worker.
    live.publish(&filter_config(&[("feature-y", json!({}))]));
    wait_until_every_worker_serves(&mut connections, "feature-y", PAYMENT_SANDBOX).await;
    wait_until_every_worker_serves(&mut connections, "feature-x", PAYMENT_BASELINE).await;
}

#[tokio::test]
async fn rate_limit_state_of_remaining_sandboxes_survives_an_update() {
    // One token per ~30 minutes: a bucket that was reset would answer again at once.
    let limited = json!({ "rate_limit": { "requests_per_second": 0.0005, "burst": 3 } });
    let live = Live::start(&filter_config(&[("feature-x", limited.clone())])).await;
    let mut connections = live.connections_on_every_worker(1).await;
    let mut statuses = Vec::new();
    let count = connections.len();
    for i in 0..4 {
        let connection = &mut connections[i % count];
        statuses.push(answered_by(connection, "feature-x").await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one budget for both workers"
    );

    live.publish(&filter_config(&[
        ("feature-x", limited),
        ("feature-y", json!({})),
    ]));
    wait_until_every_worker_serves(&mut connections, "feature-y", PAYMENT_SANDBOX).await;
    for connection in &mut connections {
        assert_eq!(
            answered_by(connection, "feature-x").await.0,
            429,
            "worker {}: the bucket must not refill on update",
            connection.worker
        );
    }
}

/// A sandbox whose `expires_at` passes while Envoy runs: routed before, treated as expired
/// after (decision `expired`, the baseline answers), the switch at `expires_at` on Envoy's
/// clock. The table arrives by ECDS once Envoy is up, so the expiry is a few seconds ahead
/// whatever Envoy's start-up took.
#[tokio::test]
async fn a_sandbox_expiring_while_envoy_runs_is_routed_until_its_expiry_only() {
    let live = Live::start(&filter_config(&[])).await;
    let mut connections = live.connections_on_every_worker(1).await;
    // Whole seconds (RFC 3339 as users write it), at least three seconds ahead.
    let expires_at = clock::rfc3339(SystemTime::now() + Duration::from_secs(4));
    let expiry = clock::parse_rfc3339(&expires_at).expect("our own format");
    live.publish(&filter_config(&[(
        "feature-t",
        json!({ "expires_at": expires_at }),
    )]));
    let mut answers =
        wait_until_every_worker_serves(&mut connections, "feature-t", PAYMENT_SANDBOX).await;

    // Ask on every worker until each has answered `expired`.
    let deadline = Instant::now() + DEADLINE;
    let mut expired_on = vec![false; connections.len()];
    while expired_on.iter().any(|done| !done) {
        for (i, connection) in connections.iter_mut().enumerate() {
            let response = connection.send_payment_keyed("feature-t").await;
            answers += 1;
            let decision = response.header(DECISION_HEADER).unwrap_or_default();
            if decision.contains("reason=expired") {
                assert_eq!(
                    response.upstream().as_deref(),
                    Some(PAYMENT_BASELINE),
                    "{response:?}"
                );
                expired_on[i] = true;
            } else {
                assert!(
                    !expired_on[i],
                    "worker {}: routed again after expiring: {response:?}",
                    connection.worker
                );
                assert!(decision.starts_with("routed;"), "{response:?}");
                assert_eq!(response.upstream().as_deref(), Some(PAYMENT_SANDBOX));
            }
        }
        assert!(
            Instant::now() < deadline,
            "feature-t did not expire on every worker: {expired_on:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // On Envoy's clock: every routed request started before the expiry, every expired one
    // after it (start times are to the millisecond and taken just before the filter runs).
    let lines = live
        .env
        .audit_log()
        .wait_for_records(answers, DEADLINE)
        .await;
    let tolerance = Duration::from_millis(50);
    let mut decisions = Vec::new();
    // Before the table applied, feature-t was an unknown key.
    let applied = lines
        .iter()
        .skip_while(|l| l["sandbox_router"]["decision"] == "unknown_key");
    for line in applied {
        let started = audit::start_time(line);
        let decision = line["sandbox_router"]["decision"]
            .as_str()
            .unwrap_or_default();
        match decision {
            "routed" => assert!(started < expiry, "routed at {}: {line}", line["time"]),
            "expired" => assert!(
                started + tolerance >= expiry,
                "expired before {expires_at}: {line}"
            ),
            other => panic!("unexpected decision {other}: {line}"),
        }
        if decisions.last() != Some(&decision) {
            decisions.push(decision);
        }
    }
    assert_eq!(
        decisions,
        ["routed", "expired"],
        "routed, then expired for good"
    );
}

#[test]
fn the_shipped_ecds_setup_validates() {
    let root = paths::workspace_root();
    let validation =
        integration_tests::envoy::validate(&root.join("envoy-config/ecds.yaml"), &root);
    assert!(validation.status.success(), "{}", validation.output);
}
