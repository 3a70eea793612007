//! Unit tests of `limits::lease`.

use super::*;
use RateLimitAlgorithm::{SlidingWindow, TokenBucket};

const UP: fn() -> bool = || true;

fn grant(tokens: u32) -> Option<Grant> {
    Some(Grant { tokens, wait_ms: 0 })
}

#[test]
fn a_lease_holds_at_most_a_twentieth_of_the_rate() {
    assert_eq!(cap(1), 1);
    assert_eq!(cap(20), 1);
    assert_eq!(cap(100), 5);
    assert_eq!(cap(10_000), 500);
    assert_eq!(cap(u32::MAX), MAX_BATCH);
}

#[test]
fn a_new_key_asks_for_one_token_and_batches_grow_with_its_traffic() {
    let t0 = Instant::now();
    let mut s = State::default();
    assert_eq!(s.step(t0, 500, true, UP), Step::Ask(1));
    s.answered(t0, t0, TokenBucket, grant(1));
    assert_eq!(s.step(t0, 500, false, UP), Step::Admit(None));
    // The next request 10 ms later: 1 in 10 ms since the ask, so 5 per 50 ms (+1).
    let t1 = t0 + Duration::from_millis(10);
    assert_eq!(s.step(t1, 500, true, UP), Step::Ask(6));
    // A busier key asks for the cap at most: 200 in 10 ms would be 1 000 per 50 ms.
    let mut s = State {
        asked_at: Some(t0),
        arrivals: 199,
        ..State::default()
    };
    assert_eq!(s.step(t1, 500, true, UP), Step::Ask(500));
}

#[test]
fn half_a_batch_left_asks_for_the_next_one_in_the_background_once() {
    let t0 = Instant::now();
    let mut s = State {
        want: 8,
        asked_at: Some(t0),
        ..State::default()
    };
    s.answered(t0, t0, TokenBucket, grant(8));
    let t1 = t0 + Duration::from_millis(50);
    let steps: Vec<Step> = (0..8).map(|_| s.step(t1, 100, true, UP)).collect();
    // 8 arrivals in 50 ms: the next batch is 8 (+1 rounding up).
    assert_eq!(steps[3], Step::Admit(Some(5)), "{steps:?}");
    let refreshes = steps
        .iter()
        .filter(|s| matches!(s, Step::Admit(Some(_))))
        .count();
    assert_eq!(refreshes, 1, "one ask in flight at a time: {steps:?}");
    assert!(steps.iter().all(|s| matches!(s, Step::Admit(_))));
    // At the cap, what is held and what is asked for stay within it.
    let mut capped = State {
        want: 8,
        asked_at: Some(t0),
        ..State::default()
    };
    capped.answered(t0, t0, TokenBucket, grant(8));
    let steps: Vec<Step> = (0..4).map(|_| capped.step(t1, 8, true, UP)).collect();
    assert_eq!(
        steps[3],
        Step::Admit(Some(4)),
        "4 held, 4 asked for: {steps:?}"
    );
    // All spent before the answer: requests wait for it rather than ask again.
    assert_eq!(s.step(t1, 100, true, UP), Step::Wait);
    s.answered(t1, t1, TokenBucket, grant(5));
    assert_eq!(s.step(t1, 100, false, UP), Step::Admit(None));
}

#[test]
fn no_token_in_redis_refuses_here_until_the_next_is_due() {
    let t0 = Instant::now();
    let mut s = State::default();
    assert_eq!(s.step(t0, 5, true, UP), Step::Ask(1));
    s.answered(
        t0,
        t0,
        TokenBucket,
        Some(Grant {
            tokens: 0,
            wait_ms: 1500,
        }),
    );
    assert_eq!(s.step(t0, 5, false, UP), Step::Refuse(2));
    let later = t0 + Duration::from_millis(1200);
    assert_eq!(s.step(later, 5, true, UP), Step::Refuse(1));
    let due = t0 + Duration::from_millis(1500);
    assert!(matches!(s.step(due, 5, true, UP), Step::Ask(_)));
}

#[test]
fn without_redis_a_key_with_no_token_is_decided_locally() {
    let t0 = Instant::now();
    let mut s = State::default();
    assert_eq!(s.step(t0, 5, true, || false), Step::Local);
    // Tokens leased before Redis went away are still spent.
    assert_eq!(s.step(t0, 5, true, UP), Step::Ask(1));
    s.answered(t0, t0, TokenBucket, None);
    assert_eq!(s.step(t0, 5, false, || false), Step::Local);
    s.asking = true;
    s.answered(t0, t0, TokenBucket, grant(2));
    assert_eq!(s.step(t0, 5, true, || false), Step::Admit(None));
}

#[test]
fn sliding_window_tokens_lapse_with_their_slot() {
    let t0 = Instant::now();
    let mut s = State::default();
    let _ = s.step(t0, 5, true, UP);
    s.answered(t0, t0, SlidingWindow, grant(3));
    assert_eq!(s.step(t0, 5, false, UP), Step::Admit(None));
    let lapsed = t0 + SLIDING_LIFE;
    assert!(matches!(s.step(lapsed, 5, true, UP), Step::Ask(_)));
    assert_eq!(s.tokens, 0);
}

#[test]
fn idle_bucket_tokens_go_back_and_idle_keys_are_forgotten() {
    let t0 = Instant::now();
    let mut s = State::default();
    let _ = s.step(t0, 5, true, UP);
    s.answered(t0, t0, TokenBucket, grant(4));
    let _ = s.step(t0, 5, false, UP);
    assert_eq!(
        s.sweep(t0, TokenBucket),
        (0, false),
        "used since the last sweep"
    );
    assert_eq!(s.sweep(t0, TokenBucket), (3, true), "idle: 3 go back");
    assert_eq!(s.tokens, 0);
    // A sliding window's tokens are not given back (their slots lapse in Redis).
    let mut s = State::default();
    let _ = s.step(t0, 5, true, UP);
    s.answered(t0, t0, SlidingWindow, grant(4));
    s.touched = false;
    assert_eq!(s.sweep(t0, SlidingWindow), (0, false));
    assert_eq!(s.sweep(t0 + SLIDING_LIFE, SlidingWindow), (0, true));
}

/// The script's token bucket (Redis's side), for the simulation below.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn ask(&mut self, want: u32) -> Grant {
        let left = self.tokens.floor();
        if left < 1.0 {
            let wait = ((1.0 - self.tokens) * 1000.0 / self.rate).ceil() as u64;
            return Grant {
                tokens: 0,
                wait_ms: wait,
            };
        }
        let g = (want as f64).min((left / 2.0).floor().max(1.0));
        self.tokens -= g;
        Grant {
            tokens: g as u32,
            wait_ms: 0,
        }
    }
    fn tick(&mut self, ms: f64) {
        self.tokens = (self.tokens + self.rate * ms / 1000.0).min(self.burst);
    }
}

/// Carries out a simulated request's step (answers come 1 ms after an ask; a
/// request that waits looks again when its instance's answer comes).
fn follow(
    step: Step,
    i: usize,
    ms: u64,
    asks: &mut Vec<(usize, u64, u32, usize)>,
    admitted: &mut [usize; 2],
) {
    match step {
        Step::Admit(refresh) => {
            admitted[i] += 1;
            if let Some(n) = refresh {
                asks.push((i, ms + 1, n, 0));
            }
        }
        Step::Ask(n) => asks.push((i, ms + 1, n, 1)),
        Step::Wait => match asks.iter_mut().find(|a| a.0 == i) {
            Some(a) => a.3 += 1,
            None => panic!("instance {i} waits for an answer nobody asked for"),
        },
        Step::Refuse(_) | Step::Local => {}
    }
}

/// Two instances share rate 100, burst 10; 200 requests a second arrive, 70 % at one
/// of them, over 10 simulated seconds with 1 ms round trips to Redis. Together they
/// admit burst + rate × T within 10 %, and never more than that plus their leases.
#[test]
fn two_instances_under_unequal_load_hold_the_combined_limit() {
    let (rate, burst) = (100u32, 10u32);
    let mut redis = Bucket {
        tokens: burst as f64,
        rate: rate as f64,
        burst: burst as f64,
    };
    let t0 = Instant::now();
    let mut states = [State::default(), State::default()];
    // (instance, answer due at ms, tokens asked for, a request waits on it)
    let mut asks: Vec<(usize, u64, u32, usize)> = Vec::new();
    let mut admitted = [0usize; 2];
    let cap = cap(rate);
    for ms in 0..10_000u64 {
        redis.tick(1.0);
        let now = t0 + Duration::from_millis(ms);
        let mut due: Vec<(usize, u32, usize)> = Vec::new();
        asks.retain(|&(i, at, n, waiting)| {
            if at <= ms {
                due.push((i, n, waiting));
            }
            at > ms
        });
        for (i, n, waiting) in due {
            let g = redis.ask(n);
            states[i].answered(now, now, TokenBucket, Some(g));
            for _ in 0..waiting {
                let step = states[i].step(now, cap, false, UP);
                follow(step, i, ms, &mut asks, &mut admitted);
            }
        }
        // One request every 5 ms: 7 of every 10 to instance 0.
        if ms % 5 != 0 {
            continue;
        }
        let i = if (ms / 5) % 10 < 7 { 0 } else { 1 };
        let step = states[i].step(now, cap, true, UP);
        follow(step, i, ms, &mut asks, &mut admitted);
    }
    let total = admitted[0] + admitted[1];
    let want = burst as f64 + rate as f64 * 10.0;
    eprintln!("admitted {admitted:?}, {total} in all (want {want})");
    assert!(
        (total as f64 - want).abs() <= want * 0.1,
        "admitted {admitted:?} = {total}, want {want} ± 10 %"
    );
    assert!(total as f64 <= want + 2.0 * cap as f64, "{total}");
    assert!(admitted[1] > 0, "the quieter instance gets its turns");
}
