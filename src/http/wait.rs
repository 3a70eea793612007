//! Choosing a backend when none can take the request right now. With `queue` (and
//! `max_connections`), a request that finds every available backend full waits in the
//! pool's queue for a released slot, up to `queue.timeout`, behind at most `queue.max`
//! others (newcomers line up behind those already waiting). With `try_duration`, a
//! request that finds no usable backend is held and the pool tried again every 250 ms
//! until the deadline (a backend restarting during a deploy costs latency, not errors).

use super::ctx::Upstream;
use super::upstream;
use crate::pool::queue::Place;
use crate::pool::{Backend, Pool};
use pingora_proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a held request looks at the pool again.
pub const TRY_INTERVAL: Duration = Duration::from_millis(250);

/// A queued request also looks again this often, in case a wake-up was shared.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// `upstream::choose`, waiting in the pool's queue or holding the request while
/// `try_duration` lasts.
pub async fn choose(
    pool: &Arc<Pool>,
    session: &Session,
    up: &mut Upstream,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Option<Arc<Backend>> {
    up.retry.enter(pool);
    let queued = pool.queued();
    let mut place: Option<(Place, Instant)> = None;
    loop {
        let behind_others = queued && place.is_none() && !pool.queue.is_empty();
        if !behind_others {
            let before = up.tried.len();
            if let Some(b) = upstream::choose(pool, session, up, client_ip, tls) {
                return Some(b);
            }
            // A backend passed over because it filled up may be tried again.
            up.tried.truncate(before);
        }
        if queued && (behind_others || up.untried(|b| b.available())) {
            if place.is_none() {
                let max = pool.definition.traffic.queue.max;
                let timeout = pool.definition.traffic.queue.timeout;
                place = Some((pool.queue.join(max)?, Instant::now() + timeout));
            }
            let deadline = place.as_ref().map(|(_, d)| *d)?;
            if Instant::now() >= deadline {
                return None;
            }
            let _ = pool
                .queue
                .wait(deadline.min(Instant::now() + QUEUE_POLL))
                .await;
            continue;
        }
        let deadline = up.retry.try_deadline?;
        let left = deadline.checked_duration_since(Instant::now())?;
        tokio::time::sleep(left.min(TRY_INTERVAL)).await;
        // Every backend may be tried again, in the pool's current membership.
        up.tried.clear();
        up.members = None;
        up.backend = None;
    }
}
