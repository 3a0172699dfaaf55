//! The configuration as written: typed serde structures, unknown fields refused at every level.
//! Validation and compilation happen afterwards ([`super::compile`]); `sandboxes` stays raw JSON
//! here, to be compiled one sandbox at a time once the fields it depends on are known.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::strict::{string_enum, Object, UniqueMap};

pub const DEFAULT_BAGGAGE_MEMBER: &str = "sandbox";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig<'a> {
    pub routing_key: Object<RawRoutingKey>,
    pub namespace: Option<String>,
    pub cluster_domain: Option<String>,
    pub cluster_header: Option<String>,
    pub key_header: Option<String>,
    pub debug: bool,
    pub defaults: Option<Object<RawBudget>>,
    pub trust: Option<Object<RawTrust>>,
    pub unknown_keys: UnknownKeys,
    /// Borrowed from the input: the table is never copied whole.
    #[serde(borrow)]
    pub sandboxes: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoutingKey {
    pub baggage: Vec<String>,
    pub headers: Vec<String>,
    /// Which headers carry the `baggage` member names.
    pub carriers: Vec<CarrierKind>,
}

impl Default for RawRoutingKey {
    fn default() -> Self {
        RawRoutingKey {
            baggage: vec![DEFAULT_BAGGAGE_MEMBER.to_owned()],
            headers: Vec::new(),
            carriers: vec![
                CarrierKind::Baggage,
                CarrierKind::OtBaggage,
                CarrierKind::Uberctx,
                CarrierKind::Tracestate,
            ],
        }
    }
}

string_enum!(CarrierKind {
    Baggage = "baggage",
    Tracestate = "tracestate",
    OtBaggage = "ot-baggage",
    Uberctx = "uberctx",
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub sources: Vec<String>,
    #[serde(default)]
    pub untrusted: Untrusted,
}

string_enum!(Untrusted { Strip = "strip", Reject = "reject" });
string_enum!(UnknownKeys { Baseline = "baseline", Reject = "reject" });
string_enum!(BaselineWrites { Allow = "allow", Deny = "deny" });

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBudget {
    pub rate_limit: Option<Object<RawRateLimit>>,
    pub max_in_flight: Option<u32>,
    pub circuit_breaker: Option<Object<RawCircuitBreaker>>,
}

/// A field left out takes the documented default ([`super::validate::circuit_breaker`]).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCircuitBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_ratio: Option<f64>,
    pub min_requests: Option<u32>,
    pub window_seconds: Option<u32>,
    pub open_seconds: Option<u32>,
    pub max_open_seconds: Option<u32>,
    pub half_open_requests: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSandbox {
    pub routes: UniqueMap<Object<RawTarget>>,
    pub rate_limit: Option<Object<RawRateLimit>>,
    pub max_in_flight: Option<u32>,
    pub circuit_breaker: Option<Object<RawCircuitBreaker>>,
    pub enforce: bool,
    pub owner: Option<Object<RawOwner>>,
    pub baseline_writes: BaselineWrites,
    /// Baseline services this sandbox may still write to when `baseline_writes` is `deny`.
    pub baseline_write_exceptions: Vec<String>,
    pub expires_at: Option<String>,
}

impl Default for RawSandbox {
    fn default() -> Self {
        RawSandbox {
            routes: UniqueMap::default(),
            rate_limit: None,
            max_in_flight: None,
            circuit_breaker: None,
            enforce: true,
            owner: None,
            baseline_writes: BaselineWrites::Allow,
            baseline_write_exceptions: Vec::new(),
            expires_at: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTarget {
    pub authority: Option<String>,
    pub cluster: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOwner {
    pub user: Option<String>,
    pub change: Option<String>,
}
