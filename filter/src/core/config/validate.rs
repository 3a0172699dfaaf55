//! Checks of the fields outside the sandbox table, and of the pieces every sandbox is made of.

use super::super::bucket::RateLimit;
use super::super::cidr::Cidr;
use super::super::names::parse_authority_target;
use super::super::router::{Owner, Target, Trust, UntrustedMode};
use super::error::{error, ConfigError};
use super::raw::{RawOwner, RawRateLimit, RawTarget, RawTrust, Untrusted};

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
