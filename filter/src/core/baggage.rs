//! Finding a routing key inside list-valued trace-context headers without allocating:
//! W3C `baggage` (https://www.w3.org/TR/baggage/) and W3C `tracestate`.

use super::decode::member_name_is;
use super::key::RoutingKey;

/// What one header said about a member name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A member with the name and a well-formed key.
    Key(RoutingKey),
    /// Members with the name exist, but none holds a well-formed key.
    Invalid,
    Absent,
}

impl Lookup {
    /// Keeps the first well-formed key; remembers that an invalid one was seen.
    fn merge(self, next: Lookup) -> Lookup {
        match (self, next) {
            (Lookup::Key(k), _) | (_, Lookup::Key(k)) => Lookup::Key(k),
            (Lookup::Invalid, _) | (_, Lookup::Invalid) => Lookup::Invalid,
            _ => Lookup::Absent,
        }
    }
}

/// Finds member `name` in one `baggage` header value. Properties after `;` are ignored; name and
/// value are decoded as apps decode them ([`super::decode`]: `sand%62ox` is `sandbox`), and
/// whitespace around every part is allowed. A malformed member is skipped. The first member with
/// the name and a well-formed key wins.
pub fn find_baggage_member(header: &[u8], name: &[u8]) -> Lookup {
    let mut found = Lookup::Absent;
    for member in header.split(|&b| b == b',') {
        let key_value = member.split(|&b| b == b';').next().unwrap_or_default();
        let Some((key, value)) = split_once(key_value, b'=') else {
            continue;
        };
        if !member_name_is(key, name) {
            continue;
        }
        found = found.merge(match RoutingKey::from_encoded(value) {
            Some(k) => Lookup::Key(k),
            None => Lookup::Invalid,
        });
        if matches!(found, Lookup::Key(_)) {
            return found;
        }
    }
    found
}

/// Finds list member `name` in one `tracestate` header value (`vendor=value`; the name is matched
/// as in baggage, the value is opaque and taken literally).
pub fn find_tracestate_member(header: &[u8], name: &[u8]) -> Lookup {
    let mut found = Lookup::Absent;
    for member in header.split(|&b| b == b',') {
        let Some((key, value)) = split_once(member, b'=') else {
            continue;
        };
        if !member_name_is(key, name) {
            continue;
        }
        found = found.merge(match RoutingKey::from_bytes(trim_ows(value)) {
            Some(k) => Lookup::Key(k),
            None => Lookup::Invalid,
        });
        if matches!(found, Lookup::Key(_)) {
            return found;
        }
    }
    found
}

/// A header whose whole value is the key (optionally percent-encoded, as OpenTracing and
/// Jaeger baggage headers are).
pub fn whole_value(value: &[u8], percent_encoded: bool) -> Lookup {
    let key = if percent_encoded {
        RoutingKey::from_encoded(value)
    } else {
        RoutingKey::from_bytes(trim_ows(value))
    };
    key.map_or(Lookup::Invalid, Lookup::Key)
}

pub fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((bytes.get(..at)?, bytes.get(at.checked_add(1)?..)?))
}

/// Strips optional whitespace (SP and HTAB) from both ends.
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |p| p.saturating_add(1));
    bytes.get(start..end).unwrap_or_default()
}

/// RFC 7230 token, as W3C baggage keys are.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn key(header: &str) -> Option<String> {
        match find_baggage_member(header.as_bytes(), b"sandbox") {
            Lookup::Key(k) => Some(k.as_str().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn finds_the_member_among_others() {
        assert_eq!(key("sandbox=feature-x").as_deref(), Some("feature-x"));
        assert_eq!(
            key("a=1,sandbox=feature-x,b=2").as_deref(),
            Some("feature-x")
        );
        assert_eq!(
            key("a=1 , \tsandbox \t= feature-x\t , b=2").as_deref(),
            Some("feature-x")
        );
    }

    #[test]
    fn ignores_properties_and_decodes_values() {
        assert_eq!(
            key("sandbox=feature-x;ttl=3;flag").as_deref(),
            Some("feature-x")
        );
        assert_eq!(
            key("sandbox = feature%2Dx ; p=1").as_deref(),
            Some("feature-x")
        );
    }

    #[test]
    fn matches_only_the_exact_name() {
        assert_eq!(key("xsandbox=feature-x"), None);
        assert_eq!(key("sandboxx=feature-x"), None);
        assert_eq!(key("a=sandbox=feature-x"), None);
        assert_eq!(key("Sandbox=feature-x"), None);
        assert_eq!(key("a=1;sandbox=feature-x"), None);
    }

    #[test]
    fn names_are_decoded_as_apps_decode_them() {
        for header in [
            "sand%62ox=feature-x",
            "sandbox+=feature-x",
            "sandbox%20=feature-x",
            "%73andbox=feature-x",
            "sandbox%09=feature-x",
            "a=1,sandbox%C2%A0=feature-x",
        ] {
            assert_eq!(key(header).as_deref(), Some("feature-x"), "{header}");
        }
        assert_eq!(key("sandbox=feature-x%20").as_deref(), Some("feature-x"));
        assert_eq!(key("%2573andbox=feature-x"), None);
        let found = find_tracestate_member(b"sand%62ox=feature-x", b"sandbox");
        assert!(matches!(found, Lookup::Key(k) if k.as_str() == "feature-x"));
    }

    #[test]
    fn skips_malformed_members() {
        assert_eq!(
            key("garbage,,=x,sandbox=feature-x").as_deref(),
            Some("feature-x")
        );
        assert_eq!(key("bad key=1,sandbox=ok").as_deref(), Some("ok"));
    }

    #[test]
    fn value_may_contain_equals_but_is_then_no_key() {
        assert_eq!(
            find_baggage_member(b"sandbox=a=b", b"sandbox"),
            Lookup::Invalid
        );
    }

    #[test]
    fn a_later_valid_member_wins_over_an_invalid_one() {
        assert_eq!(
            key("sandbox=bad value,sandbox=good").as_deref(),
            Some("good")
        );
        assert_eq!(
            key("sandbox=first,sandbox=second").as_deref(),
            Some("first")
        );
    }

    #[test]
    fn reports_invalid_and_absent() {
        assert_eq!(
            find_baggage_member(b"sandbox=", b"sandbox"),
            Lookup::Invalid
        );
        assert_eq!(
            find_baggage_member(b"sandbox=%ZZ", b"sandbox"),
            Lookup::Invalid
        );
        assert_eq!(find_baggage_member(b"other=1", b"sandbox"), Lookup::Absent);
        assert_eq!(find_baggage_member(b"", b"sandbox"), Lookup::Absent);
        assert_eq!(
            find_baggage_member(b"\xff\xfe=\xff", b"sandbox"),
            Lookup::Absent
        );
    }

    #[test]
    fn tracestate_members() {
        let found = find_tracestate_member(b"congo=t61rcWkgMzE, sandbox=feature-x", b"sandbox");
        assert!(matches!(found, Lookup::Key(k) if k.as_str() == "feature-x"));
        assert_eq!(
            find_tracestate_member(b"rojo=00f0", b"sandbox"),
            Lookup::Absent
        );
    }

    #[test]
    fn trims_only_optional_whitespace() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
