//! Clock skew: a signature refused while the server's clock is far from ours teaches the
//! client the server's time, and later requests are signed at it.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::{ApiError, ApiErrorKind, IotdaClient};

impl IotdaClient {
    /// A signature refused while the answer's `Date` is far from the time the request was
    /// signed at (`local` plus the offset then in use): the gateway refuses a stale
    /// `X-Sdk-Date`, so later requests are signed at the server's time and this one is worth
    /// retrying. Comparing with the signing time, not the clock now, lets every request signed
    /// before the correction learn it too.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "the skew bound is minutes in milliseconds, and the offset is shown to 1 s"
    )]
    pub(super) fn learn_clock(&self, error: &mut ApiError, local: SystemTime, offset_ms: i64) {
        let Some(server) = error.server_date() else {
            return;
        };
        let millis = |since: Result<Duration, std::time::SystemTimeError>| match since {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => i64::try_from(behind.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        };
        let skew_ms = millis(server.duration_since(shift(local, offset_ms)));
        if skew_ms.unsigned_abs() < MAX_CLOCK_SKEW.as_millis() as u64 {
            return;
        }
        let absolute = millis(server.duration_since(local));
        self.inner
            .clock_offset_ms
            .store(absolute, Ordering::Relaxed);
        tracing::warn!(
            skew_ms,
            "signature refused with the server's clock far from ours; correcting X-Sdk-Date"
        );
        error.parts.kind = ApiErrorKind::ClockSkew;
        error.parts.detail = Some(format!(
            "the server's clock is {:.0} s {} ours; X-Sdk-Date is corrected from now on",
            absolute.unsigned_abs() as f64 / 1000.0,
            if absolute > 0 { "ahead of" } else { "behind" }
        ));
    }
}

/// How far the server's `Date` may be from our clock before a refused signature is blamed on
/// the clocks. The gateway allows about 15 minutes.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// `t` moved by `ms` milliseconds, forwards or back.
pub(crate) fn shift(t: SystemTime, ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t + d
    } else {
        t - d
    }
}
