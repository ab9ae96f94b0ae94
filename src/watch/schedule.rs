//! When to poll next.
//!
//! The cadence is exponential backoff, built with `backon`: `min_delay`, doubling, up to
//! `max_delay`, from `min_delay` again after a status change. It is what the watcher does when
//! the task says nothing about its end, and after failed polls.
//!
//! **Progress** can only lengthen a sleep. Once the progress has risen while the status stayed
//! the same, the schedule estimates when the task ends: the average rate since the first value
//! seen in this status, with each new value taken as reached halfway between the poll that
//! showed it and the poll before, extrapolated to 100 %. While that end is far, the watcher
//! sleeps half of the time left instead of the backoff delay, but never longer than the time
//! over which the rate was measured (an early, noisy estimate cannot send it away for long) nor
//! than `max_progress_delay`. Near and after the estimated end the backoff cadence applies, so a
//! good estimate saves requests without costing promptness, and a bad one costs at most one
//! long sleep. Averaging over the whole run copes with noisy and uneven reports; a jump brings
//! the estimate closer; a value that goes backwards starts it again.
//!
//! The delay policy is a value of its own, apart from the stop policy (the deadline), which the
//! engine applies by clamping whatever delay this returns.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// How the delays between polls are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay, and the delay after a status change. Default 1 s.
    pub min_delay: Duration,
    /// The longest delay of the exponential backoff, jitter included. Default 30 s.
    pub max_delay: Duration,
    /// How much each backoff delay grows over the one before. Default 2.
    pub factor: f32,
    /// Adds a random part of up to 100 % to each backoff delay (capped at `max_delay`), so that
    /// many waiters started together spread out. Default on.
    pub jitter: bool,
    /// Seeds the jitter, for reproducible delays in tests. Default: a random seed.
    pub jitter_seed: Option<u64>,
    /// Lets the task's progress lengthen sleeps while its estimated end is far: fewer requests
    /// for long tasks, the same promptness near the end. Default on.
    pub progress_guided: bool,
    /// The longest progress-guided sleep: a task that ends far earlier than its progress
    /// promised is still seen within this time. Default 5 minutes.
    pub max_progress_delay: Duration,
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
            max_progress_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    fn builder(&self, resets: u64) -> ExponentialBuilder {
        let min = self.min_delay;
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(self.max_delay.max(min))
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

/// Progress seen in the current status: the first value, and when the current value was
/// first seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Track {
    pub(crate) first: (Instant, u8),
    /// The current value, and when it was reached: halfway between the poll that first
    /// showed it and the poll before.
    pub(crate) current: (Instant, u8),
    /// The latest poll that showed a progress.
    pub(crate) seen: Instant,
}

impl Track {
    /// When the task should reach 100 %, at the average rate since the first value.
    fn predicted_end(&self) -> Option<Instant> {
        let ((t0, p0), (t1, p1)) = (self.first, self.current);
        let elapsed = t1.checked_duration_since(t0)?.as_secs_f64();
        if p1 <= p0 || elapsed <= 0.0 {
            return None;
        }
        let rate = f64::from(p1 - p0) / elapsed;
        let left = f64::from(100 - p1.min(100)) / rate;
        Some(t1 + Duration::try_from_secs_f64(left).unwrap_or(Duration::MAX / 4))
    }
}

/// The delay sequence of one wait.
#[derive(Debug)]
pub(crate) struct Schedule {
    config: Backoff,
    delays: ExponentialBackoff,
    resets: u64,
    /// Backoff delays taken since the last reset (to rebuild the sequence on resume).
    steps: u32,
    track: Option<Track>,
}

/// What a schedule carries from one process to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScheduleState {
    pub(crate) resets: u64,
    pub(crate) steps: u32,
    pub(crate) track: Option<Track>,
}

impl Schedule {
    pub(crate) fn new(config: Backoff) -> Self {
        Self {
            delays: config.builder(0).build(),
            config,
            resets: 0,
            steps: 0,
            track: None,
        }
    }

    pub(crate) fn config(&self) -> &Backoff {
        &self.config
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
        schedule.track = state.track;
        schedule
    }

    pub(crate) fn state(&self) -> ScheduleState {
        ScheduleState {
            resets: self.resets,
            steps: self.steps,
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
        }
        let backoff = self.backoff();
        if !self.config.progress_guided {
            return backoff;
        }
        self.observe(now, progress);
        let guided = self.track.and_then(|track| {
            let left = track.predicted_end()?.checked_duration_since(now)?;
            // Trust the estimate no further ahead than it was measured: an early, noisy rate
            // cannot send the watcher away for long.
            let measured = now.saturating_duration_since(track.first.0);
            Some((left / 2).min(measured).min(self.config.max_progress_delay))
        });
        // Progress only ever lengthens a sleep: near and after the estimated end, the backoff's
        // cadence applies, so a good estimate saves requests without costing promptness.
        guided.map_or(backoff, |guided| guided.max(backoff))
    }

    /// The delay after a failed poll.
    pub(crate) fn after_failure(&mut self) -> Duration {
        self.backoff()
    }

    fn observe(&mut self, now: Instant, progress: Option<u8>) {
        let Some(p) = progress else {
            return;
        };
        let fresh = Track {
            first: (now, p),
            current: (now, p),
            seen: now,
        };
        self.track = Some(match self.track {
            // The first value, or one that went backwards: start again from here.
            None => fresh,
            Some(track) if p < track.current.1 => fresh,
            Some(track) if p > track.current.1 => {
                let reached = track.seen + now.saturating_duration_since(track.seen) / 2;
                Track {
                    current: (reached, p),
                    seen: now,
                    ..track
                }
            }
            Some(track) => Track { seen: now, ..track },
        });
    }

    fn backoff(&mut self) -> Duration {
        let cap = self.config.max_delay.max(self.config.min_delay);
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
    fn progress_lengthens_sleeps_while_the_end_is_far() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(
            s.after_snapshot(at(0), false, Some(0)),
            Duration::from_secs(1)
        );
        // 10 % reached around 5 s (halfway between the polls): 2 %/s, the end at 50 s. Half of
        // the 40 s left is 20 s, but the rate was measured over 10 s only.
        assert_eq!(
            s.after_snapshot(at(10), false, Some(10)),
            Duration::from_secs(10)
        );
        // No news: the estimate stands; half of the 30 s left.
        assert_eq!(
            s.after_snapshot(at(20), false, Some(10)),
            Duration::from_secs(15)
        );
        // Near the end the backoff's cadence (8 s) is longer than half of the 15 s left.
        assert_eq!(
            s.after_snapshot(at(35), false, Some(10)),
            Duration::from_secs(8)
        );
        // Past the estimated end: backoff.
        assert_eq!(
            s.after_snapshot(at(60), false, Some(10)),
            Duration::from_secs(16)
        );
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
    fn a_jump_brings_the_estimate_closer_and_a_drop_starts_over() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        s.after_snapshot(at(0), false, Some(0));
        assert_eq!(
            s.after_snapshot(at(10), false, Some(10)),
            Duration::from_secs(10)
        );
        // 90 % by about 15 s: the end is due, so the backoff's cadence applies.
        assert_eq!(
            s.after_snapshot(at(20), false, Some(90)),
            Duration::from_secs(4)
        );
        // Back to 5 %: the estimate starts over, and says nothing yet.
        assert_eq!(
            s.after_snapshot(at(24), false, Some(5)),
            Duration::from_secs(8)
        );
        assert_eq!(s.state().track.unwrap().first, (at(24), 5));
    }

    #[test]
    fn a_status_change_forgets_the_progress_of_the_status_before() {
        let mut s = Schedule::new(plain());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        s.after_snapshot(at(0), false, Some(0));
        assert_eq!(
            s.after_snapshot(at(10), false, Some(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            s.after_snapshot(at(11), true, Some(50)),
            Duration::from_secs(1)
        );
        assert_eq!(s.state().track.unwrap().first, (at(11), 50));
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
