//! The audit access log: Envoy's stock file access log writing one JSON line per request that
//! carried a routing key (the filter's `wasm.sandbox_router` filter state), read back by tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

/// The filter state object the filter sets on every keyed request.
pub const FILTER_STATE_KEY: &str = "wasm.sandbox_router";

/// The access-log line: time, downstream address, status and the filter's audit record.
pub const LOG_FORMAT: &str = "{\"time\":\"%START_TIME%\",\"source\":\"%DOWNSTREAM_REMOTE_ADDRESS%\",\"status\":%RESPONSE_CODE%,\"sandbox_router\":%FILTER_STATE(wasm.sandbox_router:PLAIN)%}\n";

/// How long Envoy may take to write a line (it flushes the file every 100 ms in tests).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The HCM `access_log` entry: a file log at `path`, only for requests with the filter state
/// (a CEL access-log filter), in [`LOG_FORMAT`].
pub fn access_log(path: &Path) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "filter": {
            "extension_filter": {
                "name": "cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": format!("'{FILTER_STATE_KEY}' in filter_state")
                }
            }
        },
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.to_string_lossy(),
            "log_format": { "text_format_source": { "inline_string": LOG_FORMAT } }
        }
    })
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
