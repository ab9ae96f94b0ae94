//! The clock that maps tokio's instants to wall-clock time and back: under a paused tokio clock
//! (tests, simulations) wall time moves with virtual time.

use std::time::SystemTime;

use jiff::Timestamp;
use tokio::time::Instant;

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
