//! The per-sandbox circuit breaker: contains a sandbox whose requests keep failing. One cell per
//! configured sandbox in the shared store, updated by compare-and-swap, so every worker sees one
//! breaker (semantics after Envoy's outlier detection and resilience4j's closed, open and
//! half-open states):
//!
//! - **Closed**: requests go on; each verdict is recorded. It trips on `consecutive_failures`
//!   failures in a row, or when the last `window` holds at least `min_requests` verdicts of
//!   which a share of at least `failure_ratio` failed (the window slides in tenths).
//! - **Open**: requests are refused until `open` has passed; then the breaker is half-open.
//! - **Half-open**: exactly `half_open_requests` probes are let through, across every worker.
//!   All succeed: closed, counts reset. One fails: open again for twice as long (at most
//!   `max_open`). Not every verdict in within `open` of the half-open start: that counts as a
//!   failure, so the breaker never sticks half-open.
//!
//! A verdict counts only in the phase (generation) its request was admitted in. If the store
//! fails, the request goes on untracked: the breaker fails open (the budget still holds).

use super::guard::{SetError, Store, StoreUnavailable};

/// Attempts at one update before giving up (the request then goes on untracked).
pub const MAX_ATTEMPTS: u32 = 16;
/// Sub-windows of the failure-ratio window.
pub const BUCKETS: usize = 10;
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// `failure_ratio` in parts per million.
pub const RATIO_SCALE: u64 = 1_000_000;

/// One sandbox's breaker, compiled from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// 0: this trigger is off.
    pub consecutive_failures: u32,
    /// In parts per million, 1..=1,000,000.
    pub failure_ratio_ppm: u64,
    /// 0: this trigger is off.
    pub min_requests: u32,
    pub window_ns: u64,
    pub open_ns: u64,
    pub max_open_ns: u64,
    pub half_open_requests: u32,
    /// The shared-data key of the sandbox's cell.
    pub store_key: Box<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

/// Why the breaker last opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Consecutive(u32),
    Ratio {
        failures: u32,
        total: u32,
        window_s: u64,
    },
    ProbeFailed,
    ProbeTimedOut,
}

impl Cause {
    /// `after 5 consecutive failures`, for the reply a refused request gets.
    pub fn text(&self) -> String {
        match self {
            Cause::Consecutive(1) => "after 1 failure".to_owned(),
            Cause::Consecutive(n) => format!("after {n} consecutive failures"),
            Cause::Ratio {
                failures,
                total,
                window_s,
            } => format!("after {failures} of {total} requests failed in {window_s}s"),
            Cause::ProbeFailed => "again after a half-open probe failed".to_owned(),
            Cause::ProbeTimedOut => "again: half-open probes brought no verdict in time".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// `now / (window / BUCKETS)` when it was last written.
    pub epoch: u64,
    pub total: u32,
    pub failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerCell {
    pub phase: Phase,
    /// Changes with every phase change: a verdict counts only in its request's phase.
    pub generation: u32,
    pub consecutive: u32,
    /// The current open time (doubles on each failed half-open round).
    pub open_ns: u64,
    /// Open: when it turns half-open. Half-open: when the probes' verdicts are due.
    pub until_ns: u64,
    pub probes_admitted: u32,
    pub probes_succeeded: u32,
    pub cause: Cause,
    pub buckets: [Bucket; BUCKETS],
}

pub const CELL_LEN: usize = 1 + 4 + 4 + 8 + 8 + 4 + 4 + 1 + 4 + 4 + 8 + BUCKETS * 16;

impl BreakerCell {
    pub fn closed(policy: &BreakerPolicy) -> Self {
        BreakerCell {
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            open_ns: policy.open_ns,
            until_ns: 0,
            probes_admitted: 0,
            probes_succeeded: 0,
            cause: Cause::Consecutive(0),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    pub fn encode(&self) -> [u8; CELL_LEN] {
        let mut out = [0u8; CELL_LEN];
        let mut writer = Writer {
            out: &mut out,
            at: 0,
        };
        writer.u8(match self.phase {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        });
        writer.u32(self.generation);
        writer.u32(self.consecutive);
        writer.u64(self.open_ns);
        writer.u64(self.until_ns);
        writer.u32(self.probes_admitted);
        writer.u32(self.probes_succeeded);
        let (tag, a, b, c) = match self.cause {
            Cause::Consecutive(n) => (0, n, 0, 0),
            Cause::Ratio {
                failures,
                total,
                window_s,
            } => (1, failures, total, window_s),
            Cause::ProbeFailed => (2, 0, 0, 0),
            Cause::ProbeTimedOut => (3, 0, 0, 0),
        };
        writer.u8(tag);
        writer.u32(a);
        writer.u32(b);
        writer.u64(c);
        for bucket in &self.buckets {
            writer.u64(bucket.epoch);
            writer.u32(bucket.total);
            writer.u32(bucket.failures);
        }
        out
    }

    /// `None` for anything that is not a cell this filter wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != CELL_LEN {
            return None;
        }
        let mut reader = Reader { bytes, at: 0 };
        let phase = match reader.u8()? {
            0 => Phase::Closed,
            1 => Phase::Open,
            2 => Phase::HalfOpen,
            _ => return None,
        };
        let generation = reader.u32()?;
        let consecutive = reader.u32()?;
        let open_ns = reader.u64()?;
        let until_ns = reader.u64()?;
        let probes_admitted = reader.u32()?;
        let probes_succeeded = reader.u32()?;
        let (tag, a, b, c) = (reader.u8()?, reader.u32()?, reader.u32()?, reader.u64()?);
        let cause = match tag {
            0 => Cause::Consecutive(a),
            1 => Cause::Ratio {
                failures: a,
                total: b,
                window_s: c,
            },
            2 => Cause::ProbeFailed,
            3 => Cause::ProbeTimedOut,
            _ => return None,
        };
        let mut buckets = [Bucket::default(); BUCKETS];
        for bucket in &mut buckets {
            *bucket = Bucket {
                epoch: reader.u64()?,
                total: reader.u32()?,
                failures: reader.u32()?,
            };
        }
        Some(BreakerCell {
            phase,
            generation,
            consecutive,
            open_ns,
            until_ns,
            probes_admitted,
            probes_succeeded,
            cause,
            buckets,
        })
    }

    fn change_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
    }

    fn open(&mut self, open_ns: u64, now_ns: u64, cause: Cause) {
        self.change_phase(Phase::Open);
        self.open_ns = open_ns;
        self.until_ns = now_ns.saturating_add(open_ns);
        self.cause = cause;
        self.probes_admitted = 0;
        self.probes_succeeded = 0;
    }

    /// Open again after a failed half-open round: twice the last open time, at most the cap.
    fn reopen(&mut self, policy: &BreakerPolicy, now_ns: u64, cause: Cause) {
        let doubled = self.open_ns.saturating_mul(2).min(policy.max_open_ns);
        self.open(doubled.max(policy.open_ns), now_ns, cause);
    }

    fn close(&mut self, policy: &BreakerPolicy) {
        let generation = self.generation;
        *self = BreakerCell::closed(policy);
        self.generation = generation;
        self.change_phase(Phase::Closed);
    }

    /// Counts a verdict in the window and checks both triggers.
    fn record_closed(
        &mut self,
        policy: &BreakerPolicy,
        failed: bool,
        now_ns: u64,
    ) -> Option<Cause> {
        self.consecutive = if failed {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        let buckets = BUCKETS as u64;
        let width = policy.window_ns.checked_div(buckets).unwrap_or(0).max(1);
        let epoch = now_ns.checked_div(width).unwrap_or(0);
        let slot = usize::try_from(epoch.checked_rem(buckets).unwrap_or(0)).unwrap_or(0);
        if let Some(bucket) = self.buckets.get_mut(slot) {
            if bucket.epoch != epoch {
                *bucket = Bucket {
                    epoch,
                    total: 0,
                    failures: 0,
                };
            }
            bucket.total = bucket.total.saturating_add(1);
            if failed {
                bucket.failures = bucket.failures.saturating_add(1);
            }
        }
        if policy.consecutive_failures > 0 && self.consecutive >= policy.consecutive_failures {
            return Some(Cause::Consecutive(self.consecutive));
        }
        if policy.min_requests == 0 {
            return None;
        }
        let (total, failures) = self
            .buckets
            .iter()
            .filter(|b| epoch.saturating_sub(b.epoch) < buckets && b.epoch <= epoch)
            .fold((0u32, 0u32), |(t, f), b| {
                (t.saturating_add(b.total), f.saturating_add(b.failures))
            });
        let tripped = total >= policy.min_requests
            && u64::from(failures).saturating_mul(RATIO_SCALE)
                >= policy.failure_ratio_ppm.saturating_mul(u64::from(total));
        tripped.then_some(Cause::Ratio {
            failures,
            total,
            window_s: policy.window_ns.checked_div(NANOS_PER_SEC).unwrap_or(0),
        })
    }
}

/// What a request of a sandbox with a breaker may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go on; the verdict counts in this generation.
    Pass { generation: u32 },
    /// Half-open: go on as one of the probes of this generation.
    Probe { generation: u32 },
    /// Open, or half-open with every probe out: refuse.
    Refuse {
        retry_after_s: u64,
        cause: Cause,
        half_open: bool,
    },
    /// The store failed: go on, untracked.
    Untracked,
}

/// An admission, and whether deciding it opened the breaker (a half-open round that timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub admission: Admission,
    pub opened: bool,
}

/// A request that went on, to be recorded when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub generation: u32,
    pub probe: bool,
}

impl Admission {
    pub fn ticket(&self) -> Option<Ticket> {
        match *self {
            Admission::Pass { generation } => Some(Ticket {
                generation,
                probe: false,
            }),
            Admission::Probe { generation } => Some(Ticket {
                generation,
                probe: true,
            }),
            Admission::Refuse { .. } | Admission::Untracked => None,
        }
    }
}

/// What recording a verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened(Cause),
    Closed,
}

/// Envoy's response flags (the `response.flags` attribute: bit `n` is `CoreResponseFlag` `n`)
/// that mean the upstream failed: no healthy upstream, timeout, remote reset, connection failure
/// or termination, overflow, retries exhausted, max stream duration, protocol error.
const UPSTREAM_FAILED: u64 = (1 << 1)
    | (1 << 2)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 15)
    | (1 << 19)
    | (1 << 23);
/// Flags that mean the client went away (downstream connection termination, remote reset).
const CLIENT_CANCELLED: u64 = (1 << 14) | (1 << 28);
/// gRPC codes that count as failures: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS.
const GRPC_FAILURES: [u64; 5] = [2, 4, 13, 14, 15];

/// A `grpc-status` header or trailer value: a decimal code (surrounding whitespace allowed).
pub fn grpc_status(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// How a request that went upstream ended, for the breaker: `Some(true)` failed, `Some(false)`
/// succeeded, `None` no verdict (the client cancelled before any answer, or nothing is known).
/// A 5xx is a failure (Envoy answers 503/504 itself for a reset, a refused connection or a
/// timeout); a reset after the headers is one too; 4xx is not; for gRPC, the status counts.
pub fn verdict(code: u64, grpc_status: Option<u64>, flags: u64) -> Option<bool> {
    if code >= 500 {
        return Some(true);
    }
    if flags & CLIENT_CANCELLED != 0 {
        return None;
    }
    if flags & UPSTREAM_FAILED != 0 {
        return Some(true);
    }
    if grpc_status.is_some_and(|s| GRPC_FAILURES.contains(&s)) {
        return Some(true);
    }
    (code >= 100).then_some(false)
}

fn get_cell(
    store: &mut impl Store,
    policy: &BreakerPolicy,
) -> Result<(BreakerCell, u32), StoreUnavailable> {
    let (cell, cas) = store.get(&policy.store_key, BreakerCell::decode)?;
    Ok((cell.unwrap_or_else(|| BreakerCell::closed(policy)), cas))
}

fn seconds_until(until_ns: u64, now_ns: u64) -> u64 {
    until_ns
        .saturating_sub(now_ns)
        .div_ceil(NANOS_PER_SEC)
        .max(1)
}

/// Decides whether a request may go on. A closed breaker costs one read and no write.
pub fn admit(store: &mut impl Store, policy: &BreakerPolicy, now_ns: u64) -> Admitted {
    let untracked = Admitted {
        admission: Admission::Untracked,
        opened: false,
    };
    for _ in 0..MAX_ATTEMPTS {
        let Ok((mut cell, cas)) = get_cell(store, policy) else {
            return untracked;
        };
        let mut opened = false;
        if cell.phase == Phase::Closed {
            return Admitted {
                admission: Admission::Pass {
                    generation: cell.generation,
                },
                opened,
            };
        }
        if cell.phase == Phase::Open {
            if now_ns < cell.until_ns {
                return Admitted {
                    admission: Admission::Refuse {
                        retry_after_s: seconds_until(cell.until_ns, now_ns),
                        cause: cell.cause,
                        half_open: false,
                    },
                    opened,
                };
            }
            cell.change_phase(Phase::HalfOpen);
            cell.probes_admitted = 0;
            cell.probes_succeeded = 0;
            cell.until_ns = now_ns.saturating_add(policy.open_ns);
        }
        let admission = if now_ns >= cell.until_ns {
            // The round's verdicts are overdue: a failure.
            cell.reopen(policy, now_ns, Cause::ProbeTimedOut);
            opened = true;
            Admission::Refuse {
                retry_after_s: seconds_until(cell.until_ns, now_ns),
                cause: cell.cause,
                half_open: false,
            }
        } else if cell.probes_admitted < policy.half_open_requests {
            cell.probes_admitted = cell.probes_admitted.saturating_add(1);
            Admission::Probe {
                generation: cell.generation,
            }
        } else {
            return Admitted {
                admission: Admission::Refuse {
                    retry_after_s: seconds_until(cell.until_ns, now_ns),
                    cause: cell.cause,
                    half_open: true,
                },
                opened,
            };
        };
        match store.set(&policy.store_key, &cell.encode(), cas) {
            Ok(()) => return Admitted { admission, opened },
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return untracked,
        }
    }
    untracked
}

/// Records how a request that went on ended: `failed`, or not. A verdict of another phase than
/// its request's is dropped.
pub fn record(
    store: &mut impl Store,
    policy: &BreakerPolicy,
    ticket: Ticket,
    failed: bool,
    now_ns: u64,
) -> Transition {
    for _ in 0..MAX_ATTEMPTS {
        let Ok((mut cell, cas)) = get_cell(store, policy) else {
            return Transition::None;
        };
        if cell.generation != ticket.generation {
            return Transition::None;
        }
        let transition = match (cell.phase, ticket.probe) {
            (Phase::HalfOpen, true) if failed => {
                cell.reopen(policy, now_ns, Cause::ProbeFailed);
                Transition::Opened(Cause::ProbeFailed)
            }
            (Phase::HalfOpen, true) => {
                cell.probes_succeeded = cell.probes_succeeded.saturating_add(1);
                if cell.probes_succeeded >= policy.half_open_requests {
                    cell.close(policy);
                    Transition::Closed
                } else {
                    Transition::None
                }
            }
            (Phase::Closed, false) => {
                if !failed && cell.consecutive == 0 && policy.min_requests == 0 {
                    // Nothing to count: no write.
                    return Transition::None;
                }
                match cell.record_closed(policy, failed, now_ns) {
                    Some(cause) => {
                        cell.open(policy.open_ns, now_ns, cause);
                        Transition::Opened(cause)
                    }
                    None => Transition::None,
                }
            }
            _ => return Transition::None,
        };
        match store.set(&policy.store_key, &cell.encode(), cas) {
            Ok(()) => return transition,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Transition::None,
        }
    }
    Transition::None
}

/// Gives back a probe that never went upstream (its request was refused afterwards, e.g. over
/// budget): it brings no verdict, and another request may probe instead.
pub fn return_probe(store: &mut impl Store, policy: &BreakerPolicy, ticket: Ticket) {
    if !ticket.probe {
        return;
    }
    for _ in 0..MAX_ATTEMPTS {
        let Ok((mut cell, cas)) = get_cell(store, policy) else {
            return;
        };
        if cell.phase != Phase::HalfOpen || cell.generation != ticket.generation {
            return;
        }
        cell.probes_admitted = cell.probes_admitted.saturating_sub(1);
        match store.set(&policy.store_key, &cell.encode(), cas) {
            Err(SetError::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Creates the sandbox's cell (closed) unless it exists; an existing one keeps its state across
/// configuration updates.
pub fn ensure_cell(store: &mut impl Store, policy: &BreakerPolicy) -> Result<(), SetError> {
    match store.get(&policy.store_key, BreakerCell::decode) {
        Ok((Some(_), _)) => Ok(()),
        Ok((None, cas)) => store.set(
            &policy.store_key,
            &BreakerCell::closed(policy).encode(),
            cas,
        ),
        Err(StoreUnavailable) => Err(SetError::Failed),
    }
}

struct Writer<'a> {
    out: &'a mut [u8; CELL_LEN],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(slot) = self.out.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let bytes = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::guard::FakeStore;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = NANOS_PER_SEC;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 5,
            failure_ratio_ppm: 500_000,
            min_requests: 20,
            window_ns: 10 * SEC,
            open_ns: 30 * SEC,
            max_open_ns: 300 * SEC,
            half_open_requests: 3,
            store_key: "circuit/x".into(),
        }
    }

    /// Admits and records `n` requests at `now`, each failing or not.
    fn run(
        store: &mut FakeStore,
        p: &BreakerPolicy,
        n: u32,
        failed: bool,
        now: u64,
    ) -> Vec<Transition> {
        (0..n)
            .map(|_| match admit(store, p, now).admission.ticket() {
                Some(ticket) => record(store, p, ticket, failed, now),
                None => Transition::None,
            })
            .collect()
    }

    fn phase(store: &mut FakeStore, p: &BreakerPolicy) -> Phase {
        get_cell(store, p).unwrap().0.phase
    }

    #[test]
    fn trips_on_consecutive_failures_and_a_success_resets_the_count() {
        let p = policy();
        let mut store = FakeStore::default();
        run(&mut store, &p, 4, true, 0);
        run(&mut store, &p, 1, false, 0);
        run(&mut store, &p, 4, true, 0);
        assert_eq!(phase(&mut store, &p), Phase::Closed);
        assert_eq!(
            run(&mut store, &p, 1, true, 0),
            [Transition::Opened(Cause::Consecutive(5))]
        );
        match admit(&mut store, &p, SEC).admission {
            Admission::Refuse {
                retry_after_s,
                cause,
                ..
            } => {
                assert_eq!(retry_after_s, 29);
                assert_eq!(cause.text(), "after 5 consecutive failures");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trips_on_the_failure_ratio_over_the_window_only() {
        let p = BreakerPolicy {
            consecutive_failures: 0,
            ..policy()
        };
        let mut store = FakeStore::default();
        // 10 failures of 19: below min_requests; then these verdicts leave the window.
        for i in 0..19 {
            run(&mut store, &p, 1, i % 2 == 0, 0);
        }
        assert_eq!(phase(&mut store, &p), Phase::Closed);
        run(&mut store, &p, 10, false, 11 * SEC);
        // 9 failures of 19 in the window, then 10 of 20: 50% trips, on the 20th.
        let transitions = run(&mut store, &p, 10, true, 12 * SEC);
        assert_eq!(
            transitions.last(),
            Some(&Transition::Opened(Cause::Ratio {
                failures: 10,
                total: 20,
                window_s: 10
            }))
        );
        assert!(transitions[..9].iter().all(|t| *t == Transition::None));
    }

    #[test]
    fn half_open_admits_exactly_n_probes_then_closes() {
        let p = policy();
        let mut store = FakeStore::default();
        run(&mut store, &p, 5, true, 0);
        let after = 30 * SEC;
        let admissions: Vec<Admission> = (0..5)
            .map(|_| admit(&mut store, &p, after).admission)
            .collect();
        let probes: Vec<Ticket> = admissions.iter().filter_map(Admission::ticket).collect();
        assert_eq!(probes.len(), 3);
        assert!(probes.iter().all(|t| t.probe));
        assert!(matches!(admissions[3], Admission::Refuse { .. }));
        assert_eq!(
            record(&mut store, &p, probes[0], false, after),
            Transition::None
        );
        assert_eq!(
            record(&mut store, &p, probes[1], false, after),
            Transition::None
        );
        assert_eq!(
            record(&mut store, &p, probes[2], false, after),
            Transition::Closed
        );
        assert!(matches!(
            admit(&mut store, &p, after).admission,
            Admission::Pass { .. }
        ));
        // Counts were reset: it takes 5 failures again.
        run(&mut store, &p, 4, true, after);
        assert_eq!(phase(&mut store, &p), Phase::Closed);
    }

    #[test]
    fn a_failed_probe_doubles_the_open_time_up_to_the_cap() {
        let p = BreakerPolicy {
            open_ns: 30 * SEC,
            max_open_ns: 100 * SEC,
            ..policy()
        };
        let mut store = FakeStore::default();
        run(&mut store, &p, 5, true, 0);
        let mut now = 0;
        for expected_open in [60, 100, 100] {
            now += get_cell(&mut store, &p).unwrap().0.open_ns;
            let probe = admit(&mut store, &p, now).admission.ticket().unwrap();
            assert_eq!(
                record(&mut store, &p, probe, true, now),
                Transition::Opened(Cause::ProbeFailed)
            );
            let cell = get_cell(&mut store, &p).unwrap().0;
            assert_eq!(cell.open_ns, expected_open * SEC);
            assert_eq!(cell.until_ns, now + expected_open * SEC);
        }
    }

    #[test]
    fn overdue_probes_count_as_a_failure() {
        let p = policy();
        let mut store = FakeStore::default();
        run(&mut store, &p, 5, true, 0);
        let start = 30 * SEC;
        for _ in 0..3 {
            admit(&mut store, &p, start).admission.ticket().unwrap();
        }
        // Within the round: refused, no change.
        assert!(!admit(&mut store, &p, start + 29 * SEC).opened);
        let late = admit(&mut store, &p, start + 30 * SEC);
        assert!(late.opened);
        assert_eq!(get_cell(&mut store, &p).unwrap().0.open_ns, 60 * SEC);
        assert!(matches!(
            late.admission,
            Admission::Refuse {
                cause: Cause::ProbeTimedOut,
                ..
            }
        ));
    }

    #[test]
    fn stale_verdicts_and_returned_probes() {
        let p = policy();
        let mut store = FakeStore::default();
        let old = admit(&mut store, &p, 0).admission.ticket().unwrap();
        run(&mut store, &p, 5, true, 0);
        // A request admitted before the trip ends after it: not counted.
        assert_eq!(record(&mut store, &p, old, false, SEC), Transition::None);
        let at = 30 * SEC;
        let probes: Vec<Ticket> = (0..3)
            .filter_map(|_| admit(&mut store, &p, at).admission.ticket())
            .collect();
        assert!(admit(&mut store, &p, at).admission.ticket().is_none());
        return_probe(&mut store, &p, probes[0]);
        assert!(admit(&mut store, &p, at).admission.ticket().is_some());
    }

    #[test]
    fn the_breaker_fails_open() {
        let p = policy();
        let mut store = FakeStore::default();
        store.fail = true;
        assert_eq!(admit(&mut store, &p, 0).admission, Admission::Untracked);
        assert_eq!(
            record(
                &mut store,
                &p,
                Ticket {
                    generation: 0,
                    probe: false
                },
                true,
                0
            ),
            Transition::None
        );
    }

    #[test]
    fn a_closed_breaker_reads_once_and_writes_only_what_counts() {
        let p = BreakerPolicy {
            min_requests: 0,
            ..policy()
        };
        let mut store = FakeStore::default();
        ensure_cell(&mut store, &p).unwrap();
        let before = get_cell(&mut store, &p).unwrap().1;
        run(&mut store, &p, 3, false, 0);
        assert_eq!(
            get_cell(&mut store, &p).unwrap().1,
            before,
            "successes wrote nothing"
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(200, None, 0), Some(false));
        assert_eq!(verdict(404, None, 0), Some(false));
        assert_eq!(verdict(429, None, 0), Some(false));
        assert_eq!(verdict(503, None, 0), Some(true));
        assert_eq!(verdict(504, None, 1 << 2), Some(true));
        // Reset after the headers: the status said 200.
        assert_eq!(verdict(200, None, 1 << 4), Some(true));
        // The client went away: no verdict, unless a 5xx had already been sent.
        assert_eq!(verdict(0, None, 1 << 14), None);
        assert_eq!(verdict(200, None, (1 << 28) | (1 << 4)), None);
        assert_eq!(verdict(503, None, 1 << 14), Some(true));
        assert_eq!(verdict(0, None, 0), None);
        for code in [2, 4, 13, 14, 15] {
            assert_eq!(verdict(200, Some(code), 0), Some(true), "{code}");
        }
        for code in [0, 1, 3, 5, 7, 8, 16] {
            assert_eq!(verdict(200, Some(code), 0), Some(false), "{code}");
        }
    }

    #[test]
    fn grpc_status_values() {
        assert_eq!(grpc_status(b"0"), Some(0));
        assert_eq!(grpc_status(b" 14 "), Some(14));
        assert_eq!(grpc_status(b""), None);
        assert_eq!(grpc_status(b"UNAVAILABLE"), None);
        assert_eq!(grpc_status(b"-1"), None);
        assert_eq!(grpc_status(&[0xff]), None);
    }

    #[test]
    fn cells_round_trip_and_foreign_bytes_are_refused() {
        let mut cell = BreakerCell::closed(&policy());
        cell.cause = Cause::Ratio {
            failures: 3,
            total: 4,
            window_s: 10,
        };
        cell.buckets[3].total = 9;
        assert_eq!(BreakerCell::decode(&cell.encode()), Some(cell));
        assert_eq!(BreakerCell::decode(&[0; CELL_LEN - 1]), None);
        let mut bad = cell.encode();
        bad[0] = 9;
        assert_eq!(BreakerCell::decode(&bad), None);
    }
}
