//! Removing the routing key from every carrier of a request from an untrusted source, so that
//! it cannot reach deeper hops. Only the routing members leave `baggage` and `tracestate`; the
//! other members stay, in order. A member is a routing member when its name, as an app decodes
//! it ([`super::decode`]), is a configured name: `sand%62ox=…` reaches the app as `sandbox`.

use super::baggage::{split_once, trim_ows};
use super::decode::member_name_is;
use super::router::Settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit<'a> {
    Remove(&'a [u8]),
    /// Replace every header of this name with one value.
    Replace(&'a [u8], Vec<u8>),
}

pub fn strip_plan<'a>(
    settings: &Settings,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Vec<HeaderEdit<'a>> {
    let names = &settings.carriers.baggage;
    let mut edits: Vec<HeaderEdit<'a>> = Vec::new();
    let kinds = settings.carriers.kinds;
    let list_headers = [
        (kinds.baggage, &b"baggage"[..]),
        (kinds.tracestate, b"tracestate"),
    ];
    for (_, list_header) in list_headers.into_iter().filter(|(on, _)| *on) {
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut removed_any = false;
        let mut present: Option<&'a [u8]> = None;
        for (name, value) in headers.clone() {
            if name != list_header {
                continue;
            }
            present = Some(name);
            for member in value.split(|&b| b == b',') {
                let member = trim_ows(member);
                if member.is_empty() {
                    continue;
                }
                let key_value = member.split(|&b| b == b';').next().unwrap_or_default();
                let key = split_once(key_value, b'=').map_or(key_value, |(k, _)| k);
                if names.iter().any(|n| member_name_is(key, n)) {
                    removed_any = true;
                } else {
                    kept.push(member);
                }
            }
        }
        if let (true, Some(name)) = (removed_any, present) {
            edits.push(if kept.is_empty() {
                HeaderEdit::Remove(name)
            } else {
                HeaderEdit::Replace(name, kept.join(&b","[..]))
            });
        }
    }
    for (name, _) in headers {
        let is_carrier = settings
            .carriers
            .headers
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            || names.iter().any(|n| {
                let prefixes = [
                    (kinds.ot_baggage, &b"ot-baggage-"[..]),
                    (kinds.uberctx, b"uberctx-"),
                ];
                prefixes.iter().filter(|(on, _)| *on).any(|(_, prefix)| {
                    name.len() == prefix.len().saturating_add(n.len())
                        && name
                            .get(..prefix.len())
                            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                        && name
                            .get(prefix.len()..)
                            .is_some_and(|m| m.eq_ignore_ascii_case(n))
                })
            });
        if is_carrier && !edits.contains(&HeaderEdit::Remove(name)) {
            edits.push(HeaderEdit::Remove(name));
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{compile, HostFacts};
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn plan(headers: &[(&'static str, &'static str)]) -> Vec<(String, Option<String>)> {
        let router = compile(
            br#"{"routing_key": {"baggage": ["sandbox"], "headers": ["x-sandbox"]}}"#,
            &HostFacts::default(),
        )
        .unwrap();
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        strip_plan(&router.settings, pairs)
            .into_iter()
            .map(|edit| match edit {
                HeaderEdit::Remove(n) => (String::from_utf8_lossy(n).into_owned(), None),
                HeaderEdit::Replace(n, v) => (
                    String::from_utf8_lossy(n).into_owned(),
                    Some(String::from_utf8_lossy(&v).into_owned()),
                ),
            })
            .collect()
    }

    #[test]
    fn removes_only_the_routing_member_from_baggage() {
        assert_eq!(
            plan(&[("baggage", "user=alice, sandbox=feature-x;p=1 ,tier=gold")]),
            [("baggage".into(), Some("user=alice,tier=gold".into()))]
        );
    }

    #[test]
    fn merges_repeated_list_headers_and_drops_empty_ones() {
        assert_eq!(
            plan(&[
                ("baggage", "a=1"),
                ("baggage", "sandbox=x"),
                ("tracestate", "sandbox=x")
            ]),
            [
                ("baggage".into(), Some("a=1".into())),
                ("tracestate".into(), None)
            ]
        );
        assert_eq!(
            plan(&[("baggage", " sandbox = x ")]),
            [("baggage".into(), None)]
        );
    }

    #[test]
    fn removes_members_whose_decoded_name_is_a_routing_name() {
        for member in [
            "sand%62ox=feature-x",
            "sandbox+=feature-x",
            "sandbox%20=feature-x",
            "%73andbox=feature-x",
            "sandbox%09=feature-x",
            "sandbox%C2%A0=x;p=1",
        ] {
            let header: &'static str = Box::leak(format!("a=1,{member},b=2").into_boxed_str());
            assert_eq!(
                plan(&[("baggage", header), ("tracestate", member)]),
                [
                    ("baggage".into(), Some("a=1,b=2".into())),
                    ("tracestate".into(), None)
                ],
                "{member}"
            );
        }
    }

    #[test]
    fn removes_whole_value_carriers() {
        assert_eq!(
            plan(&[
                ("x-sandbox", "x"),
                ("ot-baggage-sandbox", "x"),
                ("uberctx-sandbox", "x"),
                ("uberctx-other", "y")
            ]),
            [
                ("x-sandbox".into(), None),
                ("ot-baggage-sandbox".into(), None),
                ("uberctx-sandbox".into(), None)
            ]
        );
    }

    #[test]
    fn leaves_unrelated_headers_alone() {
        assert!(plan(&[("baggage", "user=alice"), ("x-other", "1")]).is_empty());
    }
}
