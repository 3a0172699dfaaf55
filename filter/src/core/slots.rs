//! In-flight slots, each held by the VM instance that took it. Shared data outlives a VM: when a
//! VM fails (a trap under `FAIL_RELOAD`), `proxy_on_delete` never runs for its requests and their
//! slots would stay taken for good. Attributing every slot to its VM lets the survivors reclaim
//! a dead VM's slots: each VM writes a heartbeat while it lives ([`super::guard::beat`]), and a
//! holder whose heartbeat stopped is dead.

/// How many VMs can hold slots of one sandbox at once: one VM per Envoy worker (and briefly a
/// reloaded one beside it). A request that would need a further holder is refused, like any
/// request whose budget cannot be updated.
pub const MAX_HOLDERS: usize = 64;

/// A VM instance: random, drawn when the VM starts.
pub type VmId = u64;

/// Room for the largest budget cell: tokens, refill time, and every holder.
pub const MAX_CELL_LEN: usize = Slots::encoded_len(MAX_HOLDERS).saturating_add(16);

/// An encoded cell, on the stack: encoding one on the request path allocates nothing.
pub struct CellBytes {
    bytes: [u8; MAX_CELL_LEN],
    len: usize,
}

impl CellBytes {
    pub fn new() -> Self {
        CellBytes {
            bytes: [0; MAX_CELL_LEN],
            len: 0,
        }
    }

    /// Appends `data`; what does not fit is dropped (never happens: see [`MAX_CELL_LEN`]).
    pub fn push(&mut self, data: &[u8]) {
        let end = self.len.saturating_add(data.len());
        if let Some(slot) = self.bytes.get_mut(self.len..end) {
            slot.copy_from_slice(data);
            self.len = end;
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl Default for CellBytes {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    holders: [(VmId, u32); MAX_HOLDERS],
    len: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            holders: [(0, 0); MAX_HOLDERS],
            len: 0,
        }
    }
}

impl Slots {
    /// Slots taken, by every holder.
    pub fn total(&self) -> u32 {
        self.holders()
            .iter()
            .fold(0u32, |sum, (_, n)| sum.saturating_add(*n))
    }

    pub fn holders(&self) -> &[(VmId, u32)] {
        self.holders.get(..self.len).unwrap_or_default()
    }

    /// Takes one slot for `vm`; `false` when no holder entry is free.
    pub fn take(&mut self, vm: VmId) -> bool {
        if let Some(entry) = self
            .holders
            .get_mut(..self.len)
            .and_then(|h| h.iter_mut().find(|(v, _)| *v == vm))
        {
            entry.1 = entry.1.saturating_add(1);
            return true;
        }
        match self.holders.get_mut(self.len) {
            Some(entry) => {
                *entry = (vm, 1);
                self.len = self.len.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// Gives back one slot of `vm` (nothing if it holds none: its slots were reclaimed).
    pub fn give_back(&mut self, vm: VmId) {
        let Some(at) = self.holders().iter().position(|(v, _)| *v == vm) else {
            return;
        };
        if let Some(entry) = self.holders.get_mut(at) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                self.remove_at(at);
            }
        }
    }

    /// Drops every slot of the holders `is_dead` names; returns how many slots were freed.
    pub fn reclaim(&mut self, mut is_dead: impl FnMut(VmId) -> bool) -> u32 {
        let mut freed = 0u32;
        let mut at = 0usize;
        while let Some(&(vm, n)) = self.holders().get(at) {
            if is_dead(vm) {
                freed = freed.saturating_add(n);
                self.remove_at(at);
            } else {
                at = at.saturating_add(1);
            }
        }
        freed
    }

    fn remove_at(&mut self, at: usize) {
        let last = self.len.saturating_sub(1);
        if at <= last && last < MAX_HOLDERS {
            self.holders.swap(at, last);
            self.len = last;
        }
    }

    pub const fn encoded_len(holders: usize) -> usize {
        holders.saturating_mul(12).saturating_add(4)
    }

    /// `count: u32`, then `count` × (`vm: u64`, `slots: u32`), little endian.
    pub fn encode_into(&self, out: &mut CellBytes) {
        out.push(&u32::try_from(self.len).unwrap_or(0).to_le_bytes());
        for (vm, n) in self.holders() {
            out.push(&vm.to_le_bytes());
            out.push(&n.to_le_bytes());
        }
    }

    /// `None` unless `bytes` is exactly an encoding of at most [`MAX_HOLDERS`] holders.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let count = usize::try_from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
        if count > MAX_HOLDERS || bytes.len() != Self::encoded_len(count) {
            return None;
        }
        let mut slots = Slots::default();
        for (i, entry) in bytes.get(4..)?.chunks_exact(12).enumerate() {
            let vm = u64::from_le_bytes(entry.get(..8)?.try_into().ok()?);
            let n = u32::from_le_bytes(entry.get(8..)?.try_into().ok()?);
            *slots.holders.get_mut(i)? = (vm, n);
        }
        slots.len = count;
        Some(slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn slots_are_taken_given_back_and_reclaimed_per_holder() {
        let mut slots = Slots::default();
        assert!(slots.take(1) && slots.take(1) && slots.take(2) && slots.take(3));
        assert_eq!(slots.total(), 4);
        slots.give_back(1);
        slots.give_back(9);
        assert_eq!(slots.total(), 3);
        assert_eq!(slots.reclaim(|vm| vm == 2), 1);
        assert_eq!(slots.total(), 2);
        slots.give_back(2);
        assert_eq!(slots.total(), 2, "a reclaimed holder gives back nothing");
        let mut full = Slots::default();
        for vm in 0..MAX_HOLDERS as u64 {
            assert!(full.take(vm));
        }
        assert!(!full.take(u64::MAX));
        assert!(full.take(0), "a present holder can always take more");
    }

    #[test]
    fn encodes_exactly() {
        let mut slots = Slots::default();
        slots.take(7);
        slots.take(7);
        slots.take(u64::MAX);
        let mut encoded = CellBytes::new();
        slots.encode_into(&mut encoded);
        let bytes = encoded.as_bytes();
        assert_eq!(bytes.len(), Slots::encoded_len(2));
        assert_eq!(Slots::decode(bytes), Some(slots));
        assert_eq!(Slots::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Slots::decode(&[0, 0, 0, 0]), Some(Slots::default()));
        assert_eq!(Slots::decode(&[65, 0, 0, 0]), None);
    }
}
