//! The `ProxyHttp` implementation: a thin dispatcher from Pingora's hooks to routing,
//! access control, selection, header rules, errors and the access log.

use super::admission::{self, Verdict};
use super::cache;
use super::ctx::RequestCtx;
use super::errors;
use super::guard;
use super::headers;
use super::limits;
use super::mirror;
use super::retry;
use super::trace;
use super::upstream;
use super::wait;
use crate::edge::header_clock;
use crate::http::log as access_log;
use crate::observe::refusal;
use crate::ops::shutdown::WorkCount;
use crate::runtime::SharedRuntime;
use crate::tls::acme::Challenges;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub struct Proxy {
    /// Index of the listener this service serves (routes filter on it).
    pub listener: usize,
    pub tls: bool,
    pub runtime: SharedRuntime,
    /// False from SIGQUIT/SIGTERM on: responses then close their connection, so
    /// clients move to the new process instead of racing the old one's shutdown.
    pub ready: Arc<AtomicBool>,
    /// `Alt-Svc` for TCP responses when the listener also serves HTTP/3.
    pub alt_svc: Option<http::HeaderValue>,
    /// The ACME HTTP-01 answers this listener gives when plaintext.
    pub challenges: Arc<Challenges>,
    /// Requests in flight (SIGTERM waits for them).
    pub work: WorkCount,
}

impl Proxy {
    fn admission_request<'a>(
        &'a self,
        session: &'a Session,
        path_refused: Option<u16>,
    ) -> admission::Request<'a> {
        admission::Request {
            header: session.req_header(),
            peer: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            listener: self.listener,
            tls: self.tls,
            challenges: (!self.tls).then_some(&*self.challenges),
            refused: guard::refuse(session).or(path_refused),
            header_bytes: limits::header_bytes(session),
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.work.start())
    }

    async fn early_request_filter(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        header_clock::header_complete();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        guard::allow_pipelining(session);
        ctx.trace = trace::start(session.req_header());
        let rt = self.runtime.load_full();
        if let Some(l) = rt.listeners.get(self.listener) {
            limits::apply_to_session(session, &l.limits);
        }
        let path_refused = admission::normalize_target(session.req_header_mut(), ctx);
        let verdict =
            admission::admit(&self.admission_request(session, path_refused), &rt, ctx).await;
        ctx.runtime = Some(rt);
        match verdict {
            Verdict::Proxy => Ok(false),
            Verdict::Answer(answer) => {
                errors::answer(session, answer, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        cache::enable(session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        cache::key(session, ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(cache::cacheable(session, resp, ctx))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::vary(meta, req)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(cache::hit_filter(session, meta))
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        cache::serve_stale(error)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        mirror::collect(ctx, body.as_ref());
        limits::spend_body(ctx.body_budget.as_mut(), body.as_ref())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let client_ip = ctx.client_ip;
        let (pool, up) = ctx.pool_and_upstream();
        let pool =
            pool.ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "route has no pool"))?;
        let backend = wait::choose(pool, session, up, client_ip, self.tls)
            .await
            .ok_or_else(|| errors::no_backend(up.connect_failure))?;
        let peer = upstream::peer(pool, &backend, session.is_upgrade_req(), session);
        trace::attempt(&mut ctx.trace, &backend.address);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        upstream::record_outcome(&mut ctx.upstream, false, false);
        trace::attempt_failed(&mut ctx.trace, &e);
        ctx.upstream.connect_failure = Some(errors::status_for(&e).max(502));
        // Nothing was sent yet, so another backend may take it.
        retry::after_connect_failure(ctx, &mut e);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream.attempts.connected();
        upstream::check_ip_san(peer, digest)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        trace::inject(&ctx.trace, upstream_request)?;
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if let Some(prefix) = &route.strip {
            upstream_request.set_uri(upstream::stripped_uri(prefix, session.req_header())?);
        }
        headers::forward(upstream_request, ctx, self.tls)?;
        super::country::forward(upstream_request, ctx)?;
        headers::set_client_cert_subject(upstream_request, session)?;
        headers::apply_edits(upstream_request, &route.request_headers)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        let is_5xx = upstream_response.status.is_server_error();
        trace::attempt_answered(&mut ctx.trace, status);
        let (pool, up) = ctx.pool_and_upstream();
        let on_5xx = pool.is_some_and(|p| p.on_5xx);
        up.attempts.response_header(status);
        upstream::record_outcome(up, !is_5xx, !(on_5xx && is_5xx));
        retry::after_response_header(ctx, &session.req_header().method, status)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let truncated = session.as_ref().retry_buffer_truncated();
        retry::after_error(
            ctx,
            &session.req_header().method,
            truncated,
            &mut e,
            client_reused,
        );
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::ops::shutdown::drain_keepalive(session, &self.ready);
        cache::stamp(session, upstream_response, ctx)?;
        headers::stamp_response(upstream_response, ctx)?;
        super::alt_svc::stamp(session, upstream_response, self.alt_svc.as_ref())?;
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
        let error_code = errors::answer_failure(session, e, ctx).await;
        if let Some(reason) = errors::edge_refusal(e) {
            let rt = self.runtime.load();
            let listener = rt.listeners.get(self.listener).map_or("", |l| &l.name);
            let who = ctx.peer_ip.map(|p| p.to_string()).unwrap_or_default();
            refusal::http(
                listener,
                reason,
                &format_args!("client {who}: {error_code}"),
            );
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        upstream::finish_attempt(&mut ctx.upstream, e);
        mirror::send(session, ctx);
        cache::count(ctx);
        access_log::finish(session, ctx, e, self.tls);
        trace::finish(ctx, access_log::status_of(session));
        header_clock::request_done();
    }
}
