//! Configuration reload (SIGHUP and `POST /api/v1/reload`): parse and validate the file,
//! build the new runtime completely (keeping unchanged pools and their state), then swap
//! it in atomically. An invalid file changes nothing; every error is logged.

use crate::config::{self, AcmeConfig, Config, Diagnostic, ListenerConfig};
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
    /// Listener addresses bound at startup, and their ACME settings (the ACME service
    /// is started with the listener): a change of either needs an upgrade.
    pub bound: Vec<(String, std::net::SocketAddr, Option<AcmeConfig>)>,
    /// The admin listener's address bound at startup (its tokens and allowlist reload;
    /// its address needs an upgrade).
    pub admin_listen: Option<std::net::SocketAddr>,
    pub notify: watch::Sender<u64>,
    pub state: Arc<StateStore>,
    /// Each TLS listener's certificate store: a reload re-reads the files.
    pub cert_stores: Vec<(String, Arc<CertStore>)>,
}

fn acme_of(l: &ListenerConfig) -> Option<AcmeConfig> {
    l.tls.as_ref().and_then(|t| t.acme.clone())
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        runtime: SharedRuntime,
        config: &Config,
        state: Arc<StateStore>,
        cert_stores: Vec<(String, Arc<CertStore>)>,
    ) -> (Arc<Self>, watch::Receiver<u64>) {
        let (notify, rx) = watch::channel(0);
        let bound = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.listen, acme_of(l)))
            .collect();
        (
            Arc::new(Reloader {
                path,
                runtime,
                bound,
                admin_listen: config.admin.as_ref().map(|a| a.listen),
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
        for l in &loaded.config.listeners {
            match self.bound.iter().find(|(name, _, _)| name == &l.name) {
                Some((_, addr, acme)) if *addr == l.listen => {
                    if *acme != acme_of(l) {
                        log::warn!(
                            "reload: listener {}'s tls.acme changed: this needs an upgrade (switchyard -u, then SIGQUIT); ACME keeps its old settings until then",
                            l.name
                        );
                    }
                }
                Some((_, addr, _)) => log::warn!(
                    "reload: listener {} moves from {addr} to {}: this needs an upgrade (switchyard -u, then SIGQUIT); it keeps serving on {addr} until then",
                    l.name,
                    l.listen
                ),
                None => log::warn!(
                    "reload: new listener {} on {} needs an upgrade (switchyard -u, then SIGQUIT) before it serves",
                    l.name,
                    l.listen
                ),
            }
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
        let admin_wanted = loaded.config.admin.as_ref().map(|a| a.listen);
        if admin_wanted != self.admin_listen {
            let show =
                |a: Option<std::net::SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
            log::warn!(
                "reload: admin.listen changes from {} to {}: this needs an upgrade (switchyard -u, then SIGQUIT); until then the admin listener stays where it is{}",
                show(self.admin_listen),
                show(admin_wanted),
                if admin_wanted.is_none() { " and refuses every request" } else { ", with the new tokens and allow" }
            );
        }
        let redis_now = crate::limits::cluster::CLUSTER
            .get()
            .map(|c| c.url.as_str());
        let redis_wanted = loaded.config.cluster.as_ref().map(|c| c.redis.as_str());
        if redis_now != redis_wanted {
            let show = |url: Option<&str>| url.map_or("none".to_string(), log_address);
            log::warn!(
                "reload: cluster.redis changes from {} to {}: this needs a restart or an upgrade (switchyard -u, then SIGQUIT); until then rate limits and admin sync keep using the old setting",
                show(redis_now),
                show(redis_wanted)
            );
        }
        let old = self.runtime.load_full();
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
