//! Connections on every Envoy worker. Envoy balances connections, not requests, across its
//! workers (the kernel picks the worker of each accepted connection), so a test of what every
//! worker does opens connections until each worker holds some, and knows which worker serves
//! which connection: after each connect it reads which worker's `downstream_cx_total` grew.

use std::time::{Duration, Instant};

use crate::client::{Connection, Protocol, TestRequest, TestResponse};
use crate::envoy::Envoy;

/// How many connections may be opened before giving up on reaching every worker.
const MAX_CONNECTIONS: usize = 400;
const ACCEPT_DEADLINE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A connection and the worker that accepted it.
pub struct WorkerConnection {
    pub worker: u32,
    pub connection: Connection,
}

impl WorkerConnection {
    /// Sends `GET /` to `payment` with `baggage: sandbox=<key>`; panics naming the worker and
    /// the key if the request fails.
    pub async fn send_payment_keyed(&mut self, key: &str) -> TestResponse {
        let request = TestRequest::get("payment", "/").header("baggage", &format!("sandbox={key}"));
        let worker = self.worker;
        self.connection
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("worker {worker}: {key}: {e}"))
    }
}

/// Opens connections to listener `listener` of `envoy` (running `workers` workers) until every
/// worker accepted `per_worker` of them; returns exactly `per_worker` connections per worker,
/// ordered by worker (surplus connections are closed). Nothing else may connect to that
/// listener meanwhile: each new connection is told apart by the counter it moves.
pub async fn connections_on_every_worker(
    envoy: &Envoy,
    listener: &str,
    workers: u32,
    per_worker: usize,
    protocol: Protocol,
) -> Vec<WorkerConnection> {
    let addr = envoy.listener(listener);
    let mut by_worker: Vec<Vec<Connection>> = (0..workers).map(|_| Vec::new()).collect();
    let mut accepted = accepted_per_worker(envoy, listener, workers).await;
    let mut opened = 0;
    while by_worker.iter().any(|c| c.len() < per_worker) {
        assert!(
            opened < MAX_CONNECTIONS,
            "{opened} connections did not give each of {workers} workers {per_worker}: \
             accepted per worker {accepted:?}"
        );
        let connection = Connection::open(addr, protocol, None)
            .await
            .unwrap_or_else(|e| panic!("connect to {listener} at {addr}: {e}"));
        opened += 1;
        let deadline = Instant::now() + ACCEPT_DEADLINE;
        let now = loop {
            let now = accepted_per_worker(envoy, listener, workers).await;
            if now.iter().sum::<u64>() > accepted.iter().sum::<u64>() {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "no worker of {listener} accepted connection {opened} within {ACCEPT_DEADLINE:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let grown: Vec<usize> = (0..now.len()).filter(|&w| now[w] > accepted[w]).collect();
        assert!(
            grown.len() == 1 && now[grown[0]] == accepted[grown[0]] + 1,
            "one connect moved {listener}'s per-worker counters from {accepted:?} to {now:?}: \
             something else connects to this listener"
        );
        accepted = now;
        if by_worker[grown[0]].len() < per_worker {
            by_worker[grown[0]].push(connection);
        }
    }
    by_worker
        .into_iter()
        .zip(0..)
        .flat_map(|(connections, worker)| {
            connections
                .into_iter()
                .map(move |connection| WorkerConnection { worker, connection })
        })
        .collect()
}

/// `listener.<listener>.worker_<n>.downstream_cx_total` for n in 0..workers.
async fn accepted_per_worker(envoy: &Envoy, listener: &str, workers: u32) -> Vec<u64> {
    let prefix = format!("listener.{listener}.worker_");
    let filter = format!("^{}", regex_escape(&prefix));
    let stats = envoy.stats_matching(&filter).await;
    (0..workers)
        .map(|w| {
            stats
                .get(&format!("{prefix}{w}.downstream_cx_total"))
                .copied()
                .unwrap_or_else(|| {
                    panic!("Envoy has no {prefix}{w}.downstream_cx_total (is it running {workers} workers?): {stats:?}")
                })
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = !(c.is_ascii_alphanumeric() || c == '_' || c == '-');
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}
