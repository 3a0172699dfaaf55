//! Host names: validating them, expanding a Kubernetes service to every name a client may use
//! for it, and normalising a request's `:authority` for lookup without allocating.

pub const MAX_HOST_LEN: usize = 253;

/// A DNS-1123 label: lowercase alphanumerics and `-`, not starting or ending with `-`.
pub fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// A lowercase DNS name of valid labels.
pub fn is_dns_name(name: &str) -> bool {
    name.len() <= MAX_HOST_LEN && name.split('.').all(is_dns_label)
}

/// A route target authority: `host` or `host:port`.
pub fn parse_authority_target(target: &str) -> Result<(String, Option<u16>), String> {
    let lower = target.to_ascii_lowercase();
    let (host, port) = match lower.split_once(':') {
        Some((host, port)) => {
            let port = parse_port(port.as_bytes())
                .ok_or_else(|| format!("`{target}` has an invalid port"))?;
            (host, Some(port))
        }
        None => (lower.as_str(), None),
    };
    if !is_dns_name(host) {
        return Err(format!("`{target}` is not a valid host name"));
    }
    Ok((host.to_owned(), port))
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
}

/// A Kubernetes service, fully qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    pub name: String,
    pub namespace: String,
}

/// How a route's service name was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRef {
    Kubernetes(ServiceName),
    /// Not a Kubernetes form (e.g. a ServiceEntry host): matched as written.
    Exact(String),
}

/// Parses `name`, `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster_domain>`; any other valid
/// DNS name is an exact host. `namespace` expands the one-label form.
pub fn parse_service(
    written: &str,
    namespace: Option<&str>,
    cluster_domain: &str,
) -> Result<ServiceRef, String> {
    let lower = written.trim_end_matches('.').to_ascii_lowercase();
    if !is_dns_name(&lower) {
        return Err(format!("`{written}` is not a valid service host name"));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    let kubernetes = |name: &str, ns: &str| {
        Ok(ServiceRef::Kubernetes(ServiceName {
            name: name.to_owned(),
            namespace: ns.to_owned(),
        }))
    };
    match labels.as_slice() {
        [name] => match namespace {
            Some(ns) => kubernetes(name, ns),
            None => Err(format!(
                "`{written}` is a short name but no `namespace` is configured (nor Istio node metadata NAMESPACE)"
            )),
        },
        [name, ns] => kubernetes(name, ns),
        [name, ns, "svc"] => kubernetes(name, ns),
        [name, ns, "svc", rest @ ..] if rest.join(".") == cluster_domain => kubernetes(name, ns),
        _ => Ok(ServiceRef::Exact(lower)),
    }
}

impl ServiceRef {
    /// Every host a client in `local_namespace` may use for this service.
    pub fn host_forms(&self, local_namespace: Option<&str>, cluster_domain: &str) -> Vec<String> {
        match self {
            ServiceRef::Exact(host) => vec![host.clone()],
            ServiceRef::Kubernetes(ServiceName { name, namespace }) => {
                let mut forms = vec![
                    format!("{name}.{namespace}.svc.{cluster_domain}"),
                    format!("{name}.{namespace}.svc"),
                    format!("{name}.{namespace}"),
                ];
                if local_namespace == Some(namespace.as_str()) {
                    forms.push(name.clone());
                }
                forms
            }
        }
    }

    /// The canonical (fully qualified) name, used in decisions and logs.
    pub fn canonical(&self, cluster_domain: &str) -> String {
        match self {
            ServiceRef::Exact(host) => host.clone(),
            ServiceRef::Kubernetes(ServiceName { name, namespace }) => {
                format!("{name}.{namespace}.svc.{cluster_domain}")
            }
        }
    }
}

/// The host of an `:authority`, lowercased into a stack buffer, port and trailing dot removed.
pub struct NormalizedHost {
    bytes: [u8; MAX_HOST_LEN],
    len: usize,
}

impl NormalizedHost {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

/// Splits an authority into host and port digits. IPv6 literals and malformed input give `None`:
/// they can never name a configured service.
pub fn split_authority(authority: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if authority.first() == Some(&b'[') {
        return None;
    }
    match authority.iter().position(|&b| b == b':') {
        None => Some((authority, None)),
        Some(at) => {
            let host = authority.get(..at)?;
            let port = authority.get(at.checked_add(1)?..)?;
            parse_port(port)?;
            Some((host, Some(port)))
        }
    }
}

pub fn normalize_host(host: &[u8]) -> Option<NormalizedHost> {
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return None;
    }
    let mut out = NormalizedHost {
        bytes: [0; MAX_HOST_LEN],
        len: host.len(),
    };
    for (slot, &b) in out.bytes.iter_mut().zip(host) {
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return None;
        }
        *slot = b.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn forms(written: &str) -> Vec<String> {
        parse_service(written, Some("shop"), "cluster.local")
            .unwrap()
            .host_forms(Some("shop"), "cluster.local")
    }

    #[test]
    fn expands_every_kubernetes_form() {
        let expected = [
            "payment.shop.svc.cluster.local",
            "payment.shop.svc",
            "payment.shop",
            "payment",
        ];
        for written in [
            "payment",
            "payment.shop",
            "payment.shop.svc",
            "payment.shop.svc.cluster.local",
            "Payment.Shop.svc.cluster.local.",
        ] {
            assert_eq!(forms(written), expected, "{written}");
        }
    }

    #[test]
    fn other_namespaces_have_no_short_form() {
        assert_eq!(
            forms("ledger.billing"),
            [
                "ledger.billing.svc.cluster.local",
                "ledger.billing.svc",
                "ledger.billing"
            ]
        );
    }

    #[test]
    fn non_kubernetes_hosts_match_exactly() {
        assert_eq!(forms("api.example.com"), ["api.example.com"]);
    }

    #[test]
    fn short_names_need_a_namespace() {
        assert!(parse_service("payment", None, "cluster.local").is_err());
        assert!(parse_service("payment.shop", None, "cluster.local").is_ok());
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in ["", "-a", "a..b", "a_b", "a b", "a:80", &"a".repeat(64)] {
            assert!(
                parse_service(bad, Some("shop"), "cluster.local").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn authority_targets() {
        assert_eq!(parse_authority_target("a.b").unwrap(), ("a.b".into(), None));
        assert_eq!(
            parse_authority_target("A.b:8080").unwrap(),
            ("a.b".into(), Some(8080))
        );
        for bad in ["a.b:", "a.b:0", "a.b:99999", "a.b:x", "a b", "", "a:1:2"] {
            assert!(parse_authority_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_and_normalizes_request_authorities() {
        let (host, port) = split_authority(b"Payment.Shop.:8080").unwrap();
        assert_eq!(port, Some(&b"8080"[..]));
        assert_eq!(normalize_host(host).unwrap().as_str(), "payment.shop");
        assert!(split_authority(b"[::1]:80").is_none());
        assert!(split_authority(b"a:b").is_none());
        assert!(split_authority(b"a:1:2").is_none());
        assert!(normalize_host(b"\xff").is_none());
        assert!(normalize_host(&[b'a'; 254]).is_none());
        assert!(normalize_host(b"").is_none());
    }
}
