//! Checks of the fields outside the sandbox table, and of the pieces every sandbox is made of.

use super::super::breaker::{BreakerPolicy, RATIO_SCALE};
use super::super::bucket::RateLimit;
use super::super::cidr::Cidr;
use super::super::names::parse_authority_target;
use super::super::router::{Owner, Target, Trust, UntrustedMode};
use super::error::{error, ConfigError};
use super::raw::{RawCircuitBreaker, RawOwner, RawRateLimit, RawTarget, RawTrust, Untrusted};

const MAX_CLUSTER_NAME_LEN: usize = 1024;

pub fn trust(raw: RawTrust) -> Result<Trust, ConfigError> {
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

/// An error names the field within `owner`.
pub fn owner(raw: RawOwner) -> Result<Owner, ConfigError> {
    let check = |value: Option<String>, name: &str| match value {
        Some(v) if v.len() > MAX_OWNER_FIELD_LEN || v.chars().any(char::is_control) => Err(error(
            name,
            format!("at most {MAX_OWNER_FIELD_LEN} bytes, no control characters"),
        )),
        other => Ok(other.map(String::into_boxed_str)),
    };
    Ok(Owner {
        user: check(raw.user, "user")?,
        change: check(raw.change, "change")?,
    })
}

pub fn rate_limit(raw: RawRateLimit) -> Result<RateLimit, &'static str> {
    RateLimit::new(raw.requests_per_second, raw.burst)
        .ok_or("requests_per_second must be above 0 and at most 1000000, burst at least 1")
}

pub fn max_in_flight(value: u32) -> Result<u32, &'static str> {
    if value == 0 {
        return Err("must be at least 1");
    }
    Ok(value)
}

pub fn parse_target(target: RawTarget) -> Result<Target, String> {
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

const NANOS_PER_SEC: u64 = 1_000_000_000;
const MAX_WINDOW_SECONDS: u32 = 3_600;
const MAX_OPEN_SECONDS: u32 = 86_400;
const MAX_HALF_OPEN_REQUESTS: u32 = 1_000;

/// A circuit breaker with every field left out taking the documented default; `field` is the
/// path of the `circuit_breaker` object, for errors. The store key is set per sandbox.
pub fn circuit_breaker(raw: &RawCircuitBreaker, field: &str) -> Result<BreakerPolicy, ConfigError> {
    let fail = |name: &str, reason: String| Err(error(format!("{field}.{name}"), reason));
    let consecutive_failures = raw.consecutive_failures.unwrap_or(5);
    let failure_ratio = raw.failure_ratio.unwrap_or(0.5);
    let min_requests = raw.min_requests.unwrap_or(20);
    let window_seconds = raw.window_seconds.unwrap_or(10);
    let open_seconds = raw.open_seconds.unwrap_or(30);
    // Left out, the cap is 300 s, or the open time itself when that is longer.
    let max_open_seconds = raw.max_open_seconds.unwrap_or(open_seconds.max(300));
    let half_open_requests = raw.half_open_requests.unwrap_or(3);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        return fail("failure_ratio", "must be above 0 and at most 1".to_owned());
    }
    if window_seconds > MAX_WINDOW_SECONDS || (window_seconds == 0 && min_requests != 0) {
        return fail(
            "window_seconds",
            format!("must be 1 to {MAX_WINDOW_SECONDS} (0 only with min_requests 0)"),
        );
    }
    if open_seconds == 0 || open_seconds > MAX_OPEN_SECONDS {
        return fail("open_seconds", format!("must be 1 to {MAX_OPEN_SECONDS}"));
    }
    if max_open_seconds < open_seconds || max_open_seconds > MAX_OPEN_SECONDS {
        return fail(
            "max_open_seconds",
            format!(
                "must be at least open_seconds ({open_seconds}) and at most {MAX_OPEN_SECONDS}"
            ),
        );
    }
    if half_open_requests == 0 || half_open_requests > MAX_HALF_OPEN_REQUESTS {
        return fail(
            "half_open_requests",
            format!("must be 1 to {MAX_HALF_OPEN_REQUESTS}"),
        );
    }
    // In range: (0, 1] scaled to at most 1e6.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let failure_ratio_ppm = ((failure_ratio * RATIO_SCALE as f64).round() as u64).max(1);
    let seconds = |s: u32| u64::from(s).saturating_mul(NANOS_PER_SEC);
    Ok(BreakerPolicy {
        consecutive_failures,
        failure_ratio_ppm,
        min_requests,
        window_ns: seconds(window_seconds),
        open_ns: seconds(open_seconds),
        max_open_ns: seconds(max_open_seconds),
        half_open_requests,
        store_key: Box::from(""),
    })
}
