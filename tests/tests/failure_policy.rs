//! What traffic sees after the filter's Wasm VM traps, under each Envoy `failure_policy`
//! (`envoy.extensions.wasm.v3.FailurePolicy`: `FAIL_CLOSED`, `FAIL_OPEN`, `FAIL_RELOAD`).
//!
//! The VM is made to trap on purpose by the filter's test-only `fault-injection` build
//! ([`paths::fault_injection_wasm`], built on first use into `target/fault-injection`): a request
//! carrying `x-sandbox-router-fault: trap` executes `unreachable` in `proxy_on_request_headers`.
//! One Envoy worker (`--concurrency 1`), so there is exactly one VM serving requests and every
//! request after the trap meets the failed VM.
//!
//! Observed with Envoy 1.40 (V8), and asserted below:
//!
//! | policy        | trapping request | later requests (keyless and keyed)                              |
//! |---------------|------------------|-----------------------------------------------------------------|
//! | `FAIL_CLOSED` | 503 `wasm_fail_stream` | 503 `wasm_fail_stream`, forever (no upstream is reached)  |
//! | `FAIL_OPEN`   | 503 `wasm_fail_stream` | 200 from the baseline: the filter is skipped (no debug header, keyed requests are not rerouted) |
//! | `FAIL_RELOAD` | 503 `wasm_fail_stream` | 503 until the failed VM is 1 to 1.5 s old (the reload backoff counts from its load), then a new VM serves them: routing recovers |
//!
//! - The trapping request itself gets a 503 under every policy, `FAIL_OPEN` included: Envoy fails
//!   the stream whose callback trapped (response code details `wasm_fail_stream`).
//! - Stats: under `FAIL_CLOSED` and `FAIL_OPEN` **no Wasm stat records the failure**: the failed
//!   VM stays counted in `wasm.envoy.wasm.runtime.v8.active`, `…created` does not move, and the
//!   only traces are the log line `Function: proxy_on_request_headers failed: Uncaught
//!   RuntimeError: unreachable` and (fail-closed) `http.<prefix>.downstream_rq_5xx`. Under
//!   `FAIL_RELOAD`, `wasm.<plugin name>.vm_reload_backoff` counts every request refused during
//!   the backoff, `wasm.<plugin name>.vm_reload_success` counts the recreated VMs, and
//!   `wasm.envoy.wasm.runtime.v8.created` grows by one per reload (`vm_reload_failure` and
//!   `vm_reload` stay 0).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::expect::{self, NO_KEY};
use integration_tests::sandbox::{
    FailurePolicy, LISTENER, PAYMENT_BASELINE, PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{paths, SandboxEnv, SandboxOptions, TestRequest, TestResponse};
use serde_json::json;
use tempfile::TempDir;

/// The header of the fault-injection build that makes the VM trap.
const FAULT_HEADER: &str = "x-sandbox-router-fault";
/// Names each request in the access log.
const TAG_HEADER: &str = "x-failure-policy-tag";
/// What Envoy logs when the filter's callback traps.
const TRAP_LOG_LINE: &str =
    "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable";
/// Envoy's response code details for a stream failed by a Wasm VM failure.
const WASM_FAIL_STREAM: &str = "wasm_fail_stream";

/// The plugin's reload stats (`wasm.<PluginConfig.name>.*`).
const VM_RELOAD: &str = "wasm.sandbox-router.vm_reload";
const VM_RELOAD_BACKOFF: &str = "wasm.sandbox-router.vm_reload_backoff";
const VM_RELOAD_SUCCESS: &str = "wasm.sandbox-router.vm_reload_success";
const VM_RELOAD_FAILURE: &str = "wasm.sandbox-router.vm_reload_failure";
const V8_CREATED: &str = "wasm.envoy.wasm.runtime.v8.created";
const V8_ACTIVE: &str = "wasm.envoy.wasm.runtime.v8.active";

/// How long `FAIL_CLOSED` and `FAIL_OPEN` are watched for a recovery that must not come: longer
/// than `FAIL_RELOAD`'s default backoff (1 s), which does recover in that time.
const NO_RECOVERY_WINDOW: Duration = Duration::from_secs(3);
/// Deadline for `FAIL_RELOAD` to recover at all; how long it takes is asserted on Envoy's clock
/// against the backoff bounds below.
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);
/// Envoy's default reload backoff, counted from when the failed VM was loaded: a jittered lower
/// bound of 1 s (`JitteredLowerBoundBackOffStrategy`: 1 s to 1.5 s, drawn at every check).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_millis(1500);
/// Envoy logs start times and durations to the millisecond.
const CLOCK_SLACK: f64 = 0.002;
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The sandbox topology with the fault-injection filter under `policy`, one worker, and an
/// access log of every request's status and response code details.
struct Trial {
    env: SandboxEnv,
    policy: FailurePolicy,
    _log_dir: TempDir,
    log_path: PathBuf,
    next_tag: u32,
}

impl Trial {
    async fn start(policy: FailurePolicy) -> Trial {
        let log_dir = tempfile::Builder::new()
            .prefix("failure-policy-")
            .tempdir()
            .expect("temp dir for the access log");
        let log_path = log_dir.path().join("access.log");
        let access_log = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": log_path.to_string_lossy(),
                "log_format": { "text_format_source": { "inline_string":
                    format!("%REQ({TAG_HEADER})% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %START_TIME(%s.%3f)% %DURATION%\n") } }
            }
        }]);
        let env = SandboxEnv::start_with(SandboxOptions {
            failure_policy: policy,
            wasm: Some(paths::fault_injection_wasm()),
            concurrency: 1,
            hcm_options: vec![("access_log".to_owned(), access_log)],
            ..SandboxOptions::default()
        })
        .await;
        Trial {
            env,
            policy,
            _log_dir: log_dir,
            log_path,
            next_tag: 0,
        }
    }

    fn tag(&mut self, what: &str) -> String {
        self.next_tag += 1;
        format!("{what}-{}", self.next_tag)
    }

    async fn send(&mut self, what: &str, request: TestRequest) -> (String, TestResponse) {
        let tag = self.tag(what);
        let response = self.env.send(request.header(TAG_HEADER, &tag)).await;
        (tag, response)
    }

    async fn keyless(&mut self) -> (String, TestResponse) {
        self.send("keyless", TestRequest::get("payment", "/keyless"))
            .await
    }

    async fn keyed(&mut self) -> (String, TestResponse) {
        self.send(
            "keyed",
            TestRequest::get("payment", "/keyed").header("baggage", "sandbox=feature-x"),
        )
        .await
    }

    /// A keyed request that makes the VM trap.
    async fn trap(&mut self) -> (String, TestResponse) {
        self.send(
            "trap",
            TestRequest::get("payment", "/trap")
                .header("baggage", "sandbox=feature-x")
                .header(FAULT_HEADER, "trap"),
        )
        .await
    }

    /// The access-log fields of the request tagged `tag` (polls the access log): status,
    /// response code details, and when Envoy started and finished it (seconds since the epoch,
    /// to the ms, on Envoy's clock).
    async fn logged(&self, tag: &str) -> (String, String, f64, f64) {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let found = log.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields[..] {
                    [logged_tag, status, details, started, duration_ms] if logged_tag == tag => {
                        let started: f64 =
                            started.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
                        let duration_ms: f64 = duration_ms
                            .parse()
                            .unwrap_or_else(|e| panic!("{line}: {e}"));
                        Some((
                            status.to_owned(),
                            details.to_owned(),
                            started,
                            started + duration_ms / 1000.0,
                        ))
                    }
                    _ => None,
                }
            });
            if let Some(fields) = found {
                return fields;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: no access-log line for {tag} within {LOG_WAIT:?}:\n{log}",
                self.policy
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The response code details Envoy logged for the request tagged `tag`.
    async fn details(&self, tag: &str) -> String {
        self.logged(tag).await.1
    }

    /// When Envoy started the request tagged `tag`, in seconds since the epoch (Envoy's clock).
    async fn started(&self, tag: &str) -> f64 {
        self.logged(tag).await.2
    }

    /// When Envoy finished the request tagged `tag`, in seconds since the epoch (Envoy's clock).
    async fn finished(&self, tag: &str) -> f64 {
        self.logged(tag).await.3
    }

    async fn stat(&self, name: &str) -> u64 {
        self.env
            .envoy
            .stat(name)
            .await
            .unwrap_or_else(|| panic!("{:?}: Envoy has no stat {name}", self.policy))
    }

    /// How many requests reached any upstream.
    fn upstream_requests(&self) -> usize {
        [PAYMENT_BASELINE, PAYMENT_SANDBOX]
            .iter()
            .map(|name| self.env.upstream(name).request_count())
            .sum()
    }

    /// Lines of Envoy's log that show the trap (the log is flushed every 100 ms: polls).
    async fn wait_for_trap_in_log(&self) -> Vec<String> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let lines: Vec<String> = self
                .env
                .envoy
                .log()
                .lines()
                .filter(|line| line.contains(TRAP_LOG_LINE))
                .map(str::to_owned)
                .collect();
            if !lines.is_empty() {
                for line in &lines {
                    assert!(expect::is_vm_failure(line), "{line}");
                }
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: the trap is not in Envoy's log:\n{}",
                self.policy,
                self.env.envoy.log_tail(30)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Before the trap the fault-injection build routes like the release build.
    async fn assert_routing_works(&mut self) {
        let (_, keyed) = self.keyed().await;
        let echo = expect::routed_to(&keyed, PAYMENT_SANDBOX);
        assert_eq!(echo.authority(), PAYMENT_SANDBOX_AUTHORITY);
        let (_, keyless) = self.keyless().await;
        expect::baseline_at(&keyless, PAYMENT_BASELINE, &[NO_KEY]);
    }

    /// The trapping request: 503 from Envoy (not from an upstream), details `wasm_fail_stream`.
    /// Returns the trapping request's tag.
    async fn trap_and_check(&mut self) -> String {
        let upstream_before = self.upstream_requests();
        let (tag, trapped) = self.trap().await;
        assert_eq!(trapped.status, 503, "{:?}: {trapped:?}", self.policy);
        assert_eq!(trapped.upstream(), None, "{trapped:?}");
        assert_eq!(self.details(&tag).await, WASM_FAIL_STREAM);
        assert_eq!(self.upstream_requests(), upstream_before);
        self.wait_for_trap_in_log().await;
        tag
    }
}

/// A 503 that Envoy gave because the VM failed (no upstream answered).
async fn assert_failed_stream(trial: &Trial, tag: &str, response: &TestResponse) {
    assert_eq!(
        response.status, 503,
        "{:?} {tag}: {response:?}",
        trial.policy
    );
    assert_eq!(response.upstream(), None, "{tag}: {response:?}");
    assert_eq!(
        trial.details(tag).await,
        WASM_FAIL_STREAM,
        "{:?} {tag}",
        trial.policy
    );
}

/// The filter did not run: 200 from `payment-baseline` with the authority untouched and no
/// debug header, whether or not the request carried a key.
fn assert_bypassed(response: &TestResponse) {
    let echo = expect::answered_by(response, PAYMENT_BASELINE);
    assert_eq!(echo.authority(), "payment", "{response:?}");
    assert_eq!(
        integration_tests::sandbox::decision(response),
        None,
        "the filter ran: {response:?}"
    );
}

/// `FAIL_CLOSED`: once the VM trapped, every request through the listener gets a 503 from Envoy
/// (`wasm_fail_stream`), keyless baseline traffic included, and nothing recovers it: no reload,
/// no new VM. No Wasm stat counts the failure; only the 5xx counter and the log show it.
#[tokio::test]
async fn fail_closed_refuses_every_request_after_a_trap() {
    let mut trial = Trial::start(FailurePolicy::FailClosed).await;
    trial.assert_routing_works().await;
    let created = trial.stat(V8_CREATED).await;
    let active = trial.stat(V8_ACTIVE).await;
    let fivexx = format!("http.{LISTENER}.downstream_rq_5xx");
    let fivexx_before = trial.env.envoy.stat(&fivexx).await.unwrap_or(0);
    let upstream_before = trial.upstream_requests();

    trial.trap_and_check().await;

    let mut refused = 1; // the trapping request
    let window = Instant::now() + NO_RECOVERY_WINDOW;
    while Instant::now() < window {
        let (tag, keyless) = trial.keyless().await;
        assert_failed_stream(&trial, &tag, &keyless).await;
        let (tag, keyed) = trial.keyed().await;
        assert_failed_stream(&trial, &tag, &keyed).await;
        refused += 2;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(
        trial.upstream_requests(),
        upstream_before,
        "a request got past the failed filter"
    );

    assert_eq!(trial.stat(&fivexx).await - fivexx_before, refused);
    assert_failure_invisible_in_wasm_stats(&trial, created, active).await;
}

/// `FAIL_OPEN`: the trapping request still gets a 503 (`wasm_fail_stream`), but from then on the
/// filter is skipped: keyless requests reach `payment-baseline` as before, and keyed requests
/// reach `payment-baseline` too — silently, with no debug header — for good. No Wasm stat counts
/// the failure (which is why `expect::filter_healthy` probes with a keyed request).
#[tokio::test]
async fn fail_open_bypasses_the_filter_after_a_trap() {
    let mut trial = Trial::start(FailurePolicy::FailOpen).await;
    trial.assert_routing_works().await;
    let created = trial.stat(V8_CREATED).await;
    let active = trial.stat(V8_ACTIVE).await;
    let sandbox_before = trial.env.upstream(PAYMENT_SANDBOX).request_count();

    trial.trap_and_check().await;

    let window = Instant::now() + NO_RECOVERY_WINDOW;
    while Instant::now() < window {
        let (tag, keyless) = trial.keyless().await;
        assert_bypassed(&keyless);
        assert_eq!(trial.details(&tag).await, "via_upstream");
        let (tag, keyed) = trial.keyed().await;
        assert_bypassed(&keyed);
        assert_eq!(
            keyed.echo().header("baggage").as_deref(),
            Some("sandbox=feature-x"),
            "the key reaches the baseline untouched"
        );
        assert_eq!(trial.details(&tag).await, "via_upstream");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(
        trial.env.upstream(PAYMENT_SANDBOX).request_count(),
        sandbox_before,
        "a keyed request reached the sandbox after the trap"
    );

    assert_failure_invisible_in_wasm_stats(&trial, created, active).await;
}

/// How one trap under `FAIL_RELOAD` played out, on Envoy's clock.
struct Recovery {
    /// The requests refused by the failed VM, in order.
    refused: Vec<String>,
    /// The first request served by the new VM: Envoy loaded that VM when it started it.
    recovered: String,
}

impl Trial {
    /// Traps the VM, then polls with keyed requests until one is routed by a new VM; every one
    /// before it must have been refused by the failed VM.
    async fn trap_and_recover(&mut self, round: u64) -> Recovery {
        self.trap_and_check().await;
        let deadline = Instant::now() + RELOAD_DEADLINE;
        let mut refused = Vec::new();
        loop {
            let (tag, keyed) = self.keyed().await;
            if keyed.status == 503 {
                assert_failed_stream(self, &tag, &keyed).await;
                refused.push(tag);
                assert!(
                    Instant::now() < deadline,
                    "round {round}: no VM reload within {RELOAD_DEADLINE:?} ({} refused)",
                    refused.len()
                );
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            let echo = expect::routed_to(&keyed, PAYMENT_SANDBOX);
            assert_eq!(echo.authority(), PAYMENT_SANDBOX_AUTHORITY);
            return Recovery {
                refused,
                recovered: tag,
            };
        }
    }

    /// Routing works (keyed to the sandbox, keyless to the baseline) and the reload stats say
    /// `reloads` VMs were recreated, `backoffs` requests refused during backoffs.
    async fn assert_recovered(&mut self, created_before: u64, reloads: u64, backoffs: u64) {
        let (_, keyless) = self.keyless().await;
        expect::baseline_at(&keyless, PAYMENT_BASELINE, &[NO_KEY]);
        let (_, keyed) = self.keyed().await;
        expect::routed_to(&keyed, PAYMENT_SANDBOX);
        assert_eq!(self.stat(VM_RELOAD_BACKOFF).await, backoffs, "backoffs");
        assert_eq!(self.stat(VM_RELOAD_SUCCESS).await, reloads);
        assert_eq!(self.stat(V8_CREATED).await, created_before + reloads);
        assert_eq!(self.stat(VM_RELOAD_FAILURE).await, 0);
        assert_eq!(self.stat(VM_RELOAD).await, 0);
    }
}

/// `FAIL_RELOAD`: after a trap, requests get a 503 (`wasm_fail_stream`, each counted in
/// `vm_reload_backoff`) until the failed VM has existed for Envoy's reload backoff (a jittered
/// 1 s to 1.5 s since that VM was loaded); the first request after that creates a new VM
/// (`vm_reload_success`, `v8.created` + 1), which serves it, and routing is back. So a VM that
/// traps right after it was loaded is replaced about a second later, and one that traps after
/// running longer than the backoff is replaced by the very next request.
#[tokio::test]
async fn fail_reload_recreates_the_vm_and_routing_recovers() {
    let mut trial = Trial::start(FailurePolicy::FailReload).await;
    trial.assert_routing_works().await;
    let created = trial.stat(V8_CREATED).await;

    // Round 1: the VM Envoy started with.
    let first = trial.trap_and_recover(1).await;
    let mut backoffs = first.refused.len() as u64;
    trial.assert_recovered(created, 1, backoffs).await;

    // Round 2: a trap right after the reload. Envoy starts a request's filter chain (where it
    // decides on the reload) between the request's start and end, so on Envoy's clock: the new
    // VM was loaded within the first recovered request; the next reload comes at least 1 s
    // after that, and every refusal less than 1.5 s after it.
    let second = trial.trap_and_recover(2).await;
    let loaded_from = trial.started(&first.recovered).await;
    let loaded_by = trial.finished(&first.recovered).await;
    let reloaded = trial.finished(&second.recovered).await - loaded_from;
    let mut last_refused = None;
    for tag in &second.refused {
        last_refused = Some(trial.started(tag).await - loaded_by);
    }
    eprintln!(
        "FAIL_RELOAD: the VM loaded at round 1's recovery was replaced {reloaded:.3} s later \
         (Envoy's clock); {} requests refused, the last {last_refused:?} s after the load",
        second.refused.len()
    );
    assert!(
        reloaded >= BACKOFF_MIN.as_secs_f64() - CLOCK_SLACK,
        "the VM was replaced {reloaded:.3} s after it was loaded, before the {BACKOFF_MIN:?} backoff"
    );
    if let Some(last_refused) = last_refused {
        assert!(
            last_refused < BACKOFF_MAX.as_secs_f64() + CLOCK_SLACK,
            "a request was refused {last_refused:.3} s after the VM was loaded, past the \
             {BACKOFF_MAX:?} backoff"
        );
    }
    backoffs += second.refused.len() as u64;
    trial.assert_recovered(created, 2, backoffs).await;

    // Round 3: a VM older than the longest backoff is replaced by the first request after
    // its trap, which nothing refuses. (Waiting is the point here: the VM must age.)
    let aged_from = Instant::now();
    while aged_from.elapsed() < BACKOFF_MAX {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let third = trial.trap_and_recover(3).await;
    assert_eq!(third.refused, Vec::<String>::new(), "no request is refused");
    trial.assert_recovered(created, 3, backoffs).await;
}

/// The failure is invisible in the Wasm stats: no VM created or retired, no reload.
async fn assert_failure_invisible_in_wasm_stats(trial: &Trial, created: u64, active: u64) {
    assert_eq!(trial.stat(V8_CREATED).await, created);
    assert_eq!(trial.stat(V8_ACTIVE).await, active);
    for stat in [
        VM_RELOAD,
        VM_RELOAD_BACKOFF,
        VM_RELOAD_SUCCESS,
        VM_RELOAD_FAILURE,
    ] {
        assert_eq!(trial.stat(stat).await, 0, "{stat}");
    }
}
