//! A small description of an Envoy bootstrap (listeners, virtual hosts, routes, clusters,
//! extra HTTP filters) and its rendering to bootstrap JSON (which Envoy reads as YAML).

use serde_json::{json, Value};

/// The whole bootstrap. Admin is always on 127.0.0.1:0 (see `EnvoyBuilder`).
#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// `stats_config.stats_tags`: tag extractors (`tag_name` + `regex`).
    pub stats_tags: Vec<Value>,
    /// `node.metadata` (e.g. Istio's `NAMESPACE`), which the filter reads as host properties.
    pub node_metadata: Option<Value>,
}

/// An HTTP listener on 127.0.0.1:0 with one HTTP connection manager (`codec_type: AUTO`, so
/// HTTP/1.1 and h2c prior knowledge both work).
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// HTTP filters placed before `envoy.filters.http.router`, in order.
    pub http_filters: Vec<Value>,
    /// HCM `max_request_headers_kb` (Envoy's default is 60).
    pub max_request_headers_kb: Option<u32>,
    /// HCM `access_log` entries.
    pub access_logs: Vec<Value>,
    /// The IP the listener binds (port 0); `127.0.0.1` unless set (e.g. `::1`).
    pub address: String,
    /// Extra HCM fields, set verbatim (e.g. `use_remote_address`).
    pub hcm_options: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    /// `timeout` of every forwarding route of this host (Envoy's default is 15 s).
    pub route_timeout: Option<std::time::Duration>,
    /// `rate_limits` of every forwarding route of this host (none if empty).
    pub rate_limits: Vec<Value>,
}

#[derive(Clone, Debug)]
pub enum Route {
    /// `prefix` → a fixed cluster. Named `to-<cluster>`.
    ToCluster { prefix: String, cluster: String },
    /// When request header `header` is present, route to the cluster it names. Named `by-<header>`.
    ClusterFromHeader { header: String },
    /// Any route object, verbatim.
    Raw(Value),
}

/// A STATIC cluster with one endpoint on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub port: u16,
    /// Speak HTTP/2 (h2c) to the upstream instead of HTTP/1.1.
    pub http2: bool,
}

impl Listener {
    pub fn new(name: &str) -> Self {
        Listener {
            name: name.to_owned(),
            virtual_hosts: Vec::new(),
            http_filters: Vec::new(),
            max_request_headers_kb: None,
            access_logs: Vec::new(),
            address: "127.0.0.1".to_owned(),
            hcm_options: Vec::new(),
        }
    }

    pub fn virtual_host(mut self, vhost: VirtualHost) -> Self {
        self.virtual_hosts.push(vhost);
        self
    }

    pub fn http_filter(mut self, filter: Value) -> Self {
        self.http_filters.push(filter);
        self
    }

    pub fn max_request_headers_kb(mut self, kb: u32) -> Self {
        self.max_request_headers_kb = Some(kb);
        self
    }

    /// Adds an HCM `access_log` entry.
    pub fn access_log(mut self, access_log: Value) -> Self {
        self.access_logs.push(access_log);
        self
    }

    /// Binds the listener to this IP (port 0) instead of 127.0.0.1.
    pub fn address(mut self, ip: &str) -> Self {
        self.address = ip.to_owned();
        self
    }

    /// Sets an extra HCM field verbatim.
    pub fn hcm_option(mut self, field: &str, value: Value) -> Self {
        self.hcm_options.push((field.to_owned(), value));
        self
    }

    fn render(&self) -> Value {
        let mut filters = self.http_filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            }
        }));
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": self.name,
            "codec_type": "AUTO",
            "route_config": {
                "name": format!("{}-routes", self.name),
                "virtual_hosts": self.virtual_hosts.iter().map(VirtualHost::render).collect::<Vec<_>>(),
            },
            "http_filters": filters,
        });
        if let Some(kb) = self.max_request_headers_kb {
            hcm["max_request_headers_kb"] = json!(kb);
        }
        if !self.access_logs.is_empty() {
            hcm["access_log"] = json!(self.access_logs);
        }
        for (field, value) in &self.hcm_options {
            hcm[field.as_str()] = value.clone();
        }
        json!({
            "name": self.name,
            // Listener stats are named after the listener (`listener.<name>.worker_<n>.…`)
            // rather than its configured address, which every port-0 listener shares.
            "stat_prefix": self.name,
            "address": { "socket_address": { "address": self.address, "port_value": 0 } },
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]
            }]
        })
    }
}

impl VirtualHost {
    pub fn new(name: &str, domains: impl IntoIterator<Item = impl Into<String>>) -> Self {
        VirtualHost {
            name: name.to_owned(),
            domains: domains.into_iter().map(Into::into).collect(),
            routes: Vec::new(),
            route_timeout: None,
            rate_limits: Vec::new(),
        }
    }

    /// Sets `rate_limits` on every forwarding route of this host (Envoy's global rate limit
    /// filter builds its descriptors from them).
    pub fn rate_limits(mut self, rate_limits: Vec<Value>) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// Sets `timeout` on every forwarding route of this host.
    pub fn route_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.route_timeout = Some(timeout);
        self
    }

    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Shorthand: every path to `cluster`.
    pub fn to_cluster(self, cluster: &str) -> Self {
        self.route(Route::ToCluster {
            prefix: "/".to_owned(),
            cluster: cluster.to_owned(),
        })
    }

    fn render(&self) -> Value {
        json!({
            "name": self.name,
            "domains": self.domains,
            "routes": self.routes.iter().map(|route| {
                let mut rendered = route.render();
                if let Some(action) = rendered.get_mut("route") {
                    if let Some(timeout) = self.route_timeout {
                        action["timeout"] = json!(format!("{}s", timeout.as_secs_f64()));
                    }
                    if !self.rate_limits.is_empty() {
                        action["rate_limits"] = json!(self.rate_limits);
                    }
                }
                rendered
            }).collect::<Vec<_>>(),
        })
    }
}

impl Route {
    fn render(&self) -> Value {
        match self {
            Route::ToCluster { prefix, cluster } => json!({
                "name": format!("to-{cluster}"),
                "match": { "prefix": prefix },
                "route": { "cluster": cluster },
            }),
            Route::ClusterFromHeader { header } => json!({
                "name": format!("by-{header}"),
                "match": {
                    "prefix": "/",
                    "headers": [{ "name": header, "present_match": true }],
                },
                "route": { "cluster_header": header },
            }),
            Route::Raw(value) => value.clone(),
        }
    }
}

impl Cluster {
    pub fn new(name: &str, port: u16) -> Self {
        Cluster {
            name: name.to_owned(),
            port,
            http2: false,
        }
    }

    pub fn http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }

    fn render(&self) -> Value {
        let mut cluster = json!({
            "name": self.name,
            "type": "STATIC",
            "connect_timeout": "5s",
            "load_assignment": {
                "cluster_name": self.name,
                "endpoints": [{
                    "lb_endpoints": [{
                        "endpoint": {
                            "address": {
                                "socket_address": { "address": "127.0.0.1", "port_value": self.port }
                            }
                        }
                    }]
                }]
            }
        });
        if self.http2 {
            cluster["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} }
                }
            });
        }
        cluster
    }
}

impl Bootstrap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// Adds `stats_config.stats_tags` entries (each `{"tag_name", "regex"}`).
    pub fn stats_tags(mut self, tags: impl IntoIterator<Item = Value>) -> Self {
        self.stats_tags.extend(tags);
        self
    }

    /// Sets `node.metadata`.
    pub fn node_metadata(mut self, metadata: Value) -> Self {
        self.node_metadata = Some(metadata);
        self
    }

    /// The bootstrap document (admin on 127.0.0.1:0).
    pub fn render(&self) -> Value {
        let mut bootstrap = json!({
            // A node identity, as every xDS client needs (ECDS from a file included).
            "node": { "id": "sandbox-router-test", "cluster": "sandbox-router-test" },
            "admin": {
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } }
            },
            "static_resources": {
                "listeners": self.listeners.iter().map(Listener::render).collect::<Vec<_>>(),
                "clusters": self.clusters.iter().map(Cluster::render).collect::<Vec<_>>(),
            }
        });
        if !self.stats_tags.is_empty() {
            bootstrap["stats_config"] = json!({ "stats_tags": self.stats_tags });
        }
        if let Some(metadata) = &self.node_metadata {
            bootstrap["node"]["metadata"] = metadata.clone();
        }
        bootstrap
    }
}
