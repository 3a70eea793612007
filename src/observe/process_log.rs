//! Process logs on stderr (startup, reloads, health changes, errors): env_logger with the
//! level from `log.level` or `$SWITCHYARD_LOG`, changeable by a reload. A failed TLS
//! handshake (scanners, probes, clients refusing our certificate) is logged by Pingora
//! at error level for every connection; it is demoted to debug here so that error lines
//! stay about Switchyard itself. Pingora's other warnings and errors pass a flood guard:
//! the same kind of line (target and opening words) is written at most once per
//! interval, and the next one says how many were held back — a fault that repeats per
//! request (every backend down, a slowloris wave) is a few lines a minute, not one per
//! client.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pingora's accept loop, which logs each failed handshake.
const ACCEPT_LOOP: &str = "pingora_core::services::listening";

struct ProcessLogger(env_logger::Logger, Flood);

/// One line per kind and interval.
const FLOOD_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes of a message that name its kind (the rest holds addresses, ids, counts).
const KIND_PREFIX: usize = 24;
/// Kinds remembered at most (forgotten all at once beyond it: a flood of distinct kinds
/// is itself bounded by this).
const MAX_KINDS: usize = 256;

/// Per kind of line: when it was last written and how many were held back since.
#[derive(Default)]
struct Flood(Mutex<HashMap<String, (Instant, u64)>>);

impl Flood {
    /// None: hold the line back; Some(n): write it, noting n held back before it.
    fn admit(&self, kind: String, now: Instant) -> Option<u64> {
        let mut kinds = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kinds.len() >= MAX_KINDS && !kinds.contains_key(&kind) {
            kinds.clear();
        }
        match kinds.get_mut(&kind) {
            Some((last, held)) if now.duration_since(*last) < FLOOD_INTERVAL => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

fn kind_of(target: &str, text: &str) -> String {
    let end = text
        .char_indices()
        .nth(KIND_PREFIX)
        .map_or(text.len(), |(i, _)| i);
    format!("{target}:{}", &text[..end])
}

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
        if record.target().starts_with("pingora") && record.level() <= Level::Warn {
            let text = record.args().to_string();
            match self
                .1
                .admit(kind_of(record.target(), &text), Instant::now())
            {
                None => return,
                Some(0) => {}
                Some(held) => {
                    let secs = FLOOD_INTERVAL.as_secs();
                    self.0.log(
                        &Record::builder()
                            .args(format_args!(
                                "{text} ({held} more like this in the last {secs}s)"
                            ))
                            .level(record.level())
                            .target(record.target())
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                    return;
                }
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
    let logger = ProcessLogger(builder.build(), Flood::default());
    if log::set_boxed_logger(Box::new(logger)).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_kind_is_written_once_per_interval_with_the_count() {
        let flood = Flood::default();
        let t0 = Instant::now();
        let kind = || {
            kind_of(
                "pingora_proxy",
                "Fail to proxy: Upstream ConnectRefused 10.0.0.1:80",
            )
        };
        assert_eq!(flood.admit(kind(), t0), Some(0));
        for i in 1..=500 {
            assert_eq!(flood.admit(kind(), t0 + Duration::from_millis(i)), None);
        }
        // Another kind is not held back by the first.
        let other = kind_of("pingora_proxy", "H2 handshake error: broken pipe");
        assert_eq!(flood.admit(other, t0), Some(0));
        assert_eq!(flood.admit(kind(), t0 + FLOOD_INTERVAL), Some(500));
        assert_eq!(flood.admit(kind(), t0 + FLOOD_INTERVAL * 3), Some(0));
    }

    #[test]
    fn addresses_after_the_opening_words_do_not_make_a_new_kind() {
        assert_eq!(
            kind_of("t", "Fail to proxy: Upstream ConnectRefused 10.0.0.1:80"),
            kind_of("t", "Fail to proxy: Upstream ConnectRefused 10.0.0.2:81"),
        );
        assert_eq!(kind_of("t", "é"), "t:é");
    }

    #[test]
    fn the_kind_table_stays_bounded() {
        let flood = Flood::default();
        let t0 = Instant::now();
        for i in 0..(MAX_KINDS * 3) {
            flood.admit(format!("{i:024}"), t0);
        }
        let n = flood.0.lock().map(|k| k.len()).unwrap_or(0);
        assert!(n <= MAX_KINDS, "{n}");
    }
}
