//! The audit record of a request that carried a routing key: one JSON object, handed to Envoy
//! as filter state so that a stock access log writes it next to time, source and status.

use std::fmt::Write;

use super::policy::{Evaluation, Label};
use super::request::{KeySearch, RequestScan};
use super::router::{target_text, Decision};

/// Longest path kept in a record; longer ones are cut (and marked with `…`).
const MAX_PATH: usize = 512;

pub fn audit_record(
    request: &RequestScan<'_>,
    evaluation: &Evaluation<'_>,
    label: Label,
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
    let path = request.path.map(|p| p.get(..MAX_PATH).unwrap_or(p));
    field(&mut out, "path", path);
    let (service, target, reason) = match &evaluation.decision {
        Decision::Route {
            service, target, ..
        } => {
            let target = target_text(target, request.authority.unwrap_or_default());
            (Some(*service), Some(target), "override")
        }
        Decision::Baseline {
            service, reason, ..
        } => (*service, None, reason.as_str()),
    };
    out.push(',');
    field(&mut out, "service", service.map(str::as_bytes));
    out.push(',');
    field(&mut out, "authority", request.authority);
    out.push(',');
    field(&mut out, "target", target.as_deref().map(str::as_bytes));
    out.push(',');
    field(&mut out, "decision", Some(label.as_str().as_bytes()));
    out.push(',');
    let reason = label
        .budget_details()
        .or(evaluation.reject.as_ref().map(|r| r.details))
        .unwrap_or(reason);
    field(&mut out, "reason", Some(reason.as_bytes()));
    out.push('}');
    out
}

fn field(out: &mut String, name: &str, value: Option<&[u8]>) {
    let _ = write!(out, "\"{name}\":");
    match value {
        None => out.push_str("null"),
        Some(bytes) => json_string(out, &String::from_utf8_lossy(bytes)),
    }
}

pub fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn escapes_json() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\u000ad\u0001é""#);
    }
}
