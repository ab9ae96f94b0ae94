//! [`TaskWatcher`]: the builder of one wait, and the wait itself.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::condition::Condition;
use super::events::{CheckpointHook, TaskEvents};
use super::policy::PollPolicy;
use super::schedule;
use super::state::{ResumeError, WaitState};
use super::stop::Stop;
use super::turns::Turns;
use super::{
    engine, BoundTask, Outcome, TaskEvent, TaskSource, DEFAULT_NOT_FOUND_TOLERANCE,
    DEFAULT_WAIT_TIMEOUT,
};
use crate::client::feed::Feed;
use crate::{InstanceId, IotdaClient, TaskId};

/// Everything a wait is configured with, apart from its source.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) stop: Stop,
    pub(crate) policy: PollPolicy,
    pub(crate) request_timeout: Duration,
    pub(crate) not_found_tolerance: u32,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) limiter: Option<Arc<Turns>>,
    pub(crate) window_fail_fast: bool,
    pub(crate) condition: Condition,
    pub(crate) retry_failed: u32,
    /// Wall-clock time at the start; `None` reads the system clock.
    pub(crate) wall_clock: Option<SystemTime>,
    pub(crate) resume: Option<Box<WaitState>>,
    /// The task's polls, shared with other waits on it: a [`BoundTask`]'s.
    pub(crate) feed: Option<Arc<Feed>>,
}

/// Waits for one task. Configure it with the builder methods, then either `.await` it (or call
/// [`TaskWatcher::wait`]) for the outcome, or take [`TaskWatcher::events`] for a stream of what
/// happens on the way.
///
/// The first poll is sent at once; after each poll its events are emitted at once, then the
/// watcher sleeps: exponentially longer (1 s, 2 s, 4 s ... 30 s, with jitter) while nothing
/// changes (a status change keeps the pace), never less than a server's
/// `Retry-After`, and never past the deadline: the last poll lands on it. Progress and
/// maintenance windows move the sleeps within fixed bounds: up to 45 s while a task's
/// estimated end is far, up to 5 minutes while a PENDING task's window is closed (see
/// [`PollPolicy`] and its [`max_lateness`](PollPolicy::max_lateness)).
///
/// ```no_run
/// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use futures::StreamExt;
/// use iotda_task_watcher::watch::PollPolicy;
/// use iotda_task_watcher::{TaskEvent, TaskWatcher};
///
/// let watcher = TaskWatcher::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?)
///     .timeout(Duration::from_secs(20 * 60))
///     .policy(PollPolicy::default().with_max_delay(Duration::from_secs(10)));
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
    on_checkpoint: Option<CheckpointHook>,
    on_state: Option<engine::StateHook>,
}

impl<S> std::fmt::Debug for TaskWatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWatcher")
            .field("source", &std::any::type_name::<S>())
            .field("settings", &self.settings)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .field("on_state", &self.on_state.is_some())
            .finish()
    }
}

impl TaskWatcher<BoundTask> {
    /// A watcher of `task_id` on `instance_id`, polled through `client` (with the client's
    /// request timeout).
    pub fn new(client: &IotdaClient, instance_id: &InstanceId, task_id: &TaskId) -> Self {
        let request_timeout = client.timeout();
        Self::from_source(BoundTask::new(client, instance_id, task_id))
            .request_timeout(request_timeout)
    }

    /// Goes on with a wait saved by [`TaskEvents::checkpoint`], through `client`.
    ///
    /// # Errors
    /// [`ResumeError`] when the state does not name its instance and task (it came from a
    /// watcher of a custom source).
    pub fn resume(client: &IotdaClient, state: WaitState) -> Result<Self, ResumeError> {
        let (Some(instance), Some(task)) = (state.instance_id(), state.task_id()) else {
            return Err(ResumeError);
        };
        let watcher = Self::new(client, instance, task);
        Ok(watcher.resume_from(state))
    }
}

impl<S: TaskSource> TaskWatcher<S> {
    /// A watcher of whatever `source` returns.
    pub fn from_source(source: S) -> Self {
        Self {
            source,
            on_checkpoint: None,
            on_state: None,
            settings: Settings {
                stop: Stop::After(DEFAULT_WAIT_TIMEOUT),
                policy: PollPolicy::default(),
                request_timeout: crate::client::DEFAULT_TIMEOUT,
                not_found_tolerance: DEFAULT_NOT_FOUND_TOLERANCE,
                cancel: None,
                limiter: None,
                window_fail_fast: false,
                condition: Condition::done(),
                retry_failed: 0,
                wall_clock: None,
                resume: None,
                feed: None,
            },
        }
    }

    /// What the wait waits for; by default [`Condition::done`], the task's SUCCESS. The wait
    /// resolves with the first snapshot in which `condition` holds, and ends at once when the
    /// task ends in a snapshot in which it does not: [`WaitError::Failed`](super::WaitError::Failed)
    /// for FAILED, [`WaitError::Unmet`](super::WaitError::Unmet) for SUCCESS. See [`Condition`]
    /// for the rules. Progress guidance aims at the progress the condition needs.
    ///
    /// ```no_run
    /// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use iotda_task_watcher::watch::Condition;
    /// use iotda_task_watcher::TaskWatcher;
    ///
    /// // Go on with the rollout once the resize has left PENDING (its window opened).
    /// let running = TaskWatcher::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?)
    ///     .until(Condition::started())
    ///     .await?;
    /// println!("started at {:?}", running.start_time);
    /// # Ok(()) }
    /// ```
    pub fn until(mut self, condition: Condition) -> Self {
        self.settings.condition = condition;
        self
    }

    /// Retries the task up to `times` times when it FAILED (and the condition does not hold in
    /// that snapshot), with [`TaskSource::retry`] (for a client's task,
    /// [`IotdaClient::retry_task`]). Each retry is a [`TaskEvent::Retried`], carrying the
    /// failure that led to it; its answer is a snapshot like any other, and the wait goes on
    /// under the same deadline. A throttled retry goes again after the server's wait; any other
    /// refusal ends the wait with [`WaitError::Api`](super::WaitError::Api). Once the retries
    /// are spent, the next FAILED ends it with [`WaitError::Failed`](super::WaitError::Failed).
    /// Waits on one task through one client retry each failure once, and each counts it.
    /// Default 0: never.
    ///
    /// # Caveats
    ///
    /// - Retrying is never the default, and should be chosen knowingly: a retried task may
    ///   fail again for the same reason (a quota, a bad configuration), and running a change
    ///   again may cost money.
    /// - Waits share a retry only through one client: two clients, or two processes, waiting
    ///   for the same task each retry it on their own (`iotda-wait --state-dir` lets one
    ///   process at a time wait for a task).
    /// - A retry is counted before it is sent, and [`on_state`](Self::on_state) saves it so:
    ///   a wait resumed after its process stopped while the retry was out reads the task first
    ///   and counts that retry as spent, whatever the read shows. A state saved only by
    ///   [`on_checkpoint`](Self::on_checkpoint) (after events) can miss it.
    /// - A retry with no answer (a timeout, a reset connection, a server error) stays spent,
    ///   and the task is read at once to learn whether it restarted; a refused one (e.g. 400)
    ///   ends the wait with [`WaitError::Api`](super::WaitError::Api).
    pub fn retry_failed(mut self, times: u32) -> Self {
        self.settings.retry_failed = times;
        self
    }

    /// Gives up this long after the wait starts. Default 60 minutes. Replaces any deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop = Stop::After(timeout);
        self
    }

    /// Gives up at a wall-clock time, e.g. one kept from an earlier attempt, or a CI job's end.
    /// Replaces any timeout. [`deadline_instant`](Self::deadline_instant) takes a monotonic
    /// instant instead.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.settings.stop = Stop::AtWallClock(deadline);
        self
    }

    /// Gives up at a monotonic instant. Replaces any timeout. Under a paused tokio clock,
    /// read the instant from tokio (`tokio::time::Instant::now().into_std()`), which the
    /// paused clock moves.
    pub fn deadline_instant(mut self, deadline: std::time::Instant) -> Self {
        self.settings.stop = Stop::At(Instant::from_std(deadline));
        self
    }

    /// How long to sleep between polls: see [`PollPolicy`] for its settings, their defaults
    /// and the lateness promise. Replaces the policy set before.
    ///
    /// ```no_run
    /// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use iotda_task_watcher::watch::PollPolicy;
    /// use iotda_task_watcher::TaskWatcher;
    ///
    /// let policy = PollPolicy::default().with_max_delay(Duration::from_secs(10));
    /// let task = TaskWatcher::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?)
    ///     .policy(policy)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn policy(mut self, policy: PollPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// With `true`, a PENDING task whose maintenance window opens after the deadline ends the
    /// wait at once with
    /// [`WaitError::WindowAfterDeadline`](super::WaitError::WindowAfterDeadline). Default
    /// `false`.
    ///
    /// # Caveats
    ///
    /// The window is only a hint: only a resize made with `delay=true` waits for it, and the
    /// task does not say which kind it is. A task that does not wait for its window may start
    /// and end well before the deadline; with this on, its wait has already ended. Turn it on
    /// only for tasks known to wait for their window.
    pub fn fail_fast_on_window(mut self, on: bool) -> Self {
        self.settings.window_fail_fast = on;
        self
    }

    /// The wall-clock time at which the wait starts; by default the system clock's. The
    /// watcher reads wall time (for maintenance windows and absolute deadlines) as this plus
    /// the time elapsed on tokio's clock, so tests and simulations on a paused clock see
    /// windows open on time.
    pub fn wall_clock(mut self, now: SystemTime) -> Self {
        self.settings.wall_clock = Some(now);
        self
    }

    /// Goes on from `state`, saved by [`TaskEvents::checkpoint`] (perhaps in another
    /// process): the same absolute deadline, the last snapshot (so nothing seen is reported
    /// twice), the poll count and the schedule. Call the other builder methods first; this
    /// sets the deadline.
    pub fn resume_from(mut self, state: WaitState) -> Self {
        self.settings.stop = Stop::AtWallClock(state.deadline().into());
        self.settings.resume = Some(Box::new(state));
        self
    }

    /// The timeout of each poll. Default: the client's (10 s). A poll in flight at the deadline
    /// ends within it. Below 1 ms it counts as 1 ms.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout.max(schedule::MIN_DELAY_FLOOR);
        self
    }

    /// Ends the wait with [`WaitError::Cancelled`](super::WaitError::Cancelled) when `token` is cancelled, mid-sleep or
    /// mid-request. The task itself goes on: cancelling stops only the local wait.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.settings.cancel = Some(token);
        self
    }

    /// How many of the first polls may answer 404 while the task has not been seen yet (a new
    /// task can take a moment to become visible). Once seen, a 404 ends the wait. Default 3.
    ///
    /// The same number bounds network failures (refused, reset, DNS, TLS) while no poll of
    /// the wait has had any answer: an endpoint that never answers is more likely wrong (the
    /// scheme, the port, a proxy) than down, so the wait ends with the error rather than
    /// retrying to its deadline. Once the service has answered, network failures are retried
    /// until the deadline. Request timeouts are always retried.
    pub fn not_found_tolerance(mut self, polls: u32) -> Self {
        self.settings.not_found_tolerance = polls;
        self
    }

    /// Shares a limit on requests in flight with other watchers: each poll holds one turn.
    pub(crate) fn request_limiter(mut self, limiter: Arc<Turns>) -> Self {
        self.settings.limiter = Some(limiter);
        self
    }

    /// Calls `save` after each event with where the wait then stands, to resume it elsewhere
    /// (with [`TaskWatcher::resume_from`]): a [`WaitState`] after every event but the last,
    /// `None` after the final one. It is how a wait among many (see
    /// [`watch_many`](super::watch_many)) keeps its own checkpoint.
    ///
    /// ```no_run
    /// # fn run(watcher: iotda_task_watcher::TaskWatcher) {
    /// let watcher = watcher.on_checkpoint(|_event, state| match state {
    ///     Some(state) => {
    ///         // Written whole, then renamed over the old one: a reader never sees half.
    ///         std::fs::write("wait.json.tmp", serde_json::to_vec(&state).unwrap()).unwrap();
    ///         std::fs::rename("wait.json.tmp", "wait.json").unwrap();
    ///     }
    ///     None => {
    ///         let _ = std::fs::remove_file("wait.json");
    ///     }
    /// });
    /// # }
    /// ```
    ///
    /// # Caveats
    ///
    /// - `save` runs inside the stream's poll, on the runtime's thread: keep it short (a
    ///   blocking write holds up the other waits on that thread).
    /// - It runs after events, not after every poll: polls that brought no event since the
    ///   last checkpoint are not in the saved state, and a wait resumed from it counts from
    ///   there.
    /// - A file written in place can be left half-written by a process killed mid-write:
    ///   write a temporary file and rename it over the old one, as above.
    pub fn on_checkpoint(
        mut self,
        save: impl FnMut(&TaskEvent, Option<WaitState>) + Send + 'static,
    ) -> Self {
        self.on_checkpoint = Some(sync_wrapper::SyncWrapper::new(Box::new(save)));
        self
    }

    /// Calls `save` with where the wait stands whenever that is worth keeping: after every
    /// poll's answer (or failure), before every retry is sent (with the attempt counted, so a
    /// process stopped while the retry is out resumes with it spent), and when the wait ends
    /// (with its last snapshot and counts, and [`WaitState::ended`] set). Resume from the last
    /// state saved with [`TaskWatcher::resume_from`]: the wait then reads the task first when a
    /// retry's answer was never seen, and never restarts the task more often than
    /// [`retry_failed`](Self::retry_failed) allows in all.
    ///
    /// `save` answers whether the state was kept. An error before a retry keeps the retry
    /// from going out: the wait ends with [`WaitError::Failed`](crate::WaitError::Failed),
    /// its `not_retried` saying why. Any other error is the hook's own to report; the wait
    /// goes on.
    ///
    /// ```no_run
    /// # fn run(watcher: iotda_task_watcher::TaskWatcher) {
    /// // Written whole, synced and renamed over the old one: a reader never sees half.
    /// let watcher = watcher.on_state(|state| state.write_to("wait.json"));
    /// # }
    /// ```
    ///
    /// # Caveats
    ///
    /// `save` runs on the wait's task, between its requests: keep it short. A slow disk
    /// delays the wait's next poll (never its deadline), and holds up the other waits on that
    /// thread.
    pub fn on_state<E>(
        mut self,
        mut save: impl FnMut(&WaitState) -> Result<(), E> + Send + 'static,
    ) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let save = move |state: &WaitState| save(state).map_err(Into::into);
        self.on_state = Some(sync_wrapper::SyncWrapper::new(Box::new(save)));
        self
    }

    /// Shares the polls of `feed` with the other waits on it, whatever the source.
    #[cfg(test)]
    pub(crate) fn sharing(mut self, feed: Arc<Feed>) -> Self {
        self.settings.feed = Some(feed);
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
    pub fn events(mut self) -> TaskEvents {
        if self.settings.feed.is_none() {
            // A client's task shares its polls with the other waits on it.
            let bound = (&self.source as &dyn std::any::Any).downcast_ref::<BoundTask>();
            self.settings.feed = bound.map(|bound| bound.feed().clone());
        }
        let engine: Box<dyn engine::Run> = Box::new(engine::Engine::new(
            self.source,
            self.settings,
            self.on_state,
        ));
        TaskEvents::new(engine, self.on_checkpoint)
    }

    /// Waits for the outcome: the snapshot in which the condition held (by default: the task
    /// on SUCCESS), or why not.
    ///
    /// # Errors
    /// [`WaitError`](super::WaitError), carrying the last snapshot seen.
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
