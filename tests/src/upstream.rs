//! In-process upstream servers that echo what they received.
//!
//! Each upstream listens on `127.0.0.1:0` (HTTP/1.1 and h2c prior knowledge on the same port)
//! and answers every request with `200`, header `x-upstream: <name>` and a JSON body:
//! `{"upstream", "method", "path", "authority", "version", "headers": {name: [values]}}`.
//! Requests whose content-type starts with `application/grpc` get a gRPC-shaped answer instead:
//! content-type `application/grpc`, one empty length-prefixed message and trailer `grpc-status: 0`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::Frames;

/// Header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// Header echoing the :authority / Host the upstream received (when it is a valid header value).
pub const UPSTREAM_AUTHORITY_HEADER: &str = "x-upstream-authority";

/// Request header: wait this many milliseconds before answering (overrides the option).
pub const DELAY_HEADER: &str = "x-echo-delay-ms";
/// Request header (any value): hold the answer until the test calls [`Upstream::release_held`],
/// so a test can keep requests in progress for as long as it needs, however slow the machine.
pub const HOLD_HEADER: &str = "x-echo-hold";

/// A gRPC message frame with an empty payload: not compressed, length 0.
pub const GRPC_EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// How an upstream behaves.
#[derive(Clone, Debug, Default)]
pub struct UpstreamOptions {
    /// Wait this long before answering each request.
    pub delay: Option<Duration>,
}

/// How an upstream answers, switchable while it runs (the circuit-breaker tests make a sandbox
/// fail on command). Every request is counted, whatever the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behavior {
    /// The echo described in the module docs.
    #[default]
    Echo,
    /// This status, with the echo body (gRPC requests get it too, as a plain HTTP answer).
    Status(u16),
    /// A gRPC answer with this status: in the trailers after a message, or trailers-only.
    GrpcStatus { code: u32, trailers_only: bool },
    /// `200` and the start of the body, then the stream is reset.
    ResetAfterHeaders,
    /// Wait this long before the echo (longer than the route's timeout: Envoy answers 504).
    Hang(Duration),
}

/// A running upstream; stops accepting connections when dropped.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    concurrency: Arc<Concurrency>,
    shared: Arc<Shared>,
    /// The accept loop and every connection's task: aborted to refuse connections.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    release: Arc<watch::Sender<u64>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    options: UpstreamOptions,
    requests: Arc<AtomicUsize>,
    concurrency: Arc<Concurrency>,
    behavior: std::sync::Mutex<Behavior>,
    connections: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Bumped by [`Upstream::release_held`]: held requests answer when it changes.
    release: Arc<watch::Sender<u64>>,
}

/// Requests being answered right now, and the most seen at once.
#[derive(Debug, Default)]
struct Concurrency {
    current: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts one request as in progress until dropped (also when its connection goes away and
/// the answer is abandoned).
struct InProgress(Arc<Concurrency>);

impl InProgress {
    fn start(concurrency: &Arc<Concurrency>) -> Self {
        let now = concurrency.current.fetch_add(1, Ordering::SeqCst) + 1;
        concurrency.peak.fetch_max(now, Ordering::SeqCst);
        InProgress(concurrency.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Upstream {
    /// Starts an upstream on the current Tokio runtime.
    pub async fn start(name: &str) -> Upstream {
        Self::start_with(name, UpstreamOptions::default()).await
    }

    pub async fn start_with(name: &str, options: UpstreamOptions) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("upstream {name}: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let requests = Arc::new(AtomicUsize::new(0));
        let concurrency = Arc::new(Concurrency::default());
        let release = Arc::new(watch::channel(0u64).0);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            options,
            requests: requests.clone(),
            concurrency: concurrency.clone(),
            behavior: std::sync::Mutex::new(Behavior::Echo),
            connections: std::sync::Mutex::new(Vec::new()),
            release: release.clone(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Upstream {
            name: name.to_owned(),
            addr,
            requests,
            concurrency,
            shared,
            tasks: std::sync::Mutex::new(vec![accept_task]),
            release,
        }
    }

    /// Answers from now on as `behavior` says.
    pub fn behave(&self, behavior: Behavior) {
        *self.shared.behavior.lock().expect("behavior lock") = behavior;
    }

    /// Stops listening and drops every open connection (connections are refused), or listens
    /// again on the same port.
    pub async fn refuse_connections(&self, refuse: bool) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for task in tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        for connection in self
            .shared
            .connections
            .lock()
            .expect("connections lock")
            .drain(..)
        {
            connection.abort();
        }
        if !refuse {
            let listener = TcpListener::bind(self.addr).await.unwrap_or_else(|e| {
                panic!("upstream {}: bind {} again: {e}", self.name, self.addr)
            });
            tasks.push(tokio::spawn(accept_loop(listener, self.shared.clone())));
        }
        *self.tasks.lock().expect("tasks lock") = tasks;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many requests this upstream has received so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// How many requests this upstream is answering right now (received, answer not yet sent).
    pub fn in_progress(&self) -> usize {
        self.concurrency.current.load(Ordering::SeqCst)
    }

    /// The most requests it has been answering at once since it started or since the last
    /// [`Upstream::reset_peak`].
    pub fn peak_in_progress(&self) -> usize {
        self.concurrency.peak.load(Ordering::SeqCst)
    }

    /// Answers every request held by [`HOLD_HEADER`] that has arrived so far.
    pub fn release_held(&self) {
        self.release.send_modify(|generation| *generation += 1);
    }

    /// Restarts the peak count from the requests in progress now.
    pub fn reset_peak(&self) {
        let current = self.concurrency.current.load(Ordering::SeqCst);
        self.concurrency.peak.store(current, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            tasks.iter().for_each(JoinHandle::abort);
        }
        if let Ok(connections) = self.shared.connections.lock() {
            connections.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let connection_shared = shared.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = connection_shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, req).await) }
            });
            // Errors here are client-side disconnects; nothing to report.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        if let Ok(mut connections) = shared.connections.lock() {
            connections.retain(|c| !c.is_finished());
            connections.push(task.abort_handle());
        }
    }
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Frames> {
    // Subscribed before the request counts as arrived: a release after that answers it.
    let mut released = shared.release.subscribe();
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let _in_progress = InProgress::start(&shared.concurrency);
    let (parts, body) = req.into_parts();
    // Drain the request body so the client can finish sending.
    let _ = body.collect().await;
    let requested_delay = parts
        .headers
        .get(DELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    let behavior = shared
        .behavior
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    let hang = match behavior {
        Behavior::Hang(duration) => Some(duration),
        _ => None,
    };
    if let Some(delay) = requested_delay.or(hang).or(shared.options.delay) {
        tokio::time::sleep(delay).await;
    }
    if parts.headers.contains_key(HOLD_HEADER) {
        // An error means the upstream is gone: answer anyway.
        let _ = released.changed().await;
    }

    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes().to_vec())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| h.as_bytes().to_vec())
        })
        .unwrap_or_default();

    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(UPSTREAM_HEADER, shared.name.as_str());
    if let Ok(value) = HeaderValue::from_bytes(&authority) {
        response = response.header(UPSTREAM_AUTHORITY_HEADER, value);
    }

    let is_grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|ct| ct.as_bytes().starts_with(b"application/grpc"))
        .unwrap_or(false);
    match behavior {
        Behavior::Status(status) => {
            return response
                .status(status)
                .body(Frames::data(format!("{} answers {status}", shared.name)))
                .expect("valid failing response");
        }
        Behavior::GrpcStatus {
            code,
            trailers_only: true,
        } => {
            return response
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code.to_string())
                .body(Frames::empty())
                .expect("valid trailers-only response");
        }
        Behavior::GrpcStatus { code, .. } => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code));
            return response
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(Frames::data_with_trailers(
                    Bytes::from_static(&GRPC_EMPTY_MESSAGE),
                    trailers,
                ))
                .expect("valid gRPC response");
        }
        Behavior::ResetAfterHeaders => {
            return response
                .body(Frames::data_then_reset("the start of a body"))
                .expect("valid response head");
        }
        Behavior::Echo | Behavior::Hang(_) => {}
    }
    if is_grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        return response
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(Frames::data_with_trailers(
                Bytes::from_static(&GRPC_EMPTY_MESSAGE),
                trailers,
            ))
            .expect("valid gRPC response");
    }

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echo = serde_json::json!({
        "upstream": shared.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": String::from_utf8_lossy(&authority),
        "version": format!("{:?}", parts.version),
        "headers": headers,
    });
    response
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Frames::data(echo.to_string()))
        .expect("valid echo response")
}
