//! What a wait reports while it runs.

use std::time::Duration;

use super::WaitError;
use crate::client::ApiError;
use crate::model::{InstanceTask, TaskStatus};

/// How a wait ended: the snapshot in which its condition held (by default: the task on
/// SUCCESS), or why not.
pub type Outcome = Result<InstanceTask, WaitError>;

/// One thing that happened during a wait. A stream of them starts with [`TaskEvent::Observed`]
/// (unless the first polls fail) and ends with exactly one [`TaskEvent::Done`].
///
/// Room to grow: new kinds of events may be added, and the struct variants may gain fields, so
/// match with a `_` arm and with `..` in struct patterns. `Done` stays as it is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TaskEvent {
    /// The task was seen for the first time.
    #[non_exhaustive]
    Observed {
        /// The snapshot.
        task: InstanceTask,
    },
    /// The status changed. Statuses this crate does not know appear here too.
    #[non_exhaustive]
    StatusChanged {
        /// The status before (`Unknown("")` when the service sent none).
        from: TaskStatus,
        /// The status now.
        to: TaskStatus,
        /// The snapshot that showed it.
        task: InstanceTask,
    },
    /// The progress changed. `None` is a progress the service did not send, or sent outside
    /// `0..=100`.
    #[non_exhaustive]
    ProgressChanged {
        /// The progress before, in percent.
        from: Option<u8>,
        /// The progress now, in percent.
        to: Option<u8>,
        /// The snapshot that showed it.
        task: InstanceTask,
    },
    /// A poll failed in a way that trying again may fix; the next poll comes after `delay`.
    #[non_exhaustive]
    Retrying {
        /// What went wrong.
        error: ApiError,
        /// How many polls in a row have failed, from 1.
        attempt: u32,
        /// The delay before the next poll.
        delay: Duration,
    },
    /// The task is PENDING while its maintenance window is closed: it *may* be waiting for the
    /// window (a resize made with `delay=true`), or may start at any moment. Said once per
    /// opening; the watcher goes on polling, with sleeps that stretch the longer the task stays
    /// PENDING (up to `max_window_delay`), and lands a poll just after the window opens.
    #[non_exhaustive]
    WaitingForWindow {
        /// When the window opens.
        opens_at: jiff::Timestamp,
        /// The next sleep (at most until the deadline).
        delay: Duration,
        /// The snapshot that showed the task PENDING.
        task: InstanceTask,
    },
    /// The task was FAILED and was retried (only with
    /// [`retry_failed`](crate::TaskWatcher::retry_failed)): the service accepted the retry and
    /// answered with the task as it restarts. The wait goes on.
    #[non_exhaustive]
    Retried {
        /// Which retry this was, from 1.
        attempt: u32,
        /// The FAILED snapshot that led to it; `status_detail` says why it failed.
        failed: Box<InstanceTask>,
        /// The task as the retry's answer showed it.
        task: InstanceTask,
    },
    /// The wait is over. Nothing follows this event.
    Done(Outcome),
}

impl TaskEvent {
    /// The task as this event leaves it: the snapshot it carries, or for the final event the
    /// last one seen. `None` for `Retrying`, which brings no snapshot, and for a wait that
    /// ended before the task was seen.
    #[must_use]
    pub fn task(&self) -> Option<&InstanceTask> {
        match self {
            Self::Observed { task, .. }
            | Self::StatusChanged { task, .. }
            | Self::ProgressChanged { task, .. }
            | Self::WaitingForWindow { task, .. }
            | Self::Retried { task, .. }
            | Self::Done(Ok(task)) => Some(task),
            Self::Retrying { .. } => None,
            Self::Done(Err(error)) => error.last(),
        }
    }

    /// The outcome, when this is the final event.
    #[must_use]
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::Done(outcome) => Some(outcome),
            _ => None,
        }
    }
}
