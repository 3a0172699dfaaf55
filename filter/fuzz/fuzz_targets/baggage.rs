//! Baggage, tracestate and whole-value key parsing against a plain restatement of the spec.
//!
//! Input: byte 0 picks the member name (< 0x80: one of NAMES; else the next `b & 0x3f` bytes),
//! the rest is the header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router::core::baggage::{find_baggage_member, find_tracestate_member, whole_value};
use sandbox_router::core::key::RoutingKey;
use sandbox_router_fuzz::{
    contains, lossy_percent_decode, oracle_baggage, oracle_tracestate, oracle_whole_value, Expect,
};

const NAMES: &[&[u8]] = &[b"sandbox", b"s", b"sb", b"x-sandbox", b"a", b"%41", b""];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (name, header) = if selector < 0x80 {
        (NAMES[usize::from(selector) % NAMES.len()], rest)
    } else {
        rest.split_at(usize::from(selector & 0x3f).min(rest.len()))
    };

    let baggage = Expect::of(&find_baggage_member(header, name));
    assert_eq!(
        baggage,
        oracle_baggage(header, name),
        "baggage {header:?} / {name:?}"
    );
    if let Expect::Key(key) = &baggage {
        // Whatever is found was in the header (after decoding).
        assert!(contains(&lossy_percent_decode(header), key));
    }

    let tracestate = Expect::of(&find_tracestate_member(header, name));
    assert_eq!(
        tracestate,
        oracle_tracestate(header, name),
        "tracestate {header:?} / {name:?}"
    );
    if let Expect::Key(key) = &tracestate {
        assert!(contains(header, key));
    }

    for percent in [false, true] {
        let whole = Expect::of(&whole_value(header, percent));
        assert_eq!(
            whole,
            oracle_whole_value(header, percent),
            "whole {header:?} / {percent}"
        );
        assert_ne!(whole, Expect::Absent, "whole_value never says Absent");
    }
    // Nothing to decode (no escape, no `+`, only printable ASCII, SP and HTAB): both agree.
    let plain = header
        .iter()
        .all(|&b| (b.is_ascii_graphic() && b != b'%' && b != b'+') || b == b' ' || b == b'\t');
    if plain {
        assert_eq!(whole_value(header, false), whole_value(header, true));
    }

    // Members named otherwise around the header change nothing (unless the header itself
    // has an unterminated property that would swallow nothing: ',' always ends a member).
    let other: &[u8] = if name == b"zz" { b"yy" } else { b"zz" };
    let mut wrapped = other.to_vec();
    wrapped.extend_from_slice(b"=1;p=sandbox=x,");
    wrapped.extend_from_slice(header);
    wrapped.extend_from_slice(b",");
    wrapped.extend_from_slice(other);
    wrapped.extend_from_slice(b"=2");
    assert_eq!(Expect::of(&find_baggage_member(&wrapped, name)), baggage);
    assert_eq!(
        Expect::of(&find_tracestate_member(&wrapped, name)),
        tracestate
    );

    // A found key survives being percent-encoded byte by byte.
    if let Expect::Key(key) = &baggage {
        let encoded: String = key.iter().map(|b| format!("%{b:02X}")).collect();
        let decoded = RoutingKey::from_encoded(encoded.as_bytes());
        assert_eq!(decoded.map(|k| k.as_bytes().to_vec()).as_ref(), Some(key));
    }
});
