//! The seam between a budget and a fleet it shares its limits with: the budget asks the fleet
//! for each token, tells it every answer, and when the fleet cannot answer, paces this process
//! alone from what the fleet was last seen to do. `client::shared` (feature `redis`) is the one
//! fleet: slots booked in Redis.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::BudgetStats;

/// A fleet's side of a budget: see the module docs.
pub(crate) trait Fleet: Send + Sync + fmt::Debug {
    /// A token for the poll at the head of the queue.
    fn book(&self) -> BoxFuture<'_, Booking>;

    /// The service answered a request sent at `sent_at`: throttled or not, and for how long
    /// it asked to be left alone.
    fn answered(&self, sent_at: Instant, throttled: bool, retry_after: Option<Duration>);

    /// Gives back a token the fleet booked for a request that was not sent; `false` while the
    /// process paces alone (the token was the budget's own).
    fn refund(&self) -> bool;

    /// Fills in what the fleet has to say in a budget's stats.
    fn report(&self, stats: &mut BudgetStats);
}

/// What the fleet answered to a booking.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    not(feature = "redis"),
    allow(dead_code, reason = "no fleet without Redis")
)]
pub(crate) enum Booking {
    /// The request may go this long from now.
    Booked(Duration),
    /// The fleet does not answer: pace alone, from its members and rate as last seen.
    Alone {
        /// Processes in the fleet (at least 1); `None` when it never answered.
        members: Option<u32>,
        /// The fleet's adaptive rate, if it had one.
        rate: Option<f64>,
    },
}
