//! Load through every Envoy worker: h2c connections spread until each worker holds some, and
//! tasks sending requests on them as fast as they go for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{Connection, Protocol, TestRequest};
use crate::envoy::Envoy;

/// One request of a load run: when it was sent and what came back (status, answering upstream).
#[derive(Clone, Debug)]
pub struct Shot {
    pub sent_at: Instant,
    pub outcome: Result<Answer, String>,
}

/// What a load request got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `x-upstream`: which upstream answered (`None` for a local reply).
    pub upstream: Option<String>,
}

/// Opens h2c connections to `envoy`'s listener `listener` until Envoy's per-worker listener
/// stats show that each of its `workers` accepted at least two of them. The stats are named by
/// the configured address (port 0), so `envoy` must have no other listener.
pub async fn connections_on_every_worker(
    envoy: &Envoy,
    listener: &str,
    workers: u32,
) -> Vec<Connection> {
    let addr = envoy.listener(listener);
    let mut connections = Vec::new();
    loop {
        for _ in 0..4 {
            connections.push(
                Connection::open(addr, Protocol::H2c, None)
                    .await
                    .expect("open an h2c connection to Envoy"),
            );
        }
        let stats = envoy.stats().await;
        // `listener.<configured address>.worker_<n>.downstream_cx_total`.
        let per_worker: Vec<u64> = (0..workers)
            .map(|w| {
                let suffix = format!(".worker_{w}.downstream_cx_total");
                stats
                    .iter()
                    .filter(|(name, _)| name.starts_with("listener.") && name.ends_with(&suffix))
                    .map(|(_, value)| *value)
                    .sum()
            })
            .collect();
        if per_worker.iter().all(|&n| n >= 2) {
            return connections;
        }
        assert!(
            connections.len() < 200,
            "{} connections did not reach all {workers} workers of {addr}: {per_worker:?}",
            connections.len()
        );
    }
}

/// Sends `request()` from `tasks_per_connection` tasks on each connection, each task one
/// request at a time, until `duration` has passed; stops a task at its first failed exchange.
pub async fn hammer(
    connections: &[Connection],
    tasks_per_connection: usize,
    duration: Duration,
    request: impl Fn() -> TestRequest + Send + Sync + 'static,
) -> Vec<Shot> {
    let deadline = Instant::now() + duration;
    let request = Arc::new(request);
    let mut tasks = JoinSet::new();
    for connection in connections {
        for _ in 0..tasks_per_connection {
            let mut connection = connection.share().expect("h2c connections can be shared");
            let request = Arc::clone(&request);
            tasks.spawn(async move {
                let mut shots = Vec::new();
                while Instant::now() < deadline {
                    let sent_at = Instant::now();
                    let outcome = connection.send(request()).await.map(|r| Answer {
                        status: r.status.as_u16(),
                        upstream: r.upstream(),
                    });
                    let failed = outcome.is_err();
                    shots.push(Shot { sent_at, outcome });
                    if failed {
                        break;
                    }
                }
                shots
            });
        }
    }
    let mut shots = Vec::new();
    while let Some(done) = tasks.join_next().await {
        shots.extend(done.expect("load task"));
    }
    shots
}
