//! Routes the `log` crate and panic messages to Envoy's logger (`dynamic_modules`), so they land
//! in Envoy's log with their Rust source location instead of on stderr.

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::ffi::{self, Buffer, LogLevel};
use super::optional::optional;

struct EnvoyLogger;

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Envoy's log level for a `log` level.
fn envoy_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

impl Log for EnvoyLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // SAFETY: takes no pointer and only reads the logger's level, which is safe from any
        // thread, pacing thread included.
        unsafe { ffi::envoy_dynamic_module_callback_log_enabled(envoy_level(metadata.level())) }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let level = envoy_level(record.level());
        let file = record.file().unwrap_or_default();
        // SAFETY: the buffers view `message` and `file`, which outlive the call, and Envoy reads
        // them only during it; both loggers may be called from any thread; `log_v2` was found
        // under its own name with this signature (`optional`).
        unsafe {
            match optional().log_v2 {
                Some(log_v2) => log_v2(
                    level,
                    Buffer::of(message.as_bytes()),
                    Buffer::of(file.as_bytes()),
                    record.line().unwrap_or(0),
                ),
                None => {
                    ffi::envoy_dynamic_module_callback_log(level, Buffer::of(message.as_bytes()))
                }
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the Envoy logger and a panic hook that reports through it. Idempotent.
pub(super) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        // Envoy decides what is printed (`--component-log-level dynamic_modules:debug`).
        log::set_max_level(LevelFilter::Trace);
        // Only where it panicked: a panic's message can quote the text it failed on (a slice of
        // a prompt, a reply), and no request or reply text may reach a log.
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
            log::error!(
                "llm_edge: panic at {location}; the request fails closed and Envoy keeps serving"
            );
        }));
    }
}
