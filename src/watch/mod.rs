//! The watcher: polls a task until it is SUCCESS or FAILED, with exponential delays, a deadline
//! and cancellation, as a stream of events or as a future.

mod engine;
mod error;
mod event;
mod many;
mod schedule;
mod source;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, FusedStream, Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::error::WaitError;
pub use self::event::{Outcome, TaskEvent};
pub use self::many::{wait_all, watch_many};
pub use self::schedule::Backoff;
pub use self::source::{BoundTask, TaskSource};
use crate::{InstanceId, IotdaClient, TaskId};

/// How long a wait may run unless told otherwise: 60 minutes.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How many polls may answer 404 before a new task is first seen: 3.
pub const DEFAULT_NOT_FOUND_TOLERANCE: u32 = 3;

/// Waits for one task with the defaults: 60 minutes at most, delays from 1 s to 30 s.
///
/// ```no_run
/// # async fn deploy(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
/// use iotda_task_watcher::wait_for_task;
/// let instance = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
/// let task = "075f413d-a3bb-4243-974d-8eb9221c1234".parse()?;
/// let done = wait_for_task(&client, &instance, &task).await?;
/// println!("{} finished: {:?}", task, done.end_time);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`WaitError`] when the task FAILED, the deadline passed, or the service answered with an
/// error that retrying cannot fix; each carries the last snapshot seen.
pub async fn wait_for_task(
    client: &IotdaClient,
    instance_id: &InstanceId,
    task_id: &TaskId,
) -> Outcome {
    TaskWatcher::new(client, instance_id.clone(), task_id.clone())
        .wait()
        .await
}

/// When a wait stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    After(Duration),
    At(Instant),
    AtWallClock(SystemTime),
}

impl Stop {
    fn deadline_from(self, started: Instant) -> Instant {
        match self {
            Self::After(timeout) => started + timeout,
            Self::At(instant) => instant,
            Self::AtWallClock(when) => {
                let left = when
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                started + left
            }
        }
    }
}

/// Everything a wait is configured with, apart from its source.
#[derive(Debug, Clone)]
struct Settings {
    stop: Stop,
    backoff: Backoff,
    request_timeout: Duration,
    not_found_tolerance: u32,
    cancel: Option<CancellationToken>,
    limiter: Option<Arc<Semaphore>>,
}

/// Waits for one task. Configure it with the builder methods, then either `.await` it (or call
/// [`TaskWatcher::wait`]) for the outcome, or take [`TaskWatcher::events`] for a stream of what
/// happens on the way.
///
/// The first poll is sent at once; after each poll its events are emitted at once, then the
/// watcher sleeps: exponentially longer (1 s, 2 s, 4 s ... 30 s, with jitter) while nothing
/// changes, from the minimum again after a status change, never less than a server's
/// `Retry-After`, and never past the deadline: the last poll lands on it.
///
/// ```no_run
/// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use futures::StreamExt;
/// use iotda_task_watcher::{TaskEvent, TaskWatcher};
///
/// let watcher = TaskWatcher::new(&client, "a1b2c3d4".parse()?, "075f413d".parse()?)
///     .timeout(Duration::from_secs(20 * 60))
///     .max_delay(Duration::from_secs(10));
/// let mut events = watcher.events();
/// while let Some(event) = events.next().await {
///     match event {
///         TaskEvent::ProgressChanged { to: Some(p), .. } => println!("{p}%"),
///         TaskEvent::Done(outcome) => println!("{:?}", outcome.map(|t| t.status)),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[must_use = "a watcher does nothing until it is awaited or its events are polled"]
pub struct TaskWatcher<S = BoundTask> {
    source: S,
    settings: Settings,
}

impl TaskWatcher<BoundTask> {
    /// A watcher of `task_id` on `instance_id`, polled through `client`.
    pub fn new(client: &IotdaClient, instance_id: InstanceId, task_id: TaskId) -> Self {
        let request_timeout = client.timeout();
        Self::from_source(client.task(instance_id, task_id)).request_timeout(request_timeout)
    }
}

impl<S: TaskSource> TaskWatcher<S> {
    /// A watcher of whatever `source` returns.
    pub fn from_source(source: S) -> Self {
        Self {
            source,
            settings: Settings {
                stop: Stop::After(DEFAULT_WAIT_TIMEOUT),
                backoff: Backoff::default(),
                request_timeout: crate::DEFAULT_TIMEOUT,
                not_found_tolerance: DEFAULT_NOT_FOUND_TOLERANCE,
                cancel: None,
                limiter: None,
            },
        }
    }

    /// Gives up this long after the wait starts. Default 60 minutes. Replaces any deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop = Stop::After(timeout);
        self
    }

    /// Gives up at a wall-clock time, e.g. one kept from an earlier attempt. Replaces any timeout.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.settings.stop = Stop::AtWallClock(deadline);
        self
    }

    /// Gives up at an instant of tokio's clock. Replaces any timeout.
    pub fn deadline_at(mut self, deadline: Instant) -> Self {
        self.settings.stop = Stop::At(deadline);
        self
    }

    /// The first delay, and the delay after a status change. Default 1 s.
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.settings.backoff.min_delay = delay;
        self
    }

    /// The longest delay between polls. Default 30 s.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.settings.backoff.max_delay = delay;
        self
    }

    /// How much each delay grows over the one before; below 1 counts as 1. Default 2.
    pub fn factor(mut self, factor: f32) -> Self {
        self.settings.backoff.factor = factor;
        self
    }

    /// Turns jitter on or off. Default on.
    pub fn jitter(mut self, on: bool) -> Self {
        self.settings.backoff.jitter = on;
        self
    }

    /// Seeds the jitter so that delays repeat from run to run (for tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.settings.backoff.jitter_seed = Some(seed);
        self
    }

    /// Sets all the delay settings at once.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// The timeout of each poll. Default: the client's (10 s). A poll in flight at the deadline
    /// ends within it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Ends the wait with [`WaitError::Cancelled`] when `token` is cancelled, mid-sleep or
    /// mid-request. The task itself goes on: cancelling stops only the local wait.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.settings.cancel = Some(token);
        self
    }

    /// How many of the first polls may answer 404 while the task has not been seen yet (a new
    /// task can take a moment to become visible). Once seen, a 404 ends the wait. Default 3.
    pub fn not_found_tolerance(mut self, polls: u32) -> Self {
        self.settings.not_found_tolerance = polls;
        self
    }

    /// Shares a limit on requests in flight with other watchers: each poll holds one permit.
    pub fn request_limiter(mut self, limiter: Arc<Semaphore>) -> Self {
        self.settings.limiter = Some(limiter);
        self
    }

    /// The source this watcher polls.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: TaskSource + 'static> TaskWatcher<S> {
    /// The wait as a stream of events, ending with one [`TaskEvent::Done`]. Dropping the stream
    /// stops the wait, and any request in flight.
    pub fn events(self) -> TaskEvents {
        // Boxed, so that each step moves a pointer rather than the whole engine.
        let engine = Box::new(engine::Engine::new(self.source, self.settings));
        let stream = futures::stream::unfold(engine, |mut engine| async move {
            let event = engine.next_event().await?;
            Some((event, engine))
        });
        TaskEvents {
            inner: stream.boxed(),
            done: false,
        }
    }

    /// Waits for the outcome: the task on SUCCESS, or why not.
    ///
    /// # Errors
    /// [`WaitError`], carrying the last snapshot seen.
    pub async fn wait(self) -> Outcome {
        let mut events = self.events();
        while let Some(event) = events.next().await {
            if let TaskEvent::Done(outcome) = event {
                return outcome;
            }
        }
        unreachable!("every event stream ends with TaskEvent::Done")
    }
}

impl<S: TaskSource + 'static> IntoFuture for TaskWatcher<S> {
    type Output = Outcome;
    type IntoFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// The events of one wait; see [`TaskWatcher::events`].
#[must_use = "streams do nothing unless polled"]
pub struct TaskEvents {
    inner: BoxStream<'static, TaskEvent>,
    done: bool,
}

impl Stream for TaskEvents {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}

impl FusedStream for TaskEvents {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl std::fmt::Debug for TaskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEvents")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
