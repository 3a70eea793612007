//! Process logs on stderr (startup, reloads, health changes, errors): env_logger with the
//! level from `log.level` or `$SWITCHYARD_LOG`, changeable by a reload. A failed TLS
//! handshake (scanners, probes, clients refusing our certificate) is logged by Pingora
//! at error level for every connection; it is demoted to debug here so that error lines
//! stay about Switchyard itself.

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Pingora's accept loop, which logs each failed handshake.
const ACCEPT_LOOP: &str = "pingora_core::services::listening";

struct ProcessLogger(env_logger::Logger);

impl Log for ProcessLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.target() == ACCEPT_LOOP && record.level() == Level::Error {
            let text = record.args().to_string();
            if text.starts_with("Downstream handshake") {
                if log::max_level() >= LevelFilter::Debug {
                    self.0.log(
                        &Record::builder()
                            .args(format_args!("{text}"))
                            .level(Level::Debug)
                            // Our own target: Pingora's is filtered to info and above.
                            .target("switchyard::tls")
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                }
                return;
            }
        }
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// `$SWITCHYARD_LOG` as the caller read and parsed it (the level names belong to the
/// config grammar, not to this leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    Unset,
    Level(LevelFilter),
    /// Set but not a level: warned about once, then ignored.
    Invalid(String),
}

/// Installs the logger; a valid `env` overrides `configured`.
pub fn init(configured: LevelFilter, env: &Override) {
    let mut builder = env_logger::Builder::new();
    // Everything passes the logger's own filter; `log::set_max_level` decides, so a
    // reload can change the level.
    builder
        .filter_level(LevelFilter::Trace)
        .filter_module("pingora_core", LevelFilter::Info)
        .filter_module("pingora_proxy", LevelFilter::Info)
        .target(env_logger::Target::Stderr);
    if log::set_boxed_logger(Box::new(ProcessLogger(builder.build()))).is_err() {
        return;
    }
    apply_level(configured, env);
    if let Override::Invalid(v) = env {
        log::warn!("SWITCHYARD_LOG={v:?} is not a log level (error, warn, info, debug, trace); using {configured}");
    }
}

/// Sets the process log level: `env` when valid, else `configured`.
pub fn apply_level(configured: LevelFilter, env: &Override) {
    let level = match env {
        Override::Level(l) => *l,
        Override::Unset | Override::Invalid(_) => configured,
    };
    log::set_max_level(level);
}
