//! Process wiring: load the configuration, set up logging, build Pingora's `Server` and
//! one proxy service per listener, then run (SPEC §1, §2).

use crate::admin::api::Api;
use crate::admin::cache_sync::CacheSync;
use crate::admin::sync::AdminSync;
use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::{self, Config, Diagnostic, ListenerConfig};
use crate::edge::app::Side;
use crate::edge::{fd_budget, EarlyGate, EdgeApp, Gate, PreTlsHeader};
use crate::http::limits;
use crate::http::proxy::Proxy;
use crate::observe::process_log;
use crate::ops::reload::{on_sighup, on_sigusr1, Reloader};
use crate::ops::shutdown::{Signals, WorkCount};
use crate::ops::tasks::{ClusterLink, LimiterJanitor, PoolTasks, UntilShutdown};
use crate::quic::QuicListener;
use crate::runtime::{self, Runtime, SharedRuntime};
use crate::serve::metrics;
use crate::state::store::StateStore;
use crate::tcp::TcpProxy;
use crate::tls::acme::{AcmeService, Challenges};
use crate::tls::{self, store::CertStore};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig as Endpoint};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Runs the command line; returns the exit code (it does not return when serving).
pub fn main(cli: &Cli) -> i32 {
    ignore_signals_until_handled();
    let path = cli.config_path();
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(errors) => {
            report_invalid(&path, &errors);
            return 1;
        }
    };
    process_log::init(loaded.config.log.level, &crate::ops::reload::log_override());
    if cli.test {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "switchyard: the configuration file {} is valid",
            path.display()
        );
        return 0;
    }
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    match serve(cli, &path, loaded.config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchyard: {e}");
            1
        }
    }
}

fn report_invalid(path: &Path, errors: &[Diagnostic]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "switchyard: the configuration file {} is invalid ({} error{})",
        path.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// Idle backend connections kept for reuse, per worker thread: Pingora 0.9 keeps one
/// LRU pool per listener of this size × threads, shared by all backends of all pools
/// (so with many backends the default of 128 starts closing connections that would be
/// reused a moment later). 256 lets every request in flight on a busy thread give its
/// connection back; an idle pooled connection costs about 1 KB here plus its sockets,
/// and is closed after the pool's `timeouts.idle` (docs/PERFORMANCE.md).
const UPSTREAM_IDLE_PER_THREAD: usize = 256;

fn server_conf(cli: &Cli, c: &Config) -> ServerConf {
    let threads = if c.server.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        c.server.threads
    };
    ServerConf {
        threads,
        daemon: cli.daemon,
        pid_file: c.server.pid_file.display().to_string(),
        upgrade_sock: c.server.upgrade_sock.display().to_string(),
        user: c.server.user.clone(),
        group: c.server.group.clone(),
        // Pingora stops its runtimes (cutting what still runs) after this: on SIGTERM
        // in-flight work must get its whole shutdown_timeout (ops::shutdown exits as
        // soon as it is done).
        grace_period_seconds: Some(
            c.server
                .grace_period
                .max(c.server.shutdown_timeout)
                .as_secs(),
        ),
        graceful_shutdown_timeout_seconds: Some(c.server.shutdown_timeout.as_secs()),
        // Retries are bounded by each pool's `retries` and `try_duration` (at most 5m
        // of connect retries 250 ms apart); Pingora's default of 16 would cut the latter.
        max_retries: crate::http::retry::MAX_PROXY_TRIES,
        upstream_keepalive_pool_size: UPSTREAM_IDLE_PER_THREAD,
        ..ServerConf::default()
    }
}

/// Why the process could not start serving (after the configuration passed).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(transparent)]
    Acme(#[from] crate::tls::acme::AcmeError),
    #[error(transparent)]
    Quic(#[from] crate::quic::tls::QuicTlsError),
}

fn serve(cli: &Cli, path: &Path, config: Config) -> Result<(), StartError> {
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(cli, &config));
    server.bootstrap();
    let (file_limit, client_budget) = fd_budget::init();
    log::info!("file limit {file_limit}: client connections are refused beyond {client_budget}");

    let state = Arc::new(StateStore::open(
        config.admin.as_ref().map(|a| a.state_file.clone()),
    )?);
    let runtime = runtime::shared(Runtime::build(&config, None, &state));
    crate::observe::tracing::configure(config.tracing.as_ref());
    let ready = Arc::new(AtomicBool::new(true));
    let mut cert_stores = Vec::new();
    let challenges = Arc::new(Challenges::default());
    let work = WorkCount::default();
    for (index, listener) in config.listeners.iter().enumerate() {
        let store = add_listener(
            &mut server,
            index,
            listener,
            &runtime,
            &ready,
            &challenges,
            &work,
        )?;
        if let Some(store) = store {
            if let Some(acme) = listener.tls.as_ref().and_then(|t| t.acme.as_ref()) {
                let service =
                    AcmeService::prepare(&listener.name, acme, &store, challenges.clone())?;
                server.add_service(background_service(
                    &format!("acme {}", listener.name),
                    service,
                ));
            }
            tls::publish_expiry(&listener.name, &store);
            cert_stores.push((listener.name.clone(), store));
        }
    }
    for t in &config.tcp_services {
        let gate = Gate::new(&t.name, Side::Service(t.name.clone()), runtime.clone());
        let app = EdgeApp {
            gate: gate.clone(),
            inner: Arc::new(TcpProxy {
                service: t.name.clone(),
                runtime: runtime.clone(),
                work: work.clone(),
            }),
            header_before_tls: false,
        };
        let mut service = Service::new(format!("tcp {}", t.name), app);
        service.set_connection_filter(Arc::new(EarlyGate(gate)));
        service.add_tcp(&t.listen.to_string());
        server.add_service(service);
    }
    if !cert_stores.is_empty() {
        server.add_service(background_service(
            "OCSP stapling",
            tls::ocsp::Stapler {
                stores: cert_stores.clone(),
            },
        ));
    }
    let (reloader, reloaded) = Reloader::new(
        path.to_path_buf(),
        runtime.clone(),
        state.clone(),
        cert_stores,
    );
    // Its own two Redis connections, only for a process that caches.
    let mut purges = None;
    if let (Some(cluster), Some(_)) = (&config.cluster, &config.cache) {
        let (sync, queue) = CacheSync::new(&cluster.redis, runtime.clone());
        server.add_service(background_service("cache purge sync", UntilShutdown(sync)));
        purges = Some(queue);
    }
    if let Some(admin) = &config.admin {
        let api = Api {
            runtime: runtime.clone(),
            reloader: reloader.clone(),
            state: state.clone(),
            ready: ready.clone(),
            guard: Default::default(),
            rollouts: Default::default(),
            purges,
        };
        let mut service = Service::new("admin".to_string(), HttpServer::new_app(AdminApp(api)));
        service.add_tcp(&admin.listen.to_string());
        service.threads = Some(1);
        server.add_service(service);
    }
    if let Some(m) = &config.metrics {
        metrics::register_pools(runtime.clone());
        let mut service = Service::new(
            "metrics".to_string(),
            HttpServer::new_app(metrics::MetricsApp),
        );
        service.add_tcp(&m.listen.to_string());
        service.threads = Some(1);
        server.add_service(service);
    }
    if let Some(cluster) = &config.cluster {
        if let Some(link) = runtime.load().cluster.clone() {
            server.add_service(background_service(
                "cluster link",
                UntilShutdown(ClusterLink(link)),
            ));
        }
        server.add_service(background_service(
            "admin sync",
            UntilShutdown(AdminSync::new(
                &cluster.redis,
                state.clone(),
                runtime.clone(),
                reloaded.clone(),
            )),
        ));
    }
    server.add_service(background_service(
        "pool tasks",
        PoolTasks {
            runtime: runtime.clone(),
            reloaded,
        },
    ));
    server.add_service(background_service(
        "rate-limit cleanup",
        LimiterJanitor {
            runtime: runtime.clone(),
        },
    ));
    server.add_service(background_service("reload on SIGHUP", on_sighup(reloader)));
    server.add_service(background_service("reopen logs on SIGUSR1", on_sigusr1()));
    log::info!(
        "switchyard {} starting: {} listener(s), {} tcp service(s), {} route(s), {} pool(s)",
        env!("CARGO_PKG_VERSION"),
        config.listeners.len(),
        config.tcp_services.len(),
        config.routes.len(),
        config.pools.len()
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            ready,
            work,
            shutdown_timeout: config.server.shutdown_timeout,
        }),
    });
    Ok(())
}

/// SIGHUP (reload) and SIGUSR1 (reopen logs) terminate a process by default, and their
/// handlers start with the background services, a second or two after start or
/// `--upgrade`: a `systemctl reload` in that window killed the new process (found by
/// benches/soak.sh). Ignored until
/// then (the handlers replace this); a reload sent that early is dropped, not fatal.
fn ignore_signals_until_handled() {
    for sig in [libc::SIGHUP, libc::SIGUSR1] {
        // SAFETY: sets a signal's disposition to SIG_IGN; no handler code runs.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// The read buffers Pingora puts under each accepted client connection of an HTTP
/// listener, for the connection's whole life (Pingora's default is 64 KiB). Plaintext:
/// none; Pingora reads a request header into its own buffer, so one would only add a
/// copy, and any size held costs ~4.7 KB more per idle connection (one page touched, or
/// all of it zeroed when the allocator reuses memory). TLS: one full TLS record
/// (16 KiB), so OpenSSL reads a record in one call rather than header and body apart.
/// Measurements: docs/PERFORMANCE.md, "Idle connections".
fn client_buffers(tls: bool) -> L4BufferSettings {
    L4BufferSettings {
        read: Some(if tls { 16 * 1024 } else { 0 }),
        // Pingora's default (one MSS) for the write side.
        write: None,
    }
}

/// Adds listener `l` (number `index`) and its HTTP/3 side; its certificate store when TLS.
fn add_listener(
    server: &mut Server,
    index: usize,
    l: &ListenerConfig,
    runtime: &SharedRuntime,
    ready: &Arc<AtomicBool>,
    challenges: &Arc<Challenges>,
    work: &WorkCount,
) -> Result<Option<Arc<CertStore>>, StartError> {
    let proxy = Proxy {
        listener: index,
        tls: l.tls.is_some(),
        runtime: runtime.clone(),
        ready: ready.clone(),
        alt_svc: l.http3.then(|| crate::quic::alt_svc(l.listen.port())),
        challenges: challenges.clone(),
        work: work.clone(),
    };
    let mut http = HttpProxy::new(proxy, server.configuration.clone());
    http.handle_init_modules();
    http.server_options = Some(limits::server_options(l));
    http.h2_options = Some(limits::h2_options(&l.limits));
    let gate = Gate::new(&l.name, Side::Listener(index), runtime.clone());
    let http = Arc::new(http);
    let app = EdgeApp {
        gate: gate.clone(),
        inner: http.clone(),
        header_before_tls: l.tls.is_some(),
    };
    let gate_for_quic = gate.clone();
    let mut service = Service::new(format!("listener {}", l.name), app);
    service.set_connection_filter(Arc::new(EarlyGate(gate.clone())));
    if l.tls.is_some() {
        // The PROXY header comes before the TLS handshake (it reads nothing when the
        // running configuration has no proxy_protocol for this listener).
        service
            .endpoints()
            .set_pre_tls_callback(Arc::new(PreTlsHeader(gate)));
    }
    let addr = l.listen.to_string();
    let endpoint = Endpoint::tcp(&addr).l4_buffer(client_buffers(l.tls.is_some()));
    let store = match &l.tls {
        None => {
            service.add_listener(endpoint);
            None
        }
        Some(_) => {
            let (settings, store) = tls::settings(l)?;
            service.add_listener(endpoint.tls(settings));
            Some(store)
        }
    };
    server.add_service(service);
    if let Some(store) = store.as_ref().filter(|_| l.http3) {
        let (grace, upgrade_sock) = {
            let rt = runtime.load();
            (
                rt.config.server.grace_period,
                rt.config.server.upgrade_sock.clone(),
            )
        };
        server.add_service(QuicListener {
            name: format!("http3 {}", l.name),
            addr: l.listen,
            listener: index,
            app: http,
            gate: gate_for_quic,
            runtime: runtime.clone(),
            crypto: Arc::new(crate::quic::tls::server_crypto(store.clone())?),
            grace,
            upgrade_sock,
        });
    }
    Ok(store)
}
