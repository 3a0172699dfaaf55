//! `ratelimit-service`: the tests' global rate limit service (`tests/src/ratelimit.rs`:
//! Envoy's `envoy.service.ratelimit.v3.RateLimitService` over gRPC, counting with Limitador in
//! memory) as a program, for the benchmark and for manual runs of
//! `envoy-config/global-rate-limit.yaml`:
//!
//! ```text
//! ratelimit-service --limits envoy-config/ratelimit/limits.yaml [--port 8081 | --listen ADDR]
//!                   [--port-file PATH]
//! ```
//!
//! It serves until it is killed. One instance only: its counters are in its memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use integration_tests::ratelimit::{Limits, RateLimitService, DOMAIN};

const USAGE: &str = "\
usage: ratelimit-service --limits FILE [--port PORT | --listen ADDR] [--port-file PATH]

  --limits FILE     the limits, YAML: `sandboxes: {KEY: PER_SECOND, ...}` and `default: PER_SECOND`
  --port PORT       serve on 127.0.0.1:PORT (0: a free port; the default is 8081)
  --listen ADDR     serve on ADDR (IP:PORT) instead
  --port-file PATH  write the bound port to PATH (atomically) once listening
";

struct Args {
    limits: PathBuf,
    listen: SocketAddr,
    port_file: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut limits = None;
    let mut listen: SocketAddr = "127.0.0.1:8081".parse().map_err(|e| format!("{e}"))?;
    let mut port_file = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--limits" => limits = Some(PathBuf::from(value()?)),
            "--port" => {
                let port: u16 = value()?
                    .parse()
                    .map_err(|e| format!("--port: not a port ({e})"))?;
                listen.set_port(port);
            }
            "--listen" => {
                listen = value()?
                    .parse()
                    .map_err(|e| format!("--listen: not IP:PORT ({e})"))?;
            }
            "--port-file" => port_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        limits: limits.ok_or("--limits is required")?,
        listen,
        port_file,
    })
}

fn write_port_file(path: &PathBuf, port: u16) -> Result<(), String> {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, format!("{port}\n"))
        .and_then(|()| std::fs::rename(&aside, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            if !err.is_empty() {
                eprintln!("ratelimit-service: {err}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let limits = match std::fs::read_to_string(&args.limits)
        .map_err(|e| e.to_string())
        .and_then(|text| Limits::from_yaml(&text))
    {
        Ok(limits) => limits,
        Err(err) => {
            eprintln!("ratelimit-service: {}: {err}", args.limits.display());
            return ExitCode::FAILURE;
        }
    };
    let service = match RateLimitService::serve_on(args.listen, &limits) {
        Ok(service) => service,
        Err(err) => {
            eprintln!("ratelimit-service: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.port_file {
        if let Err(err) = write_port_file(path, service.port()) {
            eprintln!("ratelimit-service: {err}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "ratelimit-service: domain {DOMAIN} on {} (gRPC envoy.service.ratelimit.v3); limits per second: {:?}, default {:?}",
        service.addr(),
        limits.sandboxes,
        limits.default
    );
    service.wait();
    ExitCode::SUCCESS
}
