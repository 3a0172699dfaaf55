//! The filter's JSON configuration: parsed strictly, validated, and compiled into a [`Router`].
//! Every error names the field and the reason.
//!
//! The JSON is read by a small pull reader ([`super::json`]) and walked by the typed readers
//! below: unknown fields, duplicate keys and values of the wrong type are errors naming the
//! field. `sandboxes` is read twice: the first pass over the top level only checks it and notes
//! where it starts (the fields every sandbox is compiled against may come after it); then it is
//! compiled one sandbox at a time, so a large table never exists whole in a raw form.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};

use super::baggage::is_token;
use super::bucket::RateLimit;
use super::cidr::Cidr;
use super::fast_hash::FxHasher;
use super::guard::Budget;
use super::json::{self, Kind, Reader};
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

#[derive(Default)]
struct RawConfig {
    routing_key: RawRoutingKey,
    namespace: Option<String>,
    cluster_domain: Option<String>,
    cluster_header: Option<String>,
    debug: bool,
    defaults: Option<RawBudget>,
    trust: Option<RawTrust>,
    unknown_keys: UnknownKeys,
    /// Where the `sandboxes` value starts: it is compiled one sandbox at a time (see
    /// [`compile_sandboxes`]), once the rest is known.
    sandboxes: Option<usize>,
}

struct RawTrust {
    sources: Vec<String>,
    untrusted: Untrusted,
}

#[derive(Default, Clone, Copy)]
enum Untrusted {
    #[default]
    Strip,
    Reject,
}

#[derive(Default, Clone, Copy)]
enum UnknownKeys {
    #[default]
    Baseline,
    Reject,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum BaselineWrites {
    #[default]
    Allow,
    Deny,
}

#[derive(Default)]
struct RawOwner {
    user: Option<String>,
    change: Option<String>,
}

#[derive(Default)]
struct RawBudget {
    rate_limit: Option<RawRateLimit>,
    max_in_flight: Option<u32>,
}

#[derive(Clone, Copy)]
struct RawRateLimit {
    requests_per_second: f64,
    burst: u32,
}

struct RawRoutingKey {
    baggage: Vec<String>,
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

struct RawSandbox {
    routes: BTreeMap<String, RawTarget>,
    rate_limit: Option<RawRateLimit>,
    max_in_flight: Option<u32>,
    enforce: bool,
    owner: Option<RawOwner>,
    baseline_writes: BaselineWrites,
    /// Baseline services this sandbox may still write to when `baseline_writes` is `deny`.
    baseline_write_exceptions: Vec<String>,
    expires_at: Option<String>,
}

impl Default for RawSandbox {
    fn default() -> Self {
        RawSandbox {
            routes: BTreeMap::new(),
            rate_limit: None,
            max_in_flight: None,
            enforce: true,
            owner: None,
            baseline_writes: BaselineWrites::Allow,
            baseline_write_exceptions: Vec::new(),
            expires_at: None,
        }
    }
}

#[derive(Default)]
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
    let document = Reader::new(json);
    let raw = if json.iter().all(u8::is_ascii_whitespace) {
        RawConfig::default()
    } else {
        let mut reader = document.at(0, 0);
        let raw = read_config(&mut reader)?;
        reader.end().map_err(|e| error("", e.to_string()))?;
        raw
    };
    build(&document, raw, facts)
}

fn build(document: &Reader<'_>, raw: RawConfig, facts: &HostFacts) -> Result<Router, ConfigError> {
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
    check_headers_are_distinct(&raw.routing_key, &cluster_header)?;
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
        .map(|r| rate_limit(r).map_err(|reason| error("defaults.rate_limit", reason)))
        .transpose()?;
    let default_in_flight = defaults
        .max_in_flight
        .map(|m| max_in_flight(m).map_err(|reason| error("defaults.max_in_flight", reason)))
        .transpose()?;
    let context = SandboxContext {
        namespace,
        cluster_domain,
        default_rate,
        default_in_flight,
    };
    let mut builder = RouterBuilder::new(settings);
    if let Some(start) = raw.sandboxes {
        compile_sandboxes(document, start, &context, &mut builder)?;
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

type KeyHashes = HashSet<u64, BuildHasherDefault<FxHasher>>;

/// Reads the `sandboxes` object starting at byte `start` of the document entry by entry,
/// compiling each into the builder before reading the next.
fn compile_sandboxes(
    document: &Reader<'_>,
    start: usize,
    context: &SandboxContext,
    builder: &mut RouterBuilder,
) -> Result<(), ConfigError> {
    let path = Path::Key(&Path::Root, "sandboxes");
    // The top-level object is open.
    let mut r = document.at(start, 1);
    expect(&mut r, &path, Kind::Object, "an object of sandboxes by key")?;
    r.begin_object().map_err(|e| path.json(e))?;
    // Duplicate keys: a 64-bit hash of each key read (8 bytes a sandbox, not a copy of its
    // key), and an exact check when a hash was seen before.
    let mut hashes = KeyHashes::default();
    let mut count = 0usize;
    while let Some(key) = r.next_key(count == 0).map_err(|e| path.json(e))? {
        if !hashes.insert(key_hash(&key))
            && is_among_first(document, start, count, &key).map_err(|e| path.json(e))?
        {
            return Err(path.json(r.error(format!("duplicate key `{key}`"))));
        }
        count = count.saturating_add(1);
        let sandbox = read_sandbox(&mut r, &Path::Key(&path, &key))?;
        compile_sandbox(&key, sandbox, context, builder)?;
    }
    Ok(())
}

/// SipHash (with fixed keys: no random-number host call), not the faster `FxHasher`: keys
/// crafted to collide would each cost a rescan of the table, and SipHash collisions are
/// impractical to construct in numbers.
fn key_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(key.as_bytes());
    hasher.finish()
}

/// Whether `key` is one of the first `count` keys of the object at byte `start` of the document.
fn is_among_first(
    document: &Reader<'_>,
    start: usize,
    count: usize,
    key: &str,
) -> Result<bool, json::Error> {
    let mut r = document.at(start, 1);
    r.begin_object()?;
    for i in 0..count {
        match r.next_key(i == 0)? {
            Some(earlier) if earlier == key => return Ok(true),
            Some(_) => r.skip_value()?,
            None => break,
        }
    }
    Ok(false)
}

/// Validates one sandbox and adds it to the builder. Field names for errors are only
/// formatted on an error: this runs once per sandbox of a possibly large table.
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
    } = context;
    let (default_rate, default_in_flight) = (*default_rate, *default_in_flight);
    let field = |suffix: &str| format!("sandboxes.{key}{suffix}");
    if !is_valid_key(key) {
        return Err(error(
            field(""),
            "a sandbox key is 1 to 128 characters of [A-Za-z0-9._-]",
        ));
    }
    let mut routes = Vec::with_capacity(sandbox.routes.len());
    for (service, target) in sandbox.routes {
        let route_error = |reason| error(field(&format!(".routes.{service}")), reason);
        let service_ref =
            parse_service(&service, namespace.as_deref(), cluster_domain).map_err(route_error)?;
        let target = parse_target(target).map_err(route_error)?;
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
        .map(|o| owner(o).map_err(|e| error(field(&format!(".owner.{}", e.field)), e.reason)))
        .transpose()?;
    let rate = match sandbox.rate_limit {
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
        enforce: sandbox.enforce,
        store_key: format!("{BUDGET_KEY_PREFIX}{key}").into_boxed_str(),
    });
    builder
        .add_sandbox(SandboxSpec {
            key: key.to_owned(),
            routes,
            budget,
            owner,
            expires_at_ns,
            deny_baseline_writes: sandbox.baseline_writes == BaselineWrites::Deny,
            write_exceptions,
        })
        .map_err(|reason| error(field(""), reason))
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

/// Headers the scanner reads for one purpose must not be configured for another: a carrier
/// that is also the cluster header (or `content-type`) would silently never carry a key.
fn check_headers_are_distinct(
    raw: &RawRoutingKey,
    cluster_header: &str,
) -> Result<(), ConfigError> {
    if RESERVED_HEADERS.contains(&cluster_header) {
        return Err(error(
            "cluster_header",
            format!("`{cluster_header}` is a header the filter reads for another purpose"),
        ));
    }
    for (i, name) in raw.headers.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if lower == cluster_header || lower == "content-type" {
            return Err(error(
                format!("routing_key.headers[{i}]"),
                format!("`{name}` is also the cluster_header or content-type; pick another header"),
            ));
        }
    }
    for (i, member) in raw.baggage.iter().enumerate() {
        let member = member.to_ascii_lowercase();
        for prefix in ["ot-baggage-", "uberctx-"] {
            if format!("{prefix}{member}") == cluster_header {
                return Err(error(
                    "cluster_header",
                    format!(
                        "`{cluster_header}` is the {prefix} carrier of routing_key.baggage[{i}]"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Headers the scanner gives a meaning of their own.
const RESERVED_HEADERS: [&str; 3] = ["baggage", "tracestate", "content-type"];

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

/// An error names the field within `owner`.
fn owner(raw: RawOwner) -> Result<Owner, ConfigError> {
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

fn rate_limit(raw: RawRateLimit) -> Result<RateLimit, &'static str> {
    RateLimit::new(raw.requests_per_second, raw.burst)
        .ok_or("requests_per_second must be above 0 and at most 1000000, burst at least 1")
}

fn max_in_flight(value: u32) -> Result<u32, &'static str> {
    if value == 0 {
        return Err("must be at least 1");
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

/// Where a value sits in the document, rendered only for an error as
/// `sandboxes.x.routes.payment` or `routing_key.baggage[0]`.
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut at = self;
        while let Path::Key(parent, _) | Path::Index(parent, _) = at {
            segments.push(at);
            at = parent;
        }
        let mut out = String::new();
        for (i, segment) in segments.iter().rev().enumerate() {
            match segment {
                Path::Key(_, key) => {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Path::Index(_, index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
                Path::Root => {}
            }
        }
        out
    }

    fn json(&self, e: json::Error) -> ConfigError {
        error(self.render(), e.to_string())
    }
}

/// Requires the next value to be of `kind`: "invalid type: a string, expected a boolean".
fn expect(r: &mut Reader<'_>, path: &Path<'_>, kind: Kind, what: &str) -> Result<(), ConfigError> {
    let found = r.peek().map_err(|e| path.json(e))?;
    if found == kind {
        Ok(())
    } else {
        let reason = format!("invalid type: {}, expected {what}", found.describe());
        Err(path.json(r.error(reason)))
    }
}

/// `null` is `None`; anything else is read by `read`.
fn optional<'a, T>(
    r: &mut Reader<'a>,
    path: &Path<'_>,
    read: impl FnOnce(&mut Reader<'a>, &Path<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    if r.peek().map_err(|e| path.json(e))? == Kind::Null {
        r.null().map_err(|e| path.json(e))?;
        return Ok(None);
    }
    read(r, path).map(Some)
}

fn read_string(r: &mut Reader<'_>, path: &Path<'_>) -> Result<String, ConfigError> {
    expect(r, path, Kind::String, "a string")?;
    r.string().map(Cow::into_owned).map_err(|e| path.json(e))
}

fn read_bool(r: &mut Reader<'_>, path: &Path<'_>) -> Result<bool, ConfigError> {
    expect(r, path, Kind::Bool, "a boolean")?;
    r.boolean().map_err(|e| path.json(e))
}

/// A non-negative integer written without a fraction or exponent, as serde reads a `u32`.
fn read_u32(r: &mut Reader<'_>, path: &Path<'_>) -> Result<u32, ConfigError> {
    expect(r, path, Kind::Number, "an unsigned integer")?;
    let start = r.position();
    let text = r.number().map_err(|e| path.json(e))?;
    if text.bytes().any(|b| !b.is_ascii_digit()) {
        let reason = format!("invalid value: `{text}`, expected an unsigned integer");
        return Err(path.json(r.error_at(start, reason)));
    }
    text.parse::<u32>().map_err(|_| {
        let reason = format!(
            "invalid value: `{text}`, expected an integer at most {}",
            u32::MAX
        );
        path.json(r.error_at(start, reason))
    })
}

fn read_f64(r: &mut Reader<'_>, path: &Path<'_>) -> Result<f64, ConfigError> {
    expect(r, path, Kind::Number, "a number")?;
    let text = r.number().map_err(|e| path.json(e))?;
    text.parse::<f64>()
        .map_err(|_| path.json(r.error(format!("invalid number `{text}`"))))
}

fn read_strings(r: &mut Reader<'_>, path: &Path<'_>) -> Result<Vec<String>, ConfigError> {
    expect(r, path, Kind::Array, "an array of strings")?;
    r.begin_array().map_err(|e| path.json(e))?;
    let mut items = Vec::new();
    while r.next_element(items.is_empty()).map_err(|e| path.json(e))? {
        items.push(read_string(r, &Path::Index(path, items.len()))?);
    }
    Ok(items)
}

/// `expected `a` or `b``, `expected one of `a`, `b`, `c``: as serde words it.
fn expected_one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// One of `names`, as its index: "unknown variant `drop`, expected `strip` or `reject`".
fn read_variant(r: &mut Reader<'_>, path: &Path<'_>, names: &[&str]) -> Result<usize, ConfigError> {
    expect(r, path, Kind::String, "a string")?;
    let start = r.position();
    let text = r.string().map_err(|e| path.json(e))?;
    names.iter().position(|n| *n == text).ok_or_else(|| {
        let reason = format!(
            "unknown variant `{text}`, expected {}",
            expected_one_of(names)
        );
        path.json(r.error_at(start, reason))
    })
}

/// Reads an object whose fields are `names` (at most 32), handing each field's index and path
/// to `field` to read its value. An unknown or repeated field is an error.
fn read_fields<'a>(
    r: &mut Reader<'a>,
    path: &Path<'_>,
    names: &[&str],
    mut field: impl FnMut(&mut Reader<'a>, usize, &Path<'_>) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    expect(r, path, Kind::Object, "an object")?;
    r.begin_object().map_err(|e| path.json(e))?;
    let mut seen = 0u32;
    let mut first = true;
    while let Some(key) = r.next_key(first).map_err(|e| path.json(e))? {
        first = false;
        let child = Path::Key(path, &key);
        let Some(index) = names.iter().position(|n| *n == key) else {
            let reason = format!("unknown field `{key}`, expected {}", expected_one_of(names));
            return Err(child.json(r.error(reason)));
        };
        let bit = u32::try_from(index)
            .ok()
            .and_then(|i| 1u32.checked_shl(i))
            .unwrap_or(0);
        if seen & bit != 0 {
            return Err(path.json(r.error(format!("duplicate field `{key}`"))));
        }
        seen |= bit;
        field(r, index, &child)?;
    }
    Ok(())
}

/// A required field that was not given: "missing field `sources`".
fn missing(r: &Reader<'_>, path: &Path<'_>, name: &str) -> ConfigError {
    path.json(r.error(format!("missing field `{name}`")))
}

fn read_config(r: &mut Reader<'_>) -> Result<RawConfig, ConfigError> {
    const FIELDS: &[&str] = &[
        "routing_key",
        "namespace",
        "cluster_domain",
        "cluster_header",
        "debug",
        "defaults",
        "trust",
        "unknown_keys",
        "sandboxes",
    ];
    let mut raw = RawConfig::default();
    read_fields(r, &Path::Root, FIELDS, |r, index, path| {
        match index {
            0 => raw.routing_key = read_routing_key(r, path)?,
            1 => raw.namespace = optional(r, path, read_string)?,
            2 => raw.cluster_domain = optional(r, path, read_string)?,
            3 => raw.cluster_header = optional(r, path, read_string)?,
            4 => raw.debug = read_bool(r, path)?,
            5 => raw.defaults = optional(r, path, read_budget)?,
            6 => raw.trust = optional(r, path, read_trust)?,
            7 => {
                raw.unknown_keys = match read_variant(r, path, &["baseline", "reject"])? {
                    0 => UnknownKeys::Baseline,
                    _ => UnknownKeys::Reject,
                }
            }
            8 => {
                // Only checked here, and compiled once the other fields are known.
                raw.sandboxes = optional(r, path, |r, path| {
                    r.peek().map_err(|e| path.json(e))?;
                    let start = r.position();
                    r.skip_value().map_err(|e| path.json(e))?;
                    Ok(start)
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(raw)
}

fn read_routing_key(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawRoutingKey, ConfigError> {
    let mut raw = RawRoutingKey::default();
    read_fields(r, path, &["baggage", "headers"], |r, index, path| {
        match index {
            0 => raw.baggage = read_strings(r, path)?,
            _ => raw.headers = read_strings(r, path)?,
        }
        Ok(())
    })?;
    Ok(raw)
}

fn read_trust(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawTrust, ConfigError> {
    let mut sources = None;
    let mut untrusted = Untrusted::default();
    read_fields(r, path, &["sources", "untrusted"], |r, index, path| {
        match index {
            0 => sources = Some(read_strings(r, path)?),
            _ => {
                untrusted = match read_variant(r, path, &["strip", "reject"])? {
                    0 => Untrusted::Strip,
                    _ => Untrusted::Reject,
                }
            }
        }
        Ok(())
    })?;
    let sources = sources.ok_or_else(|| missing(r, path, "sources"))?;
    Ok(RawTrust { sources, untrusted })
}

fn read_budget(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawBudget, ConfigError> {
    let mut raw = RawBudget::default();
    read_fields(
        r,
        path,
        &["rate_limit", "max_in_flight"],
        |r, index, path| {
            match index {
                0 => raw.rate_limit = optional(r, path, read_rate_limit)?,
                _ => raw.max_in_flight = optional(r, path, read_u32)?,
            }
            Ok(())
        },
    )?;
    Ok(raw)
}

fn read_rate_limit(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawRateLimit, ConfigError> {
    let (mut requests_per_second, mut burst) = (None, None);
    read_fields(
        r,
        path,
        &["requests_per_second", "burst"],
        |r, index, path| {
            match index {
                0 => requests_per_second = Some(read_f64(r, path)?),
                _ => burst = Some(read_u32(r, path)?),
            }
            Ok(())
        },
    )?;
    Ok(RawRateLimit {
        requests_per_second: requests_per_second
            .ok_or_else(|| missing(r, path, "requests_per_second"))?,
        burst: burst.ok_or_else(|| missing(r, path, "burst"))?,
    })
}

fn read_sandbox(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawSandbox, ConfigError> {
    const FIELDS: &[&str] = &[
        "routes",
        "rate_limit",
        "max_in_flight",
        "enforce",
        "owner",
        "baseline_writes",
        "baseline_write_exceptions",
        "expires_at",
    ];
    let mut raw = RawSandbox::default();
    read_fields(r, path, FIELDS, |r, index, path| {
        match index {
            0 => raw.routes = read_routes(r, path)?,
            1 => raw.rate_limit = optional(r, path, read_rate_limit)?,
            2 => raw.max_in_flight = optional(r, path, read_u32)?,
            3 => raw.enforce = read_bool(r, path)?,
            4 => raw.owner = optional(r, path, read_owner)?,
            5 => {
                raw.baseline_writes = match read_variant(r, path, &["allow", "deny"])? {
                    0 => BaselineWrites::Allow,
                    _ => BaselineWrites::Deny,
                }
            }
            6 => raw.baseline_write_exceptions = read_strings(r, path)?,
            7 => raw.expires_at = optional(r, path, read_string)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(raw)
}

fn read_routes(
    r: &mut Reader<'_>,
    path: &Path<'_>,
) -> Result<BTreeMap<String, RawTarget>, ConfigError> {
    expect(r, path, Kind::Object, "an object of targets by service")?;
    r.begin_object().map_err(|e| path.json(e))?;
    let mut routes = BTreeMap::new();
    while let Some(service) = r.next_key(routes.is_empty()).map_err(|e| path.json(e))? {
        if routes.contains_key(&*service) {
            return Err(path.json(r.error(format!("duplicate key `{service}`"))));
        }
        let target = read_target(r, &Path::Key(path, &service))?;
        routes.insert(service.into_owned(), target);
    }
    Ok(routes)
}

fn read_target(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawTarget, ConfigError> {
    let mut raw = RawTarget::default();
    read_fields(r, path, &["authority", "cluster"], |r, index, path| {
        match index {
            0 => raw.authority = optional(r, path, read_string)?,
            _ => raw.cluster = optional(r, path, read_string)?,
        }
        Ok(())
    })?;
    Ok(raw)
}

fn read_owner(r: &mut Reader<'_>, path: &Path<'_>) -> Result<RawOwner, ConfigError> {
    let mut raw = RawOwner::default();
    read_fields(r, path, &["user", "change"], |r, index, path| {
        match index {
            0 => raw.user = optional(r, path, read_string)?,
            _ => raw.change = optional(r, path, read_string)?,
        }
        Ok(())
    })?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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

    #[test]
    fn key_order_does_not_matter() {
        // What sandboxes are compiled against may come after them.
        let late = compile(
            br#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}},
                "cluster_domain": "corp.example", "namespace": "shop",
                "defaults": {"max_in_flight": 7}, "routing_key": {"headers": ["x-key"]}}"#,
            &HostFacts::default(),
        )
        .unwrap();
        let x = late.sandbox("x").unwrap();
        assert_eq!(x.budget.as_ref().unwrap().max_in_flight, Some(7));
        assert!(x.may_write_to(Some("inventory.shop.svc.corp.example")));
        assert_eq!(
            &*late.settings.carriers.headers,
            &[b"x-key".to_vec().into_boxed_slice()]
        );
        let e = err(
            r#"{"sandboxes": {"x": {"routes": {"payment": {"cluster": "c"}}}}, "namespace": "Shop"}"#,
        );
        assert!(e.starts_with("namespace: "), "{e}");
    }

    #[test]
    fn duplicate_keys_are_rejected_everywhere() {
        let e = err(r#"{"sandboxes": {"x": {}, "y": {}, "x": {"enforce": false}}}"#);
        assert!(e.starts_with("sandboxes: duplicate key `x`"), "{e}");
        // The same key spelled with an escape.
        let e = err(r#"{"sandboxes": {"x": {}, "\u0078": {}}}"#);
        assert!(e.starts_with("sandboxes: duplicate key `x`"), "{e}");
        let e = err(r#"{"namespace": "shop", "sandboxes": {"x": {"routes": {
            "payment": {"cluster": "a"}, "payment": {"cluster": "b"}}}}}"#);
        assert!(
            e.starts_with("sandboxes.x.routes: duplicate key `payment`"),
            "{e}"
        );
        let e = err(r#"{"debug": true, "debug": false}"#);
        assert!(e.starts_with("duplicate field `debug`"), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "a", "user": "b"}}}}"#);
        assert!(
            e.starts_with("sandboxes.x.owner: duplicate field `user`"),
            "{e}"
        );
        let e = err(r#"{"sandboxes": {}, "sandboxes": {}}"#);
        assert!(e.starts_with("duplicate field `sandboxes`"), "{e}");
        // Many distinct keys are fine, however their hashes fall.
        let many: Vec<String> = (0..2000).map(|i| format!(r#""k{i}": {{}}"#)).collect();
        let json = format!(r#"{{"sandboxes": {{{}}}}}"#, many.join(","));
        assert_eq!(
            compile(json.as_bytes(), &HostFacts::default())
                .unwrap()
                .sandbox_count(),
            2000
        );
        let json = format!(r#"{{"sandboxes": {{{}, "k1999": {{}}}}}}"#, many.join(","));
        assert!(err(&json).starts_with("sandboxes: duplicate key `k1999`"));
    }

    #[test]
    fn the_exact_duplicate_check_reads_only_earlier_keys() {
        let json = br#"{"sandboxes": {"a": {"routes": {"b": {}}}, "\u0062": {}, "c": {}}}"#;
        let document = Reader::new(json);
        let start = json.iter().position(|&b| b == b'{').unwrap() + 14;
        assert_eq!(json[start], b'{');
        assert!(!is_among_first(&document, start, 0, "a").unwrap());
        assert!(is_among_first(&document, start, 1, "a").unwrap());
        // Keys of nested objects are not sandbox keys.
        assert!(is_among_first(&document, start, 2, "b").unwrap());
        assert!(!is_among_first(&document, start, 1, "b").unwrap());
        assert!(!is_among_first(&document, start, 3, "routes").unwrap());
        assert!(!is_among_first(&document, start, 9, "d").unwrap());
    }

    #[test]
    fn unknown_fields_are_named_at_every_level() {
        for (json, path) in [
            (r#"{"sandboxez": {}}"#, "sandboxez"),
            (r#"{"routing_key": {"cookie": []}}"#, "routing_key.cookie"),
            (
                r#"{"trust": {"sources": ["10.0.0.0/8"], "mode": 1}}"#,
                "trust.mode",
            ),
            (r#"{"defaults": {"burst": 1}}"#, "defaults.burst"),
            (
                r#"{"defaults": {"rate_limit": {"requests_per_second": 1, "burst": 1, "x": 1}}}"#,
                "defaults.rate_limit.x",
            ),
            (
                r#"{"sandboxes": {"x": {"routes": {"p": {"cluster": "c", "port": 1}}}}}"#,
                "sandboxes.x.routes.p.port",
            ),
        ] {
            let e = err(json);
            let leaf = path.rsplit('.').next().unwrap();
            assert!(
                e.starts_with(&format!("{path}: unknown field `{leaf}`, expected ")),
                "{e}"
            );
        }
    }

    #[test]
    fn null_is_absent_only_where_a_field_is_optional() {
        compile(
            br#"{"namespace": null, "cluster_domain": null, "cluster_header": null,
                "defaults": null, "trust": null, "sandboxes": null}"#,
            &HostFacts::default(),
        )
        .unwrap();
        let router = compile(
            br#"{"namespace": "shop", "sandboxes": {"x": {"owner": null, "rate_limit": null,
                "max_in_flight": null, "expires_at": null,
                "routes": {"p": {"authority": null, "cluster": "c"}}}}}"#,
            &HostFacts::default(),
        )
        .unwrap();
        assert!(router.sandbox("x").unwrap().budget.is_none());
        for (json, path) in [
            (r#"{"debug": null}"#, "debug: "),
            (r#"{"routing_key": null}"#, "routing_key: "),
            (
                r#"{"routing_key": {"baggage": null}}"#,
                "routing_key.baggage: ",
            ),
            (
                r#"{"routing_key": {"baggage": [null]}}"#,
                "routing_key.baggage[0]: ",
            ),
            (r#"{"unknown_keys": null}"#, "unknown_keys: "),
            (r#"{"sandboxes": {"x": null}}"#, "sandboxes.x: "),
            (
                r#"{"sandboxes": {"x": {"routes": null}}}"#,
                "sandboxes.x.routes: ",
            ),
            (
                r#"{"sandboxes": {"x": {"enforce": null}}}"#,
                "sandboxes.x.enforce: ",
            ),
        ] {
            let e = err(json);
            assert!(
                e.starts_with(path) && e.contains("invalid type: null"),
                "{e}"
            );
        }
    }

    #[test]
    fn numbers_are_read_strictly() {
        let burst = |text: &str| {
            compile(
                format!(
                    r#"{{"sandboxes": {{"x": {{"rate_limit": {{"requests_per_second": 1, "burst": {text}}}}}}}}}"#
                )
                .as_bytes(),
                &HostFacts::default(),
            )
            .map(|r| r.sandbox("x").unwrap().budget.as_ref().unwrap().rate)
            .map_err(|e| e.to_string())
        };
        assert_eq!(burst("4294967295").unwrap(), RateLimit::new(1.0, u32::MAX));
        assert_eq!(burst("7").unwrap(), RateLimit::new(1.0, 7));
        for bad in [
            "4294967296",
            "99999999999999999999",
            "-1",
            "-0",
            "1.5",
            "1.0",
            "1e2",
            "1E0",
            "\"7\"",
            "true",
        ] {
            let e = burst(bad).unwrap_err();
            assert!(
                e.starts_with("sandboxes.x.rate_limit.burst: "),
                "{bad}: {e}"
            );
        }
        // A syntax error inside `sandboxes` is found when the top level is first read.
        let e = burst("07").unwrap_err();
        assert!(
            e.starts_with("sandboxes: invalid number: leading zero"),
            "{e}"
        );
        let rate = |text: &str| {
            compile(
                format!(
                    r#"{{"defaults": {{"rate_limit": {{"requests_per_second": {text}, "burst": 1}}}}, "sandboxes": {{"x": {{}}}}}}"#
                )
                .as_bytes(),
                &HostFacts::default(),
            )
            .map(|r| r.sandbox("x").unwrap().budget.as_ref().unwrap().rate)
            .map_err(|e| e.to_string())
        };
        for (text, value) in [
            ("5", 5.0),
            ("0.25", 0.25),
            ("2.5e2", 250.0),
            ("1E6", 1e6),
            ("1e-6", 1e-6),
        ] {
            assert_eq!(rate(text).unwrap(), RateLimit::new(value, 1), "{text}");
        }
        for bad in [
            "0", "-1", "1e400", "1000001", "01", "1.", ".5", "+1", "NaN", "\"1\"",
        ] {
            let e = rate(bad).unwrap_err();
            assert!(e.starts_with("defaults.rate_limit"), "{bad}: {e}");
        }
        let e = err(r#"{"sandboxes": {"x": {"max_in_flight": 4294967296}}}"#);
        assert!(e.starts_with("sandboxes.x.max_in_flight: "), "{e}");
    }

    #[test]
    fn syntax_errors_name_where_they_are() {
        assert!(compile(b" \n\t\r ", &HostFacts::default()).is_ok());
        let e = err("{} x");
        assert!(e.starts_with("trailing characters"), "{e}");
        assert!(e.ends_with("at line 1 column 4"), "{e}");
        let e = err("[]");
        assert!(
            e.starts_with("invalid type: an array, expected an object"),
            "{e}"
        );
        assert!(err("null").starts_with("invalid type: null"));
        assert!(err("\"x\"").starts_with("invalid type: a string"));
        // Inside `sandboxes`, found when the top level is first read.
        let e = err("{\"namespace\": \"shop\",\n \"sandboxes\": {\"x\": {\"routes\": {]}}}}");
        assert!(e.starts_with("sandboxes: "), "{e}");
        assert!(e.ends_with("at line 2 column 33"), "{e}");
        let e = err(r#"{"sandboxes": {"x": {"owner": {"user": "\ud800"}}}}"#);
        assert!(
            e.starts_with("sandboxes: ") && e.contains("surrogate"),
            "{e}"
        );
        let e = compile(
            b"{\"sandboxes\": {\"x\": {\"expires_at\": \"\xff\"}}}",
            &HostFacts::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "sandboxes");
        assert!(e.reason.starts_with("invalid UTF-8"), "{e}");
        let e = compile(b"{\"namespace\": \"a\xffb\"}", &HostFacts::default()).unwrap_err();
        assert_eq!(e.field, "namespace");
        assert!(e.reason.starts_with("invalid UTF-8"), "{e}");
        let deep = format!(
            r#"{{"sandboxes": {}{}}}"#,
            r#"{"a":"#.repeat(100),
            "}".repeat(100)
        );
        assert!(err(&deep).contains("nested deeper than 64"));
        let deep = format!(r#"{{"sandboxes": {}"#, r#"{"a":"#.repeat(10_000));
        assert!(err(&deep).starts_with("sandboxes: "));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!err(&deep).is_empty());
    }

    #[test]
    fn every_truncation_of_a_valid_configuration_is_an_error() {
        let json =
            br#"{"namespace": "shop", "routing_key": {"baggage": ["sandbox"], "headers": []},
            "defaults": {"rate_limit": {"requests_per_second": 1.5e1, "burst": 3}},
            "trust": {"sources": ["10.0.0.0/8"], "untrusted": "reject"},
            "sandboxes": {"x\u002d1": {"routes": {"payment": {"authority": "p.shop:8080"}},
                "owner": {"user": "\u00e9\ud83d\ude00"}, "enforce": false, "max_in_flight": 2,
                "baseline_writes": "deny", "baseline_write_exceptions": ["audit"]}}}"#;
        compile(json, &HostFacts::default()).unwrap();
        for cut in 0..json.len() {
            let prefix = &json[..cut];
            if prefix.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            assert!(
                compile(prefix, &HostFacts::default()).is_err(),
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
    }
}
