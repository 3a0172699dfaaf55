//! The filter's JSON configuration: parsed strictly, validated, and compiled into a [`Router`].
//! Every error names the field and the reason.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::baggage::is_token;
use super::bucket::RateLimit;
use super::cidr::Cidr;
use super::guard::Budget;
use super::key::is_valid_key;
use super::names::{is_dns_label, is_dns_name, parse_authority_target, parse_service};
use super::router::{
    Carriers, Owner, Router, RouterBuilder, SandboxSpec, Settings, Target, Trust, UntrustedMode,
};
use super::time::parse_rfc3339;

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
struct RawConfig<'a> {
    #[serde(default)]
    routing_key: RawRoutingKey,
    namespace: Option<String>,
    cluster_domain: Option<String>,
    cluster_header: Option<String>,
    #[serde(default)]
    debug: bool,
    defaults: Option<RawBudget>,
    trust: Option<RawTrust>,
    #[serde(default)]
    unknown_keys: UnknownKeys,
    /// Compiled one sandbox at a time (see [`SandboxesSeed`]): a large table never exists twice.
    #[serde(borrow)]
    sandboxes: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    sources: Vec<String>,
    #[serde(default)]
    untrusted: Untrusted,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Untrusted {
    #[default]
    Strip,
    Reject,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UnknownKeys {
    #[default]
    Baseline,
    Reject,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum BaselineWrites {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    user: Option<String>,
    change: Option<String>,
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
    owner: Option<RawOwner>,
    #[serde(default)]
    baseline_writes: BaselineWrites,
    /// Baseline services this sandbox may still write to when `baseline_writes` is `deny`.
    #[serde(default)]
    baseline_write_exceptions: Vec<String>,
    expires_at: Option<String>,
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
    let raw: RawConfig<'_> = if json.iter().all(u8::is_ascii_whitespace) {
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

fn build(raw: RawConfig<'_>, facts: &HostFacts) -> Result<Router, ConfigError> {
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
        trust: raw.trust.map(trust).transpose()?,
        reject_unknown_keys: matches!(raw.unknown_keys, UnknownKeys::Reject),
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
    let context = SandboxContext {
        namespace,
        cluster_domain,
        default_rate,
        default_in_flight,
    };
    let mut builder = RouterBuilder::new(settings);
    if let Some(sandboxes) = raw.sandboxes {
        compile_sandboxes(sandboxes.get(), &context, &mut builder)?;
    }
    Ok(builder.build())
}

/// What every sandbox is compiled against.
struct SandboxContext {
    namespace: Option<String>,
    cluster_domain: String,
    default_rate: Option<RateLimit>,
    default_in_flight: Option<u32>,
}

fn compile_sandboxes(
    json: &str,
    context: &SandboxContext,
    builder: &mut RouterBuilder,
) -> Result<(), ConfigError> {
    let mut failure = None;
    let mut track = serde_path_to_error::Track::new();
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let seed = SandboxesSeed {
        context,
        builder,
        failure: &mut failure,
    };
    let parsed = seed.deserialize(serde_path_to_error::Deserializer::new(
        &mut deserializer,
        &mut track,
    ));
    match (failure, parsed) {
        (Some(error), _) => Err(error),
        (None, Err(e)) => {
            let path = track.path().to_string();
            let field = if path == "." || path.is_empty() {
                "sandboxes".to_owned()
            } else {
                format!("sandboxes.{path}")
            };
            Err(error(field, e.to_string()))
        }
        (None, Ok(())) => Ok(()),
    }
}

/// Deserializes the `sandboxes` object entry by entry, compiling each into the builder.
struct SandboxesSeed<'c> {
    context: &'c SandboxContext,
    builder: &'c mut RouterBuilder,
    /// A validation error, reported with its own field path.
    failure: &'c mut Option<ConfigError>,
}

impl<'de> DeserializeSeed<'de> for SandboxesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SandboxesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of sandboxes by key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let sandbox: RawSandbox = map.next_value()?;
            if let Err(error) = compile_sandbox(key, sandbox, self.context, self.builder) {
                *self.failure = Some(error);
                return Err(serde::de::Error::custom("invalid sandbox"));
            }
        }
        Ok(())
    }
}

fn compile_sandbox(
    key: String,
    sandbox: RawSandbox,
    context: &SandboxContext,
    builder: &mut RouterBuilder,
) -> Result<(), ConfigError> {
    let SandboxContext {
        namespace,
        cluster_domain,
        default_rate,
        default_in_flight,
    } = context;
    let (default_rate, default_in_flight) = (*default_rate, *default_in_flight);
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
        let service_ref = parse_service(&service, namespace.as_deref(), cluster_domain)
            .map_err(|reason| error(&field, reason))?;
        let target = parse_target(target).map_err(|reason| error(&field, reason))?;
        let forms = service_ref.host_forms(namespace.as_deref(), cluster_domain);
        let canonical = service_ref.canonical(cluster_domain);
        routes.push((canonical, forms, target));
    }
    let mut write_exceptions = Vec::with_capacity(sandbox.baseline_write_exceptions.len());
    for (i, service) in sandbox.baseline_write_exceptions.iter().enumerate() {
        let field = format!("{field}.baseline_write_exceptions[{i}]");
        let service_ref = parse_service(service, namespace.as_deref(), cluster_domain)
            .map_err(|reason| error(&field, reason))?;
        write_exceptions.push((
            service_ref.canonical(cluster_domain),
            service_ref.host_forms(namespace.as_deref(), cluster_domain),
        ));
    }
    let expires_at_ns = sandbox
        .expires_at
        .as_deref()
        .map(|text| {
            parse_rfc3339(text).ok_or_else(|| {
                error(
                    format!("{field}.expires_at"),
                    format!("`{text}` is not an RFC 3339 time such as 2026-12-01T00:00:00Z"),
                )
            })
        })
        .transpose()?;
    let owner = sandbox
        .owner
        .map(|o| owner(o, &format!("{field}.owner")))
        .transpose()?;
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
        .add_sandbox(SandboxSpec {
            key,
            routes,
            budget,
            owner,
            expires_at_ns,
            deny_baseline_writes: sandbox.baseline_writes == BaselineWrites::Deny,
            write_exceptions,
        })
        .map_err(|reason| error(&field, reason))
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

fn trust(raw: RawTrust) -> Result<Trust, ConfigError> {
    if raw.sources.is_empty() {
        return Err(error(
            "trust.sources",
            "list at least one CIDR (omit `trust` to trust every source)",
        ));
    }
    let sources = raw
        .sources
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<Cidr>()
                .map_err(|reason| error(format!("trust.sources[{i}]"), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Trust {
        sources,
        untrusted: match raw.untrusted {
            Untrusted::Strip => UntrustedMode::Strip,
            Untrusted::Reject => UntrustedMode::Reject,
        },
    })
}

const MAX_OWNER_FIELD_LEN: usize = 256;

fn owner(raw: RawOwner, field: &str) -> Result<Owner, ConfigError> {
    let check = |value: Option<String>, name: &str| match value {
        Some(v) if v.len() > MAX_OWNER_FIELD_LEN || v.chars().any(char::is_control) => Err(error(
            format!("{field}.{name}"),
            format!("at most {MAX_OWNER_FIELD_LEN} bytes, no control characters"),
        )),
        other => Ok(other.map(String::into_boxed_str)),
    };
    Ok(Owner {
        user: check(raw.user, "user")?,
        change: check(raw.change, "change")?,
    })
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
    fn trust_owner_expiry_and_write_policy() {
        let router = compile(
            br#"{
            "namespace": "shop",
            "trust": { "sources": ["10.0.0.0/8", "fd00::/8"], "untrusted": "reject" },
            "unknown_keys": "reject",
            "sandboxes": { "feature-x": {
                "owner": { "user": "alice@example.com", "change": "shop#1234" },
                "routes": { "payment": { "authority": "payment-feature-x.shop.svc.cluster.local" } },
                "baseline_writes": "deny",
                "baseline_write_exceptions": ["audit-log"],
                "expires_at": "2026-12-01T00:00:00Z"
            } } }"#,
            &HostFacts::default(),
        )
        .unwrap();
        let trust = router.settings.trust.as_ref().unwrap();
        assert_eq!(trust.untrusted, UntrustedMode::Reject);
        assert!(router.settings.reject_unknown_keys);
        let x = router.sandbox("feature-x").unwrap();
        assert_eq!(
            x.owner.as_ref().unwrap().user.as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(x.expires_at_ns, Some(1_796_083_200_000_000_000));
        assert!(!x.may_write_to(Some("inventory.shop.svc.cluster.local")));
        assert!(x.may_write_to(Some("audit-log.shop.svc.cluster.local")));
        assert!(!x.may_write_to(None));
    }

    #[test]
    fn rejects_bad_trust_and_policy_values() {
        let e = err(r#"{"trust": {"sources": ["10.0.0.0/33"]}}"#);
        assert!(e.starts_with("trust.sources[0]: "), "{e}");
        let e = err(r#"{"trust": {"sources": []}}"#);
        assert!(e.starts_with("trust.sources: "), "{e}");
        let e = err(r#"{"trust": {"sources": ["10.0.0.0/8"], "untrusted": "drop"}}"#);
        assert!(
            e.starts_with("trust.untrusted: unknown variant `drop`"),
            "{e}"
        );
        let e = err(r#"{"unknown_keys": "ignore"}"#);
        assert!(e.starts_with("unknown_keys: "), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"expires_at": "tomorrow"}}}"#);
        assert!(e.starts_with("sandboxes.x.expires_at: "), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"baseline_writes": "maybe"}}}"#);
        assert!(e.starts_with("sandboxes.x.baseline_writes: "), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"owner": {"team": "a"}}}}"#);
        assert!(
            e.starts_with("sandboxes.x.owner.team: unknown field `team`"),
            "{e}"
        );
        let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "a\nb"}}}}"#);
        assert!(e.starts_with("sandboxes.x.owner.user: "), "{e}");
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
