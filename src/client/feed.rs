//! Request coalescing: waits on one task through one client share its polls (one request goes
//! out for all of them, and every answer reaches each of them as one of its own polls), and
//! retry claims, so that one failure of the task is retried once.
//!
//! Each task being waited for has a [`Feed`] on the client, found by the task's URL: the
//! latest answer (with a `Notify` that wakes every wait on the task), and the request in
//! flight, if any. A feed is small (a sleeping watcher carries one), and the waits find it in
//! a map keyed by a hash of the URL. A wait whose poll falls due joins the request in flight rather than sending
//! another; an answer to anyone's request wakes every wait on the task, which takes it as its
//! poll and plans its next one from there. So the task is polled at the pace of the most eager
//! of its waits, once per poll, while each wait keeps its own schedule, deadline,
//! cancellation and events.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

use super::budget::Budget;
use super::ApiError;
use crate::model::InstanceTask;

/// One answer to a poll of a task, with the number of the request it answers. Requests are
/// numbered in the order they started, so a wait can tell an answer that is newer than the
/// one it has from one that is older (a request that started earlier but took longer).
#[derive(Debug)]
pub(crate) struct Polled {
    pub(crate) request: u64,
    pub(crate) answer: Result<InstanceTask, ApiError>,
    /// For the answer to a retry of the task (not to a poll): the failure retried.
    pub(crate) retried: Option<Box<InstanceTask>>,
}

/// A request in flight, which every wait that joins it awaits.
pub(crate) type InFlight = Shared<BoxFuture<'static, Arc<Polled>>>;

/// What [`Feed::retried`] holds while one wait's retry of the task is out.
const RETRY_IN_FLIGHT: u64 = u64::MAX;

/// Makes one request for the task at a URL, owning what it needs.
pub(crate) type Request =
    Arc<dyn Fn(Url) -> BoxFuture<'static, Result<InstanceTask, ApiError>> + Send + Sync>;

/// What a feed knows, under one lock.
#[derive(Default)]
struct Latest {
    /// The newest answer from the service.
    answer: Option<Arc<Polled>>,
    /// The request in flight: which one, when it started, and its answer to come.
    in_flight: Option<(u64, Instant, InFlight)>,
}

/// The shared polls of one task.
pub(crate) struct Feed {
    url: Url,
    request: Request,
    latest: Mutex<Latest>,
    /// Wakes the waits on the task when a newer answer is in.
    news: Notify,
    /// The number of the last request started, by any wait on the task.
    requests: AtomicU64,
    /// How many waits hold the feed (see [`Watching`]).
    waits: AtomicUsize,
    /// Failures up to this request number have been retried ([`RETRY_IN_FLIGHT`] while a
    /// retry is out): answers to requests that started before a retry's answer are no new
    /// failure.
    retried: AtomicU64,
    /// No retry is claimed before this: the service throttled one and said when to come back.
    retries_held: Mutex<Option<Instant>>,
    /// The budget the task's requests take their tokens from.
    budget: Option<Arc<Budget>>,
    /// A wait is queued for a token to poll the task: the others take its answer rather than
    /// spend tokens of their own.
    sending: AtomicBool,
    /// Wakes the waits that let a queued wait poll for them, when it gives up its turn or
    /// starts its request.
    sender_left: Notify,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("url", &self.url.as_str())
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Feed {
    pub(crate) fn new(url: Url, request: Request) -> Self {
        Self {
            url,
            request,
            latest: Mutex::new(Latest::default()),
            news: Notify::new(),
            requests: AtomicU64::new(0),
            waits: AtomicUsize::new(0),
            retried: AtomicU64::new(0),
            retries_held: Mutex::new(None),
            budget: None,
            sending: AtomicBool::new(false),
            sender_left: Notify::new(),
        }
    }

    /// The turn to queue for a token and poll the task for every wait on it, unless another
    /// wait has it.
    pub(crate) fn take_send_turn(self: &Arc<Self>) -> Option<SendTurn> {
        self.sending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| SendTurn(self.clone()))
    }

    /// Waits until no wait holds the turn to poll the task.
    pub(crate) async fn sender_gone(self: Arc<Self>) {
        loop {
            let left = self.sender_left.notified();
            let mut left = std::pin::pin!(left);
            left.as_mut().enable();
            if !self.sending.load(Ordering::Acquire) {
                return;
            }
            left.await;
        }
    }

    /// Whether the budget's adaptive limiter paces this task's requests after a throttle, so
    /// that a wait need not back off from throttles on its own.
    pub(crate) fn paces_throttles(&self) -> bool {
        self.budget.as_ref().is_some_and(|budget| budget.adaptive())
    }

    /// The feed, its requests taking their tokens from `budget`.
    pub(crate) fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Gives back a token a wait took for a request it did not send (it joined another's, or
    /// another wait retries the failure).
    pub(crate) fn refund(&self) {
        if let Some(budget) = &self.budget {
            budget.refund();
        }
    }

    /// The task's URL.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether another wait on the task exists: alone, a wait polls as if nothing were
    /// shared.
    pub(crate) fn shared_with_others(&self) -> bool {
        self.waits.load(Ordering::Relaxed) > 1
    }

    /// The number of the last request started: a wait that starts now takes no answer to it
    /// or to any before it (it may join it while it is in flight).
    pub(crate) fn started(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Numbers a request that a wait sends on its own: answers to requests that started
    /// before it are older than the answer it will have.
    pub(crate) fn number(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Claims the retry of the FAILED task that request `failed` showed, for the one wait that
    /// is to send it: `None` for every other wait that saw the same failure, or one from
    /// before the last retry's answer, or while a retry is out. So one failure is retried
    /// once, whoever saw it, and however many requests showed it.
    pub(crate) fn claim_retry(self: &Arc<Self>, failed: u64) -> Option<RetryClaim> {
        let held = *self
            .retries_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if held.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let claimed = self
            .retried
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |done| {
                (done < failed).then_some(RETRY_IN_FLIGHT)
            });
        // The retry goes out now: every request started before it may still show the failure
        // it retries, whatever becomes of the retry.
        let covers = self.started();
        claimed.ok().map(|before| RetryClaim {
            feed: self.clone(),
            covers: before.max(covers),
            before,
            answered: false,
        })
    }

    /// Holds every claim of a retry until `until`: the service throttled one and asked to
    /// wait so long.
    pub(crate) fn hold_retries(&self, until: Instant) {
        let mut held = self
            .retries_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *held = Some(held.map_or(until, |h| h.max(until)));
    }

    /// The number of the latest request whose answer was published.
    fn newest(&self) -> u64 {
        self.latest().answer.as_ref().map_or(0, |p| p.request)
    }
}

/// The right to retry a task's failure, held while the retry is out. Dropped unanswered (the
/// retry refused, cancelled, timed out), it lets the next wait that sees the task FAILED
/// retry it.
pub(crate) struct RetryClaim {
    feed: Arc<Feed>,
    /// The requests that started before the retry went out: their failures are this one.
    covers: u64,
    /// The latest request whose failure was retried, before this claim.
    before: u64,
    answered: bool,
}

impl RetryClaim {
    /// Tells every wait on the task of the retry's answer to the retry of `failed`, as the
    /// answer to a new request, and marks the failures before it retried; returns that
    /// request's number.
    pub(crate) fn answered(mut self, failed: InstanceTask, task: InstanceTask) -> u64 {
        self.answered = true;
        let feed = &self.feed;
        let id = feed.number();
        feed.publish(
            &Arc::new(Polled {
                request: id,
                answer: Ok(task),
                retried: Some(Box::new(failed)),
            }),
            id,
        );
        feed.retried.store(id, Ordering::Release);
        id
    }
}

impl RetryClaim {
    /// Gives the claim back unused: the retry was never sent, and the next wait that sees the
    /// failure may send it.
    pub(crate) fn withdraw(mut self) {
        self.answered = true;
        self.feed.retried.store(self.before, Ordering::Release);
    }
}

impl Drop for RetryClaim {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // No answer: the service may or may not have restarted the task. Failures shown by
        // requests that started before the retry went out are this one; later ones may be
        // retried.
        let seen = self.covers.max(self.feed.newest());
        self.feed.retried.store(seen, Ordering::Release);
    }
}

impl Feed {
    /// The newest answer, if it answers a request numbered after `asked`.
    fn answer_after(&self, asked: u64) -> Option<Arc<Polled>> {
        self.latest()
            .answer
            .as_ref()
            .filter(|p| p.request > asked)
            .cloned()
    }

    /// Waits for an answer to a request numbered after `asked`.
    pub(crate) async fn news_after(&self, asked: u64) -> Arc<Polled> {
        loop {
            // Registered before the look, so that an answer published in between still wakes.
            let notified = self.news.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(polled) = self.answer_after(asked) {
                return polled;
            }
            notified.await;
        }
    }

    /// The request in flight and its number, unless it is numbered `after` or lower (older
    /// than what the wait has) or started before `stale` (its starter gave up on it and
    /// nobody drove it since).
    pub(crate) fn in_flight(&self, after: u64, stale: Instant) -> Option<(u64, InFlight)> {
        self.latest()
            .in_flight
            .as_ref()
            .filter(|(id, started, _)| *id > after && *started >= stale)
            .map(|(id, _, request)| (*id, request.clone()))
    }

    /// Joins the request in flight (unless it is numbered `after` or lower, or older than
    /// `stale`), or starts one, each bounded by `timeout`; returns the request's number and
    /// its answer to come.
    pub(crate) fn poll(
        self: &Arc<Self>,
        after: u64,
        stale: Instant,
        timeout: std::time::Duration,
    ) -> (u64, InFlight) {
        let mut latest = self.latest();
        if let Some((id, started, running)) = latest.in_flight.as_ref() {
            if *id > after && *started >= stale {
                return (*id, running.clone());
            }
        }
        let id = self.number();
        let request = (self.request)(self.url.clone());
        // Weak: a request nobody waits for any more must not keep the feed alive.
        let feed = Arc::downgrade(self);
        let shared = async move {
            let answer = tokio::time::timeout(timeout, request)
                .await
                .unwrap_or_else(|_| Err(ApiError::no_answer_within(timeout)));
            let polled = Arc::new(Polled {
                request: id,
                answer,
                retried: None,
            });
            if let Some(feed) = feed.upgrade() {
                feed.publish(&polled, id);
            }
            polled
        }
        .boxed()
        .shared();
        latest.in_flight = Some((id, Instant::now(), shared.clone()));
        (id, shared)
    }

    /// Tells every wait on the task of an answer from the service, unless a newer one is
    /// already out, and clears request `id` from the flight. A request that got no answer (a
    /// network failure, a timeout) says nothing of the task: only the waits that joined it
    /// count it as a failed poll.
    fn publish(&self, polled: &Arc<Polled>, id: u64) {
        let heard = match &polled.answer {
            Ok(_) => true,
            Err(error) => error.status().is_some(),
        };
        let mut latest = self.latest();
        // Unless a newer request replaced this one, nothing is in flight any more.
        if latest
            .in_flight
            .as_ref()
            .is_some_and(|(current, _, _)| *current == id)
        {
            latest.in_flight = None;
        }
        let newer = latest
            .answer
            .as_ref()
            .is_none_or(|p| p.request < polled.request);
        if heard && newer {
            latest.answer = Some(polled.clone());
            drop(latest);
            self.news.notify_waiters();
        }
    }
}

/// The turn to poll a task for every wait on it, held by one wait from the moment it queues for
/// a token until its request is in flight (others join it then) or it gives up.
pub(crate) struct SendTurn(Arc<Feed>);

impl Drop for SendTurn {
    fn drop(&mut self) {
        self.0.sending.store(false, Ordering::Release);
        self.0.sender_left.notify_waiters();
    }
}

/// A wait's hold on its task's feed: while it lives, the wait counts among the task's waits.
pub(crate) struct Watching(Arc<Feed>);

impl Watching {
    pub(crate) fn new(feed: Arc<Feed>) -> Self {
        if feed.waits.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Some(budget) = &feed.budget {
                budget.task_started();
            }
        }
        Self(feed)
    }
}

impl std::ops::Deref for Watching {
    type Target = Arc<Feed>;

    fn deref(&self) -> &Arc<Feed> {
        &self.0
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if self.0.waits.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(budget) = &self.0.budget {
                budget.task_ended();
            }
        }
    }
}

/// The feeds of a client's tasks, found by a hash of their URL; a feed lives while a source
/// holds it.
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    hasher: std::hash::RandomState,
    by_url: Mutex<HashMap<u64, Weak<Feed>>>,
}

impl Feeds {
    /// The feed of the task at `url`, made with `request` if no source holds one.
    pub(crate) fn join(&self, url: Url, make: impl FnOnce(Url) -> Feed) -> Arc<Feed> {
        let key = self.hasher.hash_one(url.as_str());
        let mut by_url = self.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        let held = by_url.get(&key).and_then(Weak::upgrade);
        if let Some(feed) = &held {
            if feed.url == url {
                return feed.clone();
            }
        }
        let feed = Arc::new(make(url));
        if held.is_some() {
            // Another task's URL with the same hash (a 1 in 2^64 chance): this one is not
            // shared, and nothing is wrong.
            return feed;
        }
        // Forget the feeds of finished waits now and then, so the map stays as large as the
        // number of tasks being waited for.
        if by_url.len() >= 64 && by_url.len().is_power_of_two() {
            by_url.retain(|_, feed| feed.strong_count() > 0);
        }
        by_url.insert(key, Arc::downgrade(&feed));
        feed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    pub(crate) fn task(progress: i64) -> InstanceTask {
        InstanceTask {
            progress: Some(progress),
            ..InstanceTask::default()
        }
    }

    /// Requests that answer in turn, each after its delay in seconds; panics past the end.
    pub(crate) fn scripted(answers: Vec<(u64, Result<InstanceTask, ApiError>)>) -> Request {
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        Arc::new(move |_url| {
            let (delay, answer) = answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("a scripted answer");
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(delay)).await;
                answer
            })
        })
    }

    pub(crate) fn feed(answers: Vec<(u64, Result<InstanceTask, ApiError>)>) -> Arc<Feed> {
        let url = Url::parse("http://127.0.0.1/v5/t").unwrap();
        Arc::new(Feed::new(url, scripted(answers)))
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_poll_in_flight_is_joined_and_its_answer_reaches_every_listener() {
        let feeds = Feeds::default();
        let url = Url::parse("http://127.0.0.1/v5/x").unwrap();
        let script = || scripted(vec![(1, Ok(task(10))), (0, Ok(task(20)))]);
        let make = |url| Feed::new(url, script());
        let (a, b) = (feeds.join(url.clone(), make), feeds.join(url, make));
        assert!(Arc::ptr_eq(&a, &b));
        let _wait_a = Watching::new(a.clone());
        assert!(!a.shared_with_others());
        let _wait_b = Watching::new(b.clone());
        assert!(a.shared_with_others());
        let long_ago = Instant::now();
        let listener = tokio::spawn({
            let b = b.clone();
            async move { b.news_after(0).await }
        });
        let (one, first) = a.poll(0, long_ago, TIMEOUT);
        let (also_one, joined) = b.poll(0, long_ago, TIMEOUT);
        assert_eq!((one, also_one), (1, 1));
        let (first, joined) = tokio::join!(first, joined);
        assert!(Arc::ptr_eq(&first, &joined));
        assert_eq!(first.request, 1);
        assert_eq!(listener.await.unwrap().request, 1);
        // Nothing in flight any more: the next poll is a new request.
        let (two, second) = b.poll(0, Instant::now(), TIMEOUT);
        let second = second.await;
        assert_eq!((two, second.request), (2, 2));
        assert_eq!(second.answer.as_ref().unwrap().progress, Some(20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_request_answering_late_does_not_replace_a_newer_answer() {
        // The first request hangs; once it is stale a second one starts and answers first.
        let feed = feed(vec![(30, Ok(task(10))), (0, Ok(task(40)))]);
        let start = Instant::now();
        let (one, slow) = feed.poll(0, start, TIMEOUT);
        let slow = tokio::spawn(slow);
        tokio::time::advance(Duration::from_secs(11)).await;
        let (two, fast) = feed.poll(0, start + Duration::from_secs(10), TIMEOUT);
        assert_eq!((one, two), (1, 2));
        assert_eq!(fast.await.request, 2);
        assert_eq!(slow.await.unwrap().request, 1);
        let latest = feed.news_after(0).await;
        assert_eq!(latest.request, 2);
        assert_eq!(latest.answer.as_ref().unwrap().progress, Some(40));
        // A number taken for a request sent alone comes after both.
        assert_eq!(feed.number(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_is_told_only_to_those_who_joined_it() {
        let feed = feed(vec![(
            0,
            Err(ApiError::new(crate::client::ApiErrorKind::Timeout)),
        )]);
        let (_, failed) = feed.poll(0, Instant::now(), TIMEOUT);
        assert!(failed.await.answer.is_err());
        assert!(feed.answer_after(0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_timeout_is_a_timeout() {
        let feed = feed(vec![(90, Ok(task(10)))]);
        let (_, answer) = feed.poll(0, Instant::now(), TIMEOUT);
        let polled = answer.await;
        let error = polled.answer.as_ref().unwrap_err();
        assert_eq!(error.kind(), crate::client::ApiErrorKind::Timeout);
        assert!(feed.in_flight(0, Instant::now() - TIMEOUT).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_lives_while_a_source_holds_it() {
        let feeds = Feeds::default();
        let url = Url::parse("http://127.0.0.1/v5/y").unwrap();
        let feed = feeds.join(url.clone(), |url| Feed::new(url, scripted(vec![])));
        assert!(!Watching::new(feed.clone()).shared_with_others());
        let weak = Arc::downgrade(&feed);
        drop(feed);
        assert!(weak.upgrade().is_none());
        let again = feeds.join(url, |url| Feed::new(url, scripted(vec![])));
        assert_eq!(again.started(), 0);
        let other = feeds.join(Url::parse("http://127.0.0.1/v5/z").unwrap(), |url| {
            Feed::new(url, scripted(vec![]))
        });
        assert!(!Arc::ptr_eq(&again, &other));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failure_is_retried_once_whoever_saw_it_and_however_often() {
        let feed = feed(vec![(0, Ok(task(100))), (0, Ok(task(100)))]);
        // Two requests showed the task FAILED: 1 and 2.
        let (one, first) = feed.poll(0, Instant::now(), TIMEOUT);
        first.await;
        let (two, second) = feed.poll(0, Instant::now(), TIMEOUT);
        second.await;
        let claim = feed.claim_retry(one).expect("the first claim");
        assert!(feed.claim_retry(one).is_none(), "the same failure");
        assert!(feed.claim_retry(two).is_none(), "while a retry is out");
        // The retry's answer is news to every wait, numbered after every request before it.
        let answered = claim.answered(task(100), task(0));
        assert_eq!(answered, 3);
        let news = feed.news_after(two).await;
        assert_eq!(
            (news.request, news.answer.as_ref().unwrap().progress),
            (3, Some(0))
        );
        assert!(
            feed.claim_retry(two).is_none(),
            "a failure from before the retry"
        );
        // A failure after the retry is a new one.
        assert!(feed.claim_retry(feed.number()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_without_an_answer_lets_a_later_failure_be_retried() {
        let feed = feed(vec![(0, Ok(task(100)))]);
        let (one, first) = feed.poll(0, Instant::now(), TIMEOUT);
        first.await;
        let claim = feed.claim_retry(one).unwrap();
        // Refused, cancelled or timed out.
        drop(claim);
        assert!(
            feed.claim_retry(one).is_none(),
            "that failure had its retry"
        );
        let later = feed.number();
        assert!(feed.claim_retry(later).is_some());
    }
}
