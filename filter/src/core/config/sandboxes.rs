//! The sandbox table, read entry by entry: each sandbox is deserialised, validated and added to
//! the router before the next one is read, so a 10,000-sandbox table never exists whole in a
//! second form while it loads.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::super::breaker::BreakerPolicy;
use super::super::bucket::RateLimit;
use super::super::guard::Budget;
use super::super::key::is_valid_key;
use super::super::names::parse_service;
use super::super::router::{RouterBuilder, SandboxSpec};
use super::super::time::parse_rfc3339;
use super::error::{error, parse_error, ConfigError};
use super::raw::{BaselineWrites, RawSandbox};
use super::strict::Object;
use super::validate::{circuit_breaker, max_in_flight, owner, parse_target, rate_limit};
use super::{BUDGET_KEY_PREFIX, CIRCUIT_KEY_PREFIX};

/// What every sandbox is compiled against.
pub struct SandboxContext {
    pub namespace: Option<String>,
    pub cluster_domain: String,
    pub default_rate: Option<RateLimit>,
    pub default_in_flight: Option<u32>,
    pub default_breaker: Option<BreakerPolicy>,
}

/// Compiles the `sandboxes` object (`table`, borrowed from `document`) into the builder.
pub fn compile_sandboxes(
    table: &RawValue,
    document: &[u8],
    context: &SandboxContext,
    builder: &mut RouterBuilder,
) -> Result<(), ConfigError> {
    let text = table.get();
    let offset = (text.as_ptr() as usize).saturating_sub(document.as_ptr() as usize);
    let mut failure = None;
    let mut track = serde_path_to_error::Track::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = SandboxTable {
        context,
        builder,
        failure: &mut failure,
    };
    let result = seed.deserialize(serde_path_to_error::Deserializer::new(
        &mut deserializer,
        &mut track,
    ));
    if let Some(failure) = failure {
        return Err(failure);
    }
    result.map_err(|e| {
        parse_error(
            &track.path().to_string(),
            &e,
            "sandboxes",
            Some((document, offset)),
        )
    })
}

struct SandboxTable<'c, 'b> {
    context: &'c SandboxContext,
    builder: &'b mut RouterBuilder,
    /// A validation error of a sandbox (it names its own field); the parse is then aborted.
    failure: &'b mut Option<ConfigError>,
}

impl<'de> DeserializeSeed<'de> for SandboxTable<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SandboxTable<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of sandboxes by key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if self.builder.has_sandbox(&key) {
                return Err(A::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let sandbox: Object<RawSandbox> = map.next_value()?;
            if let Err(e) = compile_sandbox(&key, sandbox.0, self.context, self.builder) {
                *self.failure = Some(e);
                return Err(A::Error::custom("invalid sandbox"));
            }
        }
        Ok(())
    }
}

fn compile_sandbox(
    key: &str,
    sandbox: RawSandbox,
    context: &SandboxContext,
    builder: &mut RouterBuilder,
) -> Result<(), ConfigError> {
    let SandboxContext {
        namespace,
        cluster_domain,
        default_rate,
        default_in_flight,
        default_breaker,
    } = context;
    let (default_rate, default_in_flight) = (*default_rate, *default_in_flight);
    let field = |suffix: &str| format!("sandboxes.{key}{suffix}");
    if !is_valid_key(key) {
        return Err(error(
            field(""),
            "a sandbox key is 1 to 128 characters of [A-Za-z0-9._-]",
        ));
    }
    let mut routes = Vec::with_capacity(sandbox.routes.0.len());
    for (service, target) in sandbox.routes.0 {
        let route_error = |reason| error(field(&format!(".routes.{service}")), reason);
        let service_ref =
            parse_service(&service, namespace.as_deref(), cluster_domain).map_err(route_error)?;
        let target = parse_target(target.0).map_err(route_error)?;
        let forms = service_ref.host_forms(namespace.as_deref(), cluster_domain);
        let canonical = service_ref.canonical(cluster_domain);
        routes.push((canonical, forms, target));
    }
    let mut write_exceptions = Vec::with_capacity(sandbox.baseline_write_exceptions.len());
    for (i, service) in sandbox.baseline_write_exceptions.iter().enumerate() {
        let service_ref = parse_service(service, namespace.as_deref(), cluster_domain)
            .map_err(|reason| error(field(&format!(".baseline_write_exceptions[{i}]")), reason))?;
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
                    field(".expires_at"),
                    format!("`{text}` is not an RFC 3339 time such as 2026-12-01T00:00:00Z"),
                )
            })
        })
        .transpose()?;
    let owner = sandbox
        .owner
        .map(|o| owner(o.0).map_err(|e| error(field(&format!(".owner.{}", e.field)), e.reason)))
        .transpose()?;
    let rate = match sandbox.rate_limit.map(|r| r.0) {
        Some(r) => Some(rate_limit(r).map_err(|reason| error(field(".rate_limit"), reason))?),
        None => default_rate,
    };
    let in_flight = match sandbox.max_in_flight {
        Some(m) => Some(max_in_flight(m).map_err(|reason| error(field(".max_in_flight"), reason))?),
        None => default_in_flight,
    };
    let budget = (rate.is_some() || in_flight.is_some()).then(|| Budget {
        rate,
        max_in_flight: in_flight,
        store_key: format!("{BUDGET_KEY_PREFIX}{key}").into_boxed_str(),
    });
    let breaker = match sandbox.circuit_breaker {
        Some(raw) => Some(circuit_breaker(&raw.0, &field(".circuit_breaker"))?),
        None => default_breaker.clone(),
    }
    .map(|policy| BreakerPolicy {
        store_key: format!("{CIRCUIT_KEY_PREFIX}{key}").into_boxed_str(),
        ..policy
    });
    builder
        .add_sandbox(SandboxSpec {
            key: key.to_owned(),
            routes,
            budget,
            breaker,
            enforce: sandbox.enforce,
            owner,
            expires_at_ns,
            deny_baseline_writes: sandbox.baseline_writes == BaselineWrites::Deny,
            write_exceptions,
        })
        .map_err(|reason| error(field(""), reason))
}
