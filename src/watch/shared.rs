//! Waits on one task through one client share its polls: one request goes out for all of them,
//! and every answer reaches each of them as one of its own polls.
//!
//! Each task being waited for has a [`Feed`] on the client, found by the task's URL: the
//! latest answer (on a `watch` channel every wait on the task listens to), and the request in
//! flight, if any. A wait whose poll falls due joins the request in flight rather than sending
//! another; an answer to anyone's request wakes every wait on the task, which takes it as its
//! poll and plans its next one from there. So the task is polled at the pace of the most eager
//! of its waits, once per poll, while each wait keeps its own schedule, deadline,
//! cancellation and events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::ApiError;
use crate::model::InstanceTask;

/// One answer to a poll of a task, numbered in the order the answers came.
#[derive(Debug)]
pub(crate) struct Polled {
    pub(crate) seq: u64,
    pub(crate) answer: Result<InstanceTask, ApiError>,
}

type InFlight = Shared<BoxFuture<'static, Arc<Polled>>>;

/// The shared polls of one task.
pub(crate) struct Feed {
    latest: watch::Sender<Option<Arc<Polled>>>,
    /// The request in flight: which one, when it started, and its answer to come.
    in_flight: Mutex<Option<(u64, Instant, InFlight)>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("waits", &self.latest.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Feed {
    fn new() -> Self {
        Self {
            latest: watch::Sender::new(None),
            in_flight: Mutex::new(None),
            requests: AtomicU64::new(0),
        }
    }

    /// Whether another wait than the caller listens: alone, a wait polls as if nothing were
    /// shared.
    pub(crate) fn shared_with_others(&self) -> bool {
        self.latest.receiver_count() > 1
    }

    /// Listens to the answers; the answer already there counts as seen.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Polled>>> {
        let mut rx = self.latest.subscribe();
        rx.mark_unchanged();
        rx
    }

    /// The request in flight, unless it started before `stale` (its starter gave up on it
    /// and nobody drove it since).
    pub(crate) fn in_flight(&self, stale: Instant) -> Option<InFlight> {
        let guard = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, started, _)| *started >= stale)
            .map(|(_, _, request)| request.clone())
    }

    /// Joins the request in flight (unless it is older than `stale`), or starts `request`.
    pub(crate) fn poll<F>(self: &Arc<Self>, stale: Instant, request: F) -> InFlight
    where
        F: Future<Output = Result<InstanceTask, ApiError>> + Send + 'static,
    {
        let mut guard = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, started, running)) = guard.as_ref() {
            if *started >= stale {
                return running.clone();
            }
        }
        let id = self.requests.fetch_add(1, Ordering::Relaxed);
        // Weak: a request nobody waits for any more must not keep the feed alive.
        let feed = Arc::downgrade(self);
        let shared = async move {
            let answer = request.await;
            let Some(feed) = feed.upgrade() else {
                return Arc::new(Polled { seq: 0, answer });
            };
            let polled = feed.publish(answer);
            let mut in_flight = feed
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Unless a newer request replaced this one, nothing is in flight any more.
            if in_flight
                .as_ref()
                .is_some_and(|(current, _, _)| *current == id)
            {
                *in_flight = None;
            }
            polled
        }
        .boxed()
        .shared();
        *guard = Some((id, Instant::now(), shared.clone()));
        shared
    }

    fn publish(&self, answer: Result<InstanceTask, ApiError>) -> Arc<Polled> {
        let mut polled = None;
        self.latest.send_modify(|latest| {
            let seq = latest.as_ref().map_or(1, |p| p.seq + 1);
            let answer = Arc::new(Polled { seq, answer });
            polled = Some(answer.clone());
            *latest = Some(answer);
        });
        polled.expect("send_modify runs the closure")
    }
}

/// The feeds of a client's tasks, by URL; a feed lives while a wait holds it.
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    by_url: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Feeds {
    /// The feed of the task at `url`, made if no wait holds one.
    pub(crate) fn join(&self, url: &url::Url) -> Arc<Feed> {
        let mut by_url = self.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = by_url.get(url.as_str()).and_then(Weak::upgrade) {
            return feed;
        }
        // Forget the feeds of finished waits now and then, so the map stays as large as the
        // number of tasks being waited for.
        if by_url.len() >= 64 && by_url.len().is_power_of_two() {
            by_url.retain(|_, feed| feed.strong_count() > 0);
        }
        let feed = Arc::new(Feed::new());
        by_url.insert(url.as_str().to_owned(), Arc::downgrade(&feed));
        feed
    }
}

/// Makes one request for the task, owning what it needs.
pub(crate) type Request =
    Arc<dyn Fn() -> BoxFuture<'static, Result<InstanceTask, ApiError>> + Send + Sync>;

/// The polls a [`TaskSource`](super::TaskSource) shares with the other waits on the same task
/// through the same client. Only the crate's own [`BoundTask`](super::BoundTask) has one;
/// it has nothing to call.
#[derive(Clone)]
pub struct SharedPolls {
    pub(crate) feed: Arc<Feed>,
    pub(crate) request: Request,
}

impl std::fmt::Debug for SharedPolls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPolls")
            .field("feed", &self.feed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn task(progress: i64) -> InstanceTask {
        InstanceTask {
            progress: Some(progress),
            ..InstanceTask::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_in_flight_is_joined_and_its_answer_reaches_every_listener() {
        let feeds = Feeds::default();
        let url = url::Url::parse("http://127.0.0.1/v5/x").unwrap();
        let (a, b) = (feeds.join(&url), feeds.join(&url));
        assert!(Arc::ptr_eq(&a, &b));
        let mut listener = b.subscribe();
        let long_ago = Instant::now();
        let first = a.poll(long_ago, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(task(10))
        });
        let joined = b.poll(long_ago, async { unreachable!("joined, not sent") });
        let (first, joined) = tokio::join!(first, joined);
        assert!(Arc::ptr_eq(&first, &joined));
        assert_eq!(first.seq, 1);
        listener.changed().await.unwrap();
        assert_eq!(listener.borrow_and_update().as_ref().unwrap().seq, 1);
        // Nothing in flight any more: the next poll is a new request.
        let second = b.poll(Instant::now(), async { Ok(task(20)) }).await;
        assert_eq!(second.seq, 2);
        assert_eq!(second.answer.as_ref().unwrap().progress, Some(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_lives_while_a_wait_holds_it() {
        let feeds = Feeds::default();
        let url = url::Url::parse("http://127.0.0.1/v5/y").unwrap();
        let feed = feeds.join(&url);
        let weak = Arc::downgrade(&feed);
        drop(feed);
        assert!(weak.upgrade().is_none());
        let again = feeds.join(&url);
        assert_eq!(again.latest.borrow().as_ref().map(|p| p.seq), None);
    }
}
