//! The guard's store on proxy-wasm shared data (one budget per proxy, shared by every worker),
//! and the reply a request over budget gets.

use crate::core::guard::{SetError, Store, StoreUnavailable, Verdict};
use crate::core::header_map::serialize;
use crate::core::policy::Label;

use super::abi;

pub struct SharedData;

impl Store for SharedData {
    fn get<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<(Option<T>, u32), StoreUnavailable> {
        #[cfg(feature = "fault-injection")]
        if super::fault::store_unavailable() {
            return Err(StoreUnavailable);
        }
        match abi::shared_data(key) {
            Ok(Some((value, cas))) => Ok((read(value.bytes()), cas)),
            Ok(None) => Ok((None, 0)),
            Err(_) => Err(StoreUnavailable),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        #[cfg(feature = "fault-injection")]
        if super::fault::store_unavailable() {
            return Err(SetError::Failed);
        }
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(abi::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

/// gRPC RESOURCE_EXHAUSTED.
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

/// Sends the 429 (or gRPC RESOURCE_EXHAUSTED) for a rejected verdict.
pub fn reject_over_budget(sandbox: &str, verdict: &Verdict, is_grpc: bool) {
    let details = Label::of_verdict(verdict)
        .budget_details()
        .unwrap_or("sandbox_router_budget_unavailable");
    let (body, limit, reset, retry_after) = match verdict {
        Verdict::RateLimited {
            quota,
            retry_after,
            rate,
        } => (
            format!(
                "sandbox {sandbox}: rate limit exceeded ({} requests/s, burst {}); retry in {retry_after}s",
                rate.rate_text(),
                quota.limit
            ),
            u64::from(quota.limit),
            quota.reset_seconds,
            *retry_after,
        ),
        Verdict::InFlightCapped { max_in_flight } => (
            format!("sandbox {sandbox}: in-flight limit exceeded (at most {max_in_flight} requests in progress)"),
            u64::from(*max_in_flight),
            1,
            1,
        ),
        Verdict::Unavailable | Verdict::Admitted { .. } => (
            format!("sandbox {sandbox}: budget unavailable (shared budget store failed or contended); request refused to protect production"),
            0,
            1,
            1,
        ),
    };
    let (limit, reset, retry_after) = (
        limit.to_string(),
        reset.to_string(),
        retry_after.to_string(),
    );
    let headers = serialize(&[
        (b"retry-after", retry_after.as_bytes()),
        (b"x-ratelimit-limit", limit.as_bytes()),
        (b"x-ratelimit-remaining", b"0"),
        (b"x-ratelimit-reset", reset.as_bytes()),
        (b"x-sandbox-router-limited", sandbox.as_bytes()),
    ]);
    let grpc_status = if is_grpc { GRPC_RESOURCE_EXHAUSTED } else { -1 };
    let _ = abi::send_local_response(429, details, body.as_bytes(), &headers, grpc_status);
}
