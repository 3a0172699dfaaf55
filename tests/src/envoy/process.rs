//! Running a real Envoy: start it, wait until it is LIVE, discover its ports, and kill and reap
//! it on drop (also when the test panics, in which case the log tail is printed).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::admin;
use super::config::Bootstrap;
use crate::paths;

/// Log level override for every Envoy the tests start (e.g. `debug`, `trace`).
pub const LOG_LEVEL_ENV: &str = "ENVOY_LOG_LEVEL";
/// When set (non-empty), the temp dirs (config, logs) of Envoys are kept and their paths printed.
pub const KEEP_DIR_ENV: &str = "KEEP_ENVOY_DIR";

/// How long Envoy gets to become LIVE (two cores, many Envoys at once, V8 compiling Wasm).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Envoy gets to refuse a bad config and exit.
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const LOG_TAIL_LINES: usize = 60;

/// Describes how to run one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyBuilder {
    bootstrap: Bootstrap,
    concurrency: u32,
    log_level: String,
    startup_timeout: Duration,
}

/// A running, LIVE Envoy. Dropping it stops the process.
pub struct Envoy {
    process: Process,
    admin: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
}

/// The outcome of a start that was expected to fail.
#[derive(Debug)]
pub struct FailedStart {
    /// `Some` if Envoy exited by itself, `None` if it hung without becoming ready and was killed.
    pub exit_status: Option<ExitStatus>,
    /// Envoy's log (`--log-path`) followed by its stderr.
    pub log: String,
}

/// The line the filter logs when it refuses a configuration, up to the field path.
pub const FILTER_CONFIG_ERROR: &str = "sandbox-router: invalid configuration:";

impl FailedStart {
    /// The filter's refusal line (`FILTER_CONFIG_ERROR` …), after checking that Envoy did not
    /// exit successfully; panics with `context` and the log when the line is missing.
    pub fn filter_config_error(&self, context: &str) -> &str {
        if let Some(status) = self.exit_status {
            assert!(
                !status.success(),
                "{context}: Envoy exited successfully?\n{}",
                self.log
            );
        }
        self.log
            .lines()
            .find(|line| line.contains(FILTER_CONFIG_ERROR))
            .unwrap_or_else(|| {
                panic!(
                    "{context}: no `{FILTER_CONFIG_ERROR}` line\nlog:\n{}",
                    self.log
                )
            })
    }
}

impl EnvoyBuilder {
    pub fn new(bootstrap: Bootstrap) -> Self {
        let log_level = std::env::var(LOG_LEVEL_ENV)
            .ok()
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "info".to_owned());
        EnvoyBuilder {
            bootstrap,
            concurrency: 1,
            log_level,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    pub fn bootstrap(&self) -> &Bootstrap {
        &self.bootstrap
    }

    /// Starts Envoy and waits until `/ready` says LIVE; panics (with the log tail) otherwise.
    pub async fn start(self) -> Envoy {
        let deadline = Instant::now() + self.startup_timeout;
        let mut process = self.spawn();
        let admin = match wait_until_live(&mut process, deadline).await {
            Ok(admin) => admin,
            Err(Startup::Exited(status)) => panic!(
                "Envoy exited during startup ({status}); config {}\n{}",
                process.config_path().display(),
                process.log_tail(LOG_TAIL_LINES)
            ),
            Err(Startup::TimedOut(what)) => panic!(
                "Envoy did not become LIVE within {:?} ({what}); config {}\n{}",
                self.startup_timeout,
                process.config_path().display(),
                process.log_tail(LOG_TAIL_LINES)
            ),
        };
        let listeners = match admin::listeners(admin).await {
            Ok(listeners) => listeners,
            Err(err) => panic!(
                "cannot read Envoy's listeners: {err}\n{}",
                process.log_tail(LOG_TAIL_LINES)
            ),
        };
        Envoy {
            process,
            admin,
            listeners,
        }
    }

    /// Starts Envoy expecting it to refuse its configuration: waits (up to `timeout`) for the
    /// process to exit. Panics if it becomes LIVE instead. If it neither exits nor becomes
    /// LIVE in time it is killed and `exit_status` is `None`.
    pub async fn start_expecting_failure(self, timeout: Duration) -> FailedStart {
        let deadline = Instant::now() + timeout;
        let mut process = self.spawn();
        match wait_until_live(&mut process, deadline).await {
            Ok(_) => panic!(
                "Envoy accepted a configuration it was expected to refuse; config {}\n{}",
                process.config_path().display(),
                process.log_tail(LOG_TAIL_LINES)
            ),
            Err(Startup::Exited(status)) => FailedStart {
                exit_status: Some(status),
                log: process.log(),
            },
            Err(Startup::TimedOut(_)) => {
                process.stop();
                FailedStart {
                    exit_status: None,
                    log: process.log(),
                }
            }
        }
    }

    fn spawn(&self) -> Process {
        let dir = tempfile::Builder::new()
            .prefix("envoy-it-")
            .tempdir()
            .expect("create a temp dir for Envoy");
        let config_path = dir.path().join("bootstrap.yaml");
        let rendered = serde_json::to_string_pretty(&self.bootstrap.render())
            .expect("bootstrap renders to JSON");
        // JSON is valid YAML; Envoy parses the .yaml file either way.
        fs::write(&config_path, rendered).expect("write Envoy bootstrap");

        let stdout = fs::File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let stderr = fs::File::create(dir.path().join("stderr.log")).expect("create stderr.log");
        let mut command = Command::new(paths::envoy_bin());
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            .arg("-l")
            .arg(&self.log_level)
            .arg("--admin-address-path")
            .arg(dir.path().join("admin_address"))
            // Keep the log file current, so a failing test sees recent lines.
            .arg("--file-flush-interval-msec")
            .arg("100")
            .current_dir(paths::workspace_root())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Envoy {}: {e}", paths::envoy_bin().display()));
        Process {
            child,
            dir: Some(dir),
            exit_status: None,
        }
    }
}

impl Envoy {
    /// Starts Envoy with default settings.
    pub async fn start(bootstrap: Bootstrap) -> Envoy {
        EnvoyBuilder::new(bootstrap).start().await
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The address of the named listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("Envoy has no listener {name:?}: {:?}", self.listeners))
    }

    /// The address of the only (or first) listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners
            .first()
            .map(|(_, addr)| *addr)
            .expect("Envoy has at least one listener")
    }

    /// All numeric stats (counters and gauges) by name, from `/stats?format=json`.
    pub async fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        match admin::stats(self.admin).await {
            Ok(stats) => stats,
            Err(err) => panic!(
                "cannot read Envoy stats: {err}\n{}",
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// The numeric stats whose names match the regular expression `filter`.
    pub async fn stats_matching(&self, filter: &str) -> std::collections::BTreeMap<String, u64> {
        match admin::stats_matching(self.admin, filter).await {
            Ok(stats) => stats,
            Err(err) => panic!(
                "cannot read Envoy stats matching {filter:?}: {err}\n{}",
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// One stat's value (None if Envoy has no such stat).
    pub async fn stat(&self, name: &str) -> Option<u64> {
        self.stats().await.get(name).copied()
    }

    /// Polls `/stats` until stat `name` satisfies `ready` (given `None` while it does not
    /// exist), and returns its value then; panics with the last value after `timeout`.
    /// For stats that change asynchronously (e.g. the filter's counters, flushed on a timer).
    pub async fn wait_for_stat(
        &self,
        name: &str,
        timeout: Duration,
        ready: impl Fn(Option<u64>) -> bool,
    ) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name).await;
            if ready(value) {
                return value;
            }
            if Instant::now() >= deadline {
                let related: Vec<String> = self
                    .stats()
                    .await
                    .into_iter()
                    .filter(|(n, _)| {
                        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
                        n.starts_with(stem)
                    })
                    .map(|(n, v)| format!("{n}: {v}"))
                    .collect();
                panic!(
                    "stat {name} did not reach the expected value within {timeout:?}; \
                     last value {value:?}; related stats:\n{}",
                    related.join("\n")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `/stats` until stat `name` equals `expected`; see [`Envoy::wait_for_stat`].
    pub async fn wait_for_stat_eq(&self, name: &str, expected: u64, timeout: Duration) {
        self.wait_for_stat(name, timeout, |v| v.unwrap_or(0) == expected)
            .await;
    }

    /// A `/stats/prometheus` scrape.
    pub async fn prometheus(&self) -> super::prometheus::Scrape {
        match admin::prometheus(self.admin).await {
            Ok(text) => super::prometheus::Scrape::parse(&text),
            Err(err) => panic!(
                "cannot read /stats/prometheus: {err}\n{}",
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// The Envoy log (`--log-path`) and stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub fn config_path(&self) -> PathBuf {
        self.process.config_path()
    }

    /// Stops Envoy now (SIGTERM, so the log is flushed); `log()` still works afterwards.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.exit_status().is_none()
    }

    /// The Envoy process id (e.g. for `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Envoy's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`); `None` without
    /// `/proc` (not Linux) or once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Stop first so Envoy flushes its log.
            self.process.stop();
            eprintln!(
                "---- Envoy log tail (config {}) ----\n{}\n---- end of Envoy log ----",
                self.process.config_path().display(),
                self.process.log_tail(LOG_TAIL_LINES)
            );
        }
        // Process::drop stops and reaps it.
    }
}

enum Startup {
    Exited(ExitStatus),
    TimedOut(&'static str),
}

async fn wait_until_live(process: &mut Process, deadline: Instant) -> Result<SocketAddr, Startup> {
    let admin_address_file = process.path("admin_address");
    let mut admin: Option<SocketAddr> = None;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(Startup::Exited(status));
        }
        if admin.is_none() {
            admin = fs::read_to_string(&admin_address_file)
                .ok()
                .and_then(|text| text.trim().parse().ok());
        }
        if let Some(addr) = admin {
            if admin::is_live(addr).await {
                return Ok(addr);
            }
        }
        if Instant::now() >= deadline {
            return Err(Startup::TimedOut(if admin.is_some() {
                "admin is up but /ready never said LIVE"
            } else {
                "admin address never appeared"
            }));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The child process and its temp dir; stops and reaps the process on drop.
struct Process {
    child: Child,
    dir: Option<TempDir>,
    exit_status: Option<ExitStatus>,
}

impl Process {
    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("temp dir present until drop")
            .path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("bootstrap.yaml")
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self.child.try_wait().ok().flatten();
        }
        self.exit_status
    }

    fn log(&self) -> String {
        let read = |name: &str| {
            fs::read(self.path(name))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        };
        let mut log = read("envoy.log");
        let stderr = read("stderr.log");
        if !stderr.trim().is_empty() {
            log.push_str("\n---- Envoy stderr ----\n");
            log.push_str(&stderr);
        }
        log
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// SIGTERM (so Envoy flushes its log), then SIGKILL if it lingers; always reaps.
    fn stop(&mut self) {
        if self.exit_status().is_some() {
            return;
        }
        self.exit_status = terminate(&mut self.child);
    }
}

/// Stops a child process that has not been reaped: SIGTERM (so it flushes its logs), then
/// SIGKILL if it is still running 5 s later; always reaps it. Returns how it exited.
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        let keep = std::env::var_os(KEEP_DIR_ENV).is_some_and(|v| !v.is_empty());
        if let (true, Some(dir)) = (keep, self.dir.take()) {
            eprintln!("kept Envoy dir {}", dir.keep().display());
        }
    }
}

/// Makes the kernel kill a child (Envoy, a demo app) if the test process dies without running
/// destructors (e.g. the test binary is killed by a time-out).
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches nothing shared with the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Result of `envoy --mode validate`.
#[derive(Debug)]
pub struct Validation {
    pub status: ExitStatus,
    pub output: String,
}

/// Runs `envoy --mode validate -c <config>` from `cwd` (so relative paths resolve there).
pub fn validate(config: &Path, cwd: &Path) -> Validation {
    let mut command = Command::new(paths::envoy_bin());
    command
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(config)
        .arg("--disable-hot-restart")
        .arg("-l")
        .arg("info")
        .current_dir(cwd)
        .stdin(Stdio::null());
    die_with_parent(&mut command);
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", paths::envoy_bin().display()));
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Validation {
        status: out.status,
        output,
    }
}
