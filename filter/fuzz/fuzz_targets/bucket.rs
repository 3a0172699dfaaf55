//! Token-bucket math (`core::bucket`): any limit, any stored cell (shared data may hold
//! anything), any clock (backwards, jumps, u64 extremes). Never a panic or an overflow, never
//! more than `burst` tokens at once, never more tokens taken than the time elapsed earned,
//! and the advertised waits are exact.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::bucket::{BudgetCell, RateLimit, MICRO};

const NANOS: u128 = 1_000_000_000;

#[derive(Arbitrary, Debug)]
enum Rate {
    /// A requests-per-second value built from its bits.
    Bits(u64),
    /// Rates near the edges of what is accepted.
    Edge(u8),
    Ratio(u32, u32),
}

impl Rate {
    fn value(&self) -> f64 {
        match self {
            Rate::Bits(b) => f64::from_bits(*b),
            Rate::Edge(i) => [
                0.0,
                -0.0,
                1e-6,
                4.9e-7,
                5e-7,
                5.1e-7,
                1e-7,
                1.0,
                1e6,
                1e6 + 1e-9,
                1e6 + 1.0,
                f64::MIN_POSITIVE,
                f64::EPSILON,
                f64::MAX,
                f64::INFINITY,
                f64::NAN,
                -1.0,
                0.5,
                999_999.999_999_5,
                3.0,
            ][usize::from(*i) % 20],
            Rate::Ratio(a, b) => f64::from(*a) / f64::from((*b).max(1)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Moves the clock by this many nanoseconds (may wrap: clocks jump both ways).
    Advance(u32),
    AdvanceSeconds(u16),
    Back(u32),
    Jump(u64),
    Take,
    TakeMany(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    rate: Rate,
    burst: u32,
    /// The cell as read from shared data: 20 bytes, or garbage.
    stored: Vec<u8>,
    start_ns: u64,
    steps: Vec<Step>,
}

fn capacity(limit: &RateLimit) -> u128 {
    u128::from(limit.burst) * u128::from(MICRO)
}

fuzz_target!(|input: Input| {
    let rps = input.rate.value();
    let Some(limit) = RateLimit::new(rps, input.burst) else {
        let valid = rps.is_finite() && rps > 0.0 && rps <= 1e6 && input.burst >= 1;
        // Only a rate that rounds to zero micro-tokens may be refused when valid.
        assert!(
            !valid || (rps * 1e6).round() < 1.0,
            "refused {rps} / {}",
            input.burst
        );
        return;
    };
    assert!(limit.micro_per_second >= 1 && limit.micro_per_second <= 1_000_000_000_000);
    assert!(limit.burst >= 1 && limit.burst == input.burst);
    assert!(rps.is_finite() && rps > 0.0 && rps <= 1e6);
    // The rate as text is exact: whole part, then at most six fraction digits, no trailing 0.
    let text = limit.rate_text();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    assert!(fraction.len() <= 6 && !fraction.ends_with('0'), "{text}");
    assert!(
        whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit()),
        "{text}"
    );
    let micro = whole
        .parse::<u64>()
        .ok()
        .map(|w| w * MICRO)
        .zip(format!("{fraction:0<6}").parse::<u64>().ok())
        .map(|(w, f)| w + f);
    assert_eq!(micro, Some(limit.micro_per_second), "{text}");
    assert!((limit.micro_per_second as f64 / 1e6 - rps).abs() <= 1e-6);

    // Shared data is untrusted: decode only an exact encoding (16 bytes of bucket, a holder
    // count, 12 bytes per holder), and round-trip it.
    let decoded = BudgetCell::decode(&input.stored);
    let holders = input
        .stored
        .get(16..20)
        .map(|n| u32::from_le_bytes(n.try_into().unwrap()) as usize);
    let exact = holders.is_some_and(|n| n <= 64 && input.stored.len() == 20 + 12 * n);
    assert_eq!(decoded.is_some(), exact);
    if let Some(cell) = decoded {
        assert_eq!(cell.encode().as_bytes(), input.stored.as_slice());
    }
    let fresh = BudgetCell::full(Some(&limit), input.start_ns);
    assert_eq!(u128::from(fresh.micro_tokens), capacity(&limit));
    assert_eq!(BudgetCell::full(None, input.start_ns).micro_tokens, 0);
    let mut cell = decoded.unwrap_or(fresh);
    let in_flight = cell.slots;

    let mut now = input.start_ns;
    // Tokens available = what the cell held (at most capacity after the first refill) plus
    // what every forward step of the clock earned. Taken tokens can never exceed that.
    cell.refill(&limit, now);
    let mut budget: u128 = u128::from(cell.micro_tokens);
    let mut taken: u128 = 0;
    for step in input.steps.iter().take(64) {
        let before = cell;
        match step {
            Step::Advance(n) => now = now.wrapping_add(u64::from(*n)),
            Step::AdvanceSeconds(s) => now = now.wrapping_add(u64::from(*s) * 1_000_000_000),
            Step::Back(n) => now = now.wrapping_sub(u64::from(*n)),
            Step::Jump(t) => now = *t,
            Step::Take | Step::TakeMany(_) => {}
        }
        cell.refill(&limit, now);
        assert_eq!(cell.refilled_at_ns, now);
        assert_eq!(cell.slots, in_flight, "refill touched the in-flight slots");
        assert!(
            u128::from(cell.micro_tokens) <= capacity(&limit),
            "over burst"
        );
        if now > before.refilled_at_ns {
            let elapsed = u128::from(now - before.refilled_at_ns);
            let earned = elapsed * u128::from(limit.micro_per_second) / NANOS;
            assert!(u128::from(cell.micro_tokens) <= u128::from(before.micro_tokens) + earned);
            assert_eq!(
                u128::from(cell.micro_tokens),
                (u128::from(before.micro_tokens) + earned).min(capacity(&limit))
            );
            budget += earned;
        } else {
            // The clock stood still or went back: nothing earned.
            assert_eq!(
                cell.micro_tokens,
                before.micro_tokens.min(capacity(&limit) as u64)
            );
        }

        let takes = match step {
            Step::Take => 1,
            Step::TakeMany(n) => usize::from(*n),
            _ => 0,
        };
        for _ in 0..takes {
            let had = cell.micro_tokens;
            let ok = cell.take_token();
            assert_eq!(ok, had >= MICRO);
            if ok {
                assert_eq!(cell.micro_tokens, had - MICRO);
                taken += u128::from(MICRO);
            } else {
                assert_eq!(cell.micro_tokens, had);
            }
        }
        assert!(taken <= budget, "took {taken} of {budget} micro-tokens");
        assert_eq!(cell.remaining_tokens(), cell.micro_tokens / MICRO);

        // The advertised waits: exactly enough whole seconds, and no fewer.
        let rate = u128::from(limit.micro_per_second);
        for (wait, target) in [
            (cell.seconds_until_token(&limit), u128::from(MICRO)),
            (cell.seconds_until_full(&limit), capacity(&limit)),
        ] {
            let have = u128::from(cell.micro_tokens);
            if have >= target {
                assert_eq!(wait, 0);
                continue;
            }
            let need = target - have;
            let wait = u128::from(wait);
            assert!(
                wait * rate >= need,
                "wait {wait}s too short for {need} at {rate}/s"
            );
            assert!((wait - 1) * rate < need, "wait {wait}s longer than needed");
            // And refilling after that wait really gets there (when the clock can go there).
            if let Some(then) = u64::try_from(wait * NANOS)
                .ok()
                .and_then(|d| cell.refilled_at_ns.checked_add(d))
            {
                let mut later = cell;
                later.refill(&limit, then);
                assert!(u128::from(later.micro_tokens) >= target.min(capacity(&limit)));
            }
        }
    }
});
