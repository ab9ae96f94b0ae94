//! One request budget per client, shared by every wait on it: an optional fixed cap, and an
//! adaptive limiter that engages on the first throttling answer.
//!
//! Huawei Cloud throttles per account (429 `APIGW.0308`, 403 `IOTDA.021101`/`IOTDA.021102`), so
//! a hundred waits that each back off on their own keep the account over its quota. Every
//! request of a client (and of its clones) first takes a token from the budget:
//!
//! - **Fixed cap** ([`RequestBudget::with_max_rps`]): a token bucket of `rate` tokens per second
//!   holding at most `burst`; and a window limit ([`RequestBudget::with_window_limit`]), at most
//!   N requests in any window, for quotas stated that way.
//! - **Adaptive** (on by default): idle until the service throttles a request, then a token
//!   bucket whose rate follows the curve of AWS's "adaptive" retry mode (botocore
//!   `retries/adaptive.py`, smithy-rs `client_rate_limiter.rs`), itself the CUBIC curve of
//!   TCP (RFC 8312). On a throttle the rate is cut to 0.7 times the rate the client was
//!   sending at (`BETA`); it then grows back as `C (t - K)^3 + W` (with C = 0.4, `SCALE`; W
//!   the rate before the cut; K the time at which the curve is back at W), flat near W and
//!   faster beyond it, but never above twice the rate actually sent, and never below 0.5
//!   requests a second (`MIN_RATE`). The sending rate is measured over half-second windows,
//!   the latest weighing 0.8 (`SMOOTH`). All four constants are AWS's, under the names
//!   botocore gives them. Below 20 requests a second, C shrinks with W (the curve keeps its
//!   shape as a share of the rate), and throttles that find a quota where it was slow the
//!   curve's rise past it. The limiter's decisions are a plain function of the time and the
//!   answers, tested alone in virtual time.
//! - One change of ours: a throttle only cuts the rate for a request sent after the last
//!   cut. The answers to requests already in flight at a cut say what the old rate did, and
//!   cutting again for each of them would collapse the rate for one burst of answers.
//! - A cut is probed: the cut rate is held for a phase (about 40 answers, 1 to 3 s), then the
//!   rate before it for another. When the higher rate saw the same share refused and more
//!   accepted, the refusals are noise (a gateway shedding load for its own reasons): the
//!   rate goes back up, and refusals at that share no longer cut. Otherwise what the service
//!   accepted is the quota found, and the rate goes under it. docs/architecture.md has the
//!   rule and why.
//!
//! Waits queue for tokens in the order their polls fell due (a fair, first-in first-out
//! queue), so under a budget the poll that has waited longest goes first and none starves:
//! when the budget is short, each task is polled about once per tasks / accepted rate, which
//! [`BudgetStats::poll_interval`] reports (with an `info` event the first time).
//! A poll the service throttled had its turn and was refused: the next poll of its task
//! queues ahead of every poll that did not, after those that did before it.
//! The queue is served by a task of its own, spawned while polls are waiting: it sleeps for
//! each token and hands it to the poll at the head. A poll whose future is not being polled
//! (a stream left alone) holds up no one: its token is handed over all the same, and if it is
//! not taken up within a second it is spent on nothing and the poll queues again when it
//! wakes, so a stale grant never becomes a burst.
//! When no cap is set and nothing was ever throttled, taking a token is one atomic load and
//! the measurement of the rate sent (one uncontended lock).
//!
//! With `IotdaClientBuilder::shared_budget` (feature `redis`), the limits are the fleet's:
//! each token is a slot booked in Redis, and the adaptive limiter is the fleet's, as the
//! `client::shared` module describes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::queue::Queue;

mod config;
pub(crate) mod fleet;
pub(crate) mod limiter;

pub use config::{BudgetStats, RequestBudget};
use fleet::{Booking, Fleet};
use limiter::{Bucket, Change, Limiter};

/// How long a token handed to a poll stays good: a poll that takes it up later (its future
/// was left alone) queues again.
const STALE: Duration = Duration::from_secs(1);

/// A process that never reached its fleet starts its adaptive limiter at this share of its
/// lowest limit.
const BLIND_SHARE: f64 = 4.0;

/// A poll that waited this long for its token found the budget short: it cannot keep every
/// wait's schedule.
const SHORT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    fixed: Vec<Bucket>,
    limiter: Limiter,
    /// Polls waiting for a token, first come first served (polls after throttles first of
    /// all); each is sent the instant its token was taken.
    waiting: Queue<oneshot::Sender<Instant>>,
    /// Whether a task is serving `waiting`.
    serving: bool,
    /// Whether the limits are this process's share of a fleet that stopped answering.
    alone: bool,
}

impl State {
    /// Every bucket a token is taken from: the fixed limits, and the adaptive limiter's.
    fn buckets(&mut self) -> impl Iterator<Item = &mut Bucket> {
        self.fixed.iter_mut().chain(self.limiter.bucket())
    }

    /// Takes a token from every bucket if each has one; else says how long until they do.
    fn take(&mut self, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        for bucket in self.buckets() {
            bucket.refill(now);
            wait = wait.max(bucket.wait());
        }
        if wait.is_zero() {
            self.buckets().for_each(|bucket| bucket.tokens -= 1.0);
            self.limiter.sent(now);
        }
        wait
    }

    /// Puts back a token taken for a request that was not sent.
    fn give_back(&mut self) {
        for bucket in self.buckets() {
            bucket.tokens = (bucket.tokens + 1.0).min(bucket.capacity);
        }
    }
}

/// A client's budget: see the module docs.
#[derive(Debug)]
pub(crate) struct Budget {
    config: RequestBudget,
    state: Mutex<State>,
    /// Whether taking a token may have to wait: a fixed cap, an engaged limiter, or a
    /// fleet.
    limited: AtomicBool,
    requests: AtomicU64,
    throttled: AtomicU64,
    waited_ns: AtomicU64,
    /// How long the last poll to take a token waited for it, in nanoseconds.
    last_wait_ns: AtomicU64,
    /// Whether the budget was ever short (and said so).
    was_short: AtomicBool,
    /// The tasks being waited for through the client.
    tasks: AtomicUsize,
    /// The fleet the limits are shared with, if any.
    fleet: Option<Arc<dyn Fleet>>,
}

impl Budget {
    pub(crate) fn new(config: RequestBudget) -> Self {
        let now = Instant::now();
        let fixed: Vec<Bucket> = config
            .buckets()
            .into_iter()
            .map(|(rate, burst)| Bucket::new(rate, burst, now))
            .collect();
        Self {
            limited: AtomicBool::new(!fixed.is_empty()),
            state: Mutex::new(State {
                fixed,
                limiter: Limiter::new(now),
                waiting: Queue::default(),
                serving: false,
                alone: false,
            }),
            config,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            last_wait_ns: AtomicU64::new(0),
            was_short: AtomicBool::new(false),
            tasks: AtomicUsize::new(0),
            fleet: None,
        }
    }

    /// A budget whose limits are shared with `fleet`.
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "no fleet without Redis")
    )]
    pub(crate) fn with_fleet(config: RequestBudget, fleet: Arc<dyn Fleet>) -> Self {
        let mut budget = Self::new(config);
        budget.limited = AtomicBool::new(true);
        budget.fleet = Some(fleet);
        budget
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain numbers: a panic elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a token, in turn; returns when the request may go.
    pub(crate) async fn acquire(self: &Arc<Self>) {
        self.queue(false).await;
    }

    /// Waits for a token ahead of the polls queued, for a poll after a throttle: it had its
    /// turn once already, and keeps its place in line (after other polls after throttles).
    pub(crate) async fn acquire_ahead(self: &Arc<Self>) {
        self.queue(true).await;
    }

    async fn queue(self: &Arc<Self>, ahead: bool) {
        if !self.limited.load(Ordering::Acquire) {
            self.requests.fetch_add(1, Ordering::Relaxed);
            if self.config.adaptive() {
                self.state().limiter.sent(Instant::now());
            }
            return;
        }
        let queued = Instant::now();
        loop {
            let (granted, answer) = oneshot::channel();
            {
                let mut state = self.state();
                state.waiting.join(granted, ahead);
                if !state.serving {
                    state.serving = true;
                    tokio::spawn(Arc::clone(self).serve());
                }
            }
            // The server drops a sender without a token only if its runtime shut down: the
            // poll queues again and a server starts on this one.
            if answer
                .await
                .is_ok_and(|taken_at| taken_at.elapsed() <= STALE)
            {
                break;
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let waited = queued.elapsed();
        let waited_ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns.fetch_add(waited_ns, Ordering::Relaxed);
        self.last_wait_ns.store(waited_ns, Ordering::Relaxed);
        if waited >= SHORT && !self.was_short.swap(true, Ordering::Relaxed) {
            let stats = self.stats();
            tracing::info!(
                tasks = stats.tasks,
                accepted_rate = stats.accepted_rate,
                poll_interval_s = stats.poll_interval.map(|i| i.as_secs_f64()),
                "the request budget is short: polls wait for their turn, and each task is \
                 polled as often as its share of the rate allows"
            );
        }
    }

    /// A task is being waited for through the client (its first wait began).
    pub(crate) fn task_started(&self) {
        self.tasks.fetch_add(1, Ordering::Relaxed);
    }

    /// A task is no longer waited for (its last wait ended).
    pub(crate) fn task_ended(&self) {
        self.tasks.fetch_sub(1, Ordering::Relaxed);
    }

    /// The rate requests go at under a short budget: what the service accepted over the last
    /// seconds, else the lowest rate a limit allows.
    fn pace(state: &State) -> Option<f64> {
        state
            .limiter
            .accepted_rate()
            .filter(|r| *r > 0.0)
            .or_else(|| {
                state
                    .fixed
                    .iter()
                    .map(|b| b.rate)
                    .chain(state.limiter.rate())
                    .min_by(f64::total_cmp)
            })
    }

    /// Serves the queue: hands a token to each waiting poll in turn, sleeping for it, and ends
    /// when no poll is waiting. Polls that stopped waiting (their future was dropped) are
    /// passed over without spending a token.
    async fn serve(self: Arc<Self>) {
        /// Marks the queue unserved if the server is dropped with its runtime.
        struct Serving<'a>(Option<&'a Budget>);
        impl Drop for Serving<'_> {
            fn drop(&mut self) {
                if let Some(budget) = self.0 {
                    budget.state().serving = false;
                }
            }
        }
        let mut serving = Serving(Some(&self));
        loop {
            {
                let mut state = self.state();
                while state
                    .waiting
                    .front()
                    .is_some_and(oneshot::Sender::is_closed)
                {
                    state.waiting.pop();
                }
                if state.waiting.is_empty() {
                    // In the same lock as the look at the queue, so that a poll queued
                    // after it starts a server.
                    state.serving = false;
                    serving.0 = None;
                    return;
                }
            }
            if let Some(fleet) = &self.fleet {
                match fleet.book().await {
                    Booking::Booked(wait) => {
                        self.state().alone = false;
                        tokio::time::sleep(wait).await;
                        self.hand_over(false);
                        continue;
                    }
                    Booking::Alone { members, rate } => self.pace_alone(members, rate),
                }
            }
            let wait = self.state().take(Instant::now());
            if wait.is_zero() {
                self.hand_over(true);
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Hands a token just taken to the poll at the head of the queue; if none is waiting any
    /// more, gives it back (to the local buckets when `local`, else to the fleet's).
    fn hand_over(&self, local: bool) {
        let mut state = self.state();
        let now = Instant::now();
        if !local {
            state.limiter.sent(now);
        }
        while let Some(next) = state.waiting.pop() {
            if next.send(now).is_ok() {
                return;
            }
        }
        if local {
            state.give_back();
        } else if let Some(fleet) = &self.fleet {
            fleet.refund();
        }
    }

    /// Sets this process's own limits when the fleet stops answering: its share of the
    /// fleet's (of `members`, at `rate`), or when the fleet never answered, limits that the
    /// service's answers alone move (docs/architecture.md says why). Every bucket starts
    /// empty: a fallback is no reason for a burst, and a fleet falling back again and again
    /// would send one each time.
    fn pace_alone(&self, members: Option<u32>, rate: Option<f64>) {
        let mut state = self.state();
        if state.alone {
            return;
        }
        state.alone = true;
        let now = Instant::now();
        let share = f64::from(members.unwrap_or(1).max(1));
        state.fixed = self
            .config
            .buckets()
            .into_iter()
            .map(|(rate, burst)| Bucket::empty(rate / share, (burst / share).max(1.0), now))
            .collect();
        if !self.config.adaptive() {
            return;
        }
        match (members, rate) {
            (Some(_), Some(rate)) => state.limiter.engage_at(rate / share, now),
            (Some(_), None) => {}
            // Never seen: from a share of the lowest limit, engaged whether or not a throttle
            // came, so that throttles move it.
            (None, _) => {
                let lowest = state.fixed.iter().map(|b| b.rate).min_by(f64::total_cmp);
                if let Some(lowest) = lowest {
                    state
                        .limiter
                        .engage_in_a_fleet_unseen(lowest / BLIND_SHARE, now);
                }
            }
        }
    }

    /// Whether the adaptive limiter paces the requests after a throttle.
    pub(crate) fn adaptive(&self) -> bool {
        self.config.adaptive()
    }

    /// Gives back a token taken for a request that was not sent (the poll joined another
    /// wait's request instead), so that the next poll in line goes sooner.
    pub(crate) fn refund(&self) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
        if !self.limited.load(Ordering::Acquire) {
            return;
        }
        if self.fleet.as_ref().is_some_and(|fleet| fleet.refund()) {
            return;
        }
        self.state().give_back();
    }

    /// Takes in what the service answered to a request sent at `sent_at`: whether it was
    /// throttled, and for how long the service asked to be left alone.
    pub(crate) fn answered(
        &self,
        sent_at: Instant,
        throttled: bool,
        retry_after: Option<Duration>,
    ) {
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(fleet) = &self.fleet {
            fleet.answered(sent_at, throttled, retry_after);
        }
        if !self.config.adaptive() {
            return;
        }
        let now = Instant::now();
        let change = self.state().limiter.answered(now, sent_at, throttled);
        match change {
            Change::Cut(rate) => {
                self.limited.store(true, Ordering::Release);
                tracing::debug!(rate, "throttled: the client's request rate is cut");
            }
            Change::Restored(rate) => tracing::debug!(
                rate,
                "refusals come at the same share at a lower rate: the rate is restored"
            ),
            Change::None => {}
        }
    }

    pub(crate) fn stats(&self) -> BudgetStats {
        let limits = self.state();
        let tasks = self.tasks.load(Ordering::Relaxed);
        let short = Duration::from_nanos(self.last_wait_ns.load(Ordering::Relaxed)) >= SHORT;
        let count = u32::try_from(tasks).map_or(f64::from(u32::MAX), f64::from);
        let poll_interval = Self::pace(&limits)
            .filter(|_| short && tasks > 0)
            .and_then(|rate| Duration::try_from_secs_f64(count / rate).ok());
        let mut stats = BudgetStats {
            tasks,
            queued: limits.waiting.len(),
            poll_interval,
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed)),
            adaptive_rate: limits.limiter.rate(),
            accepted_rate: limits.limiter.accepted_rate(),
            throttled_share: limits.limiter.refused_share(),
            shared_calls: 0,
            pacing_alone: false,
        };
        drop(limits);
        if let Some(fleet) = &self.fleet {
            fleet.report(&mut stats);
        }
        stats
    }
}

#[cfg(test)]
mod tests;
