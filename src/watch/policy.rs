//! [`PollPolicy`]: how long a wait sleeps between polls.

use std::time::Duration;

use backon::ExponentialBuilder;

/// How the delays between polls are chosen, set on a watcher with
/// [`TaskWatcher::policy`](crate::TaskWatcher::policy). Build it from the default with the
/// `with_*` methods; each setting has a getter of the same name, which returns the value the
/// schedule uses (after the clamping below and the defaults derived from `max_delay`).
///
/// The cadence is exponential backoff (built with `backon`): `min_delay`, growing by
/// `factor`, up to `max_delay`, with jitter. Once a task's progress rises, its estimated end
/// sets the delays instead: a third of the time left while the end is far (at most
/// `max_progress_delay`), every `near_end_delay` around it. A PENDING task behind a closed
/// maintenance window is polled more sparsely, up to `max_window_delay`. A failed poll is
/// sent again after `min_delay`, growing by `factor` with each failure in a row up to
/// `max_delay`; a throttled poll on a client whose budget is adaptive (the default) is sent
/// again after `min_delay` however many came before it, the budget pacing every wait.
///
/// Whatever the settings, no sleep the schedule plans is longer than
/// [`max_lateness`](PollPolicy::max_lateness) (45 s by default), except a server's
/// `Retry-After` and the sleeps of a PENDING task behind a closed maintenance window (at most
/// `max_window_delay`). So a task that ends, at whatever progress, is seen at most that long
/// after its end, plus the time of one request.
///
/// Odd settings are clamped, never refused, each as its setter says: delays below 1 ms count
/// as 1 ms (no setting makes a wait poll in a busy loop), a `max_delay` below `min_delay`
/// counts as `min_delay`, and a factor below 1 or NaN as 1.
///
/// # Defaults
///
/// | setting | default |
/// |---|---|
/// | [`min_delay`](Self::min_delay) | 1 s |
/// | [`max_delay`](Self::max_delay) | 30 s |
/// | [`factor`](Self::factor) | 2 |
/// | [`jitter`](Self::jitter) | on |
/// | [`jitter_seed`](Self::jitter_seed) | none: each wait draws its own |
/// | [`progress_guided`](Self::progress_guided) | on |
/// | [`max_progress_delay`](Self::max_progress_delay) | 1.5 × `max_delay` (45 s) |
/// | [`near_end_delay`](Self::near_end_delay) | 0.5 × `max_delay` (15 s) |
/// | [`max_window_delay`](Self::max_window_delay) | 5 minutes |
/// | [`max_lateness`](Self::max_lateness) (derived) | 45 s |
///
/// ```
/// use std::time::Duration;
/// use iotda_task_watcher::watch::PollPolicy;
/// let policy = PollPolicy::default()
///     .with_max_delay(Duration::from_secs(10))
///     .with_jitter(false);
/// assert_eq!(policy.near_end_delay(), Duration::from_secs(5));
/// assert_eq!(policy.max_lateness(), Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PollPolicy {
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) factor: f32,
    pub(crate) jitter: bool,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) progress_guided: bool,
    pub(crate) max_progress_delay: Option<Duration>,
    pub(crate) near_end_delay: Option<Duration>,
    pub(crate) max_window_delay: Duration,
}

/// The shortest delay any setting can ask for: shorter ones count as this.
pub(crate) const MIN_DELAY_FLOOR: Duration = Duration::from_millis(1);

impl PollPolicy {
    /// The first delay, and the delay after a maintenance window opens. Default 1 s; below
    /// 1 ms counts as 1 ms.
    #[must_use]
    pub fn with_min_delay(mut self, delay: Duration) -> Self {
        self.min_delay = delay.max(MIN_DELAY_FLOOR);
        self
    }

    /// The longest delay of the exponential backoff, jitter included. Default 30 s; below
    /// `min_delay` it counts as `min_delay` (whichever is set first).
    #[must_use]
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay.max(MIN_DELAY_FLOOR);
        self
    }

    /// How much each backoff delay grows over the one before. Default 2; below 1 and NaN count
    /// as 1 (a constant delay), infinity as a jump to `max_delay` after the first delay.
    #[must_use]
    pub fn with_factor(mut self, factor: f32) -> Self {
        self.factor = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self
    }

    /// Adds a random part of up to 100 % to each backoff delay (capped at `max_delay`), so that
    /// many waiters started together spread out. Delays set by progress follow each task's own
    /// estimate and are not jittered. Default on.
    #[must_use]
    pub fn with_jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Seeds the jitter, so that delays repeat from run to run. Meant for tests and
    /// simulations; by default each wait draws its own seed.
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Lets the task's progress set the delays once it has risen: sparse while its estimated
    /// end is far, every `near_end_delay` around it. Default on.
    #[must_use]
    pub fn with_progress_guided(mut self, on: bool) -> Self {
        self.progress_guided = on;
        self
    }

    /// The longest sleep while the estimated end is far (never shorter than the near-end
    /// delay): a task that ends, or fails, far earlier than its progress promised is still
    /// seen within this time. Default 1.5 times `max_delay` (45 s).
    #[must_use]
    pub fn with_max_progress_delay(mut self, delay: Duration) -> Self {
        self.max_progress_delay = Some(delay);
        self
    }

    /// How often a task is polled around its estimated end (kept between `min_delay` and
    /// `max_delay`). Default half of `max_delay` (15 s).
    #[must_use]
    pub fn with_near_end_delay(mut self, delay: Duration) -> Self {
        self.near_end_delay = Some(delay);
        self
    }

    /// The longest sleep while a PENDING task's maintenance window is closed (never shorter
    /// than [`max_lateness`](Self::max_lateness)). The sleeps stretch towards it only after the
    /// task has been PENDING for a while, and a poll lands `min_delay` after the window opens.
    /// Default 5 minutes.
    #[must_use]
    pub fn with_max_window_delay(mut self, delay: Duration) -> Self {
        self.max_window_delay = delay;
        self
    }

    /// The first delay, and the delay after a maintenance window opens.
    #[must_use]
    pub fn min_delay(&self) -> Duration {
        self.min_delay
    }

    /// The longest delay of the backoff: `max_delay`, or `min_delay` when that is longer.
    #[must_use]
    pub fn max_delay(&self) -> Duration {
        self.cap()
    }

    /// How much each backoff delay grows over the one before (at least 1).
    #[must_use]
    pub fn factor(&self) -> f32 {
        self.factor
    }

    /// Whether backoff delays are jittered.
    #[must_use]
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The seed of the jitter, if one was set.
    #[must_use]
    pub fn jitter_seed(&self) -> Option<u64> {
        self.jitter_seed
    }

    /// Whether progress sets the delays.
    #[must_use]
    pub fn progress_guided(&self) -> bool {
        self.progress_guided
    }

    /// The longest sleep while the estimated end is far: the value set, or 1.5 times
    /// `max_delay`, and never shorter than the near-end delay.
    #[must_use]
    pub fn max_progress_delay(&self) -> Duration {
        self.far()
    }

    /// How often a task is polled around its estimated end: the value set, or half of
    /// `max_delay`, kept between `min_delay` and `max_delay`.
    #[must_use]
    pub fn near_end_delay(&self) -> Duration {
        self.near()
    }

    /// The longest sleep while a PENDING task's maintenance window is closed: the value set,
    /// never shorter than [`max_lateness`](Self::max_lateness).
    #[must_use]
    pub fn max_window_delay(&self) -> Duration {
        self.window_cap()
    }
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
            jitter_seed: None,
            progress_guided: true,
            max_progress_delay: None,
            near_end_delay: None,
            max_window_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl PollPolicy {
    /// The longest sleep of the backoff: `max_delay`, or `min_delay` when that is longer.
    pub(crate) fn cap(&self) -> Duration {
        self.max_delay.max(self.min_delay)
    }

    /// How often a task is polled around its estimated end.
    pub(crate) fn near(&self) -> Duration {
        self.near_end_delay
            .unwrap_or_else(|| self.cap() / 2)
            .clamp(self.min_delay, self.cap())
    }

    /// The longest sleep while the estimated end is far.
    pub(crate) fn far(&self) -> Duration {
        self.max_progress_delay
            .unwrap_or_else(|| self.cap().saturating_mul(3) / 2)
            .max(self.near())
    }

    /// The longest a task's end can go unseen while the service answers, apart from a
    /// server's `Retry-After` and the sleeps of a PENDING task behind a closed maintenance
    /// window: every sleep the schedule plans is at most this long.
    ///
    /// It is `max_delay` (or `min_delay` when that is longer), and with progress guidance
    /// the far cap when that is longer: `max_progress_delay`, by default 1.5 times
    /// `max_delay`. With the defaults, 45 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use iotda_task_watcher::watch::PollPolicy;
    /// assert_eq!(PollPolicy::default().max_lateness(), Duration::from_secs(45));
    /// let fast = PollPolicy::default().with_max_delay(Duration::from_secs(10));
    /// assert_eq!(fast.max_lateness(), Duration::from_secs(15));
    /// let plain = PollPolicy::default().with_progress_guided(false);
    /// assert_eq!(plain.max_lateness(), Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn max_lateness(&self) -> Duration {
        if self.progress_guided {
            self.cap().max(self.far())
        } else {
            self.cap()
        }
    }

    /// The longest sleep behind a closed maintenance window: `max_window_delay`, never
    /// shorter than the backoff's longest sleep.
    pub(crate) fn window_cap(&self) -> Duration {
        self.max_window_delay.max(self.max_lateness())
    }

    pub(crate) fn builder(&self, resets: u64) -> ExponentialBuilder {
        let min = self.min_delay;
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(self.cap())
            .with_factor(match self.factor {
                f if f.is_nan() => 1.0,
                f if f.is_infinite() && f > 0.0 => f32::MAX,
                f => f.max(1.0),
            })
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
            if let Some(seed) = self.jitter_seed {
                // A new stream of jitter after each reset, still reproducible.
                builder = builder.with_jitter_seed(seed.wrapping_add(resets));
            }
        }
        builder
    }
}
