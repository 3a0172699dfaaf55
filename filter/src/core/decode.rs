//! Member names and values as instrumented apps read them. A trust point must see what apps
//! see: OpenTelemetry Python reads a baggage member as `unquote_plus(part).strip()`, and
//! OpenTelemetry JS as `decodeURIComponent(part.trim())`, so `sand%62ox=…`, `sandbox+=…` and
//! `sandbox%09=…` all reach the app as the member `sandbox`, which it then re-emits plainly on its
//! outbound calls. This module decodes the same way: percent-escapes decoded (`+` as a space;
//! a malformed escape stays literal, as in Python), the bytes read as UTF-8 (an invalid sequence
//! matches nothing), then whitespace trimmed from both ends (Python's `str.strip` set, plus
//! U+FEFF, which JavaScript's `trim` removes). Names and values of plain token bytes, all but
//! every real one, are compared in place without decoding or allocating.

/// Whether a list member's raw name, as an app decodes it, is `name` (an ASCII token).
pub fn member_name_is(raw: &[u8], name: &[u8]) -> bool {
    if is_plain(raw) {
        return trim_ascii_space(raw) == name;
    }
    let decoded = percent_decode(raw);
    match std::str::from_utf8(&decoded) {
        Ok(text) => trim_space(text).as_bytes() == name,
        Err(_) => false,
    }
}

/// A raw value as an app decodes it, trimmed; `None` if it is not UTF-8. Borrows when nothing
/// needs decoding.
pub fn decoded_value(raw: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if is_plain(raw) {
        return Some(std::borrow::Cow::Borrowed(trim_ascii_space(raw)));
    }
    let decoded = percent_decode(raw);
    let text = std::str::from_utf8(&decoded).ok()?;
    Some(std::borrow::Cow::Owned(
        trim_space(text).as_bytes().to_vec(),
    ))
}

/// No escape, no `+`, nothing outside printable ASCII but SP and HTAB: decoding changes nothing
/// and trimming is ASCII-only.
fn is_plain(raw: &[u8]) -> bool {
    raw.iter()
        .all(|&b| (b.is_ascii_graphic() && b != b'%' && b != b'+') || b == b' ' || b == b'\t')
}

/// `unquote_plus`: `+` is a space, `%XX` a byte, any other `%` literal.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => out.push(b' '),
            b'%' => match escaped_byte(rest) {
                Some(byte) => {
                    out.push(byte);
                    rest = rest.get(2..).unwrap_or_default();
                }
                None => out.push(b'%'),
            },
            other => out.push(other),
        }
    }
    out
}

/// The byte two hex digits at the start of `rest` spell.
fn escaped_byte(rest: &[u8]) -> Option<u8> {
    let (hi, lo) = (hex(*rest.first()?)?, hex(*rest.get(1)?)?);
    Some(hi.wrapping_mul(16).wrapping_add(lo))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Python's `str.isspace` (Unicode White_Space and the separators U+001C..U+001F), plus the
/// byte-order mark that JavaScript's `trim` removes.
pub fn is_app_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) || c == '\u{feff}'
}

fn trim_space(text: &str) -> &str {
    text.trim_matches(is_app_space)
}

fn trim_ascii_space(raw: &[u8]) -> &[u8] {
    let is_space = |b: &u8| is_app_space(char::from(*b)) && b.is_ascii();
    let start = raw.iter().position(|b| !is_space(b)).unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |p| p.saturating_add(1));
    raw.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_match_as_apps_decode_them() {
        for raw in [
            "sandbox",
            " sandbox\t",
            "sand%62ox",
            "%73andbox",
            "%73%61%6E%64%62%6f%78",
            "sandbox+",
            "+sandbox",
            "sandbox%20",
            "sandbox%09",
            "sandbox%0A",
            "sandbox%0d%0a",
            "sandbox%1c",
            "sandbox%C2%A0",
            "%E3%80%80sandbox",
            "%EF%BB%BFsandbox",
            "sandbox%20%20%20%20+++%09",
        ] {
            assert!(member_name_is(raw.as_bytes(), b"sandbox"), "{raw}");
        }
        for raw in [
            "Sandbox",
            "sandboxx",
            "xsandbox",
            "sand box",
            "sand+box",
            "sand%2box",
            "%2573andbox",
            "sandbox%",
            "sandbox%2",
            "sandbox%ZZ",
            "sandbox%FF",
            "sandbox\u{200b}",
            "sandbox%E2%80%8B",
            "",
        ] {
            assert!(!member_name_is(raw.as_bytes(), b"sandbox"), "{raw}");
        }
        assert!(!member_name_is(b"sandbox\xff", b"sandbox"));
        // A malformed escape stays literal, as in Python.
        assert!(member_name_is(b"a%zz", b"a%zz"));
    }

    #[test]
    fn values_decode_and_trim() {
        let value = |raw: &str| decoded_value(raw.as_bytes()).map(|v| v.into_owned());
        assert_eq!(value("feature-x").unwrap(), b"feature-x");
        assert_eq!(value(" feature-x\t").unwrap(), b"feature-x");
        assert_eq!(value("feature%2Dx").unwrap(), b"feature-x");
        assert_eq!(value("feature-x%20").unwrap(), b"feature-x");
        assert_eq!(value("%C2%A0feature-x").unwrap(), b"feature-x");
        assert_eq!(value("feature+x").unwrap(), b"feature x");
        assert_eq!(value("a%zz").unwrap(), b"a%zz");
        assert_eq!(value("%FF"), None);
        assert!(matches!(
            decoded_value(b"plain"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
    }
}
