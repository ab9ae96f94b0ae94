//! Retries of a FAILED task by waits that share its polls, in virtual time, against a model of
//! the service: a GET reads the task as it is when the request arrives and answers after its
//! delay; a retry restarts a FAILED task when it arrives and answers after its delay, and is
//! refused (400) for a task that is not FAILED. Each test is an interleaving in which a
//! failure could be retried twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{PollPolicy, TaskSource, TaskWatcher, WaitError};
use crate::client::feed::{Feed, Request};
use crate::client::{ApiError, ApiErrorKind};
use crate::model::{InstanceTask, TaskStatus};

/// The service's view of one task.
struct State {
    /// When the current run started, or `None` while the task is FAILED.
    running_since: Option<Instant>,
    /// How long a run lasts before it fails again.
    run_for: Duration,
    /// How many runs have failed (each failure has its own end time).
    failures: u32,
    /// Retries that restarted the task.
    restarts: u32,
    /// When retries arrived, accepted or not.
    posts: Vec<Instant>,
    /// Delays of the next GETs (then `get_delay`).
    get_delays: VecDeque<Duration>,
    get_delay: Duration,
    /// Delays of the next retries' answers (then zero).
    post_delays: VecDeque<Duration>,
    /// The next retry is throttled with this Retry-After instead.
    throttle_next_post: Option<Duration>,
    /// The next GET after a restart reads the failure before it (a lagging replica).
    stale_read_after_restart: bool,
    stale_due: bool,
}

struct Service(Mutex<State>);

impl Service {
    fn failed() -> Arc<Self> {
        Arc::new(Self(Mutex::new(State {
            running_since: None,
            run_for: Duration::from_secs(3600),
            failures: 1,
            restarts: 0,
            posts: Vec::new(),
            get_delays: VecDeque::new(),
            get_delay: Duration::from_millis(100),
            post_delays: VecDeque::new(),
            throttle_next_post: None,
            stale_read_after_restart: false,
            stale_due: false,
        })))
    }

    fn with(self: Arc<Self>, change: impl FnOnce(&mut State)) -> Arc<Self> {
        change(&mut self.0.lock().unwrap());
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The task as it is now.
    fn read(state: &mut State) -> InstanceTask {
        if let Some(since) = state.running_since {
            if since.elapsed() >= state.run_for {
                state.running_since = None;
                state.failures += 1;
            }
        }
        let failed = |n: u32| InstanceTask {
            status: Some(TaskStatus::Failed),
            status_detail: Some("quota exceeded".into()),
            end_time: Some(crate::model::TaskTime::new(format!(
                "2026-12-01T00:00:{n:02}Z"
            ))),
            ..InstanceTask::default()
        };
        if state.stale_due {
            state.stale_due = false;
            return failed(state.failures);
        }
        match state.running_since {
            None => failed(state.failures),
            Some(_) => InstanceTask {
                status: Some(TaskStatus::Running),
                progress: Some(10),
                ..InstanceTask::default()
            },
        }
    }

    fn get(self: &Arc<Self>) -> BoxFuture<'static, Result<InstanceTask, ApiError>> {
        let (task, delay) = {
            let mut state = self.state();
            let delay = state.get_delays.pop_front().unwrap_or(state.get_delay);
            (Self::read(&mut state), delay)
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(task)
        })
    }

    fn post(self: &Arc<Self>) -> BoxFuture<'static, Result<InstanceTask, ApiError>> {
        let (answer, delay) = {
            let mut state = self.state();
            state.posts.push(Instant::now());
            let delay = state.post_delays.pop_front().unwrap_or_default();
            let answer = if let Some(wait) = state.throttle_next_post.take() {
                Err(ApiError::new(ApiErrorKind::Throttled).with_retry_after(wait))
            } else if Self::read(&mut state).status == Some(TaskStatus::Failed) {
                state.running_since = Some(Instant::now());
                state.restarts += 1;
                state.stale_due = state.stale_read_after_restart;
                Ok(InstanceTask {
                    status: Some(TaskStatus::Pending),
                    progress: Some(0),
                    ..InstanceTask::default()
                })
            } else {
                Err(ApiError::new(ApiErrorKind::BadRequest).with_status(400))
            };
            (answer, delay)
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            answer
        })
    }

    fn feed(self: &Arc<Self>) -> Arc<Feed> {
        let service = self.clone();
        let request: Request = Arc::new(move |_url| service.get());
        Arc::new(Feed::new(
            url::Url::parse("http://127.0.0.1/v5/task").unwrap(),
            request,
        ))
    }
}

/// A wait's source: the service, through the feed it shares.
struct Source(Arc<Service>);

impl TaskSource for Source {
    fn fetch(&self) -> impl std::future::Future<Output = Result<InstanceTask, ApiError>> + Send {
        self.0.get()
    }

    fn retry(&self) -> impl std::future::Future<Output = Result<InstanceTask, ApiError>> + Send {
        self.0.post()
    }
}

/// A wait on `service` sharing `feed`, polling every second, retrying up to `retries` times.
fn waiter(service: &Arc<Service>, feed: &Arc<Feed>, retries: u32) -> TaskWatcher<Source> {
    let every_second = PollPolicy::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter(false)
        .with_progress_guided(false);
    TaskWatcher::from_source(Source(service.clone()))
        .sharing(feed.clone())
        .policy(every_second)
        .retry_failed(retries)
        .timeout(Duration::from_secs(30))
}

/// W1 reads FAILED at 0.1 s and sends the retry, which restarts the task at once and answers
/// `post_delay` later. W2, started at 0.05 s, sent a GET before the restart that answers FAILED
/// at 3 s. W1 is cancelled at 1 s. Returns both outcomes.
async fn cancelled_while_retrying(
    service: &Arc<Service>,
    post_delay: Duration,
) -> [super::Outcome; 2] {
    {
        let mut state = service.state();
        state.get_delays = [Duration::from_millis(100), Duration::from_secs(3)].into();
        state.post_delays = [post_delay].into();
    }
    let feed = service.feed();
    let token = CancellationToken::new();
    let first = tokio::spawn(waiter(service, &feed, 1).cancel_token(token.clone()).wait());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(waiter(service, &feed, 1).wait());
    tokio::time::sleep(Duration::from_millis(950)).await;
    token.cancel();
    [first.await.unwrap(), second.await.unwrap()]
}

#[tokio::test(start_paused = true)]
async fn a_wait_cancelled_while_its_retry_is_out_leaves_no_second_retry() {
    let service = Service::failed();
    let [first, second] = cancelled_while_retrying(&service, Duration::from_secs(5)).await;
    assert!(
        matches!(first, Err(WaitError::Cancelled { .. })),
        "{first:?}"
    );
    assert_eq!(service.state().posts.len(), 1, "one retry of one failure");
    assert!(
        matches!(second, Err(WaitError::TimedOut { .. })),
        "the task runs on: {second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_and_a_retry_answer_at_the_same_moment_leave_no_second_retry() {
    // The retry's answer is due at 1.0 s, the cancel too.
    let service = Service::failed();
    let _ = cancelled_while_retrying(&service, Duration::from_millis(900)).await;
    assert_eq!(service.state().posts.len(), 1, "one retry of one failure");
}

#[tokio::test(start_paused = true)]
async fn waits_that_saw_the_retry_as_a_running_task_still_count_it() {
    // Each wait may retry once; the task fails again 2 s after each restart. W2's poll, sent
    // while W1's retry is out, shows the task RUNNING before the retry's answer comes.
    let service = Service::failed().with(|s| {
        s.run_for = Duration::from_secs(2);
        s.post_delays = [Duration::from_millis(1500)].into();
    });
    let feed = service.feed();
    let first = tokio::spawn(waiter(&service, &feed, 1).wait());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = tokio::spawn(waiter(&service, &feed, 1).wait());
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(service.state().restarts, 1, "one retry in all");
    assert!(matches!(first, Err(WaitError::Failed { .. })), "{first:?}");
    assert!(
        matches!(second, Err(WaitError::Failed { .. })),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_retry_is_not_sent_again_before_the_server_said() {
    let service = Service::failed().with(|s| {
        s.throttle_next_post = Some(Duration::from_secs(2));
    });
    let feed = service.feed();
    let first = tokio::spawn(waiter(&service, &feed, 1).wait());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = tokio::spawn(waiter(&service, &feed, 1).wait());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let posts = service.state().posts.clone();
    assert!(posts.len() >= 2, "{posts:?}");
    assert!(
        posts[1] - posts[0] >= Duration::from_secs(2),
        "the second try waited for Retry-After: {:?}",
        posts[1] - posts[0]
    );
    assert_eq!(service.state().restarts, 1);
    first.abort();
    second.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stale_failure_read_after_a_retry_is_not_a_new_failure() {
    let service = Service::failed().with(|s| s.stale_read_after_restart = true);
    let wait = TaskWatcher::from_source(Source(service.clone()))
        .policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_secs(1))
                .with_jitter(false),
        )
        .retry_failed(2)
        .timeout(Duration::from_secs(20))
        .wait()
        .await;
    assert_eq!(
        service.state().restarts,
        1,
        "the old failure read again: {wait:?}"
    );
    assert!(matches!(wait, Err(WaitError::TimedOut { .. })), "{wait:?}");
}
