//! When to poll next.
//!
//! The cadence is exponential backoff, built with `backon`: `min_delay`, doubling, up to
//! `max_delay`. A status change does not start it again: a task that leaves PENDING says
//! nothing about when it will end, and the progress line starts over with the new status
//! anyway; only a maintenance window's opening starts it again. It is what the watcher
//! does when the task says nothing about its end. A failed poll does not move it: the polls
//! after failures in a row start from `min_delay` and grow by the same factor
//! ([`Schedule::after_error`]).
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
//! - far from it, the watcher sleeps a third of the time left, and no longer than the time since
//!   the first value (an early estimate cannot send it away for long) nor the far cap, unless
//!   the near-end delay below is longer;
//! - around it, it polls every `near_end_delay`;
//! - late against it, a tenth of the overrun, within `near_end_delay` and `max_delay`; and
//!   each poll that finds the task late with no new value doubles the near-end delay for the
//!   rest of the status (up to `max_delay`), so an estimate that keeps slipping costs no more
//!   than the backoff.
//!
//! **The lateness promise.** Every sleep this returns is at most
//! [`PollPolicy::max_lateness`]: `max_delay`, or with progress guidance the far cap
//! (`max_progress_delay`, by default 1.5 times `max_delay`) when that is longer. A task that ends
//! (SUCCESS or FAILED, at any progress) is therefore seen within that time of its end, plus
//! the time of the request that sees it, while the service answers. The engine adds only two
//! exceptions: a server's `Retry-After`, and the stretched sleeps of a PENDING task whose
//! maintenance window is closed ([`Schedule::behind_window`], at most `max_window_delay`).
//!
//! The delay policy is a value of its own, apart from the stop policy (the deadline), which the
//! engine applies by clamping whatever delay this returns.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff};
use tokio::time::Instant;

use super::policy::PollPolicy;
pub(crate) use super::policy::MIN_DELAY_FLOOR;

/// How much less each value weighs for every value reported after it: the line follows about
/// the last three values, enough to average out noise and few enough to follow a change of
/// pace.
pub(crate) const FORGET: f64 = 0.8;

/// Progress seen in the current status, and a line through it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Track {
    /// When the first value was seen; the line's times are seconds after it.
    pub(crate) origin: Instant,
    /// The size of the latest rise, in percent.
    pub(crate) step: u8,
    /// How many polls found the task late against its estimate, with no new value to refresh
    /// it: each doubles the near-end
    /// delay (up to `max_delay`), so an estimate that keeps slipping costs no more than the
    /// backoff.
    pub(crate) slips: u8,
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
            step: 1,
            slips: 0,
            seen: now,
            last: p,
            line,
        }
    }

    /// When the task should reach `target` percent, on the line through the values seen so
    /// far.
    ///
    /// The line's slope is the rate; but when the latest value has stood still for longer than
    /// that rate allows (a next step as large as the latest would have shown by the latest
    /// poll), the rate is at most what reaches that next step at that poll.
    fn predicted_end(&self, target: u8) -> Option<Instant> {
        let line = &self.line;
        let mut slope = line.slope()?;
        let seen = self
            .seen
            .saturating_duration_since(self.origin)
            .as_secs_f64();
        let step = f64::from(self.step.max(1));
        if seen > line.mean_x {
            let stalled = (f64::from(self.last) + step - line.mean_y) / (seen - line.mean_x);
            if stalled > 0.0 {
                slope = slope.min(stalled);
            }
        }
        let at = line.mean_x + (f64::from(target) - line.mean_y) / slope;
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
    config: PollPolicy,
    delays: ExponentialBackoff,
    resets: u64,
    /// Backoff delays taken since the last reset (to rebuild the sequence on resume).
    steps: u32,
    /// When the current status was first seen.
    status_since: Option<Instant>,
    track: Option<Track>,
    /// The progress the wait waits for: 100 unless its condition is reached earlier.
    target: u8,
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
    pub(crate) fn new(config: PollPolicy) -> Self {
        Self {
            delays: config.builder(0).build(),
            config,
            resets: 0,
            steps: 0,
            status_since: None,
            track: None,
            target: 100,
        }
    }

    /// Aims the progress guidance at `target` percent instead of the task's end: the
    /// estimated time of `target` is where the polls gather.
    pub(crate) fn aim_at(&mut self, target: u8) {
        self.target = target.min(100);
    }

    /// A schedule that goes on from `state`.
    pub(crate) fn resume(config: PollPolicy, state: ScheduleState) -> Self {
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
            self.track = None;
            self.status_since = None;
        }
        self.status_since.get_or_insert(now);
        let backoff = self.backoff();
        if !self.config.progress_guided {
            return backoff;
        }
        let rose = self.observe(now, progress);
        let target = self.target;
        let Some(end) = self.track.and_then(|t| t.predicted_end(target)) else {
            return backoff;
        };
        let Some(track) = self.track.as_mut() else {
            return backoff;
        };
        let config = &self.config;
        let near = config
            .near()
            .saturating_mul(1 << track.slips.min(16))
            .min(config.cap());
        match end
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
        {
            // Far from the end: a third of the time left, trusted no further ahead than the time
            // since the first value, and never longer than the far cap.
            Some(left) => (left / 3)
                .min(now.saturating_duration_since(track.origin))
                .min(config.far())
                .max(near),
            // Late against the estimate: the later, the sparser. Without a new value to
            // refresh it, the estimate has slipped.
            None => {
                if !rose {
                    track.slips = track.slips.saturating_add(1);
                }
                (now.saturating_duration_since(end) / OVERRUN_SHARE).clamp(near, config.cap())
            }
        }
    }

    /// The delay for a PENDING task whose maintenance window is closed until `opens`, given
    /// the `delay` [`after_snapshot`](Self::after_snapshot) chose: stretched the longer the
    /// task has been PENDING (up to `max_window_delay`), and cut so that a poll lands just
    /// after the window opens, from where the backoff starts again.
    pub(crate) fn behind_window(
        &mut self,
        now: Instant,
        opens: Instant,
        delay: Duration,
    ) -> Duration {
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

    /// The delay after a poll that brought no news of its own (an answer older than the
    /// wait's, a retry another wait makes): the next step of the backoff.
    pub(crate) fn after_no_news(&mut self) -> Duration {
        self.backoff()
    }

    /// The delay after the `failures`th failed poll in a row: `min_delay`, growing by the
    /// backoff's factor with each failure after the first, up to `max_delay`, with the
    /// backoff's jitter. A failed poll brought no news, so the poll the schedule planned is
    /// still owed: one failure near a task's end costs about `min_delay`, not the backoff's
    /// longest sleep, and the schedule's own sequence does not move.
    pub(crate) fn after_error(&self, failures: u32) -> Duration {
        let cap = self.config.cap();
        // Past a few dozen failures any sane factor is at the cap: the loop stays short
        // however long a service has been failing.
        let nth = usize::try_from(failures.clamp(1, 64) - 1).unwrap_or(0);
        self.config
            .builder(self.resets)
            .build()
            .nth(nth)
            .unwrap_or(cap)
            .clamp(self.config.min_delay, cap)
    }

    /// Takes in the progress a poll showed; true when it rose.
    fn observe(&mut self, now: Instant, progress: Option<u8>) -> bool {
        let Some(p) = progress else {
            return false;
        };
        let rose = self.track.is_some_and(|t| p > t.last);
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
                    track.step = p - track.last;
                    track.last = p;
                }
                track.seen = now;
                track
            }
        });
        rose
    }

    fn backoff(&mut self) -> Duration {
        let cap = self.config.cap();
        self.steps = self.steps.saturating_add(1);
        // Clamped again: backon computes in f32, which can land a hair outside the bounds.
        self.delays
            .next()
            .unwrap_or(cap)
            .clamp(self.config.min_delay, cap)
    }

    /// Starts the backoff again from the minimum delay.
    pub(crate) fn restart(&mut self) {
        self.resets = self.resets.saturating_add(1);
        self.steps = 0;
        self.delays = self.config.builder(self.resets).build();
    }
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "virtual time is exact: the delays compared are whole seconds"
)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    fn plain() -> PollPolicy {
        PollPolicy {
            jitter: false,
            ..PollPolicy::default()
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
            Duration::from_secs(30),
            "a status change does not start the backoff again"
        );
    }

    #[test]
    fn jitter_stays_between_the_step_and_the_cap_and_a_seed_repeats_it() {
        let config = PollPolicy {
            jitter_seed: Some(7),
            ..PollPolicy::default()
        };
        let run = || {
            let mut s = Schedule::new(config);
            (0..10).map(|_| s.after_no_news()).collect::<Vec<_>>()
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
    fn failures_in_a_row_back_off_from_the_minimum_and_leave_the_backoff_where_it_was() {
        let mut s = Schedule::new(plain());
        let t = Instant::now();
        for _ in 0..6 {
            s.after_snapshot(t, false, None);
        }
        let failures: Vec<_> = (1..=8).map(|n| s.after_error(n)).collect();
        assert_eq!(
            failures,
            secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        );
        assert_eq!(s.after_error(u32::MAX), Duration::from_secs(30));
        assert_eq!(s.after_error(0), Duration::from_secs(1), "as the first");
        assert_eq!(s.state().steps, 6, "failures take no step of the backoff");
    }

    #[test]
    fn odd_settings_are_made_sane() {
        let mut s = Schedule::new(PollPolicy {
            min_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(1),
            factor: 0.1,
            ..plain()
        });
        assert_eq!(s.after_no_news(), Duration::from_secs(5));
        assert_eq!(s.after_no_news(), Duration::from_secs(5));
    }

    /// Feeds `(seconds, progress)` polls to a fresh schedule; the delays it chose.
    fn delays(config: PollPolicy, polls: &[(u64, u8)]) -> Vec<f64> {
        let mut s = Schedule::new(config);
        let t0 = Instant::now();
        polls
            .iter()
            .map(|&(t, p)| {
                s.after_snapshot(t0 + Duration::from_secs(t), false, Some(p))
                    .as_secs_f64()
            })
            .collect()
    }

    #[test]
    fn progress_sleeps_long_while_the_end_is_far_and_short_around_it() {
        // 1 %/s from 0 s: the end at 100 s.
        let got = delays(
            plain(),
            &[(0, 0), (20, 10), (40, 30), (70, 60), (85, 75), (95, 85)],
        );
        // One value says nothing yet: backoff. Then a third of the time left, but no further
        // ahead than the time since the first value (20 s) and never past the far cap (45 s).
        assert_eq!(got[0], 1.0);
        assert_eq!(got[1], 80.0f64.min(20.0 * 3.0) / 3.0);
        let got = delays(
            plain(),
            &[(0, 0), (100, 10), (200, 20), (300, 30), (400, 40)],
        );
        // 0.1 %/s: 600 s left; a third is 200 s, capped at 1.5 x max_delay.
        assert_eq!(got[4], 45.0);
        // Around the end: every half max_delay (15 s).
        let got = delays(plain(), &[(0, 0), (50, 50), (90, 90)]);
        assert_eq!(got[2], 15.0);
    }

    /// Polls a task that rises 0.1 %/s from 0 until it shows `target`, with the schedule
    /// aimed at `aim`; how long after the task reached `target` the poll that saw it came.
    fn seen_after(aim: u8, target: u8) -> f64 {
        let mut s = Schedule::new(plain());
        s.aim_at(aim);
        let t0 = Instant::now();
        let mut t = 0.0f64;
        loop {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let p = (t / 10.0).min(100.0) as u8;
            if p >= target {
                return t - f64::from(target) * 10.0;
            }
            let at = t0 + Duration::from_secs_f64(t);
            t += s.after_snapshot(at, false, Some(p)).as_secs_f64();
        }
    }

    #[test]
    fn a_wait_for_a_progress_aims_at_the_time_of_that_progress() {
        // N % at N x 10 s. Aimed at the end, the polls before N are a third of the time
        // left to 1000 s, up to the far cap (45 s); aimed at N, they gather around it.
        let (mut aimed, mut unaimed) = (Vec::new(), Vec::new());
        for n in (20..=80).step_by(5) {
            aimed.push(seen_after(n, n));
            unaimed.push(seen_after(100, n));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / 13.0;
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        // Around its estimated time, the target is polled every near-end delay (15 s).
        assert!(max(&aimed) <= 15.0, "{aimed:?}");
        assert!(mean(&aimed) < mean(&unaimed) / 2.0, "{aimed:?} {unaimed:?}");
        // Whatever the aim, no sleep breaks the lateness promise.
        assert!(max(&unaimed) <= 45.0, "{unaimed:?}");
    }

    #[test]
    fn a_task_late_against_its_estimate_is_polled_more_sparsely_the_later_it_is() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        s.after_snapshot(at(0), false, Some(0));
        s.after_snapshot(at(40), false, Some(40));
        s.after_snapshot(at(80), false, Some(80));
        s.after_snapshot(at(100), false, Some(99));
        let mut after = |t: u64| s.after_snapshot(at(t), false, Some(99)).as_secs_f64();
        // At 99 % the end was due around 100 s: near-end polls, then sparser with the
        // overrun, up to max_delay.
        let got: Vec<f64> = [110, 300, 600, 1000, 3000]
            .into_iter()
            .map(&mut after)
            .collect();
        assert_eq!(got[0], 15.0);
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        assert_eq!(got[4], 30.0);
    }

    #[test]
    fn a_stall_pushes_the_estimated_end_out() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // 30 % at once, 40 % around 10 s (between the polls): 1 %/s, the end at about 70 s.
        s.after_snapshot(at(0), false, Some(30));
        s.after_snapshot(at(20), false, Some(40));
        let end = |s: &Schedule| {
            let end = s.state().track.unwrap().predicted_end(100).unwrap();
            end.duration_since(t0).as_secs_f64()
        };
        let before = end(&s);
        assert!((60.0..=80.0).contains(&before), "{before}");
        // Still 40 % at 200 s: the next step would have shown long ago, so the end moves out.
        s.after_snapshot(at(200), false, Some(40));
        assert!(end(&s) > 400.0, "{}", end(&s));
    }

    #[test]
    fn a_front_loaded_task_is_followed_by_its_recent_pace() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // 80 % in the first 100 s, then 2 % per 100 s.
        for (t, p) in [(0, 0), (25, 20), (50, 40), (75, 60), (100, 80)] {
            s.after_snapshot(at(t), false, Some(p));
        }
        for k in 1..=6u8 {
            s.after_snapshot(at(100 + 100 * u64::from(k)), false, Some(80 + 2 * k));
        }
        // 92 % at 700 s, 2 % per 100 s: the end is some 400 s away. A line weighting all the
        // values alike would have it due at 575 s, already past.
        let end = s.state().track.unwrap().predicted_end(100).unwrap();
        let left = end.saturating_duration_since(at(700)).as_secs_f64();
        assert!(left > 100.0, "{left}");
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
        let end = s.state().track.unwrap().predicted_end(100).unwrap();
        let end = end.duration_since(t0).as_secs_f64();
        // The last two values alone would say 127 s, the first two 71 s.
        assert!((90.0..=120.0).contains(&end), "estimated end {end}");
    }

    #[test]
    fn a_drop_starts_over_and_a_status_change_forgets() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        s.after_snapshot(at(0), false, Some(0));
        s.after_snapshot(at(20), false, Some(10));
        s.after_snapshot(at(30), false, Some(5));
        let track = s.state().track.unwrap();
        assert_eq!((track.origin, track.last, track.line.n), (at(30), 5, 1));
        // One value in the new status says nothing yet: the backoff goes on (1, 2, 4, 8 s).
        assert_eq!(
            s.after_snapshot(at(31), true, Some(50)),
            Duration::from_secs(8)
        );
        let track = s.state().track.unwrap();
        assert_eq!((track.origin, track.last, track.line.n), (at(31), 50, 1));
    }

    #[test]
    fn a_line_that_does_not_rise_says_nothing() {
        let mut line = Line::default();
        assert_eq!(line.slope(), None);
        line.add(0.0, 40.0);
        assert_eq!(line.slope(), None);
        // Two values at one instant: no time to measure a rate over.
        line.add(0.0, 50.0);
        assert_eq!(line.slope(), None);
        line.add(10.0, 60.0);
        assert!(line.slope().is_some_and(|r| r > 0.0));
    }

    #[test]
    fn progress_guidance_can_be_turned_off() {
        let config = PollPolicy {
            progress_guided: false,
            ..plain()
        };
        assert_eq!(delays(config, &[(0, 0), (100, 10)]), [1.0, 2.0]);
        assert_eq!(config.max_lateness(), Duration::from_secs(30));
    }

    #[test]
    fn behind_a_closed_window_the_sleeps_stretch_only_after_a_while() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let opens = at(3 * 3600);
        let mut step = |t: u64| {
            let delay = s.after_snapshot(at(t), false, Some(0));
            s.behind_window(at(t), opens, delay).as_secs_f64()
        };
        // The first two minutes: the backoff, as if there were no window.
        let early: Vec<f64> = [0, 1, 3, 7, 15, 31, 61, 91]
            .into_iter()
            .map(&mut step)
            .collect();
        assert_eq!(early, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        // Then a quarter of the time PENDING, up to max_window_delay (5 min).
        assert_eq!(step(240), 60.0);
        assert_eq!(step(3600), 300.0);
        // Never past the opening: a poll lands a second after it.
        assert_eq!(step(3 * 3600 - 100), 101.0);
        // And the backoff starts again from there.
        assert_eq!(
            s.after_snapshot(at(3 * 3600 + 1), false, Some(0)),
            Duration::from_secs(1)
        );
    }

    /// Random settings, some absurd: delays from 0 to 10 min, any factor.
    fn settings() -> impl proptest::strategy::Strategy<Value = PollPolicy> {
        use proptest::prelude::*;
        let ms = || (0u64..600_000).prop_map(Duration::from_millis);
        (
            (
                ms(),
                ms(),
                proptest::option::of(ms()),
                proptest::option::of(ms()),
                ms(),
            ),
            (any::<f32>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((min, max, near, far, window), (factor, jitter, guided))| PollPolicy {
                    min_delay: min,
                    max_delay: max,
                    near_end_delay: near,
                    max_progress_delay: far,
                    max_window_delay: window,
                    factor,
                    jitter,
                    jitter_seed: Some(1),
                    progress_guided: guided,
                },
            )
    }

    /// A task's history as its polls see it: progress that rises in jumps, stalls, goes
    /// backwards, or is missing, and status changes now and then.
    fn history() -> impl proptest::strategy::Strategy<Value = Vec<(u64, Option<i16>, bool)>> {
        proptest::collection::vec(
            (
                0u64..200_000,
                proptest::option::weighted(0.9, -20i16..=60),
                proptest::bool::weighted(0.05),
            ),
            1..120,
        )
    }

    proptest::proptest! {
        /// The lateness promise: whatever the settings and the task's history, no planned
        /// sleep is longer than `max_lateness`, and none behind a closed window longer than
        /// `max_window_delay` (or `max_lateness`, when that is longer) or past the opening
        /// by more than `min_delay`.
        #[test]
        fn no_sleep_exceeds_the_lateness_promise(
            config in settings(),
            polls in history(),
            window in proptest::option::of(0u64..3_600_000),
            target in 0u8..=100,
        ) {
            let bound = config.max_lateness();
            let floor = config.min_delay.min(bound);
            let mut s = Schedule::new(config);
            // Whatever progress the wait is for.
            s.aim_at(target);
            let mut now = Instant::now();
            let mut progress: i16 = 0;
            for (gap_ms, change, status_changed) in polls {
                now += Duration::from_millis(gap_ms);
                // Rises, stalls (a change of 0) and drops; clamped to what the model reports.
                let shown = change.map(|c| {
                    progress = (progress + c).clamp(0, 100);
                    u8::try_from(progress).unwrap()
                });
                let delay = s.after_snapshot(now, status_changed, shown);
                proptest::prop_assert!(
                    delay >= floor && delay <= bound,
                    "{delay:?} outside {floor:?}..={bound:?}"
                );
                if let Some(opens_ms) = window {
                    let opens = now + Duration::from_millis(opens_ms);
                    let stretched = s.behind_window(now, opens, delay);
                    let cap = config.max_window_delay.max(bound);
                    let latest = opens.duration_since(now) + config.min_delay;
                    proptest::prop_assert!(
                        stretched <= cap && stretched <= latest.max(delay),
                        "{stretched:?} behind a window opening in {opens_ms} ms"
                    );
                }
            }
        }

        #[test]
        fn every_delay_stays_within_the_bounds_whatever_line_a_saved_state_brings(
            config in settings(),
            line in (
                proptest::prelude::any::<u32>(),
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
                proptest::num::f64::ANY,
            ),
            (step, last) in (proptest::prelude::any::<u8>(), proptest::prelude::any::<u8>()),
            polls in history(),
        ) {
            let bound = config.max_lateness();
            let (n, mean_x, mean_y, cxx, cxy) = line;
            let mut now = Instant::now();
            let track = Track {
                origin: now,
                step,
                slips: 0,
                seen: now,
                last,
                line: Line { n, mean_x, mean_y, cxx, cxy },
            };
            let state = ScheduleState { resets: 0, steps: 0, status_since: None, track: Some(track) };
            let mut s = Schedule::resume(config, state);
            for (gap_ms, change, changed) in polls {
                now += Duration::from_millis(gap_ms);
                let shown = change.map(|c| u8::try_from(c.clamp(0, 100)).unwrap());
                let delay = s.after_snapshot(now, changed, shown);
                proptest::prop_assert!(delay <= bound, "{delay:?} over {bound:?}");
            }
        }
    }

    #[test]
    fn resume_rebuilds_the_same_sequence() {
        let config = PollPolicy {
            jitter_seed: Some(3),
            ..PollPolicy::default()
        };
        let mut a = Schedule::new(config);
        let t = Instant::now();
        a.after_no_news();
        a.after_snapshot(t, true, Some(10));
        a.after_no_news();
        let mut b = Schedule::resume(config, a.state());
        assert_eq!(b.state(), a.state());
        let next_a: Vec<_> = (0..5).map(|_| a.after_no_news()).collect();
        let next_b: Vec<_> = (0..5).map(|_| b.after_no_news()).collect();
        assert_eq!(next_a, next_b);
    }
}
