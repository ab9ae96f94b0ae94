//! The account quota: a token bucket over every authenticated request, and how a request over
//! it is answered.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::server::Shared;
#[cfg(doc)]
use super::Fault;

/// An account quota: a token bucket of `rate` requests per second holding at most `burst`,
/// shared by every authenticated request the simulator serves, whatever the instance or task.
///
/// The bucket starts full and refills continuously in real time. A request that finds less
/// than a whole token is refused with the quota's [`QuotaAnswer`] and takes nothing.
///
/// ```
/// use std::time::Duration;
/// use iotda_task_watcher::simulator::{Quota, QuotaAnswer};
/// // 10 requests per second in bursts of 20, the 21st of a burst refused with a 429 and
/// // `Retry-After: 1`.
/// let quota = Quota::per_second(10.0, 20).answer(QuotaAnswer::Throttled {
///     retry_after: Some(Duration::from_secs(1)),
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Quota {
    rate: f64,
    burst: u32,
    answer: QuotaAnswer,
    refusing: f64,
    neighbour: f64,
}

impl Quota {
    /// `rate` requests per second, at most `burst` at once, answered over it with the default
    /// [`QuotaAnswer`] (a 429 without `Retry-After`). A rate of 0 never refills: `burst`
    /// requests in all. A burst of 0 refuses every request.
    ///
    /// # Panics
    /// When `rate` is negative, infinite or NaN.
    pub fn per_second(rate: f64, burst: u32) -> Self {
        assert!(
            rate.is_finite() && rate >= 0.0,
            "a quota's rate is a finite number of requests per second, 0 or more, not {rate}"
        );
        Self {
            rate,
            burst,
            answer: QuotaAnswer::default(),
            refusing: 0.0,
            neighbour: 0.0,
        }
    }

    /// The same quota behind a gateway that refuses a `share` of requests at random, whatever
    /// the rate (with the quota's answer, taking no token), as a gateway shedding load for
    /// its own reasons does. The draws are seeded: a run sees the same ones each time.
    ///
    /// # Panics
    /// When `share` is not within `0..=1`.
    pub fn refusing(mut self, share: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&share),
            "a share refused is within 0..=1, not {share}"
        );
        self.refusing = share;
        self
    }

    /// The same quota with another client of the account spending `rate` of its requests a
    /// second (as long as there are tokens for them).
    ///
    /// # Panics
    /// When `rate` is negative, infinite or NaN.
    pub fn with_neighbour(mut self, rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate >= 0.0,
            "a neighbour's rate is a finite number of requests per second, 0 or more, not {rate}"
        );
        self.neighbour = rate;
        self
    }

    /// The same quota, answering a request over it with `answer`.
    pub fn answer(mut self, answer: QuotaAnswer) -> Self {
        self.answer = answer;
        self
    }
}

/// How the simulator answers a request over its [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaAnswer {
    /// HTTP 429 `APIGW.0308`, the API gateway's answer (as [`Fault::Throttled`]), with
    /// `Retry-After` in whole seconds (any fraction dropped) when given. The default, without
    /// `Retry-After`.
    Throttled {
        /// The wait asked for, if any.
        retry_after: Option<Duration>,
    },
    /// HTTP 403 `IOTDA.021101`, IoTDA's request rate limit (as [`Fault::RateLimited`]).
    RateLimited,
}

impl Default for QuotaAnswer {
    fn default() -> Self {
        Self::Throttled { retry_after: None }
    }
}

/// A [`Quota`] being enforced: the tokens it holds, as of `at`.
#[derive(Debug)]
pub(super) struct Bucket {
    quota: Quota,
    tokens: f64,
    at: Instant,
    /// The state of the gateway's draws (`SplitMix64`).
    draws: u64,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(super) fn new(quota: Quota, now: Instant) -> Self {
        Self {
            quota,
            tokens: f64::from(quota.burst),
            at: now,
            draws: 0x5eed,
        }
    }

    /// A number in `0..1`, evenly drawn: `SplitMix64`'s step, its top 52 bits as the fraction
    /// of a number in `1..2`, less one.
    fn draw(&mut self) -> f64 {
        self.draws = self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.draws;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        f64::from_bits(0x3ff0_0000_0000_0000 | (z >> 12)) - 1.0
    }

    /// Takes a token for a request at `now`, or says how to refuse it.
    fn take(&mut self, now: Instant) -> Result<(), QuotaAnswer> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        // The neighbour spends its tokens as they come, while there are some.
        let refill = elapsed * (self.quota.rate - self.quota.neighbour);
        self.tokens = (self.tokens + refill).clamp(0.0, f64::from(self.quota.burst));
        self.at = self.at.max(now);
        if self.quota.refusing > 0.0 && self.draw() < self.quota.refusing {
            return Err(self.quota.answer);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.quota.answer)
        }
    }
}

impl Shared {
    pub(super) fn quota_bucket(&self) -> std::sync::MutexGuard<'_, Option<Bucket>> {
        // The bucket is plain numbers, whole after every statement: a panic elsewhere cannot
        // leave it half-written.
        self.quota
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a token from the account quota, if one is set; otherwise says how to refuse.
    pub(super) fn take_token(&self) -> Result<(), QuotaAnswer> {
        let mut bucket = self.quota_bucket();
        let Some(bucket) = bucket.as_mut() else {
            return Ok(());
        };
        bucket.take(Instant::now()).inspect_err(|_| {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quota_lets_its_burst_through_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let answer = QuotaAnswer::RateLimited;
        let mut bucket = Bucket::new(Quota::per_second(4.0, 2).answer(answer), t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Err(answer));
        // A refusal takes nothing: a quarter of a second later one token is back, whole.
        assert_eq!(bucket.take(t0 + ms(125)), Err(answer));
        assert_eq!(bucket.take(t0 + ms(250)), Ok(()));
        assert_eq!(bucket.take(t0 + ms(250)), Err(answer));
        // However long it waits, it holds no more than its burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Err(QuotaAnswer::RateLimited));
    }

    #[test]
    fn a_gateway_refuses_its_share_and_a_neighbour_spends_its_rate() {
        let t0 = Instant::now();
        // Plenty of tokens: only the gateway refuses, about a fifth.
        let mut bucket = Bucket::new(Quota::per_second(1000.0, 1000).refusing(0.2), t0);
        let refused = (0..1000u64)
            .filter(|i| bucket.take(t0 + ms(*i)).is_err())
            .count();
        assert!((150..=250).contains(&refused), "{refused} of 1000 refused");
        // 10 a second, the neighbour taking 6 of them: 4 a second left once the burst is spent.
        let mut bucket = Bucket::new(Quota::per_second(10.0, 10).with_neighbour(6.0), t0);
        let taken = (0..1000u64)
            .filter(|i| bucket.take(t0 + ms(10 * i)).is_ok())
            .count();
        assert!((47..=51).contains(&taken), "{taken} taken in 10 s");
    }

    #[test]
    fn a_quota_without_rate_or_burst_refills_nothing() {
        let t0 = Instant::now();
        let mut once = Bucket::new(Quota::per_second(0.0, 1), t0);
        assert_eq!(once.take(t0), Ok(()));
        assert_eq!(
            once.take(t0 + Duration::from_secs(3600)),
            Err(QuotaAnswer::Throttled { retry_after: None })
        );
        let mut none = Bucket::new(Quota::per_second(1000.0, 0), t0);
        assert!(none.take(t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_clock_read_out_of_order_adds_no_tokens() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Quota::per_second(2.0, 1), t0 + ms(500));
        assert_eq!(bucket.take(t0 + ms(500)), Ok(()));
        // An instant before the last one counts as no time at all, and the time runs on from
        // the latest instant seen: half a token by 750 ms, a whole one by 1000 ms.
        assert!(bucket.take(t0).is_err());
        assert!(bucket.take(t0 + ms(750)).is_err());
        assert_eq!(bucket.take(t0 + ms(1000)), Ok(()));
    }

    #[test]
    #[should_panic(expected = "a quota's rate")]
    fn a_quota_refuses_a_rate_that_is_not_a_number() {
        let _ = Quota::per_second(f64::NAN, 1);
    }
}
