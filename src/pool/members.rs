//! One membership snapshot of a pool: its backends, the primary and backup tiers with
//! their selectors, the sticky-cookie maps, and the claim routine HTTP and TCP share.

use super::backend::{Backend, InFlight};
use super::select::Selector;
use crate::config::Algorithm;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

/// A claimed backend: its index in `Members::backends` and the slot held on it.
pub struct Claim {
    pub idx: usize,
    pub guard: InFlight,
}

pub(super) struct Tier {
    /// Indices into `Members::backends`.
    members: Vec<usize>,
    selector: Selector,
}

impl Tier {
    pub(super) fn new(algorithm: Algorithm, backends: &[Arc<Backend>], backup: bool) -> Self {
        let members: Vec<usize> = (0..backends.len())
            .filter(|i| backends[*i].backup == backup)
            .collect();
        let weighted: Vec<(SocketAddr, NonZeroU32)> = members
            .iter()
            .map(|i| (backends[*i].addr, backends[*i].weight()))
            .collect();
        Tier {
            selector: Selector::new(algorithm, &weighted),
            members,
        }
    }
}

/// One membership snapshot: the backends and the selection structures over them.
pub struct Members {
    pub backends: Vec<Arc<Backend>>,
    pub(super) primaries: Tier,
    pub(super) backups: Tier,
    /// Sticky cookie value → backend index.
    pub(super) sticky_values: HashMap<String, usize>,
    /// Backend index → its sticky cookie value.
    pub sticky_of: Vec<String>,
    /// `panic_threshold` (percent of usable primaries; 0 = off).
    pub(super) panic_threshold: u32,
}

impl Members {
    /// Picks a usable backend not in `tried` (indices into `backends`): primaries first;
    /// backups only while no primary is left for this request (all unusable, or all
    /// already failed to connect).
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        let pick = |tier: &Tier, usable: &dyn Fn(&Backend) -> bool| {
            let ok = |i: usize| {
                let m = tier.members[i];
                usable(&self.backends[m]) && !tried.contains(&m)
            };
            tier.selector
                .pick(key, ok, |i| self.backends[tier.members[i]].in_flight())
                .map(|i| tier.members[i])
        };
        let usable = |b: &Backend| b.usable();
        if self.panic_threshold > 0 {
            if let Some(usable_primaries) = self.panicking() {
                // A backup still takes over when no primary is usable (what it is for);
                // otherwise every primary not draining or full takes its share, healthy
                // or not, ejected or not (an open circuit still refuses its claim).
                let backup = (usable_primaries == 0)
                    .then(|| pick(&self.backups, &usable))
                    .flatten();
                return backup.or_else(|| pick(&self.primaries, &|b| b.panic_usable()));
            }
        }
        let ramped = |b: &Backend| b.usable() && b.ramp_admits();
        [&self.primaries, &self.backups]
            .into_iter()
            .find_map(|tier| {
                // A ramping backend (slow_start) passes some selections on; if every
                // candidate did, the plain choice stands.
                pick(tier, &ramped).or_else(|| pick(tier, &usable))
            })
    }

    /// Below `panic_threshold` percent of the primaries are usable: how many are.
    fn panicking(&self) -> Option<usize> {
        let n = self.primaries.members.len();
        let usable = self
            .primaries
            .members
            .iter()
            .filter(|m| self.backends[**m].available())
            .count();
        (n > 0 && usable * 100 < self.panic_threshold as usize * n).then_some(usable)
    }

    /// The backend a sticky cookie names, if it exists and may take the request.
    pub fn sticky_target(&self, value: &[u8], tried: &[usize]) -> Option<usize> {
        let value = std::str::from_utf8(value).ok()?;
        let idx = *self.sticky_values.get(value)?;
        (self.backends[idx].usable() && !tried.contains(&idx)).then_some(idx)
    }

    /// Claims an in-flight slot on a backend not in `tried`: the one the sticky cookie
    /// names when it is usable, else a selection. Every selected backend is recorded in
    /// `tried`; one whose slot filled (or whose circuit stopped admitting) since it was
    /// selected is passed over, for at most `bound` selections in all. The same routine
    /// serves HTTP (bound: slots filling between selection and claim) and TCP (bound:
    /// the connect attempts left).
    pub fn claim(
        &self,
        key: &[u8],
        sticky: Option<&[u8]>,
        tried: &mut Vec<usize>,
        bound: usize,
    ) -> Option<Claim> {
        for _ in 0..bound {
            let idx = sticky
                .and_then(|c| self.sticky_target(c, tried))
                .or_else(|| self.select(key, tried))?;
            tried.push(idx);
            if let Some(guard) = InFlight::acquire(&self.backends[idx]) {
                return Some(Claim { idx, guard });
            }
        }
        None
    }

    /// The index of the backend named `address`.
    pub fn find(&self, address: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.address == address)
    }
}
