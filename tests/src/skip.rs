//! Checks that need something a machine may lack (the istio/api CRDs, `/proc`). Under CI
//! (`CI=true`, as `.ci/run` is run) a missing prerequisite fails the test: CI must run every
//! check. Elsewhere the check is skipped, and says so with a `SKIPPED:` line written straight to
//! the process's stderr, past the test harness's output capture, so that it shows in the output
//! of a plain `cargo test` even though the test passes.

use std::io::Write;

/// Whether this is a CI run (`CI` is `true` or `1`).
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref().map(str::trim),
        Ok("true" | "TRUE" | "True" | "1")
    )
}

/// Reports that `check` cannot run here because of `why`: panics under CI, otherwise prints
/// `SKIPPED: <test>: <check>: <why>` (uncaptured) and returns, so the caller skips the check.
#[track_caller]
pub fn prerequisite_missing(check: &str, why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if in_ci() {
        panic!("{test}: {check} cannot run: {why} (CI=true: every check must run)");
    }
    let line = format!("SKIPPED: {test}: {check}: {why} (a failure under CI=true)\n");
    // Not `eprintln!`: the test harness captures that and shows it only for failing tests.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
