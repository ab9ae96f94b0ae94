//! The state of a wait, to resume it in another process, and the clock that maps tokio's
//! instants to wall-clock time and back.

use std::time::SystemTime;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::schedule::{Line, ScheduleState, Track};
use crate::{InstanceId, InstanceTask, TaskId};

/// Maps tokio's clock to wall-clock time: `wall(origin) == wall_origin`. Under a paused tokio
/// clock (tests, simulations) wall time moves with virtual time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
    wall_origin: SystemTime,
}

impl Clock {
    pub(crate) fn new(wall_now: SystemTime) -> Self {
        Self {
            origin: Instant::now(),
            wall_origin: wall_now,
        }
    }

    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        let wall = match at.checked_duration_since(self.origin) {
            Some(after) => self.wall_origin.checked_add(after),
            None => self.wall_origin.checked_sub(self.origin.duration_since(at)),
        };
        wall.unwrap_or(self.wall_origin)
    }

    pub(crate) fn instant(&self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.wall_origin) {
            Ok(after) => self
                .origin
                .checked_add(after)
                .unwrap_or_else(|| far_future(self.origin)),
            // Before this process's clock began, the origin is as early as it gets.
            Err(before) => self
                .origin
                .checked_sub(before.duration())
                .unwrap_or(self.origin),
        }
    }

    pub(crate) fn timestamp(&self, at: Instant) -> Timestamp {
        to_timestamp(self.wall(at))
    }
}

/// A point far enough ahead to stand for "never": 100 years.
pub(crate) fn far_future(from: Instant) -> Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    from.checked_add(CENTURY).unwrap_or(from)
}

/// `t` as a timestamp, clamped to the range a timestamp holds.
pub(crate) fn to_timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(if t > SystemTime::UNIX_EPOCH {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

pub(crate) fn to_system_time(t: Timestamp) -> SystemTime {
    SystemTime::from(t)
}

/// Everything a wait needs to go on in another process: which task, the absolute deadline,
/// the last snapshot, and where the schedule stands. Serialize it with serde (it is plain JSON),
/// and resume with [`TaskWatcher::resume_from`](crate::TaskWatcher::resume_from) or
/// [`TaskWatcher::resume`](crate::TaskWatcher::resume).
///
/// ```
/// # use iotda_task_watcher::WaitState;
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<InstanceTask>,
    pub(crate) schedule: SavedSchedule,
}

impl WaitState {
    /// The instance, when the wait's source named it.
    pub fn instance_id(&self) -> Option<&InstanceId> {
        self.instance_id.as_ref()
    }

    /// The task, when the wait's source named it.
    pub fn task_id(&self) -> Option<&TaskId> {
        self.task_id.as_ref()
    }

    /// When the wait first started.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// The absolute deadline, kept across processes.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// The last snapshot seen.
    pub fn last(&self) -> Option<&InstanceTask> {
        self.last.as_ref()
    }

    /// How many polls were sent so far.
    pub fn polls(&self) -> u32 {
        self.polls
    }
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
            && self.step <= self.last
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
