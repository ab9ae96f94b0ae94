//! When to poll next.
//!
//! The cadence is exponential backoff, built with `backon`: `min_delay`, doubling, up to
//! `max_delay`, from `min_delay` again after a status change. It is what the watcher does when
//! the task says nothing about its end, and after failed polls.
//!
//! **Progress** takes over once it has risen while the status stayed the same. The schedule
//! fits a line through the values seen in this status, weighting recent values more (each new
//! value counts [`FORGET`] times less for every value after it), so a task that slows down
//! or speeds up is followed within a few reports. Each value is taken as reached halfway
//! between the poll that showed it and the poll before. A value that has not moved for longer
//! than the line expects lowers the rate the line may claim (a stall pushes the end out,
//! however the values before it ran); a value that goes backwards starts the line again.
//!
//! From the line's end estimate:
//! - far from it, the watcher sleeps half of the time left, never longer than the time since
//!   the first value (an early estimate cannot send it away for long) nor than the far cap;
//! - around it, it polls every `near_end_delay`;
//! - late against it, a tenth of the overrun, within `near_end_delay` and `max_delay`.
//!
//! **The lateness promise.** Every sleep this returns is at most
//! [`Backoff::max_lateness`]: `max_delay`, or with progress guidance the far cap
//! (`max_progress_delay`, by default twice `max_delay`) when that is longer. A task that ends
//! (SUCCESS or FAILED, at any progress) is therefore seen within that time of its end, plus
//! the time of the request that sees it, while the service answers. The engine adds only two
//! exceptions: a server's `Retry-After`, and the stretched sleeps of a PENDING task whose
//! maintenance window is closed ([`Schedule::behind_window`], at most `max_window_delay`).
//!
//! The delay policy is a value of its own, apart from the stop policy (the deadline), which the
//! engine applies by clamping whatever delay this returns.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// How the delays between polls are chosen.
///
/// Whatever the settings, no sleep the schedule plans is longer than
/// [`max_lateness`](Backoff::max_lateness) (60 s by default), except a server's `Retry-After`
/// and the sleeps of a PENDING task behind a closed maintenance window (at most
/// `max_window_delay`). So a task that ends, at whatever progress, is seen at most that long
/// after its end, plus the time of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay, and the delay after a status change. Default 1 s.
    pub min_delay: Duration,
    /// The longest delay of the exponential backoff, jitter included; below `min_delay` it
    /// counts as `min_delay`. Default 30 s.
    pub max_delay: Duration,
    /// How much each backoff delay grows over the one before; below 1, NaN or infinite counts
    /// as 1. Default 2.
    pub factor: f32,
    /// Adds a random part of up to 100 % to each backoff delay (capped at `max_delay`), so that
    /// many waiters started together spread out. Delays set by progress follow each task's own
    /// estimate and are not jittered. Default on.
    pub jitter: bool,
    /// Seeds the jitter, for reproducible delays in tests. Default: a random seed.
    pub jitter_seed: Option<u64>,
    /// Lets the task's progress set the delays once it has risen: sparse while its estimated
    /// end is far, every `near_end_delay` around it. Default on.
    pub progress_guided: bool,
    /// The longest sleep while the estimated end is far (never shorter than the near-end
    /// delay): a task that ends, or fails, far earlier than its progress promised is still
    /// seen within this time. `None` (the default) is twice `max_delay`: 60 s by default.
    pub max_progress_delay: Option<Duration>,
    /// How often a task is polled around its estimated end (kept between `min_delay` and
    /// `max_delay`). Default 10 s.
    pub near_end_delay: Duration,
    /// The longest sleep while a PENDING task's maintenance window is closed (never shorter
    /// than the backoff). The sleeps stretch towards it only after the task has been PENDING
    /// for a while, and never past the window's opening. Default 5 minutes.
    pub max_window_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
            jitter_seed: None,
            progress_guided: true,
            max_progress_delay: None,
            near_end_delay: Duration::from_secs(10),
            max_window_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    /// The longest sleep of the backoff: `max_delay`, or `min_delay` when that is longer.
    fn cap(&self) -> Duration {
        self.max_delay.max(self.min_delay)
    }

    /// How often a task is polled around its estimated end.
    fn near(&self) -> Duration {
        self.near_end_delay.clamp(self.min_delay, self.cap())
    }

    /// The longest sleep while the estimated end is far.
    fn far(&self) -> Duration {
        self.max_progress_delay
            .unwrap_or_else(|| self.cap().saturating_mul(2))
            .max(self.near())
    }

    /// The longest a task's end can go unseen while the service answers, apart from a
    /// server's `Retry-After` and the sleeps of a PENDING task behind a closed maintenance
    /// window: every sleep the schedule plans is at most this long.
    ///
    /// It is `max_delay` (or `min_delay` when that is longer), and with progress guidance
    /// the far cap when that is longer: `max_progress_delay`, by default twice `max_delay`.
    /// With the defaults, 60 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use iotda_task_watcher::Backoff;
    /// assert_eq!(Backoff::default().max_lateness(), Duration::from_secs(60));
    /// let fast = Backoff { max_delay: Duration::from_secs(5), ..Backoff::default() };
    /// assert_eq!(fast.max_lateness(), Duration::from_secs(10));
    /// let plain = Backoff { progress_guided: false, ..Backoff::default() };
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
    fn window_cap(&self) -> Duration {
        self.max_window_delay.max(self.max_lateness())
    }

    fn builder(&self, resets: u64) -> ExponentialBuilder {
        let min = self.min_delay;
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(self.cap())
            .with_factor(if self.factor.is_finite() {
                self.factor.max(1.0)
            } else {
                1.0
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

/// How much less each value weighs for every value reported after it: the line follows about
/// the last five values, enough to average out noise and few enough to follow a change of pace.
pub(crate) const FORGET: f64 = 0.8;

/// Progress seen in the current status, and a line through it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Track {
    /// When the first value was seen; the line's times are seconds after it.
    pub(crate) origin: Instant,
    /// The first value.
    pub(crate) first: u8,
    /// The latest poll that showed a progress, and the value it showed.
    pub(crate) seen: Instant,
    pub(crate) last: u8,
    pub(crate) line: Line,
}

/// A weighted least-squares line through (seconds, percent) points, kept as weighted means and
/// co-moments (West's update, with older points fading by [`FORGET`] at each new one): constant
/// size, and stable however long the task runs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Line {
    /// How many points were added.
    pub(crate) n: u32,
    pub(crate) mean_x: f64,
    pub(crate) mean_y: f64,
    pub(crate) cxx: f64,
    pub(crate) cxy: f64,
}

impl Line {
    /// The total weight of `n` points: 1 for the newest, `FORGET` for the one before, ...
    fn weight(n: u32) -> f64 {
        (1.0 - FORGET.powf(f64::from(n))) / (1.0 - FORGET)
    }

    fn add(&mut self, x: f64, y: f64) {
        self.n = self.n.saturating_add(1);
        let weight = Self::weight(self.n);
        let dx = x - self.mean_x;
        self.mean_x += dx / weight;
        self.mean_y += (y - self.mean_y) / weight;
        self.cxx = FORGET * self.cxx + dx * (x - self.mean_x);
        self.cxy = FORGET * self.cxy + dx * (y - self.mean_y);
    }

    /// The line's slope in percent per second, when it rises.
    fn slope(&self) -> Option<f64> {
        let slope = self.cxy / self.cxx;
        (self.n >= 2 && self.cxx > 0.0 && slope > 0.0 && slope.is_finite()).then_some(slope)
    }
}

impl Track {
    fn new(now: Instant, p: u8) -> Self {
        let mut line = Line::default();
        line.add(0.0, f64::from(p));
        Self {
            origin: now,
            first: p,
            seen: now,
            last: p,
            line,
        }
    }

    /// When the task should reach 100 %, on the line through the values seen so far.
    ///
    /// The line's slope is the rate; but when the latest value has stood still for longer than
    /// that rate allows (the next step, of the size the steps so far had, would have shown by
    /// the latest poll), the rate is at most what reaches that next step at that poll.
    fn predicted_end(&self) -> Option<Instant> {
        let line = &self.line;
        let mut slope = line.slope()?;
        let seen = self.seen.saturating_duration_since(self.origin).as_secs_f64();
        let rises = f64::from(line.n.saturating_sub(1).max(1));
        let step = (f64::from(self.last.saturating_sub(self.first)) / rises).max(1.0);
        if seen > line.mean_x {
            let stalled = (f64::from(self.last) + step - line.mean_y) / (seen - line.mean_x);
            if stalled > 0.0 {
                slope = slope.min(stalled);
            }
        }
        let at = line.mean_x + (100.0 - line.mean_y) / slope;
        let after = Duration::try_from_secs_f64(at.max(0.0)).ok()?;
        self.origin.checked_add(after)
    }
}

/// A task late against its estimate by `t` is polled every `t / OVERRUN_SHARE` (within the
/// near-end delay and `max_delay`).
const OVERRUN_SHARE: u32 = 10;

/// Behind a closed window, a task PENDING for `t` is polled every `t / WINDOW_SHARE` at most
/// (within the backoff and `max_window_delay`): the normal backoff for the first two minutes
/// with the defaults, and the full stretch only after twenty.
const WINDOW_SHARE: u32 = 4;

/// The delay sequence of one wait.
#[derive(Debug)]
pub(crate) struct Schedule {
    config: Backoff,
    delays: ExponentialBackoff,
    resets: u64,
    /// Backoff delays taken since the last reset (to rebuild the sequence on resume).
    steps: u32,
    /// When the current status was first seen.
    status_since: Option<Instant>,
    track: Option<Track>,
}

/// What a schedule carries from one process to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScheduleState {
    pub(crate) resets: u64,
    pub(crate) steps: u32,
    pub(crate) status_since: Option<Instant>,
    pub(crate) track: Option<Track>,
}

impl Schedule {
    pub(crate) fn new(config: Backoff) -> Self {
        Self {
            delays: config.builder(0).build(),
            config,
            resets: 0,
            steps: 0,
            status_since: None,
            track: None,
        }
    }

    /// A schedule that goes on from `state`.
    pub(crate) fn resume(config: Backoff, state: ScheduleState) -> Self {
        let mut schedule = Self::new(config);
        schedule.resets = state.resets;
        schedule.delays = config.builder(state.resets).build();
        // Replaying more steps than it takes any sane factor to reach the cap changes
        // nothing, and a hostile saved state cannot make this loop long.
        for _ in 0..state.steps.min(1024) {
            schedule.backoff();
        }
        schedule.status_since = state.status_since;
        schedule.track = state.track;
        schedule
    }

    pub(crate) fn state(&self) -> ScheduleState {
        ScheduleState {
            resets: self.resets,
            steps: self.steps,
            status_since: self.status_since,
            track: self.track,
        }
    }

    /// The delay after a snapshot seen at `now`.
    pub(crate) fn after_snapshot(
        &mut self,
        now: Instant,
        status_changed: bool,
        progress: Option<u8>,
    ) -> Duration {
        if status_changed {
            self.restart();
            self.track = None;
            self.status_since = None;
        }
        self.status_since.get_or_insert(now);
        let backoff = self.backoff();
        if !self.config.progress_guided {
            return backoff;
        }
        self.observe(now, progress);
        let Some(end) = self.track.and_then(|t| t.predicted_end()) else {
            return backoff;
        };
        let origin = self.track.map_or(now, |t| t.origin);
        let config = &self.config;
        let near = config.near();
        match end
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
        {
            // Far from the end: half of the time left, trusted no further ahead than the time
            // since the first value, and never longer than the far cap.
            Some(left) => (left / 2)
                .min(now.saturating_duration_since(origin))
                .min(config.far())
                .max(near),
            // Late against the estimate: the later, the sparser.
            None => (now.saturating_duration_since(end) / OVERRUN_SHARE).clamp(near, config.cap()),
        }
    }

    /// The delay for a PENDING task whose maintenance window is closed until `opens`, given
    /// the `delay` [`after_snapshot`](Self::after_snapshot) chose: stretched the longer the
    /// task has been PENDING (up to `max_window_delay`), and cut so that a poll lands just
    /// after the window opens, from where the backoff starts again.
    pub(crate) fn behind_window(&mut self, now: Instant, opens: Instant, delay: Duration) -> Duration {
        let pending_for = now.saturating_duration_since(self.status_since.unwrap_or(now));
        let stretched = delay.max((pending_for / WINDOW_SHARE).min(self.config.window_cap()));
        let opening = opens
            .saturating_duration_since(now)
            .saturating_add(self.config.min_delay);
        if stretched >= opening {
            self.restart();
            opening
        } else {
            stretched
        }
    }

    /// The delay after a failed poll.
    pub(crate) fn after_failure(&mut self) -> Duration {
        self.backoff()
    }

    fn observe(&mut self, now: Instant, progress: Option<u8>) {
        let Some(p) = progress else {
            return;
        };
        self.track = Some(match self.track {
            // The first value, or one that went backwards: start again from here.
            None => Track::new(now, p),
            Some(track) if p < track.last => Track::new(now, p),
            Some(mut track) => {
                if p > track.last {
                    // Reached somewhere between the poll before and this one: halfway.
                    let reached = track.seen + now.saturating_duration_since(track.seen) / 2;
                    let x = reached
                        .saturating_duration_since(track.origin)
                        .as_secs_f64();
                    track.line.add(x, f64::from(p));
                    track.last = p;
                }
                track.seen = now;
                track
            }
        });
    }

    fn backoff(&mut self) -> Duration {
        let cap = self.config.cap();
        self.steps = self.steps.saturating_add(1);
        self.delays.next().unwrap_or(cap).min(cap)
    }

    /// Starts the backoff again from the minimum delay.
    pub(crate) fn restart(&mut self) {
        self.resets = self.resets.saturating_add(1);
        self.steps = 0;
        self.delays = self.config.builder(self.resets).build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    fn plain() -> Backoff {
        Backoff {
            jitter: false,
            ..Backoff::default()
        }
    }

    #[test]
    fn doubles_from_min_to_max_without_progress() {
        let mut s = Schedule::new(plain());
        let t = Instant::now();
        let got: Vec<_> = (0..8).map(|_| s.after_snapshot(t, false, None)).collect();
        assert_eq!(got, secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]));
        assert_eq!(
            s.after_snapshot(t, true, None),
            Duration::from_secs(1),
            "a status change resets"
        );
    }

    #[test]
    fn jitter_stays_between_the_step_and_the_cap_and_a_seed_repeats_it() {
        let config = Backoff {
            jitter_seed: Some(7),
            ..Backoff::default()
        };
        let run = || {
            let mut s = Schedule::new(config);
            (0..10).map(|_| s.after_failure()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let steps = secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]);
        for (d, step) in a.iter().zip(&steps) {
            assert!(
                d >= step && *d <= (*step * 2).min(Duration::from_secs(30)),
                "{d:?} for {step:?}"
            );
        }
        assert_ne!(a[..5], steps[..5], "jitter moved something");
    }

    #[test]
    fn odd_settings_are_made_sane() {
        let mut s = Schedule::new(Backoff {
            min_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(1),
            factor: 0.1,
            ..plain()
        });
        assert_eq!(s.after_failure(), Duration::from_secs(5));
        assert_eq!(s.after_failure(), Duration::from_secs(5));
    }

    #[test]
    fn progress_sleeps_long_while_the_end_is_far_and_short_around_it() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut after = |secs: u64, p: u8| s.after_snapshot(at(secs), false, Some(p)).as_secs_f64();
        // One value says nothing yet: backoff.
        assert_eq!(after(0, 0), 1.0);
        // 10 % reached around 10 s (halfway between the polls): 1 %/s, the end at 100 s. Half
        // of the 80 s left is 40 s, but the line was measured over 20 s only.
        assert_eq!(after(20, 10), 20.0);
        // 30 % around 30 s: still 1 %/s; half of the 60 s left.
        assert_eq!(after(40, 30), 30.0);
        // No news: the estimate stands; half of the 30 s left.
        assert_eq!(after(70, 30), 15.0);
        // Around the end: every near_end_delay (10 s), even though the backoff is at 16 s.
        assert_eq!(after(85, 30), 10.0);
        assert_eq!(after(100, 30), 10.0);
        // Late against the estimate: a tenth of the overrun, within 10 s and max_delay.
        assert_eq!(after(200, 30), 10.0);
        assert_eq!(after(300, 30), 20.0);
        assert_eq!(after(1000, 30), 30.0);
    }

    #[test]
    fn noisy_values_are_fitted_not_chased() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Values scattered around 1 %/s (reached around 10, 30, 50 and 70 s; the end at 100 s).
        for (t, p) in [(0, 0), (20, 14), (40, 26), (60, 54), (80, 66)] {
            s.after_snapshot(at(t), false, Some(p));
        }
        let end = s.state().track.unwrap().predicted_end().unwrap();
        let end = end.duration_since(t0).as_secs_f64();
        // The fit says 103.5 s; the last two values alone would say 127 s, the first two 71 s.
        assert!((100.0..=107.0).contains(&end), "estimated end {end}");
    }

    #[test]
    fn the_longest_progress_sleep_is_bounded() {
        let mut s = Schedule::new(Backoff {
            max_progress_delay: Duration::from_secs(60),
            ..plain()
        });
        let t0 = Instant::now();
        s.after_snapshot(t0, false, Some(0));
        // 1 % in 1,000 s: the end is half a day away, yet the watcher is back within a minute.
        let sleep = s.after_snapshot(t0 + Duration::from_secs(1000), false, Some(1));
        assert_eq!(sleep, Duration::from_secs(60));
    }

    #[test]
    fn the_near_end_delay_stays_within_the_backoff_bounds() {
        let mut s = Schedule::new(Backoff {
            max_delay: Duration::from_secs(4),
            ..plain()
        });
        let t0 = Instant::now();
        s.after_snapshot(t0, false, Some(0));
        // 90 % by about 5 s: the end is due; near_end_delay (10 s) is cut to max_delay.
        let sleep = s.after_snapshot(t0 + Duration::from_secs(10), false, Some(90));
        assert_eq!(sleep, Duration::from_secs(4));
    }

    /// A schedule that saw 0 % at `t0` and 10 % 20 s later: 1 %/s, the end at 100 s.
    fn rising(t0: Instant) -> Schedule {
        let mut s = Schedule::new(plain());
        s.after_snapshot(t0, false, Some(0));
        let sleep = s.after_snapshot(t0 + Duration::from_secs(20), false, Some(10));
        assert_eq!(sleep, Duration::from_secs(20));
        s
    }

    #[test]
    fn a_jump_brings_the_estimate_closer_and_a_drop_starts_over() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut s = rising(t0);
        // 90 % by about 25 s: the end is due, so the watcher polls every near_end_delay.
        assert_eq!(
            s.after_snapshot(at(30), false, Some(90)),
            Duration::from_secs(10)
        );
        // Back to 5 %: the line starts over, and says nothing yet: backoff (fourth step).
        assert_eq!(
            s.after_snapshot(at(40), false, Some(5)),
            Duration::from_secs(8)
        );
        let track = s.state().track.unwrap();
        assert_eq!((track.origin, track.last, track.line.n), (at(40), 5, 1));
    }

    #[test]
    fn a_status_change_forgets_the_progress_of_the_status_before() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut s = rising(t0);
        assert_eq!(
            s.after_snapshot(at(21), true, Some(50)),
            Duration::from_secs(1)
        );
        let track = s.state().track.unwrap();
        assert_eq!((track.origin, track.last, track.line.n), (at(21), 50, 1));
    }

    proptest::proptest! {
        #[test]
        fn every_delay_stays_within_the_configured_bounds(
            bounds in (1u64..60_000, 0u64..600_000, 0u64..600_000, 0u64..1_000_000),
            // Any floats, infinities and NaN included.
            line in (
                proptest::prelude::any::<u32>(),
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
            ),
            last in proptest::prelude::any::<u8>(),
            polls in proptest::collection::vec(
                (0u64..100_000, proptest::option::of(0u8..=100), proptest::bool::weighted(0.05)),
                1..100,
            ),
        ) {
            let ms = Duration::from_millis;
            let config = Backoff {
                min_delay: ms(bounds.0),
                max_delay: ms(bounds.1),
                near_end_delay: ms(bounds.2),
                max_progress_delay: ms(bounds.3),
                jitter_seed: Some(1),
                ..Backoff::default()
            };
            let cap = config.max_delay.max(config.min_delay);
            let near = config.near_end_delay.clamp(config.min_delay, cap);
            let longest = cap.max(config.max_progress_delay.max(near));
            // Whatever line a saved state brings, sane or not.
            let (n, mean_x, mean_y, cxx, cxy) = line;
            let mut now = Instant::now();
            let track = Track {
                origin: now,
                seen: now,
                last,
                line: Line { n, mean_x, mean_y, cxx, cxy },
            };
            let state = ScheduleState { resets: 0, steps: 0, track: Some(track) };
            let mut s = Schedule::resume(config, state);
            for (gap_ms, progress, changed) in polls {
                now += ms(gap_ms);
                let delay = s.after_snapshot(now, changed, progress);
                proptest::prop_assert!(
                    delay >= config.min_delay && delay <= longest,
                    "{delay:?} outside {:?}..={longest:?}", config.min_delay
                );
            }
        }
    }

    #[test]
    fn a_line_that_does_not_rise_says_nothing() {
        let mut line = Line::default();
        assert_eq!(line.reaches_100(), None);
        line.add(0.0, 40.0);
        assert_eq!(line.reaches_100(), None);
        // Two values at one instant: no time to measure a rate over.
        line.add(0.0, 50.0);
        assert_eq!(line.reaches_100(), None);
        line.add(10.0, 60.0);
        assert!(line.reaches_100().is_some_and(|at| at > 10.0));
    }

    #[test]
    fn progress_guidance_can_be_turned_off() {
        let mut s = Schedule::new(Backoff {
            progress_guided: false,
            ..plain()
        });
        let t0 = Instant::now();
        s.after_snapshot(t0, false, Some(0));
        assert_eq!(
            s.after_snapshot(t0 + Duration::from_secs(100), false, Some(10)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn resume_rebuilds_the_same_sequence() {
        let config = Backoff {
            jitter_seed: Some(3),
            ..Backoff::default()
        };
        let mut a = Schedule::new(config);
        let t = Instant::now();
        a.after_failure();
        a.after_snapshot(t, true, Some(10));
        a.after_failure();
        let mut b = Schedule::resume(config, a.state());
        assert_eq!(b.state(), a.state());
        let next_a: Vec<_> = (0..5).map(|_| a.after_failure()).collect();
        let next_b: Vec<_> = (0..5).map(|_| b.after_failure()).collect();
        assert_eq!(next_a, next_b);
    }
}
