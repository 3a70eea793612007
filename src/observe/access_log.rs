//! The JSON access log (SPEC §7): one line per request, formatted on the request path
//! and handed to a writer thread through a bounded queue, so a slow disk or a full pipe
//! never blocks a request (lines are dropped and counted instead).

use crate::config::AccessLogTarget;
use once_cell::sync::OnceCell;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Bumped by SIGUSR1: writers reopen their file before writing the next line.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every access-log writer to reopen its file (logrotate's postrotate).
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// How many SIGUSR1 reopens were asked for: other log files (the admin audit log)
/// reopen when it moves.
pub fn reopen_generation() -> u64 {
    REOPEN.load(Ordering::Relaxed)
}

const QUEUE_LINES: usize = 16 * 1024;

pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds with microsecond precision.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// One HTTP request's line (SPEC §7); `http::log` fills it for proxied and answered
/// requests, `edge` for requests refused before any hook ran.
#[derive(Serialize)]
pub struct HttpEntry<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub route: &'a str,
    pub pool: &'a str,
    pub backend: &'a str,
    pub bytes_sent: usize,
    pub protocol: &'a str,
    pub tls: bool,
    /// Who ended the exchange (SPEC §13, `http::termination`).
    pub termination: &'static str,
    /// Backends this request was sent to.
    pub attempts: u32,
    /// The last attempt's connect time; null when no backend was reached.
    pub upstream_connect_ms: Option<f64>,
    /// The last attempt's wait for the response header; null when none arrived.
    pub upstream_response_ms: Option<f64>,
    /// With `server.geoip`: the client's country ("" when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'a str>,
    /// On a caching route (SPEC §11): HIT, MISS, STALE, EXPIRED, REVALIDATED or BYPASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// How long the request waited for another request's fetch of the same key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_wait_ms: Option<f64>,
}

impl HttpEntry<'_> {
    /// A request refused while its header was still being read (Pingora's parser, the
    /// header deadline): nothing of it is known but who sent it and when.
    pub fn refused_header(client_ip: String, status: u16, took: Duration, tls: bool) -> Self {
        HttpEntry {
            ts: timestamp(),
            request_id: "",
            client_ip,
            method: "",
            host: "",
            path: "",
            status,
            duration_ms: millis(took),
            route: "",
            pool: "",
            backend: "",
            bytes_sent: 0,
            protocol: "HTTP/1.1",
            tls,
            // The header deadline is the client's timeout; a malformed header a refusal.
            termination: if status == 408 { "CT" } else { "PR" },
            attempts: 0,
            upstream_connect_ms: None,
            upstream_response_ms: None,
            country: None,
            cache: None,
            cache_wait_ms: None,
        }
    }
}

pub struct AccessLog {
    target: AccessLogTarget,
    /// Started on first use, so the thread exists in the daemonised child.
    queue: OnceCell<SyncSender<Vec<u8>>>,
    dropped: AtomicU64,
}

impl AccessLog {
    pub fn new(target: AccessLogTarget) -> Self {
        AccessLog {
            target,
            queue: OnceCell::new(),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn target(&self) -> &AccessLogTarget {
        &self.target
    }

    pub fn enabled(&self) -> bool {
        self.target != AccessLogTarget::Off
    }

    /// One JSON line, newline included.
    pub fn line<T: Serialize>(entry: &T) -> Option<Vec<u8>> {
        let mut line = Vec::with_capacity(320);
        serde_json::to_writer(&mut line, entry).ok()?;
        line.push(b'\n');
        Some(line)
    }

    pub fn write<T: Serialize>(&self, entry: &T) {
        if !self.enabled() {
            return;
        }
        let Some(line) = Self::line(entry) else {
            return;
        };
        let queue = self.queue.get_or_init(|| start_writer(self.target.clone()));
        match queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    log::warn!("access log cannot keep up: {} lines dropped so far", n + 1);
                }
            }
        }
    }
}

fn open(target: &AccessLogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::Stderr => Box::new(std::io::stderr()),
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        AccessLogTarget::Off => Box::new(std::io::sink()),
    })
}

fn start_writer(target: AccessLogTarget) -> SyncSender<Vec<u8>> {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer_loop(target, rx));
    if let Err(e) = spawned {
        log::error!("cannot start the access log writer: {e}");
    }
    tx
}

fn writer_loop(target: AccessLogTarget, rx: Receiver<Vec<u8>>) {
    let mut generation = REOPEN.load(Ordering::Relaxed);
    let mut out = match open(&target) {
        Ok(w) => std::io::BufWriter::with_capacity(64 * 1024, w),
        Err(e) => {
            log::error!("cannot open the access log {target:?}: {e}");
            return;
        }
    };
    while let Ok(line) = rx.recv() {
        let wanted = REOPEN.load(Ordering::Relaxed);
        if wanted != generation {
            generation = wanted;
            let _ = out.flush();
            match open(&target) {
                Ok(w) => out = std::io::BufWriter::with_capacity(64 * 1024, w),
                Err(e) => log::error!("cannot reopen the access log {target:?}: {e}"),
            }
        }
        let mut ok = out.write_all(&line).is_ok();
        // Batch whatever is already queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            ok &= out.write_all(&more).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            log::warn!("access log write failed");
        }
    }
}
