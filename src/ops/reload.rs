//! Configuration reload (SIGHUP and `POST /api/v1/reload`): parse and validate the file,
//! build the new runtime completely (keeping unchanged pools and their state), then swap
//! it in atomically. An invalid file changes nothing; every error is logged.

use crate::config::process::{self, ProcessConfig};
use crate::config::{self, Diagnostic};
use crate::limits::cluster::log_address;
use crate::observe::metrics::METRICS;
use crate::observe::process_log;
use crate::runtime::{Runtime, SharedRuntime};
use crate::state::store::StateStore;
use crate::tls::store::{CertStore, Certified};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub struct Reloader {
    pub path: PathBuf,
    pub runtime: SharedRuntime,
    pub notify: watch::Sender<u64>,
    pub state: Arc<StateStore>,
    /// Each TLS listener's certificate store: a reload re-reads the files.
    pub cert_stores: Vec<(String, Arc<CertStore>)>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        runtime: SharedRuntime,
        state: Arc<StateStore>,
        cert_stores: Vec<(String, Arc<CertStore>)>,
    ) -> (Arc<Self>, watch::Receiver<u64>) {
        let (notify, rx) = watch::channel(0);
        (
            Arc::new(Reloader {
                path,
                runtime,
                notify,
                state,
                cert_stores,
            }),
            rx,
        )
    }

    /// Re-reads the file and swaps the runtime; on failure returns every error.
    pub fn reload(&self) -> Result<(), Vec<Diagnostic>> {
        let result = self.try_reload();
        let outcome = if result.is_ok() { "success" } else { "failure" };
        METRICS.config_reloads.with_label_values(&[outcome]).inc();
        result
    }

    fn try_reload(&self) -> Result<(), Vec<Diagnostic>> {
        let loaded = match config::load(&self.path) {
            Ok(l) => l,
            Err(errors) => {
                for e in &errors {
                    log::error!("reload rejected: {e}");
                }
                log::error!(
                    "reload of {} rejected ({} errors); the running configuration is unchanged",
                    self.path.display(),
                    errors.len()
                );
                return Err(errors);
            }
        };
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        let old = self.runtime.load_full();
        let wanted = ProcessConfig::of(&loaded.config);
        for fixed in process::changes(&old.process, &wanted, &log_address) {
            log::warn!("{fixed}");
        }
        // Certificates were already checked by `config::load`; re-read them into each
        // listener's store (new contents at unchanged paths included).
        for (name, store) in &self.cert_stores {
            let files = loaded
                .config
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .and_then(|l| l.tls.as_ref());
            if let Some(tls) = files {
                match Certified::load_files(&tls.certificates) {
                    Ok(files) => {
                        store.set_files(files);
                        crate::tls::publish_expiry(name, store);
                    }
                    Err(e) => {
                        log::error!("reload: listener {name} keeps its old certificates: {e}")
                    }
                }
            }
        }
        let new = Runtime::build(&loaded.config, Some(&old), &self.state);
        process_log::apply_level(loaded.config.log.level, &log_override());
        self.runtime.store(Arc::new(new));
        self.notify.send_modify(|g| *g += 1);
        log::info!(
            "reloaded {}: {} route(s), {} pool(s)",
            self.path.display(),
            loaded.config.routes.len(),
            loaded.config.pools.len()
        );
        Ok(())
    }
}

/// Runs `action` on every delivery of `signal` until shutdown (SIGHUP reloads, SIGUSR1
/// reopens the access log).
pub struct OnSignal<F> {
    pub signal: SignalKind,
    pub name: &'static str,
    pub action: F,
}

#[async_trait]
impl<F: Fn() + Send + Sync> BackgroundService for OnSignal<F> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut deliveries = match signal(self.signal) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch {}: {e}; that signal does nothing", self.name);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = deliveries.recv() => {
                    if got.is_none() { return }
                    (self.action)();
                }
            }
        }
    }
}

/// SIGHUP: reload the configuration file.
pub fn on_sighup(reloader: Arc<Reloader>) -> OnSignal<impl Fn() + Send + Sync> {
    OnSignal {
        signal: SignalKind::hangup(),
        name: "SIGHUP",
        action: move || {
            log::info!("SIGHUP: reloading {}", reloader.path.display());
            let _ = reloader.reload();
        },
    }
}

/// SIGUSR1: reopen the access-log file (for logrotate).
pub fn on_sigusr1() -> OnSignal<impl Fn() + Send + Sync> {
    OnSignal {
        signal: SignalKind::user_defined1(),
        name: "SIGUSR1",
        action: || {
            // Reopen first: lines of requests after this log line go to the new file.
            crate::observe::access_log::reopen_files();
            log::info!("SIGUSR1: reopening the access log");
        },
    }
}

/// `$SWITCHYARD_LOG`, parsed with the config's level names.
pub fn log_override() -> process_log::Override {
    match std::env::var("SWITCHYARD_LOG") {
        Err(_) => process_log::Override::Unset,
        Ok(v) => match crate::config::value::parse_level(&v) {
            Some(level) => process_log::Override::Level(level),
            None => process_log::Override::Invalid(v),
        },
    }
}
