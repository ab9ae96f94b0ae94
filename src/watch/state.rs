//! The state of a wait, to resume it in another process.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::clock::{to_system_time, Clock};
use super::engine::FailureMark;
use super::schedule::{Line, ScheduleState, Track};
use crate::ids::{InstanceId, TaskId};
use crate::model::InstanceTask;

/// Everything a wait needs to go on in another process: which task, the absolute deadline,
/// the last snapshot, and where the schedule stands. Serialize it with serde (it is plain JSON),
/// and resume with [`TaskWatcher::resume_from`](crate::TaskWatcher::resume_from) or
/// [`TaskWatcher::resume`](crate::TaskWatcher::resume).
///
/// ```
/// # use iotda_task_watcher::watch::WaitState;
/// # fn keep(state: &WaitState) -> Result<(), Box<dyn std::error::Error>> {
/// let json = serde_json::to_string(state)?;
/// let again: WaitState = serde_json::from_str(&json)?;
/// assert_eq!(&again, state);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance_id: Option<InstanceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<TaskId>,
    pub(crate) started_at: Timestamp,
    pub(crate) deadline: Timestamp,
    pub(crate) next_poll_at: Timestamp,
    pub(crate) polls: u32,
    pub(crate) failures: u32,
    /// How many times the task was retried after a failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) retries: u32,
    /// The last retry was sent (and counted) but its answer was not seen: the task is read
    /// before anything else, and the retry stays spent whatever it shows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) retry_unconfirmed: bool,
    /// The failure last retried, once the retry was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retried_failure: Option<FailureMark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<InstanceTask>,
    pub(crate) schedule: SavedSchedule,
    /// The wait ended with this state; not saved, since a wait resumed from it goes on.
    #[serde(skip)]
    pub(crate) ended: bool,
}

impl WaitState {
    /// The instance, when the wait's source named it.
    #[must_use]
    pub fn instance_id(&self) -> Option<&InstanceId> {
        self.instance_id.as_ref()
    }

    /// The task, when the wait's source named it.
    #[must_use]
    pub fn task_id(&self) -> Option<&TaskId> {
        self.task_id.as_ref()
    }

    /// When the wait first started.
    #[must_use]
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// The absolute deadline, kept across processes.
    #[must_use]
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// The last snapshot seen.
    #[must_use]
    pub fn last(&self) -> Option<&InstanceTask> {
        self.last.as_ref()
    }

    /// How many polls were sent so far.
    #[must_use]
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// How many times the task was retried after it FAILED (see
    /// [`TaskWatcher::retry_failed`](crate::TaskWatcher::retry_failed)): a resumed wait
    /// retries it only as often as is left.
    #[must_use]
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Writes the state to `path` whole: to a temporary file beside it, synced to disk, renamed
    /// over `path`, and the folder synced. A reader, or a process killed mid-write, finds the
    /// state before or this one, never half of one; once this returns, the state survives a
    /// crash of the machine. A write that fails removes its temporary file.
    ///
    /// ```no_run
    /// # fn run(watcher: iotda_task_watcher::TaskWatcher) {
    /// let watcher = watcher.on_state(|state| state.write_to("wait.json"));
    /// # }
    /// ```
    ///
    /// # Errors
    /// The file system's error when the state cannot be written, synced or renamed.
    pub fn write_to(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = path.as_ref();
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut part = path.as_os_str().to_owned();
        part.push(format!(".{}.part", std::process::id()));
        let part = std::path::PathBuf::from(part);
        let written = std::fs::File::create(&part)
            .and_then(|mut out| out.write_all(&json).and_then(|()| out.sync_all()))
            .and_then(|()| std::fs::rename(&part, path));
        if let Err(e) = written {
            // Nothing half-written is left behind.
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }

    /// Whether the wait ended with this state: the last one the
    /// [state hook](crate::TaskWatcher::on_state) is given, which a hook that saves only some
    /// states should always save. Not itself saved: a wait resumed from a saved end polls
    /// once to confirm it.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether the last retry was sent without its answer being seen (the process stopped,
    /// or the answer never came). It is counted in [`retries`](Self::retries) all the same:
    /// a wait resumed from this state reads the task first, and never restarts it more often
    /// than it was allowed in all.
    #[must_use]
    pub fn retry_unconfirmed(&self) -> bool {
        self.retry_unconfirmed
    }
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where the schedule stands, in wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedSchedule {
    resets: u64,
    steps: u32,
    /// When the current status was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<SavedTrack>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct SavedTrack {
    origin: Timestamp,
    /// The size of the latest rise.
    #[serde(default)]
    step: u8,
    /// How often the estimate slipped.
    #[serde(default)]
    slips: u8,
    seen_at: Timestamp,
    last: u8,
    /// The fitted line: points, weighted means and co-moments, times in seconds after
    /// `origin`.
    n: u32,
    mean_x: f64,
    mean_y: f64,
    cxx: f64,
    cxy: f64,
}

impl SavedTrack {
    /// What a real wait can have saved: values within 0 to 100 %, at most one point per
    /// percent, finite numbers, and the latest poll no earlier than the first value.
    fn is_sane(&self) -> bool {
        let numbers = [self.mean_x, self.mean_y, self.cxx, self.cxy];
        numbers.iter().all(|v| v.is_finite())
            && self.last <= 100
            && self.step <= self.last.max(1)
            && (1..=101).contains(&self.n)
            && self.mean_x >= 0.0
            && (0.0..=100.0).contains(&self.mean_y)
            && self.cxx >= 0.0
            && self.seen_at >= self.origin
    }
}

impl SavedSchedule {
    pub(crate) fn save(state: ScheduleState, clock: &Clock) -> Self {
        Self {
            resets: state.resets,
            steps: state.steps,
            status_since: state.status_since.map(|t| clock.timestamp(t)),
            progress: state.track.map(|t| SavedTrack {
                origin: clock.timestamp(t.origin),
                step: t.step,
                slips: t.slips,
                seen_at: clock.timestamp(t.seen),
                last: t.last,
                n: t.line.n,
                mean_x: t.line.mean_x,
                mean_y: t.line.mean_y,
                cxx: t.line.cxx,
                cxy: t.line.cxy,
            }),
        }
    }

    pub(crate) fn load(self, clock: &Clock) -> ScheduleState {
        let at = |t: Timestamp| clock.instant(to_system_time(t));
        ScheduleState {
            resets: self.resets,
            steps: self.steps,
            status_since: self.status_since.map(at),
            // A line no wait could have saved starts again from the next value.
            track: self.progress.filter(SavedTrack::is_sane).map(|t| Track {
                origin: at(t.origin),
                step: t.step,
                slips: t.slips,
                seen: at(t.seen_at),
                last: t.last,
                line: Line {
                    n: t.n,
                    mean_x: t.mean_x,
                    mean_y: t.mean_y,
                    cxx: t.cxx,
                    cxy: t.cxy,
                },
            }),
        }
    }
}

/// A saved wait that does not say which task it was waiting for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the saved wait does not name its instance and task")]
pub struct ResumeError;
