//! The local mesh of `scripts/demo`, hop by hop: `frontend -> cart -> payment`, each service
//! behind its own Envoy sidecar with the sandbox-router filter on its outbound listener;
//! besides the baseline instances, `cart@feature-x` and `payment@feature-y`. The apps are the
//! `shop-service` binary of this crate, run as processes; the sidecars are built with the
//! harness, mirroring `envoy-config/_mesh-sidecar.template.yaml` (the fast-path entry, made by
//! `scripts/sandboxes render-envoy`), and load the filter configuration the demo uses
//! (`envoy-config/mesh-filter.json`).
//!
//! ```text
//! client -> frontend-sidecar:inbound -> frontend@baseline
//!             -> frontend-sidecar:outbound [filter] -> cart-sidecar:inbound -> cart@<version>
//!             -> cart-sidecar:outbound [filter] -> payment-sidecar:inbound -> payment@<version>
//! ```
//!
//! A broken sandbox (`cart@feature-x` made to fail through its admin switch) trips its circuit
//! in frontend's sidecar and recovers.
//!
//! Every check runs over HTTP/1.1 and over h2c: the client's request, the apps' calls to their
//! sidecars, and the sidecars' calls to the next sidecar and to the apps all use it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use integration_tests::envoy::process::die_with_parent;
use integration_tests::sandbox::{self, FailurePolicy};
use integration_tests::{
    filter_entry, paths, Bootstrap, Cluster, Envoy, EnvoyBuilder, FilterEntry, Listener, Protocol,
    Route, TestRequest, TestResponse, VirtualHost,
};
use serde_json::{json, Value};
use tempfile::TempDir;

const SHOP_SERVICE: &str = env!("CARGO_BIN_EXE_shop-service");
const APP_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Who calls whom, and the versions each service runs.
const SERVICES: [&str; 3] = ["frontend", "cart", "payment"];

fn next_of(service: &str) -> Option<&'static str> {
    match service {
        "frontend" => Some("cart"),
        "cart" => Some("payment"),
        _ => None,
    }
}

fn versions_of(service: &str) -> &'static [&'static str] {
    match service {
        "cart" => &["baseline", "feature-x"],
        "payment" => &["baseline", "feature-y"],
        _ => &["baseline"],
    }
}

/// The `:authority` an instance is reached by: `cart`, or `cart-feature-x` for a sandbox.
fn authority(service: &str, version: &str) -> String {
    if version == "baseline" {
        service.to_owned()
    } else {
        format!("{service}-{version}")
    }
}

/// The names an instance answers to: a baseline service by its Kubernetes names, a sandboxed
/// instance by its sandbox authority; each with any port.
fn domains(service: &str, version: &str) -> Vec<String> {
    let names: Vec<String> = if version == "baseline" {
        sandbox::kubernetes_names(service).to_vec()
    } else {
        vec![authority(service, version)]
    };
    names
        .into_iter()
        .flat_map(|n| [n.clone(), format!("{n}:*")])
        .collect()
}

const BASELINE: [&str; 3] = ["frontend@baseline", "cart@baseline", "payment@baseline"];
const VIA_CART_X: [&str; 3] = ["frontend@baseline", "cart@feature-x", "payment@baseline"];
const VIA_PAYMENT_Y: [&str; 3] = ["frontend@baseline", "cart@baseline", "payment@feature-y"];

fn filter_config() -> Value {
    let path = paths::workspace_root().join("envoy-config/mesh-filter.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ------------------------------------------------------------------- the apps ---

/// One `shop-service` process; killed and reaped on drop.
struct App {
    id: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl App {
    /// Spawns an instance; `port` is filled in by [`App::wait_for_port`].
    fn spawn(dir: &Path, service: &str, version: &str, h2c: bool) -> App {
        let id = format!("{service}@{version}");
        let log = dir.join(format!("{id}.log"));
        let out = fs::File::create(&log).expect("create the app log");
        let err = out.try_clone().expect("clone the log handle");
        let mut command = Command::new(SHOP_SERVICE);
        command
            .args(["--name", service, "--version", version])
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(dir.join(format!("{id}.port")));
        match next_of(service) {
            Some(next) => {
                // The sidecar starts after its app (its inbound listener needs the app's port),
                // so the app reads its sidecar's outbound address from a file written later.
                command
                    .arg("--downstream-file")
                    .arg(dir.join(format!("{service}.downstream")))
                    .args(["--downstream-host", next]);
                if h2c {
                    command.arg("--downstream-h2c");
                }
            }
            None => {
                command.arg("--data-dir").arg(dir.join("data").join(&id));
            }
        }
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SHOP_SERVICE}: {e}"));
        App {
            id,
            child,
            port: 0,
            log,
        }
    }

    async fn wait_for_port(&mut self, dir: &Path) {
        let file = dir.join(format!("{}.port", self.id));
        let deadline = Instant::now() + APP_STARTUP_TIMEOUT;
        loop {
            if let Some(port) = fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                self.port = port;
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during startup ({status}):\n{}",
                    self.id,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not write {} within {APP_STARTUP_TIMEOUT:?}:\n{}",
                self.id,
                file.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------- the mesh ---

struct Mesh {
    // Field order matters: the sidecars stop before the apps, the apps before the directory goes.
    sidecars: Vec<(String, Envoy)>,
    apps: Vec<App>,
    dir: TempDir,
    protocol: Protocol,
    entry: SocketAddr,
}

/// One sidecar: `inbound` routes by :authority to the local instances; `outbound` runs the
/// filter, then routes by :authority to the next service's sidecar.
fn sidecar_bootstrap(
    service: &str,
    apps: &[App],
    next_inbound: Option<SocketAddr>,
    h2c: bool,
    filter_config: &Value,
) -> Bootstrap {
    let not_found = |what: &str| {
        Route::Raw(json!({
            "match": { "prefix": "/" },
            "direct_response": {
                "status": 404,
                "body": { "inline_string": format!("{service}-sidecar: {what}\n") }
            }
        }))
    };
    let mut clusters = Vec::new();
    let mut inbound = Listener::new("inbound");
    for version in versions_of(service) {
        let id = format!("{service}@{version}");
        let app = apps
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("no app {id}"));
        let cluster = format!("local-{}", authority(service, version));
        inbound = inbound.virtual_host(
            VirtualHost::new(&authority(service, version), domains(service, version))
                .to_cluster(&cluster),
        );
        clusters.push(Cluster::new(&cluster, app.port).http2(h2c));
    }
    inbound = inbound.virtual_host(
        VirtualHost::new("no-such-instance", ["*"]).route(not_found("no local instance")),
    );

    let mut outbound = Listener::new("outbound").http_filter(filter_entry::render(
        filter_config,
        &paths::filter_wasm(),
        FailurePolicy::FailOpen,
        FilterEntry::FastPath,
    ));
    if let (Some(next), Some(addr)) = (next_of(service), next_inbound) {
        for version in versions_of(next) {
            let name = authority(next, version);
            outbound = outbound
                .virtual_host(VirtualHost::new(&name, domains(next, version)).to_cluster(&name));
            clusters.push(Cluster::new(&name, addr.port()).http2(h2c));
        }
    }
    outbound = outbound.virtual_host(
        VirtualHost::new("no-such-service", ["*"]).route(not_found("no route to this authority")),
    );

    clusters.into_iter().fold(
        Bootstrap::new().listener(inbound).listener(outbound),
        Bootstrap::cluster,
    )
}

impl Mesh {
    /// The mesh with the demo's filter configuration.
    async fn start(protocol: Protocol) -> Mesh {
        Self::start_with(protocol, &filter_config()).await
    }

    async fn start_with(protocol: Protocol, config: &Value) -> Mesh {
        let h2c = protocol == Protocol::H2c;
        let dir = tempfile::Builder::new()
            .prefix("mesh-it-")
            .tempdir()
            .expect("create a temp dir for the mesh");
        let mut apps: Vec<App> = SERVICES
            .iter()
            .flat_map(|s| versions_of(s).iter().map(move |v| (*s, *v)))
            .map(|(service, version)| App::spawn(dir.path(), service, version, h2c))
            .collect();
        for app in &mut apps {
            app.wait_for_port(dir.path()).await;
        }

        // From the end of the chain: each outbound cluster points at the next inbound listener.
        let mut sidecars: Vec<(String, Envoy)> = Vec::new();
        let mut next_inbound = None;
        for service in SERVICES.iter().rev() {
            let bootstrap = sidecar_bootstrap(service, &apps, next_inbound, h2c, config);
            let envoy = EnvoyBuilder::new(bootstrap).start().await;
            next_inbound = Some(envoy.listener("inbound"));
            sidecars.insert(0, (format!("{service}-sidecar"), envoy));
        }
        for (name, envoy) in &sidecars {
            let service = name.trim_end_matches("-sidecar");
            if next_of(service).is_some() {
                let file = dir.path().join(format!("{service}.downstream"));
                let tmp = dir.path().join(format!("{service}.downstream.tmp"));
                fs::write(&tmp, format!("http://{}\n", envoy.listener("outbound")))
                    .expect("write the downstream file");
                fs::rename(&tmp, &file).expect("move the downstream file in place");
            }
        }
        let entry = sidecars[0].1.listener("inbound");
        Mesh {
            sidecars,
            apps,
            dir,
            protocol,
            entry,
        }
    }

    fn request(&self, method: &str, path: &str, carrier: Option<(&str, &str)>) -> TestRequest {
        let mut request = match method {
            "POST" => TestRequest::post("frontend", path),
            _ => TestRequest::get("frontend", path),
        }
        .protocol(self.protocol);
        if let Some((name, value)) = carrier {
            request = request.header(name, value);
        }
        request
    }

    async fn send(&self, request: TestRequest) -> Answer {
        let response = request.send(self.entry).await;
        Answer::new(response, self)
    }

    async fn get(&self, path: &str, carrier: Option<(&str, &str)>) -> Answer {
        self.send(self.request("GET", path, carrier)).await
    }

    async fn post(&self, path: &str, carrier: Option<(&str, &str)>, body: Value) -> Answer {
        let request = self
            .request("POST", path, carrier)
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    fn app(&self, id: &str) -> &App {
        self.apps
            .iter()
            .find(|a| a.id == id)
            .unwrap_or_else(|| panic!("no app {id}"))
    }

    /// What the processes said, for failure messages: every app log and the sidecars' log tails.
    fn logs(&self) -> String {
        let mut out = String::new();
        for app in &self.apps {
            out.push_str(&format!("---- {} ----\n{}", app.id, app.log()));
        }
        for (name, envoy) in &self.sidecars {
            out.push_str(&format!("---- {name} ----\n{}\n", envoy.log_tail(15)));
        }
        out.push_str(&format!("(mesh dir {})\n", self.dir.path().display()));
        out
    }

    /// The protocol every hop reports: what the apps see from their sidecars.
    fn hop_protocol(&self) -> &'static str {
        match self.protocol {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2c => "HTTP/2",
        }
    }
}

/// A response of the mesh, with context for failure messages.
struct Answer {
    status: StatusCode,
    json: Value,
    context: String,
}

impl Answer {
    fn new(response: TestResponse, mesh: &Mesh) -> Answer {
        let json = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "the mesh did not answer with JSON ({e}):\n{response:?}\n{}",
                mesh.logs()
            )
        });
        Answer {
            status: response.status,
            context: format!("{response:?}"),
            json,
        }
    }

    fn chain(&self) -> Vec<String> {
        self.json["chain"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn hop(&self, i: usize) -> &Value {
        &self.json["hops"][i]
    }

    /// `decision` of the sidecar that hop `i` called through.
    fn decision(&self, i: usize) -> String {
        self.hop(i)["call"]["sidecar_decision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    fn expect(&self, status: u16, chain: &[&str]) {
        assert_eq!(self.status.as_u16(), status, "{}", self.context);
        assert_eq!(self.chain(), chain, "{}", self.context);
    }
}

// ------------------------------------------------------------------- the checks ---

/// The sandbox key every hop read, and the protocol every hop spoke.
#[track_caller]
fn assert_every_hop(answer: &Answer, mesh: &Mesh, key: Option<&str>) {
    let hops = answer.json["hops"].as_array().cloned().unwrap_or_default();
    assert_eq!(hops.len(), 3, "{}", answer.context);
    for (i, hop) in hops.iter().enumerate() {
        assert_eq!(
            hop["protocol"],
            mesh.hop_protocol(),
            "hop {i} protocol: {}",
            answer.context
        );
        assert_eq!(
            hop["sandbox_key"],
            key.map_or(Value::Null, |k| json!(k)),
            "hop {i} (the app propagates the key): {}",
            answer.context
        );
        if i < 2 {
            let wanted = match mesh.protocol {
                Protocol::Http1 => "HTTP/1.1",
                Protocol::H2c => "h2c",
            };
            assert_eq!(
                hop["call"]["protocol"], wanted,
                "hop {i}: {}",
                answer.context
            );
        }
    }
}

async fn routes_each_hop(protocol: Protocol) {
    let mesh = Mesh::start(protocol).await;

    // No key: baseline everywhere.
    let answer = mesh.get("/", None).await;
    answer.expect(200, &BASELINE);
    assert_every_hop(&answer, &mesh, None);
    for i in 0..2 {
        // The fast path: a keyless call never reaches the filter, which then adds no decision.
        assert_eq!(
            answer.hop(i)["call"]["sidecar_decision"],
            Value::Null,
            "hop {i}: {}",
            answer.context
        );
    }
    assert_eq!(answer.hop(1)["authority"], "cart");
    assert_eq!(answer.hop(2)["authority"], "payment");

    // feature-x overrides cart: frontend's sidecar sends `cart` to cart@feature-x; cart's
    // sidecar leaves payment on the baseline (feature-x does not override it).
    let answer = mesh.get("/", Some(("baggage", "sandbox=feature-x"))).await;
    answer.expect(200, &VIA_CART_X);
    assert_every_hop(&answer, &mesh, Some("feature-x"));
    let first = answer.decision(0);
    assert!(
        first.starts_with("routed;") && first.contains("authority:cart-feature-x"),
        "{}",
        answer.context
    );
    assert!(
        answer.decision(1).contains("reason=no-override"),
        "{}",
        answer.context
    );
    assert_eq!(answer.hop(1)["authority"], "cart-feature-x");
    assert_eq!(answer.hop(2)["authority"], "payment");
    // feature-x has a budget: the sidecar reports it on admitted requests.
    assert_eq!(
        answer.hop(0)["call"]["ratelimit"]["limit"],
        "5",
        "{}",
        answer.context
    );

    // feature-y overrides payment: decided at the second hop, by cart's sidecar.
    let answer = mesh.get("/", Some(("baggage", "sandbox=feature-y"))).await;
    answer.expect(200, &VIA_PAYMENT_Y);
    assert_every_hop(&answer, &mesh, Some("feature-y"));
    assert!(
        answer.decision(0).contains("reason=no-override"),
        "{}",
        answer.context
    );
    let second = answer.decision(1);
    assert!(
        second.starts_with("routed;") && second.contains("authority:payment-feature-y"),
        "{}",
        answer.context
    );
    assert_eq!(answer.hop(2)["authority"], "payment-feature-y");

    // An unknown key: baseline everywhere, the key still propagated.
    let answer = mesh.get("/", Some(("baggage", "sandbox=feature-z"))).await;
    answer.expect(200, &BASELINE);
    assert_every_hop(&answer, &mesh, Some("feature-z"));
    for i in 0..2 {
        assert!(
            answer.decision(i).contains("reason=unknown-key"),
            "hop {i}: {}",
            answer.context
        );
    }

    // Every carrier the filter reads survives both hops (the apps propagate it).
    for (name, value) in [
        ("baggage", "user=alice,sandbox=feature-y;ttl=60,tier=gold"),
        ("x-sandbox", "feature-y"),
        ("ot-baggage-sandbox", "feature-y"),
        ("uberctx-sandbox", "feature-y"),
        ("tracestate", "vendor=abc,sandbox=feature-y"),
    ] {
        let answer = mesh.get("/", Some((name, value))).await;
        answer.expect(200, &VIA_PAYMENT_Y);
        assert_every_hop(&answer, &mesh, Some("feature-y"));
    }

    // The path and query reach the last service unchanged.
    let answer = mesh
        .get("/catalog?page=2", Some(("baggage", "sandbox=feature-x")))
        .await;
    answer.expect(200, &VIA_CART_X);
}

async fn sandboxed_orders_stay_out_of_production(protocol: Protocol) {
    let mesh = Mesh::start(protocol).await;
    let orders = |answer: &Answer| answer.json["result"]["orders"].clone();

    let answer = mesh.get("/orders", None).await;
    answer.expect(200, &BASELINE);
    assert_eq!(answer.json["result"]["store"], "production");
    assert_eq!(answer.json["result"]["count"], 0);

    let answer = mesh
        .post("/orders", None, json!({ "item": "espresso machine" }))
        .await;
    answer.expect(201, &BASELINE);
    assert_eq!(
        answer.json["result"]["order"]["id"], "prod-1",
        "{}",
        answer.context
    );
    let production = orders(&mesh.get("/orders", None).await);
    assert_eq!(production.as_array().map(Vec::len), Some(1));

    // feature-x does not override payment: payment@baseline takes the order, into the
    // sandbox's own store.
    let answer = mesh
        .post(
            "/orders",
            Some(("baggage", "sandbox=feature-x")),
            json!({ "item": "test order" }),
        )
        .await;
    answer.expect(201, &VIA_CART_X);
    assert_every_hop(&answer, &mesh, Some("feature-x"));
    let order = &answer.json["result"]["order"];
    assert_eq!(order["store"], "sandbox:feature-x", "{}", answer.context);
    assert_eq!(order["taken_by"], "payment@baseline", "{}", answer.context);
    assert_eq!(order["details"]["item"], "test order");

    // feature-y's order goes to payment@feature-y, also into a sandbox store.
    let answer = mesh
        .post(
            "/orders",
            Some(("x-sandbox", "feature-y")),
            json!({ "item": "another test order" }),
        )
        .await;
    answer.expect(201, &VIA_PAYMENT_Y);
    assert_eq!(answer.json["result"]["order"]["store"], "sandbox:feature-y");
    assert_eq!(
        answer.json["result"]["order"]["taken_by"],
        "payment@feature-y"
    );

    // Production is untouched, through the mesh and at the app itself.
    let answer = mesh.get("/orders", None).await;
    answer.expect(200, &BASELINE);
    assert_eq!(orders(&answer), production, "{}", answer.context);
    let direct = TestRequest::get("payment", "/orders")
        .send(SocketAddr::from((
            [127, 0, 0, 1],
            mesh.app("payment@baseline").port,
        )))
        .await;
    let direct: Value = serde_json::from_slice(&direct.body).expect("JSON from payment");
    assert_eq!(direct["result"]["orders"], production);
    let store_dir = mesh.dir.path().join("data/payment@baseline");
    let lines = |file: &str| {
        fs::read_to_string(store_dir.join(file))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(lines("orders.production.jsonl"), 1);
    assert_eq!(lines("orders.sandbox.feature-x.jsonl"), 1);

    // Each sandbox sees its own order only.
    let answer = mesh
        .get("/orders", Some(("baggage", "sandbox=feature-x")))
        .await;
    answer.expect(200, &VIA_CART_X);
    assert_eq!(answer.json["result"]["store"], "sandbox:feature-x");
    assert_eq!(answer.json["result"]["count"], 1, "{}", answer.context);
    assert_eq!(answer.json["result"]["orders"][0]["id"], "feature-x-1");
    let answer = mesh
        .get("/orders", Some(("baggage", "sandbox=feature-y")))
        .await;
    answer.expect(200, &VIA_PAYMENT_Y);
    assert_eq!(answer.json["result"]["count"], 1, "{}", answer.context);
    assert_eq!(answer.json["result"]["orders"][0]["id"], "feature-y-1");
}

/// The demo's configuration with feature-x's refill slowed to one token per 100 s: its burst
/// (5) is then exactly what a burst of requests gets, however long the machine takes to
/// deliver them (the refill pace itself is measured in tests/tests/guard.rs).
fn config_without_refill() -> Value {
    let mut config = filter_config();
    config["sandboxes"]["feature-x"]["rate_limit"]["requests_per_second"] = json!(0.01);
    config
}

async fn burst_trips_the_sandbox_limit(protocol: Protocol) {
    const REQUESTS: usize = 15;
    /// feature-x's `burst` in `envoy-config/mesh-filter.json`.
    const BURST: usize = 5;
    let mesh = Mesh::start_with(protocol, &config_without_refill()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        for keyed in [true, false] {
            let mut request = mesh.request("GET", "/", None);
            if keyed {
                request = request.header("baggage", "sandbox=feature-x");
            }
            let entry = mesh.entry;
            tasks.spawn(async move { (keyed, i, request.send(entry).await) });
        }
    }
    let mut keyed_ok = 0;
    let mut keyed_limited = 0;
    let mut baseline_ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (keyed, _, response) = joined.expect("a burst request panicked");
        let answer = Answer::new(response, &mesh);
        match (keyed, answer.status.as_u16()) {
            (true, 200) => {
                answer.expect(200, &VIA_CART_X);
                keyed_ok += 1;
            }
            (true, 429) => {
                // frontend's sidecar answered: the request never reached cart.
                answer.expect(429, &VIA_CART_X[..1]);
                assert_eq!(answer.json["error"]["limited_sandbox"], "feature-x");
                assert_eq!(answer.hop(0)["call"]["status"], 429);
                assert!(
                    answer.decision(0).starts_with("rejected;"),
                    "{}",
                    answer.context
                );
                keyed_limited += 1;
            }
            (false, _) => {
                answer.expect(200, &BASELINE);
                baseline_ok += 1;
            }
            (true, status) => panic!("unexpected {status} in the burst: {}", answer.context),
        }
    }
    assert_eq!(
        (keyed_ok, keyed_limited),
        (BURST, REQUESTS - BURST),
        "feature-x: 200s and 429s\n{}",
        mesh.logs()
    );
    assert_eq!(baseline_ok, REQUESTS, "baseline traffic is never limited");
}

/// Flips `app`'s failure switch on its own port (not through a sidecar): `Some(status)` makes
/// it answer every request with `status`, `None` heals it.
async fn fail_switch(app: &App, status: Option<u16>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port));
    let request = match status {
        Some(status) => TestRequest::new(http::Method::PUT, &addr.to_string(), "/admin/fail")
            .body(status.to_string()),
        None => TestRequest::new(http::Method::DELETE, &addr.to_string(), "/admin/fail"),
    };
    let response = request.send(addr).await;
    assert_eq!(response.status, 200, "{response:?}");
    let reply: Value = serde_json::from_slice(&response.body).expect("a JSON reply");
    assert_eq!(reply["failing_with"], json!(status), "{response:?}");
}

/// cart@feature-x fails: after `consecutive_failures` failures in a row feature-x's circuit
/// opens in frontend's sidecar, which answers 503 itself (cart is not called) while baseline and
/// feature-y traffic goes on; healed, the first request after `open_seconds` probes it and
/// closes the circuit. The breaker is the demo's (`envoy-config/mesh-filter.json`).
async fn broken_sandbox_opens_its_circuit_and_recovers(protocol: Protocol) {
    let config = filter_config();
    let breaker = &config["sandboxes"]["feature-x"]["circuit_breaker"];
    let trip_after = breaker["consecutive_failures"].as_u64().expect("a number");
    let open = Duration::from_secs(breaker["open_seconds"].as_u64().expect("a number"));
    let mesh = Mesh::start(protocol).await;
    let feature_x = Some(("baggage", "sandbox=feature-x"));
    fail_switch(mesh.app("cart@feature-x"), Some(503)).await;
    for _ in 0..trip_after {
        mesh.get("/", feature_x).await.expect(503, &VIA_CART_X[..2]);
    }
    let tripped_by = Instant::now();
    let answer = mesh.get("/", feature_x).await;
    answer.expect(503, &VIA_CART_X[..1]);
    assert_eq!(
        answer.json["error"]["circuit"], "open",
        "{}",
        answer.context
    );
    let message = answer.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "sandbox feature-x: circuit open after {trip_after} consecutive failures; retry in "
        )),
        "{}",
        answer.context
    );
    assert_eq!(
        answer.decision(0),
        "rejected; key=feature-x; reason=circuit_open"
    );
    mesh.get("/", None).await.expect(200, &BASELINE);
    mesh.get("/", Some(("baggage", "sandbox=feature-y")))
        .await
        .expect(200, &VIA_PAYMENT_Y);

    fail_switch(mesh.app("cart@feature-x"), None).await;
    // The breaker is driven by the clock: it probes `open_seconds` after the trip.
    tokio::time::sleep_until((tripped_by + open + Duration::from_millis(200)).into()).await;
    for _ in 0..2 {
        mesh.get("/", feature_x).await.expect(200, &VIA_CART_X);
    }
}

#[tokio::test]
async fn broken_sandbox_opens_its_circuit_and_recovers_over_http1() {
    broken_sandbox_opens_its_circuit_and_recovers(Protocol::Http1).await;
}

#[tokio::test]
async fn broken_sandbox_opens_its_circuit_and_recovers_over_h2c() {
    broken_sandbox_opens_its_circuit_and_recovers(Protocol::H2c).await;
}

#[tokio::test]
async fn routes_each_hop_over_http1() {
    routes_each_hop(Protocol::Http1).await;
}

#[tokio::test]
async fn routes_each_hop_over_h2c() {
    routes_each_hop(Protocol::H2c).await;
}

#[tokio::test]
async fn sandboxed_orders_stay_out_of_production_over_http1() {
    sandboxed_orders_stay_out_of_production(Protocol::Http1).await;
}

#[tokio::test]
async fn sandboxed_orders_stay_out_of_production_over_h2c() {
    sandboxed_orders_stay_out_of_production(Protocol::H2c).await;
}

#[tokio::test]
async fn burst_trips_the_sandbox_limit_over_http1() {
    burst_trips_the_sandbox_limit(Protocol::Http1).await;
}

#[tokio::test]
async fn burst_trips_the_sandbox_limit_over_h2c() {
    burst_trips_the_sandbox_limit(Protocol::H2c).await;
}
