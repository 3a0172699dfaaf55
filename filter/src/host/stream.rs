//! One request: read its headers once, decide, apply.

use crate::core::describe::describe;
use crate::core::header_map::HeaderPairs;
use crate::core::request::scan;
use crate::core::router::{rewritten_authority, Decision, Router, Target};

use super::abi::{self, MapType};

const DEBUG_HEADER: &[u8] = b"x-sandbox-router";

/// What a stream still has to do on its response.
pub struct StreamState {
    debug: Option<String>,
}

/// Routes the current request; returns state only when the response needs work.
pub fn route_request(router: &Router) -> Option<StreamState> {
    let headers = abi::header_pairs(MapType::RequestHeaders).ok()?;
    let request = scan(&router.settings, HeaderPairs::new(headers.bytes()));
    let decision = router.decide(&request);
    let cluster_header = &*router.settings.cluster_header;
    let authority = request.authority.unwrap_or_default();

    let rerouted = match decision {
        Decision::Route { target, .. } => {
            match target {
                Target::Authority { host, port } => {
                    let new_authority = rewritten_authority(host, *port, authority);
                    let _ = abi::replace_header(
                        MapType::RequestHeaders,
                        b":authority",
                        new_authority.as_bytes(),
                    );
                    if request.has_cluster_header {
                        let _ = abi::remove_header(MapType::RequestHeaders, cluster_header);
                    }
                }
                Target::Cluster(cluster) => {
                    let _ = abi::replace_header(
                        MapType::RequestHeaders,
                        cluster_header,
                        cluster.as_bytes(),
                    );
                }
            }
            true
        }
        // Only this filter may pick a cluster: a client-supplied cluster header is dropped.
        Decision::Baseline { .. } if request.has_cluster_header => {
            let _ = abi::remove_header(MapType::RequestHeaders, cluster_header);
            true
        }
        Decision::Baseline { .. } => false,
    };
    if rerouted {
        clear_route_cache();
    }
    router.settings.debug.then(|| StreamState {
        debug: Some(describe(&decision, authority)),
    })
}

/// Makes Envoy pick the route again from the rewritten headers, even when an earlier filter
/// already resolved it. Envoy (since 1.33) only does this by itself for ABI <= 0.2.1 plugins;
/// the foreign function is the supported way. Hosts without it (NotFound) still clear the
/// cache for this ABI version, so the error is ignored.
fn clear_route_cache() {
    let _ = abi::call_foreign_function("clear_route_cache", &[]);
}

pub fn decorate_response(state: &StreamState) {
    if let Some(debug) = &state.debug {
        let _ = abi::add_header(MapType::ResponseHeaders, DEBUG_HEADER, debug.as_bytes());
    }
}
