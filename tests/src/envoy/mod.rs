//! Envoy: configuration description, process lifecycle, admin API.

pub mod admin;
pub mod config;
pub mod process;
pub mod prometheus;

pub use config::{Bootstrap, Cluster, Listener, Route, VirtualHost};
pub use process::{validate, Envoy, EnvoyBuilder, FailedStart, Validation, FILTER_CONFIG_ERROR};
pub use prometheus::{Sample, Scrape};
