//! A global rate limit service for the tests: Envoy's `envoy.service.ratelimit.v3.RateLimitService`
//! (gRPC, served with tonic) counting with Limitador's in-memory limiter, the engine of the
//! Limitador server.
//!
//! Its limits are a small description ([`Limits`]): per named sandbox N requests per second,
//! plus a default for every other sandbox key. A request's descriptors are counted the way the
//! Limitador server counts them (`domain` = Limitador namespace, a descriptor's entries =
//! `descriptors[0]`), one descriptor at a time, and answered with a `DescriptorStatus` per
//! descriptor (the limit, what remains, time to reset) as envoyproxy/ratelimit answers, so
//! Envoy can write its `x-ratelimit-*` headers from them.
//!
//! It binds a free port itself, records every call it receives (so a test can say "keyless
//! traffic made 0 calls"), can be [killed](RateLimitService::kill) mid-run (stops serving and
//! closes the port and every connection, as a crashed server would) and is killed on drop.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService as RateLimitServiceApi, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use limitador::limit::{Context, Expression, Limit, Predicate};
use limitador::RateLimiter;
use serde::Deserialize;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;

use crate::envoy::Cluster;
use crate::sandbox::SandboxOptions;

/// The rate limit domain of the shipped configuration (`envoy-config/global-rate-limit.yaml`);
/// Limitador calls it the namespace.
pub const DOMAIN: &str = "sandbox-router";
/// The descriptor entry key the route's `request_headers` action writes the sandbox key under.
pub const DESCRIPTOR_KEY: &str = "sandbox";
/// The request header the filter sets to the key of a registered, trusted, unexpired sandbox
/// (its `key_header` setting), which the route's rate limit action reads.
pub const KEY_HEADER: &str = "x-sandbox-key";
/// The window of every limit: limits are per second.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The counters Limitador keeps in memory (one per sandbox key seen in a window).
const COUNTER_CACHE_SIZE: u64 = 10_000;

/// The limits the service enforces in [`DOMAIN`], in requests per second (a fixed window of one
/// second, Limitador's semantics: a window opens at the first hit after the previous one closed).
///
/// As a file (for `ratelimit-service --limits FILE`), YAML:
///
/// ```yaml
/// sandboxes:        # per named sandbox
///   feature-x: 5
/// default: 50       # every other sandbox key, each with its own counter
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second of a named sandbox.
    #[serde(default)]
    pub sandboxes: BTreeMap<String, u32>,
    /// Requests per second of every sandbox key not named in `sandboxes` (each its own
    /// counter); `None`: such keys are not limited.
    #[serde(default)]
    pub default: Option<u32>,
}

impl Limits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sandbox `key` may make `per_second` requests per second, mesh-wide.
    pub fn sandbox(mut self, key: &str, per_second: u32) -> Self {
        self.sandboxes.insert(key.to_owned(), per_second);
        self
    }

    /// Every sandbox key without its own limit may make `per_second` requests per second.
    pub fn default_per_second(mut self, per_second: u32) -> Self {
        self.default = Some(per_second);
        self
    }

    /// Parses the YAML form (see [`Limits`]) and checks it.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let limits: Limits = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        limits.limitador_limits()?;
        Ok(limits)
    }

    /// The limits as Limitador limits: a named sandbox matches its own key exactly; the
    /// default matches every other key and keeps one counter per key (the key is its variable).
    /// Sandbox keys are the filter's `[A-Za-z0-9._-]{1,128}`, which keeps them plain CEL string
    /// literals.
    pub fn limitador_limits(&self) -> Result<Vec<Limit>, String> {
        let entry = format!("descriptors[0].{DESCRIPTOR_KEY}");
        let mut limits = Vec::new();
        for (key, per_second) in &self.sandboxes {
            if !is_sandbox_key(key) {
                return Err(format!(
                    "sandboxes: {key:?} is not a sandbox key (1 to 128 of [A-Za-z0-9._-])"
                ));
            }
            let condition = predicate(&format!("{entry} == '{key}'"))?;
            limits.push(Limit::new(
                DOMAIN,
                u64::from(*per_second),
                WINDOW.as_secs(),
                [condition],
                Vec::<Expression>::new(),
            ));
        }
        if let Some(per_second) = self.default {
            let named: Vec<String> = self.sandboxes.keys().map(|k| format!("'{k}'")).collect();
            let conditions = if named.is_empty() {
                Vec::new()
            } else {
                vec![predicate(&format!("!({entry} in [{}])", named.join(", ")))?]
            };
            let variable = Expression::parse(&entry).map_err(|e| format!("{entry}: {e:?}"))?;
            limits.push(Limit::new(
                DOMAIN,
                u64::from(per_second),
                WINDOW.as_secs(),
                conditions,
                [variable],
            ));
        }
        Ok(limits)
    }
}

fn predicate(source: &str) -> Result<Predicate, String> {
    Predicate::parse(source).map_err(|e| format!("{source}: {e:?}"))
}

fn is_sandbox_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// One `ShouldRateLimit` call as the service received and answered it.
#[derive(Clone, Debug)]
pub struct Call {
    /// When it arrived.
    pub at: Instant,
    pub domain: String,
    /// Each descriptor's entries, `(key, value)` in order.
    pub descriptors: Vec<Vec<(String, String)>>,
    /// The overall answer.
    pub code: Code,
}

impl Call {
    /// The `sandbox` entry values of its descriptors.
    pub fn sandbox_values(&self) -> impl Iterator<Item = &str> {
        self.descriptors
            .iter()
            .flatten()
            .filter(|(key, _)| key == DESCRIPTOR_KEY)
            .map(|(_, value)| value.as_str())
    }
}

/// The gRPC service: Limitador plus the record of calls.
struct Service {
    limiter: RateLimiter,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Service {
    /// Counts one descriptor (a hit of `hits` on every limit that applies to it) and says how
    /// it stands, from the most restrictive counter. No limit applies: OK, with no limit.
    fn check(
        &self,
        domain: &str,
        descriptor: &RateLimitDescriptor,
        hits: u64,
    ) -> Result<DescriptorStatus, tonic::Status> {
        let entries: std::collections::HashMap<String, String> = descriptor
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        // The Limitador server's context: the request's descriptors as the list `descriptors`
        // (here one at a time, so `descriptors[0]` is always this one).
        let mut context = Context::default();
        context.list_binding("descriptors".to_owned(), vec![entries]);
        // Limitador's in-memory storage does not fail; if it did, answer as the Limitador
        // server does: unavailable, so that Envoy applies its failure mode.
        let result = self
            .limiter
            .check_rate_limited_and_update(&domain.into(), &context, hits)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let tightest = result
            .counters
            .iter()
            .min_by_key(|c| c.remaining().unwrap_or(c.max_value()));
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        Ok(DescriptorStatus {
            code: code.into(),
            current_limit: tightest.map(|c| RateLimit {
                name: String::new(),
                requests_per_unit: u32::try_from(c.max_value()).unwrap_or(u32::MAX),
                unit: Unit::Second.into(),
            }),
            limit_remaining: tightest
                .and_then(|c| c.remaining())
                .map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
            // Whole seconds, rounded up, as envoyproxy/ratelimit reports them (Envoy's
            // `x-ratelimit-reset` shows whole seconds).
            duration_until_reset: tightest
                .and_then(|c| c.expires_in())
                .map(|d| ProtoDuration {
                    seconds: i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0))
                        .unwrap_or(i64::MAX),
                    nanos: 0,
                }),
            quota: None,
        })
    }
}

#[tonic::async_trait]
impl RateLimitServiceApi for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let at = Instant::now();
        let request = request.into_inner();
        // `hits_addend` 0 means 1 (proto3 default).
        let hits = u64::from(request.hits_addend.max(1));
        let statuses = request
            .descriptors
            .iter()
            .map(|d| self.check(&request.domain, d, hits))
            .collect::<Result<Vec<_>, _>>()?;
        let code = if statuses
            .iter()
            .any(|s| s.code == i32::from(Code::OverLimit))
        {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let call = Call {
            at,
            domain: request.domain.clone(),
            descriptors: request
                .descriptors
                .iter()
                .map(|d| {
                    d.entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect()
                })
                .collect(),
            code,
        };
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(call);
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: code.into(),
            statuses,
            ..RateLimitResponse::default()
        }))
    }
}

/// A running rate limit service on 127.0.0.1 (or a given address). Killed on drop.
pub struct RateLimitService {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    server: Option<ServerThread>,
}

/// The thread serving gRPC on its own runtime; `stop` ends it.
struct ServerThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl RateLimitService {
    /// Serves `limits` on a free port of 127.0.0.1; panics if it cannot.
    pub fn start(limits: &Limits) -> RateLimitService {
        Self::serve_on("127.0.0.1:0".parse().expect("an address"), limits)
            .unwrap_or_else(|e| panic!("cannot start the rate limit service: {e}"))
    }

    /// Serves `limits` on `addr` (port 0: a free port).
    pub fn serve_on(addr: SocketAddr, limits: &Limits) -> Result<RateLimitService, String> {
        let limiter = RateLimiter::new(COUNTER_CACHE_SIZE);
        for limit in limits.limitador_limits()? {
            limiter.add_limit(limit);
        }
        let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("set {addr} non-blocking: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            limiter,
            calls: Arc::clone(&calls),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("ratelimit-service-{}", addr.port()))
            .spawn(move || serve(listener, service, stopped))
            .map_err(|e| format!("spawn the server thread: {e}"))?;
        Ok(RateLimitService {
            addr,
            calls,
            server: Some(ServerThread { stop, thread }),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How many calls were received so far.
    pub fn call_count(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// The `sandbox` values of every descriptor received so far, in arrival order.
    pub fn sandbox_values(&self) -> Vec<String> {
        self.calls()
            .iter()
            .flat_map(|call| call.sandbox_values().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    /// Stops serving at once, like a crashed server: the listening socket and every open
    /// connection are closed (in-flight calls get no answer). Idempotent.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop.send(());
            if server.thread.join().is_err() {
                eprintln!("the rate limit service thread panicked");
            }
        }
    }

    /// Whether it is still serving (not killed).
    pub fn is_serving(&self) -> bool {
        self.server.is_some()
    }

    /// Blocks until the service stops (for the `ratelimit-service` binary: it never does).
    pub fn wait(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.thread.join();
        }
    }
}

impl Drop for RateLimitService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the gRPC server on a runtime of its own until `stopped`; then drops the runtime, which
/// drops every connection task (closing their sockets) and the listener.
fn serve(listener: TcpListener, service: Service, stopped: tokio::sync::oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rate limit service: cannot build a runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("rate limit service: cannot use the listener: {e}");
                return;
            }
        };
        // Small gRPC frames both ways on a long-lived connection: no Nagle delay.
        let incoming = TcpListenerStream::new(listener).map(|stream| {
            stream.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let server = tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(service))
            .serve_with_incoming(incoming);
        tokio::select! {
            result = server => {
                if let Err(e) = result {
                    eprintln!("rate limit service: {e}");
                }
            }
            _ = stopped => {}
        }
    });
    runtime.shutdown_timeout(Duration::ZERO);
}

/// The rate limit pieces of a shipped Envoy config (`envoy-config/global-rate-limit.yaml`):
/// the `envoy.filters.http.ratelimit` HTTP filter, the route `rate_limits`, and the name of the
/// gRPC cluster the filter calls.
#[derive(Clone, Debug)]
pub struct ShippedRateLimit {
    pub http_filter: serde_json::Value,
    pub rate_limits: Vec<serde_json::Value>,
    pub cluster_name: String,
}

impl ShippedRateLimit {
    /// The shipped `envoy-config/global-rate-limit.yaml`.
    pub fn shipped() -> Self {
        shipped_rate_limit(SHIPPED_CONFIG)
    }

    /// `options` with this rate limit calling `service`: the filter after the sandbox-router,
    /// the `rate_limits` on every route, and its gRPC (HTTP/2) cluster on the service's port.
    pub fn calling(&self, service: &RateLimitService, options: SandboxOptions) -> SandboxOptions {
        let mut options = options;
        options.http_filters_after.push(self.http_filter.clone());
        options.rate_limits = self.rate_limits.clone();
        options
            .extra_clusters
            .push(Cluster::new(&self.cluster_name, service.port()).http2(true));
        options
    }

    /// The same with the filter's `timeout` set to `timeout` (e.g. `"1s"`).
    pub fn with_timeout(mut self, timeout: &str) -> Self {
        self.http_filter["typed_config"]["timeout"] = serde_json::Value::from(timeout);
        self
    }
}

/// The shipped standalone config with the global rate limit.
pub const SHIPPED_CONFIG: &str = "envoy-config/global-rate-limit.yaml";
/// The name of Envoy's global rate limit HTTP filter.
pub const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";

/// Reads the rate limit filter and the first route's `rate_limits` from a shipped Envoy YAML
/// file (relative paths are relative to the workspace root). Panics if either is missing.
pub fn shipped_rate_limit(path: &str) -> ShippedRateLimit {
    let path = crate::paths::workspace_root().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let bootstrap: serde_json::Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hcms = listeners
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["filters"].as_array().cloned().unwrap_or_default())
        .map(|f| f["typed_config"].clone());
    for hcm in hcms {
        let Some(http_filter) = hcm["http_filters"]
            .as_array()
            .and_then(|filters| filters.iter().find(|f| f["name"] == RATELIMIT_FILTER))
            .cloned()
        else {
            continue;
        };
        let cluster_name = http_filter["typed_config"]["rate_limit_service"]["grpc_service"]
            ["envoy_grpc"]["cluster_name"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{}: the rate limit filter names no envoy_grpc cluster",
                    path.display()
                )
            })
            .to_owned();
        let rate_limits = hcm["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
            .find_map(|route| route["route"]["rate_limits"].as_array().cloned())
            .unwrap_or_else(|| panic!("{}: no route has rate_limits", path.display()));
        return ShippedRateLimit {
            http_filter,
            rate_limits,
            cluster_name,
        };
    }
    panic!("{} has no {RATELIMIT_FILTER} filter", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hit(limiter: &RateLimiter, sandbox: Option<&str>) -> bool {
        let entries: HashMap<String, String> = sandbox
            .map(|s| (DESCRIPTOR_KEY.to_owned(), s.to_owned()))
            .into_iter()
            .collect();
        let mut context = Context::default();
        context.list_binding("descriptors".to_owned(), vec![entries]);
        !limiter
            .check_rate_limited_and_update(&DOMAIN.into(), &context, 1)
            .expect("in-memory storage")
            .limited
    }

    fn accepted(limiter: &RateLimiter, sandbox: Option<&str>, tries: usize) -> usize {
        (0..tries).filter(|_| hit(limiter, sandbox)).count()
    }

    fn limiter(limits: &Limits) -> RateLimiter {
        let limiter = RateLimiter::new(COUNTER_CACHE_SIZE);
        for limit in limits.limitador_limits().expect("valid limits") {
            limiter.add_limit(limit);
        }
        limiter
    }

    #[test]
    fn named_sandboxes_get_their_limit_and_every_other_key_the_default_each() {
        let limiter = limiter(&Limits::new().sandbox("feature-x", 3).default_per_second(5));
        assert_eq!(accepted(&limiter, Some("feature-x"), 20), 3);
        assert_eq!(accepted(&limiter, Some("feature-y"), 20), 5);
        assert_eq!(accepted(&limiter, Some("feature-z"), 20), 5);
        // A descriptor without the sandbox entry matches no limit.
        assert_eq!(accepted(&limiter, None, 20), 20);
    }

    #[test]
    fn without_a_default_other_keys_are_not_limited() {
        let limiter = limiter(&Limits::new().sandbox("feature-x", 2));
        assert_eq!(accepted(&limiter, Some("feature-x"), 10), 2);
        assert_eq!(accepted(&limiter, Some("feature-y"), 10), 10);
    }

    #[test]
    fn the_yaml_form_parses_and_rejects_what_is_not_a_sandbox_key() {
        let limits = Limits::from_yaml("sandboxes:\n  feature-x: 5\ndefault: 50\n").expect("valid");
        assert_eq!(
            limits,
            Limits::new().sandbox("feature-x", 5).default_per_second(50)
        );
        let err = Limits::from_yaml("sandboxes:\n  \"x' || true || '\": 5\n").unwrap_err();
        assert!(err.contains("is not a sandbox key"), "{err}");
        assert!(Limits::from_yaml("sandbox: {}\n").is_err());
    }
}
