//! sandbox-router: a proxy-wasm HTTP filter that sends requests carrying a sandbox routing key
//! to the sandboxed version of their destination, and everything else to the baseline.
//!
//! `core` decides; `host` (only in the Wasm build) reads the request and applies the decision.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod host;
