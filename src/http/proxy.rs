//! The `ProxyHttp` implementation: a thin dispatcher from Pingora's hooks to routing,
//! access control, selection, header rules, errors and the access log.

use super::admission::{self, Verdict};
use super::ctx::RequestCtx;
use super::errors;
use super::guard;
use super::headers::{self, Forwarded};
use super::upstream;
use crate::http::log as access_log;
use crate::routing;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Proxy {
    /// Index of the listener this service serves (routes filter on it).
    pub listener: usize,
    pub tls: bool,
    pub runtime: SharedRuntime,
    /// False from SIGQUIT/SIGTERM on: responses then close their connection, so
    /// clients move to the new process instead of racing the old one's shutdown.
    pub ready: Arc<AtomicBool>,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.runtime.load_full();
        let request = admission::Request {
            header: session.req_header(),
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            listener: self.listener,
            tls: self.tls,
            refused: guard::refuse(session),
        };
        let verdict = admission::admit(&request, &rt, ctx).await;
        ctx.runtime = Some(rt);
        match verdict {
            Verdict::Proxy => Ok(false),
            Verdict::Answer(answer) => {
                errors::answer(session, &answer, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool()
            .cloned()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "route has no pool"))?;
        match upstream::choose(&pool, session, ctx, self.tls) {
            Some(backend) => Ok(Box::new(upstream::peer(
                &pool,
                &backend,
                session.is_upgrade_req(),
            ))),
            None => {
                let status = ctx.connect_failure.unwrap_or(503);
                Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    "no usable backend",
                ))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        upstream::record_outcome(ctx, false, false);
        // Nothing was sent yet, so another backend may take it.
        ctx.connect_failure = Some(errors::status_for(&e).max(502));
        let retries = ctx.pool().map(|p| p.retries as usize).unwrap_or(0);
        if ctx.tried.len() <= retries {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::check_ip_san(peer, digest)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if let Some(prefix) = &route.strip {
            let original = session
                .req_header()
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let stripped = routing::strip_prefix(prefix, original);
            let uri = stripped
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "strip_prefix", e))?;
            upstream_request.set_uri(uri);
        }
        if let (Some(peer), Some(client)) = (ctx.peer_ip, ctx.client_ip) {
            let fwd = Forwarded {
                peer,
                client,
                tls: self.tls,
                request_id: &ctx.request_id,
            };
            headers::add_forwarding(upstream_request, &fwd)?;
        }
        headers::set_client_cert_subject(upstream_request, session)?;
        headers::apply_edits(upstream_request, &route.request_headers)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let on_5xx = ctx.pool().is_some_and(|p| p.on_5xx);
        let is_5xx = upstream_response.status.is_server_error();
        upstream::record_outcome(ctx, !is_5xx, !(on_5xx && is_5xx));
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !self.ready.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        upstream_response.insert_header(headers::X_REQUEST_ID, ctx.request_id.as_str())?;
        if let Some(cookie) = ctx.set_cookie.take() {
            upstream_response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if route.security_headers {
            headers::add_security_headers(upstream_response, self.tls)?;
        }
        headers::apply_edits(upstream_response, &route.response_headers)
    }

    /// A client that goes away mid-request is routine, not an error worth a log line.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        e.esource() == &pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = errors::status_for(e);
        if code > 0 && session.response_written().is_none() {
            if ctx.request_id.is_empty() {
                ctx.request_id = headers::new_request_id();
            }
            if let Err(err) = errors::respond(session, code, &ctx.request_id).await {
                log::debug!("could not send the {code} answer: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A timeout or reset after connecting is a failure; a finished exchange whose
        // response header was not seen (e.g. an upgrade) counts as a success.
        let upstream_failed = e.is_some_and(|e| e.esource() == &pingora::ErrorSource::Upstream);
        upstream::record_outcome(ctx, !upstream_failed, !upstream_failed);
        ctx.in_flight = None;
        let Some(rt) = ctx.runtime.clone() else {
            return;
        };
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        if status > 0 && rt.metrics_enabled {
            let metrics = ctx
                .route
                .map_or(&rt.unrouted_metrics, |r| &rt.routes[r].metrics);
            metrics.observe(&session.req_header().method, status, ctx.start.elapsed());
        }
        if rt.access_log.enabled() {
            let entry = access_log::http_entry(session, ctx, &rt, status, self.tls);
            rt.access_log.write(&entry);
        }
    }
}
