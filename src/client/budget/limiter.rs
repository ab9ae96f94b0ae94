//! The adaptive limiter: a plain function of the time and the answers, with no clock, lock or
//! task of its own. The budget calls it with `now` and the answers it sees; tests drive it the
//! same way, through patterns of refusals, without a runtime.
//!
//! Its rule is AWS's adaptive retry mode (a CUBIC curve, cut by throttles of requests sent
//! after the last cut), as the `client::budget` module docs describe, with AWS's constants.
//!
//! The limiter also keeps the share refused and the rate accepted over the last seconds
//! (answers weighing less by e every [`TAU`]).

use std::time::Duration;

use tokio::time::Instant;

/// How much the rate is cut on a throttle (AWS's `BETA`).
pub(crate) const BETA: f64 = 0.7;
/// How fast the rate grows back after a cut (AWS's `SCALE_CONSTANT`), in requests per second
/// per second cubed.
pub(crate) const SCALE: f64 = 0.4;
/// The weight of the latest half-second in the measured sending rate (AWS's `SMOOTH`).
const SMOOTH: f64 = 0.8;
/// The lowest rate the limiter goes down to, in requests per second (AWS's `MIN_FILL_RATE`).
pub(crate) const MIN_RATE: f64 = 0.5;
/// The window over which the sending rate is counted.
const WINDOW: Duration = Duration::from_millis(500);
/// How long the share of refusals is remembered: an answer weighs less by e every `TAU`.
pub(crate) const TAU: Duration = Duration::from_secs(2);

/// A token bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) rate: f64,
    pub(crate) capacity: f64,
    pub(crate) tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        Self {
            rate,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// An empty one.
    fn empty(rate: f64, now: Instant) -> Self {
        let mut bucket = Self::new(rate, rate.max(1.0), now);
        bucket.tokens = 0.0;
        bucket
    }

    pub(crate) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// How long until a token is there (zero when one is).
    pub(crate) fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            // A rate so low that the wait overflows a Duration waits a day, then looks again.
            Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(86_400))
        }
    }
}

/// The sending rate, counted per window and smoothed.
#[derive(Debug)]
struct Meter {
    window_start: Instant,
    count: u32,
    rate: f64,
}

impl Meter {
    /// The rate sent: the smoothed one, or while no window has closed yet, the current
    /// window's count over its length so far (at least a tenth of a window).
    fn rate_at(&self, now: Instant) -> f64 {
        if self.rate > 0.0 {
            return self.rate;
        }
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .max(WINDOW / 10);
        f64::from(self.count) / elapsed.as_secs_f64()
    }

    fn sent(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let latest = f64::from(self.count) / elapsed.as_secs_f64();
            self.rate = SMOOTH * latest + (1.0 - SMOOTH) * self.rate;
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
    }
}

/// Answers and refusals, each weighing less by e every [`TAU`].
#[derive(Debug, Clone, Copy)]
struct Tally {
    answered: f64,
    refused: f64,
    at: Instant,
    /// The first answer.
    since: Option<Instant>,
}

impl Tally {
    fn new(now: Instant) -> Self {
        Self {
            answered: 0.0,
            refused: 0.0,
            at: now,
            since: None,
        }
    }

    fn add(&mut self, now: Instant, refused: bool) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let keep = (-elapsed / TAU.as_secs_f64()).exp();
        self.answered = self.answered * keep + 1.0;
        self.refused = self.refused * keep + f64::from(u8::from(refused));
        self.at = self.at.max(now);
        self.since.get_or_insert(now);
    }

    fn share(&self) -> f64 {
        if self.answered > 0.0 {
            self.refused / self.answered
        } else {
            0.0
        }
    }

    /// The rate of answers accepted, as of the last answer; `None` before a second of them.
    fn accepted_rate(&self) -> Option<f64> {
        let span = self.at.saturating_duration_since(self.since?).as_secs_f64();
        let tau = TAU.as_secs_f64();
        // The weights of a steady rate over `span` add up to tau (1 - e^(-span / tau)).
        (span >= 1.0).then(|| (self.answered - self.refused) / (tau * (1.0 - (-span / tau).exp())))
    }
}

/// The engaged limiter's curve.
#[derive(Debug, Clone)]
struct Curve {
    bucket: Bucket,
    /// The rate before the last cut (W), and when that cut came.
    before_cut: f64,
    cut_at: Instant,
    /// When the curve is back at `before_cut`, in seconds after the cut (K).
    k: f64,
}

impl Curve {
    /// A cut from the rate `from` to `rate`; the bucket keeps the `tokens` it had, none at
    /// the first cut (the service's own bucket is empty: whatever was saved up would be
    /// refused too).
    fn cut(from: f64, rate: f64, now: Instant, tokens: Option<f64>) -> Self {
        let rate = rate.max(MIN_RATE);
        let mut bucket = Bucket::empty(rate, now);
        bucket.tokens = tokens.unwrap_or(0.0).min(bucket.capacity);
        Self {
            bucket,
            before_cut: from.max(rate),
            cut_at: now,
            k: ((from - rate).max(0.0) / SCALE).cbrt(),
        }
    }

    /// At `rate`, as if back at the rate before a cut: it grows from there, with no token
    /// saved up.
    #[cfg(feature = "redis")]
    fn at(rate: f64, now: Instant) -> Self {
        let rate = rate.max(MIN_RATE);
        Self {
            bucket: Bucket::empty(rate, now),
            before_cut: rate,
            cut_at: now,
            k: 0.0,
        }
    }

    fn rise(&mut self, now: Instant, measured: f64) {
        let t = now.saturating_duration_since(self.cut_at).as_secs_f64() - self.k;
        let curve = SCALE * t * t * t + self.before_cut;
        let rate = curve.min(2.0 * measured).max(MIN_RATE);
        self.bucket.refill(now);
        self.bucket.rate = rate;
        self.bucket.capacity = rate.max(1.0);
        self.bucket.tokens = self.bucket.tokens.min(self.bucket.capacity);
    }
}

/// What an answer changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    /// Nothing of note.
    None,
    /// The rate was cut to this.
    Cut(f64),
}

/// The adaptive limiter: see the module docs.
#[derive(Debug)]
pub(crate) struct Limiter {
    curve: Option<Curve>,
    meter: Meter,
    recent: Tally,
}

impl Limiter {
    /// Idle, with nothing seen.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            curve: None,
            meter: Meter {
                window_start: now,
                count: 0,
                rate: 0.0,
            },
            recent: Tally::new(now),
        }
    }

    /// Engages at `rate`, growing from there (a process that falls back to its share of a
    /// fleet's rate).
    #[cfg(feature = "redis")]
    pub(crate) fn engage_at(&mut self, rate: f64, now: Instant) {
        self.curve = Some(Curve::at(rate, now));
    }

    /// The rate, once engaged.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.curve.as_ref().map(|c| c.bucket.rate)
    }

    /// The bucket tokens are taken from, once engaged.
    pub(crate) fn bucket(&mut self) -> Option<&mut Bucket> {
        self.curve.as_mut().map(|c| &mut c.bucket)
    }

    /// The share of the last seconds' answers that were refused.
    pub(crate) fn refused_share(&self) -> f64 {
        self.recent.share()
    }

    /// The rate of answers the service accepted over the last seconds (requests a second);
    /// `None` before a second of them.
    pub(crate) fn accepted_rate(&self) -> Option<f64> {
        self.recent.accepted_rate()
    }

    /// The rate sent, as measured.
    #[cfg(test)]
    pub(crate) fn sent_rate(&self, now: Instant) -> f64 {
        self.meter.rate_at(now)
    }

    /// A request went out.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.meter.sent(now);
    }

    /// The service answered a request sent at `sent_at`, refusing it or not.
    pub(crate) fn answered(&mut self, now: Instant, sent_at: Instant, refused: bool) -> Change {
        self.recent.add(now, refused);
        let measured = self.meter.rate_at(now);
        match (&mut self.curve, refused) {
            (None, false) => Change::None,
            (Some(curve), false) => {
                curve.rise(now, measured);
                Change::None
            }
            // Sent before the last cut: it speaks of the rate before it.
            (Some(curve), true) if sent_at < curve.cut_at => Change::None,
            (curve, true) => {
                let (from, tokens) = match curve {
                    None => (measured, None),
                    Some(curve) => {
                        curve.bucket.refill(now);
                        let rate = curve.bucket.rate;
                        let from = if measured > 0.0 {
                            rate.min(measured)
                        } else {
                            rate
                        };
                        (from, Some(curve.bucket.tokens))
                    }
                };
                let from = from.max(MIN_RATE);
                let cut = Curve::cut(from, from * BETA, now, tokens);
                let rate = cut.bucket.rate;
                *curve = Some(cut);
                Change::Cut(rate)
            }
        }
    }
}

#[cfg(test)]
mod tests;
