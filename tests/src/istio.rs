//! Istio: the manifests of `istio/`, their validation against Istio's published schemas
//! (`tests/istio-validate/`, run with Node.js), and an Envoy configured in the shape istiod
//! generates for an outbound sidecar, with the sandbox-router inserted the way a WasmPlugin (or
//! the EnvoyFilter of `istio/envoyfilter.yaml`) puts it there.
//!
//! The sidecar shape (what `istioctl proxy-config` shows for an app in namespace `shop` calling
//! services on port 8080):
//! - listener `0.0.0.0_8080` (bound here to 127.0.0.1 on a free port: in a pod, iptables
//!   redirects the app's connections to it), HCM `stat_prefix: outbound_0.0.0.0_8080`;
//! - route configuration `8080`, one virtual host per service named `<fqdn>:8080` whose domains
//!   are every Kubernetes name of the service with and without the port, plus `allow_any`;
//! - clusters `outbound|8080||<fqdn>` (here: static, pointing at in-process echo upstreams);
//! - HTTP filters: `[AUTHN plugins] [AUTHZ plugins] [STATS plugins] [UNSPECIFIED plugins]
//!   grpc_stats fault cors router`, plugins by priority within a phase (istiod also adds
//!   `istio.metadata_exchange` first and `istio.alpn` and `istio.stats`, which only exist in
//!   Istio's proxy build; see [`outbound_http_filters`]);
//! - the WasmPlugin as istiod renders it (sent through ECDS, with the module downloaded by the
//!   agent and given to Envoy as a local file): filter
//!   `extensions.istio.io/wasmplugin/shop.sandbox-router`, `config.name: shop.sandbox-router`,
//!   `root_id` = `pluginName`, runtime V8, `configuration` = the JSON text of `pluginConfig`
//!   (numbers as protobuf `Struct` doubles print), `failure_policy` from `failStrategy`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use crate::client::{TestRequest, TestResponse};
use crate::envoy::{Bootstrap, Cluster, Envoy, EnvoyBuilder, Listener};
use crate::paths;
use crate::upstream::Upstream;

pub const NAMESPACE: &str = "shop";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The service port of every service of the shop (and so of the sidecar's listener).
pub const SERVICE_PORT: u16 = 8080;
/// Istio's name for the sidecar's outbound listener of `SERVICE_PORT`.
pub const OUTBOUND_LISTENER: &str = "0.0.0.0_8080";
/// Istio's cluster for hosts it does not know (`ALLOW_ANY` outbound traffic policy).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Prefix istiod gives the HTTP filter of a WasmPlugin.
pub const WASM_PLUGIN_RESOURCE_PREFIX: &str = "extensions.istio.io/wasmplugin/";
/// The environment variable istiod sets in the VM of a WasmPlugin.
const WASM_RESOURCE_VERSION_ENV: &str = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION";

/// The services of the test mesh (all in `shop`, port 8080) and the upstream answering for each.
/// Upstream names are `<app>@<version>`.
pub const SERVICES: [(&str, &str); 4] = [
    ("payment", "payment@baseline"),
    ("payment-feature-y", "payment@feature-y"),
    ("cart", "cart@baseline"),
    ("cart-feature-x", "cart@feature-x"),
];
/// The upstream behind `PassthroughCluster` (a host outside the mesh).
pub const PASSTHROUGH_UPSTREAM: &str = "outside-the-mesh";

// ------------------------------------------------------------------------------ manifests ---

/// `<workspace>/istio`.
pub fn manifest_dir() -> PathBuf {
    paths::workspace_root().join("istio")
}

/// Every `*.yaml` of `istio/`, sorted.
pub fn manifest_files() -> Vec<PathBuf> {
    let dir = manifest_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
        .collect();
    files.sort();
    files
}

/// The documents of a multi-document YAML text, as JSON values (empty documents skipped).
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The documents of `istio/<file>`.
pub fn load_manifests(file: &str) -> Vec<Value> {
    let path = manifest_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_yaml_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one document of `kind` in `istio/<file>`.
pub fn load_manifest(file: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = load_manifests(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} in istio/{file}, found {}",
        found.len()
    );
    found.remove(0)
}

/// `istio/wasmplugin.yaml`'s WasmPlugin.
pub fn wasm_plugin() -> Value {
    load_manifest("wasmplugin.yaml", "WasmPlugin")
}

/// `istio/envoyfilter.yaml`'s EnvoyFilter.
pub fn envoy_filter() -> Value {
    load_manifest("envoyfilter.yaml", "EnvoyFilter")
}

/// A WasmPlugin's `spec.pluginConfig` (panics when it has none).
pub fn plugin_config(wasm_plugin: &Value) -> &Value {
    let config = &wasm_plugin["spec"]["pluginConfig"];
    assert!(
        config.is_object(),
        "the WasmPlugin has no spec.pluginConfig object: {wasm_plugin}"
    );
    config
}

/// `value` as istiod passes a `google.protobuf.Struct` to the filter: every number is a double,
/// and whole doubles print without a fraction (`100.0` → `100`).
pub fn as_protobuf_struct(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                // Exact: |f| < 2^53.
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                json!(i)
            } else {
                json!(f)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(as_protobuf_struct).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_protobuf_struct(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The filter configuration text istiod generates from a WasmPlugin's `pluginConfig`: compact
/// JSON, keys sorted (protojson), numbers as `Struct` doubles.
pub fn plugin_config_text(plugin_config: &Value) -> String {
    as_protobuf_struct(plugin_config).to_string()
}

// ---------------------------------------------------------------------------- Istio names ---

/// `<service>.shop.svc.cluster.local`.
pub fn fqdn(service: &str) -> String {
    format!("{service}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}")
}

/// `outbound|<port>||<fqdn>`.
pub fn outbound_cluster_name(service: &str, port: u16) -> String {
    format!("outbound|{port}||{}", fqdn(service))
}

/// The domains of a service's virtual host in route configuration `<port>`: every Kubernetes
/// name (`fqdn`, `svc`, `svc.ns`, `svc.ns.svc`), each without and with the port.
pub fn virtual_host_domains(service: &str, port: u16) -> Vec<String> {
    [
        fqdn(service),
        service.to_owned(),
        format!("{service}.{NAMESPACE}"),
        format!("{service}.{NAMESPACE}.svc"),
    ]
    .into_iter()
    .flat_map(|name| [name.clone(), format!("{name}:{port}")])
    .collect()
}

/// A service's virtual host as istiod writes it: name `<fqdn>:<port>`, route `default` to
/// `outbound|<port>||<fqdn>` with Istio's default retry policy and no timeout.
pub fn virtual_host(service: &str, port: u16) -> Value {
    let name = format!("{}:{port}", fqdn(service));
    json!({
        "name": name,
        "domains": virtual_host_domains(service, port),
        "routes": [{
            "name": "default",
            "match": { "prefix": "/" },
            "route": {
                "cluster": outbound_cluster_name(service, port),
                "timeout": "0s",
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                    "num_retries": 2,
                    "retry_host_predicate": [{
                        "name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                        }
                    }],
                    "host_selection_retry_max_attempts": "5",
                    "retriable_status_codes": [503]
                },
                "max_stream_duration": { "max_stream_duration": "0s", "grpc_timeout_header_max": "0s" }
            },
            "decorator": { "operation": format!("{name}/*") }
        }],
        "include_request_attempt_count": true
    })
}

/// Route configuration `<port>`: a virtual host per service, then `allow_any`.
pub fn route_configuration(services: &[&str], port: u16) -> Value {
    let mut hosts: Vec<Value> = services.iter().map(|s| virtual_host(s, port)).collect();
    hosts.push(json!({
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{
            "name": "allow_any",
            "match": { "prefix": "/" },
            "route": { "cluster": PASSTHROUGH_CLUSTER, "timeout": "0s" }
        }],
        "include_request_attempt_count": true
    }));
    json!({
        "name": port.to_string(),
        "virtual_hosts": hosts,
        "validate_clusters": false
    })
}

// ------------------------------------------------------------------- the filter, as Istio ---

/// WasmPlugin / TrafficExtension phases, in filter-chain order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    /// `UNSPECIFIED_PHASE` (or no phase): last, right before Istio's own filters.
    Unspecified,
}

impl Phase {
    pub fn parse(text: Option<&str>) -> Phase {
        match text {
            Some("AUTHN") => Phase::Authn,
            Some("AUTHZ") => Phase::Authz,
            Some("STATS") => Phase::Stats,
            None | Some("UNSPECIFIED_PHASE") | Some("UNSPECIFIED") => Phase::Unspecified,
            Some(other) => panic!("unknown phase {other:?}"),
        }
    }
}

/// A Wasm filter placed by phase and priority (higher priority first within a phase).
#[derive(Clone, Debug)]
pub struct PlacedFilter {
    pub phase: Phase,
    /// `spec.priority`; unset sorts last, as istiod reads it as the lowest int32.
    pub priority: i64,
    pub filter: Value,
}

/// Envoy's `failure_policy` for a WasmPlugin `failStrategy` (FAIL_CLOSE when unset).
pub fn failure_policy(fail_strategy: Option<&str>) -> &'static str {
    match fail_strategy {
        None | Some("FAIL_CLOSE") => "FAIL_CLOSED",
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_RELOAD") => "FAIL_RELOAD",
        Some(other) => panic!("unknown failStrategy {other:?}"),
    }
}

/// The HTTP filter istiod generates for a WasmPlugin manifest, with the module at `wasm` (where
/// the Istio agent would have put the downloaded image's `plugin.wasm`).
pub fn wasm_plugin_filter(wasm_plugin: &Value, wasm: &Path) -> PlacedFilter {
    let meta = &wasm_plugin["metadata"];
    let spec = &wasm_plugin["spec"];
    let namespace = meta["namespace"].as_str().unwrap_or(NAMESPACE);
    let name = meta["name"]
        .as_str()
        .expect("the WasmPlugin has a metadata.name");
    let resource = format!("{namespace}.{name}");
    let mut config = json!({
        "name": resource,
        "root_id": spec["pluginName"].as_str().unwrap_or_default(),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": { "local": { "filename": wasm.to_string_lossy() } },
            "environment_variables": { "key_values": { WASM_RESOURCE_VERSION_ENV: "1" } }
        },
        "failure_policy": failure_policy(spec["failStrategy"].as_str()),
    });
    if spec["pluginConfig"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        config["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin_config_text(&spec["pluginConfig"]),
        });
    }
    PlacedFilter {
        phase: Phase::parse(spec["phase"].as_str()),
        priority: spec["priority"]
            .as_i64()
            .unwrap_or_else(|| i64::from(i32::MIN)),
        filter: json!({
            "name": format!("{WASM_PLUGIN_RESOURCE_PREFIX}{resource}"),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            }
        }),
    }
}

/// The HTTP filters of an outbound sidecar listener, in the order istiod's
/// `buildHTTPConnectionManager` (istio/istio `pilot/pkg/networking/core/listener_builder.go`)
/// appends them: `istio.metadata_exchange`; the AUTHN plugins; the JWT and authn filters (none
/// on an outbound listener: inbound and gateways only); the AUTHZ plugins; RBAC and ext_authz
/// (inbound and gateways only); the STATS plugins; the UNSPECIFIED_PHASE plugins; `grpc_stats`;
/// `istio.alpn`; `fault`; `cors`; `istio.stats`; `router`. Within a phase, plugins go by
/// `priority`, highest first (`WasmPluginsByListenerInfo`: a stable sort, unset = lowest), ties
/// in the given order. The `istio.*` filters exist only in Istio's proxy build: left out.
pub fn outbound_http_filters(plugins: Vec<PlacedFilter>) -> Vec<Value> {
    let mut filters = Vec::new();
    for phase in [Phase::Authn, Phase::Authz, Phase::Stats, Phase::Unspecified] {
        let mut in_phase: Vec<&PlacedFilter> =
            plugins.iter().filter(|p| p.phase == phase).collect();
        in_phase.sort_by_key(|p| std::cmp::Reverse(p.priority));
        filters.extend(in_phase.into_iter().map(|p| p.filter.clone()));
    }
    filters.extend([
        json!({
            "name": "envoy.filters.http.grpc_stats",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                "emit_filter_state": true,
                "stats_for_all_methods": false
            }
        }),
        json!({
            "name": "envoy.filters.http.fault",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault" }
        }),
        json!({
            "name": "envoy.filters.http.cors",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" }
        }),
        json!({
            "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
        }),
    ]);
    filters
}

/// Applies the HTTP_FILTER patches of an EnvoyFilter manifest (SIDECAR_OUTBOUND,
/// INSERT_BEFORE/INSERT_AFTER/INSERT_FIRST a named filter of the HCM) to `filters`, with the
/// Wasm module's local file replaced by `wasm`. EXTENSION_CONFIG patches add ECDS resources,
/// not filters: see [`crate::istio_fast_path`]. Panics on a patch this fixture cannot apply.
pub fn apply_envoy_filter(filters: &mut Vec<Value>, envoy_filter: &Value, wasm: &Path) {
    let patches = envoy_filter["spec"]["configPatches"]
        .as_array()
        .expect("the EnvoyFilter has spec.configPatches");
    assert!(!patches.is_empty(), "the EnvoyFilter has no patch");
    for patch in patches {
        if patch["applyTo"] == "EXTENSION_CONFIG" {
            continue;
        }
        assert_eq!(patch["applyTo"], "HTTP_FILTER", "{patch}");
        let context = patch["match"]["context"].as_str().unwrap_or("ANY");
        assert!(
            ["SIDECAR_OUTBOUND", "ANY"].contains(&context),
            "patch context {context} does not apply to an outbound sidecar listener"
        );
        let filter = &patch["match"]["listener"]["filterChain"]["filter"];
        assert_eq!(
            filter["name"], "envoy.filters.network.http_connection_manager",
            "{patch}"
        );
        let mut value = patch["patch"]["value"].clone();
        // (pointer_mut, not indexing: indexing would add the path to a filter without it)
        if let Some(code) = value.pointer_mut("/typed_config/config/vm_config/code") {
            if code.get("local").is_some() {
                code["local"] = json!({ "filename": wasm.to_string_lossy() });
            }
        }
        let anchor = filter["subFilter"]["name"].as_str();
        let position = |filters: &Vec<Value>| {
            let anchor = anchor.expect("INSERT_BEFORE/AFTER needs match...subFilter.name");
            filters
                .iter()
                .position(|f| f["name"] == anchor)
                .unwrap_or_else(|| panic!("no HTTP filter {anchor} to patch around"))
        };
        match patch["patch"]["operation"].as_str() {
            Some("INSERT_BEFORE") => {
                let at = position(filters);
                filters.insert(at, value);
            }
            Some("INSERT_AFTER") => {
                let at = position(filters) + 1;
                filters.insert(at, value);
            }
            Some("INSERT_FIRST") => filters.insert(0, value),
            other => panic!("this fixture does not apply operation {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------------- sidecars ---

/// Which sandbox-router configuration the sidecar runs.
#[derive(Clone, Debug)]
pub enum FilterSource {
    /// `istio/wasmplugin.yaml`, rendered as istiod does.
    WasmPlugin,
    /// This WasmPlugin manifest (e.g. a modified copy), rendered as istiod does.
    WasmPluginManifest(Value),
    /// `istio/envoyfilter.yaml`'s patch.
    EnvoyFilter,
    /// `istio/fast-path-envoyfilter.yaml`: its filter patch, and its Wasm filter by ECDS.
    FastPathEnvoyFilter,
    /// No filter: plain Istio routing.
    None,
}

/// The listener of an outbound sidecar for `SERVICE_PORT` with these HTTP filters.
pub fn outbound_listener(services: &[&str], http_filters: Vec<Value>) -> Listener {
    Listener::new(OUTBOUND_LISTENER)
        .hcm_option("stat_prefix", json!(format!("outbound_{OUTBOUND_LISTENER}")))
        .hcm_option(
            "route_config",
            route_configuration(services, SERVICE_PORT),
        )
        .hcm_option("http_filters", json!(http_filters))
        .hcm_option("use_remote_address", json!(false))
        .hcm_option("normalize_path", json!(true))
        .hcm_option("path_with_escaped_slashes_action", json!("KEEP_UNCHANGED"))
        .hcm_option("stream_idle_timeout", json!("0s"))
        .hcm_option("upgrade_configs", json!([{ "upgrade_type": "websocket" }]))
        .hcm_option(
            "request_id_extension",
            json!({
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                    "use_request_id_for_trace_sampling": true
                }
            }),
        )
}

/// The HTTP filters for a filter source (`wasm` is the built module).
pub fn http_filters_for(source: &FilterSource, wasm: &Path) -> Vec<Value> {
    match source {
        FilterSource::WasmPlugin => {
            outbound_http_filters(vec![wasm_plugin_filter(&wasm_plugin(), wasm)])
        }
        FilterSource::WasmPluginManifest(manifest) => {
            outbound_http_filters(vec![wasm_plugin_filter(manifest, wasm)])
        }
        FilterSource::EnvoyFilter => {
            let mut filters = outbound_http_filters(Vec::new());
            apply_envoy_filter(&mut filters, &envoy_filter(), wasm);
            filters
        }
        FilterSource::FastPathEnvoyFilter => {
            panic!("the fast path needs an ECDS file: use istio_fast_path::http_filters")
        }
        FilterSource::None => outbound_http_filters(Vec::new()),
    }
}

/// One outbound sidecar (of an app in namespace `shop`) in front of echo upstreams standing for
/// the pods of `SERVICES`, plus one for `PassthroughCluster`.
pub struct IstioSidecarEnv {
    // Field order matters: Envoy stops before the upstreams (and its ECDS files) go away.
    pub envoy: Envoy,
    upstreams: Vec<Upstream>,
    _ecds_dir: Option<tempfile::TempDir>,
}

impl IstioSidecarEnv {
    pub async fn start(source: FilterSource) -> IstioSidecarEnv {
        let mut upstreams = Vec::new();
        for (_, upstream) in SERVICES {
            upstreams.push(Upstream::start(upstream).await);
        }
        upstreams.push(Upstream::start(PASSTHROUGH_UPSTREAM).await);
        let ports: BTreeMap<&str, u16> = upstreams.iter().map(|u| (u.name(), u.port())).collect();
        let services: Vec<&str> = SERVICES.iter().map(|(s, _)| *s).collect();
        let wasm = match source {
            FilterSource::None => PathBuf::new(),
            _ => paths::filter_wasm(),
        };
        let (http_filters, ecds_dir) = match source {
            FilterSource::FastPathEnvoyFilter => {
                let dir = tempfile::tempdir().expect("a temp dir for the ECDS file");
                let filters = crate::istio_fast_path::http_filters(dir.path(), &wasm);
                (filters, Some(dir))
            }
            _ => (http_filters_for(&source, &wasm), None),
        };
        let mut bootstrap = Bootstrap::new().listener(outbound_listener(&services, http_filters));
        for (service, upstream) in SERVICES {
            bootstrap = bootstrap.cluster(Cluster::new(
                &outbound_cluster_name(service, SERVICE_PORT),
                ports[upstream],
            ));
        }
        bootstrap = bootstrap.cluster(Cluster::new(
            PASSTHROUGH_CLUSTER,
            ports[PASSTHROUGH_UPSTREAM],
        ));
        let envoy = EnvoyBuilder::new(bootstrap).start().await;
        IstioSidecarEnv {
            envoy,
            upstreams,
            _ecds_dir: ecds_dir,
        }
    }

    /// The outbound listener (what the app's connections to any `<service>:8080` reach).
    pub fn addr(&self) -> SocketAddr {
        self.envoy.listener(OUTBOUND_LISTENER)
    }

    pub async fn send(&self, request: TestRequest) -> TestResponse {
        request.send(self.addr()).await
    }

    pub fn upstream(&self, name: &str) -> &Upstream {
        self.upstreams
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no upstream {name:?}"))
    }
}

// ----------------------------------------------------------------------------- validation ---

/// `<workspace>/tests/istio-validate`: the Node.js validator and its npm lock file.
pub fn validator_dir() -> PathBuf {
    paths::workspace_root().join("tests").join("istio-validate")
}

/// Where the istio/api CRDs are: `$ISTIO_CRDS_DIR`, else `../shared/istio-crds` from the
/// repository root. May not exist.
pub fn crd_dir() -> PathBuf {
    match std::env::var_os("ISTIO_CRDS_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => paths::workspace_root()
            .join("..")
            .join("shared")
            .join("istio-crds"),
    }
}

fn run_checked(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Installs the validator's npm packages (`npm ci`) when `node_modules` is missing or older
/// than the lock file. Once per test process.
pub fn ensure_validator_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    if DONE.get().is_some() {
        return;
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if DONE.get().is_some() {
        return;
    }
    let dir = validator_dir();
    let marker = dir.join("node_modules").join(".package-lock.json");
    let lock = dir.join("package-lock.json");
    let stale = match (std::fs::metadata(&marker), std::fs::metadata(&lock)) {
        (Ok(m), Ok(l)) => match (m.modified(), l.modified()) {
            (Ok(m), Ok(l)) => m < l,
            _ => false,
        },
        _ => true,
    };
    if stale {
        eprintln!(
            "installing the validator's npm packages: npm ci in {}",
            dir.display()
        );
        run_checked(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci (needs Node.js 20+ and npm)",
        );
    }
    let _ = DONE.set(());
}

/// The outcome of one validator run.
#[derive(Debug)]
pub struct Validation {
    pub success: bool,
    /// The `--json` report: `{ok, crds: {dir, loaded, skipped}, documents: [...]}`.
    pub report: Value,
    pub stderr: String,
}

impl Validation {
    /// The statuses by validator of document `index` of `source` ending with `source_suffix`.
    pub fn checks(&self, source_suffix: &str, index: u64) -> BTreeMap<String, String> {
        let document = self.report["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| {
                d["source"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(source_suffix))
                    && d["index"] == index
            })
            .unwrap_or_else(|| panic!("no document {source_suffix}#{index} in {:#}", self.report));
        document["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["validator"].as_str().unwrap_or_default().to_owned(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Every error message of the report, `validator: message`.
    pub fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for document in self.report["documents"].as_array().into_iter().flatten() {
            for check in document["checks"].as_array().into_iter().flatten() {
                for error in check["errors"].as_array().into_iter().flatten() {
                    errors.push(format!(
                        "{}#{} {}: {}",
                        document["source"].as_str().unwrap_or_default(),
                        document["index"],
                        check["validator"].as_str().unwrap_or_default(),
                        error.as_str().unwrap_or_default()
                    ));
                }
            }
        }
        errors
    }

    /// Whether the CRD checks ran (the CRD directory exists).
    pub fn crds_checked(&self) -> bool {
        self.report["crds"]["skipped"].is_null()
    }
}

/// Runs `node tests/istio-validate/validate.mjs --json --crds <crd_dir()>` on `files`, or on
/// `stdin` when given (as `-`).
pub fn validate_manifests(files: &[PathBuf], stdin: Option<&str>) -> Validation {
    ensure_validator_installed();
    let mut command = Command::new("node");
    command
        .arg(validator_dir().join("validate.mjs"))
        .arg("--json")
        .arg("--crds")
        .arg(crd_dir())
        .current_dir(paths::workspace_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        command.arg("-");
    } else {
        command.args(files);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20+ is needed): {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .expect("write the manifest to the validator");
    }
    let output = child.wait_with_output().expect("wait for node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "the validator printed no JSON report ({e}; exit {}):\n{stdout}\n{stderr}",
            output.status
        )
    });
    Validation {
        success: output.status.success(),
        report,
        stderr,
    }
}

// --------------------------------------------------------------------------- a two-hop mesh ---

/// Request header telling a [`MeshApp`] not to propagate `baggage` on its onward call (an app
/// without OpenTelemetry baggage propagation).
pub const NO_PROPAGATION_HEADER: &str = "x-test-no-propagation";

/// An app of the mesh that calls the next service through its own sidecar, as a real app does:
/// for each request it sends `GET <next_host><path>` to its sidecar's outbound listener, copying
/// `baggage` (unless the request has [`NO_PROPAGATION_HEADER`]), and answers `200` with header
/// `x-upstream: <name>` and the JSON `{"upstream", "authority", "baggage", "next": {"status",
/// "upstream", "echo"}}` (`echo`: the next service's JSON answer).
pub struct MeshApp {
    name: String,
    addr: SocketAddr,
    sidecar: std::sync::Arc<OnceLock<SocketAddr>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl MeshApp {
    /// Starts the app; it answers 503 until [`MeshApp::set_sidecar`] is called.
    pub async fn start(name: &str, next_host: &str) -> MeshApp {
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("app {name}: bind: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let sidecar: std::sync::Arc<OnceLock<SocketAddr>> = std::sync::Arc::default();
        let shared = std::sync::Arc::new((name.to_owned(), next_host.to_owned(), sidecar.clone()));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            let (name, next_host, sidecar) = &*shared;
                            Ok::<_, std::convert::Infallible>(
                                mesh_app_answer(name, next_host, sidecar.get().copied(), req).await,
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MeshApp {
            name: name.to_owned(),
            addr,
            sidecar,
            accept_task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The outbound listener of this app's sidecar.
    pub fn set_sidecar(&self, sidecar: SocketAddr) {
        let _ = self.sidecar.set(sidecar);
    }
}

impl Drop for MeshApp {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn mesh_app_answer(
    name: &str,
    next_host: &str,
    sidecar: Option<SocketAddr>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<crate::body::Frames> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let baggage: Vec<String> = parts
        .headers
        .get_all("baggage")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let propagate = !parts.headers.contains_key(NO_PROPAGATION_HEADER);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();

    let (status, next) = match sidecar {
        None => (503, json!({ "error": "no sidecar yet" })),
        Some(sidecar) => {
            let mut onward = TestRequest::get(next_host, &path);
            if propagate {
                for value in &baggage {
                    onward = onward.header("baggage", value);
                }
            }
            match onward.try_send(sidecar).await {
                Ok(response) => {
                    let echo: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                    (
                        200,
                        json!({
                            "status": response.status.as_u16(),
                            "upstream": response.upstream(),
                            "echo": echo,
                        }),
                    )
                }
                Err(e) => (502, json!({ "error": e })),
            }
        }
    };
    let body = json!({
        "upstream": name,
        "authority": authority,
        "baggage": baggage,
        "next": next,
    });
    http::Response::builder()
        .status(status)
        .header(crate::upstream::UPSTREAM_HEADER, name)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::body::Frames::data(body.to_string()))
        .expect("valid app response")
}

/// `frontend → cart → payment` in the shape of an Istio mesh: the test client plays the
/// `frontend` app behind its sidecar; `cart@baseline` and `cart@feature-x` are [`MeshApp`]s
/// that call `payment:8080` through the `cart` sidecar; `payment@baseline` and
/// `payment@feature-y` are echo upstreams. Both sidecars are Istio-shaped outbound sidecars
/// running `istio/wasmplugin.yaml` (one Envoy stands for the sidecars of both cart pods: their
/// configurations are identical).
pub struct IstioMesh {
    // Field order matters: the Envoys stop before the apps and upstreams go away.
    pub frontend_sidecar: Envoy,
    pub cart_sidecar: Envoy,
    apps: Vec<MeshApp>,
    upstreams: Vec<Upstream>,
}

impl IstioMesh {
    pub async fn start() -> IstioMesh {
        let apps = vec![
            MeshApp::start("cart@baseline", "payment:8080").await,
            MeshApp::start("cart@feature-x", "payment:8080").await,
        ];
        let mut upstreams = Vec::new();
        for name in [
            "payment@baseline",
            "payment@feature-y",
            PASSTHROUGH_UPSTREAM,
        ] {
            upstreams.push(Upstream::start(name).await);
        }
        let mut ports: BTreeMap<&str, u16> =
            upstreams.iter().map(|u| (u.name(), u.port())).collect();
        ports.extend(apps.iter().map(|a| (a.name(), a.port())));

        let wasm = paths::filter_wasm();
        let services: Vec<&str> = SERVICES.iter().map(|(s, _)| *s).collect();
        let bootstrap = || {
            let mut bootstrap = Bootstrap::new().listener(outbound_listener(
                &services,
                http_filters_for(&FilterSource::WasmPlugin, &wasm),
            ));
            for (service, upstream) in SERVICES {
                bootstrap = bootstrap.cluster(Cluster::new(
                    &outbound_cluster_name(service, SERVICE_PORT),
                    ports[upstream],
                ));
            }
            bootstrap.cluster(Cluster::new(
                PASSTHROUGH_CLUSTER,
                ports[PASSTHROUGH_UPSTREAM],
            ))
        };
        let (frontend_sidecar, cart_sidecar) = tokio::join!(
            EnvoyBuilder::new(bootstrap()).start(),
            EnvoyBuilder::new(bootstrap()).start()
        );
        for app in &apps {
            app.set_sidecar(cart_sidecar.listener(OUTBOUND_LISTENER));
        }
        IstioMesh {
            frontend_sidecar,
            cart_sidecar,
            apps,
            upstreams,
        }
    }

    /// Sends a request as the `frontend` app does: to its sidecar's outbound listener.
    pub async fn send(&self, request: TestRequest) -> TestResponse {
        request
            .send(self.frontend_sidecar.listener(OUTBOUND_LISTENER))
            .await
    }

    pub fn upstream(&self, name: &str) -> &Upstream {
        self.upstreams
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no upstream {name:?}"))
    }

    pub fn app_count(&self) -> usize {
        self.apps.len()
    }
}
