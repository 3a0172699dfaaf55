//! Token-bucket and in-flight arithmetic on one sandbox's budget cell. Integer only: tokens in
//! micro-tokens, time in nanoseconds, products in u128, so no input can overflow, and time
//! going backwards or jumping forward never hands out more than `burst` at once.

use super::slots::{CellBytes, Slots};

pub const MICRO: u64 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A rate limit, compiled from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Refill rate in micro-tokens per second (at least 1).
    pub micro_per_second: u64,
    /// Whole tokens the bucket holds when full (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `None` unless `requests_per_second` is finite, positive, at most 1e6, and `burst` >= 1.
    pub fn new(requests_per_second: f64, burst: u32) -> Option<Self> {
        let valid = requests_per_second.is_finite()
            && requests_per_second > 0.0
            && requests_per_second <= 1e6
            && burst >= 1;
        if !valid {
            return None;
        }
        // In range by the checks above: at most 1e12.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micro_per_second = (requests_per_second * 1e6).round() as u64;
        (micro_per_second >= 1).then_some(RateLimit {
            micro_per_second,
            burst,
        })
    }

    /// The refill rate as a decimal, for messages (`5`, `0.5`, `0.000001`), without float
    /// formatting (which would add kilobytes to the Wasm module).
    pub fn rate_text(&self) -> String {
        let whole = self.micro_per_second.checked_div(MICRO).unwrap_or(0);
        let fraction = self.micro_per_second.checked_rem(MICRO).unwrap_or(0);
        if fraction == 0 {
            return whole.to_string();
        }
        let digits = format!("{fraction:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }

    fn capacity(&self) -> u64 {
        u64::from(self.burst).saturating_mul(MICRO)
    }
}

/// The shared state of one sandbox at one proxy: its token bucket and in-flight count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCell {
    pub micro_tokens: u64,
    pub refilled_at_ns: u64,
    /// In-flight slots, by the VM that holds them.
    pub slots: Slots,
}

impl BudgetCell {
    /// A fresh cell: a full bucket, nothing in flight.
    pub fn full(limit: Option<&RateLimit>, now_ns: u64) -> Self {
        BudgetCell {
            micro_tokens: limit.map_or(0, RateLimit::capacity),
            refilled_at_ns: now_ns,
            slots: Slots::default(),
        }
    }

    /// Slots taken by every VM.
    pub fn in_flight(&self) -> u32 {
        self.slots.total()
    }

    /// `micro_tokens: u64`, `refilled_at_ns: u64`, then the slots ([`Slots::encode_into`]).
    pub fn encode(&self) -> CellBytes {
        let mut out = CellBytes::new();
        out.push(&self.micro_tokens.to_le_bytes());
        out.push(&self.refilled_at_ns.to_le_bytes());
        self.slots.encode_into(&mut out);
        out
    }

    /// `None` for anything that is not a cell this filter wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(BudgetCell {
            micro_tokens: u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?),
            refilled_at_ns: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
            slots: Slots::decode(bytes.get(16..)?)?,
        })
    }

    /// Adds the tokens earned since the last refill, never beyond capacity. A clock that went
    /// backwards re-anchors without adding anything.
    pub fn refill(&mut self, limit: &RateLimit, now_ns: u64) {
        let capacity = limit.capacity();
        if now_ns > self.refilled_at_ns {
            let elapsed = u128::from(now_ns.saturating_sub(self.refilled_at_ns));
            let earned = elapsed
                .saturating_mul(u128::from(limit.micro_per_second))
                .checked_div(NANOS_PER_SEC)
                .unwrap_or(0);
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            self.micro_tokens = self.micro_tokens.saturating_add(earned);
        }
        self.refilled_at_ns = now_ns;
        self.micro_tokens = self.micro_tokens.min(capacity);
    }

    /// Takes one token if there is one.
    pub fn take_token(&mut self) -> bool {
        match self.micro_tokens.checked_sub(MICRO) {
            Some(left) => {
                self.micro_tokens = left;
                true
            }
            None => false,
        }
    }

    pub fn remaining_tokens(&self) -> u64 {
        self.micro_tokens.checked_div(MICRO).unwrap_or(0)
    }

    /// Whole seconds until the bucket is full again (0 when full).
    pub fn seconds_until_full(&self, limit: &RateLimit) -> u64 {
        seconds_to_earn(limit.capacity().saturating_sub(self.micro_tokens), limit)
    }

    /// Whole seconds until one token is available (at least 1 when none is).
    pub fn seconds_until_token(&self, limit: &RateLimit) -> u64 {
        seconds_to_earn(MICRO.saturating_sub(self.micro_tokens), limit)
    }
}

fn seconds_to_earn(micro_tokens: u64, limit: &RateLimit) -> u64 {
    if micro_tokens == 0 {
        return 0;
    }
    let rate = u128::from(limit.micro_per_second.max(1));
    let micro = u128::from(micro_tokens);
    // ceil(micro / rate) without overflow: both fit in u64.
    let seconds = micro.div_ceil(rate);
    u64::try_from(seconds).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000_000;

    fn limit(rps: f64, burst: u32) -> RateLimit {
        RateLimit::new(rps, burst).unwrap()
    }

    #[test]
    fn rejects_nonsense_limits() {
        for rps in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e7, 1e-9] {
            assert!(RateLimit::new(rps, 1).is_none(), "{rps}");
        }
        assert!(RateLimit::new(1.0, 0).is_none());
        assert_eq!(limit(0.5, 1).micro_per_second, 500_000);
    }

    #[test]
    fn rate_text() {
        assert_eq!(limit(5.0, 1).rate_text(), "5");
        assert_eq!(limit(0.5, 1).rate_text(), "0.5");
        assert_eq!(limit(12.25, 1).rate_text(), "12.25");
        assert_eq!(limit(0.000001, 1).rate_text(), "0.000001");
    }

    #[test]
    fn starts_full_and_drains() {
        let l = limit(5.0, 10);
        let mut cell = BudgetCell::full(Some(&l), 0);
        for _ in 0..10 {
            cell.refill(&l, 0);
            assert!(cell.take_token());
        }
        assert!(!cell.take_token());
        assert_eq!(cell.seconds_until_token(&l), 1);
        assert_eq!(cell.seconds_until_full(&l), 2);
    }

    #[test]
    fn refills_at_the_rate_including_fractions() {
        let l = limit(0.5, 1);
        let mut cell = BudgetCell::full(Some(&l), 0);
        assert!(cell.take_token());
        cell.refill(&l, SEC);
        assert!(!cell.take_token());
        assert_eq!(cell.seconds_until_token(&l), 1);
        cell.refill(&l, 2 * SEC);
        assert!(cell.take_token());
    }

    #[test]
    fn never_exceeds_burst_after_a_jump_forward() {
        let l = limit(1e6, 3);
        let mut cell = BudgetCell::full(Some(&l), 0);
        cell.micro_tokens = 0;
        cell.refill(&l, u64::MAX);
        assert_eq!(cell.remaining_tokens(), 3);
    }

    #[test]
    fn time_going_backwards_adds_nothing_and_re_anchors() {
        let l = limit(1.0, 5);
        let mut cell = BudgetCell::full(Some(&l), 100 * SEC);
        cell.micro_tokens = 0;
        cell.refill(&l, 10 * SEC);
        assert_eq!(cell.micro_tokens, 0);
        assert_eq!(cell.refilled_at_ns, 10 * SEC);
        cell.refill(&l, 12 * SEC);
        assert_eq!(cell.remaining_tokens(), 2);
    }

    #[test]
    fn a_lowered_burst_clamps_stored_tokens() {
        let mut cell = BudgetCell::full(Some(&limit(1.0, 100)), 0);
        let smaller = limit(1.0, 2);
        cell.refill(&smaller, 0);
        assert_eq!(cell.remaining_tokens(), 2);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let l = limit(1e6, u32::MAX);
        let mut cell = BudgetCell {
            micro_tokens: u64::MAX,
            refilled_at_ns: 0,
            slots: Slots::default(),
        };
        cell.refill(&l, u64::MAX);
        assert_eq!(cell.micro_tokens, u64::from(u32::MAX) * MICRO);
        let _ = cell.seconds_until_full(&l);
        let tiny = limit(1e-6, u32::MAX);
        let empty = BudgetCell::full(None, 0);
        assert_eq!(empty.seconds_until_full(&tiny), u64::from(u32::MAX) * MICRO);
    }

    #[test]
    fn encodes_and_decodes() {
        let mut cell = BudgetCell {
            micro_tokens: 7,
            refilled_at_ns: 9,
            slots: Slots::default(),
        };
        cell.slots.take(42);
        assert_eq!(BudgetCell::decode(cell.encode().as_bytes()), Some(cell));
        assert_eq!(BudgetCell::decode(&[0; 19]), None);
        assert_eq!(BudgetCell::decode(b""), None);
        // The cell of an earlier version (20 bytes) with nothing in flight reads as empty.
        assert_eq!(BudgetCell::decode(&[0; 20]).map(|c| c.in_flight()), Some(0));
    }
}
