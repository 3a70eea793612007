//! Active health checks: one loop per pool runs its check (pingora-load-balancing's
//! `HealthCheck` implementations) against every backend each `interval`, and flips a
//! backend after `unhealthy_threshold` consecutive failures or `healthy_threshold`
//! consecutive successes, logging each transition once.

use super::db_checks::{MysqlCheck, PostgresCheck};
use super::proxy_out::{self, SendProxy};
use super::{Backend, Pool};
use crate::config::{HealthCheckConfig, HealthKind};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend as LbBackend;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

type Checker = Arc<dyn HealthCheck + Send + Sync>;

/// The check for one backend of `pool`, or `None` for `kind: none`.
fn checker(
    pool: &Pool,
    hc: &HealthCheckConfig,
    kind: HealthKind,
    backend: &Backend,
) -> Option<Checker> {
    // Behind `upstream.proxy_protocol`, every check opens with a PROXY header too.
    let header = proxy_out::for_health_check(pool.upstream.proxy_protocol);
    let send_proxy = || {
        header.clone().map(|header| {
            Arc::new(SendProxy {
                header,
                connect_timeout: hc.timeout,
            }) as Arc<dyn pingora::connectors::L4Connect + Send + Sync>
        })
    };
    match kind {
        HealthKind::None => None,
        HealthKind::Http => {
            let host = hc.host.clone().unwrap_or_else(|| backend.address.clone());
            let tls = pool.upstream.tls.as_ref();
            let mut check = HttpHealthCheck::new(&host, tls.is_some());
            if let Some(t) = tls {
                check.peer_template.sni = t.sni.clone().unwrap_or_else(|| host.clone());
                check.peer_template.options.verify_cert = t.verify;
                check.peer_template.options.verify_hostname = t.verify;
            }
            check.req.set_uri(
                hc.path
                    .parse()
                    .unwrap_or_else(|_| http::Uri::from_static("/")),
            );
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            check.peer_template.options.custom_l4 = send_proxy();
            let (lo, hi) = hc.expect_status;
            check.validator = Some(Box::new(move |resp| {
                let code = resp.status.as_u16();
                if (lo..=hi).contains(&code) {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected status", code),
                        format!("status {code}, expected {lo}-{hi}"),
                    )
                }
            }));
            Some(Arc::new(check))
        }
        HealthKind::Postgres => Some(Arc::new(PostgresCheck {
            user: hc.user.clone(),
            database: hc.database.clone(),
            timeout: hc.timeout,
            proxy_header: header,
        })),
        HealthKind::Mysql => Some(Arc::new(MysqlCheck {
            user: hc.user.clone(),
            timeout: hc.timeout,
            proxy_header: header,
        })),
        HealthKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.custom_l4 = send_proxy();
            Some(Arc::from(check as Box<dyn HealthCheck + Send + Sync>))
        }
    }
}

#[derive(Default)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// Runs `pool`'s checks until the pool is gone (replaced by a reload and unused).
pub async fn run(pool: Weak<Pool>, kind: HealthKind) {
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let mut checkers: HashMap<String, Checker> = HashMap::new();
    loop {
        let Some(p) = pool.upgrade() else { return };
        let hc = p.health_check.clone().unwrap_or_default();
        let members = p.members();
        let mut round = tokio::task::JoinSet::new();
        for backend in members.backends.iter() {
            let check = match checkers.get(&backend.address) {
                Some(c) => c.clone(),
                None => match checker(&p, &hc, kind, backend) {
                    Some(c) => {
                        checkers.insert(backend.address.clone(), c.clone());
                        c
                    }
                    None => return,
                },
            };
            let target = LbBackend::new(&backend.addr.to_string());
            let backend = backend.clone();
            // The whole check, whatever its kind, gets `timeout`.
            let limit = hc.timeout;
            round.spawn(async move {
                let result = match target {
                    Ok(t) => match tokio::time::timeout(limit, check.check(&t)).await {
                        Ok(result) => result,
                        Err(_) => {
                            pingora::Error::e_explain(pingora::ErrorType::ReadTimedout, "timed out")
                        }
                    },
                    Err(e) => Err(e),
                };
                (backend, result)
            });
        }
        while let Some(Ok((backend, result))) = round.join_next().await {
            let streak = streaks.entry(backend.address.clone()).or_default();
            apply(&p.name, &backend, &hc, streak, result);
        }
        // Forget backends that left the pool.
        streaks.retain(|a, _| members.backends.iter().any(|b| &b.address == a));
        checkers.retain(|a, _| members.backends.iter().any(|b| &b.address == a));
        let interval = hc.interval;
        drop(members);
        drop(p);
        tokio::time::sleep(interval).await;
    }
}

fn apply(
    pool: &str,
    backend: &Backend,
    hc: &HealthCheckConfig,
    streak: &mut Streak,
    result: pingora::Result<()>,
) {
    match result {
        Ok(()) => {
            streak.ok += 1;
            streak.failed = 0;
            if !backend.healthy() && streak.ok >= hc.healthy_threshold {
                backend.set_healthy(true);
                log::warn!(
                    "health: pool {pool} backend {} unhealthy -> healthy ({} consecutive successful checks)",
                    backend.address,
                    streak.ok
                );
            }
        }
        Err(reason) => {
            streak.failed += 1;
            streak.ok = 0;
            if backend.healthy() && streak.failed >= hc.unhealthy_threshold {
                backend.set_healthy(false);
                log::warn!(
                    "health: pool {pool} backend {} healthy -> unhealthy ({} consecutive failed checks, last: {reason})",
                    backend.address,
                    streak.failed
                );
            }
        }
    }
}
