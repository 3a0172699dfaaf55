//! The audit record of a request that carried a routing key: one JSON object, handed to Envoy
//! as filter state so that a stock access log writes it next to time, source and status.

use super::policy::{Evaluation, Label};
use super::request::{KeySearch, RequestScan};
use super::router::{target_text, Decision};

/// Longest path kept in a record; longer ones are cut (and marked with `…`).
const MAX_PATH: usize = 512;

/// Written for every keyed request, so it appends to one buffer and skips Rust's formatting
/// machinery and the lossy UTF-8 copy (together they were most of a rerouted request's time in
/// the VM).
pub fn audit_record(
    request: &RequestScan<'_>,
    evaluation: &Evaluation<'_>,
    label: Label,
) -> String {
    audit_record_with_reason(request, evaluation, label, None)
}

/// [`audit_record`], with the reason given when the label alone does not tell it (a request
/// an open circuit would have refused, in shadow mode).
pub fn audit_record_with_reason(
    request: &RequestScan<'_>,
    evaluation: &Evaluation<'_>,
    label: Label,
    reason_override: Option<&str>,
) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    let key = match request.key {
        KeySearch::Found(key) => Some(key),
        _ => None,
    };
    field(&mut out, "key", key.as_ref().map(|k| k.as_str().as_bytes()));
    if let Some(owner) = evaluation.sandbox.and_then(|s| s.owner.as_ref()) {
        out.push_str(",\"owner\":{");
        field(&mut out, "user", owner.user.as_deref().map(str::as_bytes));
        out.push(',');
        field(
            &mut out,
            "change",
            owner.change.as_deref().map(str::as_bytes),
        );
        out.push('}');
    }
    out.push(',');
    field(&mut out, "method", request.method);
    out.push(',');
    let path = request.path.map(cut_path);
    field(&mut out, "path", path.as_deref());
    let (service, reason) = match &evaluation.decision {
        Decision::Route { service, .. } => (Some(*service), "override"),
        Decision::Baseline {
            service, reason, ..
        } => (*service, reason.as_str()),
    };
    out.push(',');
    field(&mut out, "service", service.map(str::as_bytes));
    out.push(',');
    field(&mut out, "authority", request.authority);
    out.push(',');
    let target = match &evaluation.decision {
        Decision::Route { target, .. } => {
            Some(target_text(target, request.authority.unwrap_or_default()))
        }
        Decision::Baseline { .. } => None,
    };
    field(&mut out, "target", target.as_deref().map(str::as_bytes));
    out.push(',');
    field(&mut out, "decision", Some(label.as_str().as_bytes()));
    out.push(',');
    let reason = reason_override
        .or(label.budget_details())
        .or(evaluation.reject.as_ref().map(|r| r.details))
        .unwrap_or(reason);
    field(&mut out, "reason", Some(reason.as_bytes()));
    out.push('}');
    out
}

/// The path as recorded: whole, or its first [`MAX_PATH`] bytes (not splitting a UTF-8
/// character) followed by `…`, so that a cut is never silent.
fn cut_path(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if path.len() <= MAX_PATH {
        return std::borrow::Cow::Borrowed(path);
    }
    let is_continuation = |b: &u8| b & 0b1100_0000 == 0b1000_0000;
    let end = (0..=MAX_PATH)
        .rev()
        .find(|&at| path.get(at).is_none_or(|b| !is_continuation(b)))
        .unwrap_or(0);
    let mut cut = path.get(..end).unwrap_or_default().to_vec();
    cut.extend_from_slice("…".as_bytes());
    std::borrow::Cow::Owned(cut)
}

fn field(out: &mut String, name: &str, value: Option<&[u8]>) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        None => out.push_str("null"),
        Some(bytes) if bytes.iter().all(|&b| is_plain(b)) => {
            // Printable ASCII without quote or backslash: valid UTF-8 that needs no escaping.
            out.push('"');
            out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
            out.push('"');
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json_string(out, text),
            Err(_) => json_string(out, &String::from_utf8_lossy(bytes)),
        },
    }
}

fn is_plain(byte: u8) -> bool {
    matches!(byte, 0x20..=0x7e) && byte != b'"' && byte != b'\\'
}

/// Appends `text` as a JSON string, copying the runs between characters that need escaping.
pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut run_start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so these are character boundaries.
        out.push_str(text.get(run_start..at).unwrap_or_default());
        if escape.is_empty() {
            push_unicode_escape(out, byte);
        } else {
            out.push_str(escape);
        }
        run_start = at.saturating_add(1);
    }
    out.push_str(text.get(run_start..).unwrap_or_default());
    out.push('"');
}

/// `\u00XX` for a control character.
fn push_unicode_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u00");
    for nibble in [byte >> 4, byte & 0xf] {
        if let Some(&digit) = HEX.get(usize::from(nibble)) {
            out.push(char::from(digit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn long_paths_are_cut_visibly_at_a_character_boundary() {
        let short = vec![b'a'; MAX_PATH];
        assert_eq!(&*cut_path(&short), &short[..]);
        let long = vec![b'a'; 600];
        let cut = cut_path(&long);
        assert_eq!(cut.len(), MAX_PATH + "…".len());
        assert!(cut.ends_with("…".as_bytes()));
        // A two-byte character straddling the limit is left out whole.
        let mut straddling = vec![b'a'; MAX_PATH - 1];
        straddling.extend_from_slice("é".as_bytes());
        straddling.extend_from_slice(b"tail");
        let cut = cut_path(&straddling);
        assert_eq!(
            std::str::from_utf8(&cut).unwrap(),
            format!("{}…", "a".repeat(MAX_PATH - 1))
        );
    }

    #[test]
    fn escapes_json() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\u000ad\u0001é""#);
    }
}
