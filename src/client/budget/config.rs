//! How a budget is set, and what it reports.

use std::time::Duration;

/// How many requests per second a client may send, over all the waits that share it.
///
/// The default has no fixed cap and the adaptive limiter on: nothing is held back until the
/// service throttles a request, and from then on the whole client keeps near the rate the
/// service accepts.
///
/// ```
/// use iotda_task_watcher::client::budget::RequestBudget;
/// // At most 20 requests per second in bursts of 40, and slower still if throttled.
/// let budget = RequestBudget::default().with_max_rps(20.0, 40);
/// assert_eq!(budget.max_rps(), Some((20.0, 40)));
/// assert!(budget.adaptive());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RequestBudget {
    max_rps: Option<(f64, u32)>,
    window: Option<(u32, Duration)>,
    adaptive: bool,
}

impl Default for RequestBudget {
    fn default() -> Self {
        Self {
            max_rps: None,
            window: None,
            adaptive: true,
        }
    }
}

impl RequestBudget {
    /// No cap and no adaptive limiter: every wait paces itself alone.
    #[must_use]
    pub fn unlimited() -> Self {
        Self {
            max_rps: None,
            window: None,
            adaptive: false,
        }
    }

    /// A fixed cap: `rate` requests per second, at most `burst` at once. A rate that is not a
    /// positive number is no cap; a burst below 1 counts as 1.
    #[must_use]
    pub fn with_max_rps(mut self, rate: f64, burst: u32) -> Self {
        self.max_rps = (rate.is_finite() && rate > 0.0).then_some((rate, burst.max(1)));
        self
    }

    /// A second limit, for quotas counted over a window ("200 requests per 5 minutes"): at
    /// most `count` requests in any `window`, as a token bucket of a quarter of `count` (at
    /// least 1) refilled at the rest over the window, so that a burst and the refill together
    /// never pass `count`. It holds with [`with_max_rps`](Self::with_max_rps) at once; a count
    /// below 2 or an empty window is no limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use iotda_task_watcher::client::budget::RequestBudget;
    /// let budget = RequestBudget::default()
    ///     .with_max_rps(5.0, 5)
    ///     .with_window_limit(200, Duration::from_secs(300));
    /// assert_eq!(budget.window_limit(), Some((200, Duration::from_secs(300))));
    /// ```
    #[must_use]
    pub fn with_window_limit(mut self, count: u32, window: Duration) -> Self {
        self.window = (count >= 2 && !window.is_zero()).then_some((count, window));
        self
    }

    /// The window limit, as (requests, window).
    #[must_use]
    pub fn window_limit(&self) -> Option<(u32, Duration)> {
        self.window
    }

    /// Every fixed limit as a token bucket: (requests per second, burst).
    pub(crate) fn buckets(&self) -> Vec<(f64, f64)> {
        let mut limits = Vec::with_capacity(2);
        if let Some((rate, burst)) = self.max_rps {
            limits.push((rate, f64::from(burst)));
        }
        if let Some((count, window)) = self.window {
            let burst = count.div_ceil(4).min(count - 1);
            limits.push((
                f64::from(count - burst) / window.as_secs_f64(),
                f64::from(burst),
            ));
        }
        limits
    }

    /// Turns the adaptive limiter on or off (on by default).
    #[must_use]
    pub fn with_adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    /// The fixed cap, as (requests per second, burst).
    #[must_use]
    pub fn max_rps(&self) -> Option<(f64, u32)> {
        self.max_rps
    }

    /// Whether the adaptive limiter is on.
    #[must_use]
    pub fn adaptive(&self) -> bool {
        self.adaptive
    }
}

/// What a client's budget has seen, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Requests that took a token.
    pub requests: u64,
    /// Answers that throttled.
    pub throttled: u64,
    /// Total time requests waited for a token.
    pub waited: Duration,
    /// The adaptive limiter's rate, once a throttle engaged it (the fleet's, as last seen,
    /// while a shared budget answers).
    pub adaptive_rate: Option<f64>,
    /// With the adaptive limiter on: the rate of answers the service accepted over the seconds
    /// before the last answer (requests a second, each answer weighing less by e every 2 s),
    /// once a second of answers is in.
    pub accepted_rate: Option<f64>,
    /// With the adaptive limiter on: the share of those answers that the service throttled.
    pub throttled_share: f64,
    /// Calls made to a shared budget's Redis, answered or not.
    pub shared_calls: u64,
    /// Whether a shared budget stopped answering, so that this process paces itself.
    pub pacing_alone: bool,
    /// The tasks being waited for through the client now.
    pub tasks: usize,
    /// Polls waiting for a token now.
    pub queued: usize,
    /// While the budget is short (the last poll to go waited a second or more for its token):
    /// how often each task can be polled, the tasks sharing the rate the service accepts
    /// (`tasks / accepted_rate`). Polls take their turns first come, first served, so every
    /// wait is polled about this often and none starves.
    pub poll_interval: Option<Duration>,
}
