//! The retry policy (SPEC §13): `retry_on` says which failures send a request on to a
//! backend it has not tried yet (connect failures for any method, since nothing was
//! sent; resets and 502/503/504 answers for idempotent methods only), `retries` how many
//! times, `retry_budget` how many retries the pool may have in progress, and
//! `try_duration` how long connect failures keep being retried (see `http::wait`).

use super::ctx::RequestCtx;
use crate::config::RetryOn;
use crate::pool::budget::{Active, Retrying};
use crate::pool::Pool;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::Instant;

/// The most tries Pingora makes for one request: `retries` (≤ 100) plus `try_duration`
/// (≤ 5 min) of connect retries, 250 ms apart, with room to spare.
pub const MAX_PROXY_TRIES: usize = 1500;

/// A request's retry state.
#[derive(Default)]
pub struct RetryState {
    /// Counts the request as active in its pool's budget.
    active: Option<Active>,
    /// Held once the request retried (one slot per request, however many retries).
    retrying: Option<Retrying>,
    /// `try_duration` ends here (set at the first backend choice).
    pub try_deadline: Option<Instant>,
    /// The current attempt's answer is being retried (set in the response header hook).
    status_retry: bool,
}

impl RetryState {
    /// The request starts using `pool` (its first backend choice).
    pub fn enter(&mut self, pool: &Pool) {
        if self.active.is_none() {
            self.active = Some(pool.retry_budget.enter());
            let t = pool.definition.traffic.try_duration;
            self.try_deadline = (!t.is_zero()).then(|| Instant::now() + t);
        }
    }

    /// Still within `try_duration`.
    pub fn trying(&self) -> bool {
        self.try_deadline.is_some_and(|d| Instant::now() < d)
    }
}

enum Cause {
    Connect,
    Reset,
    Status(u16),
}

/// Whether `cause` may send the request on: configured, idempotent where it must be,
/// within `retries`, and within the pool's budget (taking a retry slot).
fn allowed(ctx: &mut RequestCtx, idempotent: bool, cause: Cause) -> bool {
    let (Some(pool), up) = ctx.pool_and_upstream() else {
        return false;
    };
    let on = &pool.definition.traffic.retry_on;
    let wanted = match cause {
        Cause::Connect => on.contains(&RetryOn::ConnectFailure),
        Cause::Reset => idempotent && on.contains(&RetryOn::Reset),
        Cause::Status(s) => idempotent && on.iter().any(|r| r.status() == Some(s)),
    };
    if !wanted || up.attempts.count > pool.retries {
        return false;
    }
    if up.retry.retrying.is_none() {
        let percent = pool.definition.traffic.retry_budget;
        up.retry.retrying = pool.retry_budget.try_retry(percent);
    }
    up.retry.retrying.is_some()
}

/// After a failed connect: retry on another backend (retry_on), or keep trying the
/// pool while `try_duration` lasts.
pub fn after_connect_failure(ctx: &mut RequestCtx, e: &mut Error) {
    if allowed(ctx, true, Cause::Connect) || ctx.upstream.retry.trying() {
        e.set_retry(true);
    }
}

/// After the backend's response header: `Err` (marked for retry) when its status is
/// one of `retry_on`'s, the method is idempotent, another backend is left and the
/// retries and budget allow it. The outcome was already counted.
pub fn after_response_header(
    ctx: &mut RequestCtx,
    method: &http::Method,
    status: u16,
) -> pingora::Result<()> {
    if !matches!(status, 502..=504) || !ctx.upstream.untried(|b| b.usable()) {
        return Ok(());
    }
    if !allowed(ctx, method.is_idempotent(), Cause::Status(status)) {
        return Ok(());
    }
    ctx.upstream.retry.status_retry = true;
    let mut e = Error::explain(
        ErrorType::HTTPStatus(status),
        "retry_on: answered with a retried status",
    );
    e.set_retry(true);
    Err(e)
}

/// Pingora's `error_while_proxy` policy: a retried status stays retried; a reset or
/// close before the response header is retried under `retry_on: [reset]`; otherwise
/// Pingora's default (idempotent methods with a complete retry buffer, on a reused
/// connection only).
pub fn after_error(
    ctx: &mut RequestCtx,
    method: &http::Method,
    body_truncated: bool,
    e: &mut Error,
    client_reused: bool,
) {
    let status_retry = std::mem::take(&mut ctx.upstream.retry.status_retry);
    if !method.is_idempotent() || body_truncated {
        e.set_retry(false);
        return;
    }
    if status_retry {
        e.set_retry(true);
        return;
    }
    let reset = e.esource() == &ErrorSource::Upstream
        && ctx.upstream.attempts.status.is_none()
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
    if reset && ctx.upstream.untried(|b| b.usable()) && allowed(ctx, true, Cause::Reset) {
        super::upstream::record_outcome(&mut ctx.upstream, false, false);
        e.set_retry(true);
        return;
    }
    e.retry.decide_reuse(client_reused);
}
