//! A deliberate fault, only in test builds (`--features fault-injection`, never in a release
//! build): a request carrying `x-sandbox-router-fault: trap` makes the VM trap, so tests can show
//! what each Wasm failure policy does to traffic afterwards.

use crate::core::header_map::HeaderPairs;

use super::abi::{self, MapType};

const FAULT_HEADER: &[u8] = b"x-sandbox-router-fault";

pub fn trap_if_requested() {
    let Ok(headers) = abi::header_pairs(MapType::RequestHeaders) else {
        return;
    };
    let requested = HeaderPairs::new(headers.bytes())
        .any(|(name, value)| name == FAULT_HEADER && value == b"trap");
    if requested {
        core::arch::wasm32::unreachable();
    }
}
