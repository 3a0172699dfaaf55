//! Oracles and input builders shared by the fuzz targets.
//!
//! The oracles restate the specification (module docs of `core::baggage` and `core::request`)
//! in the plainest way possible: allocating, copying, no early exits. The targets compare the
//! core's answers against them and check invariants that must hold for any input.

use sandbox_router::core::baggage::Lookup;
use sandbox_router::core::key::{RoutingKey, MAX_KEY_LEN};
use sandbox_router::core::request::KeySearch;
use sandbox_router::core::router::Settings;

/// A routing key as the spec says it is: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub fn is_well_formed_key(bytes: &[u8]) -> bool {
    (1..=MAX_KEY_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// Asserts the invariant every key the core hands out must satisfy.
pub fn assert_key_shape(key: &RoutingKey) {
    let bytes = key.as_bytes();
    assert!(is_well_formed_key(bytes), "malformed key {bytes:?}");
    assert_eq!(key.as_str().as_bytes(), bytes);
}

pub fn trim_ows(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    while matches!(v.first(), Some(b' ' | b'\t')) {
        v.remove(0);
    }
    while matches!(v.last(), Some(b' ' | b'\t')) {
        v.pop();
    }
    v
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` decoding that keeps a malformed escape as it is.
pub fn lossy_percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escape {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The spec's answer for a lookup, with the key as plain bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Key(Vec<u8>),
    Invalid,
    Absent,
}

impl Expect {
    pub fn of(lookup: &Lookup) -> Expect {
        match lookup {
            Lookup::Key(k) => {
                assert_key_shape(k);
                Expect::Key(k.as_bytes().to_vec())
            }
            Lookup::Invalid => Expect::Invalid,
            Lookup::Absent => Expect::Absent,
        }
    }

    pub fn of_search(search: &KeySearch) -> Expect {
        match search {
            KeySearch::Found(k) => {
                assert_key_shape(k);
                Expect::Key(k.as_bytes().to_vec())
            }
            KeySearch::Invalid => Expect::Invalid,
            KeySearch::Absent => Expect::Absent,
        }
    }

    fn from_candidates(candidates: Vec<Option<Vec<u8>>>) -> Expect {
        let mut seen = false;
        for candidate in candidates {
            seen = true;
            if let Some(key) = candidate {
                return Expect::Key(key);
            }
        }
        if seen {
            Expect::Invalid
        } else {
            Expect::Absent
        }
    }
}

/// A member name or value as an instrumented app reads it (OpenTelemetry Python:
/// `unquote_plus(text).strip()`): `+` is a space, `%XX` a byte (a malformed escape stays), the
/// bytes are UTF-8 (else nothing matches), and Python's whitespace (plus U+FEFF) is trimmed.
pub fn app_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let plus_as_space: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let text = String::from_utf8(lossy_percent_decode(&plus_as_space)).ok()?;
    let python_space = |c: char| {
        c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) || c == '\u{feff}'
    };
    Some(text.trim_matches(python_space).as_bytes().to_vec())
}

fn decoded_key(value: &[u8]) -> Option<Vec<u8>> {
    app_decode(value).filter(|k| is_well_formed_key(k))
}

fn is_member_name(raw: &[u8], name: &[u8]) -> bool {
    app_decode(raw).is_some_and(|decoded| decoded == name)
}

fn literal_key(value: &[u8]) -> Option<Vec<u8>> {
    Some(trim_ows(value)).filter(|k| is_well_formed_key(k))
}

/// W3C baggage: `member *( "," member )`, member = `key OWS "=" OWS value *( ";" property )`.
pub fn oracle_baggage(header: &[u8], name: &[u8]) -> Expect {
    let mut candidates = Vec::new();
    for member in header.split(|&b| b == b',') {
        let key_value: Vec<u8> = member.iter().copied().take_while(|&b| b != b';').collect();
        let Some(eq) = key_value.iter().position(|&b| b == b'=') else {
            continue;
        };
        if is_member_name(&key_value[..eq], name) {
            candidates.push(decoded_key(&key_value[eq + 1..]));
        }
    }
    Expect::from_candidates(candidates)
}

/// W3C tracestate: `vendor=value` list members (names as in baggage), values opaque.
pub fn oracle_tracestate(header: &[u8], name: &[u8]) -> Expect {
    let mut candidates = Vec::new();
    for member in header.split(|&b| b == b',') {
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            continue;
        };
        if is_member_name(&member[..eq], name) {
            candidates.push(literal_key(&member[eq + 1..]));
        }
    }
    Expect::from_candidates(candidates)
}

pub fn oracle_whole_value(value: &[u8], percent_encoded: bool) -> Expect {
    let key = if percent_encoded {
        decoded_key(value)
    } else {
        literal_key(value)
    };
    key.map_or(Expect::Invalid, Expect::Key)
}

/// The key a whole header set carries, by the precedence of `core::request`'s module docs:
/// for each carrier in precedence order, the first header in arrival order that holds a
/// well-formed key wins; with none, `Invalid` if any carrier was present but malformed.
pub fn oracle_scan(settings: &Settings, headers: &[(Vec<u8>, Vec<u8>)]) -> Expect {
    let lower = |b: &[u8]| b.to_ascii_lowercase();
    let cluster = lower(&settings.cluster_header);
    // Headers the scanner handles before it considers carriers.
    let reserved = |name: &[u8]| {
        matches!(
            name,
            b":authority"
                | b":method"
                | b":path"
                | b"content-type"
                | b"baggage"
                | b"tracestate"
                | b"upgrade"
                | b"x-http-method-override"
                | b"x-http-method"
                | b"x-method-override"
        ) || lower(name) == cluster
            || (!settings.key_header.is_empty() && lower(name) == lower(&settings.key_header))
    };
    let carriers = &settings.carriers;
    let mut ranked: Vec<Vec<Expect>> = Vec::new();
    for plain in &carriers.headers {
        ranked.push(
            headers
                .iter()
                .filter(|(n, _)| !reserved(n) && lower(n) == lower(plain))
                .map(|(_, v)| oracle_whole_value(v, false))
                .collect(),
        );
    }
    let kinds = carriers.kinds;
    for member in carriers.baggage.iter().filter(|_| kinds.baggage) {
        ranked.push(
            headers
                .iter()
                .filter(|(n, _)| n == b"baggage")
                .map(|(_, v)| oracle_baggage(v, member))
                .collect(),
        );
    }
    let is_plain = |n: &[u8]| carriers.headers.iter().any(|h| lower(h) == lower(n));
    let prefixes = [(kinds.ot_baggage, &b"ot-baggage-"[..]), (kinds.uberctx, b"uberctx-")];
    for (_, prefix) in prefixes.into_iter().filter(|(on, _)| *on) {
        for member in &carriers.baggage {
            let mut wanted = prefix.to_vec();
            wanted.extend_from_slice(&lower(member));
            ranked.push(
                headers
                    .iter()
                    .filter(|(n, _)| !reserved(n) && !is_plain(n) && lower(n) == wanted)
                    .map(|(_, v)| oracle_whole_value(v, true))
                    .collect(),
            );
        }
    }
    for member in carriers.baggage.iter().filter(|_| kinds.tracestate) {
        ranked.push(
            headers
                .iter()
                .filter(|(n, _)| n == b"tracestate")
                .map(|(_, v)| oracle_tracestate(v, member))
                .collect(),
        );
    }
    let mut invalid = false;
    for rank in &ranked {
        for lookup in rank {
            match lookup {
                Expect::Key(k) => return Expect::Key(k.clone()),
                Expect::Invalid => invalid = true,
                Expect::Absent => {}
            }
        }
    }
    if invalid {
        Expect::Invalid
    } else {
        Expect::Absent
    }
}

/// The host of an `:authority` as the route table is keyed: port (1..=65535, digits only)
/// removed, one trailing dot removed, lowercased; `None` if it can never name a service.
pub fn oracle_lookup_host(authority: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(authority).ok()?;
    let host = match text.split_once(':') {
        Some((host, port)) => {
            let ok = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port
                    .parse::<u32>()
                    .ok()
                    .is_some_and(|p| (1..=65535).contains(&p));
            if !ok {
                return None;
            }
            host
        }
        None => text,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| host.to_ascii_lowercase())
}

/// The debug header value must be a legal, printable header value.
pub fn assert_printable_header_value(text: &str) {
    assert!(
        text.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "unprintable debug header: {text:?}"
    );
}

/// `FUZZ_TRACE=1` makes targets print what they reached (to judge a corpus by hand:
/// `FUZZ_TRACE=1 target/<triple>/release/<target> -runs=0 <corpus dir>`).
pub fn trace_enabled() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// What a [`MischiefStore`] does on one call, as the host's shared data may: another worker's
/// write between our read and our write (its value made by the store's `race` from `R`), a
/// failing call, or bytes that are not a cell.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Mischief<R> {
    None,
    Race(R),
    Fail,
    Garbage(u8),
}

/// A one-cell shared-data store with the host's CAS rules that misbehaves on command. Keys
/// under `sandbox-router/vm/` (heartbeats) are kept apart and always answered, so the cell's
/// accounting is the targets' to check.
pub struct MischiefStore<R> {
    pub value: Option<(Vec<u8>, u32)>,
    pub beats: Vec<(String, Vec<u8>)>,
    next_cas: u32,
    mischief: std::collections::VecDeque<Mischief<R>>,
    /// The value another worker writes in a race (`None`: it rewrites what is there).
    race: fn(&R) -> Option<Vec<u8>>,
    pub gets: u32,
    pub sets: u32,
    /// Whether any mischief happened so far.
    pub misbehaved: bool,
}

impl<R: Copy> MischiefStore<R> {
    pub fn new(mischief: &[Mischief<R>], race: fn(&R) -> Option<Vec<u8>>) -> Self {
        MischiefStore {
            value: None,
            beats: Vec::new(),
            next_cas: 0,
            mischief: mischief.iter().copied().take(256).collect(),
            race,
            gets: 0,
            sets: 0,
            misbehaved: false,
        }
    }

    fn next(&mut self) -> Mischief<R> {
        let m = self.mischief.pop_front().unwrap_or(Mischief::None);
        if !matches!(m, Mischief::None) {
            self.misbehaved = true;
        }
        m
    }

    fn bump(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.next_cas
    }
}

impl<R: Copy> sandbox_router::core::guard::Store for MischiefStore<R> {
    fn get<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<(Option<T>, u32), sandbox_router::core::guard::StoreUnavailable> {
        if let Some((_, beat)) = self.beats.iter().find(|(k, _)| k == key) {
            return Ok((read(beat), 1));
        }
        self.gets += 1;
        let found = match &self.value {
            Some((v, cas)) => (read(v), *cas),
            None => (None, 0),
        };
        match self.next() {
            Mischief::None => {}
            Mischief::Fail => return Err(sandbox_router::core::guard::StoreUnavailable),
            Mischief::Race(payload) => {
                let cas = self.bump();
                let rewritten = (self.race)(&payload)
                    .or_else(|| self.value.as_ref().map(|(v, _)| v.clone()))
                    .unwrap_or_default();
                self.value = Some((rewritten, cas));
            }
            Mischief::Garbage(n) => {
                let cas = self.bump();
                self.value = Some((vec![n; usize::from(n % 40)], cas));
            }
        }
        Ok(found)
    }

    fn set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: u32,
    ) -> Result<(), sandbox_router::core::guard::SetError> {
        use sandbox_router::core::guard::SetError;
        if key.starts_with("sandbox-router/vm/") {
            self.beats.retain(|(k, _)| k != key);
            self.beats.push((key.to_owned(), value.to_vec()));
            return Ok(());
        }
        self.sets += 1;
        if let Some((_, current)) = &self.value {
            if cas != 0 && cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        if matches!(self.next(), Mischief::Fail) {
            return Err(SetError::Failed);
        }
        let next = self.bump();
        self.value = Some((value.to_vec(), next));
        Ok(())
    }
}
