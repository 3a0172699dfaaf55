//! The audit access log: Envoy's stock file access log writing one JSON line per request that
//! carried a routing key (the filter's `wasm.sandbox_router` filter state), read back by tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

use crate::{clock, observability};

/// The filter state object the filter sets on every keyed request.
pub const FILTER_STATE_KEY: &str = "wasm.sandbox_router";

/// How long Envoy may take to write a line (it flushes the file every 100 ms in tests).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The HCM `access_log` entry: the audit log of `envoy-config/observability.yaml` as shipped
/// (one JSON line per request with the filter state: time, source, status and the record),
/// writing to `path`.
pub fn access_log(path: &Path) -> Value {
    observability::audit_access_log(path)
}

/// When Envoy started the request of an audit line: its `time` (`%START_TIME%`, on Envoy's
/// clock, to the millisecond). Panics if the line has none.
pub fn start_time(line: &Value) -> SystemTime {
    line["time"]
        .as_str()
        .and_then(clock::parse_rfc3339)
        .unwrap_or_else(|| panic!("audit line without an RFC 3339 `time`: {line}"))
}

/// An audit log file in its own temp dir (removed on drop).
#[derive(Debug)]
pub struct AuditLog {
    _dir: TempDir,
    path: PathBuf,
}

impl AuditLog {
    pub fn new() -> AuditLog {
        let dir = tempfile::Builder::new()
            .prefix("sandbox-audit-")
            .tempdir()
            .expect("create a temp dir for the audit log");
        let path = dir.path().join("audit.log");
        AuditLog { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines written so far.
    pub fn lines(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Polls until at least `count` lines are written (panics after `timeout`), and returns
    /// every line so far, each parsed as JSON (panics on a line that is not).
    pub async fn wait_for_records(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= count {
                return lines
                    .iter()
                    .map(|line| {
                        serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("audit log line is not JSON ({e}): {line}"))
                    })
                    .collect();
            }
            if Instant::now() >= deadline {
                panic!(
                    "the audit log has {} lines after {timeout:?}, expected {count}:\n{}",
                    lines.len(),
                    lines.join("\n")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}
