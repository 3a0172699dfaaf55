//! The prelude of every test file of `filter/tests`: `mod common;` then
//! `use common::{test, ...};` (`test` by name: a glob import cannot shadow the built-in
//! attribute). Crate-level lint allows cannot come from a module, so each file still opens with
//! its own `#![allow(...)]` of the no-panic lints.

// Not every test file uses every helper.
#![allow(dead_code)]

use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::header_map::serialize;
use sandbox_router::core::router::Router;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use core::prelude::v1::test;
/// `#[test]`: wasm-bindgen-test's on wasm32-unknown-unknown, where `scripts/test-wasm-core` runs
/// these files as 32-bit Wasm under Node.js; the standard one everywhere else.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub use wasm_bindgen_test::wasm_bindgen_test as test;

/// Whether this is the 32-bit Wasm run (no file system, no processes).
pub const IN_WASM: bool = cfg!(all(target_arch = "wasm32", target_os = "unknown"));

/// Compiles a configuration the test knows to be valid, with no host facts.
pub fn router(config: &str) -> Router {
    compile(config.as_bytes(), &HostFacts::default()).unwrap()
}

/// Header pairs as the core takes them, from text.
pub fn pairs<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect()
}

/// The headers as the host hands them to the filter: one serialized header map.
pub fn header_map(headers: &[(&str, &str)]) -> Vec<u8> {
    serialize(&pairs(headers))
}
