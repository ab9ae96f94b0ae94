//! The adaptive limiter: a plain function of the time and the answers, with no clock, lock or
//! task of its own. The budget calls it with `now` and the answers it sees; tests drive it the
//! same way, through patterns of refusals, without a runtime.
//!
//! Its curve is AWS's adaptive retry mode (a CUBIC curve, cut by throttles of requests sent
//! after the last cut), as the `client::budget` module docs describe, with AWS's constants.
//! Each cut is probed (the cut rate, then the rate before it, each held for a phase) to tell
//! a quota's refusals from refusals at the same share at any rate: docs/architecture.md has
//! the rule.
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
/// Below this rate (requests a second), the curve's `SCALE` shrinks with the rate before the
/// cut, so that the curve has the same shape, as a share of that rate, at any rate below it.
const SCALE_FROM: f64 = 20.0;

/// The curve's constant for a curve back at `before_cut` requests a second after a cut.
fn scale(before_cut: f64) -> f64 {
    SCALE * (before_cut / SCALE_FROM).min(1.0)
}
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
    pub(crate) fn empty(rate: f64, capacity: f64, now: Instant) -> Self {
        let mut bucket = Self::new(rate, capacity, now);
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

/// Answers and refusals, each weighing less by e every `tau`.
#[derive(Debug, Clone, Copy)]
struct Tally {
    tau: f64,
    answered: f64,
    refused: f64,
    at: Instant,
    /// The first answer.
    since: Option<Instant>,
}

impl Tally {
    fn new(now: Instant, tau: Duration) -> Self {
        Self {
            tau: tau.as_secs_f64(),
            answered: 0.0,
            refused: 0.0,
            at: now,
            since: None,
        }
    }

    fn add(&mut self, now: Instant, refused: bool) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let keep = (-elapsed / self.tau).exp();
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

    /// Whether more were refused lately than a share `noise` explains (three standard
    /// deviations and one refusal over it); with no noise, any refusal is.
    fn beyond(&self, noise: f64) -> bool {
        noise <= 0.0
            || self.refused
                > noise * self.answered + 3.0 * (noise * (1.0 - noise) * self.answered).sqrt() + 1.0
    }

    /// The rate of answers accepted, as of the last answer; `None` before a second of them.
    fn accepted_rate(&self) -> Option<f64> {
        let span = self.at.saturating_duration_since(self.since?).as_secs_f64();
        let tau = self.tau;
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
    /// The curve's constant (C).
    c: f64,
}

impl Curve {
    /// A cut from the rate `from` to `rate`; the bucket keeps the `tokens` it had, none at
    /// the first cut (the service's own bucket is empty: whatever was saved up would be
    /// refused too).
    fn cut(from: f64, rate: f64, now: Instant, tokens: Option<f64>) -> Self {
        let rate = rate.max(MIN_RATE);
        let mut bucket = Bucket::empty(rate, rate.max(1.0), now);
        bucket.tokens = tokens.unwrap_or(0.0).min(bucket.capacity);
        let c = scale(from.max(rate));
        Self {
            bucket,
            before_cut: from.max(rate),
            cut_at: now,
            k: ((from - rate).max(0.0) / c).cbrt(),
            c,
        }
    }

    /// The same curve, `times` as slow: back at the rate before the cut `times` as late, and
    /// as slow past it.
    fn slower(mut self, times: f64) -> Self {
        self.c /= times * times * times;
        self.k *= times;
        self
    }

    /// At `rate`, as if back at the rate before a cut: it grows from there, with no token
    /// saved up.
    fn at(rate: f64, now: Instant) -> Self {
        let rate = rate.max(MIN_RATE);
        Self {
            bucket: Bucket::empty(rate, rate.max(1.0), now),
            before_cut: rate,
            cut_at: now,
            k: 0.0,
            c: scale(rate),
        }
    }

    fn rise(&mut self, now: Instant, measured: f64) {
        let t = now.saturating_duration_since(self.cut_at).as_secs_f64() - self.k;
        let curve = self.c * t * t * t + self.before_cut;
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
    /// A probe found the refusals to come at the same share at the rate before the cut: the
    /// rate is back at this.
    Restored(f64),
}

/// The adaptive limiter: see the module docs.
#[derive(Debug)]
pub(crate) struct Limiter {
    curve: Option<Curve>,
    meter: Meter,
    recent: Tally,
    /// The share refused whatever the rate, as the last probes showed it.
    noise: f64,
    /// The probe under way since the last cut, if any.
    probe: Option<Probe>,
    /// The quota the last probe that found one found (requests a second).
    quota: Option<f64>,
    /// How many throttles in a row over the quota found it where it was: the curve rises
    /// past it twice as slowly for each, up to [`HELD_MOST`].
    held: u32,
    /// Whether cuts are probed. A process that is one of a fleet of a size it does not know
    /// cannot probe: its own cut moves the share the service refuses by one member's part
    /// only, so a quota would look like noise.
    probes: bool,
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
            recent: Tally::new(now, TAU),
            noise: 0.0,
            probe: None,
            quota: None,
            held: 0,
            probes: true,
        }
    }

    /// Engages at `rate`, growing from there (a process that falls back to its share of a
    /// fleet's rate).
    pub(crate) fn engage_at(&mut self, rate: f64, now: Instant) {
        self.curve = Some(Curve::at(rate, now));
    }

    /// Engages at `rate` as one of a fleet of a size not known: every throttle past the
    /// last cut's episode cuts, and no cut is probed (see `probes`).
    pub(crate) fn engage_in_a_fleet_unseen(&mut self, rate: f64, now: Instant) {
        self.engage_at(rate, now);
        self.probes = false;
        self.probe = None;
        self.noise = 0.0;
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
        if let Some(phase) = self.probe.as_mut().and_then(|p| p.phase_at(now)) {
            phase.sent += 1;
        }
    }

    /// The service answered a request sent at `sent_at`, refusing it or not.
    pub(crate) fn answered(&mut self, now: Instant, sent_at: Instant, refused: bool) -> Change {
        self.recent.add(now, refused);
        if let Some(phase) = self.probe.as_mut().and_then(|p| p.phase_at(sent_at)) {
            phase.answered += 1;
            phase.refused += u32::from(refused);
        }
        let change = self.advance(now);
        if change != Change::None || self.probe.is_some() {
            return change;
        }
        let measured = self.meter.rate_at(now);
        match (&mut self.curve, refused) {
            (None, false) => Change::None,
            (Some(curve), false) => {
                curve.rise(now, measured);
                Change::None
            }
            // Sent before the last cut: it speaks of the rate before it.
            (Some(curve), true) if sent_at < curve.cut_at => Change::None,
            // As many refused as the noise explains.
            (Some(_), true) if !self.recent.beyond(self.noise) => Change::None,
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
                match self.quota {
                    // Above the quota found: back under it, no probe needed. The quota is
                    // what the service accepted if that was more; if less, the last seconds
                    // held seconds sent under the quota (a quota that went down is found by
                    // the probe of a throttle under it).
                    Some(quota) if from > 1.1 * quota => {
                        let accepted = self.recent.accepted_rate().unwrap_or(quota);
                        let found = (accepted / (1.0 - self.noise)).max(0.9 * quota).min(from);
                        // With noise, a slow rise would hide longer under it.
                        self.held = if found <= 1.1 * quota && self.noise <= 0.0 {
                            (self.held + 1).min(HELD_MOST)
                        } else {
                            0
                        };
                        self.quota = Some(found);
                        let cut = Curve::cut(found, 0.9 * found, now, tokens)
                            .slower(f64::from(1u32 << self.held));
                        let rate = cut.bucket.rate;
                        self.curve = Some(cut);
                        Change::Cut(rate)
                    }
                    _ => self.cut(from, from * BETA, now),
                }
            }
        }
    }

    /// Cuts from `from` to `rate` and probes whether sending less lowered the share refused.
    fn cut(&mut self, from: f64, rate: f64, now: Instant) -> Change {
        // No token saved up: the low phase must send at its rate.
        let cut = Curve::cut(from, rate, now, None);
        let rate = cut.bucket.rate;
        if self.probes {
            self.probe = Some(Probe::new(rate, from.min(rate / BETA).max(rate), now));
        }
        self.curve = Some(cut);
        Change::Cut(rate)
    }

    /// Moves the probe on at `now`: from its low phase to its high one, and from that to a
    /// verdict.
    fn advance(&mut self, now: Instant) -> Change {
        let Some(probe) = self.probe.as_mut() else {
            return Change::None;
        };
        let low = probe.low;
        match probe.high {
            None => {
                // Far over a quota: most refused, and the service accepting far less than was
                // sent. Cut again at once, to what it accepted, before probing above.
                let span = now
                    .saturating_duration_since(low.start)
                    .clamp(WINDOW / 10, low.length);
                // What it accepted in the phase so far, or over the last seconds if more: a
                // phase's first moments hold few of its answers.
                let accepted = (f64::from(low.accepted()) / span.as_secs_f64())
                    .max(self.recent.accepted_rate().unwrap_or(0.0));
                let n = f64::from(low.answered);
                let far_over = f64::from(low.refused) > 0.5 * n + n.sqrt();
                if low.answered >= 4 * PHASE_LEAST && far_over && accepted > 0.0 {
                    let to = (accepted / (1.0 - self.noise)).min(low.rate * BETA);
                    return self.cut(low.rate, to, now);
                }
                if now < low.end() {
                    return Change::None;
                }
                let high = probe.high_rate;
                probe.high = Some(Phase::new(high, now));
                self.set_rate(high, now);
                Change::None
            }
            Some(high) => {
                let over =
                    now >= high.end() && (high.answered >= high.sent || now >= high.end() + SETTLE);
                let clearly_worse =
                    high.answered >= 4 * PHASE_LEAST && high.share() > low.share() + 0.4;
                if !over && !clearly_worse {
                    return Change::None;
                }
                if let Some(high) = probe.high.as_mut().filter(|h| now < h.end()) {
                    high.length = now.saturating_duration_since(high.start);
                }
                let probe = *probe;
                self.probe = None;
                self.judge(probe, now)
            }
        }
    }

    /// The verdict of a probe: the refusals were noise when, sent more, the service refused
    /// no larger share and accepted more; else the rate goes to what the service accepted.
    fn judge(&mut self, probe: Probe, now: Instant) -> Change {
        let (low, high) = (probe.low, probe.high.expect("judged after its high phase"));
        if low.answered < PHASE_LEAST || high.answered < PHASE_LEAST {
            // Too few answers to tell: carry on as from the cut.
            self.set_rate(low.rate, now);
            return Change::None;
        }
        let (s_lo, s_hi) = (low.share(), high.share());
        let per_second = |phase: &Phase, n: u32| f64::from(n) / phase.length.as_secs_f64();
        let (a_lo, a_hi) = (
            per_second(&low, low.accepted()),
            per_second(&high, high.accepted()),
        );
        let (n_lo, n_hi) = (
            per_second(&low, low.answered),
            per_second(&high, high.answered),
        );
        let pooled =
            f64::from(low.refused + high.refused) / f64::from(low.answered + high.answered);
        let spread = (pooled
            * (1.0 - pooled)
            * (1.0 / f64::from(low.answered) + 1.0 / f64::from(high.answered)))
        .sqrt();
        let same_share = s_hi <= s_lo + 2.0 * spread + 0.02;
        // Sent no more in the high phase (a demand below both rates): the shares alone tell.
        // Else the service accepted more, by more than chance explains (one standard deviation
        // of the accepted counts, given what was sent): under a quota it accepts the quota.
        let chance = |phase: &Phase| {
            let share = phase.share();
            f64::from(phase.answered) * share * (1.0 - share) / phase.length.as_secs_f64().powi(2)
        };
        let accepted_more = n_hi < 1.15 * n_lo
            || a_hi - a_lo
                >= 0.3 * (n_hi - n_lo) * (1.0 - s_lo) + (chance(&low) + chance(&high)).sqrt();
        // A share refused, and how far above it the noise may be (two standard deviations).
        let at_most = |phase: &Phase| {
            let share = phase.share();
            share + 2.0 * (share * (1.0 - share) / f64::from(phase.answered)).sqrt()
        };
        // Every phase's share is at most the noise's and the quota's together.
        self.noise = self.noise.min(at_most(&low));
        // Refused as much when sending less: noise. None refused then: the quota's refusals.
        let telling = low.answered >= NOISE_LEAST && high.answered >= NOISE_LEAST;
        if telling && low.refused > 0 && same_share && accepted_more {
            // The lower share: the higher may hold a quota's refusals too, or refusals that
            // stopped during the probe.
            self.noise = s_lo.min(s_hi).min(MAX_NOISE);
            self.quota = self.quota.map(|q| q.max(probe.high_rate));
            self.curve = Some(Curve::at(probe.high_rate, now));
            return Change::Restored(probe.high_rate);
        }
        // Never below what the service was seen to accept.
        let quota = (a_hi.max(a_lo) / (1.0 - self.noise)).min(probe.high_rate);
        self.quota = Some(quota);
        self.held = 0;
        let rate = (0.9 * quota).min(low.rate).max(MIN_RATE);
        let tokens = self.curve.as_mut().map(|c| {
            c.bucket.refill(now);
            c.bucket.tokens
        });
        self.curve = Some(Curve::cut(quota, rate, now, tokens));
        Change::None
    }

    /// Holds the engaged rate at `rate` from `now`, the curve restarting there.
    fn set_rate(&mut self, rate: f64, now: Instant) {
        if let Some(curve) = self.curve.as_mut() {
            curve.bucket.refill(now);
            curve.bucket.rate = rate;
            curve.bucket.capacity = rate.max(1.0);
            curve.bucket.tokens = curve.bucket.tokens.min(curve.bucket.capacity);
            curve.cut_at = now;
            curve.before_cut = curve.before_cut.max(rate);
            curve.c = scale(curve.before_cut);
            curve.k = ((curve.before_cut - rate) / curve.c).cbrt();
        }
    }
}

/// The most doublings of the time the curve takes past a quota that throttles kept finding.
const HELD_MOST: u32 = 3;

/// The fewest answers of a probe's phase that say anything.
const PHASE_LEAST: u32 = 4;
/// The fewest answers in each phase for a probe to find noise: with fewer, two shares as far
/// apart as a quota makes them are within the spread of chance.
const NOISE_LEAST: u32 = 8;
/// How many answers a phase of a probe aims at, within [`PHASE_SHORTEST`, `PHASE_LONGEST`].
const PHASE_ANSWERS: f64 = 40.0;
const PHASE_SHORTEST: Duration = Duration::from_secs(1);
const PHASE_LONGEST: Duration = Duration::from_secs(3);
/// How long a probe waits for the answers to its high phase.
const SETTLE: Duration = Duration::from_secs(2);
/// The largest share the limiter lets pass as noise.
const MAX_NOISE: f64 = 0.5;

/// One phase of a probe: a rate held, the requests sent at it and the answers to them.
#[derive(Debug, Clone, Copy)]
struct Phase {
    rate: f64,
    start: Instant,
    length: Duration,
    sent: u32,
    answered: u32,
    refused: u32,
}

impl Phase {
    fn new(rate: f64, start: Instant) -> Self {
        let rate = rate.max(MIN_RATE);
        // At low rates, long enough for one more answer than can tell noise.
        let least = Duration::from_secs_f64(f64::from(NOISE_LEAST + 1) / rate);
        let length = Duration::from_secs_f64(PHASE_ANSWERS / rate)
            .clamp(PHASE_SHORTEST, PHASE_LONGEST)
            .max(least);
        Self {
            rate,
            start,
            length,
            sent: 0,
            answered: 0,
            refused: 0,
        }
    }

    fn end(&self) -> Instant {
        self.start + self.length
    }

    fn holds(&self, at: Instant) -> bool {
        at >= self.start && at < self.end()
    }

    fn accepted(&self) -> u32 {
        self.answered - self.refused
    }

    fn share(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            f64::from(self.refused) / f64::from(self.answered)
        }
    }
}

/// After a cut, whether sending less lowered the share refused: the cut rate held for a
/// phase, then the rate before it for another, the two compared.
#[derive(Debug, Clone, Copy)]
struct Probe {
    low: Phase,
    high_rate: f64,
    high: Option<Phase>,
}

impl Probe {
    fn new(low_rate: f64, high_rate: f64, now: Instant) -> Self {
        Self {
            low: Phase::new(low_rate, now),
            high_rate,
            high: None,
        }
    }

    /// The phase a request sent `at` belongs to.
    fn phase_at(&mut self, at: Instant) -> Option<&mut Phase> {
        match &mut self.high {
            Some(high) if high.holds(at) => Some(high),
            _ if self.low.holds(at) => Some(&mut self.low),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
