//! The stream engine: polls, compares snapshots, emits events, sleeps, and stops.
//!
//! Rules, in the order they apply after each poll:
//! 1. a snapshot is compared with the last one: the first is `Observed`, then a status change
//!    and a progress change each give one event;
//! 2. SUCCESS and FAILED end the wait; so does an error that retrying cannot fix, except a 404
//!    in the first polls of a task not yet seen. Network failures are retried, but while no
//!    poll of the wait has had any answer, only as many times as a 404 would be: an endpoint
//!    that never answers (a wrong scheme, port or proxy) ends the wait early;
//! 3. the schedule (`schedule.rs`) says how long to sleep; for a PENDING task whose
//!    maintenance window is closed it stretches the sleeps gradually and lands a poll just after
//!    the window opens (`WaitingForWindow` says the task may be waiting for it); only with
//!    `fail_fast_on_window` does a window that opens after the deadline end the wait;
//! 4. a transient failure waits at least as long as the server's `Retry-After`;
//! 5. no poll is planned after the deadline: the next delay is clamped so that the last poll
//!    lands on it, and after a poll that ends at or past it the wait times out. The first poll
//!    goes out even when the deadline has already passed (the task may be done), and only
//!    that one.
//!
//! Events are emitted as soon as a poll's answer is in; the sleep before the next poll only
//! starts when the consumer asks for the next event, and ends at an absolute instant, so a slow
//! consumer does not shift the schedule.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::Clock;
use super::schedule::Schedule;
use super::shared::Polled;
use super::state::{SavedSchedule, WaitState};
use super::watcher::Settings;
use super::window::next_opening;
use super::{Outcome, TaskEvent, TaskSource, WaitError};
use crate::client::{ApiError, ApiErrorKind};
use crate::model::{InstanceTask, TaskStatus};

/// How late after the deadline a planned poll may still go out: tokio's timer has millisecond
/// slots, so a sleep until the deadline can end just after it.
const LATE_WAKE: Duration = Duration::from_millis(50);

/// What ended a sleep.
enum Wake {
    Due,
    Cancelled,
    Answer(Arc<Polled>),
}

/// What came of waiting for the source to allow a request.
enum Ready {
    Go,
    Cancelled,
    TimedOut,
}

// Independent facts about one wait, each read in one place: a state enum would say less.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Engine<S> {
    source: S,
    request_timeout: Duration,
    not_found_tolerance: u32,
    window_fail_fast: bool,
    /// The window opening last reported with `WaitingForWindow`, in this status.
    window_noted: Option<jiff::Timestamp>,
    cancel: Option<CancellationToken>,
    limiter: Option<Arc<Semaphore>>,
    schedule: Schedule,
    clock: Clock,
    started: Instant,
    deadline: Instant,
    next_poll: Instant,
    polls: u32,
    /// Whether this process has sent a poll of the wait yet.
    sent: bool,
    /// The deadline had passed before the first poll.
    late_start: bool,
    /// Whether any poll has had an answer from the service, even an error.
    answered: bool,
    /// The answers to every wait's polls of this task, when they are shared.
    answers: Option<tokio::sync::watch::Receiver<Option<Arc<Polled>>>>,
    /// The last shared answer taken.
    seen: u64,
    failures: u32,
    last: Option<InstanceTask>,
    last_error: Option<ApiError>,
    pending: VecDeque<TaskEvent>,
    finished: bool,
    span: tracing::Span,
}

impl<S: TaskSource> Engine<S> {
    pub(crate) fn new(source: S, settings: Settings) -> Self {
        let clock = Clock::new(
            settings
                .wall_clock
                .unwrap_or_else(std::time::SystemTime::now),
        );
        let now = Instant::now();
        let span = match source.ids() {
            Some((instance, task)) => tracing::info_span!(
                "iotda_task_wait",
                instance_id = %instance,
                task_id = %task
            ),
            None => tracing::info_span!("iotda_task_wait"),
        };
        let mut engine = Self {
            source,
            request_timeout: settings.request_timeout,
            not_found_tolerance: settings.not_found_tolerance,
            window_fail_fast: settings.window_fail_fast,
            window_noted: None,
            cancel: settings.cancel,
            limiter: settings.limiter,
            schedule: Schedule::new(settings.backoff),
            started: now,
            deadline: settings.stop.deadline(now, &clock),
            next_poll: now,
            polls: 0,
            sent: false,
            late_start: false,
            answered: false,
            answers: None,
            seen: 0,
            failures: 0,
            last: None,
            last_error: None,
            pending: VecDeque::new(),
            finished: false,
            span,
            clock,
        };
        engine.answers = engine.source.shared_polls().map(|s| s.feed.subscribe());
        if let Some(state) = settings.resume {
            engine.restore(*state, settings.backoff);
        }
        engine.late_start = engine.deadline <= now;
        engine
    }

    fn restore(&mut self, state: WaitState, backoff: super::Backoff) {
        let at = |t: jiff::Timestamp| self.clock.instant(t.into());
        self.started = at(state.started_at);
        // A saved state is not trusted to plan past its own deadline.
        self.next_poll = at(state.next_poll_at).min(self.deadline);
        self.polls = state.polls;
        self.failures = state.failures;
        self.answered = state.last.is_some();
        self.last = state.last;
        self.schedule = Schedule::resume(backoff, state.schedule.load(&self.clock));
    }

    /// Where the wait stands, to resume it elsewhere.
    pub(crate) fn checkpoint(&self) -> WaitState {
        let ids = self.source.ids();
        WaitState {
            instance_id: ids.map(|(i, _)| i.clone()),
            task_id: ids.map(|(_, t)| t.clone()),
            started_at: self.clock.timestamp(self.started),
            deadline: self.clock.timestamp(self.deadline),
            next_poll_at: self.clock.timestamp(self.next_poll),
            polls: self.polls,
            failures: self.failures,
            last: self.last.clone(),
            schedule: SavedSchedule::save(self.schedule.state(), &self.clock),
        }
    }

    /// The next event, or `None` after the final one.
    pub(crate) async fn next_event(&mut self) -> Option<TaskEvent> {
        let span = self.span.clone();
        async {
            loop {
                if let Some(event) = self.pending.pop_front() {
                    return Some(event);
                }
                if self.finished {
                    return None;
                }
                // Everything is out: a sleeping watcher keeps no event buffer.
                self.pending = VecDeque::new();
                self.step().await;
            }
        }
        .instrument(span)
        .await
    }

    /// Sleeps until the next poll, polls, and queues what came of it. A wait that shares its
    /// task's polls also wakes for an answer to another wait's poll, and takes it as its own.
    async fn step(&mut self) {
        // A poll that is already due goes out without a trip through the timer.
        if self.next_poll > Instant::now() {
            match self.sleep().await {
                Wake::Cancelled => return self.cancelled(),
                Wake::Answer(polled) => {
                    // Another wait's request: a poll of this wait too.
                    self.sent = true;
                    self.polls = self.polls.saturating_add(1);
                    return self.take(&polled);
                }
                Wake::Due => {}
            }
        }
        let _permit = match &self.limiter {
            None => None,
            Some(limiter) => match self.until(limiter.clone().acquire_owned()).await {
                None => return self.cancelled(),
                Some(permit) => permit.ok(),
            },
        };
        // The last poll is planned on the deadline and a timer may wake a moment after it; a
        // poll much later than that (a permit that came late) is not sent. The first poll
        // is: a wait started or resumed after its deadline still learns where the task is.
        let late = self.next_poll > self.deadline || Instant::now() > self.deadline + LATE_WAKE;
        if late && self.sent {
            return self.timed_out();
        }
        let timeout = self.request_timeout;
        // Alone on its task, a wait polls as if nothing were shared.
        let shared = self
            .source
            .shared_polls()
            .filter(|s| s.feed.shared_with_others())
            .cloned();
        // Joining a request in flight takes no turn in the budget: it sends nothing.
        let stale = Instant::now().checked_sub(timeout).unwrap_or(self.started);
        let joined = shared.as_ref().and_then(|s| s.feed.in_flight(stale));
        if joined.is_none() {
            match self.ready().await {
                Ready::Go => {}
                Ready::Cancelled => return self.cancelled(),
                Ready::TimedOut => return self.timed_out(),
            }
        }
        self.sent = true;
        self.polls = self.polls.saturating_add(1);
        let timed_out = move || {
            Err(ApiError::new(ApiErrorKind::Timeout)
                .with_detail(format!("no answer within {timeout:?}")))
        };
        match shared {
            Some(shared) => {
                let request = joined.unwrap_or_else(|| {
                    let request = (shared.request)();
                    shared.feed.poll(stale, async move {
                        tokio::time::timeout(timeout, request)
                            .await
                            .unwrap_or_else(|_| timed_out())
                    })
                });
                match self.until(tokio::time::timeout(timeout, request)).await {
                    None => self.cancelled(),
                    Some(Ok(polled)) => self.take(&polled),
                    Some(Err(_)) => self.answered(timed_out()),
                }
            }
            None => {
                // Boxed so that a sleeping watcher does not carry the size of a request in
                // flight.
                let fetch = Box::pin(tokio::time::timeout(timeout, self.source.fetch()));
                match self.until(fetch).await {
                    None => self.cancelled(),
                    Some(Ok(result)) => self.answered(result),
                    Some(Err(_)) => self.answered(timed_out()),
                }
            }
        }
    }

    /// Sleeps until the next poll is due, unless the wait is cancelled or (when it shares its
    /// task's polls) another wait's poll brings a new answer first.
    async fn sleep(&mut self) -> Wake {
        let cancelled = async {
            match &self.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let due = tokio::time::sleep_until(self.next_poll);
        // Alone on its task, a wait has nobody's answers to wake for.
        let alone = !self
            .source
            .shared_polls()
            .is_some_and(|s| s.feed.shared_with_others());
        let answers = self.answers.as_mut().filter(|_| !alone);
        let Some(answers) = answers else {
            return tokio::select! {
                biased;
                () = cancelled => Wake::Cancelled,
                () = due => Wake::Due,
            };
        };
        tokio::pin!(due);
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => return Wake::Cancelled,
                () = &mut due => return Wake::Due,
                changed = answers.changed() => {
                    if changed.is_err() {
                        // The feed is gone: nobody else polls this task any more.
                        self.answers = None;
                        return Wake::Due;
                    }
                    let latest = answers.borrow_and_update().clone();
                    if let Some(polled) = latest.filter(|p| p.seq > self.seen) {
                        return Wake::Answer(polled);
                    }
                }
            }
        }
    }

    /// Waits for the source to allow a request (the client's budget), giving up on
    /// cancellation, or at the deadline unless this is the wait's first poll.
    async fn ready(&self) -> Ready {
        let cancelled = async {
            match &self.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let deadline = tokio::time::sleep_until(self.deadline + LATE_WAKE);
        tokio::select! {
            biased;
            () = cancelled => Ready::Cancelled,
            () = self.source.ready() => Ready::Go,
            () = deadline, if self.sent => Ready::TimedOut,
        }
    }

    /// Takes an answer from the task's shared polls as this wait's poll.
    fn take(&mut self, polled: &Polled) {
        self.seen = self.seen.max(polled.seq);
        if let Some(answers) = &mut self.answers {
            // This answer is on the channel too: no need to wake for it.
            if answers
                .borrow()
                .as_ref()
                .is_some_and(|p| p.seq <= self.seen)
            {
                answers.mark_unchanged();
            }
        }
        self.answered(polled.answer.clone());
    }

    fn answered(&mut self, answer: Result<InstanceTask, ApiError>) {
        match answer {
            Ok(task) => self.observed(task),
            Err(error) => self.failed(error),
        }
    }

    /// Runs `fut` unless the token is cancelled first; `None` on cancellation.
    async fn until<F: Future>(&self, fut: F) -> Option<F::Output> {
        match &self.cancel {
            None => Some(fut.await),
            Some(token) => tokio::select! {
                biased;
                () = token.cancelled() => None,
                out = fut => Some(out),
            },
        }
    }

    fn observed(&mut self, task: InstanceTask) {
        self.answered = true;
        self.failures = 0;
        self.last_error = None;
        tracing::debug!(
            poll = self.polls,
            status = %task.status_or_unknown(),
            progress = task.progress,
            "polled"
        );
        let mut status_changed = false;
        match &self.last {
            None => {
                tracing::info!(status = %task.status_or_unknown(), "task observed");
                self.pending
                    .push_back(TaskEvent::Observed { task: task.clone() });
            }
            Some(previous) => {
                if previous.status != task.status {
                    status_changed = true;
                    let (from, to) = (previous.status_or_unknown(), task.status_or_unknown());
                    tracing::info!(%from, %to, "status changed");
                    self.pending.push_back(TaskEvent::StatusChanged {
                        from,
                        to,
                        task: task.clone(),
                    });
                }
                let (from, to) = (previous.progress_percent(), task.progress_percent());
                if from != to {
                    self.pending.push_back(TaskEvent::ProgressChanged {
                        from,
                        to,
                        task: task.clone(),
                    });
                }
            }
        }
        let outcome = match task.status {
            Some(TaskStatus::Success) => Some(Ok(task.clone())),
            Some(TaskStatus::Failed) => Some(Err(WaitError::Failed { task: task.clone() })),
            _ => None,
        };
        let progress = task.progress_percent();
        let pending = task.status == Some(TaskStatus::Pending);
        self.last = Some(task);
        if let Some(outcome) = outcome {
            return self.finish(outcome);
        }
        let now = Instant::now();
        let mut delay = self.schedule.after_snapshot(now, status_changed, progress);
        if status_changed {
            self.window_noted = None;
        }
        if pending {
            match self.behind_window(now, delay) {
                Some(stretched) => delay = stretched,
                None if self.finished => return,
                None => {}
            }
        }
        self.plan(delay);
    }

    /// For a PENDING task whose maintenance window is closed: the task may be waiting for it
    /// (a resize made with `delay=true`) or may start at any moment (anything else), so the
    /// window only stretches the sleeps (see [`Schedule::behind_window`]) and says so once
    /// per opening with `WaitingForWindow`. With `fail_fast_on_window`, a window that opens
    /// after the deadline ends the wait instead. `None` when the window is open or unknown,
    /// or when the wait ended.
    fn behind_window(&mut self, now: Instant, delay: Duration) -> Option<Duration> {
        let window = self.last.as_ref().and_then(|t| t.operate_window.as_ref());
        let opens = window.and_then(|w| next_opening(w, self.clock.timestamp(now)))?;
        let opens_at = self.clock.instant(opens.into());
        if opens_at > self.deadline && self.window_fail_fast {
            let task = self.last.clone().unwrap_or_default();
            tracing::warn!(%opens, "the maintenance window opens after the deadline");
            self.finish(Err(WaitError::WindowAfterDeadline {
                task,
                opens_at: opens,
                deadline: self.clock.timestamp(self.deadline),
            }));
            return None;
        }
        let delay = self.schedule.behind_window(now, opens_at, delay);
        if self.window_noted != Some(opens) {
            self.window_noted = Some(opens);
            let planned = delay.min(self.deadline.saturating_duration_since(now));
            tracing::info!(%opens, ?planned, "the task may be waiting for its maintenance window");
            self.pending.push_back(TaskEvent::WaitingForWindow {
                opens_at: opens,
                delay: planned,
                task: self.last.clone().unwrap_or_default(),
            });
        }
        Some(delay)
    }

    fn failed(&mut self, error: ApiError) {
        let not_yet_visible = error.kind() == ApiErrorKind::NotFound
            && self.last.is_none()
            && self.polls <= self.not_found_tolerance;
        self.answered |= error.status().is_some();
        // An endpoint that has never answered is more likely wrong than briefly down.
        let unreachable = error.kind() == ApiErrorKind::Network
            && !self.answered
            && self.polls > self.not_found_tolerance;
        if unreachable || (!error.is_transient() && !not_yet_visible) {
            tracing::warn!(%error, "poll failed; not retrying");
            let last = self.last.clone();
            return self.finish(Err(WaitError::Api { error, last }));
        }
        self.failures = self.failures.saturating_add(1);
        let wanted = self
            .schedule
            .after_failure()
            .max(error.retry_after().unwrap_or_default());
        self.last_error = Some(error.clone());
        if let Some(delay) = self.plan(wanted) {
            tracing::warn!(%error, attempt = self.failures, ?delay, "poll failed; retrying");
            self.pending.push_back(TaskEvent::Retrying {
                error,
                attempt: self.failures,
                delay,
            });
        }
    }

    /// Plans the next poll `delay` from now, clamped to the deadline; times out when the
    /// deadline has been reached. Returns the delay planned.
    fn plan(&mut self, delay: Duration) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            self.timed_out();
            return None;
        }
        // Never a busy loop, whatever the settings; never past the deadline.
        let delay = delay
            .max(super::schedule::MIN_DELAY_FLOOR)
            .min(self.deadline - now);
        self.next_poll = now + delay;
        Some(delay)
    }

    fn timed_out(&mut self) {
        let error = WaitError::TimedOut {
            last: self.last.clone(),
            elapsed: Instant::now().saturating_duration_since(self.started),
            polls: self.polls,
            late_start: self.late_start,
            last_error: self.last_error.take(),
        };
        self.finish(Err(error));
    }

    fn cancelled(&mut self) {
        let last = self.last.clone();
        self.finish(Err(WaitError::Cancelled { last }));
    }

    fn finish(&mut self, outcome: Outcome) {
        match &outcome {
            Ok(_) => tracing::info!(polls = self.polls, "task succeeded"),
            Err(error) => tracing::info!(polls = self.polls, %error, "wait ended"),
        }
        self.pending.push_back(TaskEvent::Done(outcome));
        self.finished = true;
    }
}

/// A future that yields the next event and gives the engine back.
pub(crate) type StepFuture =
    Pin<Box<dyn Future<Output = (Option<TaskEvent>, Box<dyn Run>)> + Send>>;

/// An engine with its source type erased, so that event streams have one type.
pub(crate) trait Run: Send + Sync {
    fn next(self: Box<Self>) -> StepFuture;
    fn checkpoint(&self) -> WaitState;
}

impl<S: TaskSource + 'static> Run for Engine<S> {
    fn next(mut self: Box<Self>) -> StepFuture {
        Box::pin(async move {
            let event = self.next_event().await;
            (event, self as Box<dyn Run>)
        })
    }

    fn checkpoint(&self) -> WaitState {
        Engine::checkpoint(self)
    }
}
