//! The blast-radius guard: admits or rejects one sandboxed request against the sandbox's budget
//! cell in a shared store, by compare-and-swap with bounded retries.
//!
//! When the retries run out (other workers won every race) or the store fails, the request is
//! rejected: the guard fails closed for sandbox traffic only, never for baseline traffic, which
//! never reaches it.
//!
//! In-flight slots are held by VM instances ([`super::slots`]): a request at the cap first
//! reclaims the slots of VMs whose heartbeat stopped, so a VM that failed with requests in
//! progress cannot keep their slots taken.

use super::bucket::{BudgetCell, RateLimit};
use super::slots::VmId;

/// Attempts at one admission before giving up.
pub const MAX_ADMIT_ATTEMPTS: u32 = 16;
/// Attempts at releasing an in-flight slot; losing a release would leak a slot, so it tries
/// harder.
pub const MAX_RELEASE_ATTEMPTS: u32 = 256;

/// One sandbox's budget, compiled from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub rate: Option<RateLimit>,
    pub max_in_flight: Option<u32>,
    /// The shared-data key of the sandbox's cell.
    pub store_key: Box<str>,
}

/// The store could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Failed,
}

/// A compare-and-swap store with the proxy-wasm shared-data rules: every stored value has a
/// non-zero CAS token that changes on each write; `set` with CAS 0 writes unconditionally,
/// with any other CAS only if it still matches.
pub trait Store {
    /// The value under `key` as `read` makes it out (`None` if absent or unreadable) and its
    /// CAS token (0 if absent).
    fn get<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<(Option<T>, u32), StoreUnavailable>;
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
}

/// A VM whose heartbeat is older than this is dead, and its in-flight slots are reclaimed. Each
/// VM beats on every tick (250 ms); a worker stalled for this long is taken for dead, and the
/// cap may then briefly be exceeded by its requests: the safe side of a leak that would refuse
/// the sandbox for good.
pub const DEAD_AFTER_NS: u64 = 5_000_000_000;

/// Shared-data key of a VM's heartbeat.
pub fn heartbeat_key(vm: VmId) -> String {
    format!("sandbox-router/vm/{vm:016x}")
}

/// Records that `vm` is alive at `now_ns`.
pub fn beat(store: &mut impl Store, vm: VmId, now_ns: u64) -> Result<(), SetError> {
    store.set(&heartbeat_key(vm), &now_ns.to_le_bytes(), 0)
}

/// Whether `vm`'s heartbeat stopped. A store that cannot tell keeps the holder alive.
fn is_dead(store: &mut impl Store, vm: VmId, now_ns: u64) -> bool {
    let read = |bytes: &[u8]| bytes.try_into().ok().map(u64::from_le_bytes);
    match store.get(&heartbeat_key(vm), read) {
        Ok((Some(beat), _)) => now_ns.saturating_sub(beat) > DEAD_AFTER_NS,
        Ok((None, _)) => true,
        Err(StoreUnavailable) => false,
    }
}

fn get_cell(
    store: &mut impl Store,
    key: &str,
) -> Result<(Option<BudgetCell>, u32), StoreUnavailable> {
    store.get(key, BudgetCell::decode)
}

fn set_cell(
    store: &mut impl Store,
    key: &str,
    cell: &BudgetCell,
    cas: u32,
) -> Result<(), SetError> {
    store.set(key, cell.encode().as_bytes(), cas)
}

/// The rate-limit figures a response reports (`x-ratelimit-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u64,
    pub reset_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; `holds_slot` when an in-flight slot was taken and must be released.
    Admitted {
        quota: Option<Quota>,
        holds_slot: bool,
    },
    RateLimited {
        quota: Quota,
        retry_after: u64,
        /// The refill rate, as text for messages.
        rate: RateLimit,
    },
    InFlightCapped {
        max_in_flight: u32,
    },
    /// The store failed or every attempt lost its race.
    Unavailable,
}

impl Verdict {
    /// The decision name used in logs, stats and audit records.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Admitted { .. } => "admitted",
            Verdict::RateLimited { .. } => "rate_limited",
            Verdict::InFlightCapped { .. } => "in_flight_rejected",
            Verdict::Unavailable => "budget_unavailable",
        }
    }
}

/// Admits one request of `budget`'s sandbox, taking its in-flight slot (if capped) for `vm`.
pub fn admit(store: &mut impl Store, budget: &Budget, now_ns: u64, vm: VmId) -> Verdict {
    let mut looked_for_dead = false;
    for _ in 0..MAX_ADMIT_ATTEMPTS {
        let Ok((stored, cas)) = get_cell(store, &budget.store_key) else {
            return Verdict::Unavailable;
        };
        let mut cell = stored.unwrap_or_else(|| BudgetCell::full(budget.rate.as_ref(), now_ns));
        if let Some(rate) = &budget.rate {
            cell.refill(rate, now_ns);
        }
        if let Some(max) = budget.max_in_flight {
            if cell.in_flight() >= max && !looked_for_dead {
                // Once per admission: the heartbeats are read only at the cap.
                looked_for_dead = true;
                let freed = cell
                    .slots
                    .reclaim(|holder| holder != vm && is_dead(store, holder, now_ns));
                if freed > 0 && cell.in_flight() >= max {
                    // Still capped: keep the cleanup for the next request anyway.
                    let _ = set_cell(store, &budget.store_key, &cell, cas);
                    continue;
                }
            }
            if cell.in_flight() >= max {
                return Verdict::InFlightCapped { max_in_flight: max };
            }
        }
        let quota = match &budget.rate {
            Some(rate) => {
                if !cell.take_token() {
                    return Verdict::RateLimited {
                        quota: quota(&cell, rate),
                        retry_after: cell.seconds_until_token(rate).max(1),
                        rate: *rate,
                    };
                }
                Some(quota(&cell, rate))
            }
            None => None,
        };
        let holds_slot = budget.max_in_flight.is_some();
        if holds_slot && !cell.slots.take(vm) {
            return Verdict::Unavailable;
        }
        match set_cell(store, &budget.store_key, &cell, cas) {
            Ok(()) => return Verdict::Admitted { quota, holds_slot },
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Verdict::Unavailable,
        }
    }
    Verdict::Unavailable
}

/// Creates the sandbox's cell (full bucket, nothing in flight) unless it exists. Called when a
/// configuration is applied, so that requests only ever update cells by CAS: a write with CAS 0
/// is unconditional and could erase another worker's update.
pub fn ensure_cell(store: &mut impl Store, budget: &Budget, now_ns: u64) -> Result<(), SetError> {
    match get_cell(store, &budget.store_key) {
        Ok((Some(_), _)) => Ok(()),
        Ok((None, cas)) => set_cell(
            store,
            &budget.store_key,
            &BudgetCell::full(budget.rate.as_ref(), now_ns),
            cas,
        ),
        Err(StoreUnavailable) => Err(SetError::Failed),
    }
}

/// Gives back `vm`'s in-flight slot of a request that ended. Returns whether it was released.
pub fn release(store: &mut impl Store, store_key: &str, vm: VmId) -> bool {
    for _ in 0..MAX_RELEASE_ATTEMPTS {
        let Ok((stored, cas)) = get_cell(store, store_key) else {
            return false;
        };
        let Some(mut cell) = stored else {
            return true;
        };
        cell.slots.give_back(vm);
        match set_cell(store, store_key, &cell, cas) {
            Ok(()) => return true,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return false,
        }
    }
    false
}

fn quota(cell: &BudgetCell, rate: &RateLimit) -> Quota {
    Quota {
        limit: rate.burst,
        remaining: cell.remaining_tokens(),
        reset_seconds: cell.seconds_until_full(rate),
    }
}

/// Another worker's write, played between a `get` and the next `set`.
#[cfg(test)]
pub type Interference = Box<dyn FnMut(&mut FakeStore, &str)>;

/// An in-memory [`Store`] that follows the host's CAS rules exactly (Envoy's shared data: CAS
/// tokens start at 1, increase on every write, skip 0). `interfere` runs between a `get` and the
/// next `set`, to play another worker.
#[cfg(test)]
#[derive(Default)]
pub struct FakeStore {
    entries: std::collections::HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    pub interfere: Option<Interference>,
    pub fail: bool,
}

#[cfg(test)]
impl FakeStore {
    fn bump_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }

    /// Writes raw bytes as the host would (CAS rules included).
    pub fn set_raw(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        if self.fail {
            return Err(SetError::Failed);
        }
        if let Some((_, current)) = self.entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        let next = self.bump_cas();
        self.entries.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    pub fn cell(&self, key: &str) -> Option<BudgetCell> {
        self.entries
            .get(key)
            .and_then(|(v, _)| BudgetCell::decode(v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
impl Store for FakeStore {
    fn get<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<(Option<T>, u32), StoreUnavailable> {
        if self.fail {
            return Err(StoreUnavailable);
        }
        let found = match self.entries.get(key) {
            Some((value, cas)) => (read(value), *cas),
            None => (None, 0),
        };
        if let Some(mut interfere) = self.interfere.take() {
            interfere(self, key);
            self.interfere = Some(interfere);
        }
        Ok(found)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.set_raw(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000_000;
    const VM: VmId = 7;

    fn budget(rate: Option<(f64, u32)>, max_in_flight: Option<u32>) -> Budget {
        Budget {
            rate: rate.map(|(rps, burst)| RateLimit::new(rps, burst).unwrap()),
            max_in_flight,
            store_key: "budget/feature-x".into(),
        }
    }

    fn admitted(v: Verdict) -> bool {
        matches!(v, Verdict::Admitted { .. })
    }

    #[test]
    fn admits_burst_then_rate() {
        let mut store = FakeStore::default();
        let b = budget(Some((5.0, 10)), None);
        let first_second = (0..100)
            .filter(|_| admitted(admit(&mut store, &b, 0, VM)))
            .count();
        assert_eq!(first_second, 10);
        let later = (0..100)
            .filter(|_| admitted(admit(&mut store, &b, 2 * SEC, VM)))
            .count();
        assert_eq!(later, 10, "2 s at 5/s refills 10");
    }

    #[test]
    fn reports_quota_and_retry_after() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 2)), None);
        assert_eq!(
            admit(&mut store, &b, 0, VM),
            Verdict::Admitted {
                quota: Some(Quota {
                    limit: 2,
                    remaining: 1,
                    reset_seconds: 1
                }),
                holds_slot: false
            }
        );
        admit(&mut store, &b, 0, VM);
        assert_eq!(
            admit(&mut store, &b, 0, VM),
            Verdict::RateLimited {
                quota: Quota {
                    limit: 2,
                    remaining: 0,
                    reset_seconds: 2
                },
                retry_after: 1,
                rate: RateLimit::new(1.0, 2).unwrap(),
            }
        );
    }

    #[test]
    fn caps_in_flight_and_releases() {
        let mut store = FakeStore::default();
        let b = budget(None, Some(2));
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        assert_eq!(
            admit(&mut store, &b, 0, VM),
            Verdict::InFlightCapped { max_in_flight: 2 }
        );
        assert!(release(&mut store, &b.store_key, VM));
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        for _ in 0..5 {
            release(&mut store, &b.store_key, VM);
        }
        assert_eq!(
            store.cell(&b.store_key).unwrap().in_flight(),
            0,
            "never below zero"
        );
    }

    #[test]
    fn a_capped_request_takes_no_token() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 5)), Some(1));
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        assert!(!admitted(admit(&mut store, &b, 0, VM)));
        assert_eq!(store.cell(&b.store_key).unwrap().remaining_tokens(), 4);
    }

    #[test]
    fn retries_when_another_worker_wins_the_race() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 100)), None);
        ensure_cell(&mut store, &b, 0).unwrap();
        let mut races = 3;
        let key = b.store_key.to_string();
        store.interfere = Some(Box::new(move |store: &mut FakeStore, _| {
            if races > 0 {
                races -= 1;
                // Another worker admits a request between our get and set.
                let mut cell = store.cell(&key).unwrap();
                assert!(cell.take_token());
                store.set_raw(&key, cell.encode().as_bytes(), 0).unwrap();
            }
        }));
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        store.interfere = None;
        assert_eq!(
            store.cell(&b.store_key).unwrap().remaining_tokens(),
            96,
            "3 rivals + us"
        );
    }

    #[test]
    fn gives_up_after_bounded_retries() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 100)), None);
        admit(&mut store, &b, 0, VM);
        let key = b.store_key.to_string();
        store.interfere = Some(Box::new(move |store: &mut FakeStore, _| {
            let cell = store.cell(&key).unwrap();
            store.set_raw(&key, cell.encode().as_bytes(), 0).unwrap();
        }));
        assert_eq!(admit(&mut store, &b, 0, VM), Verdict::Unavailable);
    }

    #[test]
    fn ensure_cell_creates_once_and_keeps_existing_state() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 3)), Some(2));
        ensure_cell(&mut store, &b, 0).unwrap();
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        ensure_cell(&mut store, &b, 0).unwrap();
        let cell = store.cell(&b.store_key).unwrap();
        assert_eq!((cell.remaining_tokens(), cell.in_flight()), (2, 1));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn store_failure_is_unavailable() {
        let mut store = FakeStore {
            fail: true,
            ..FakeStore::default()
        };
        let b = budget(Some((1.0, 1)), None);
        assert_eq!(admit(&mut store, &b, 0, VM), Verdict::Unavailable);
        assert!(!release(&mut store, &b.store_key, VM));
    }

    #[test]
    fn foreign_bytes_in_the_store_are_replaced() {
        let mut store = FakeStore::default();
        let b = budget(Some((1.0, 3)), None);
        store.set_raw(&b.store_key, b"garbage", 0).unwrap();
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        assert_eq!(store.cell(&b.store_key).unwrap().remaining_tokens(), 2);
    }

    #[test]
    fn fake_store_follows_host_cas_rules() {
        let mut store = FakeStore::default();
        store.set_raw("k", b"1", 0).unwrap();
        let (_, cas) = (store.entries["k"].0.clone(), store.entries["k"].1);
        assert_ne!(cas, 0);
        assert_eq!(
            store.set_raw("k", b"2", cas.wrapping_add(1)),
            Err(SetError::CasMismatch)
        );
        store.set_raw("k", b"2", cas).unwrap();
        assert_eq!(store.set_raw("k", b"3", cas), Err(SetError::CasMismatch));
        store.set_raw("k", b"3", 0).unwrap();
        store.next_cas = u32::MAX;
        store.set_raw("k", b"4", 0).unwrap();
        assert_eq!(store.entries["k"].1, 1, "CAS skips 0 when it wraps");
    }

    #[test]
    fn slots_of_a_dead_vm_are_reclaimed_at_the_cap() {
        let mut store = FakeStore::default();
        let b = budget(None, Some(2));
        let (dead, alive) = (1, 2);
        for vm in [dead, alive, VM] {
            beat(&mut store, vm, 0).unwrap();
        }
        assert!(admitted(admit(&mut store, &b, 0, dead)));
        assert!(admitted(admit(&mut store, &b, 0, alive)));
        // The holders beat recently: the cap holds.
        assert_eq!(
            admit(&mut store, &b, SEC, VM),
            Verdict::InFlightCapped { max_in_flight: 2 }
        );
        // `dead` stops beating; `alive` and we go on.
        let later = DEAD_AFTER_NS + 2 * SEC;
        beat(&mut store, alive, later).unwrap();
        beat(&mut store, VM, later).unwrap();
        assert!(admitted(admit(&mut store, &b, later, VM)));
        let cell = store.cell(&b.store_key).unwrap();
        assert_eq!(cell.in_flight(), 2);
        assert!(cell.slots.holders().iter().all(|(vm, _)| *vm != dead));
        // The dead VM's late release (it never comes, but if it did) frees nothing.
        assert!(release(&mut store, &b.store_key, dead));
        assert_eq!(store.cell(&b.store_key).unwrap().in_flight(), 2);
        // A live holder is never reclaimed, however long it holds.
        assert_eq!(
            admit(&mut store, &b, later, 3),
            Verdict::InFlightCapped { max_in_flight: 2 }
        );
    }

    #[test]
    fn a_holder_that_never_beat_is_dead() {
        let mut store = FakeStore::default();
        let b = budget(None, Some(1));
        assert!(admitted(admit(&mut store, &b, 0, 1)));
        // No heartbeat was ever written for 1: it is dead, and reclaimed.
        assert!(admitted(admit(&mut store, &b, 0, VM)));
        assert_eq!(
            store.cell(&b.store_key).unwrap().slots.holders(),
            &[(VM, 1)]
        );
    }
}
