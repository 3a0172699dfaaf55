//! The compiled route table and the routing decision. Lookups are two hash probes and a binary
//! search over one sandbox's own routes: nothing grows with the number of sandboxes.
//!
//! The tables are hashbrown maps with its default hasher (foldhash: fast, non-cryptographic,
//! seeded per process). They hold only configured names, and a client only ever looks names up,
//! so a key chosen by a client cannot lengthen a probe sequence: an unknown key costs one probe
//! of a table whose layout the configuration alone decided.

use std::net::IpAddr;
use std::rc::Rc;

use hashbrown::HashMap;

use super::breaker::BreakerPolicy;
use super::cidr::Cidr;
use super::guard::Budget;
use super::key::RoutingKey;
use super::names::{normalize_host, split_authority};
use super::request::{KeySearch, RequestScan};

pub type ServiceId = u32;

/// Which kinds of header carry the `baggage` member names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarrierKinds {
    /// W3C `baggage`.
    pub baggage: bool,
    /// W3C `tracestate`.
    pub tracestate: bool,
    /// OpenTracing `ot-baggage-<name>`.
    pub ot_baggage: bool,
    /// Jaeger `uberctx-<name>`.
    pub uberctx: bool,
}

impl CarrierKinds {
    pub const ALL: CarrierKinds = CarrierKinds {
        baggage: true,
        tracestate: true,
        ot_baggage: true,
        uberctx: true,
    };
}

/// Which headers carry the routing key (names stored lowercase where header names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carriers {
    /// Plain headers whose whole value is the key.
    pub headers: Vec<Box<[u8]>>,
    /// W3C baggage / tracestate member names.
    pub baggage: Vec<Box<[u8]>>,
    /// Which kinds of header carry the member names.
    pub kinds: CarrierKinds,
    /// Every header (lowercase) that can carry a key: when none of them is present, a request
    /// is keyless without reading the rest of its headers.
    pub header_names: Vec<Box<[u8]>>,
}

impl Carriers {
    /// `headers` lowercase.
    pub fn new(baggage: &[String], headers: &[String], kinds: CarrierKinds) -> Self {
        let headers: Vec<Box<[u8]>> = headers
            .iter()
            .map(|h| h.as_bytes().to_vec().into_boxed_slice())
            .collect();
        let mut header_names = headers.clone();
        if !baggage.is_empty() {
            // Most common carrier first: probing stops at the first header present.
            if kinds.baggage {
                header_names.insert(0, Box::from(&b"baggage"[..]));
            }
            if kinds.tracestate {
                header_names.push(Box::from(&b"tracestate"[..]));
            }
        }
        for member in baggage {
            let prefixes = [
                (kinds.ot_baggage, "ot-baggage-"),
                (kinds.uberctx, "uberctx-"),
            ];
            for (_, prefix) in prefixes.iter().filter(|(on, _)| *on) {
                let name = format!("{prefix}{}", member.to_ascii_lowercase()).into_bytes();
                if !header_names.iter().any(|known| **known == *name) {
                    header_names.push(name.into_boxed_slice());
                }
            }
        }
        Carriers {
            headers,
            baggage: baggage
                .iter()
                .map(|b| b.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            kinds,
            header_names,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrustedMode {
    /// Remove the key from every carrier and route as baseline.
    Strip,
    /// Answer 403.
    Reject,
}

/// Which sources may use a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub sources: Vec<Cidr>,
    pub untrusted: UntrustedMode,
}

impl Trust {
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.sources.iter().any(|cidr| cidr.contains(ip)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub carriers: Carriers,
    pub cluster_header: Box<[u8]>,
    /// The header that hands the validated key to later filters and the app; empty: off.
    pub key_header: Box<[u8]>,
    pub debug: bool,
    /// `None`: every source is trusted.
    pub trust: Option<Trust>,
    /// Answer unknown (and expired) keys with a 4xx instead of routing them as baseline.
    pub reject_unknown_keys: bool,
}

impl Settings {
    /// Every header whose presence sends a request through the full scan: the carriers, and the
    /// cluster and key headers (only the filter may set those, so a client's copy is removed).
    /// When none is present the request is keyless and untouched.
    pub fn probed_headers(&self) -> impl Iterator<Item = &[u8]> {
        let owned = [&*self.cluster_header, &*self.key_header];
        self.carriers
            .header_names
            .iter()
            .map(|name| &**name)
            .chain(owned.into_iter().filter(|name| !name.is_empty()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Rewrite `:authority` to this host, with this port or the request's own.
    Authority { host: Box<str>, port: Option<u16> },
    /// Set the cluster header to this cluster name.
    Cluster(Box<str>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub user: Option<Box<str>>,
    pub change: Option<Box<str>>,
}

#[derive(Debug)]
pub struct Sandbox {
    pub key: Rc<str>,
    /// `None`: unlimited.
    pub budget: Option<Budget>,
    /// `None`: no circuit breaker. Shared with the streams whose verdicts it awaits.
    pub breaker: Option<Rc<BreakerPolicy>>,
    /// `false`: shadow mode; what the budget or the breaker would refuse is counted and
    /// audited, and goes on.
    pub enforce: bool,
    pub owner: Option<Owner>,
    /// Unix nanoseconds after which the key behaves as unknown.
    pub expires_at_ns: Option<u64>,
    /// Deny non-read requests to services this sandbox does not override.
    pub deny_baseline_writes: bool,
    /// Canonical names of baseline services it may still write to; sorted.
    write_exceptions: Vec<Box<str>>,
    /// Sorted by service id.
    routes: Vec<(ServiceId, Target)>,
}

/// Everything about one sandbox, as the configuration gives it.
pub struct SandboxSpec {
    pub key: String,
    /// (canonical service name, every host form of it, target).
    pub routes: Vec<(String, Vec<String>, Target)>,
    pub budget: Option<Budget>,
    pub breaker: Option<BreakerPolicy>,
    pub enforce: bool,
    pub owner: Option<Owner>,
    pub expires_at_ns: Option<u64>,
    pub deny_baseline_writes: bool,
    /// (canonical service name, every host form of it).
    pub write_exceptions: Vec<(String, Vec<String>)>,
}

impl Sandbox {
    pub fn may_write_to(&self, service: Option<&str>) -> bool {
        !self.deny_baseline_writes
            || service.is_some_and(|s| {
                self.write_exceptions
                    .binary_search_by(|e| (**e).cmp(s))
                    .is_ok()
            })
    }

    pub fn is_expired(&self, now_ns: u64) -> bool {
        self.expires_at_ns.is_some_and(|at| now_ns >= at)
    }

    fn route(&self, service: ServiceId) -> Option<&Target> {
        let at = self
            .routes
            .binary_search_by_key(&service, |(s, _)| *s)
            .ok()?;
        self.routes.get(at).map(|(_, target)| target)
    }
}

#[derive(Debug)]
pub struct Router {
    pub settings: Settings,
    /// Every host form of every routed service → its id.
    hosts: HashMap<Box<str>, ServiceId>,
    /// Canonical name of each service id.
    services: Vec<Box<str>>,
    /// Key → index into `sandbox_table`; the key string is shared with the sandbox.
    sandboxes: HashMap<Rc<str>, u32>,
    /// Held in a vector, not in the map's buckets, so that the spare capacity of the hash table
    /// costs a few bytes per slot rather than a whole sandbox.
    sandbox_table: Vec<Sandbox>,
}

/// Why a request keeps its baseline destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineReason {
    NoKey,
    InvalidKey,
    UnknownKey,
    NoOverride,
    /// The source may not use a routing key.
    Untrusted,
    /// The sandbox's `expires_at` has passed.
    Expired,
}

impl BaselineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineReason::NoKey => "no-key",
            BaselineReason::InvalidKey => "invalid-key",
            BaselineReason::UnknownKey => "unknown-key",
            BaselineReason::NoOverride => "no-override",
            BaselineReason::Untrusted => "untrusted",
            BaselineReason::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'r> {
    Baseline {
        reason: BaselineReason,
        key: Option<RoutingKey>,
        /// The registered sandbox the key names, if any.
        sandbox: Option<&'r Sandbox>,
        /// The destination, when it is a service the configuration knows.
        service: Option<&'r str>,
    },
    Route {
        key: RoutingKey,
        sandbox: &'r Sandbox,
        service: &'r str,
        target: &'r Target,
    },
}

impl Decision<'_> {
    /// What every request without a routing key gets, whatever else it carries.
    pub fn keyless() -> Self {
        Decision::Baseline {
            reason: BaselineReason::NoKey,
            key: None,
            sandbox: None,
            service: None,
        }
    }
}

impl PartialEq for Sandbox {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Sandbox {}

impl Router {
    pub fn sandbox_count(&self) -> usize {
        self.sandboxes.len()
    }

    pub fn sandbox(&self, key: &str) -> Option<&Sandbox> {
        let index = *self.sandboxes.get(key)?;
        self.sandbox_table.get(usize::try_from(index).ok()?)
    }

    pub fn sandboxes(&self) -> impl Iterator<Item = &Sandbox> {
        self.sandbox_table.iter()
    }

    pub fn decide(&self, request: &RequestScan<'_>) -> Decision<'_> {
        let key = match request.key {
            KeySearch::Found(key) => key,
            KeySearch::Invalid => return baseline(BaselineReason::InvalidKey, None, None, None),
            KeySearch::Absent => return Decision::keyless(),
        };
        let Some(sandbox) = self.sandbox(key.as_str()) else {
            return baseline(BaselineReason::UnknownKey, Some(key), None, None);
        };
        let service = request.authority.and_then(|a| self.service_of(a));
        let target = service.and_then(|(id, _)| sandbox.route(id));
        match (service, target) {
            (Some((_, service)), Some(target)) => Decision::Route {
                key,
                sandbox,
                service,
                target,
            },
            (service, _) => baseline(
                BaselineReason::NoOverride,
                Some(key),
                Some(sandbox),
                service.map(|(_, name)| name),
            ),
        }
    }

    fn service_of(&self, authority: &[u8]) -> Option<(ServiceId, &str)> {
        let (host, _port) = split_authority(authority)?;
        let host = normalize_host(host)?;
        let id = *self.hosts.get(host.as_str())?;
        let name = self.services.get(usize::try_from(id).ok()?)?;
        Some((id, name))
    }
}

fn baseline<'r>(
    reason: BaselineReason,
    key: Option<RoutingKey>,
    sandbox: Option<&'r Sandbox>,
    service: Option<&'r str>,
) -> Decision<'r> {
    Decision::Baseline {
        reason,
        key,
        sandbox,
        service,
    }
}

/// The `:authority` a request rerouted to `host`/`port` carries: the target's port if it names
/// one, else the request's own.
pub fn rewritten_authority(target_host: &str, target_port: Option<u16>, original: &[u8]) -> String {
    let mut out = String::with_capacity(target_host.len().saturating_add(6));
    push_rewritten_authority(&mut out, target_host, target_port, original);
    out
}

/// [`rewritten_authority`], appended to `out` (no formatting machinery: this runs per request).
fn push_rewritten_authority(
    out: &mut String,
    target_host: &str,
    target_port: Option<u16>,
    original: &[u8],
) {
    out.push_str(target_host);
    if let Some(port) = target_port {
        out.push(':');
        push_decimal(out, port);
    } else if let Some(port) = split_authority(original)
        .and_then(|(_, port)| port)
        .and_then(|p| std::str::from_utf8(p).ok())
    {
        out.push(':');
        out.push_str(port);
    }
}

fn push_decimal(out: &mut String, mut value: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start = start.saturating_sub(1);
        if let Some(slot) = digits.get_mut(start) {
            // `value % 10` is below 10: the addition stays within ASCII digits.
            *slot = b'0'.saturating_add((value % 10) as u8);
        }
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if let Some(Ok(text)) = digits.get(start..).map(std::str::from_utf8) {
        out.push_str(text);
    }
}

/// A target as shown in debug headers and audit records: `authority:<host[:port]>` (the
/// authority the request is rewritten to) or `cluster:<name>`.
pub fn target_text(target: &Target, original_authority: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    push_target_text(&mut out, target, original_authority);
    out
}

/// [`target_text`], appended to `out`.
fn push_target_text(out: &mut String, target: &Target, original_authority: &[u8]) {
    match target {
        Target::Authority { host, port } => {
            out.push_str("authority:");
            push_rewritten_authority(out, host, *port, original_authority);
        }
        Target::Cluster(cluster) => {
            out.push_str("cluster:");
            out.push_str(cluster);
        }
    }
}

/// Builds a [`Router`], interning each service once however many sandboxes route it.
pub struct RouterBuilder {
    router: Router,
}

impl RouterBuilder {
    pub fn new(settings: Settings) -> Self {
        RouterBuilder {
            router: Router {
                settings,
                hosts: HashMap::default(),
                services: Vec::new(),
                sandboxes: HashMap::default(),
                sandbox_table: Vec::new(),
            },
        }
    }

    pub fn add_sandbox(&mut self, spec: SandboxSpec) -> Result<(), String> {
        let mut table = Vec::with_capacity(spec.routes.len());
        for (canonical, forms, target) in spec.routes {
            let id = self.intern(canonical, forms)?;
            if table.iter().any(|(existing, _)| *existing == id) {
                let name = self.router.services.get(id as usize).map_or("", |s| &**s);
                return Err(format!("routes `{name}` more than once"));
            }
            table.push((id, target));
        }
        table.sort_by_key(|(id, _)| *id);
        table.shrink_to_fit();
        let mut write_exceptions = Vec::with_capacity(spec.write_exceptions.len());
        for (canonical, forms) in spec.write_exceptions {
            self.intern(canonical.clone(), forms)?;
            write_exceptions.push(canonical.into_boxed_str());
        }
        write_exceptions.sort();
        write_exceptions.dedup();
        let key: Rc<str> = spec.key.as_str().into();
        let sandbox = Sandbox {
            key: Rc::clone(&key),
            budget: spec.budget,
            breaker: spec.breaker.map(Rc::new),
            enforce: spec.enforce,
            owner: spec.owner,
            expires_at_ns: spec.expires_at_ns,
            deny_baseline_writes: spec.deny_baseline_writes,
            write_exceptions,
            routes: table,
        };
        if self.router.sandboxes.contains_key(&key) {
            return Err("defined more than once".into());
        }
        let index = u32::try_from(self.router.sandbox_table.len())
            .map_err(|_| "too many sandboxes".to_owned())?;
        self.router.sandboxes.insert(key, index);
        self.router.sandbox_table.push(sandbox);
        Ok(())
    }

    fn intern(&mut self, canonical: String, forms: Vec<String>) -> Result<ServiceId, String> {
        if let Some(&id) = self.router.hosts.get(canonical.as_str()) {
            return Ok(id);
        }
        let id = ServiceId::try_from(self.router.services.len())
            .map_err(|_| "too many services".to_owned())?;
        self.router.services.push(canonical.into_boxed_str());
        for form in forms {
            self.router.hosts.insert(form.into_boxed_str(), id);
        }
        Ok(id)
    }

    pub fn has_sandbox(&self, key: &str) -> bool {
        self.router.sandboxes.contains_key(key)
    }

    /// A route whose authority target is itself a service the table routes, as (sandbox key,
    /// routed service, target host), if any. Such a request would be recorded as `routed` and
    /// land on that service's baseline.
    pub fn route_to_a_routed_service(&self) -> Option<(&str, &str, &str)> {
        let router = &self.router;
        router.sandbox_table.iter().find_map(|sandbox| {
            sandbox
                .routes
                .iter()
                .find_map(|(service, target)| match target {
                    Target::Authority { host, .. } if router.hosts.contains_key(&**host) => {
                        let service = router.services.get(*service as usize)?;
                        Some((&*sandbox.key, &**service, &**host))
                    }
                    _ => None,
                })
        })
    }

    pub fn build(mut self) -> Router {
        self.router.hosts.shrink_to_fit();
        self.router.services.shrink_to_fit();
        self.router.sandboxes.shrink_to_fit();
        self.router.sandbox_table.shrink_to_fit();
        self.router
    }
}
