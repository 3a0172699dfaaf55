//! The pure core: everything the filter decides, with no knowledge of proxy-wasm, so that it
//! is tested natively (and as 32-bit Wasm).

pub mod audit;
pub mod baggage;
pub mod breaker;
pub mod bucket;
pub mod cidr;
pub mod config;
pub mod decode;
pub mod describe;
pub mod guard;
pub mod header_map;
pub mod key;
pub mod names;
pub mod policy;
pub mod request;
pub mod router;
pub mod slots;
pub mod strip;
pub mod time;
