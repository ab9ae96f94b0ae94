//! The budget's queue and its fleet seam, in virtual time.

use super::limiter::BETA;
use super::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn a_fixed_cap_lets_a_burst_through_then_paces() {
    let budget = Arc::new(Budget::new(
        RequestBudget::unlimited().with_max_rps(10.0, 3),
    ));
    let start = Instant::now();
    let mut at = Vec::new();
    for _ in 0..6 {
        budget.acquire().await;
        at.push(start.elapsed().as_secs_f64());
    }
    assert_eq!(at, [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]);
    assert_eq!(budget.stats().requests, 6);
    assert_eq!(budget.stats().waited, secs(0.3), "three waited 0.1 s each");
}

#[tokio::test(start_paused = true)]
async fn a_short_budget_says_how_often_each_task_can_be_polled() {
    let budget = Arc::new(Budget::new(RequestBudget::unlimited().with_max_rps(2.0, 1)));
    for _ in 0..8 {
        budget.task_started();
    }
    // One after the other, each waits half a second: the budget keeps up.
    for _ in 0..3 {
        budget.acquire().await;
    }
    let stats = budget.stats();
    assert_eq!((stats.tasks, stats.poll_interval), (8, None), "{stats:?}");
    // Four at once: the last waits two seconds for its token. 8 tasks at 2 a second.
    let polls: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn({
                let budget = budget.clone();
                async move { budget.acquire().await }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(budget.stats().queued, 4);
    for poll in polls {
        poll.await.unwrap();
    }
    let stats = budget.stats();
    assert_eq!(stats.poll_interval, Some(secs(4.0)), "{stats:?}");
    // Answers in: the rate that goes through is the one the service accepted.
    let budget = Arc::new(Budget::new(RequestBudget::default().with_max_rps(2.0, 1)));
    budget.task_started();
    let polls: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let budget = budget.clone();
                async move {
                    budget.acquire().await;
                    budget.answered(Instant::now(), false, None);
                }
            })
        })
        .collect();
    for poll in polls {
        poll.await.unwrap();
    }
    let stats = budget.stats();
    let interval = stats.poll_interval.unwrap().as_secs_f64();
    let accepted = stats.accepted_rate.unwrap();
    assert!((interval - 1.0 / accepted).abs() < 1e-9, "{stats:?}");
    budget.task_ended();
    assert_eq!(budget.stats().poll_interval, None, "no task left");
}

/// A fleet that books `booked` slots at once, then stops answering, at 40 a second for
/// 4 members.
#[derive(Debug, Default)]
struct Scripted {
    booked: Mutex<u32>,
    refunds: AtomicU64,
    answers: AtomicU64,
    /// The fleet never answered: its members and rate are unknown.
    never: bool,
    /// The fleet had no adaptive rate.
    unrated: bool,
}

impl Fleet for Scripted {
    fn book(&self) -> futures::future::BoxFuture<'_, Booking> {
        let mut booked = self.booked.lock().unwrap();
        let booking = if *booked > 0 {
            *booked -= 1;
            Booking::Booked(Duration::ZERO)
        } else if self.never {
            Booking::Alone {
                members: None,
                rate: None,
            }
        } else {
            Booking::Alone {
                members: Some(4),
                rate: (!self.unrated).then_some(40.0),
            }
        };
        Box::pin(std::future::ready(booking))
    }

    fn answered(&self, _: Instant, _: bool, _: Option<Duration>) {
        self.answers.fetch_add(1, Ordering::Relaxed);
    }

    fn refund(&self) -> bool {
        self.refunds.fetch_add(1, Ordering::Relaxed);
        *self.booked.lock().unwrap() > 0
    }

    fn report(&self, stats: &mut BudgetStats) {
        stats.shared_calls = self.answers.load(Ordering::Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_fleet_that_stops_answering_leaves_the_process_its_share() {
    let fleet = Arc::new(Scripted::default());
    *fleet.booked.lock().unwrap() = 3;
    let budget = Arc::new(Budget::with_fleet(RequestBudget::default(), fleet.clone()));
    let start = Instant::now();
    for _ in 0..3 {
        budget.acquire().await;
        budget.answered(Instant::now(), false, None);
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "booked slots go at once");
    assert_eq!(
        budget.stats().shared_calls,
        3,
        "every answer told to the fleet"
    );
    // Alone: a quarter of the fleet's 40 a second, from an empty bucket.
    for _ in 0..11 {
        budget.acquire().await;
    }
    let took = start.elapsed().as_secs_f64();
    assert!((1.0..=1.2).contains(&took), "{took}");
    // A token the fleet did not book goes back to the process's own bucket.
    budget.refund();
    assert_eq!(fleet.refunds.load(Ordering::Relaxed), 1);
    let before = Instant::now();
    budget.acquire().await;
    assert_eq!(before.elapsed(), Duration::ZERO, "the refunded token");
}

/// How many tokens `budget` hands out in `secs` seconds from now.
async fn tokens_in(budget: &Arc<Budget>, secs: f64) -> u32 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut taken = 0;
    while tokio::time::timeout_at(end, budget.acquire()).await.is_ok() {
        taken += 1;
    }
    taken
}

#[tokio::test(start_paused = true)]
async fn a_fleet_that_never_answered_leaves_a_quarter_of_the_limit_with_no_burst() {
    let fleet = Arc::new(Scripted {
        never: true,
        ..Scripted::default()
    });
    let config = RequestBudget::default().with_max_rps(40.0, 40);
    let budget = Arc::new(Budget::with_fleet(config, fleet));
    // 10 a second from an empty bucket: the first token after a tenth of a second.
    let first = tokens_in(&budget, 1.0).await;
    assert!((9..=11).contains(&first), "{first} in the first second");
    // The service's throttles cut it, as a process's own limiter.
    for _ in 0..5 {
        budget.acquire().await;
        budget.answered(Instant::now(), true, None);
    }
    let rate = budget.stats().adaptive_rate.unwrap();
    assert!(rate < 10.0, "{rate}");
}

#[tokio::test(start_paused = true)]
async fn each_fallback_starts_from_an_empty_bucket() {
    // No adaptive rate: the fixed limit's share alone paces.
    let fleet = Arc::new(Scripted {
        unrated: true,
        ..Scripted::default()
    });
    let config = RequestBudget::default().with_max_rps(40.0, 40);
    let budget = Arc::new(Budget::with_fleet(config, fleet.clone()));
    for _ in 0..3 {
        // Alone, then idle long enough for the buckets to fill, then back in the fleet.
        let alone = tokens_in(&budget, 0.5).await;
        assert!(
            (4..=6).contains(&alone),
            "{alone} in half a second at a quarter of 40"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        *fleet.booked.lock().unwrap() = 1;
        budget.acquire().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_too_low_to_write_as_a_duration_waits_without_panicking() {
    let budget = Arc::new(Budget::new(
        RequestBudget::unlimited().with_max_rps(1e-300, 1),
    ));
    budget.acquire().await;
    let second = tokio::time::timeout(Duration::from_secs(7 * 86_400), budget.acquire());
    assert!(second.await.is_err(), "no second token within a week");
    assert_eq!(
        budget.stats().requests,
        1,
        "a request still queued is not counted"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_held_back_until_a_throttle() {
    let budget = Arc::new(Budget::new(RequestBudget::default()));
    let start = Instant::now();
    for _ in 0..100 {
        budget.acquire().await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(budget.stats().adaptive_rate, None);
}

/// Sends at `rate` for `secs`, the budget permitting; returns how many went.
async fn send(budget: &Arc<Budget>, rate: f64, secs_long: f64) -> u32 {
    let end = Instant::now() + secs(secs_long);
    let mut sent = 0;
    while Instant::now() < end {
        budget.acquire().await;
        budget.answered(Instant::now(), false, None);
        sent += 1;
        tokio::time::sleep(secs(1.0 / rate)).await;
    }
    sent
}

#[tokio::test(start_paused = true)]
async fn a_throttle_cuts_the_rate_sent_and_it_grows_back_on_the_cubic_curve() {
    let budget = Arc::new(Budget::new(RequestBudget::default()));
    send(&budget, 40.0, 3.0).await;
    let measured = budget.state().limiter.sent_rate(Instant::now());
    assert!((measured - 40.0).abs() < 2.0, "{measured}");
    budget.answered(Instant::now(), true, None);
    let cut = budget.stats().adaptive_rate.unwrap();
    assert!((cut - measured * BETA).abs() < 1e-9, "{cut}");
    // Nothing refused after it: the probe goes back to the rate before the cut, finds
    // it accepted, and the rate settles near it, then grows past it.
    let start = Instant::now();
    send(&budget, 1000.0, 4.0).await;
    let rate = budget.stats().adaptive_rate.unwrap();
    assert!(
        (0.85 * measured..=1.05 * measured).contains(&rate),
        "{rate} after {:?}",
        start.elapsed()
    );
    send(&budget, 1000.0, 10.0).await;
    let grown = budget.stats().adaptive_rate.unwrap();
    assert!(grown > 1.5 * measured, "{grown}");
}

#[tokio::test(start_paused = true)]
async fn answers_to_requests_sent_before_a_cut_do_not_cut_again() {
    let budget = Arc::new(Budget::new(RequestBudget::default()));
    send(&budget, 40.0, 2.0).await;
    let before = Instant::now();
    tokio::time::advance(secs(0.01)).await;
    budget.answered(before, true, None);
    let once = budget.stats().adaptive_rate.unwrap();
    for _ in 0..10 {
        budget.answered(before, true, None);
    }
    assert_eq!(budget.stats().adaptive_rate, Some(once));
    assert_eq!(budget.stats().throttled, 11);
    // A request sent after the cut and throttled is the probe's to judge: the cut holds.
    budget.answered(Instant::now(), true, None);
    assert_eq!(budget.stats().adaptive_rate, Some(once));
}

#[tokio::test(start_paused = true)]
async fn the_queue_serves_polls_in_the_order_they_fell_due() {
    let budget = std::sync::Arc::new(Budget::new(RequestBudget::unlimited().with_max_rps(1.0, 1)));
    budget.acquire().await;
    let order = std::sync::Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..5 {
        let (budget, order) = (budget.clone(), order.clone());
        handles.push(tokio::spawn(async move {
            budget.acquire().await;
            order.lock().unwrap().push(i);
        }));
        // Each falls due a moment after the one before.
        tokio::time::advance(secs(0.01)).await;
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limiter_keeps_near_a_quota_it_was_not_told() {
    // 500 waits polling every 2 s (250 a second) against a service that accepts 50 a
    // second in bursts of 50, for a minute; requests take 20 ms.
    let budget = std::sync::Arc::new(Budget::new(RequestBudget::default()));
    let service = std::sync::Arc::new(Mutex::new((50.0f64, Instant::now())));
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let minute = secs(60.0);
    let mut waits = Vec::new();
    for i in 0..500u64 {
        let (budget, service, accepted) = (budget.clone(), service.clone(), accepted.clone());
        waits.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i % 100)).await;
            while start.elapsed() < minute {
                budget.acquire().await;
                let sent = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let taken = {
                    let mut bucket = service.lock().unwrap();
                    let now = Instant::now();
                    let refill = now.duration_since(bucket.1).as_secs_f64() * 50.0;
                    bucket.0 = (bucket.0 + refill).min(50.0);
                    bucket.1 = now;
                    let taken = bucket.0 >= 1.0;
                    if taken {
                        bucket.0 -= 1.0;
                    }
                    taken
                };
                budget.answered(sent, !taken, None);
                if taken {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(secs(2.0)).await;
            }
        }));
    }
    for wait in waits {
        wait.await.unwrap();
    }
    let accepted = u32::try_from(accepted.load(Ordering::Relaxed)).unwrap();
    let per_second = f64::from(accepted) / 60.0;
    let stats = budget.stats();
    let rate = stats.adaptive_rate.unwrap();
    assert!(per_second >= 45.0, "{per_second:.1} accepted a second");
    assert!((35.0..=70.0).contains(&rate), "the rate ends at {rate:.1}");
    assert!(
        stats.throttled * 10 < stats.requests,
        "{} of {} throttled",
        stats.throttled,
        stats.requests
    );
}
