//! A test HTTP client: HTTP/1.1 or h2c (prior knowledge), one fresh connection per request,
//! arbitrary (repeated, non-UTF-8) headers and an explicit :authority / Host.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::upstream::{GRPC_EMPTY_MESSAGE, UPSTREAM_HEADER};

/// Default deadline for one request (connect, send, and read the whole response).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Wire protocol spoken to Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::H2c];
}

/// A request to send; build it with the constructors and chained setters.
#[derive(Clone, Debug)]
pub struct TestRequest {
    protocol: Protocol,
    method: Method,
    path: String,
    authority: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timeout: Duration,
    source: Option<IpAddr>,
}

impl TestRequest {
    pub fn new(method: Method, authority: &str, path: &str) -> Self {
        TestRequest {
            protocol: Protocol::Http1,
            method,
            path: path.to_owned(),
            authority: authority.as_bytes().to_vec(),
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            source: None,
        }
    }

    pub fn get(authority: &str, path: &str) -> Self {
        Self::new(Method::GET, authority, path)
    }

    pub fn post(authority: &str, path: &str) -> Self {
        Self::new(Method::POST, authority, path)
    }

    /// A unary gRPC call over h2c: POST, `content-type: application/grpc`, `te: trailers`,
    /// and one empty length-prefixed message as the body.
    pub fn grpc(authority: &str, method_path: &str) -> Self {
        Self::post(authority, method_path)
            .protocol(Protocol::H2c)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Bytes::from_static(&GRPC_EMPTY_MESSAGE))
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn http1(self) -> Self {
        self.protocol(Protocol::Http1)
    }

    pub fn h2c(self) -> Self {
        self.protocol(Protocol::H2c)
    }

    /// Raw :authority / Host bytes (may be non-UTF-8; only HTTP/1.1 can carry those).
    pub fn authority_bytes(mut self, authority: &[u8]) -> Self {
        self.authority = authority.to_vec();
        self
    }

    /// Appends a header (repeating a name sends it several times).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Appends a header whose value is arbitrary bytes (e.g. obs-text / non-UTF-8).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
        let value = HeaderValue::from_bytes(value)
            .unwrap_or_else(|e| panic!("invalid bytes for header {name}: {value:?}: {e}"));
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects from this local IP (e.g. `127.0.0.2`: all of 127.0.0.0/8 is loopback on Linux),
    /// so Envoy sees that downstream address.
    pub fn source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    pub fn protocol_used(&self) -> Protocol {
        self.protocol
    }

    /// Opens a connection and sends the request as raw HTTP/1.1 bytes without reading the
    /// answer; the returned stream closes the connection when dropped (a client that gives up
    /// mid-request). Only for requests whose authority and headers are valid text.
    pub async fn send_and_abandon(self, addr: SocketAddr) -> Result<TcpStream, String> {
        let mut stream = connect(addr, self.source).await?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            String::from_utf8_lossy(&self.authority),
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        Ok(stream)
    }

    /// Sends the request and panics if no HTTP response comes back in time.
    pub async fn send(self, addr: SocketAddr) -> TestResponse {
        let summary = format!(
            "{:?} {} {} (authority {:?})",
            self.protocol,
            self.method,
            self.path,
            String::from_utf8_lossy(&self.authority)
        );
        match self.try_send(addr).await {
            Ok(response) => response,
            Err(err) => panic!("request {summary} to {addr} failed: {err}"),
        }
    }

    /// Sends the request; errors are connection failures, protocol errors and time-outs.
    pub async fn try_send(self, addr: SocketAddr) -> Result<TestResponse, String> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(addr)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no complete response within {timeout:?}")),
        }
    }

    async fn exchange(self, addr: SocketAddr) -> Result<TestResponse, String> {
        let stream = connect(addr, self.source).await?;
        let io = TokioIo::new(stream);
        let protocol = self.protocol;
        let request = self.into_hyper_request()?;

        let response = match protocol {
            Protocol::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1 handshake: {e}"))?;
                tokio::spawn(conn);
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("HTTP/1 exchange: {e}"))?
            }
            Protocol::H2c => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("h2c handshake: {e}"))?;
                tokio::spawn(conn);
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("h2c exchange: {e}"))?
            }
        };

        read_response(response).await
    }

    fn into_hyper_request(self) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder().method(self.method.clone());
        match self.protocol {
            Protocol::Http1 => {
                let host = HeaderValue::from_bytes(&self.authority)
                    .map_err(|e| format!("authority is not a valid Host value: {e}"))?;
                let uri: Uri = self
                    .path
                    .parse()
                    .map_err(|e| format!("invalid path {:?}: {e}", self.path))?;
                builder = builder
                    .version(Version::HTTP_11)
                    .uri(uri)
                    .header(http::header::HOST, host);
            }
            Protocol::H2c => {
                let authority = std::str::from_utf8(&self.authority)
                    .map_err(|_| "h2c :authority must be UTF-8 (hyper builds it from a URI)")?;
                let uri: Uri = format!("http://{authority}{}", self.path)
                    .parse()
                    .map_err(|e| format!("cannot build h2c URI from {authority:?}: {e}"))?;
                builder = builder.version(Version::HTTP_2).uri(uri);
            }
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(self.body))
            .map_err(|e| format!("building request: {e}"))
    }
}

async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let stream = match source {
        None => TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect(addr)
                .await
                .map_err(|e| format!("connect from {ip}: {e}"))?
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    Ok(stream)
}

async fn read_response(
    response: http::Response<hyper::body::Incoming>,
) -> Result<TestResponse, String> {
    let (parts, body) = response.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("reading response body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(TestResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Sends `request` — raw HTTP/1.1 bytes, sent exactly as given (header-name case, spacing,
/// repeated headers) — on a fresh connection from `source`, and reads the answer until the
/// connection closes (so the request should carry `connection: close`).
pub async fn raw_http1_exchange(
    addr: SocketAddr,
    source: Option<IpAddr>,
    request: &[u8],
) -> Result<TestResponse, String> {
    let exchange = async {
        let mut stream = connect(addr, source).await?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse_http1_response(&raw)
    };
    match tokio::time::timeout(DEFAULT_REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no complete response within {DEFAULT_REQUEST_TIMEOUT:?}"
        )),
    }
}

fn parse_http1_response(raw: &[u8]) -> Result<TestResponse, String> {
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..text_end]).into_owned();
    let mut body = raw[text_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: StatusCode = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("bad header name {name:?}: {e}"))?;
        let value = HeaderValue::from_bytes(value.trim().as_bytes())
            .map_err(|e| format!("bad header value {value:?}: {e}"))?;
        headers.append(name, value);
    }
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(TestResponse {
        status,
        version: Version::HTTP_11,
        headers,
        body: Bytes::from(body),
        trailers: None,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = raw.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        raw = raw.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// A persistent connection for many requests (the requests' own protocol and source are
/// ignored: the connection's are used). HTTP/1.1 sends one request at a time; an h2c
/// connection can be [`shared`](Connection::share) by concurrent tasks (one stream each).
pub struct Connection {
    sender: Sender,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2c(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    pub async fn open(
        addr: SocketAddr,
        protocol: Protocol,
        source: Option<IpAddr>,
    ) -> Result<Connection, String> {
        let io = TokioIo::new(connect(addr, source).await?);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1 handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::Http1(sender)
            }
            Protocol::H2c => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("h2c handshake: {e}"))?;
                tokio::spawn(conn);
                Sender::H2c(sender)
            }
        };
        Ok(Connection { sender })
    }

    /// Another handle on the same h2c connection (`None` for HTTP/1.1).
    pub fn share(&self) -> Option<Connection> {
        match &self.sender {
            Sender::H2c(sender) => Some(Connection {
                sender: Sender::H2c(sender.clone()),
            }),
            Sender::Http1(_) => None,
        }
    }

    /// Sends one request on this connection, within the request's timeout.
    pub async fn send(&mut self, request: TestRequest) -> Result<TestResponse, String> {
        let timeout = request.timeout;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::Http1(sender) => {
                    let request = request.protocol(Protocol::Http1).into_hyper_request()?;
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("HTTP/1 connection: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("HTTP/1 exchange: {e}"))?
                }
                Sender::H2c(sender) => {
                    let request = request.protocol(Protocol::H2c).into_hyper_request()?;
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("h2c connection: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("h2c exchange: {e}"))?
                }
            };
            read_response(response).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no complete response within {timeout:?}")),
        }
    }
}

/// What came back.
#[derive(Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl TestResponse {
    /// A response header as (lossy) text; repeated headers joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        join_values(&self.headers, name)
    }

    /// Which upstream answered (`x-upstream`), if any did.
    pub fn upstream(&self) -> Option<String> {
        self.header(UPSTREAM_HEADER)
    }

    /// `grpc-status` from the trailers, or from the headers of a trailers-only response.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| join_values(t, "grpc-status"))
            .or_else(|| self.header("grpc-status"))
    }

    /// `grpc-message` from the trailers, or from the headers of a trailers-only response.
    pub fn grpc_message(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| join_values(t, "grpc-message"))
            .or_else(|| self.header("grpc-message"))
    }

    /// The upstream's JSON echo of the request it received; panics if the body is not one.
    pub fn echo(&self) -> Echo {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(value) if value.get("upstream").is_some() => Echo(value),
            _ => panic!("response is not an upstream echo: {self:?}"),
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for TestResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} {}", self.version, self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "  {name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        let body = self.body_text();
        let shown: String = body.chars().take(2000).collect();
        write!(f, "  body ({} bytes): {shown}", self.body.len())?;
        if let Some(trailers) = &self.trailers {
            for (name, value) in trailers {
                write!(
                    f,
                    "\n  trailer {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                )?;
            }
        }
        Ok(())
    }
}

fn join_values(map: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = map
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(", "))
    }
}

/// The JSON echo an upstream returns: what it received.
#[derive(Clone, Debug)]
pub struct Echo(pub serde_json::Value);

impl Echo {
    fn str_field(&self, field: &str) -> String {
        self.0
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn upstream(&self) -> String {
        self.str_field("upstream")
    }

    /// The :authority (h2) or Host (HTTP/1.1) the upstream received.
    pub fn authority(&self) -> String {
        self.str_field("authority")
    }

    pub fn method(&self) -> String {
        self.str_field("method")
    }

    pub fn path(&self) -> String {
        self.str_field("path")
    }

    /// Every value received for a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0
            .get("headers")
            .and_then(|h| h.get(name.to_ascii_lowercase()))
            .and_then(|v| v.as_array())
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A received header, repeated values joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        if values.is_empty() {
            None
        } else {
            Some(values.join(", "))
        }
    }
}
