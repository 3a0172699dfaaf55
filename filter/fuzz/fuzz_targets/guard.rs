//! The blast-radius guard (`core::guard`) over a shared store that misbehaves as the host's
//! may: other workers winning CAS races, failing calls, values that are not cells. Never a
//! panic; attempts stay bounded; with a well-behaved store the in-flight count is exact and
//! never exceeds the cap, and no more tokens are handed out than the bucket earned.
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::bucket::{BudgetCell, RateLimit, MICRO};
use sandbox_router::core::guard::{
    admit, beat, ensure_cell, heartbeat_key, release, Budget, SetError, Store, StoreUnavailable,
    Verdict, MAX_ADMIT_ATTEMPTS, MAX_RELEASE_ATTEMPTS,
};
use sandbox_router::core::slots::{Slots, VmId};

/// This VM, and another worker's VM whose requests hold slots in the races below.
const US: VmId = 1;
const OTHER: VmId = 2;

/// What the store does on one call.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Mischief {
    None,
    /// Another worker writes between our get and set (our set then loses its CAS).
    Race {
        in_flight: u8,
        micro_tokens: u64,
    },
    Fail,
    /// The value is replaced with bytes that are not a cell.
    Garbage(u8),
}

struct FuzzStore {
    value: Option<(Vec<u8>, u32)>,
    /// Heartbeats, by key: both VMs stay alive.
    beats: Vec<(String, Vec<u8>)>,
    next_cas: u32,
    mischief: VecDeque<Mischief>,
    gets: u32,
    sets: u32,
    misbehaved: bool,
}

impl FuzzStore {
    fn next(&mut self) -> Mischief {
        let m = self.mischief.pop_front().unwrap_or(Mischief::None);
        if !matches!(m, Mischief::None) {
            self.misbehaved = true;
        }
        m
    }

    fn bump(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.next_cas
    }

    fn cell(&self) -> Option<BudgetCell> {
        self.value.as_ref().and_then(|(v, _)| BudgetCell::decode(v))
    }
}

impl Store for FuzzStore {
    fn get<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<(Option<T>, u32), StoreUnavailable> {
        if let Some((_, beat)) = self.beats.iter().find(|(k, _)| k == key) {
            return Ok((read(beat), 1));
        }
        self.gets += 1;
        let found = match &self.value {
            Some((v, cas)) => (read(v), *cas),
            None => (None, 0),
        };
        match self.next() {
            Mischief::None => {}
            Mischief::Fail => return Err(StoreUnavailable),
            Mischief::Race {
                in_flight,
                micro_tokens,
            } => {
                let mut cell = BudgetCell {
                    micro_tokens,
                    refilled_at_ns: 0,
                    slots: Slots::default(),
                };
                for _ in 0..in_flight {
                    cell.slots.take(OTHER);
                }
                let cas = self.bump();
                self.value = Some((cell.encode().as_bytes().to_vec(), cas));
            }
            Mischief::Garbage(n) => {
                let cas = self.bump();
                self.value = Some((vec![n; usize::from(n % 40)], cas));
            }
        }
        Ok(found)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        if key.starts_with("sandbox-router/vm/") {
            self.beats.retain(|(k, _)| k != key);
            self.beats.push((key.to_owned(), value.to_vec()));
            return Ok(());
        }
        self.sets += 1;
        if let Some((_, current)) = &self.value {
            if cas != 0 && cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        if matches!(self.next(), Mischief::Fail) {
            return Err(SetError::Failed);
        }
        let next = self.bump();
        self.value = Some((value.to_vec(), next));
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Admit { advance_ns: u32 },
    Release,
    Ensure,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rps: Option<(u32, u16)>,
    burst: u32,
    max_in_flight: Option<u16>,
    start_ns: u64,
    ops: Vec<Op>,
    mischief: Vec<Mischief>,
}

fuzz_target!(|input: Input| {
    let rate = input
        .rps
        .and_then(|(n, d)| RateLimit::new(f64::from(n) / f64::from(d.max(1)), input.burst.max(1)));
    let budget = Budget {
        rate,
        max_in_flight: input.max_in_flight.map(u32::from),
        store_key: "sandbox-router/budget/fuzz".into(),
    };
    let mut store = FuzzStore {
        value: None,
        beats: Vec::new(),
        next_cas: 0,
        mischief: input.mischief.iter().copied().take(256).collect(),
        gets: 0,
        sets: 0,
        misbehaved: false,
    };
    let mut now = input.start_ns;
    // Time only moves forward here, and both VMs beat at the latest time: neither is dead.
    let beat_far_ahead = |store: &mut FuzzStore| {
        for vm in [US, OTHER] {
            beat(store, vm, u64::MAX).unwrap();
        }
    };
    beat_far_ahead(&mut store);
    assert!(store.beats.iter().any(|(k, _)| *k == heartbeat_key(US)));
    let mut held: u32 = 0; // slots we hold, by our own count
    let mut taken: u128 = 0;
    let mut earned: u128 = rate.map_or(0, |r| u128::from(r.burst) * u128::from(MICRO));
    let mut last_refill = now;
    for op in input.ops.iter().take(64) {
        let (gets, sets) = (store.gets, store.sets);
        match op {
            Op::Ensure => {
                let _ = ensure_cell(&mut store, &budget, now);
                assert!(store.gets - gets <= 1 && store.sets - sets <= 1);
            }
            Op::Release => {
                let released = release(&mut store, &budget.store_key, US);
                assert!(store.gets - gets <= MAX_RELEASE_ATTEMPTS);
                if released && held > 0 {
                    held -= 1;
                }
            }
            Op::Admit { advance_ns } => {
                now = now.saturating_add(u64::from(*advance_ns));
                let before = store.cell();
                let verdict = admit(&mut store, &budget, now, US);
                assert!(store.gets - gets <= MAX_ADMIT_ATTEMPTS);
                assert!(store.sets - sets <= MAX_ADMIT_ATTEMPTS);
                match verdict {
                    Verdict::Admitted { quota, holds_slot } => {
                        assert_eq!(holds_slot, budget.max_in_flight.is_some());
                        assert_eq!(quota.is_some(), rate.is_some());
                        if let (Some(q), Some(r)) = (quota, rate) {
                            assert_eq!(q.limit, r.burst);
                            assert!(q.remaining < u64::from(r.burst));
                        }
                        if holds_slot {
                            held += 1;
                        }
                        if rate.is_some() {
                            taken += u128::from(MICRO);
                        }
                    }
                    Verdict::RateLimited {
                        quota, retry_after, ..
                    } => {
                        assert!(rate.is_some());
                        assert!(retry_after >= 1);
                        assert_eq!(quota.remaining, 0);
                    }
                    Verdict::InFlightCapped { max_in_flight } => {
                        assert_eq!(Some(max_in_flight), budget.max_in_flight);
                    }
                    Verdict::Unavailable => {
                        assert!(store.misbehaved, "unavailable with a good store")
                    }
                }
                let _ = before;
            }
        }
        if let Some(r) = rate {
            if now > last_refill {
                earned +=
                    u128::from(now - last_refill) * u128::from(r.micro_per_second) / 1_000_000_000;
                last_refill = now;
            }
        }
        // With a store that never misbehaved, the cell is exactly our own accounting.
        if !store.misbehaved {
            if let Some(cell) = store.cell() {
                assert_eq!(cell.in_flight(), held, "in-flight count drifted");
                if let Some(max) = budget.max_in_flight {
                    assert!(cell.in_flight() <= max);
                }
            }
            assert!(
                taken <= earned,
                "took {taken} micro-tokens, earned {earned}"
            );
        }
    }
});
