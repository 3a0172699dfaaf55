//! The `x-sandbox-router` debug header: what was decided and why, in one line.

use std::fmt::Write;

use super::router::{target_text, Decision};

pub fn describe(decision: &Decision<'_>, original_authority: &[u8]) -> String {
    let mut out = String::new();
    match decision {
        Decision::Route {
            key,
            service,
            target,
            ..
        } => {
            let _ = write!(
                out,
                "routed; key={}; service={service}; target={}",
                key.as_str(),
                target_text(target, original_authority)
            );
        }
        Decision::Baseline {
            reason,
            key,
            service,
            ..
        } => {
            out.push_str("baseline");
            if let Some(key) = key {
                let _ = write!(out, "; key={}", key.as_str());
            }
            if let Some(service) = service {
                let _ = write!(out, "; service={service}");
            }
            let _ = write!(out, "; reason={}", reason.as_str());
        }
    }
    out
}
