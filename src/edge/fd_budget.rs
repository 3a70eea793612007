//! The process's file-descriptor budget for client connections. At start the soft
//! `RLIMIT_NOFILE` is raised to the hard limit (as nginx's `worker_rlimit_nofile` does);
//! client connections are then refused once they would use the last 5 % of it (at least
//! 128 descriptors), so backend connections, health checks, logs and the admin API
//! always find a descriptor.

use std::sync::atomic::{AtomicUsize, Ordering};

static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Descriptors kept free: 5 % of the limit, at least 128 (the process itself holds a few
/// dozen: listeners, runtimes, logs).
pub fn budget_for(limit: u64) -> usize {
    let reserve = (limit / 20).max(128);
    usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// Raises the soft file limit to the hard one and sets the budget from it; returns
/// (limit, budget) for the start-up log line.
pub fn init() -> (u64, usize) {
    let limit = raise_nofile_limit();
    let budget = budget_for(limit);
    BUDGET.store(budget, Ordering::Relaxed);
    (limit, budget)
}

fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// One client connection's descriptor, given back on drop.
#[derive(Debug)]
pub struct FdHold(());

impl Drop for FdHold {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the budget is spent (no count taken).
pub fn exhausted() -> bool {
    OPEN.load(Ordering::Relaxed) >= BUDGET.load(Ordering::Relaxed)
}

/// Takes one descriptor from the budget, if any is left.
pub fn admit() -> Option<FdHold> {
    let open = OPEN.fetch_add(1, Ordering::AcqRel);
    if open >= BUDGET.load(Ordering::Relaxed) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(FdHold(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_percent_is_kept_free() {
        assert_eq!(budget_for(20_000), 19_000);
        assert_eq!(budget_for(1_048_576), 996_148);
        // Small limits keep at least 128.
        assert_eq!(budget_for(256), 128);
        assert_eq!(budget_for(10), 0);
    }
}
