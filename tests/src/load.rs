//! Load through every Envoy worker: h2c connections spread until each worker holds some, and
//! tasks sending requests on them as fast as they go for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{Connection, Protocol, TestRequest, TestResponse};
use crate::envoy::Envoy;

/// One request of a load run: when it was sent and what was read of its answer (by default
/// the status and the answering upstream).
#[derive(Clone, Debug)]
pub struct Shot<A = Answer> {
    pub sent_at: Instant,
    pub outcome: Result<A, String>,
}

/// What a load request got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `x-upstream`: which upstream answered (`None` for a local reply).
    pub upstream: Option<String>,
}

/// Two h2c connections on each of `envoy`'s `workers` workers ([`crate::workers`]), for load
/// spread over every worker.
pub async fn connections_on_every_worker(
    envoy: &Envoy,
    listener: &str,
    workers: u32,
) -> Vec<Connection> {
    crate::workers::connections_on_every_worker(envoy, listener, workers, 2, Protocol::H2c)
        .await
        .into_iter()
        .map(|c| c.connection)
        .collect()
}

/// Sends `request()` from `tasks_per_connection` tasks on each connection, each task one
/// request at a time, until `duration` has passed; stops a task at its first failed exchange.
pub async fn hammer(
    connections: &[Connection],
    tasks_per_connection: usize,
    duration: Duration,
    request: impl Fn() -> TestRequest + Send + Sync + 'static,
) -> Vec<Shot> {
    hammer_reading(connections, tasks_per_connection, duration, request, |r| {
        Answer {
            status: r.status.as_u16(),
            upstream: r.upstream(),
        }
    })
    .await
}

/// [`hammer`], keeping `read(response)` of each answer.
pub async fn hammer_reading<A: Send + 'static>(
    connections: &[Connection],
    tasks_per_connection: usize,
    duration: Duration,
    request: impl Fn() -> TestRequest + Send + Sync + 'static,
    read: impl Fn(TestResponse) -> A + Send + Sync + 'static,
) -> Vec<Shot<A>> {
    let deadline = Instant::now() + duration;
    let request = Arc::new(request);
    let read = Arc::new(read);
    let mut tasks = JoinSet::new();
    for connection in connections {
        for _ in 0..tasks_per_connection {
            let mut connection = connection.share().expect("h2c connections can be shared");
            let request = Arc::clone(&request);
            let read = Arc::clone(&read);
            tasks.spawn(async move {
                let mut shots = Vec::new();
                while Instant::now() < deadline {
                    let sent_at = Instant::now();
                    let outcome = connection.send(request()).await.map(|r| read(r));
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
