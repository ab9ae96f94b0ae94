//! Why a wait did not end in SUCCESS. Every variant carries the last snapshot seen.
//!
//! A message never repeats its [`source`](std::error::Error::source): print the chain (as
//! error reporters such as `anyhow`'s `{:#}` do) for the whole story.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Condition;
use crate::client::ApiError;
use crate::model::InstanceTask;

/// Why a wait did not end in SUCCESS.
///
/// Room to grow: new reasons may be added and every variant may gain fields, so match with a
/// `_` arm and with `..` in struct patterns; [`WaitError::last`] reads the last snapshot
/// whatever the variant.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The task reached FAILED.
    #[error("task {} FAILED{}", Id(task), Detail(task))]
    #[non_exhaustive]
    Failed {
        /// The final snapshot; `status_detail` says why.
        task: InstanceTask,
        /// Set when a retry was due but not sent, because the state hook could not save its
        /// record: the [`source`](std::error::Error::source).
        #[source]
        not_retried: Option<NotRetried>,
    },
    /// The task reached SUCCESS in a snapshot in which the wait's
    /// [condition](crate::TaskWatcher::until) does not hold, so it can no longer hold (e.g. the
    /// wait was for `status=RUNNING` and the task ended first). Only a wait for something other
    /// than [`Condition::done`] ends so.
    #[error("task {} ended {} without meeting the condition {condition}", Id(task), task.status_or_unknown())]
    #[non_exhaustive]
    Unmet {
        /// The final snapshot.
        task: InstanceTask,
        /// The condition the wait was for.
        condition: Condition,
    },
    /// The deadline passed before the task finished.
    #[error(
        "timed out {}; {}",
        Timing { elapsed: *elapsed, polls: *polls, late_start: *late_start },
        Last(last.as_ref())
    )]
    #[non_exhaustive]
    TimedOut {
        /// The last snapshot seen, if any.
        last: Option<InstanceTask>,
        /// How long the wait ran.
        elapsed: Duration,
        /// How many polls were sent.
        polls: u32,
        /// The deadline had already passed when the wait started: it sent its first poll
        /// anyway (the task may have been done), and no other.
        late_start: bool,
        /// The error of the last poll, when it failed: the [`source`](std::error::Error::source).
        #[source]
        last_error: Option<ApiError>,
    },
    /// The wait's cancellation token was cancelled. The task itself goes on.
    #[error("cancelled; {}", Last(last.as_ref()))]
    #[non_exhaustive]
    Cancelled {
        /// The last snapshot seen, if any.
        last: Option<InstanceTask>,
    },
    /// Only with [`fail_fast_on_window`](crate::TaskWatcher::fail_fast_on_window): the task is
    /// PENDING and its maintenance window opens after the deadline. If it waits for the window
    /// (a resize made with `delay=true`), failing now saves polling to a certain timeout; the
    /// task itself is untouched and will run then.
    #[error(
        "task {} is PENDING and its maintenance window opens at {opens_at}, after the wait's \
         deadline ({deadline}); wait with a later deadline",
        Id(task)
    )]
    #[non_exhaustive]
    WindowAfterDeadline {
        /// The last snapshot, with its `operate_window`.
        task: InstanceTask,
        /// When the window opens next.
        opens_at: jiff::Timestamp,
        /// The wait's deadline.
        deadline: jiff::Timestamp,
    },
    /// The service answered with an error that trying again cannot fix, or an endpoint never
    /// answered at all.
    #[error("the wait ended on an error that retrying cannot fix; {}", Last(last.as_ref()))]
    #[non_exhaustive]
    Api {
        /// The error: the [`source`](std::error::Error::source).
        #[source]
        error: ApiError,
        /// The last snapshot seen, if any.
        last: Option<InstanceTask>,
    },
}

/// A retry of a FAILED task was not sent, because the
/// [state hook](crate::TaskWatcher::on_state) could not save its record: a process stopped
/// while it was out would resume without it counted, and could restart the task more often
/// than allowed. The hook's error is the [`source`](std::error::Error::source).
#[derive(Debug, Clone, thiserror::Error)]
#[error("not retried: the record of the retry could not be saved")]
pub struct NotRetried(#[source] pub(crate) Arc<dyn std::error::Error + Send + Sync>);

impl WaitError {
    /// The task FAILED, and that is the end.
    pub(crate) fn failed(task: InstanceTask) -> Self {
        Self::Failed {
            task,
            not_retried: None,
        }
    }

    /// The last snapshot seen before the wait ended.
    #[must_use]
    pub fn last(&self) -> Option<&InstanceTask> {
        match self {
            Self::Failed { task, .. }
            | Self::Unmet { task, .. }
            | Self::WindowAfterDeadline { task, .. } => Some(task),
            Self::TimedOut { last, .. } | Self::Cancelled { last } | Self::Api { last, .. } => {
                last.as_ref()
            }
        }
    }
}

impl WaitError {
    /// Where the task last stood, in the words of this error's message: "last seen RUNNING at
    /// 80% (detail)", or "the task was never seen".
    ///
    /// ```
    /// use iotda_task_watcher::WaitError;
    /// # fn show(error: &WaitError) {
    /// eprintln!("gave up waiting; {}", error.last_seen());
    /// # }
    /// ```
    #[must_use]
    pub fn last_seen(&self) -> impl fmt::Display + '_ {
        Last(self.last())
    }
}

struct Id<'a>(&'a InstanceTask);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.task_id.as_deref().unwrap_or("(no id)"))
    }
}

struct Detail<'a>(&'a InstanceTask);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.status_detail.as_deref() {
            Some(detail) if !detail.is_empty() => write!(f, ": {detail}"),
            _ => f.write_str(" (the service gave no detail)"),
        }
    }
}

/// "last seen RUNNING at 80%", or "the task was never seen".
struct Last<'a>(Option<&'a InstanceTask>);

impl fmt::Display for Last<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(task) = self.0 else {
            return f.write_str("the task was never seen");
        };
        match &task.status {
            Some(status) => write!(f, "last seen {status}")?,
            None => f.write_str("last seen with no status")?,
        }
        if let Some(p) = task.progress_percent() {
            write!(f, " at {p}%")?;
        }
        if let Some(detail) = task.status_detail.as_deref().filter(|d| !d.is_empty()) {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// "after 1.2s and 3 polls", or "(the deadline had already passed ...)".
struct Timing {
    elapsed: Duration,
    polls: u32,
    late_start: bool,
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let polls = match self.polls {
            1 => "1 poll".to_owned(),
            n => format!("{n} polls"),
        };
        if self.late_start {
            write!(
                f,
                "at once: the deadline had already passed when the wait started ({polls})"
            )
        } else {
            write!(f, "after {:.1?} and {polls}", self.elapsed)
        }
    }
}
