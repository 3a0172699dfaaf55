//! Root and stream contexts. A stream only gets state when it needs work on its response, so a
//! request without a routing key allocates nothing.

use std::cell::RefCell;
use std::rc::Rc;

use crate::core::config::{compile, HostFacts};
use crate::core::router::Router;
use hashbrown::HashMap;

use crate::core::breaker;
use crate::core::guard::{beat, ensure_cell};
use crate::core::slots::VmId;

use super::abi::{self, MapType};
use super::budget::SharedData;
use super::logger;
use super::metrics::{Metrics, FLUSH_PERIOD_MS};
use super::stream::{self, StreamState};

pub struct Filter {
    /// This VM instance: holds the in-flight slots its requests take.
    vm: VmId,
    roots: HashMap<u32, Option<Rc<Router>>>,
    /// The router of the most recently configured root: what every stream uses unless several
    /// roots coexist (a configuration update in progress), in which case `stream_roots` says.
    latest: Option<Rc<Router>>,
    stream_roots: HashMap<u32, u32>,
    streams: HashMap<u32, StreamState>,
    metrics: Metrics,
}

thread_local! {
    static FILTER: RefCell<Filter> = RefCell::new(Filter {
        vm: new_vm_id(),
        roots: HashMap::default(),
        latest: None,
        stream_roots: HashMap::default(),
        streams: HashMap::default(),
        metrics: Metrics::default(),
    });
}

/// Runs `f` on the filter state; `fallback` if the state is unavailable (never expected: the
/// host does not re-enter the VM from the host calls this filter makes).
pub fn with_filter<T>(fallback: T, f: impl FnOnce(&mut Filter) -> T) -> T {
    FILTER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut filter) => f(&mut filter),
        Err(_) => fallback,
    })
}

impl Filter {
    pub fn configure(&mut self, root_id: u32, size: usize) -> bool {
        logger::follow_host_level();
        self.beat();
        let configuration = match abi::plugin_configuration(size) {
            Ok(buffer) => buffer,
            Err(status) => {
                log::error!("invalid configuration: cannot read it (status {status})");
                return false;
            }
        };
        let started = abi::now_nanos().unwrap_or(0);
        match compile(configuration.bytes(), &host_facts()) {
            Ok(router) => {
                prepare_cells(&router);
                self.metrics.define_totals();
                for sandbox in router.sandboxes().filter(|s| s.breaker.is_some()) {
                    self.metrics.define_circuit_series(&sandbox.key);
                }
                let elapsed_us = abi::now_nanos()
                    .unwrap_or(0)
                    .saturating_sub(started)
                    .checked_div(1000)
                    .unwrap_or(0);
                log::info!(
                    "configured with {} sandboxes in {elapsed_us} us; wasm memory {} KiB",
                    router.sandbox_count(),
                    wasm_memory_kib()
                );
                if abi::set_tick_period(FLUSH_PERIOD_MS).is_err() {
                    log::error!("no timer: stats will not be flushed");
                }
                let router = Rc::new(router);
                self.roots.insert(root_id, Some(Rc::clone(&router)));
                self.latest = Some(router);
                true
            }
            Err(error) => {
                log::error!("invalid configuration: {error}");
                false
            }
        }
    }

    pub fn create_context(&mut self, context_id: u32, parent_id: u32) {
        if parent_id == 0 {
            self.roots.insert(context_id, None);
        } else if self.roots.len() > 1 {
            self.stream_roots.insert(context_id, parent_id);
        }
    }

    pub fn delete_context(&mut self, context_id: u32) {
        if !self.streams.is_empty() {
            if let Some(state) = self.streams.remove(&context_id) {
                stream::finish(state, self.vm, &mut self.metrics);
            }
        }
        if !self.stream_roots.is_empty() {
            self.stream_roots.remove(&context_id);
        }
        if self.roots.remove(&context_id).is_some() {
            self.latest = self.roots.values().flatten().next().cloned();
        }
    }

    fn router_for(&self, context_id: u32) -> Option<Rc<Router>> {
        if !self.stream_roots.is_empty() {
            if let Some(root) = self.stream_roots.get(&context_id) {
                if let Some(Some(router)) = self.roots.get(root) {
                    return Some(Rc::clone(router));
                }
            }
        }
        self.latest.clone()
    }

    /// Returns whether the request was answered locally (the chain must stop).
    pub fn on_request_headers(&mut self, context_id: u32) -> bool {
        let Some(router) = self.router_for(context_id) else {
            return false;
        };
        let handled = stream::route_request(&router, &mut self.metrics, self.vm);
        if let Some(state) = handled.state {
            self.streams.insert(context_id, state);
        }
        handled.answered
    }

    pub fn on_tick(&mut self) {
        logger::follow_host_level();
        self.beat();
        self.metrics.flush();
    }

    pub fn on_response_headers(&mut self, context_id: u32) {
        if self.streams.is_empty() {
            return;
        }
        if let Some(state) = self.streams.get_mut(&context_id) {
            stream::decorate_response(state);
            stream::note_grpc_status(state, MapType::ResponseHeaders);
        }
    }

    pub fn on_response_trailers(&mut self, context_id: u32) {
        if self.streams.is_empty() {
            return;
        }
        if let Some(state) = self.streams.get_mut(&context_id) {
            stream::note_grpc_status(state, MapType::ResponseTrailers);
        }
    }
}

impl Filter {
    /// Tells the other VMs this one is alive, so that they leave its in-flight slots alone.
    fn beat(&self) {
        if let Ok(now) = abi::now_nanos() {
            if beat(&mut SharedData, self.vm, now).is_err() {
                log::warn!("could not write the heartbeat of VM {:016x}", self.vm);
            }
        }
    }
}

/// A random id for this VM instance (a VM recreated after a failure gets a new one). Without
/// randomness, the clock still tells instances apart.
fn new_vm_id() -> VmId {
    getrandom::u64().unwrap_or_else(|_| abi::now_nanos().unwrap_or(1))
}

/// Creates the shared budget and circuit cells of the configured sandboxes that lack one;
/// cells of sandboxes that remain keep their state across configuration updates.
fn prepare_cells(router: &Router) {
    let Ok(now) = abi::now_nanos() else {
        return;
    };
    for sandbox in router.sandboxes() {
        if let Some(budget) = &sandbox.budget {
            if ensure_cell(&mut SharedData, budget, now).is_err() {
                log::error!("could not create budget cell {}", budget.store_key);
            }
        }
        if let Some(policy) = &sandbox.breaker {
            if breaker::ensure_cell(&mut SharedData, policy).is_err() {
                log::error!("could not create circuit cell {}", policy.store_key);
            }
        }
    }
}

/// The VM's linear memory, which only grows: the high-water mark of the filter's heap.
fn wasm_memory_kib() -> usize {
    core::arch::wasm32::memory_size(0).saturating_mul(64)
}

/// Istio's node metadata `NAMESPACE`. Envoy 1.40 has the node under `xds.node` (the
/// attribute `node` is NotFound there, measured); older Envoys under `node`.
fn host_facts() -> HostFacts {
    let namespace = [
        &["xds", "node", "metadata", "NAMESPACE"][..],
        &["node", "metadata", "NAMESPACE"],
    ]
    .into_iter()
    .find_map(|path| abi::property(path).ok().flatten())
    .and_then(|buffer| String::from_utf8(buffer.bytes().to_vec()).ok())
    .filter(|ns| !ns.is_empty());
    HostFacts { namespace }
}
