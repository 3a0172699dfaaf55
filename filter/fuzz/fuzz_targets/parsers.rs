//! The small parsers of configuration and wire values: RFC 3339 expiry times, source CIDRs
//! and Envoy's peer addresses. Raw bytes never panic; timestamps formatted from a known
//! instant (any offset, fraction, separator) parse back to it; a CIDR contains exactly the
//! addresses whose prefix matches.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::cidr::{peer_ip, Cidr};
use sandbox_router::core::time::parse_rfc3339;

/// 9999-12-31T23:59:59Z.
const MAX_SECONDS: u64 = 253_402_300_799;

#[derive(Arbitrary, Debug)]
struct Instant {
    seconds: u64,
    nanos: u32,
    fraction_digits: u8,
    /// Minutes east of UTC, within ±23:59.
    offset_minutes: i16,
    separator: u8,
    lower_z: bool,
}

#[derive(Arbitrary, Debug)]
struct Prefix {
    v6: bool,
    network: u128,
    prefix: u8,
    probe: u128,
    mapped_probe: bool,
}

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Time(&'a str),
    Cidr(&'a str),
    Peer(&'a [u8]),
    Instant(Instant),
    Prefix(Prefix),
}

/// (year, month, day) of a day count since 1970-01-01, by walking years and months: slow,
/// plain, and independent of the parser's closed formula.
fn civil(mut days: i64) -> (i64, u32, u32) {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut year = 1970;
    while days < 0 {
        year -= 1;
        days += if leap(year) { 366 } else { 365 };
    }
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    (year, month as u32 + 1, days as u32 + 1)
}

fn check_instant(i: &Instant) {
    let seconds = i.seconds % (MAX_SECONDS + 1);
    let offset = i64::from(i.offset_minutes) % (24 * 60);
    let local = seconds as i64 + offset * 60;
    let (year, month, day) = civil(local.div_euclid(86_400));
    if !(0..=9999).contains(&year) {
        return;
    }
    let of_day = local.rem_euclid(86_400);
    let digits = usize::from(i.fraction_digits % 10);
    let nanos = i.nanos % 1_000_000_000;
    let scale = 10u32.pow(9 - digits as u32);
    let kept = nanos / scale * scale;
    let fraction = if digits == 0 {
        String::new()
    } else {
        format!(".{:0width$}", nanos / scale, width = digits)
    };
    let separator = ['T', 't', ' '][usize::from(i.separator % 3)];
    let zone = match (offset, i.lower_z) {
        (0, false) => "Z".to_owned(),
        (0, true) => "z".to_owned(),
        (o, _) => format!(
            "{}{:02}:{:02}",
            if o < 0 { '-' } else { '+' },
            o.abs() / 60,
            o.abs() % 60
        ),
    };
    let text = format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}{fraction}{zone}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    // Nanoseconds since 1970 fit u64 until 2554: later instants are refused, not wrapped.
    let want = seconds
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(kept)));
    let got = parse_rfc3339(&text);
    assert_eq!(got, want, "{text}");
}

fn bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), true),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(u32::from(a)), true),
            None => (u128::from(a), false),
        },
    }
}

fn check_prefix(p: &Prefix) {
    let width: u32 = if p.v6 { 128 } else { 32 };
    let prefix = u32::from(p.prefix) % (width + 1);
    let keep = |x: u128| {
        if prefix == 0 {
            0
        } else {
            x >> (width - prefix)
        }
    };
    let value_mask = if p.v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    };
    let network = p.network & value_mask;
    let address = if p.v6 {
        IpAddr::V6(Ipv6Addr::from(network))
    } else {
        IpAddr::V4(Ipv4Addr::from(network as u32))
    };
    let text = format!("{address}/{prefix}");
    let parsed: Result<Cidr, _> = text.parse();
    let network_mask = value_mask.checked_shl(width - prefix).unwrap_or(0) & value_mask;
    let host_bits_set = network & !network_mask != 0;
    // IPv4-mapped IPv6 networks are IPv6 CIDRs as written; the parser may refuse or keep them.
    if p.v6 && Ipv6Addr::from(network).to_ipv4_mapped().is_some() {
        return;
    }
    match parsed {
        Err(e) => assert!(host_bits_set, "refused {text}: {e}"),
        Ok(cidr) => {
            assert!(!host_bits_set, "accepted host bits in {text}");
            assert!(
                cidr.contains(address),
                "{text} does not contain its own network"
            );
            let probe = p.probe & value_mask;
            let probe_ip = match (p.v6, p.mapped_probe) {
                (true, _) => IpAddr::V6(Ipv6Addr::from(probe)),
                (false, false) => IpAddr::V4(Ipv4Addr::from(probe as u32)),
                (false, true) => IpAddr::V6(Ipv4Addr::from(probe as u32).to_ipv6_mapped()),
            };
            let (probe_bits, probe_v4) = bits(probe_ip);
            let expected = probe_v4 == !p.v6 && keep(probe_bits) == keep(network);
            assert_eq!(
                cidr.contains(probe_ip),
                expected,
                "{text} contains {probe_ip}?"
            );
        }
    }
}

fuzz_target!(|input: Input<'_>| {
    match input {
        Input::Time(text) => {
            if let Some(ns) = parse_rfc3339(text) {
                assert!(text.len() >= 20 && text.is_char_boundary(19), "{text:?}");
                assert!(u128::from(ns) <= u128::from(MAX_SECONDS + 86_400) * 1_000_000_000);
            }
        }
        Input::Cidr(text) => {
            if let Ok(cidr) = text.parse::<Cidr>() {
                let _ = cidr.contains(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let _ = cidr.contains(IpAddr::V6(Ipv6Addr::LOCALHOST));
            }
        }
        Input::Peer(bytes) => {
            let _ = peer_ip(bytes);
        }
        Input::Instant(i) => check_instant(&i),
        Input::Prefix(p) => check_prefix(&p),
    }
});
