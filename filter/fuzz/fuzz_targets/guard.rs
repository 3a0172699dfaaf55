//! The blast-radius guard (`core::guard`) over a shared store that misbehaves as the host's
//! may: other workers winning CAS races, failing calls, values that are not cells. Never a
//! panic; attempts stay bounded; with a well-behaved store the in-flight count is exact and
//! never exceeds the cap, and no more tokens are handed out than the bucket earned.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::bucket::{BudgetCell, RateLimit, MICRO};
use sandbox_router::core::guard::{
    admit, beat, ensure_cell, heartbeat_key, release, Budget, Verdict, MAX_ADMIT_ATTEMPTS,
    MAX_RELEASE_ATTEMPTS,
};
use sandbox_router_fuzz::{Mischief, MischiefStore};
use sandbox_router::core::slots::{Slots, VmId};

/// This VM, and another worker's VM whose requests hold slots in the races below.
const US: VmId = 1;
const OTHER: VmId = 2;

/// Another worker's write in a race: a cell with these tokens and its slots.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct RivalCell {
    in_flight: u8,
    micro_tokens: u64,
}

fn rival_cell(rival: &RivalCell) -> Option<Vec<u8>> {
    let mut cell = BudgetCell {
        micro_tokens: rival.micro_tokens,
        refilled_at_ns: 0,
        slots: Slots::default(),
    };
    for _ in 0..rival.in_flight {
        cell.slots.take(OTHER);
    }
    Some(cell.encode().as_bytes().to_vec())
}

type FuzzStore = MischiefStore<RivalCell>;

fn cell(store: &FuzzStore) -> Option<BudgetCell> {
    store.value.as_ref().and_then(|(v, _)| BudgetCell::decode(v))
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
    mischief: Vec<Mischief<RivalCell>>,
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
    let mut store = FuzzStore::new(&input.mischief, rival_cell);
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
                let before = cell(&store);
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
            if let Some(cell) = cell(&store) {
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
