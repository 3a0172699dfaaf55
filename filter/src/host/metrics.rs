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
        let name = format!("sandbox_router.circuit_open.sandbox.{sandbox}");
        let id = match self.ids.get(&name) {
            Some(id) => *id,
            None => match abi::define_gauge(&name) {
                Ok(id) => {
                    self.ids.insert(name, id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = abi::set_gauge(id, u64::from(open));
    }

    pub fn flush(&mut self) {
        for (sandbox, count) in std::mem::take(&mut self.trips) {
            self.add(
                format!("sandbox_router.circuit_opened.sandbox.{sandbox}"),
                count,
            );
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
        let id = match self.ids.get(&name) {
            Some(id) => *id,
            None => match abi::define_counter(&name) {
                Ok(id) => {
                    self.ids.insert(name, id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = abi::increment_counter(id, count);
    }
}
