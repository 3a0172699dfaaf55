//! The pure core: everything the filter decides, with no knowledge of proxy-wasm, so that it
//! is tested natively (and as 32-bit Wasm).

pub mod baggage;
pub mod bucket;
pub mod config;
pub mod describe;
pub mod fast_hash;
pub mod guard;
pub mod header_map;
pub mod key;
pub mod names;
pub mod request;
pub mod router;

#[cfg(test)]
mod routing_tests;
