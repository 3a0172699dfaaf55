//! The circuit breaker (`core::breaker`) over a shared store that misbehaves as the host's may
//! (other workers' writes between a read and a write, failing calls, bytes that are not a
//! cell), driven by arbitrary admissions, verdicts and clock moves. Never a panic; attempts stay
//! bounded; with a well-behaved store, a half-open breaker never lets more than its probes
//! through, the open time stays within [open, max_open], and a refusal always names a
//! retry time.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::breaker::{
    admit, ensure_cell, record, return_probe, Admission, BreakerCell, BreakerPolicy, Phase,
    Ticket, MAX_ATTEMPTS,
};
use sandbox_router_fuzz::{Mischief, MischiefStore};

/// In a race another worker rewrites the cell as it is (our write then loses its CAS).
fn same_cell(_: &()) -> Option<Vec<u8>> {
    None
}

type FuzzStore = MischiefStore<()>;

fn cell(store: &FuzzStore) -> Option<BreakerCell> {
    store.value.as_ref().and_then(|(v, _)| BreakerCell::decode(v))
}

#[derive(Arbitrary, Debug)]
enum Op {
    Admit { advance_ms: u16 },
    /// Records the verdict of the `n`-th outstanding ticket.
    Record { n: u8, failed: bool, advance_ms: u16 },
    ReturnProbe { n: u8 },
    Ensure,
}

#[derive(Arbitrary, Debug)]
struct Input {
    consecutive_failures: u8,
    ratio_percent: u8,
    min_requests: u8,
    window_s: u8,
    open_s: u8,
    extra_max_open_s: u8,
    half_open_requests: u8,
    start_ns: u64,
    ops: Vec<Op>,
    mischief: Vec<Mischief<()>>,
}

const SEC: u64 = 1_000_000_000;

fuzz_target!(|input: Input| {
    let open_s = u64::from(input.open_s.max(1));
    let policy = BreakerPolicy {
        consecutive_failures: u32::from(input.consecutive_failures % 10),
        failure_ratio_ppm: u64::from(input.ratio_percent % 100 + 1) * 10_000,
        min_requests: u32::from(input.min_requests % 30),
        window_ns: u64::from(input.window_s.max(1)) * SEC,
        open_ns: open_s * SEC,
        max_open_ns: (open_s + u64::from(input.extra_max_open_s)) * SEC,
        half_open_requests: u32::from(input.half_open_requests % 5 + 1),
        store_key: "sandbox-router/circuit/fuzz".into(),
    };
    let mut store = FuzzStore::new(&input.mischief, same_cell);
    let mut now = input.start_ns;
    let mut tickets: Vec<Ticket> = Vec::new();
    for op in input.ops.iter().take(128) {
        let gets = store.gets;
        match op {
            Op::Ensure => {
                let _ = ensure_cell(&mut store, &policy);
            }
            Op::Admit { advance_ms } => {
                now = now.saturating_add(u64::from(*advance_ms) * 1_000_000);
                let admitted = admit(&mut store, &policy, now);
                assert!(store.gets - gets <= MAX_ATTEMPTS);
                match admitted.admission {
                    Admission::Refuse { retry_after_s, .. } => {
                        assert!(retry_after_s >= 1);
                        assert!(retry_after_s <= policy.max_open_ns / SEC + 1);
                    }
                    other => tickets.extend(other.ticket()),
                }
            }
            Op::Record { n, failed, advance_ms } => {
                now = now.saturating_add(u64::from(*advance_ms) * 1_000_000);
                if !tickets.is_empty() {
                    let ticket = tickets.remove(usize::from(*n) % tickets.len());
                    let _ = record(&mut store, &policy, ticket, *failed, now);
                    assert!(store.gets - gets <= MAX_ATTEMPTS);
                }
            }
            Op::ReturnProbe { n } => {
                if !tickets.is_empty() {
                    let ticket = tickets.remove(usize::from(*n) % tickets.len());
                    return_probe(&mut store, &policy, ticket);
                }
            }
        }
        if !store.misbehaved {
            if let Some(cell) = cell(&store) {
                assert!(cell.open_ns >= policy.open_ns && cell.open_ns <= policy.max_open_ns);
                if cell.phase == Phase::HalfOpen {
                    assert!(cell.probes_admitted <= policy.half_open_requests);
                    assert!(cell.probes_succeeded < policy.half_open_requests);
                }
            }
        }
    }
});
