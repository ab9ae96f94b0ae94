//! The stream engine: polls, compares snapshots, emits events, sleeps, and stops.
//!
//! Rules, in the order they apply after each poll:
//! 1. a snapshot is compared with the last one: the first is `Observed`, then a status change
//!    and a progress change each give one event;
//! 2. the wait's condition is tested: a snapshot in which it holds ends the wait with it; so
//!    does SUCCESS or FAILED without it (`Unmet`, `Failed`), unless `retry_failed` leaves a
//!    retry for a FAILED task: it is then retried first (one retry per failure among the
//!    waits sharing the task). An error that retrying cannot fix ends the wait too, except a
//!    404 in the first polls of a task not yet seen. Network failures are retried, but while no
//!    poll of the wait has had any answer, only as many times as a 404 would be: an endpoint
//!    that never answers (a wrong scheme, port or proxy) ends the wait early;
//! 3. the schedule (`schedule.rs`) says how long to sleep; for a PENDING task whose
//!    maintenance window is closed it stretches the sleeps gradually and lands a poll just after
//!    the window opens (`WaitingForWindow` says the task may be waiting for it); only with
//!    `fail_fast_on_window` does a window that opens after the deadline end the wait;
//! 4. a transient failure waits at least as long as the server's `Retry-After`;
//! 5. no poll is planned after the deadline: the next delay is clamped so that the last poll
//!    lands on it, and after a poll that ends at or past it the wait times out; so does a
//!    wait for a `watch_many` turn or a budget token that lasts past it. The first poll of
//!    a wait that starts after its deadline goes out anyway (the task may be done), and only
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

use futures::future::Either;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::Clock;
use super::condition::Condition;
use super::error::NotRetried;
use super::policy::PollPolicy;
use super::schedule::Schedule;
use super::state::{SavedSchedule, WaitState};
use super::turns::Turns;
use super::watcher::Settings;
use super::window::next_opening;
use super::{Outcome, TaskEvent, TaskSource, WaitError};
use crate::client::feed::{Feed, InFlight, Polled, SendTurn, Watching};
use crate::client::{ApiError, ApiErrorKind};
use crate::model::{InstanceTask, TaskStatus};

/// How late after the deadline a planned poll may still go out: tokio's timer has millisecond
/// slots, so a sleep until the deadline can end just after it.
const LATE_WAKE: Duration = Duration::from_millis(50);

/// What came of waiting for something before a poll (the time it is due, a turn, a token).
enum Gate<T> {
    Go(T),
    Cancelled,
    /// The deadline passed first.
    TimedOut,
    /// Another wait on the task brought an answer newer than this wait's: its poll.
    Answer(Arc<Polled>),
}

/// One wait: its source, what it was told, where it stands in time, what it has seen, and the
/// events not yet taken.
pub(crate) struct Engine<S> {
    source: S,
    /// The task's polls, shared with the other waits on it through the same client.
    feed: Option<Watching>,
    rules: Rules,
    timing: Timing,
    seen: Seen,
    pending: VecDeque<TaskEvent>,
    finished: bool,
    span: tracing::Span,
    /// Called with the wait's state after every step and before every retry.
    on_state: Option<StateHook>,
}

/// See [`TaskWatcher::on_state`](super::TaskWatcher::on_state). Only ever called through
/// `&mut`, so the wrapper keeps the engine `Sync` without asking the hook to be.
pub(crate) type StateHook =
    sync_wrapper::SyncWrapper<Box<dyn FnMut(&WaitState) -> SaveResult + Send>>;

/// What the state hook answers: whether the state was saved.
pub(crate) type SaveResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What the wait was told: fixed from its start.
struct Rules {
    request_timeout: Duration,
    not_found_tolerance: u32,
    window_fail_fast: bool,
    /// What the wait waits for.
    condition: Condition,
    /// How many times a FAILED task may be retried.
    retry_failed: u32,
    cancel: Option<CancellationToken>,
    limiter: Option<Arc<Turns>>,
}

/// Where the wait stands in time.
struct Timing {
    schedule: Schedule,
    clock: Clock,
    started: Instant,
    deadline: Instant,
    next_poll: Instant,
    /// How long the last poll waited, once due, for its turn and its token: the next delay
    /// counts it, so that queueing does not stretch the schedule.
    queued: Duration,
    /// The deadline had passed before the first poll.
    late_start: bool,
}

/// Where the wait's retries of a FAILED task stand.
#[derive(Default)]
struct Retries {
    /// How many times the task was retried.
    count: u32,
    /// The task was seen FAILED and is to be retried before the next poll.
    due: bool,
    /// The last retry was sent and counted, and no answer of the service since has been
    /// seen: the next read settles whether it restarted the task.
    unconfirmed: bool,
    /// The failure last retried, once the retry was answered: a read that shows it again is
    /// older than the retry (a lagging replica), not a new failure.
    failure: Option<FailureMark>,
}

/// What the wait has sent and seen.
struct Seen {
    polls: u32,
    /// Whether this process has sent a poll of the wait yet.
    sent: bool,
    /// Whether any poll has had an answer from the service, even an error.
    answered: bool,
    /// The number of the latest request whose answer this wait has (or awaits): shared
    /// answers to requests that started before it are older news.
    asked: u64,
    failures: u32,
    retry: Retries,
    /// The window opening last reported with `WaitingForWindow`, in this status.
    window_noted: Option<jiff::Timestamp>,
    last: Option<InstanceTask>,
    last_error: Option<ApiError>,
}

impl Seen {
    /// Whether the service throttled the last poll: it had its turn and was refused, so the
    /// next keeps its place in line.
    fn throttled(&self) -> bool {
        self.last_error
            .as_ref()
            .is_some_and(|e| e.kind() == ApiErrorKind::Throttled)
    }
}

impl<S: TaskSource> Engine<S> {
    pub(crate) fn new(source: S, settings: Settings, on_state: Option<StateHook>) -> Self {
        let feed = settings.feed.map(Watching::new);
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
        let mut schedule = Schedule::new(settings.policy);
        schedule.aim_at(settings.condition.target());
        let mut engine = Self {
            // Answers to requests started before the wait are not its polls.
            seen: Seen {
                polls: 0,
                sent: false,
                answered: false,
                asked: feed.as_ref().map_or(0, |feed| feed.started()),
                failures: 0,
                retry: Retries::default(),
                window_noted: None,
                last: None,
                last_error: None,
            },
            timing: Timing {
                schedule,
                started: now,
                deadline: settings.stop.deadline(now, &clock),
                next_poll: now,
                queued: Duration::ZERO,
                late_start: false,
                clock,
            },
            rules: Rules {
                request_timeout: settings.request_timeout,
                not_found_tolerance: settings.not_found_tolerance,
                window_fail_fast: settings.window_fail_fast,
                condition: settings.condition,
                retry_failed: settings.retry_failed,
                cancel: settings.cancel,
                limiter: settings.limiter,
            },
            source,
            feed,
            pending: VecDeque::new(),
            finished: false,
            span,
            on_state,
        };
        if let Some(state) = settings.resume {
            engine.restore(*state, settings.policy);
        }
        engine.timing.late_start = engine.timing.deadline <= now;
        engine
    }

    fn restore(&mut self, state: WaitState, policy: PollPolicy) {
        let at = |t: jiff::Timestamp| self.timing.clock.instant(t.into());
        self.timing.started = at(state.started_at);
        // A saved state is not trusted to plan past its own deadline.
        self.timing.next_poll = at(state.next_poll_at).min(self.timing.deadline);
        self.seen.polls = state.polls;
        self.seen.failures = state.failures;
        self.seen.retry.count = state.retries;
        self.seen.retry.failure = state.retried_failure;
        if state.retry_unconfirmed {
            // A retry went out and its answer was never seen: the task is read first; the
            // retry stays counted whatever the read shows.
            self.seen.retry.unconfirmed = true;
            self.timing.next_poll = self.timing.next_poll.min(Instant::now());
        }
        self.seen.answered = state.last.is_some();
        self.seen.last = state.last;
        self.timing.schedule = Schedule::resume(policy, state.schedule.load(&self.timing.clock));
        self.timing.schedule.aim_at(self.rules.condition.target());
    }

    /// Where the wait stands, to resume it elsewhere.
    pub(crate) fn checkpoint(&self) -> WaitState {
        let ids = self.source.ids();
        WaitState {
            instance_id: ids.map(|(i, _)| i.clone()),
            task_id: ids.map(|(_, t)| t.clone()),
            started_at: self.timing.clock.timestamp(self.timing.started),
            deadline: self.timing.clock.timestamp(self.timing.deadline),
            next_poll_at: self.timing.clock.timestamp(self.timing.next_poll),
            polls: self.seen.polls,
            failures: self.seen.failures,
            retries: self.seen.retry.count,
            retry_unconfirmed: self.seen.retry.unconfirmed,
            retried_failure: self.seen.retry.failure.clone(),
            last: self.seen.last.clone(),
            schedule: SavedSchedule::save(self.timing.schedule.state(), &self.timing.clock),
            ended: self.finished,
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
                // The hook says what a failure means to it; only a retry's record must hold.
                let _ = self.save();
            }
        }
        .instrument(span)
        .await
    }

    /// Sleeps until the next poll, polls, and queues what came of it. A wait that shares its
    /// task's polls also wakes for an answer to another wait's poll, and takes it as its own.
    async fn step(&mut self) {
        self.timing.queued = Duration::ZERO;
        // A poll that is already due goes out without a trip through the timer.
        if self.timing.next_poll > Instant::now() {
            let due = tokio::time::sleep_until(self.timing.next_poll);
            match self.gate(|_| due, false).await {
                Gate::Cancelled => return self.cancelled(),
                Gate::Answer(polled) => return self.take(&polled),
                Gate::Go(()) | Gate::TimedOut => {}
            }
        }
        let due = Instant::now();
        let ahead = self.seen.throttled();
        let _turn = match &self.rules.limiter {
            None => None,
            Some(limiter) => {
                let turn = limiter.clone().take(ahead);
                match self.gate(|_| turn, true).await {
                    Gate::Go(turn) => Some(turn),
                    Gate::Cancelled => return self.cancelled(),
                    Gate::TimedOut => return self.timed_out(),
                    Gate::Answer(polled) => return self.take(&polled),
                }
            }
        };
        // The last poll is planned on the deadline and a timer may wake a moment after it; a
        // poll much later than that is not sent. Only a wait started or resumed after its
        // deadline sends one: it still learns where the task is.
        let late = self.timing.next_poll > self.timing.deadline
            || Instant::now() > self.timing.deadline + LATE_WAKE;
        if late && self.deadline_binds() {
            return self.timed_out();
        }
        let timeout = self.rules.request_timeout;
        if self.seen.retry.due {
            // Boxed: a sleeping watcher does not carry the size of a retry in flight.
            return Box::pin(self.retry(timeout)).await;
        }
        // Alone on its task, a wait polls as if nothing were shared.
        let mut shared = self
            .feed
            .as_deref()
            .filter(|feed| feed.shared_with_others())
            .cloned();
        // Joining a request in flight takes no turn in the budget: it sends nothing.
        let stale = Instant::now()
            .checked_sub(timeout)
            .unwrap_or(self.timing.started);
        let mut joined = shared
            .as_ref()
            .and_then(|feed| feed.in_flight(self.seen.asked, stale));
        // One wait at a time queues for a token to poll a task; the others on it take its
        // answer, or join its request, rather than spend tokens of their own. A wait alone
        // takes the turn too, in case another joins the task while it waits for its token.
        let mut turn = None;
        let feed = self.feed.as_deref().cloned();
        if let (Some(feed), None) = (&feed, &joined) {
            let Some((taken, found)) = self.take_turn(feed, stale).await else {
                return;
            };
            (turn, joined) = (taken, found);
        }
        if joined.is_none() {
            let ready = |source| {
                if ahead {
                    Either::Left(S::ready_ahead(source))
                } else {
                    Either::Right(S::ready(source))
                }
            };
            match self.gate(ready, true).await {
                Gate::Go(()) => {}
                Gate::Cancelled => return self.cancelled(),
                Gate::TimedOut => return self.timed_out(),
                Gate::Answer(polled) => return self.take(&polled),
            }
            // Another wait may have joined the task, or sent a request, while this one waited
            // for its turn: it joins that one, and the token it took goes back.
            shared = feed.filter(|feed| feed.shared_with_others());
            joined = shared
                .as_ref()
                .and_then(|feed| feed.in_flight(self.seen.asked, stale));
            if let (Some(feed), Some(_)) = (&shared, &joined) {
                feed.refund();
            }
        }
        self.seen.sent = true;
        self.seen.polls = self.seen.polls.saturating_add(1);
        self.timing.queued = due.elapsed();
        if let Some(shared) = shared {
            let asked = self.seen.asked;
            let (request, answer) = joined.unwrap_or_else(|| shared.poll(asked, stale, timeout));
            // In flight: the other waits join it now.
            drop(turn);
            self.seen.asked = self.seen.asked.max(request);
            return match self.until(tokio::time::timeout(timeout, answer)).await {
                None => self.cancelled(),
                Some(Ok(polled)) => self.take(&polled),
                Some(Err(_)) => self.failed(ApiError::no_answer_within(timeout)),
            };
        }
        if let Some(feed) = &self.feed {
            // Alone now, but another wait may join while this request is out: its answers
            // to requests that started before this one are not news.
            self.seen.asked = feed.number();
        }
        // The request goes out now: a wait that comes meanwhile polls on its own.
        drop(turn);
        // Boxed so that a sleeping watcher does not carry the size of a request in flight.
        let fetch = Box::pin(tokio::time::timeout(timeout, self.source.fetch()));
        match self.until(fetch).await {
            None => self.cancelled(),
            Some(Ok(result)) => self.answered(result),
            Some(Err(_)) => self.failed(ApiError::no_answer_within(timeout)),
        }
    }

    /// Takes the turn to poll the task for every wait on it, or waits for the wait that has
    /// it: its request to join, or its answer to take. `None` when the wait ended meanwhile
    /// (cancelled, past its deadline, or with another wait's answer taken as its poll).
    async fn take_turn(
        &mut self,
        feed: &Arc<Feed>,
        stale: Instant,
    ) -> Option<(Option<SendTurn>, Option<(u64, InFlight)>)> {
        loop {
            if let Some(turn) = feed.take_send_turn() {
                return Some((Some(turn), None));
            }
            let gone = feed.clone().sender_gone();
            match self.gate(|_| gone, true).await {
                Gate::Go(()) => {}
                Gate::Cancelled => {
                    self.cancelled();
                    return None;
                }
                Gate::TimedOut => {
                    self.timed_out();
                    return None;
                }
                Gate::Answer(polled) => {
                    self.take(&polled);
                    return None;
                }
            }
            let joined = feed.in_flight(self.seen.asked, stale);
            if joined.is_some() {
                return Some((None, joined));
            }
        }
    }

    /// Retries the FAILED task, after its turn in the budget: the answer is the task as the
    /// service restarts it. An error ends the wait with it; a retry that cannot take its turn
    /// before the deadline ends the wait with the failure seen.
    async fn retry(&mut self, timeout: Duration) {
        let failed = self.seen.last.clone().unwrap_or_default();
        match self.gate(S::ready, true).await {
            Gate::Go(()) => {}
            Gate::Cancelled => return self.cancelled(),
            Gate::TimedOut => return self.timed_out(),
            // Another wait on the task saw it since: retried already, or still FAILED.
            Gate::Answer(polled) => return self.take(&polled),
        }
        self.seen.retry.due = false;
        let claim = match &self.feed {
            None => None,
            Some(feed) => match feed.claim_retry(self.seen.asked) {
                Some(claim) => Some(claim),
                None => {
                    // Another wait on the task retries this failure, or has: its answer
                    // comes as news, or the next poll shows where the task is. The token
                    // taken for the retry goes back.
                    feed.refund();
                    tracing::debug!("another wait on the task retries it");
                    let delay = self.timing.schedule.after_no_news();
                    self.plan(delay);
                    return;
                }
            },
        };
        if let Err(not_retried) = self.record_retry() {
            tracing::warn!(error = %not_retried, "not retrying the failed task");
            if let Some(claim) = claim {
                claim.withdraw();
            }
            return self.finish(Err(WaitError::Failed {
                task: failed,
                not_retried: Some(not_retried),
            }));
        }
        let attempt = self.seen.retry.count;
        tracing::info!(
            attempt,
            detail = failed.status_detail.as_deref().unwrap_or_default(),
            "retrying the failed task"
        );
        let retried = Box::pin(tokio::time::timeout(timeout, self.source.retry()));
        let answer = match self.until(retried).await {
            None => return self.cancelled(),
            Some(Ok(answer)) => answer,
            Some(Err(_)) => Err(ApiError::no_answer_within(timeout)),
        };
        if answer
            .as_ref()
            .map_or_else(|e| e.status().is_some(), |_| true)
        {
            // The service answered: the retry's fate is known.
            self.seen.retry.unconfirmed = false;
        }
        match answer {
            Ok(task) => {
                if let Some(claim) = claim {
                    // The other waits on the task learn of the retry as news; this one
                    // has it.
                    self.seen.asked = claim.answered(failed.clone(), task.clone());
                }
                self.retried(attempt, failed, task);
            }
            // Throttled: the service did not take the retry. It goes again after its wait,
            // and costs no attempt.
            Err(error) if error.kind() == ApiErrorKind::Throttled => {
                if let (Some(feed), Some(wait)) = (&self.feed, error.retry_after()) {
                    // No wait on the task retries it before the service said.
                    feed.hold_retries(Instant::now() + wait);
                }
                drop(claim);
                self.seen.retry.count = self.seen.retry.count.saturating_sub(1);
                self.seen.retry.due = true;
                self.seen.failures = self.seen.failures.saturating_add(1);
                let wanted = self.after_error(&error);
                if let Some(delay) = self.plan(wanted) {
                    tracing::warn!(%error, ?delay, "the retry was throttled; sending it again");
                    self.pending.push_back(TaskEvent::Retrying {
                        error,
                        attempt: self.seen.failures,
                        delay,
                    });
                }
            }
            // No answer (a timeout, a broken connection) or a server error: the service may
            // or may not have restarted the task. The retry stays spent, and a read says.
            Err(error) if error.is_transient() => {
                drop(claim);
                self.seen.failures = self.seen.failures.saturating_add(1);
                self.seen.last_error = Some(error.clone());
                if let Some(delay) = self.plan(Duration::ZERO) {
                    tracing::warn!(%error, "the retry had no answer; reading the task");
                    self.pending.push_back(TaskEvent::Retrying {
                        error,
                        attempt: self.seen.failures,
                        delay,
                    });
                }
            }
            Err(error) => {
                tracing::warn!(%error, "the retry was refused");
                self.finish(Err(WaitError::Api {
                    error,
                    last: Some(failed),
                }));
            }
        }
    }

    /// Counts a retry about to be sent, and has the state hook save the count first: a process
    /// stopped while the retry is out resumes with it spent. A count that cannot be saved is
    /// taken back, and the retry must not go.
    fn record_retry(&mut self) -> Result<(), NotRetried> {
        self.seen.retry.count = self.seen.retry.count.saturating_add(1);
        self.seen.retry.unconfirmed = true;
        self.save().map_err(|error| {
            self.seen.retry.count = self.seen.retry.count.saturating_sub(1);
            self.seen.retry.unconfirmed = false;
            NotRetried(error.into())
        })
    }

    /// Hands where the wait stands to the state hook, if any, and tells whether it was saved.
    fn save(&mut self) -> SaveResult {
        if self.on_state.is_some() {
            let state = self.checkpoint();
            if let Some(save) = self.on_state.as_mut() {
                return (save.get_mut())(&state);
            }
        }
        Ok(())
    }

    /// Whether the deadline ends waits and polls: always, but for the first poll of a wait
    /// that started after its deadline.
    fn deadline_binds(&self) -> bool {
        self.seen.sent || !self.timing.late_start
    }

    /// Waits for the future `make` gives (from the source), unless the wait is cancelled
    /// first, or (when it shares its task's polls) another wait's poll brings an answer newer
    /// than this wait's, or, if `bounded`, the deadline passes. In that order when several
    /// are ready at once.
    async fn gate<'a, F: Future + 'a>(
        &'a mut self,
        make: impl FnOnce(&'a S) -> F,
        bounded: bool,
    ) -> Gate<F::Output> {
        let deadline =
            (bounded && self.deadline_binds()).then_some(self.timing.deadline + LATE_WAKE);
        let Self {
            source,
            feed,
            rules: Rules { cancel, .. },
            seen: Seen { asked, .. },
            ..
        } = self;
        // Alone on its task, a wait has nobody's answers to wake for.
        let feed = feed.as_ref().filter(|feed| feed.shared_with_others());
        let cancelled = async {
            match cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let passed = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let answer = async {
            match feed {
                Some(feed) => feed.news_after(*asked).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancelled => Gate::Cancelled,
            polled = answer => Gate::Answer(polled),
            out = make(source) => Gate::Go(out),
            () = passed => Gate::TimedOut,
        }
    }

    /// Takes an answer from the task's shared polls as this wait's poll.
    fn take(&mut self, polled: &Polled) {
        if polled.request < self.seen.asked {
            // Older than what the wait has: no news. (Requests it joins and news it wakes for
            // are newer; this only keeps it so.)
            let delay = self.timing.schedule.after_no_news();
            self.plan(delay);
            return;
        }
        if polled.request > self.seen.asked {
            // Another wait's request: a poll of this wait too (a retry is nobody's poll).
            self.seen.sent = true;
            if polled.retried.is_none() {
                self.seen.polls = self.seen.polls.saturating_add(1);
            }
            self.seen.asked = polled.request;
        }
        // Another wait on the task retried it: that counts as this wait's retry too, whatever
        // this wait saw since, so that the waits on a task spend their retries together.
        if let (Some(failed), Ok(task)) = (&polled.retried, &polled.answer) {
            self.seen.retry.count = self.seen.retry.count.saturating_add(1);
            return self.retried(self.seen.retry.count, (**failed).clone(), task.clone());
        }
        self.answered(polled.answer.clone());
    }

    /// Takes in the answer to a retry of the task after it was seen `failed`.
    fn retried(&mut self, attempt: u32, failed: InstanceTask, task: InstanceTask) {
        tracing::info!(attempt, status = %task.status_or_unknown(), "the task was retried");
        self.seen.retry.due = false;
        self.seen.retry.failure = FailureMark::of(&failed);
        self.pending.push_back(TaskEvent::Retried {
            attempt,
            failed: Box::new(failed),
            task: task.clone(),
        });
        // The task starts over: so does the backoff (and, with the change of status, the
        // progress line); the answer is a snapshot like any other.
        self.timing.schedule.restart();
        self.observed(task);
    }

    fn answered(&mut self, answer: Result<InstanceTask, ApiError>) {
        match answer {
            Ok(task) => self.observed(task),
            Err(error) => self.failed(error),
        }
    }

    /// Runs `fut` unless the token is cancelled first; `None` on cancellation.
    async fn until<F: Future>(&self, fut: F) -> Option<F::Output> {
        match &self.rules.cancel {
            None => Some(fut.await),
            Some(token) => tokio::select! {
                biased;
                () = token.cancelled() => None,
                out = fut => Some(out),
            },
        }
    }

    fn observed(&mut self, task: InstanceTask) {
        if task.status == Some(TaskStatus::Failed)
            && self
                .seen
                .retry
                .failure
                .as_ref()
                .is_some_and(|mark| mark.is(&task))
        {
            // The failure already retried, read again: older news than the retry's answer.
            tracing::debug!("a read older than the retry shows its failure; polling again");
            self.seen.answered = true;
            self.seen.retry.unconfirmed = false;
            let delay = self.timing.schedule.after_no_news();
            self.plan(delay);
            return;
        }
        self.seen.answered = true;
        self.seen.retry.unconfirmed = false;
        self.seen.failures = 0;
        self.seen.last_error = None;
        tracing::debug!(
            poll = self.seen.polls,
            status = %task.status_or_unknown(),
            progress = task.progress,
            "polled"
        );
        let mut status_changed = false;
        match &self.seen.last {
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
        self.seen.retry.due = false;
        // The condition decides first; only an end in which it does not hold ends the wait
        // otherwise.
        let outcome = if self.rules.condition.holds(&task) {
            Some(Ok(task.clone()))
        } else {
            match task.status {
                Some(TaskStatus::Success) => Some(Err(WaitError::Unmet {
                    task: task.clone(),
                    condition: self.rules.condition.clone(),
                })),
                Some(TaskStatus::Failed)
                    if self.seen.retry.count < self.rules.retry_failed
                        && Instant::now() < self.timing.deadline =>
                {
                    self.seen.retry.due = true;
                    None
                }
                Some(TaskStatus::Failed) => Some(Err(WaitError::failed(task.clone()))),
                _ => None,
            }
        };
        let progress = task.progress_percent();
        let pending = task.status == Some(TaskStatus::Pending);
        self.seen.last = Some(task);
        if let Some(outcome) = outcome {
            return self.finish(outcome);
        }
        let now = Instant::now();
        if self.seen.retry.due {
            self.timing.next_poll = now;
            return;
        }
        let mut delay = self
            .timing
            .schedule
            .after_snapshot(now, status_changed, progress)
            .saturating_sub(self.timing.queued);
        if status_changed {
            self.seen.window_noted = None;
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
        let window = self
            .seen
            .last
            .as_ref()
            .and_then(|t| t.operate_window.as_ref());
        let opens = window.and_then(|w| next_opening(w, self.timing.clock.timestamp(now)))?;
        let opens_at = self.timing.clock.instant(opens.into());
        if opens_at > self.timing.deadline && self.rules.window_fail_fast {
            let task = self.seen.last.clone().unwrap_or_default();
            tracing::warn!(%opens, "the maintenance window opens after the deadline");
            self.finish(Err(WaitError::WindowAfterDeadline {
                task,
                opens_at: opens,
                deadline: self.timing.clock.timestamp(self.timing.deadline),
            }));
            return None;
        }
        let delay = self.timing.schedule.behind_window(now, opens_at, delay);
        if self.seen.window_noted != Some(opens) {
            self.seen.window_noted = Some(opens);
            let planned = delay.min(self.timing.deadline.saturating_duration_since(now));
            tracing::info!(%opens, ?planned, "the task may be waiting for its maintenance window");
            self.pending.push_back(TaskEvent::WaitingForWindow {
                opens_at: opens,
                delay: planned,
                task: self.seen.last.clone().unwrap_or_default(),
            });
        }
        Some(delay)
    }

    /// The delay after a failed poll (or retry), `error` its failure: the backoff for the
    /// failures in a row, at least what the service asked for. A throttle under an adaptive
    /// budget waits as after a first failure: the budget paces every wait after a throttle,
    /// and a wait that backed off as well would fall far behind after a few refusals in a row
    /// that were not its doing (a gateway refusing a share of requests at random).
    fn after_error(&self, error: &ApiError) -> Duration {
        let paced = error.kind() == ApiErrorKind::Throttled
            && self
                .feed
                .as_deref()
                .is_some_and(|feed| feed.paces_throttles());
        let in_a_row = if paced { 1 } else { self.seen.failures };
        self.timing
            .schedule
            .after_error(in_a_row)
            .max(error.retry_after().unwrap_or_default())
    }

    fn failed(&mut self, error: ApiError) {
        let not_yet_visible = error.kind() == ApiErrorKind::NotFound
            && self.seen.last.is_none()
            && self.seen.polls <= self.rules.not_found_tolerance;
        self.seen.answered |= error.status().is_some();
        // An endpoint that has never answered is more likely wrong than briefly down. While
        // nothing has answered, every failure so far was one without an answer.
        let unreachable = error.kind() == ApiErrorKind::Network
            && !self.seen.answered
            && self.seen.failures >= self.rules.not_found_tolerance;
        if unreachable || (!error.is_transient() && !not_yet_visible) {
            tracing::warn!(%error, "poll failed; not retrying");
            let last = self.seen.last.clone();
            return self.finish(Err(WaitError::Api { error, last }));
        }
        self.seen.failures = self.seen.failures.saturating_add(1);
        let wanted = self.after_error(&error);
        self.seen.last_error = Some(error.clone());
        if let Some(delay) = self.plan(wanted) {
            tracing::warn!(%error, attempt = self.seen.failures, ?delay, "poll failed; retrying");
            self.pending.push_back(TaskEvent::Retrying {
                error,
                attempt: self.seen.failures,
                delay,
            });
        }
    }

    /// Plans the next poll `delay` from now, clamped to the deadline; times out when the
    /// deadline has been reached. Returns the delay planned.
    fn plan(&mut self, delay: Duration) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.timing.deadline {
            self.timed_out();
            return None;
        }
        // Never a busy loop, whatever the settings; never past the deadline.
        let delay = delay
            .max(super::schedule::MIN_DELAY_FLOOR)
            .min(self.timing.deadline - now);
        self.timing.next_poll = now + delay;
        Some(delay)
    }

    fn timed_out(&mut self) {
        if self.seen.retry.due {
            // The task FAILED and its retry could not go before the deadline: that failure
            // is the outcome, not a timeout.
            let task = self.seen.last.clone().unwrap_or_default();
            return self.finish(Err(WaitError::failed(task)));
        }
        let error = WaitError::TimedOut {
            last: self.seen.last.clone(),
            elapsed: Instant::now().saturating_duration_since(self.timing.started),
            polls: self.seen.polls,
            late_start: self.timing.late_start,
            last_error: self.seen.last_error.take(),
        };
        self.finish(Err(error));
    }

    fn cancelled(&mut self) {
        let last = self.seen.last.clone();
        self.finish(Err(WaitError::Cancelled { last }));
    }

    fn finish(&mut self, outcome: Outcome) {
        match &outcome {
            Ok(task) if task.status == Some(TaskStatus::Success) => {
                tracing::info!(polls = self.seen.polls, "task succeeded");
            }
            Ok(task) => tracing::info!(
                polls = self.seen.polls,
                status = %task.status_or_unknown(),
                condition = %self.rules.condition,
                "the condition held"
            ),
            Err(error) => tracing::info!(polls = self.seen.polls, %error, "wait ended"),
        }
        self.pending.push_back(TaskEvent::Done(outcome));
        self.finished = true;
    }
}

/// What tells one failure of a task from another: its end time and detail. A failure with no
/// end time is never taken for an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FailureMark {
    end_time: crate::model::TaskTime,
    detail: Option<String>,
}

impl FailureMark {
    fn of(failed: &InstanceTask) -> Option<Self> {
        Some(Self {
            end_time: failed.end_time.clone()?,
            detail: failed.status_detail.clone(),
        })
    }

    fn is(&self, task: &InstanceTask) -> bool {
        task.end_time.as_ref() == Some(&self.end_time) && task.status_detail == self.detail
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use futures::StreamExt;

    use super::*;
    use crate::client::budget::{Budget, RequestBudget};
    use crate::client::feed::tests::feed;
    use crate::client::feed::Feed;
    use crate::watch::TaskWatcher;

    fn running(progress: i64) -> InstanceTask {
        InstanceTask {
            status: Some(TaskStatus::Running),
            progress: Some(progress),
            ..InstanceTask::default()
        }
    }

    /// A source on a shared feed whose requests sent alone answer `answer`, and whose budget
    /// lets a request go only when `open` is set.
    struct Shared {
        feed: Arc<Feed>,
        answer: InstanceTask,
        open: Arc<AtomicBool>,
    }

    impl Shared {
        fn new(feed: Arc<Feed>, answer: InstanceTask) -> Self {
            Self {
                feed,
                answer,
                open: Arc::new(AtomicBool::new(true)),
            }
        }

        /// A watcher of this source that shares the feed's polls.
        fn watcher(self) -> TaskWatcher<Self> {
            let feed = self.feed.clone();
            TaskWatcher::from_source(self).sharing(feed)
        }
    }

    impl TaskSource for Shared {
        fn fetch(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
            std::future::ready(Ok(self.answer.clone()))
        }

        async fn ready(&self) {
            if !self.open.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_a_request_older_than_the_waits_own_poll_is_not_taken() {
        let feed = feed(vec![
            (2, Ok(running(10))),
            (0, Ok(running(50))),
            (0, Ok(running(50))),
        ]);
        let other = Arc::downgrade(&feed);
        let policy = PollPolicy::default()
            .with_jitter(false)
            .with_min_delay(Duration::from_secs(5))
            .with_progress_guided(false);
        let watcher = Shared::new(feed, running(50))
            .watcher()
            .policy(policy)
            .timeout(Duration::from_secs(8));
        let mut events = watcher.events();
        // A request started after the wait but before its first poll, by a wait since gone,
        // and not yet driven: it will say 10 %, older news than the wait's own first poll.
        let (_, old) = other
            .upgrade()
            .unwrap()
            .poll(0, Instant::now(), Duration::from_secs(60));
        // Alone on the task, the wait polls on its own and sees 50 %.
        let first = events.next().await.unwrap();
        assert_eq!(
            first.task().and_then(InstanceTask::progress_percent),
            Some(50)
        );
        // Someone else joins the task and drives the old request to its answer.
        let _other = Watching::new(other.upgrade().unwrap());
        tokio::spawn(old);
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            seen.push(event);
        }
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, TaskEvent::ProgressChanged { .. })),
            "the progress never goes back to 10 %: {seen:?}"
        );
        let Some(TaskEvent::Done(Err(WaitError::TimedOut { polls, .. }))) = seen.last() else {
            panic!("{seen:?}");
        };
        // Its own polls at 0 and 5 s and on the deadline at 8 s; the late old answer is not
        // one of them.
        assert_eq!(*polls, 3, "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_before_the_wait_began_is_not_its_poll() {
        let done = InstanceTask {
            status: Some(TaskStatus::Success),
            ..InstanceTask::default()
        };
        let feed = feed(vec![(0, Ok(done)), (0, Ok(running(50)))]);
        // An earlier wait's answer: SUCCESS, but the task has been retried since.
        let (_, earlier) = feed.poll(0, Instant::now(), Duration::from_secs(60));
        earlier.await;
        let watcher = Shared::new(feed.clone(), running(50))
            .watcher()
            .timeout(Duration::from_secs(1));
        let mut events = watcher.events();
        let first = events.next().await.unwrap();
        assert_eq!(
            first.task().and_then(|t| t.status.clone()),
            Some(TaskStatus::Running),
            "{first:?}"
        );
        assert_eq!(feed.started(), 2, "the wait sent its own request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_poll_waiting_for_the_budget_ends_at_the_deadline() {
        let source = Shared::new(feed(vec![]), running(50));
        source.open.store(false, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = source
            .watcher()
            .timeout(Duration::from_secs(10))
            .wait()
            .await;
        let Err(WaitError::TimedOut {
            polls, late_start, ..
        }) = outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!((polls, late_start), (0, false));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_secs(10) + LATE_WAKE,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_started_after_its_deadline_still_waits_for_its_one_poll() {
        let source = Shared::new(feed(vec![]), running(50));
        source.open.store(false, Ordering::Relaxed);
        let wait = tokio::spawn(
            source
                .watcher()
                .deadline_instant(Instant::now().into_std())
                .wait(),
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !wait.is_finished(),
            "the one poll is still owed, not timed out"
        );
        wait.abort();
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A poll every `delay`, exactly: no jitter, no progress guidance.
    fn every(delay: Duration) -> PollPolicy {
        PollPolicy::default()
            .with_min_delay(delay)
            .with_max_delay(delay)
            .with_jitter(false)
            .with_progress_guided(false)
    }

    /// A task that runs forever, polled through a shared budget; it records its polls.
    struct Budgeted {
        budget: Arc<Budget>,
        polls: Arc<Mutex<Vec<f64>>>,
        start: Instant,
    }

    impl TaskSource for Budgeted {
        async fn fetch(&self) -> Result<InstanceTask, ApiError> {
            let at = self.start.elapsed().as_secs_f64();
            self.polls.lock().unwrap().push(at);
            Ok(serde_json::from_str(r#"{"status":"RUNNING","progress":10}"#).unwrap())
        }

        fn ready(&self) -> impl Future<Output = ()> + Send {
            self.budget.acquire()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn time_queued_for_a_token_counts_toward_the_next_delay() {
        // One token a second; four are spoken for at the start, so the wait's first poll,
        // due at once, goes at 4 s. Its delays are 2 s.
        let budget = Arc::new(Budget::new(RequestBudget::unlimited().with_max_rps(1.0, 1)));
        let start = Instant::now();
        let hog: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move { budget.acquire().await })
            })
            .collect();
        tokio::task::yield_now().await;
        let polls = Arc::new(Mutex::new(Vec::new()));
        let source = Budgeted {
            budget: budget.clone(),
            polls: polls.clone(),
            start,
        };
        let policy = every(secs(2.0));
        let outcome = TaskWatcher::from_source(source)
            .policy(policy)
            .timeout(secs(8.5))
            .wait()
            .await;
        assert!(
            matches!(outcome, Err(WaitError::TimedOut { .. })),
            "{outcome:?}"
        );
        for acquired in hog {
            acquired.await.unwrap();
        }
        // It queued 4 s for its first poll, more than its 2 s delay: the next is due at once,
        // and goes with the next token, at 5 s. That one queued 1 s, so the next is due 1 s
        // after its answer, and from there the polls keep their 2 s. Counted from the
        // answers, they would be at 4, 6 and 8 s.
        // (To the timer's millisecond.)
        let polls: Vec<f64> = polls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t * 100.0).round() / 100.0)
            .collect();
        assert_eq!(polls, [4.0, 5.0, 6.0, 8.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_budget_no_wait_starves_and_every_deadline_holds() {
        // 20 waits that each want a poll a second; the budget allows 2 a second.
        let budget = Arc::new(Budget::new(RequestBudget::unlimited().with_max_rps(2.0, 2)));
        let start = Instant::now();
        let deadline = secs(60.0);
        let mut waits = Vec::new();
        for _ in 0..20 {
            let polls = Arc::new(Mutex::new(Vec::new()));
            let source = Budgeted {
                budget: budget.clone(),
                polls: polls.clone(),
                start,
            };
            let policy = every(secs(1.0));
            let watcher = TaskWatcher::from_source(source)
                .policy(policy)
                .timeout(deadline);
            waits.push((tokio::spawn(watcher.wait()), polls));
        }
        let mut total = 0;
        for (wait, polls) in waits {
            let ended = wait.await.unwrap();
            assert!(
                matches!(ended, Err(crate::WaitError::TimedOut { .. })),
                "{ended:?}"
            );
            let polls = polls.lock().unwrap().clone();
            total += polls.len();
            // Served in turn: about one poll every 10 s each, none left waiting for long.
            assert!(polls.len() >= 5, "{polls:?}");
            let gaps = polls.windows(2).map(|w| w[1] - w[0]);
            let longest = gaps.fold(0.0, f64::max);
            assert!(longest <= 12.0, "a gap of {longest} s: {polls:?}");
            assert!(polls.last().unwrap() - polls[0] >= 45.0, "{polls:?}");
        }
        // Every wait ended at its deadline (a poll queued past it is not sent), and the
        // budget held: 2 a second plus the burst.
        assert!(
            start.elapsed() <= deadline + LATE_WAKE + Duration::from_millis(10),
            "{:?}",
            start.elapsed()
        );
        assert!(total <= 2 * 60 + 2, "{total} polls");
        assert!(total >= 2 * 60 - 20, "the budget was used: {total} polls");
    }

    /// A wait on a shared feed whose turns come from `budget`.
    struct SharedBudgeted {
        budget: Arc<Budget>,
        answer: InstanceTask,
    }

    impl TaskSource for SharedBudgeted {
        fn fetch(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
            std::future::ready(Ok(self.answer.clone()))
        }

        fn ready(&self) -> impl Future<Output = ()> + Send {
            self.budget.acquire()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_sharing_a_task_queue_for_one_token_not_one_each() {
        // One request a second, the first token already taken. Two waits on task T (whose
        // requests take 2 s) and one on task U, all due at once: one T wait queues for a
        // token and the other takes its answer, so U's first poll goes at 2 s, not 3 s.
        let budget = Arc::new(Budget::new(RequestBudget::unlimited().with_max_rps(1.0, 1)));
        budget.acquire().await;
        let start = Instant::now();
        let feed = feed(vec![(2, Ok(running(10))), (2, Ok(running(10)))]);
        let slow = every(secs(10.0));
        let on_t = |budget: &Arc<Budget>| {
            let source = SharedBudgeted {
                budget: budget.clone(),
                answer: running(10),
            };
            TaskWatcher::from_source(source)
                .sharing(feed.clone())
                .policy(slow)
                .timeout(secs(4.0))
                .wait()
        };
        let first = tokio::spawn(on_t(&budget));
        let second = tokio::spawn(on_t(&budget));
        let polls = Arc::new(Mutex::new(Vec::new()));
        let other = Budgeted {
            budget: budget.clone(),
            polls: polls.clone(),
            start,
        };
        let u = tokio::spawn(
            TaskWatcher::from_source(other)
                .policy(slow)
                .timeout(secs(4.0))
                .wait(),
        );
        let _ = (first.await, second.await, u.await);
        assert_eq!(polls.lock().unwrap().first(), Some(&2.0));
        assert_eq!(feed.started(), 1, "one request for the two waits on T");
    }
}
