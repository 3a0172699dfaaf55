//! The thin host shell: proxy-wasm exports that read the request, ask the core, and apply its
//! decision. Only the callbacks the filter needs are exported, so the host skips the others
//! (each VM call is a per-request cost): no body or log callback; response trailers only for
//! the circuit breaker's gRPC verdicts.

mod abi;
mod budget;
mod circuit;
mod contexts;
#[cfg(feature = "fault-injection")]
mod fault;
mod logger;
mod metrics;
mod stream;

use contexts::with_filter;

/// Action values of the ABI.
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate(size)
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, configuration_size: usize) -> bool {
    with_filter(false, |filter| {
        filter.configure(root_context_id, configuration_size)
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    with_filter((), |filter| {
        filter.create_context(context_id, parent_context_id)
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _headers: usize,
    _end_of_stream: bool,
) -> u32 {
    // The benchmark's "any Wasm filter" arm: the same module and callbacks, doing nothing.
    if cfg!(feature = "bench-noop") {
        return CONTINUE;
    }
    #[cfg(feature = "fault-injection")]
    let _faults = fault::inject_requested();
    if with_filter(false, |filter| filter.on_request_headers(context_id)) {
        PAUSE
    } else {
        CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _headers: usize,
    _end_of_stream: bool,
) -> u32 {
    with_filter((), |filter| filter.on_response_headers(context_id));
    CONTINUE
}

/// Exported for one reason: a tracked gRPC call's status comes in the trailers, which Envoy
/// no longer shows when the stream ends. Only responses with trailers (gRPC) pay for the call.
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _trailers: usize) -> u32 {
    with_filter((), |filter| filter.on_response_trailers(context_id));
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_filter((), |filter| filter.delete_context(context_id));
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_context_id: u32) {
    let _ = root_context_id;
    with_filter((), |filter| filter.on_tick());
}
