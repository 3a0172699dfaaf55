//! Deliberate faults, only in test builds (`--features fault-injection`, never in a release
//! build), chosen per request by the header `x-sandbox-router-fault`:
//! - `trap`: the VM traps, so tests can show what each Wasm failure policy does to traffic;
//! - `store-unavailable`: every shared-data access of the budget store fails while this
//!   request's headers are handled, so tests can show the guard failing closed
//!   (`budget_unavailable`).

use std::cell::Cell;

use crate::core::header_map::HeaderPairs;

use super::abi::{self, MapType};

const FAULT_HEADER: &[u8] = b"x-sandbox-router-fault";
const TRAP: &[u8] = b"trap";
const STORE_UNAVAILABLE: &[u8] = b"store-unavailable";

thread_local! {
    /// Set while the request headers of a `store-unavailable` request are handled.
    static STORE_FAILS: Cell<bool> = const { Cell::new(false) };
}

/// The faults of the current request, in force until dropped (the end of its request-headers
/// callback), so the release of another request's in-flight slot later never fails.
pub struct RequestFaults(());

impl Drop for RequestFaults {
    fn drop(&mut self) {
        STORE_FAILS.with(|fails| fails.set(false));
    }
}

/// Reads the fault header of the current request: traps at once for `trap`, makes the budget
/// store fail for `store-unavailable`.
pub fn inject_requested() -> RequestFaults {
    let faults = RequestFaults(());
    let Ok(headers) = abi::header_pairs(MapType::RequestHeaders) else {
        return faults;
    };
    for (name, value) in HeaderPairs::new(headers.bytes()) {
        if name != FAULT_HEADER {
            continue;
        }
        if value == TRAP {
            core::arch::wasm32::unreachable();
        }
        if value == STORE_UNAVAILABLE {
            STORE_FAILS.with(|fails| fails.set(true));
        }
    }
    faults
}

/// Whether the budget store must fail now.
pub fn store_unavailable() -> bool {
    STORE_FAILS.with(Cell::get)
}
