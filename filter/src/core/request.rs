//! One pass over a request's headers: finds the routing key by carrier precedence and notes
//! the few other headers the filter acts on. Borrows from the header buffer; allocates nothing.
//!
//! Precedence, highest first; the first carrier holding a well-formed key wins, a malformed
//! value is ignored (reported as an invalid key only when no carrier has a valid one):
//! 1. plain headers of `routing_key.headers`, in the order listed;
//! 2. W3C `baggage` members named in `routing_key.baggage`, in the order listed, across every
//!    `baggage` header in arrival order;
//! 3. OpenTracing `ot-baggage-<name>` headers;
//! 4. Jaeger `uberctx-<name>` headers;
//! 5. W3C `tracestate` list members `<name>=<key>`.

use super::baggage::{find_baggage_member, find_tracestate_member, whole_value, Lookup};
use super::key::RoutingKey;
use super::router::Settings;

const OT_BAGGAGE_PREFIX: &[u8] = b"ot-baggage-";
const JAEGER_BAGGAGE_PREFIX: &[u8] = b"uberctx-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySearch {
    Found(RoutingKey),
    /// A carrier was present but held no well-formed key.
    Invalid,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestScan<'a> {
    pub authority: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    pub key: KeySearch,
    /// The client sent the header the filter uses for cluster-mode routing.
    pub has_cluster_header: bool,
    /// The client sent the key header (only the filter may set it).
    pub has_key_header: bool,
    pub is_grpc: bool,
    /// The first method-override header (`x-http-method-override`, `x-http-method`,
    /// `x-method-override`) that names a method.
    pub method_override: Option<&'a [u8]>,
    /// A protocol upgrade was asked for (`upgrade` header, e.g. WebSocket).
    pub upgrade: bool,
}

/// The best key so far and its precedence rank (lower wins).
struct Best {
    rank: usize,
    key: Option<RoutingKey>,
    saw_invalid: bool,
}

impl Best {
    fn wants(&self, rank: usize) -> bool {
        rank < self.rank
    }

    fn offer(&mut self, rank: usize, lookup: Lookup) {
        match lookup {
            Lookup::Key(key) if rank < self.rank => {
                self.rank = rank;
                self.key = Some(key);
            }
            Lookup::Invalid => self.saw_invalid = true,
            _ => {}
        }
    }
}

pub fn scan<'a>(
    settings: &Settings,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> RequestScan<'a> {
    let carriers = &settings.carriers;
    let plain = carriers.headers.len();
    let names = carriers.baggage.len();
    // Rank bases of each carrier kind (see the module docs).
    let baggage_base = plain;
    let ot_base = baggage_base.saturating_add(names);
    let jaeger_base = ot_base.saturating_add(names);
    let tracestate_base = jaeger_base.saturating_add(names);

    let mut best = Best {
        rank: usize::MAX,
        key: None,
        saw_invalid: false,
    };
    let mut scan = RequestScan {
        authority: None,
        method: None,
        path: None,
        key: KeySearch::Absent,
        has_cluster_header: false,
        has_key_header: false,
        is_grpc: false,
        method_override: None,
        upgrade: false,
    };
    for (name, value) in headers {
        match name {
            b":authority" => {
                scan.authority.get_or_insert(value);
            }
            b":method" => {
                scan.method.get_or_insert(value);
            }
            b":path" => {
                scan.path.get_or_insert(value);
            }
            b"content-type" => scan.is_grpc = value.starts_with(b"application/grpc"),
            b"upgrade" => scan.upgrade = true,
            b"x-http-method-override" | b"x-http-method" | b"x-method-override" => {
                scan.method_override = scan.method_override.or(Some(value));
            }
            b"baggage" if carriers.kinds.baggage => {
                for (i, member) in carriers.baggage.iter().enumerate() {
                    let rank = baggage_base.saturating_add(i);
                    if best.wants(rank) {
                        best.offer(rank, find_baggage_member(value, member));
                    }
                }
            }
            b"tracestate" if carriers.kinds.tracestate => {
                for (i, member) in carriers.baggage.iter().enumerate() {
                    let rank = tracestate_base.saturating_add(i);
                    if best.wants(rank) {
                        best.offer(rank, find_tracestate_member(value, member));
                    }
                }
            }
            _ => {
                if name.eq_ignore_ascii_case(&settings.cluster_header) {
                    scan.has_cluster_header = true;
                } else if !settings.key_header.is_empty()
                    && name.eq_ignore_ascii_case(&settings.key_header)
                {
                    scan.has_key_header = true;
                } else if let Some(rank) = plain_header_rank(carriers.headers.as_slice(), name) {
                    if best.wants(rank) {
                        best.offer(rank, whole_value(value, false));
                    }
                } else if let Some(i) = carriers
                    .kinds
                    .ot_baggage
                    .then(|| prefixed_member(name, OT_BAGGAGE_PREFIX, &carriers.baggage))
                    .flatten()
                {
                    let rank = ot_base.saturating_add(i);
                    if best.wants(rank) {
                        best.offer(rank, whole_value(value, true));
                    }
                } else if let Some(i) = carriers
                    .kinds
                    .uberctx
                    .then(|| prefixed_member(name, JAEGER_BAGGAGE_PREFIX, &carriers.baggage))
                    .flatten()
                {
                    let rank = jaeger_base.saturating_add(i);
                    if best.wants(rank) {
                        best.offer(rank, whole_value(value, true));
                    }
                }
            }
        }
    }
    scan.key = match (best.key, best.saw_invalid) {
        (Some(key), _) => KeySearch::Found(key),
        (None, true) => KeySearch::Invalid,
        (None, false) => KeySearch::Absent,
    };
    scan
}

fn plain_header_rank(headers: &[Box<[u8]>], name: &[u8]) -> Option<usize> {
    headers.iter().position(|h| name.eq_ignore_ascii_case(h))
}

/// `ot-baggage-sandbox` → the index of `sandbox` among the member names.
fn prefixed_member(name: &[u8], prefix: &[u8], members: &[Box<[u8]>]) -> Option<usize> {
    let head = name.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let member = name.get(prefix.len()..)?;
    members.iter().position(|m| member.eq_ignore_ascii_case(m))
}
