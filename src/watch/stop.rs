//! The stop policy: when a wait gives up.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::clock::{far_future, Clock};

/// When a wait stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    After(Duration),
    At(Instant),
    AtWallClock(SystemTime),
}

impl Stop {
    pub(crate) fn deadline(self, started: Instant, clock: &Clock) -> Instant {
        match self {
            // A timeout too long for the clock is as good as none.
            Self::After(timeout) => started
                .checked_add(timeout)
                .unwrap_or_else(|| far_future(started)),
            Self::At(instant) => instant,
            Self::AtWallClock(when) => clock.instant(when),
        }
    }
}
