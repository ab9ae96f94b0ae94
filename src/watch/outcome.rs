//! [`OutcomeKind`]: how a wait ended, as one word and a severity.

use std::fmt;

use super::{Outcome, WaitError};
use crate::model::TaskStatus;

/// How a wait ended, without the details: what scripts and logs need.
///
/// ```
/// use iotda_task_watcher::watch::OutcomeKind;
/// # fn show(outcome: &iotda_task_watcher::Outcome) {
/// let kind = OutcomeKind::of(outcome);
/// println!("{kind} ({})", kind.as_str());
/// # }
/// // Many waits: the most severe outcome decides.
/// let worst = [OutcomeKind::Success, OutcomeKind::TimedOut, OutcomeKind::Failed]
///     .into_iter()
///     .max()
///     .unwrap();
/// assert_eq!(worst, OutcomeKind::Failed);
/// ```
///
/// New kinds may be added; they are ordered by severity, so `max` over many outcomes is the
/// one to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The task reached SUCCESS.
    Success,
    /// The wait's [condition](crate::TaskWatcher::until) held in a snapshot that is not
    /// SUCCESS (the task started, reached a progress, or is in the status waited for).
    Met,
    /// The deadline passed (or, with `fail_fast_on_window`, the task's window opens after it).
    TimedOut,
    /// The task reached SUCCESS without the wait's condition holding: it never can now.
    Unmet,
    /// The service answered with an error that retrying cannot fix.
    Error,
    /// The task reached FAILED.
    Failed,
    /// The wait was cancelled.
    Cancelled,
}

impl OutcomeKind {
    /// The kind of `outcome`.
    #[must_use]
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Ok(task) if task.status == Some(TaskStatus::Success) => Self::Success,
            Ok(_) => Self::Met,
            Err(WaitError::Failed { .. }) => Self::Failed,
            Err(WaitError::Unmet { .. }) => Self::Unmet,
            // A window that opens after the deadline is a timeout known in advance.
            Err(WaitError::TimedOut { .. } | WaitError::WindowAfterDeadline { .. }) => {
                Self::TimedOut
            }
            Err(WaitError::Cancelled { .. }) => Self::Cancelled,
            Err(WaitError::Api { .. }) => Self::Error,
        }
    }

    /// The name in snake case, as `iotda-wait` writes it in JSON: `success`, `met`,
    /// `failed`, `unmet`, `timed_out`, `cancelled`, `error`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Met => "met",
            Self::Failed => "failed",
            Self::Unmet => "unmet",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

/// Upper case, as a status: `SUCCESS`, `MET`, `FAILED`, `UNMET`, `TIMED_OUT`, `CANCELLED`,
/// `ERROR`.
impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().to_ascii_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceTask;

    #[test]
    fn severity_orders_the_outcomes_of_many_waits() {
        let mut kinds = [
            OutcomeKind::Success,
            OutcomeKind::Unmet,
            OutcomeKind::Met,
            OutcomeKind::TimedOut,
            OutcomeKind::Error,
            OutcomeKind::Failed,
            OutcomeKind::Cancelled,
        ];
        kinds.sort();
        assert_eq!(
            kinds,
            [
                OutcomeKind::Success,
                OutcomeKind::Met,
                OutcomeKind::TimedOut,
                OutcomeKind::Unmet,
                OutcomeKind::Error,
                OutcomeKind::Failed,
                OutcomeKind::Cancelled,
            ]
        );
        assert_eq!(OutcomeKind::TimedOut.to_string(), "TIMED_OUT");
        let failed: Outcome = Err(WaitError::failed(InstanceTask::default()));
        assert_eq!(OutcomeKind::of(&failed), OutcomeKind::Failed);
    }
}
