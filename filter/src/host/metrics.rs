//! Decision counters. Requests only bump an in-VM tally; a timer flushes it to Envoy stats, so
//! counting costs no host call on the request path. Counter names carry the decision and the
//! sandbox as tags (see `envoy-config/` `stats_tags`), and exist only for configured sandboxes.

use std::rc::Rc;

use crate::core::policy::Label;
use hashbrown::HashMap;

use super::abi;

pub const FLUSH_PERIOD_MS: u32 = 250;

#[derive(Default)]
pub struct Metrics {
    pending: HashMap<(Option<Rc<str>>, Label), u64>,
    /// Circuit trips by sandbox, not yet flushed.
    trips: HashMap<Rc<str>, u64>,
    ids: HashMap<String, u32>,
}

impl Metrics {
    pub fn count(&mut self, sandbox: Option<&Rc<str>>, label: Label) {
        let slot = self.pending.entry((sandbox.cloned(), label)).or_default();
        *slot = slot.saturating_add(1);
    }

    /// A sandbox's circuit opened (at this VM).
    pub fn count_trip(&mut self, sandbox: &Rc<str>) {
        let slot = self.trips.entry(Rc::clone(sandbox)).or_default();
        *slot = slot.saturating_add(1);
    }

    /// Whether a sandbox's circuit is open (or half-open) now: a gauge, set when it changes.
    pub fn set_circuit_open(&mut self, sandbox: &str, open: bool) {
        if let Some(id) = self.id(open_gauge(sandbox), abi::define_gauge) {
            let _ = abi::set_gauge(id, u64::from(open));
        }
    }

    /// Creates the trip counter and the open gauge of a sandbox with a breaker when its
    /// configuration is applied (an existing one keeps its value): a counter that first appears
    /// at 1 gives Prometheus no sample before the trip, so `increase()` would miss that trip.
    pub fn define_circuit_series(&mut self, sandbox: &str) {
        let _ = self.id(trips_counter(sandbox), abi::define_counter);
        let _ = self.id(open_gauge(sandbox), abi::define_gauge);
    }

    /// Creates every decision's total counter at 0 when a configuration is applied (an existing
    /// one keeps its value), for the same reason: `rate()` and `increase()` need a sample before
    /// the first request of a decision. Per-sandbox counters are created on first use: 10,000
    /// sandboxes × every decision would be too many series to create up front.
    pub fn define_totals(&mut self) {
        for label in Label::ALL {
            let name = format!("sandbox_router.requests_total.decision.{}", label.as_str());
            let _ = self.id(name, abi::define_counter);
        }
    }

    pub fn flush(&mut self) {
        for (sandbox, count) in std::mem::take(&mut self.trips) {
            self.add(trips_counter(&sandbox), count);
        }
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for ((sandbox, label), count) in pending {
            let total = format!("sandbox_router.requests_total.decision.{}", label.as_str());
            self.add(total, count);
            if let Some(sandbox) = sandbox {
                let per_sandbox = format!(
                    "sandbox_router.sandbox_requests.decision.{}.sandbox.{sandbox}",
                    label.as_str()
                );
                self.add(per_sandbox, count);
            }
        }
    }

    fn add(&mut self, name: String, count: u64) {
        if let Some(id) = self.id(name, abi::define_counter) {
            let _ = abi::increment_counter(id, count);
        }
    }

    /// The metric's id, defined with `define` the first time it is asked for.
    fn id(&mut self, name: String, define: fn(&str) -> Result<u32, abi::Status>) -> Option<u32> {
        if let Some(id) = self.ids.get(&name) {
            return Some(*id);
        }
        let id = define(&name).ok()?;
        self.ids.insert(name, id);
        Some(id)
    }
}

fn trips_counter(sandbox: &str) -> String {
    format!("sandbox_router.circuit_opened.sandbox.{sandbox}")
}

fn open_gauge(sandbox: &str) -> String {
    format!("sandbox_router.circuit_open.sandbox.{sandbox}")
}
