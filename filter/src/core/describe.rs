//! The `x-sandbox-router` debug header: what was decided and why, in one line.

use std::fmt::Write;

use super::router::{rewritten_authority, Decision, Target};

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
                "routed; key={}; service={service}; target=",
                key.as_str()
            );
            match target {
                Target::Authority { host, port } => {
                    let authority = rewritten_authority(host, *port, original_authority);
                    let _ = write!(out, "authority:{authority}");
                }
                Target::Cluster(cluster) => {
                    let _ = write!(out, "cluster:{cluster}");
                }
            }
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
