//! The sandbox-router test topology: upstreams, Envoy routes and the Wasm filter wired in.
//!
//! Services (namespace `shop`) and the upstream each one reaches without a sandbox key:
//! - `payment`   → `payment-baseline`; the sandbox authority
//!   `payment-feature-x.shop.svc.cluster.local` → `payment-feature-x` (authority mode);
//! - `inventory` → `inventory-baseline`, or the cluster named by `x-sandbox-cluster` when that
//!   header is present (`inventory-feature-x` in cluster mode);
//! - `catalog`   → `catalog-baseline` (no sandbox overrides it);
//! - any other host → `default`.
//!
//! Every service answers to all its Kubernetes names (`svc`, `svc.shop`, `svc.shop.svc`,
//! `svc.shop.svc.cluster.local`), with a trailing dot, and with any port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::audit::{self, AuditLog};
use crate::client::{Connection, TestRequest, TestResponse};
use crate::envoy::process::DEFAULT_FAILURE_TIMEOUT;
use crate::envoy::{
    Bootstrap, Cluster, Envoy, EnvoyBuilder, FailedStart, Listener, Route, VirtualHost,
};
use crate::filter_entry::{self, FilterEntry};
use crate::paths;
use crate::upstream::{Upstream, UpstreamOptions};

pub const NAMESPACE: &str = "shop";
/// Debug response header describing the filter's decision.
pub const DECISION_HEADER: &str = "x-sandbox-router";
/// Request header the filter sets in cluster mode (and the route reads).
pub const CLUSTER_HEADER: &str = "x-sandbox-cluster";
/// The sandbox key the default configuration knows.
pub const KEY: &str = "feature-x";
/// Where `payment` goes in sandbox `feature-x` (authority mode).
pub const PAYMENT_SANDBOX_AUTHORITY: &str = "payment-feature-x.shop.svc.cluster.local";
/// The cluster `inventory` goes to in sandbox `feature-x` (cluster mode).
pub const INVENTORY_SANDBOX_CLUSTER: &str = "inventory-feature-x";
/// Request header the Lua route-resolver adds: the name of the route Envoy had resolved.
pub const LUA_ROUTE_HEADER: &str = "x-route-resolved-by-lua";

pub const PAYMENT_BASELINE: &str = "payment-baseline";
pub const PAYMENT_SANDBOX: &str = "payment-feature-x";
pub const INVENTORY_BASELINE: &str = "inventory-baseline";
pub const INVENTORY_SANDBOX: &str = "inventory-feature-x";
pub const CATALOG_BASELINE: &str = "catalog-baseline";
pub const DEFAULT_UPSTREAM: &str = "default";

const UPSTREAMS: [&str; 6] = [
    PAYMENT_BASELINE,
    PAYMENT_SANDBOX,
    INVENTORY_BASELINE,
    INVENTORY_SANDBOX,
    CATALOG_BASELINE,
    DEFAULT_UPSTREAM,
];

/// The listener name in the sandbox topology.
pub const LISTENER: &str = "ingress";

/// The four Kubernetes names of `service` in namespace `shop`.
pub fn kubernetes_names(service: &str) -> [String; 4] {
    [
        service.to_owned(),
        format!("{service}.{NAMESPACE}"),
        format!("{service}.{NAMESPACE}.svc"),
        format!("{service}.{NAMESPACE}.svc.cluster.local"),
    ]
}

/// Envoy `domains` for a host: itself, with a trailing dot, and both with any port.
pub fn domains_for(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .flat_map(|h| {
            [
                h.clone(),
                format!("{h}:*"),
                format!("{h}."),
                format!("{h}.:*"),
            ]
        })
        .collect()
}

/// The filter configuration from the contract (key `feature-x`; `payment` in authority mode,
/// `inventory` in cluster mode; debug header on).
pub fn default_filter_config() -> Value {
    json!({
        "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
        "namespace": NAMESPACE,
        "cluster_header": CLUSTER_HEADER,
        "debug": true,
        "sandboxes": {
            "feature-x": {
                "routes": {
                    "payment": { "authority": PAYMENT_SANDBOX_AUTHORITY },
                    "inventory.shop.svc.cluster.local": { "cluster": INVENTORY_SANDBOX_CLUSTER }
                }
            }
        }
    })
}

/// Bootstrap `stats_config.stats_tags` of `envoy-config/observability.yaml`, as shipped: they
/// turn the filter's counter names (`wasmcustom.sandbox_router.<counter>.decision.<d>
/// [.sandbox.<key>]`) into the metric `wasmcustom.sandbox_router.<counter>` with tags `decision`
/// and `sandbox`. Envoy 1.40 exports custom (Wasm) metrics to Prometheus without its `envoy_`
/// prefix and without the `wasmcustom` namespace: `sandbox_router_requests_total{decision="routed"}`,
/// `sandbox_router_sandbox_requests{sandbox="feature-x",decision="routed"}`,
/// `sandbox_router_circuit_open{sandbox="feature-x"}`.
pub fn stats_tags() -> Vec<Value> {
    crate::observability::stats_tags()
}

/// The sandbox-router filter of a shipped Envoy config (e.g. `envoy-config/ingress-gateway.yaml`):
/// its JSON configuration, and the HCM settings that decide the downstream address the
/// filter's trust check sees.
#[derive(Clone, Debug)]
pub struct ShippedFilter {
    pub filter_config: Value,
    /// `use_remote_address` and `xff_num_trusted_hops` of its HTTP connection manager, if set.
    pub hcm_options: Vec<(String, Value)>,
    /// The filter's `failure_policy` (`FAIL_CLOSED` when unset, as in Envoy).
    pub failure_policy: FailurePolicy,
    /// The form of the filter entry (plain Wasm filter or fast path).
    pub entry: FilterEntry,
}

/// Reads the first HTTP connection manager with a sandbox-router filter (either entry form:
/// the Wasm filter itself, or the fast path's composite filter holding it) in an Envoy YAML
/// file (relative paths are relative to the workspace root). Panics if there is none.
pub fn shipped_filter(path: &str) -> ShippedFilter {
    let path = crate::paths::workspace_root().join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let bootstrap: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    for (hcm, http_filter) in filter_entry::http_filters(&bootstrap) {
        let (Some(entry), Some(config)) = (
            filter_entry::form_of(http_filter),
            filter_entry::wasm_config(http_filter),
        ) else {
            continue;
        };
        let raw = config["configuration"]["value"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{}: the sandbox-router has no configuration value",
                    path.display()
                )
            });
        let filter_config = serde_json::from_str(raw).unwrap_or_else(|e| {
            panic!(
                "{}: the sandbox-router configuration is not JSON: {e}",
                path.display()
            )
        });
        let hcm_options = ["use_remote_address", "xff_num_trusted_hops"]
            .iter()
            .filter(|field| !hcm[**field].is_null())
            .map(|field| ((*field).to_owned(), hcm[*field].clone()))
            .collect();
        let failure_policy = match config["failure_policy"].as_str() {
            Some("FAIL_OPEN") => FailurePolicy::FailOpen,
            Some("FAIL_RELOAD") => FailurePolicy::FailReload,
            Some("FAIL_CLOSED") | None => FailurePolicy::FailClosed,
            Some(other) => panic!("{}: unknown failure_policy {other}", path.display()),
        };
        return ShippedFilter {
            filter_config,
            hcm_options,
            failure_policy,
            entry,
        };
    }
    panic!("{} has no sandbox-router filter", path.display())
}

/// The Wasm filter's `failure_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    FailOpen,
    FailClosed,
    /// Recreate the VM (with a backoff) after it failed; see tests/tests/failure_policy.rs.
    FailReload,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// The sandbox-router HTTP filter entry, with `configuration` as given (any text: tests of
/// invalid configurations pass broken JSON).
pub fn wasm_filter(configuration: &str, failure_policy: FailurePolicy) -> Value {
    wasm_filter_from(&paths::filter_wasm(), configuration, failure_policy)
}

/// [`wasm_filter`] loading the module at `wasm` (e.g. the fault-injection build,
/// [`paths::fault_injection_wasm`]).
pub fn wasm_filter_from(wasm: &Path, configuration: &str, failure_policy: FailurePolicy) -> Value {
    json!({
        "name": "sandbox-router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "sandbox-router",
                "root_id": "sandbox-router",
                "vm_config": {
                    "vm_id": "sandbox-router",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": wasm.to_string_lossy() } }
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "failure_policy": failure_policy.as_str()
            }
        }
    })
}

/// A Lua filter that makes Envoy resolve (and cache) the route in its decodeHeaders — before
/// the sandbox-router runs — and records the resolved route's name in `x-route-resolved-by-lua`.
pub fn lua_route_resolver() -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {
                "inline_string": format!(
                    "function envoy_on_request(handle)\n\
                     \x20 handle:metadata()\n\
                     \x20 handle:headers():replace(\"{LUA_ROUTE_HEADER}\", handle:streamInfo():routeName())\n\
                     end\n"
                )
            }
        }
    })
}

/// How to build the sandbox topology.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The filter's JSON configuration; `None` runs Envoy without the filter.
    pub filter_config: Option<Value>,
    /// The filter's configuration as raw text (need not be JSON); overrides `filter_config`.
    /// Plain entry only (the fast path's matcher is generated from the configuration).
    pub raw_filter_config: Option<String>,
    pub failure_policy: FailurePolicy,
    /// The form of the filter entry, generated by `scripts/sandboxes render-envoy`.
    pub entry: FilterEntry,
    /// A ready-made sandbox-router HTTP filter entry (e.g. one whose configuration comes from
    /// ECDS), used instead of building one from the configuration.
    pub prebuilt_entry: Option<Value>,
    /// Put `lua_route_resolver()` before the sandbox-router.
    pub resolve_route_first: bool,
    /// Speak HTTP/2 to the upstreams (needed for gRPC trailers).
    pub upstream_http2: bool,
    pub max_request_headers_kb: Option<u32>,
    pub concurrency: u32,
    /// Per-upstream behaviour (e.g. a delay), by upstream name; others use the defaults.
    pub upstream_options: Vec<(String, UpstreamOptions)>,
    /// Write the audit access log (see [`crate::audit`]); read it with [`SandboxEnv::audit_log`].
    pub audit_log: bool,
    /// Add [`stats_tags`] to the bootstrap.
    pub stats_tags: bool,
    /// `timeout` on every route (Envoy's default is 15 s).
    pub route_timeout: Option<Duration>,
    /// The IP the listener binds instead of 127.0.0.1 (e.g. `::1`).
    pub listener_address: Option<String>,
    /// Extra HCM fields, verbatim (e.g. `("use_remote_address", true)`).
    pub hcm_options: Vec<(String, Value)>,
    /// The filter's `.wasm` instead of the release build (e.g. the fault-injection build).
    pub wasm: Option<PathBuf>,
    /// HTTP filters placed after the sandbox-router, before the router (e.g. Envoy's global
    /// rate limit filter, [`crate::ratelimit`]).
    pub http_filters_after: Vec<Value>,
    /// Route `rate_limits` on every forwarding route.
    pub rate_limits: Vec<Value>,
    /// More clusters (e.g. the rate limit service's gRPC cluster).
    pub extra_clusters: Vec<Cluster>,
    /// Bootstrap `node.metadata` (e.g. Istio's `{"NAMESPACE": "shop"}`).
    pub node_metadata: Option<Value>,
    /// Take the filter from this ECDS file (see [`crate::ecds`]) instead of inline; the file
    /// must exist when Envoy starts. `filter_config` and `raw_filter_config` are then unused.
    pub ecds_file: Option<PathBuf>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            filter_config: Some(default_filter_config()),
            raw_filter_config: None,
            failure_policy: FailurePolicy::FailOpen,
            entry: FilterEntry::Plain,
            prebuilt_entry: None,
            resolve_route_first: false,
            upstream_http2: false,
            max_request_headers_kb: Some(96),
            concurrency: 1,
            upstream_options: Vec::new(),
            audit_log: false,
            stats_tags: false,
            route_timeout: None,
            listener_address: None,
            hcm_options: Vec::new(),
            wasm: None,
            http_filters_after: Vec::new(),
            rate_limits: Vec::new(),
            extra_clusters: Vec::new(),
            node_metadata: None,
            ecds_file: None,
        }
    }
}

impl SandboxOptions {
    /// The same topology with no Wasm filter (plain Envoy routing).
    pub fn without_filter() -> Self {
        SandboxOptions {
            filter_config: None,
            ..Self::default()
        }
    }

    /// The filter with this raw configuration text.
    pub fn with_raw_config(configuration: &str) -> Self {
        SandboxOptions {
            raw_filter_config: Some(configuration.to_owned()),
            ..Self::default()
        }
    }
}

/// Upstreams plus an Envoy routing to them.
pub struct SandboxEnv {
    // Field order matters: Envoy stops before the upstreams (and the audit log) go away.
    pub envoy: Envoy,
    upstreams: Vec<Upstream>,
    audit_log: Option<AuditLog>,
}

impl SandboxEnv {
    /// The default topology with the filter and its default configuration.
    pub async fn start() -> SandboxEnv {
        Self::start_with(SandboxOptions::default()).await
    }

    /// The default topology with the filter and this configuration.
    pub async fn start_with_config(filter_config: Value) -> SandboxEnv {
        Self::start_with(SandboxOptions {
            filter_config: Some(filter_config),
            ..SandboxOptions::default()
        })
        .await
    }

    pub async fn start_with(options: SandboxOptions) -> SandboxEnv {
        let upstreams = start_upstreams(&options).await;
        let audit_log = options.audit_log.then(AuditLog::new);
        let bootstrap = sandbox_bootstrap_with_log(
            &upstreams,
            &options,
            audit_log.as_ref().map(AuditLog::path),
        );
        let envoy = EnvoyBuilder::new(bootstrap)
            .concurrency(options.concurrency)
            .start()
            .await;
        SandboxEnv {
            envoy,
            upstreams,
            audit_log,
        }
    }

    /// Starts the topology expecting Envoy to refuse it (e.g. an invalid filter configuration):
    /// returns how Envoy exited and its log. Panics if Envoy becomes ready instead.
    pub async fn start_expecting_refusal(options: SandboxOptions) -> FailedStart {
        let upstreams = start_upstreams(&options).await;
        EnvoyBuilder::new(sandbox_bootstrap(&upstreams, &options))
            .concurrency(options.concurrency)
            .start_expecting_failure(DEFAULT_FAILURE_TIMEOUT)
            .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.envoy.listener(LISTENER)
    }

    pub async fn send(&self, request: TestRequest) -> TestResponse {
        request.send(self.addr()).await
    }

    /// The audit access log (panics unless started with `audit_log: true`).
    pub fn audit_log(&self) -> &AuditLog {
        self.audit_log
            .as_ref()
            .expect("SandboxEnv started without `audit_log: true`")
    }

    pub fn upstream(&self, name: &str) -> &Upstream {
        self.upstreams
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no upstream {name:?}"))
    }

    /// Two h2c connections on each of the `workers` workers: requests spread over these reach
    /// every worker.
    pub async fn connections_on_every_worker(&self, workers: u32) -> Vec<Connection> {
        crate::load::connections_on_every_worker(&self.envoy, LISTENER, workers).await
    }

    /// Waits until Envoy has finished every request on the test listener (their streams, and
    /// the filter's stream contexts, are gone: whatever the filter does when a stream ends is
    /// done).
    pub async fn wait_until_idle(&self) {
        self.envoy
            .wait_for_stat_eq(ACTIVE_REQUESTS, 0, IDLE_DEADLINE)
            .await;
    }
}

/// Envoy's gauge of requests in progress on the test listener.
pub const ACTIVE_REQUESTS: &str = "http.ingress.downstream_rq_active";
const IDLE_DEADLINE: Duration = Duration::from_secs(10);

async fn start_upstreams(options: &SandboxOptions) -> Vec<Upstream> {
    let mut upstreams = Vec::new();
    for name in UPSTREAMS {
        let upstream_options = options
            .upstream_options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
            .unwrap_or_default();
        upstreams.push(Upstream::start_with(name, upstream_options).await);
    }
    upstreams
}

/// The bootstrap for the sandbox topology over the given upstreams (cluster name = upstream name).
/// Without an audit log (`options.audit_log` needs [`sandbox_bootstrap_with_log`]).
pub fn sandbox_bootstrap(upstreams: &[Upstream], options: &SandboxOptions) -> Bootstrap {
    sandbox_bootstrap_with_log(upstreams, options, None)
}

/// [`sandbox_bootstrap`], writing the audit access log to `audit_log` if given.
pub fn sandbox_bootstrap_with_log(
    upstreams: &[Upstream],
    options: &SandboxOptions,
    audit_log: Option<&Path>,
) -> Bootstrap {
    let payment = VirtualHost::new("payment", domains_for(&kubernetes_names("payment")))
        .to_cluster(PAYMENT_BASELINE);
    let payment_sandbox = VirtualHost::new(
        "payment-feature-x",
        [
            PAYMENT_SANDBOX_AUTHORITY.to_owned(),
            format!("{PAYMENT_SANDBOX_AUTHORITY}:*"),
        ],
    )
    .to_cluster(PAYMENT_SANDBOX);
    let inventory = VirtualHost::new("inventory", domains_for(&kubernetes_names("inventory")))
        .route(Route::ClusterFromHeader {
            header: CLUSTER_HEADER.to_owned(),
        })
        .to_cluster(INVENTORY_BASELINE);
    let catalog = VirtualHost::new("catalog", domains_for(&kubernetes_names("catalog")))
        .to_cluster(CATALOG_BASELINE);
    let fallback = VirtualHost::new("default", ["*"]).to_cluster(DEFAULT_UPSTREAM);
    let timeout = |vhost: VirtualHost| {
        let vhost = vhost.rate_limits(options.rate_limits.clone());
        match options.route_timeout {
            Some(t) => vhost.route_timeout(t),
            None => vhost,
        }
    };
    let (payment, payment_sandbox, inventory, catalog, fallback) = (
        timeout(payment),
        timeout(payment_sandbox),
        timeout(inventory),
        timeout(catalog),
        timeout(fallback),
    );

    let mut listener = Listener::new(LISTENER)
        .virtual_host(payment)
        .virtual_host(payment_sandbox)
        .virtual_host(inventory)
        .virtual_host(catalog)
        .virtual_host(fallback);
    if let Some(kb) = options.max_request_headers_kb {
        listener = listener.max_request_headers_kb(kb);
    }
    if let Some(ip) = &options.listener_address {
        listener = listener.address(ip);
    }
    for (field, value) in &options.hcm_options {
        listener = listener.hcm_option(field, value.clone());
    }
    if let Some(path) = audit_log {
        listener = listener.access_log(audit::access_log(path));
    }
    if options.resolve_route_first {
        listener = listener.http_filter(lua_route_resolver());
    }
    let entry = match &options.ecds_file {
        Some(path) => Some(crate::ecds::discovered_filter(path)),
        None => sandbox_router_entry(options),
    };
    if let Some(filter) = entry {
        listener = listener.http_filter(filter);
    }
    for filter in &options.http_filters_after {
        listener = listener.http_filter(filter.clone());
    }

    let mut bootstrap = Bootstrap::new().listener(listener);
    if options.stats_tags {
        bootstrap = bootstrap.stats_tags(stats_tags());
    }
    if let Some(metadata) = &options.node_metadata {
        bootstrap = bootstrap.node_metadata(metadata.clone());
    }
    let bootstrap = upstreams.iter().fold(bootstrap, |b, u| {
        b.cluster(Cluster::new(u.name(), u.port()).http2(options.upstream_http2))
    });
    options
        .extra_clusters
        .iter()
        .fold(bootstrap, |b, c| b.cluster(c.clone()))
}

/// The sandbox-router's HTTP filter entry for `options`, if it runs the filter.
fn sandbox_router_entry(options: &SandboxOptions) -> Option<Value> {
    if let Some(entry) = &options.prebuilt_entry {
        return Some(entry.clone());
    }
    let wasm = options.wasm.clone().unwrap_or_else(paths::filter_wasm);
    // The plain entry is built here, so that tests can hand the filter any configuration
    // (the generator checks a table before rendering it).
    match (
        &options.raw_filter_config,
        &options.filter_config,
        options.entry,
    ) {
        (Some(raw), _, FilterEntry::Plain) => {
            Some(wasm_filter_from(&wasm, raw, options.failure_policy))
        }
        (None, Some(config), FilterEntry::Plain) => Some(wasm_filter_from(
            &wasm,
            &config.to_string(),
            options.failure_policy,
        )),
        (Some(_), _, FilterEntry::FastPath) => {
            panic!("a raw filter configuration has no generated fast path: use FilterEntry::Plain")
        }
        (None, Some(config), FilterEntry::FastPath) => Some(filter_entry::render(
            config,
            &wasm,
            options.failure_policy,
            FilterEntry::FastPath,
        )),
        (None, None, _) => None,
    }
}

/// The filter's debug decision header on a response.
pub fn decision(response: &TestResponse) -> Option<String> {
    response.header(DECISION_HEADER)
}
