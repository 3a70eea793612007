//! Choosing a backend when none can take the request right now: with `try_duration`,
//! the request is held and the pool tried again every 250 ms until the deadline (a
//! backend restarting during a deploy costs latency, not errors).

use super::ctx::RequestCtx;
use super::upstream;
use crate::pool::{Backend, Pool};
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a held request looks at the pool again.
pub const TRY_INTERVAL: Duration = Duration::from_millis(250);

/// `upstream::choose`, holding the request while `try_duration` lasts.
pub async fn choose(
    pool: &Arc<Pool>,
    session: &Session,
    ctx: &mut RequestCtx,
    tls: bool,
) -> Option<Arc<Backend>> {
    ctx.retry.enter(pool);
    loop {
        if let Some(b) = upstream::choose(pool, session, ctx, tls) {
            return Some(b);
        }
        let deadline = ctx.retry.try_deadline?;
        let left = deadline.checked_duration_since(Instant::now())?;
        tokio::time::sleep(left.min(TRY_INTERVAL)).await;
        // Every backend may be tried again, in the pool's current membership.
        ctx.tried.clear();
        ctx.members = None;
        ctx.backend = None;
    }
}
