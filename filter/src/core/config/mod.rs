//! The filter's JSON configuration: parsed strictly (serde, unknown fields and duplicate keys
//! refused at every level), validated, and compiled into a [`Router`]. Every error names the
//! field path and the reason: `sandboxes.feature-x.routes.payment: set exactly one of …`.
//!
//! `sandboxes` is kept raw (borrowed from the input) while the rest is read, since the fields
//! every sandbox is compiled against may come after it; then it is read again and compiled one
//! sandbox at a time, so a large table never exists whole in a second form.

mod error;
mod headers;
mod raw;
mod sandboxes;
mod strict;
mod validate;

use serde::Deserialize;

use super::names::{is_dns_label, is_dns_name};
use super::router::Router;
use super::router::{RouterBuilder, Settings};

pub use error::ConfigError;
use error::{error, parse_error};
use headers::{carriers, check_roles_are_distinct, cluster_header, key_header};
pub use raw::DEFAULT_BAGGAGE_MEMBER;
use raw::{RawConfig, UnknownKeys};
use sandboxes::{compile_sandboxes, SandboxContext};
use strict::Object;
use validate::{circuit_breaker, max_in_flight, rate_limit, trust};

pub const DEFAULT_CLUSTER_HEADER: &str = "x-sandbox-cluster";
pub const DEFAULT_KEY_HEADER: &str = "x-sandbox-key";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Shared-data key prefix of the per-sandbox budget cells.
pub const BUDGET_KEY_PREFIX: &str = "sandbox-router/budget/";
/// Shared-data key prefix of the per-sandbox circuit breaker cells.
pub const CIRCUIT_KEY_PREFIX: &str = "sandbox-router/circuit/";

/// What the host knows about the proxy, used where the configuration is silent.
#[derive(Debug, Default, Clone)]
pub struct HostFacts {
    /// Istio node metadata `NAMESPACE`.
    pub namespace: Option<String>,
}

/// Parses, validates and compiles a configuration. Empty input means no sandboxes.
pub fn compile(json: &[u8], facts: &HostFacts) -> Result<Router, ConfigError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return build(json, RawConfig::default(), facts);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let raw = Object::<RawConfig<'_>>::deserialize(serde_path_to_error::Deserializer::new(
        &mut deserializer,
        &mut track,
    ))
    .map_err(|e| parse_error(&track.path().to_string(), &e, "", None))?;
    deserializer
        .end()
        .map_err(|e| parse_error(".", &e, "", None))?;
    build(json, raw.0, facts)
}

fn build(document: &[u8], raw: RawConfig<'_>, facts: &HostFacts) -> Result<Router, ConfigError> {
    let carriers = carriers(&raw.routing_key.0)?;
    let namespace = match raw.namespace {
        Some(ns) if !is_dns_label(&ns) => {
            return Err(error(
                "namespace",
                format!("`{ns}` is not a valid Kubernetes namespace"),
            ))
        }
        Some(ns) => Some(ns),
        None => facts.namespace.clone().filter(|ns| is_dns_label(ns)),
    };
    let cluster_domain = raw
        .cluster_domain
        .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned());
    if !is_dns_name(&cluster_domain) {
        return Err(error(
            "cluster_domain",
            format!("`{cluster_domain}` is not a valid DNS name"),
        ));
    }
    let cluster_header = cluster_header(
        raw.cluster_header
            .as_deref()
            .unwrap_or(DEFAULT_CLUSTER_HEADER),
    )?;
    let key_header = key_header(raw.key_header.as_deref().unwrap_or(DEFAULT_KEY_HEADER))?;
    check_roles_are_distinct(&carriers, &cluster_header, &key_header)?;
    let settings = Settings {
        carriers,
        cluster_header: cluster_header.into_bytes().into_boxed_slice(),
        key_header: key_header.into_bytes().into_boxed_slice(),
        debug: raw.debug,
        trust: raw.trust.map(|t| trust(t.0)).transpose()?,
        reject_unknown_keys: raw.unknown_keys == UnknownKeys::Reject,
    };
    let defaults = raw.defaults.map(|d| d.0).unwrap_or_default();
    let default_rate = defaults
        .rate_limit
        .map(|r| rate_limit(r.0).map_err(|reason| error("defaults.rate_limit", reason)))
        .transpose()?;
    let default_in_flight = defaults
        .max_in_flight
        .map(|m| max_in_flight(m).map_err(|reason| error("defaults.max_in_flight", reason)))
        .transpose()?;
    let default_breaker = defaults
        .circuit_breaker
        .map(|b| circuit_breaker(&b.0, "defaults.circuit_breaker"))
        .transpose()?;
    let context = SandboxContext {
        namespace,
        cluster_domain,
        default_rate,
        default_in_flight,
        default_breaker,
    };
    let mut builder = RouterBuilder::new(settings);
    if let Some(table) = raw.sandboxes {
        compile_sandboxes(table, document, &context, &mut builder)?;
    }
    if let Some((key, service, target)) = builder.route_to_a_routed_service() {
        return Err(error(
            format!("sandboxes.{key}.routes"),
            format!(
                "the target `{target}` of `{service}` is itself a service the table routes: a request would be recorded as routed and reach that service's baseline; route to the sandbox's own service"
            ),
        ));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests;
