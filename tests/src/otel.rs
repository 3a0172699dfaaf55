//! The app's view of a request: what OpenTelemetry Python's W3C baggage propagator (the
//! `opentelemetry-api` package, via `tests/otel/baggage.py`) extracts from a `baggage` header,
//! and the header it re-injects on the app's outbound calls. A trust point must strip every key
//! an app would read, so tests take the real propagator as the oracle.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// One header as the app sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct AppView {
    /// Members the app reads, by decoded name.
    pub members: BTreeMap<String, String>,
    /// The `baggage` header the app sends on, if any.
    pub reinjected: Option<String>,
}

impl AppView {
    /// The value of member `name` as the app reads it.
    pub fn member(&self, name: &str) -> Option<&str> {
        self.members.get(name).map(String::as_str)
    }
}

/// Runs the propagator on each header value. Panics with how to install it when the package is
/// missing (`scripts/test` installs it).
pub fn app_views(headers: &[String]) -> Vec<AppView> {
    let script = crate::paths::workspace_root().join("tests/otel/baggage.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(headers).expect("headers serialise");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&input)
        .expect("python3 reads the headers");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the propagator's view is JSON")
}
