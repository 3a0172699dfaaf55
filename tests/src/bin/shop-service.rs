//! `shop-service`: the application of the local mesh demo (`scripts/demo`) and of
//! `tests/tests/mesh.rs`. One program plays every service (`frontend`, `cart`, `payment`) in
//! every version (`baseline`, `feature-x`, ...):
//!
//! ```text
//! shop-service --name cart --version feature-x --listen 127.0.0.1:0 --port-file run/cart.port \
//!              --downstream http://127.0.0.1:15001 --downstream-host payment [--downstream-h2c]
//! ```
//!
//! - It serves HTTP/1.1 and h2c (prior knowledge) on `--listen` (port 0 picks a free port; the
//!   bound port is printed and, with `--port-file`, written atomically to that file).
//! - With a downstream, every request (method, path, body) is passed on to it — through the
//!   caller's sidecar, whose outbound listener is `--downstream` — with `:authority`
//!   `--downstream-host`, over HTTP/1.1 or h2c (`--downstream-h2c`). Like an app instrumented
//!   with OpenTelemetry it forwards the context headers: `baggage`, `tracestate`, `traceparent`,
//!   `x-request-id`, `x-sandbox`, `ot-baggage-*` and `uberctx-*`.
//!   `--downstream-file PATH` instead reads the downstream URL from PATH when the first request
//!   needs it (the orchestrator writes it once the sidecar, started after the app, is up).
//! - Without a downstream (the last service of the chain) it answers itself. It keeps orders:
//!   `GET /orders` lists them, `POST /orders` (a JSON object body) adds one. Data isolation as
//!   the apps do it: the store is chosen by the `x-sandbox-key` request header, which the
//!   sandbox-router in the caller's sidecar sets to the key of a registered, trusted, unexpired
//!   sandbox (and removes when a client sent it). A request with it reads and writes that
//!   sandbox's own store, never the production one; a request without it is production traffic
//!   (an unknown or expired key included, as the sidecar routes it). The app parses no baggage
//!   for this. `--data-dir DIR` keeps the stores as JSON lines (`DIR/orders.production.jsonl`,
//!   `DIR/orders.sandbox.<key>.jsonl`).
//! - Each hop reports the sandbox key it reads from the propagated context (`sandbox_key`: the
//!   `sandbox` member of W3C `baggage`, else `x-sandbox`, `ot-baggage-sandbox`,
//!   `uberctx-sandbox`, `tracestate`), which is what it passes on.
//!
//! Every answer is JSON naming who served each hop:
//!
//! ```json
//! { "chain": ["frontend@baseline", "cart@feature-x", "payment@baseline"],
//!   "route": "frontend@baseline -> cart@feature-x -> payment@baseline",
//!   "hops": [{ "served_by": "frontend@baseline", "protocol": "HTTP/1.1", "sandbox_key": "feature-x",
//!              "call": { "host": "cart", "status": 200, "sidecar_decision": "routed; ..." } }, ...],
//!   "result": { ... } }
//! ```
//!
//! A failed call (e.g. the sidecar's 429 for a sandbox over its rate limit, or its 503 for a
//! sandbox whose circuit is open) is passed back with its status, the chain up to there and an
//! `error` object. `GET /healthz` is answered locally.
//!
//! Failing on command (the demo's broken sandbox): `PUT /admin/fail` with a status code as the
//! body (e.g. `503`) makes the instance answer every other request with that status and an
//! `error` object, without calling its downstream; `DELETE /admin/fail` heals it. Send these to
//! the app's own port, not through a sidecar.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "\
usage: shop-service --name NAME --version VERSION [--listen ADDR] [--port-file PATH]
                    [--downstream URL | --downstream-file PATH] [--downstream-host HOST]
                    [--downstream-h2c] [--data-dir DIR]

  --name NAME             service name (frontend, cart, payment, ...)
  --version VERSION       baseline, or the sandbox key this instance belongs to
  --listen ADDR           where to serve HTTP/1.1 and h2c (default 127.0.0.1:0: a free port)
  --port-file PATH        write the bound port to PATH (atomically) once listening
  --downstream URL        pass requests on to URL (http://HOST:PORT: the sidecar's outbound)
  --downstream-file PATH  read that URL from PATH when the first request needs it
  --downstream-host HOST  :authority of the downstream calls (required with a downstream)
  --downstream-h2c        call the downstream over h2c instead of HTTP/1.1
  --data-dir DIR          keep the order stores as JSON lines in DIR (default: in memory)
";

/// Request headers an OpenTelemetry-instrumented app propagates (plus the `ot-baggage-` and
/// `uberctx-` prefixes).
const PROPAGATED: [&str; 5] = [
    "baggage",
    "tracestate",
    "traceparent",
    "x-request-id",
    "x-sandbox",
];
const PROPAGATED_PREFIXES: [&str; 2] = ["ot-baggage-", "uberctx-"];
/// The baggage member (and header suffix) carrying the sandbox key.
const KEY_MEMBER: &str = "sandbox";
/// The filter's debug header and the header naming the sandbox a 429 was for.
const DECISION_HEADER: &str = "x-sandbox-router";
const LIMITED_HEADER: &str = "x-sandbox-router-limited";
/// The filter's header on its answer for an open (or half-open) circuit.
const CIRCUIT_HEADER: &str = "x-sandbox-router-circuit";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_KEY_LEN: usize = 128;

#[derive(Debug)]
struct Args {
    name: String,
    version: String,
    listen: String,
    port_file: Option<PathBuf>,
    downstream: Option<DownstreamSource>,
    downstream_host: Option<String>,
    downstream_h2c: bool,
    data_dir: Option<PathBuf>,
}

#[derive(Debug)]
enum DownstreamSource {
    Url(String),
    File(PathBuf),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut name = None;
    let mut version = None;
    let mut listen = "127.0.0.1:0".to_owned();
    let mut port_file = None;
    let mut downstream = None;
    let mut downstream_host = None;
    let mut downstream_h2c = false;
    let mut data_dir = None;
    while let Some(flag) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value("--name")?),
            "--version" => version = Some(value("--version")?),
            "--listen" => listen = value("--listen")?,
            "--port-file" => port_file = Some(PathBuf::from(value("--port-file")?)),
            "--downstream" => {
                downstream = Some(DownstreamSource::Url(value("--downstream")?));
            }
            "--downstream-file" => {
                downstream = Some(DownstreamSource::File(PathBuf::from(value(
                    "--downstream-file",
                )?)));
            }
            "--downstream-host" => downstream_host = Some(value("--downstream-host")?),
            "--downstream-h2c" => downstream_h2c = true,
            "--data-dir" => data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let name = name.ok_or("--name is required")?;
    let version = version.ok_or("--version is required")?;
    if let Some(DownstreamSource::Url(url)) = &downstream {
        parse_url(url)?;
    }
    if downstream.is_some() && downstream_host.is_none() {
        return Err("--downstream-host is required with a downstream".into());
    }
    Ok(Args {
        name,
        version,
        listen,
        port_file,
        downstream,
        downstream_host,
        downstream_h2c,
        data_dir,
    })
}

/// `http://HOST:PORT` (or `HOST:PORT`, trailing `/` allowed) → `HOST:PORT`.
fn parse_url(url: &str) -> Result<String, String> {
    let rest = url.trim().strip_prefix("http://").unwrap_or(url.trim());
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !rest.contains('/') && port.parse::<u16>().is_ok() =>
        {
            Ok(rest.to_owned())
        }
        _ => Err(format!(
            "downstream {url:?} is not http://HOST:PORT (only plain HTTP is supported)"
        )),
    }
}

struct Service {
    name: String,
    version: String,
    me: String,
    downstream: Option<Downstream>,
    orders: Option<Orders>,
    failure: FailSwitch,
}

struct Downstream {
    source: DownstreamSource,
    /// The `HOST:PORT` to connect to, once known.
    resolved: Mutex<Option<String>>,
    host: String,
    h2c: bool,
}

impl Downstream {
    fn address(&self) -> Result<String, String> {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = resolved.as_ref() {
            return Ok(address.clone());
        }
        let address = match &self.source {
            DownstreamSource::Url(url) => parse_url(url)?,
            DownstreamSource::File(path) => {
                let text = fs::read_to_string(path)
                    .map_err(|e| format!("downstream not known yet ({}: {e})", path.display()))?;
                parse_url(text.trim())?
            }
        };
        *resolved = Some(address.clone());
        Ok(address)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("shop-service: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shop-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let me = format!("{}@{}", args.name, args.version);
    let orders = match (&args.downstream, &args.data_dir) {
        (Some(_), _) => None,
        (None, dir) => Some(Orders::open(dir.clone())?),
    };
    let downstream = match (args.downstream, args.downstream_host) {
        (Some(source), Some(host)) => Some(Downstream {
            source,
            resolved: Mutex::new(None),
            host,
            h2c: args.downstream_h2c,
        }),
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("{me}: cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("{me}: no local address: {e}"))?;
    if let Some(path) = &args.port_file {
        write_atomically(path, &format!("{}\n", addr.port()))
            .map_err(|e| format!("{me}: cannot write {}: {e}", path.display()))?;
    }
    let next = downstream.as_ref().map_or_else(
        || "answers itself".to_owned(),
        |d| {
            format!(
                "calls {} over {}",
                d.host,
                if d.h2c { "h2c" } else { "HTTP/1.1" }
            )
        },
    );
    println!("shop-service {me} listening on http://{addr} ({next})");
    let _ = std::io::stdout().flush();

    let service = Arc::new(Service {
        name: args.name,
        version: args.version,
        me,
        downstream,
        orders,
        failure: FailSwitch::default(),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(connection) => connection,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let service = Arc::clone(&service);
                async move { Ok::<_, Infallible>(service.handle(request).await) }
            });
            // Errors here are peers going away; nothing to report.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

/// Writes `text` to a temporary file next to `path`, then renames it: readers never see a
/// partial file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// What one hop answers: status and JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Service {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        if parts.uri.path() == "/healthz" {
            return text_response(StatusCode::OK, format!("{} ok\n", self.me));
        }
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}\n"),
                )
            }
        };
        if parts.uri.path() == FAIL_PATH {
            return self.failure.command(&self.me, &parts.method, &body);
        }
        if let Some(status) = self.failure.status() {
            return self
                .failure
                .answer(&self.me, status, version_text(parts.version));
        }
        let key = sandbox_key(&parts.headers);
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut hop = Map::new();
        hop.insert("served_by".into(), json!(self.me));
        hop.insert("service".into(), json!(self.name));
        hop.insert("version".into(), json!(self.version));
        hop.insert("protocol".into(), json!(version_text(parts.version)));
        hop.insert("authority".into(), json!(authority));
        hop.insert(
            "sandbox_key".into(),
            match &key {
                Key::Absent => Value::Null,
                Key::Valid(k) => json!(k),
                Key::Invalid(raw) => json!(format!("invalid: {raw}")),
            },
        );

        let answer = match &self.downstream {
            Some(downstream) => self.forward(downstream, &parts, body, hop).await,
            None => {
                let store_key = store_key(&parts.headers);
                self.serve(&parts.method, parts.uri.path(), &body, &store_key, hop)
            }
        };
        let route = answer.body["route"].as_str().unwrap_or_default().to_owned();
        eprintln!(
            "{}: {} {} key={} -> {} [{route}]",
            self.me,
            parts.method,
            parts.uri.path(),
            key.label(),
            answer.status.as_u16(),
        );
        let mut text = answer.body.to_string();
        text.push('\n');
        Response::builder()
            .status(answer.status)
            .header(CONTENT_TYPE, "application/json")
            .header("x-served-by", self.me.as_str())
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    /// The last service of the chain answers the request itself; `key` picks the order store.
    fn serve(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        key: &Key,
        hop: Map<String, Value>,
    ) -> Answer {
        let chain = vec![json!(self.me)];
        let done = |status: StatusCode, result: Value| Answer {
            status,
            body: json!({
                "chain": chain,
                "route": self.me,
                "hops": [Value::Object(hop.clone())],
                "result": result,
            }),
        };
        let fail = |status: StatusCode, message: String| Answer {
            status,
            body: json!({
                "chain": chain,
                "route": format!("{} ✘ {}", self.me, status.as_u16()),
                "hops": [Value::Object(hop.clone())],
                "error": { "at": self.me, "status": status.as_u16(), "message": message },
            }),
        };
        if path != "/orders" {
            return done(
                StatusCode::OK,
                json!({ "message": format!("hello from {}", self.me) }),
            );
        }
        let Some(orders) = &self.orders else {
            return fail(StatusCode::NOT_FOUND, "no order store here".into());
        };
        let store = match key {
            Key::Absent => Store::Production,
            Key::Valid(key) => Store::Sandbox(key.clone()),
            Key::Invalid(raw) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("malformed {KEY_HEADER} {raw:?}: refusing to touch any store"),
                )
            }
        };
        match *method {
            Method::GET | Method::HEAD => {
                let list = orders.list(&store);
                done(
                    StatusCode::OK,
                    json!({ "store": store.label(), "count": list.len(), "orders": list }),
                )
            }
            Method::POST => {
                let details = if body.iter().all(u8::is_ascii_whitespace) {
                    json!({})
                } else {
                    match serde_json::from_slice::<Value>(body) {
                        Ok(value @ Value::Object(_)) => value,
                        _ => {
                            return fail(
                                StatusCode::BAD_REQUEST,
                                "an order is a JSON object".into(),
                            )
                        }
                    }
                };
                match orders.add(&store, details, &self.me) {
                    Ok((order, count)) => done(
                        StatusCode::CREATED,
                        json!({ "store": store.label(), "count": count, "order": order }),
                    ),
                    Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            _ => fail(StatusCode::METHOD_NOT_ALLOWED, "GET or POST /orders".into()),
        }
    }

    /// Passes the request on to the downstream through the sidecar, and prepends this hop to
    /// the chain it answers with.
    async fn forward(
        &self,
        downstream: &Downstream,
        parts: &http::request::Parts,
        body: Bytes,
        mut hop: Map<String, Value>,
    ) -> Answer {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut call = Map::new();
        call.insert("host".into(), json!(downstream.host));
        call.insert(
            "protocol".into(),
            json!(if downstream.h2c { "h2c" } else { "HTTP/1.1" }),
        );
        let outcome = match downstream.address() {
            Ok(address) => {
                call.insert("via".into(), json!(format!("http://{address}")));
                send(
                    &address,
                    downstream,
                    parts.method.clone(),
                    &path,
                    &parts.headers,
                    body,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let (status, headers, reply) = match outcome {
            Ok(response) => response,
            Err(message) => {
                call.insert("status".into(), Value::Null);
                call.insert("error".into(), json!(message));
                hop.insert("call".into(), Value::Object(call));
                let status = StatusCode::BAD_GATEWAY;
                return Answer {
                    status,
                    body: json!({
                        "chain": [self.me],
                        "route": format!("{} -> ✘ {}: unreachable", self.me, downstream.host),
                        "hops": [Value::Object(hop)],
                        "error": {
                            "at": self.me, "calling": downstream.host,
                            "status": status.as_u16(), "message": message,
                        },
                    }),
                };
            }
        };
        call.insert("status".into(), json!(status.as_u16()));
        let header_text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(decision) = header_text(DECISION_HEADER) {
            call.insert("sidecar_decision".into(), json!(decision));
        }
        // The filter's budget headers, as the sidecar answered this call.
        if let (Some(limit), Some(remaining)) = (
            header_text("x-ratelimit-limit"),
            header_text("x-ratelimit-remaining"),
        ) {
            call.insert(
                "ratelimit".into(),
                json!({ "limit": limit, "remaining": remaining }),
            );
        }
        let limited = header_text(LIMITED_HEADER);
        if let Some(sandbox) = &limited {
            call.insert("limited_sandbox".into(), json!(sandbox));
        }
        hop.insert("call".into(), Value::Object(call));

        match serde_json::from_slice::<Value>(&reply) {
            // Another shop-service answered (successfully or not): prepend this hop.
            Ok(mut value) if value.get("chain").is_some_and(Value::is_array) => {
                let mut chain = vec![json!(self.me)];
                chain.extend(value["chain"].as_array().cloned().unwrap_or_default());
                let mut hops = vec![Value::Object(hop)];
                hops.extend(value["hops"].as_array().cloned().unwrap_or_default());
                let route = format!(
                    "{} -> {}",
                    self.me,
                    value["route"].as_str().unwrap_or_default()
                );
                value["chain"] = Value::Array(chain);
                value["hops"] = Value::Array(hops);
                value["route"] = json!(route);
                Answer {
                    status,
                    body: value,
                }
            }
            // The sidecar (or the filter in it) answered: a local reply.
            _ => {
                let message = String::from_utf8_lossy(&reply).trim().to_owned();
                let message: String = message.chars().take(300).collect();
                let circuit = header_text(CIRCUIT_HEADER);
                let why = match (&limited, &circuit) {
                    (Some(sandbox), _) if status == StatusCode::TOO_MANY_REQUESTS => {
                        format!(" (sandbox {sandbox} over its rate limit)")
                    }
                    (_, Some(state)) => format!(" (circuit {state})"),
                    _ => String::new(),
                };
                let mut error = json!({
                    "at": self.me, "calling": downstream.host,
                    "status": status.as_u16(), "message": message,
                });
                if let Some(sandbox) = limited {
                    error["limited_sandbox"] = json!(sandbox);
                }
                if let Some(state) = circuit {
                    error["circuit"] = json!(state);
                }
                Answer {
                    status,
                    body: json!({
                        "chain": [self.me],
                        "route": format!(
                            "{} -> ✘ {}: {}{why}",
                            self.me,
                            downstream.host,
                            status.as_u16()
                        ),
                        "hops": [Value::Object(hop)],
                        "error": error,
                    }),
                }
            }
        }
    }
}

fn text_response(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn is_propagated(name: &HeaderName) -> bool {
    let name = name.as_str();
    PROPAGATED.contains(&name) || PROPAGATED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One outbound call on a fresh connection; returns status, headers and the whole body.
async fn send(
    address: &str,
    downstream: &Downstream,
    method: Method,
    path: &str,
    incoming: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let exchange = async {
        let mut builder = Request::builder().method(method);
        builder = if downstream.h2c {
            let uri: Uri = format!("http://{}{path}", downstream.host)
                .parse()
                .map_err(|e| format!("bad URI for {}: {e}", downstream.host))?;
            builder.version(Version::HTTP_2).uri(uri)
        } else {
            let host = HeaderValue::from_str(&downstream.host)
                .map_err(|e| format!("bad host {}: {e}", downstream.host))?;
            builder
                .version(Version::HTTP_11)
                .uri(path)
                .header(HOST, host)
        };
        for (name, value) in incoming {
            if is_propagated(name) || name == CONTENT_TYPE {
                builder = builder.header(name, value);
            }
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let response = if downstream.h2c {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2c handshake with {address}: {e}"))?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("h2c call to {address}: {e}"))?
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {address}: {e}"))?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("HTTP/1.1 call to {address}: {e}"))?
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {address}: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts.status, parts.headers, body))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")))
}

// ------------------------------------------------------------- failing on command ---

/// The path of the failure switch.
const FAIL_PATH: &str = "/admin/fail";

/// The status this instance answers every request with while it is made to fail (0: healthy).
#[derive(Default)]
struct FailSwitch(AtomicU16);

impl FailSwitch {
    fn status(&self) -> Option<StatusCode> {
        StatusCode::from_u16(self.0.load(Ordering::SeqCst)).ok()
    }

    /// `PUT /admin/fail` with a status code as the body fails; `DELETE` heals; `GET` tells.
    fn command(&self, me: &str, method: &Method, body: &[u8]) -> Response<Full<Bytes>> {
        match *method {
            Method::PUT | Method::POST => {
                let code = std::str::from_utf8(body)
                    .ok()
                    .and_then(|text| text.trim().parse::<u16>().ok())
                    .filter(|code| StatusCode::from_u16(*code).is_ok());
                let Some(code) = code else {
                    return text_response(
                        StatusCode::BAD_REQUEST,
                        "the body must be a status code, e.g. 503\n".into(),
                    );
                };
                self.0.store(code, Ordering::SeqCst);
                eprintln!("{me}: failing with {code} from now on");
            }
            Method::DELETE => {
                self.0.store(0, Ordering::SeqCst);
                eprintln!("{me}: healthy again");
            }
            Method::GET => {}
            _ => {
                return text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "PUT, DELETE or GET\n".into(),
                )
            }
        }
        let failing = self.status().map(|s| s.as_u16());
        text_response(
            StatusCode::OK,
            format!("{}\n", json!({ "served_by": me, "failing_with": failing })),
        )
    }

    /// A failing instance's answer: the status, and an error naming it.
    fn answer(&self, me: &str, status: StatusCode, protocol: &str) -> Response<Full<Bytes>> {
        let body = json!({
            "chain": [me],
            "route": format!("{me} ✘ {}", status.as_u16()),
            "hops": [{ "served_by": me, "protocol": protocol }],
            "error": { "at": me, "status": status.as_u16(), "message": format!("{me} is failing on purpose") },
        });
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .header("x-served-by", me)
            .body(Full::new(Bytes::from(format!("{body}\n"))))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

// ------------------------------------------------------------------ sandbox key ---

enum Key {
    Absent,
    Valid(String),
    /// A carrier was present but its value is not a sandbox key.
    Invalid(String),
}

impl Key {
    fn label(&self) -> &str {
        match self {
            Key::Absent => "-",
            Key::Valid(key) => key,
            Key::Invalid(_) => "<invalid>",
        }
    }
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request header the sandbox-router of the caller's sidecar sets to the key of a
/// registered, trusted, unexpired sandbox (its `key_header`), after removing any client copy.
const KEY_HEADER: &str = "x-sandbox-key";

/// The key whose order store a request uses: the one `x-sandbox-key` value. Several values
/// (which the sidecar never sends) or a malformed one touch no store.
fn store_key(headers: &HeaderMap) -> Key {
    let values: Vec<String> = headers
        .get_all(KEY_HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    match values.as_slice() {
        [] => Key::Absent,
        [key] if is_valid_key(key) => Key::Valid(key.clone()),
        _ => Key::Invalid(values.join(", ")),
    }
}

/// The sandbox key of a request's context, as the app reads it: the `sandbox` member of W3C `baggage`
/// first, then `x-sandbox`, `ot-baggage-sandbox`, `uberctx-sandbox`, `tracestate`.
fn sandbox_key(headers: &HeaderMap) -> Key {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let mut candidates: Vec<String> = Vec::new();
    for value in values("baggage") {
        candidates.extend(list_member(&value, KEY_MEMBER).map(|v| percent_decode(&v)));
    }
    candidates.extend(values("x-sandbox").into_iter().map(|v| v.trim().to_owned()));
    for name in ["ot-baggage-sandbox", "uberctx-sandbox"] {
        candidates.extend(values(name).into_iter().map(|v| percent_decode(v.trim())));
    }
    for value in values("tracestate") {
        candidates.extend(list_member(&value, KEY_MEMBER));
    }
    match candidates.iter().find(|c| is_valid_key(c)) {
        Some(key) => Key::Valid(key.clone()),
        None => match candidates.into_iter().next() {
            Some(raw) => Key::Invalid(raw),
            None => Key::Absent,
        },
    }
}

/// The value of list member `name` in a W3C `baggage` / `tracestate` value
/// (`a=1, sandbox=feature-x;prop=2`), properties dropped.
fn list_member(list: &str, name: &str) -> Option<String> {
    list.split(',').find_map(|member| {
        let (member_name, value) = member.split_once('=')?;
        if member_name.trim() != name {
            return None;
        }
        let value = value.split(';').next().unwrap_or_default();
        Some(value.trim().to_owned())
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------- orders ---

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    Production,
    Sandbox(String),
}

impl Store {
    fn label(&self) -> String {
        match self {
            Store::Production => "production".to_owned(),
            Store::Sandbox(key) => format!("sandbox:{key}"),
        }
    }

    fn file_name(&self) -> String {
        match self {
            Store::Production => "orders.production.jsonl".to_owned(),
            Store::Sandbox(key) => format!("orders.sandbox.{key}.jsonl"),
        }
    }

    fn id_prefix(&self) -> String {
        match self {
            Store::Production => "prod".to_owned(),
            Store::Sandbox(key) => key.clone(),
        }
    }
}

/// The order stores: in memory, mirrored to JSON-lines files with `--data-dir`.
struct Orders {
    dir: Option<PathBuf>,
    stores: Mutex<BTreeMap<Store, Vec<Value>>>,
}

impl Orders {
    fn open(dir: Option<PathBuf>) -> Result<Orders, String> {
        let mut stores = BTreeMap::new();
        if let Some(dir) = &dir {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let entries =
                fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for entry in entries.filter_map(Result::ok) {
                let file = entry.file_name().to_string_lossy().into_owned();
                let store = match file.as_str() {
                    "orders.production.jsonl" => Store::Production,
                    other => match other
                        .strip_prefix("orders.sandbox.")
                        .and_then(|rest| rest.strip_suffix(".jsonl"))
                    {
                        Some(key) if is_valid_key(key) => Store::Sandbox(key.to_owned()),
                        _ => continue,
                    },
                };
                let text = fs::read_to_string(entry.path())
                    .map_err(|e| format!("cannot read {file}: {e}"))?;
                let orders = text
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(serde_json::from_str)
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(|e| format!("{file} is not JSON lines: {e}"))?;
                stores.insert(store, orders);
            }
        }
        Ok(Orders {
            dir,
            stores: Mutex::new(stores),
        })
    }

    fn list(&self, store: &Store) -> Vec<Value> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.get(store).cloned().unwrap_or_default()
    }

    /// Adds an order; returns it and the store's new size.
    fn add(&self, store: &Store, details: Value, me: &str) -> Result<(Value, usize), String> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let orders = stores.entry(store.clone()).or_default();
        let placed_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("{}-{}", store.id_prefix(), orders.len() + 1);
        let order = json!({
            "id": id,
            "store": store.label(),
            "taken_by": me,
            "placed_at": placed_at,
            "details": details,
        });
        if let Some(dir) = &self.dir {
            let path = dir.join(store.file_name());
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            writeln!(file, "{order}")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        orders.push(order.clone());
        Ok((order, orders.len()))
    }
}
