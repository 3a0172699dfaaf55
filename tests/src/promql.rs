//! A real Prometheus server for tests: it scrapes one target (an Envoy's `/stats/prometheus`)
//! at a short interval, on a port it picks itself, with its data in a temp dir; PromQL goes
//! through its HTTP API (`/api/v1/query`). Stopped and cleaned up on drop.
//!
//! The binary is `$PROMETHEUS_BIN`, else `prometheus` on `PATH` (Debian's `prometheus`
//! package; `scripts/test` installs it).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::client::TestRequest;
use crate::envoy::process::{die_with_parent, terminate};
use crate::envoy::Sample;

/// Overrides the Prometheus binary.
pub const PROMETHEUS_BIN_ENV: &str = "PROMETHEUS_BIN";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The job name of the scraped target (the `job` label of every series).
pub const JOB: &str = "envoy";

/// A running Prometheus; dropping it stops the process and removes its data.
pub struct Prometheus {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

/// The Prometheus binary, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(bin) = crate::paths::file_from_env(PROMETHEUS_BIN_ENV) {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "no prometheus binary on PATH (apt-get install -y prometheus, or set \
                 ${PROMETHEUS_BIN_ENV})"
            )
        })
}

impl Prometheus {
    /// Starts `binary` scraping `http://<target><metrics_path>` every `interval`, and waits
    /// until it is ready.
    pub async fn start(
        binary: &Path,
        target: SocketAddr,
        metrics_path: &str,
        interval: Duration,
    ) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("prometheus-it-")
            .tempdir()
            .expect("create a temp dir for Prometheus");
        let interval_ms = interval.as_millis();
        let config = format!(
            "global: {{ scrape_interval: {interval_ms}ms, evaluation_interval: {interval_ms}ms }}\n\
             scrape_configs:\n\
             - job_name: {JOB}\n\
             \x20 metrics_path: {metrics_path}\n\
             \x20 static_configs: [{{ targets: ['{target}'] }}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        let log = fs::File::create(&log_path).expect("create prometheus.log");
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Port 0: it picks a free port and logs it (`msg="Listening on" address=...`).
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut prometheus = Prometheus {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        prometheus.addr = prometheus.wait_until_ready().await;
        prometheus
    }

    async fn wait_until_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut addr = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Prometheus exited during startup ({status}):\n{}",
                    self.log()
                );
            }
            if addr.is_none() {
                addr = listening_address(&self.log());
            }
            if let Some(addr) = addr {
                let ready = TestRequest::get(&addr.to_string(), "/-/ready")
                    .timeout(QUERY_TIMEOUT)
                    .try_send(addr)
                    .await;
                if ready.is_ok_and(|r| r.status == 200) {
                    return addr;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready within {STARTUP_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Prometheus's own log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates `promql` now (an instant query); panics unless the result is an instant
    /// vector. Each sample's `name` is its `__name__` label (empty when the query dropped it);
    /// `labels` holds the others.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let response = TestRequest::get(&self.addr.to_string(), &path)
            .timeout(QUERY_TIMEOUT)
            .send(self.addr)
            .await;
        let body: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{promql}: the answer is not JSON ({e}): {response:?}"));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        assert_eq!(body["data"]["resultType"], "vector", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: no result array: {body}"))
            .iter()
            .map(|series| sample_of(promql, series))
            .collect()
    }

    /// Polls `promql` until `ready` holds for its result, which it returns; panics with the
    /// last result after `timeout`.
    pub async fn query_until(
        &self,
        promql: &str,
        timeout: Duration,
        ready: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql).await;
            if ready(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: not as expected within {timeout:?}; last result: {result:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The address in Prometheus's `msg="Listening on" address=127.0.0.1:PORT` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains("msg=\"Listening on\""))
        .find_map(|line| line.split("address=").nth(1)?.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
}

fn sample_of(promql: &str, series: &Value) -> Sample {
    let mut labels: BTreeMap<String, String> = series["metric"]
        .as_object()
        .unwrap_or_else(|| panic!("{promql}: a series without labels: {series}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let name = labels.remove("__name__").unwrap_or_default();
    let value = series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{promql}: a series without a value: {series}"));
    Sample {
        name,
        labels,
        value,
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query parameter).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_address_from_the_log() {
        let log = "ts=1 level=info msg=\"Start listening for connections\" address=127.0.0.1:0\n\
                   ts=2 level=info msg=\"Listening on\" address=127.0.0.1:34675\n";
        assert_eq!(
            listening_address(log),
            Some("127.0.0.1:34675".parse().unwrap())
        );
        assert_eq!(listening_address("nothing yet"), None);
    }

    #[test]
    fn encodes_promql_for_a_query_parameter() {
        assert_eq!(
            percent_encode(r#"rate(x{a=~"b|c"}[5m]) > 0"#),
            "rate%28x%7Ba%3D~%22b%7Cc%22%7D%5B5m%5D%29%20%3E%200"
        );
    }
}
