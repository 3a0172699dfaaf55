//! sandbox-router: a proxy-wasm HTTP filter that sends requests carrying a sandbox routing key
//! to the sandboxed version of their destination, and everything else to the baseline.
//!
//! `core` decides; `host` (only in the wasm32-wasip1 build) reads the request and applies the decision.

pub mod core;

// The proxy-wasm host exists only in the wasm32-wasip1 build; other targets get the core alone.
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod host;
