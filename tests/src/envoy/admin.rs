//! Envoy's admin API: readiness, listener addresses, stats.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::client::TestRequest;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn get(admin: SocketAddr, path: &str) -> Result<String, String> {
    let response = TestRequest::get(&admin.to_string(), path)
        .timeout(ADMIN_TIMEOUT)
        .try_send(admin)
        .await?;
    if !response.status.is_success() {
        return Err(format!("admin {path}: {:?}", response));
    }
    Ok(response.body_text())
}

/// `/ready` answers 200 `LIVE` once the server finished initialising.
pub async fn is_live(admin: SocketAddr) -> bool {
    matches!(get(admin, "/ready").await, Ok(body) if body.trim() == "LIVE")
}

/// Listener names and bound addresses, from `/listeners?format=json`.
pub async fn listeners(admin: SocketAddr) -> Result<Vec<(String, SocketAddr)>, String> {
    let body = get(admin, "/listeners?format=json").await?;
    let json: Value =
        serde_json::from_str(&body).map_err(|e| format!("/listeners is not JSON ({e}): {body}"))?;
    let statuses = json["listener_statuses"]
        .as_array()
        .ok_or_else(|| format!("/listeners has no listener_statuses: {body}"))?;
    statuses
        .iter()
        .map(|status| {
            let name = status["name"].as_str().unwrap_or_default().to_owned();
            let socket = &status["local_address"]["socket_address"];
            let address = socket["address"].as_str().unwrap_or_default();
            let port = socket["port_value"].as_u64().unwrap_or_default();
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.to_owned()
            };
            format!("{host}:{port}")
                .parse()
                .map(|addr| (name, addr))
                .map_err(|e| format!("bad listener address in {status}: {e}"))
        })
        .collect()
}

/// The Prometheus exposition of every stat, from `/stats/prometheus`.
pub async fn prometheus(admin: SocketAddr) -> Result<String, String> {
    get(admin, "/stats/prometheus").await
}

/// Every numeric stat (counters and gauges), from `/stats?format=json`.
pub async fn stats(admin: SocketAddr) -> Result<BTreeMap<String, u64>, String> {
    stats_from(admin, "/stats?format=json").await
}

/// The numeric stats whose names match the regular expression `filter` (Envoy's `filter=`).
pub async fn stats_matching(
    admin: SocketAddr,
    filter: &str,
) -> Result<BTreeMap<String, u64>, String> {
    stats_from(
        admin,
        &format!("/stats?format=json&filter={}", percent_encode(filter)),
    )
    .await
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn stats_from(admin: SocketAddr, path: &str) -> Result<BTreeMap<String, u64>, String> {
    let body = get(admin, path).await?;
    let json: Value =
        serde_json::from_str(&body).map_err(|e| format!("/stats is not JSON ({e})"))?;
    let entries = json["stats"]
        .as_array()
        .ok_or_else(|| "/stats has no stats array".to_owned())?;
    Ok(entries
        .iter()
        .filter_map(|entry| {
            let name = entry.get("name")?.as_str()?;
            let value = entry.get("value")?.as_u64()?;
            Some((name.to_owned(), value))
        })
        .collect())
}
