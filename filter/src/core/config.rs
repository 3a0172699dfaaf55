//! The filter's JSON configuration: parsed strictly, validated, and compiled into a [`Router`].
//! Every error names the field and the reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::baggage::is_token;
use super::bucket::RateLimit;
use super::guard::Budget;
use super::key::is_valid_key;
use super::names::{is_dns_label, is_dns_name, parse_authority_target, parse_service};
use super::router::{Carriers, Router, RouterBuilder, Settings, Target};

pub const DEFAULT_BAGGAGE_MEMBER: &str = "sandbox";
pub const DEFAULT_CLUSTER_HEADER: &str = "x-sandbox-cluster";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Shared-data key prefix of the per-sandbox budget cells.
pub const BUDGET_KEY_PREFIX: &str = "sandbox-router/budget/";
const MAX_CLUSTER_NAME_LEN: usize = 1024;
const MAX_CARRIER_NAMES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    routing_key: RawRoutingKey,
    namespace: Option<String>,
    cluster_domain: Option<String>,
    cluster_header: Option<String>,
    #[serde(default)]
    debug: bool,
    defaults: Option<RawBudget>,
    #[serde(default)]
    sandboxes: BTreeMap<String, RawSandbox>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    rate_limit: Option<RawRateLimit>,
    max_in_flight: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: f64,
    burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutingKey {
    #[serde(default = "default_baggage")]
    baggage: Vec<String>,
    #[serde(default)]
    headers: Vec<String>,
}

impl Default for RawRoutingKey {
    fn default() -> Self {
        RawRoutingKey {
            baggage: default_baggage(),
            headers: Vec::new(),
        }
    }
}

fn default_baggage() -> Vec<String> {
    vec![DEFAULT_BAGGAGE_MEMBER.to_owned()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default)]
    routes: BTreeMap<String, RawTarget>,
    rate_limit: Option<RawRateLimit>,
    max_in_flight: Option<u32>,
    #[serde(default = "enforce_by_default")]
    enforce: bool,
}

fn enforce_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    authority: Option<String>,
    cluster: Option<String>,
}

/// What the host knows about the proxy, used where the configuration is silent.
#[derive(Debug, Default, Clone)]
pub struct HostFacts {
    /// Istio node metadata `NAMESPACE`.
    pub namespace: Option<String>,
}

/// Parses, validates and compiles a configuration. Empty input means no sandboxes.
pub fn compile(json: &[u8], facts: &HostFacts) -> Result<Router, ConfigError> {
    let raw: RawConfig = if json.iter().all(u8::is_ascii_whitespace) {
        RawConfig::default()
    } else {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let raw = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = e.path().to_string();
            error(field, e.into_inner().to_string())
        })?;
        deserializer.end().map_err(|e| {
            error(
                "",
                format!("trailing characters after the JSON object: {e}"),
            )
        })?;
        raw
    };
    build(raw, facts)
}

fn build(raw: RawConfig, facts: &HostFacts) -> Result<Router, ConfigError> {
    let carriers = carriers(&raw.routing_key)?;
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
    let cluster_header = raw
        .cluster_header
        .unwrap_or_else(|| DEFAULT_CLUSTER_HEADER.to_owned())
        .to_ascii_lowercase();
    if !is_token(cluster_header.as_bytes()) {
        return Err(error(
            "cluster_header",
            format!("`{cluster_header}` is not a valid header name"),
        ));
    }
    let settings = Settings {
        carriers,
        cluster_header: cluster_header.into_bytes().into_boxed_slice(),
        debug: raw.debug,
    };
    let defaults = raw.defaults.unwrap_or_default();
    let default_rate = defaults
        .rate_limit
        .map(|r| rate_limit(r, "defaults.rate_limit"))
        .transpose()?;
    let default_in_flight = defaults
        .max_in_flight
        .map(|m| max_in_flight(m, "defaults.max_in_flight"))
        .transpose()?;
    let mut builder = RouterBuilder::new(settings);
    for (key, sandbox) in raw.sandboxes {
        let field = format!("sandboxes.{key}");
        if !is_valid_key(&key) {
            return Err(error(
                field,
                "a sandbox key is 1 to 128 characters of [A-Za-z0-9._-]",
            ));
        }
        let mut routes = Vec::with_capacity(sandbox.routes.len());
        for (service, target) in sandbox.routes {
            let field = format!("{field}.routes.{service}");
            let service_ref = parse_service(&service, namespace.as_deref(), &cluster_domain)
                .map_err(|reason| error(&field, reason))?;
            let target = parse_target(target).map_err(|reason| error(&field, reason))?;
            let forms = service_ref.host_forms(namespace.as_deref(), &cluster_domain);
            let canonical = service_ref.canonical(&cluster_domain);
            routes.push((canonical, forms, target));
        }
        let rate = match sandbox.rate_limit {
            Some(r) => Some(rate_limit(r, &format!("{field}.rate_limit"))?),
            None => default_rate,
        };
        let in_flight = match sandbox.max_in_flight {
            Some(m) => Some(max_in_flight(m, &format!("{field}.max_in_flight"))?),
            None => default_in_flight,
        };
        let budget = (rate.is_some() || in_flight.is_some()).then(|| Budget {
            rate,
            max_in_flight: in_flight,
            enforce: sandbox.enforce,
            store_key: format!("{BUDGET_KEY_PREFIX}{key}").into_boxed_str(),
        });
        builder
            .add_sandbox(&key, routes, budget)
            .map_err(|reason| error(&field, reason))?;
    }
    Ok(builder.build())
}

fn carriers(raw: &RawRoutingKey) -> Result<Carriers, ConfigError> {
    if raw.baggage.is_empty() && raw.headers.is_empty() {
        return Err(error(
            "routing_key",
            "no carrier: list at least one baggage member or header",
        ));
    }
    if raw.baggage.len() > MAX_CARRIER_NAMES || raw.headers.len() > MAX_CARRIER_NAMES {
        return Err(error(
            "routing_key",
            format!("at most {MAX_CARRIER_NAMES} names per carrier"),
        ));
    }
    for (i, name) in raw.baggage.iter().enumerate() {
        if !is_token(name.as_bytes()) {
            return Err(error(
                format!("routing_key.baggage[{i}]"),
                format!("`{name}` is not a valid baggage member name"),
            ));
        }
    }
    for (i, name) in raw.headers.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if !is_token(lower.as_bytes()) || ["baggage", "tracestate"].contains(&lower.as_str()) {
            return Err(error(
                format!("routing_key.headers[{i}]"),
                format!("`{name}` is not a usable header name"),
            ));
        }
    }
    Ok(Carriers::new(&raw.baggage, &raw.headers))
}

fn rate_limit(raw: RawRateLimit, field: &str) -> Result<RateLimit, ConfigError> {
    RateLimit::new(raw.requests_per_second, raw.burst).ok_or_else(|| {
        error(
            field,
            "requests_per_second must be above 0 and at most 1000000, burst at least 1",
        )
    })
}

fn max_in_flight(value: u32, field: &str) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(error(field, "must be at least 1"));
    }
    Ok(value)
}

fn parse_target(target: RawTarget) -> Result<Target, String> {
    match (target.authority, target.cluster) {
        (Some(authority), None) => {
            let (host, port) = parse_authority_target(&authority)?;
            Ok(Target::Authority {
                host: host.into_boxed_str(),
                port,
            })
        }
        (None, Some(cluster)) => {
            let valid = !cluster.is_empty()
                && cluster.len() <= MAX_CLUSTER_NAME_LEN
                && cluster.bytes().all(|b| b.is_ascii_graphic());
            if valid {
                Ok(Target::Cluster(cluster.into_boxed_str()))
            } else {
                Err(format!("cluster `{cluster}` is not a valid cluster name"))
            }
        }
        (Some(_), Some(_)) => Err("set exactly one of `authority` or `cluster`, not both".into()),
        (None, None) => Err("set exactly one of `authority` or `cluster`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        compile(json.as_bytes(), &HostFacts::default())
            .expect_err("configuration should be rejected")
            .to_string()
    }

    const VALID: &str = r#"{
        "routing_key": { "baggage": ["sandbox"], "headers": ["x-sandbox"] },
        "namespace": "shop",
        "cluster_header": "x-sandbox-cluster",
        "debug": false,
        "sandboxes": {
            "feature-x": {
                "routes": {
                    "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" },
                    "inventory.shop.svc.cluster.local": { "cluster": "inventory-feature-x" }
                }
            }
        }
    }"#;

    #[test]
    fn accepts_the_contract_example() {
        compile(VALID.as_bytes(), &HostFacts::default()).unwrap();
    }

    #[test]
    fn empty_configuration_has_no_sandboxes() {
        let router = compile(b"", &HostFacts::default()).unwrap();
        assert_eq!(router.sandbox_count(), 0);
        compile(b"{}", &HostFacts::default()).unwrap();
    }

    #[test]
    fn names_the_field_and_reason() {
        let e = err(
            r#"{"sandboxes": {"feature-x": {"routes": {"payment": {"authority": "a", "cluster": "b"}}}}, "namespace": "shop"}"#,
        );
        assert!(e.starts_with("sandboxes.feature-x.routes.payment: "), "{e}");
        assert!(e.contains("not both"), "{e}");
        let e = err(
            r#"{"namespace": "shop", "sandboxes": {"feature-x": {"routes": {"payment": {}}}}}"#,
        );
        assert!(
            e.contains("sandboxes.feature-x.routes.payment: set exactly one"),
            "{e}"
        );
        let e = err(r#"{"sandboxes": {"feature-x": {"routez": {}}}}"#);
        assert!(e.starts_with("sandboxes.feature-x"), "{e}");
        assert!(e.contains("unknown field `routez`"), "{e}");
        let e = err(r#"{"sandboxes": {"bad key!": {}}}"#);
        assert!(e.starts_with("sandboxes.bad key!: a sandbox key"), "{e}");
        let e = err(
            r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"pay_ment": {"cluster": "c"}}}}}"#,
        );
        assert!(e.starts_with("sandboxes.x.routes.pay_ment: "), "{e}");
        let e = err(
            r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {"payment": {"authority": "a b"}}}}}"#,
        );
        assert!(e.contains("not a valid host name"), "{e}");
        let e = err(r#"{"debug": "yes"}"#);
        assert!(e.starts_with("debug: "), "{e}");
        let e = err(r#"{"routing_key": {"baggage": ["a b"]}}"#);
        assert!(e.starts_with("routing_key.baggage[0]: "), "{e}");
        let e = err(r#"{"routing_key": {"baggage": []}}"#);
        assert!(e.starts_with("routing_key: no carrier"), "{e}");
        let e = err(r#"{"namespace": "Shop"}"#);
        assert!(e.starts_with("namespace: "), "{e}");
        assert!(!err("{").is_empty());
        assert!(!err("[]").is_empty());
        assert!(err("{} x").contains("trailing"));
    }

    #[test]
    fn budgets_inherit_defaults_field_by_field() {
        let router = compile(
            br#"{
            "defaults": { "rate_limit": { "requests_per_second": 50, "burst": 100 }, "max_in_flight": 20 },
            "sandboxes": {
                "own": { "rate_limit": { "requests_per_second": 0.5, "burst": 1 }, "enforce": false },
                "inherits": {}
            }}"#,
            &HostFacts::default(),
        )
        .unwrap();
        let own = router.sandbox("own").unwrap().budget.as_ref().unwrap();
        assert_eq!(own.rate, RateLimit::new(0.5, 1));
        assert_eq!(own.max_in_flight, Some(20));
        assert!(!own.enforce);
        assert_eq!(&*own.store_key, "sandbox-router/budget/own");
        let inherits = router.sandbox("inherits").unwrap().budget.as_ref().unwrap();
        assert_eq!(inherits.rate, RateLimit::new(50.0, 100));
        assert!(inherits.enforce);
        let unlimited = compile(br#"{"sandboxes": {"free": {}}}"#, &HostFacts::default()).unwrap();
        assert!(unlimited.sandbox("free").unwrap().budget.is_none());
    }

    #[test]
    fn rejects_bad_budgets() {
        let e =
            err(r#"{"sandboxes": {"x": {"rate_limit": {"requests_per_second": 0, "burst": 1}}}}"#);
        assert!(e.starts_with("sandboxes.x.rate_limit: "), "{e}");
        let e = err(r#"{"defaults": {"max_in_flight": 0}}"#);
        assert!(e.starts_with("defaults.max_in_flight: "), "{e}");
        let e = err(
            r#"{"sandboxes": {"x": {"rate_limit": {"requests_per_second": 1, "burst": 1.5}}}}"#,
        );
        assert!(e.starts_with("sandboxes.x.rate_limit.burst: "), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"max_in_flight": -1}}}"#);
        assert!(e.starts_with("sandboxes.x.max_in_flight: "), "{e}");
    }

    #[test]
    fn short_names_need_a_namespace_from_config_or_istio() {
        let json = r#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}}"#;
        assert!(err(json).contains("sandboxes.x.routes.payment: "));
        let facts = HostFacts {
            namespace: Some("shop".into()),
        };
        compile(json.as_bytes(), &facts).unwrap();
    }

    #[test]
    fn one_service_written_twice_in_a_sandbox_is_rejected() {
        let e = err(r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {
            "payment": {"cluster": "a"}, "payment.shop": {"cluster": "b"}}}}}"#);
        assert!(e.starts_with("sandboxes.x: "), "{e}");
        assert!(e.contains("payment.shop.svc.cluster.local"), "{e}");
    }
}
