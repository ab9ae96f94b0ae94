//! The stream engine: polls, compares snapshots, emits events, sleeps, and stops.
//!
//! Rules, in the order they apply after each poll:
//! 1. a snapshot is compared with the last one: the first is `Observed`, then a status change
//!    (which resets the delay) and a progress change each give one event;
//! 2. SUCCESS and FAILED end the wait; so does an error that retrying cannot fix, except a 404
//!    in the first polls of a task not yet seen;
//! 3. a poll that starts at or after the deadline is never sent: after a poll that ends at or
//!    past it the wait times out, and otherwise the next delay is clamped so that the last poll
//!    lands on the deadline;
//! 4. a transient failure waits at least as long as the server's `Retry-After`.
//!
//! Events are emitted as soon as a poll's answer is in; the sleep before the next poll only
//! starts when the consumer asks for the next event, and ends at an absolute instant, so a slow
//! consumer does not shift the schedule.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::schedule::Schedule;
use super::{Settings, TaskEvent};
use crate::{ApiError, ApiErrorKind, InstanceTask, TaskSource, TaskStatus, WaitError};

pub(crate) struct Engine<S> {
    source: S,
    request_timeout: Duration,
    not_found_tolerance: u32,
    cancel: Option<CancellationToken>,
    limiter: Option<Arc<Semaphore>>,
    schedule: Schedule,
    started: Instant,
    deadline: Instant,
    next_poll: Instant,
    polls: u32,
    failures: u32,
    last: Option<InstanceTask>,
    last_error: Option<ApiError>,
    pending: VecDeque<TaskEvent>,
    finished: bool,
    span: tracing::Span,
}

impl<S: TaskSource> Engine<S> {
    pub(crate) fn new(source: S, settings: Settings) -> Self {
        let started = Instant::now();
        let span = match source.ids() {
            Some((instance, task)) => tracing::info_span!(
                "iotda_task_wait",
                instance_id = %instance,
                task_id = %task
            ),
            None => tracing::info_span!("iotda_task_wait"),
        };
        Self {
            source,
            request_timeout: settings.request_timeout,
            not_found_tolerance: settings.not_found_tolerance,
            cancel: settings.cancel,
            limiter: settings.limiter,
            schedule: Schedule::new(settings.backoff),
            started,
            deadline: settings.stop.deadline_from(started),
            next_poll: started,
            polls: 0,
            failures: 0,
            last: None,
            last_error: None,
            pending: VecDeque::new(),
            finished: false,
            span,
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

    /// Sleeps until the next poll, polls, and queues what came of it.
    async fn step(&mut self) {
        // A poll that is already due goes out without a trip through the timer.
        let slept = if self.next_poll <= Instant::now() {
            self.until(std::future::ready(())).await
        } else {
            self.until(tokio::time::sleep_until(self.next_poll)).await
        };
        if slept.is_none() {
            return self.cancelled();
        }
        let _permit = match &self.limiter {
            None => None,
            Some(limiter) => match self.until(limiter.clone().acquire_owned()).await {
                None => return self.cancelled(),
                Some(permit) => permit.ok(),
            },
        };
        if Instant::now() > self.deadline {
            // A permit that came too late: the poll would land after the deadline.
            return self.timed_out();
        }
        self.polls += 1;
        let timeout = self.request_timeout;
        // Boxed so that a sleeping watcher does not carry the size of a request in flight.
        let fetch = Box::pin(tokio::time::timeout(timeout, self.source.fetch()));
        let result = match self.until(fetch).await {
            None => return self.cancelled(),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ApiError::new(ApiErrorKind::Timeout)
                .with_detail(format!("no answer within {timeout:?}"))),
        };
        match result {
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
        self.failures = 0;
        self.last_error = None;
        tracing::debug!(
            poll = self.polls,
            status = %task.status_or_unknown(),
            progress = task.progress,
            "polled"
        );
        match &self.last {
            None => {
                tracing::info!(status = %task.status_or_unknown(), "task observed");
                self.pending
                    .push_back(TaskEvent::Observed { task: task.clone() });
            }
            Some(previous) => {
                if previous.status != task.status {
                    let (from, to) = (previous.status_or_unknown(), task.status_or_unknown());
                    tracing::info!(%from, %to, "status changed");
                    self.pending.push_back(TaskEvent::StatusChanged {
                        from,
                        to,
                        task: task.clone(),
                    });
                    self.schedule.reset();
                }
                let (from, to) = (previous.progress_percent(), task.progress_percent());
                if from != to {
                    self.pending
                        .push_back(TaskEvent::ProgressChanged { from, to });
                }
            }
        }
        let outcome = match task.status {
            Some(TaskStatus::Success) => Some(Ok(task.clone())),
            Some(TaskStatus::Failed) => Some(Err(WaitError::Failed { task: task.clone() })),
            _ => None,
        };
        self.last = Some(task);
        match outcome {
            Some(outcome) => self.finish(outcome),
            None => {
                let delay = self.schedule.next_delay();
                self.plan(delay);
            }
        }
    }

    fn failed(&mut self, error: ApiError) {
        let not_yet_visible = error.kind() == ApiErrorKind::NotFound
            && self.last.is_none()
            && self.polls <= self.not_found_tolerance;
        if !error.is_transient() && !not_yet_visible {
            tracing::warn!(%error, "poll failed; not retrying");
            let last = self.last.clone();
            return self.finish(Err(WaitError::Api { error, last }));
        }
        self.failures += 1;
        let wanted = self
            .schedule
            .next_delay()
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
        let delay = delay.min(self.deadline - now);
        self.next_poll = now + delay;
        Some(delay)
    }

    fn timed_out(&mut self) {
        let error = WaitError::TimedOut {
            last: self.last.clone(),
            elapsed: self.started.elapsed(),
            polls: self.polls,
            last_error: self.last_error.take(),
        };
        self.finish(Err(error));
    }

    fn cancelled(&mut self) {
        let last = self.last.clone();
        self.finish(Err(WaitError::Cancelled { last }));
    }

    fn finish(&mut self, outcome: super::Outcome) {
        match &outcome {
            Ok(_) => tracing::info!(polls = self.polls, "task succeeded"),
            Err(error) => tracing::info!(polls = self.polls, %error, "wait ended"),
        }
        self.pending.push_back(TaskEvent::Done(outcome));
        self.finished = true;
    }
}
