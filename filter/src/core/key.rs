//! The routing key: 1 to 128 bytes of `[A-Za-z0-9._-]`, held on the stack so that finding one
//! never allocates.

use super::decode::decoded_value;

pub const MAX_KEY_LEN: usize = 128;

/// A validated routing key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RoutingKey {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl std::fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoutingKey({:?})", self.as_str())
    }
}

pub fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// Whether `s` is a well-formed key (used to validate configuration).
pub fn is_valid_key(s: &str) -> bool {
    RoutingKey::from_bytes(s.as_bytes()).is_some()
}

impl RoutingKey {
    /// Takes `raw` literally (no decoding); `None` if it is not a well-formed key.
    pub fn from_bytes(raw: &[u8]) -> Option<Self> {
        let mut builder = KeyBuilder::new();
        for &b in raw {
            builder.push(b)?;
        }
        builder.finish()
    }

    /// Decodes `raw` as apps decode baggage values (see [`super::decode`]) into a key.
    pub fn from_encoded(raw: &[u8]) -> Option<Self> {
        Self::from_bytes(&decoded_value(raw)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever admitted, so this cannot fail.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

struct KeyBuilder {
    key: RoutingKey,
}

impl KeyBuilder {
    fn new() -> Self {
        KeyBuilder {
            key: RoutingKey {
                bytes: [0; MAX_KEY_LEN],
                len: 0,
            },
        }
    }

    fn push(&mut self, b: u8) -> Option<()> {
        if !is_key_byte(b) {
            return None;
        }
        let slot = self.key.bytes.get_mut(self.key.len)?;
        *slot = b;
        self.key.len = self.key.len.checked_add(1)?;
        Some(())
    }

    fn finish(self) -> Option<RoutingKey> {
        (self.key.len > 0).then_some(self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn accepts_the_key_alphabet() {
        let key = RoutingKey::from_bytes(b"Feature_x-1.2").unwrap();
        assert_eq!(key.as_str(), "Feature_x-1.2");
    }

    #[test]
    fn rejects_empty_too_long_and_foreign_bytes() {
        assert!(RoutingKey::from_bytes(b"").is_none());
        assert!(RoutingKey::from_bytes(&[b'a'; 129]).is_none());
        assert!(RoutingKey::from_bytes(&[b'a'; 128]).is_some());
        for bad in [&b"a b"[..], b"a/b", b"a=b", b"caf\xc3\xa9", b"a\0", b"a%2D"] {
            assert!(RoutingKey::from_bytes(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn decodes_as_apps_do() {
        let key = RoutingKey::from_encoded(b"feature%2Dx%2e1").unwrap();
        assert_eq!(key.as_str(), "feature-x.1");
        assert_eq!(
            RoutingKey::from_encoded(b" feature-x%20%09")
                .unwrap()
                .as_str(),
            "feature-x"
        );
        assert!(RoutingKey::from_encoded(b"a%2").is_none());
        assert!(RoutingKey::from_encoded(b"a%zz").is_none());
        assert!(RoutingKey::from_encoded(b"a%20b").is_none());
        assert!(RoutingKey::from_encoded(b"a+b").is_none());
        assert!(RoutingKey::from_encoded(b"%").is_none());
        assert!(RoutingKey::from_encoded(b"%20").is_none());
    }
}
