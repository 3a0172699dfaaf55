//! The `log` facade's logger: writes through `proxy_log`, and enables only what the host's log
//! level lets through (read when the filter is configured and on every tick, so a level changed
//! through Envoy's admin API takes effect within a tick), so that a disabled log line costs no
//! host call and no formatting.

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::abi;

struct ProxyLogger;

static LOGGER: ProxyLogger = ProxyLogger;

impl Log for ProxyLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Trace => 0,
            Level::Debug => 1,
            Level::Info => 2,
            Level::Warn => 3,
            Level::Error => 4,
        };
        abi::log(level, &format!("sandbox-router: {}", record.args()));
    }

    fn flush(&self) {}
}

/// Installs the logger (once per VM) and follows the host's level.
pub fn follow_host_level() {
    // Fails only when already installed, which is fine.
    let _ = log::set_logger(&LOGGER);
    let filter = match abi::log_level() {
        Ok(0) => LevelFilter::Trace,
        Ok(1) => LevelFilter::Debug,
        Ok(2) => LevelFilter::Info,
        Ok(3) => LevelFilter::Warn,
        Ok(4 | 5) => LevelFilter::Error,
        Ok(_) => LevelFilter::Off,
        // Without the host's level, errors and warnings still get through.
        Err(_) => LevelFilter::Warn,
    };
    log::set_max_level(filter);
}
