//! When to poll next: exponential delays built with `backon`, reset on a status change.
//!
//! The delay policy is a value of its own, apart from the stop policy (the deadline), which the
//! engine applies by clamping whatever delay this returns.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The shape of the exponential delays between polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay, and the delay after a reset. Default 1 s.
    pub min_delay: Duration,
    /// The longest delay, jitter included. Default 30 s.
    pub max_delay: Duration,
    /// How much each delay grows over the one before. Default 2.
    pub factor: f32,
    /// Adds a random part of up to 100 % to each delay (capped at `max_delay`), so that many
    /// waiters started together spread out. Default on.
    pub jitter: bool,
    /// Seeds the jitter, for reproducible delays in tests. Default: a random seed.
    pub jitter_seed: Option<u64>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
            jitter_seed: None,
        }
    }
}

impl Backoff {
    fn builder(&self, resets: u64) -> ExponentialBuilder {
        let min = self.min_delay;
        let max = self.max_delay.max(min);
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
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

/// The delay sequence of one wait.
#[derive(Debug)]
pub(crate) struct Schedule {
    config: Backoff,
    delays: ExponentialBackoff,
    resets: u64,
}

impl Schedule {
    pub(crate) fn new(config: Backoff) -> Self {
        Self {
            delays: config.builder(0).build(),
            config,
            resets: 0,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self.config.max_delay.max(self.config.min_delay);
        self.delays.next().unwrap_or(cap).min(cap)
    }

    /// Starts the sequence again from the minimum delay.
    pub(crate) fn reset(&mut self) {
        self.resets += 1;
        self.delays = self.config.builder(self.resets).build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn doubles_from_min_to_max_without_jitter() {
        let mut s = Schedule::new(Backoff {
            jitter: false,
            ..Backoff::default()
        });
        let got: Vec<_> = (0..8).map(|_| s.next_delay()).collect();
        assert_eq!(got, secs(&[1, 2, 4, 8, 16, 30, 30, 30]));
        s.reset();
        assert_eq!(s.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_the_step_and_the_cap_and_a_seed_repeats_it() {
        let config = Backoff {
            jitter_seed: Some(7),
            ..Backoff::default()
        };
        let run = || {
            let mut s = Schedule::new(config);
            (0..10).map(|_| s.next_delay()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let steps = secs(&[1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
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
            jitter: false,
            jitter_seed: None,
        });
        assert_eq!(s.next_delay(), Duration::from_secs(5));
        assert_eq!(s.next_delay(), Duration::from_secs(5));
    }
}
