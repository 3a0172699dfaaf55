//! Which requests the fast path's matcher must send to the filter, written apart from the
//! generator (`scripts/sandboxes`) and from the filter, from the README's rules: the oracles
//! of `tests/tests/fast_path.rs`.

use serde_json::Value;

/// The carriers of a filter configuration, as the matcher and the filter read them (the
/// filter's defaults filled in). Header lists are `(name, value)` pairs in any name case.
pub struct Carriers {
    pub members: Vec<String>,
    /// Headers whose presence alone sends a request to the filter (lowercase).
    pub presence: Vec<String>,
    pub baggage: bool,
    pub tracestate: bool,
}

impl Carriers {
    pub fn of(config: &Value) -> Carriers {
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let routing_key = &config["routing_key"];
        let members = if routing_key["baggage"].is_null() {
            vec!["sandbox".to_owned()]
        } else {
            strings(&routing_key["baggage"])
        };
        let kinds = if routing_key["carriers"].is_null() {
            vec!["baggage", "ot-baggage", "uberctx", "tracestate"]
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            strings(&routing_key["carriers"])
        };
        let on = |kind: &str| kinds.iter().any(|k| k == kind);
        let mut presence: Vec<String> = strings(&routing_key["headers"])
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for (kind, prefix) in [("ot-baggage", "ot-baggage-"), ("uberctx", "uberctx-")] {
            if on(kind) {
                presence.extend(
                    members
                        .iter()
                        .map(|m| format!("{prefix}{}", m.to_ascii_lowercase())),
                );
            }
        }
        presence.push(
            config["cluster_header"]
                .as_str()
                .unwrap_or("x-sandbox-cluster")
                .to_ascii_lowercase(),
        );
        let key_header = config["key_header"].as_str().unwrap_or("x-sandbox-key");
        if !key_header.is_empty() {
            presence.push(key_header.to_ascii_lowercase());
        }
        Carriers {
            baggage: on("baggage") && !members.is_empty(),
            tracestate: on("tracestate") && !members.is_empty(),
            members,
            presence,
        }
    }

    /// Every value of a header (any name case), joined with `,` as Envoy's matcher input does.
    fn joined<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<Vec<u8>> {
        let values: Vec<&'a [u8]> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
            .collect();
        (!values.is_empty()).then(|| values.join(&b","[..]))
    }

    fn has_presence_header(&self, headers: &[(String, Vec<u8>)]) -> bool {
        headers
            .iter()
            .any(|(n, _)| self.presence.contains(&n.to_ascii_lowercase()))
    }

    fn lists(&self, headers: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (on, name) in [(self.baggage, "baggage"), (self.tracestate, "tracestate")] {
            if let Some(value) = Self::joined(headers, name).filter(|_| on) {
                out.push(value);
            }
        }
        out
    }

    /// The matcher's specification: a presence header, or a list value that contains a member
    /// name (case-insensitive; each character itself or its `%XX` escape).
    pub fn fast_path_fires(&self, headers: &[(String, Vec<u8>)]) -> bool {
        self.has_presence_header(headers)
            || self.lists(headers).iter().any(|value| {
                self.members
                    .iter()
                    .any(|m| contains_encoded(value, m.as_bytes()))
            })
    }

    /// What the filter needs to see (the README's rules, written apart from the filter): a
    /// presence header, or a list member whose name, decoded as apps decode it, is configured.
    pub fn filter_needs(&self, headers: &[(String, Vec<u8>)]) -> bool {
        self.has_presence_header(headers)
            || self.lists(headers).iter().any(|value| {
                value.split(|&b| b == b',').any(|member| {
                    let name = member.split(|&b| b == b'=').next().unwrap_or_default();
                    let decoded = app_decoded_name(name);
                    self.members
                        .iter()
                        .any(|m| Some(m.as_str()) == decoded.as_deref())
                })
            })
    }
}

/// Envoy strips optional whitespace around a header value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    &value[start..end]
}

/// Whether `haystack` contains `name`, ignoring ASCII case, each character of `name` either
/// itself or `%XX` (hex in either case).
pub fn contains_encoded(haystack: &[u8], name: &[u8]) -> bool {
    fn at(haystack: &[u8], name: &[u8]) -> bool {
        let Some((&c, rest)) = name.split_first() else {
            return true;
        };
        if haystack.first().is_some_and(|h| h.eq_ignore_ascii_case(&c)) && at(&haystack[1..], rest)
        {
            return true;
        }
        let escape = format!("%{c:02x}");
        haystack.len() >= 3
            && haystack[..3].eq_ignore_ascii_case(escape.as_bytes())
            && at(&haystack[3..], rest)
    }
    (0..=haystack.len()).any(|start| at(&haystack[start..], name))
}

/// A member name as OpenTelemetry Python reads it: `unquote_plus(name).strip()` (a malformed
/// escape stays literal; bytes that are not UTF-8 make no name).
pub fn app_decoded_name(raw: &[u8]) -> Option<String> {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
            (b'+', _, _) => bytes.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                bytes.push(u8::try_from(hi * 16 + lo).expect("two hex digits make a byte"));
                i += 2;
            }
            (other, _, _) => bytes.push(other),
        }
        i += 1;
    }
    let text = String::from_utf8(bytes).ok()?;
    let is_space =
        |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) || c == '\u{feff}';
    Some(text.trim_matches(is_space).to_owned())
}
