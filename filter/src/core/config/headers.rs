//! The request headers the configuration names (key carriers, the cluster header, the key
//! header): each must be a header the filter may own. A header that carries credentials or
//! routing (`authorization`, `cookie`, `host`, `x-forwarded-*`, hop-by-hop headers, …) is
//! refused: the filter removes its header from requests that should not have it, so naming
//! `authorization` would strip credentials from baseline traffic. And no header may play two
//! roles, or one role would silently never happen.

use super::super::baggage::is_token;
use super::super::router::{CarrierKinds, Carriers};
use super::error::{error, ConfigError};
use super::raw::{CarrierKind, RawRoutingKey};

const MAX_CARRIER_NAMES: usize = 16;

/// Headers that carry credentials, the destination, or hop-by-hop meaning.
const FORBIDDEN: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "forwarded",
    "via",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "expect",
];
const FORBIDDEN_PREFIXES: &[&str] = &["x-forwarded-", "x-envoy-"];
/// Headers the filter reads for a meaning of their own.
const READ_BY_THE_FILTER: &[&str] = &[
    "baggage",
    "tracestate",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// A configured header name, lowercased, or why the filter may not own it.
fn owned_header(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let reason = if lower.starts_with(':') {
        Some("is a pseudo-header".to_owned())
    } else if !is_token(lower.as_bytes()) {
        Some("is not a valid header name".to_owned())
    } else if FORBIDDEN.contains(&lower.as_str())
        || FORBIDDEN_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        Some("carries credentials, the destination or hop-by-hop meaning; the filter would remove it from requests".to_owned())
    } else if READ_BY_THE_FILTER.contains(&lower.as_str()) {
        Some("is a header the filter reads for another purpose".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(error(field, format!("`{name}` {reason}"))),
        None => Ok(lower),
    }
}

/// Which headers carry the key, from `routing_key`.
pub fn carriers(raw: &RawRoutingKey) -> Result<Carriers, ConfigError> {
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
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (i, name) in raw.headers.iter().enumerate() {
        headers.push(owned_header(&format!("routing_key.headers[{i}]"), name)?);
    }
    let mut kinds = CarrierKinds::default();
    for (i, kind) in raw.carriers.iter().enumerate() {
        let slot = match kind {
            CarrierKind::Baggage => &mut kinds.baggage,
            CarrierKind::Tracestate => &mut kinds.tracestate,
            CarrierKind::OtBaggage => &mut kinds.ot_baggage,
            CarrierKind::Uberctx => &mut kinds.uberctx,
        };
        if *slot {
            return Err(error(format!("routing_key.carriers[{i}]"), "listed twice"));
        }
        *slot = true;
    }
    if !raw.baggage.is_empty() && kinds == CarrierKinds::default() {
        return Err(error(
            "routing_key.carriers",
            "no carrier for routing_key.baggage: list at least one of `baggage`, `tracestate`, `ot-baggage`, `uberctx`",
        ));
    }
    Ok(Carriers::new(&raw.baggage, &headers, kinds))
}

/// The cluster header, lowercased.
pub fn cluster_header(name: &str) -> Result<String, ConfigError> {
    owned_header("cluster_header", name)
}

/// The key header, lowercased; empty when turned off.
pub fn key_header(name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Ok(String::new());
    }
    owned_header("key_header", name)
}

/// No header plays two roles: a carrier that is also the cluster or key header would never
/// carry a key (or be removed as a client's forgery).
pub fn check_roles_are_distinct(
    carriers: &Carriers,
    cluster_header: &str,
    key_header: &str,
) -> Result<(), ConfigError> {
    if cluster_header == key_header {
        return Err(error(
            "key_header",
            format!("`{key_header}` is also the cluster_header; pick another header"),
        ));
    }
    for (field, own) in [
        ("cluster_header", cluster_header),
        ("key_header", key_header),
    ] {
        if let Some(carrier) = carriers
            .header_names
            .iter()
            .find(|c| ***c == *own.as_bytes())
        {
            return Err(error(
                field,
                format!(
                    "`{own}` is also a routing key carrier (`{}`); pick another header",
                    String::from_utf8_lossy(carrier)
                ),
            ));
        }
    }
    Ok(())
}
