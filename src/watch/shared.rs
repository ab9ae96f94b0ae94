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

/// One answer to a poll of a task, with the number of the request it answers. Requests are
/// numbered in the order they started, so a wait can tell an answer that is newer than the
/// one it has from one that is older (a request that started earlier but took longer).
#[derive(Debug)]
pub(crate) struct Polled {
    pub(crate) request: u64,
    pub(crate) answer: Result<InstanceTask, ApiError>,
}

type InFlight = Shared<BoxFuture<'static, Arc<Polled>>>;

/// The shared polls of one task.
pub(crate) struct Feed {
    latest: watch::Sender<Option<Arc<Polled>>>,
    /// The request in flight: which one, when it started, and its answer to come.
    in_flight: Mutex<Option<(u64, Instant, InFlight)>>,
    /// The number of the last request started, by any wait on the task.
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
    pub(crate) fn new() -> Self {
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

    /// Numbers a request that a wait sends on its own: answers to requests that started
    /// before it are older than the answer it will have.
    pub(crate) fn number(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The request in flight and its number, unless it started before `stale` (its starter
    /// gave up on it and nobody drove it since).
    pub(crate) fn in_flight(&self, stale: Instant) -> Option<(u64, InFlight)> {
        let guard = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|(_, started, _)| *started >= stale)
            .map(|(id, _, request)| (*id, request.clone()))
    }

    /// Joins the request in flight (unless it is older than `stale`), or starts `request`;
    /// returns the request's number and its answer to come.
    pub(crate) fn poll<F>(self: &Arc<Self>, stale: Instant, request: F) -> (u64, InFlight)
    where
        F: Future<Output = Result<InstanceTask, ApiError>> + Send + 'static,
    {
        let mut guard = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((id, started, running)) = guard.as_ref() {
            if *started >= stale {
                return (*id, running.clone());
            }
        }
        let id = self.number();
        // Weak: a request nobody waits for any more must not keep the feed alive.
        let feed = Arc::downgrade(self);
        let shared = async move {
            let answer = request.await;
            let polled = Arc::new(Polled {
                request: id,
                answer,
            });
            let Some(feed) = feed.upgrade() else {
                return polled;
            };
            feed.publish(&polled);
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
        (id, shared)
    }

    /// Tells every wait on the task of an answer from the service, unless a newer one is
    /// already out. A request that got no answer (a network failure, a timeout) says nothing
    /// of the task: only the waits that joined it count it as a failed poll.
    fn publish(&self, polled: &Arc<Polled>) {
        let heard = match &polled.answer {
            Ok(_) => true,
            Err(error) => error.status().is_some(),
        };
        if !heard {
            return;
        }
        self.latest.send_if_modified(|latest| {
            if latest.as_ref().is_some_and(|p| p.request > polled.request) {
                return false;
            }
            *latest = Some(polled.clone());
            true
        });
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
        let (one, first) = a.poll(long_ago, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(task(10))
        });
        let (also_one, joined) = b.poll(long_ago, async { unreachable!("joined, not sent") });
        assert_eq!((one, also_one), (1, 1));
        let (first, joined) = tokio::join!(first, joined);
        assert!(Arc::ptr_eq(&first, &joined));
        assert_eq!(first.request, 1);
        listener.changed().await.unwrap();
        assert_eq!(listener.borrow_and_update().as_ref().unwrap().request, 1);
        // Nothing in flight any more: the next poll is a new request.
        let (two, second) = b.poll(Instant::now(), async { Ok(task(20)) });
        let second = second.await;
        assert_eq!((two, second.request), (2, 2));
        assert_eq!(second.answer.as_ref().unwrap().progress, Some(20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_request_answering_late_does_not_replace_a_newer_answer() {
        let feed = Arc::new(Feed::new());
        let listener = feed.subscribe();
        let start = Instant::now();
        // The first request hangs; once it is stale a second one starts and answers first.
        let (one, slow) = feed.poll(start, async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(task(10))
        });
        let slow = tokio::spawn(slow);
        tokio::time::advance(Duration::from_secs(11)).await;
        let (two, fast) = feed.poll(start + Duration::from_secs(10), async { Ok(task(40)) });
        assert_eq!((one, two), (1, 2));
        assert_eq!(fast.await.request, 2);
        assert_eq!(slow.await.unwrap().request, 1);
        let latest = listener.borrow().clone().unwrap();
        assert_eq!(latest.request, 2);
        assert_eq!(latest.answer.as_ref().unwrap().progress, Some(40));
        // A number taken for a request sent alone comes after both.
        assert_eq!(feed.number(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_is_told_only_to_those_who_joined_it() {
        let feed = Arc::new(Feed::new());
        let listener = feed.subscribe();
        let (_, failed) = feed.poll(Instant::now(), async {
            Err(ApiError::new(crate::client::ApiErrorKind::Timeout))
        });
        assert!(failed.await.answer.is_err());
        assert!(!listener.has_changed().unwrap());
        assert!(listener.borrow().is_none());
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
        assert_eq!(again.latest.borrow().as_ref().map(|p| p.request), None);
    }
}
