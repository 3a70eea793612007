//! Per-request state carried between the proxy hooks.

use super::limits::BodyBudget;
use crate::ops::shutdown::Work;
use crate::pool::{InFlight, Members};
use crate::runtime::Runtime;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub struct RequestCtx {
    /// Keeps graceful shutdown waiting for this request.
    _work: Work,
    pub start: Instant,
    /// The configuration snapshot this request uses from start to end.
    pub runtime: Option<Arc<Runtime>>,
    pub request_id: String,
    /// The request target as the client sent it, when path normalisation changed it
    /// (the access log shows this one).
    pub original_target: Option<String>,
    pub peer_ip: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    /// The client's country (`server.geoip`), when known.
    pub country: Option<crate::geo::Country>,
    pub route: Option<usize>,
    pub pool: Option<usize>,
    /// The backends tried for this request and what became of them.
    pub upstream: Upstream,
    /// What is left of the request body limit, when there is one.
    pub body_budget: Option<BodyBudget>,
    /// The request's spans when tracing is on (`http::trace`).
    pub trace: Option<Box<super::trace::RequestTrace>>,
    /// The copy of this request for `routes[].mirror`.
    pub mirror: super::mirror::MirrorState,
    /// On a caching route: what the cache did (`X-Cache`, the log's `cache`).
    pub cache_status: Option<crate::cache::Status>,
    /// The route caches but this request may not use the cache (method, upgrade).
    pub cache_bypass: bool,
}

impl RequestCtx {
    /// A request's state; `work` keeps graceful shutdown waiting for it.
    pub fn new(work: Work) -> Self {
        RequestCtx {
            _work: work,
            start: Instant::now(),
            runtime: None,
            request_id: String::new(),
            original_target: None,
            peer_ip: None,
            client_ip: None,
            country: None,
            route: None,
            pool: None,
            upstream: Upstream::default(),
            body_budget: None,
            trace: None,
            mirror: Default::default(),
            cache_status: None,
            cache_bypass: false,
        }
    }
}

/// The backend side of a request: the membership snapshot it chooses from, the backend
/// of the current attempt, the slots it holds and what each attempt did. Kept apart
/// from the runtime snapshot so a hook can borrow the pool from one and change the other
/// (`RequestCtx::pool_and_upstream`) without cloning an `Arc`.
#[derive(Default)]
pub struct Upstream {
    /// The pool membership snapshot `backend` and `tried` index into.
    pub members: Option<Arc<Members>>,
    pub backend: Option<usize>,
    /// Backends tried so far (connect failures move on to one not in here).
    pub tried: Vec<usize>,
    pub in_flight: Option<InFlight>,
    /// The status to answer with when every attempt failed to connect.
    pub connect_failure: Option<u16>,
    /// Whether the current attempt's outcome was fed to the circuit breaker.
    pub outcome_recorded: bool,
    /// A `Set-Cookie` value for the response (a new sticky assignment).
    pub set_cookie: Option<String>,
    /// The attempts on backends: count, status, timings (SPEC §13).
    pub attempts: super::attempt::Attempts,
    /// Retry budget slots and the `try_duration` deadline.
    pub retry: super::retry::RetryState,
}

impl Upstream {
    /// The backend of the current attempt.
    pub fn backend(&self) -> Option<&crate::pool::Backend> {
        self.members
            .as_ref()?
            .backends
            .get(self.backend?)
            .map(|b| &**b)
    }

    /// A backend in the snapshot this request has not tried yet that `pred` accepts.
    pub fn untried(&self, pred: impl Fn(&crate::pool::Backend) -> bool) -> bool {
        self.members.as_ref().is_some_and(|m| {
            m.backends
                .iter()
                .enumerate()
                .any(|(i, b)| pred(b) && !self.tried.contains(&i))
        })
    }
}

impl RequestCtx {
    /// The matched route in this request's runtime snapshot.
    pub fn route(&self) -> Option<&crate::runtime::Route> {
        let rt = self.runtime.as_ref()?;
        rt.routes.get(self.route?)
    }

    /// The matched route's pool in this request's runtime snapshot.
    pub fn pool(&self) -> Option<&Arc<crate::pool::Pool>> {
        pool_in(&self.runtime, self.pool)
    }

    /// The matched pool (borrowed from the snapshot) beside the upstream state to change.
    pub fn pool_and_upstream(&mut self) -> (Option<&Arc<crate::pool::Pool>>, &mut Upstream) {
        (pool_in(&self.runtime, self.pool), &mut self.upstream)
    }
}

fn pool_in(runtime: &Option<Arc<Runtime>>, pool: Option<usize>) -> Option<&Arc<crate::pool::Pool>> {
    runtime.as_ref()?.pools.get(pool?)
}
