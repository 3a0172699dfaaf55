//! Reads the proxy-wasm serialized header map in place: one host call fetches every request
//! header, and this walks the buffer without copying or allocating.
//!
//! Layout (little endian): `count: u32`, then `count` pairs of `(name_len: u32, value_len: u32)`,
//! then for each pair `name \0 value \0`.

/// Iterator over `(name, value)` pairs. A truncated or inconsistent buffer ends the iteration.
pub struct HeaderPairs<'a> {
    sizes: &'a [u8],
    data: &'a [u8],
}

impl<'a> HeaderPairs<'a> {
    pub fn new(buffer: &'a [u8]) -> Self {
        let empty = HeaderPairs {
            sizes: &[],
            data: &[],
        };
        let Some(count) = read_u32(buffer, 0) else {
            return empty;
        };
        let sizes_len = (count as usize).checked_mul(8);
        let sizes_end = sizes_len.and_then(|len| len.checked_add(4));
        match (sizes_end, sizes_end.and_then(|end| buffer.get(4..end))) {
            (Some(end), Some(sizes)) => HeaderPairs {
                sizes,
                data: buffer.get(end..).unwrap_or_default(),
            },
            _ => empty,
        }
    }
}

impl<'a> Iterator for HeaderPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let name_len = read_u32(self.sizes, 0)? as usize;
        let value_len = read_u32(self.sizes, 4)? as usize;
        self.sizes = self.sizes.get(8..)?;
        let name = self.data.get(..name_len)?;
        let value_start = name_len.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.data.get(value_start..value_end)?;
        self.data = self
            .data
            .get(value_end.checked_add(1)?..)
            .unwrap_or_default();
        Some((name, value))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// Serializes pairs in the host's format (used by tests and fuzzing).
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(u32::try_from(pairs.len()).unwrap_or(u32::MAX)).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(u32::try_from(name.len()).unwrap_or(u32::MAX)).to_le_bytes());
        out.extend_from_slice(&(u32::try_from(value.len()).unwrap_or(u32::MAX)).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn round_trips() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":authority", b"payment"),
            (b"baggage", b""),
            (b"x", b"\xff"),
        ];
        let buffer = serialize(&pairs);
        assert_eq!(HeaderPairs::new(&buffer).collect::<Vec<_>>(), pairs);
    }

    #[test]
    fn survives_truncation_and_lies() {
        let buffer = serialize(&[(b"name", b"value"), (b"other", b"x")]);
        for cut in 0..buffer.len() {
            let _ = HeaderPairs::new(&buffer[..cut]).count();
        }
        let mut lying = buffer.clone();
        lying[0] = 0xff;
        lying[3] = 0xff;
        assert_eq!(HeaderPairs::new(&lying).count(), 0);
        let mut huge_len = buffer;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderPairs::new(&huge_len).count(), 0);
    }
}
