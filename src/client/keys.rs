//! The keys requests are signed with: fixed, or fetched from a provider and renewed ahead of
//! their expiry (the rule is in the [`provider`](super::provider) module's docs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

use super::credentials::{Auth, Credentials};
use super::provider::{CredentialSet, ProvideCredentials};
use super::{ApiError, ApiErrorKind};

/// Credentials ready to sign with: checked once, the token as a sensitive header value.
#[derive(Debug)]
pub(crate) struct Signing {
    pub(crate) credentials: Credentials,
    /// `X-Security-Token` or `X-Auth-Token`.
    pub(crate) token_value: Option<HeaderValue>,
}

impl Signing {
    /// Checks `credentials` for what a header can carry.
    pub(crate) fn new(credentials: Credentials) -> Result<Self, &'static str> {
        let token_value = match credentials.auth() {
            Auth::AkSk {
                ak, security_token, ..
            } => {
                if ak.is_empty() || !ak.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    return Err("the access key must be visible ASCII without ','");
                }
                security_token.map(secret_value).transpose()?
            }
            Auth::IamToken(token) => Some(secret_value(token)?),
        };
        Ok(Self {
            credentials,
            token_value,
        })
    }
}

impl Signing {
    /// Authenticates a request with an empty body, into `headers`: for AK/SK, `X-Sdk-Date`
    /// (`now`), the security token when there is one, and an SDK-HMAC-SHA256 `Authorization`
    /// over `before_date` (the lowercase names and values of the headers that sort before
    /// `x-sdk-date`, in order: at most two), the date and the token; for an IAM token,
    /// `X-Auth-Token`.
    pub(crate) fn authorize(
        &self,
        method: &str,
        url: &url::Url,
        now: SystemTime,
        before_date: &[(&str, &str)],
        headers: &mut reqwest::header::HeaderMap,
    ) {
        match self.credentials.auth() {
            Auth::AkSk {
                ak,
                sk,
                security_token,
            } => {
                let date = super::signer::sdk_date(now);
                let mut signed = [("", ""); 4];
                let mut count = 0;
                for header in before_date.iter().take(2) {
                    signed[count] = *header;
                    count += 1;
                }
                signed[count] = ("x-sdk-date", date.as_str());
                count += 1;
                // The token is signed when there is one.
                if let Some(token) = security_token {
                    signed[count] = ("x-security-token", token);
                    count += 1;
                }
                let request = super::signer::SignRequest {
                    method,
                    url,
                    headers: &signed[..count],
                    body: b"",
                };
                let mut auth = super::ascii_value(super::signer::authorization(ak, sk, &request));
                auth.set_sensitive(true);
                headers.insert(X_SDK_DATE, super::ascii_value(date));
                headers.insert(reqwest::header::AUTHORIZATION, auth);
                if let Some(token) = &self.token_value {
                    headers.insert(X_SECURITY_TOKEN, token.clone());
                }
            }
            Auth::IamToken(_) => {
                if let Some(token) = &self.token_value {
                    headers.insert(X_AUTH_TOKEN, token.clone());
                }
            }
        }
    }
}

const X_SDK_DATE: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("x-sdk-date");
const X_SECURITY_TOKEN: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("x-security-token");
const X_AUTH_TOKEN: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("x-auth-token");

/// A secret as a header value, marked sensitive; refused without echoing it.
fn secret_value(secret: &str) -> Result<HeaderValue, &'static str> {
    let mut value = HeaderValue::from_str(secret)
        .map_err(|_| "a token holds characters a header cannot carry")?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where a client's keys come from.
#[derive(Debug)]
pub(crate) enum Keys {
    /// Given, and never fetched again.
    Fixed(Signing),
    /// Fetched, and renewed before they expire.
    Fetched(Arc<Refresher>),
}

/// One fetched set, swapped whole.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) signing: Signing,
    expires_at: Option<SystemTime>,
    /// From when the set is renewed: its expiry less the margin.
    renew_at: Option<SystemTime>,
    /// How long before its expiry the set is renewed.
    margin: Duration,
}

/// The longest margin: 1-hour ECS keys are rotated 10 minutes before they expire.
/// Shorter-lived keys are renewed an eighth of their lifetime ahead.
const MAX_MARGIN: Duration = Duration::from_secs(10 * 60);
/// The longest first pause after a failed renewal.
const MAX_FIRST_PAUSE: Duration = Duration::from_secs(5);
/// The longest a provider may take to give keys; past it, the renewal failed.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);

impl Fetched {
    /// The set `set`, fetched at `now`; `margin` when it is a set seen before (the same
    /// expiry), else an eighth of what is left of its lifetime. Keys that have expired
    /// already are refused.
    fn new(
        set: &CredentialSet,
        now: SystemTime,
        margin: Option<Duration>,
    ) -> Result<Self, &'static str> {
        let signing = Signing::new(set.credentials().clone())?;
        let expires_at = set.expires_at();
        if expires_at.is_some_and(|at| at <= now) {
            return Err("the keys it gave have already expired");
        }
        let margin = margin.unwrap_or_else(|| {
            expires_at.map_or(Duration::ZERO, |at| {
                (at.duration_since(now).unwrap_or_default() / 8).min(MAX_MARGIN)
            })
        });
        Ok(Self {
            signing,
            expires_at,
            renew_at: expires_at.map(|at| at - margin),
            margin,
        })
    }

    fn due(&self, now: SystemTime) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }

    fn valid(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// The pause after the `failures`-th failed renewal in a row: from a twentieth of the
    /// margin (at most 5 s), doubling, up to a quarter of it.
    fn pause(&self, failures: u32) -> Duration {
        let first = (self.margin / 20).clamp(Duration::from_millis(1), MAX_FIRST_PAUSE);
        let grown = first.saturating_mul(1 << failures.saturating_sub(1).min(20));
        grown.min((self.margin / 4).max(first))
    }
}

/// Fetched keys and their renewal: one fetch at a time for all requests, a failure paced.
pub(crate) struct Refresher {
    provider: Box<dyn ProvideCredentials>,
    current: RwLock<Arc<Fetched>>,
    /// Held while a fetch is out: one at a time.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// Failed renewals in a row, and when the next may go.
    failures: Mutex<(u32, Option<SystemTime>)>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("provider", &self.provider.name())
            .field("fetches", &self.fetches)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// Keys from `provider`, starting with `first`, the set it gave (one fetch).
    pub(crate) fn new(
        provider: Box<dyn ProvideCredentials>,
        first: &CredentialSet,
    ) -> Result<Self, &'static str> {
        let fetched = Fetched::new(first, SystemTime::now(), None)?;
        Ok(Self {
            provider,
            current: RwLock::new(Arc::new(fetched)),
            flight: Arc::new(tokio::sync::Mutex::new(())),
            failures: Mutex::new((0, None)),
            fetches: AtomicU64::new(1),
        })
    }

    pub(crate) fn provider(&self) -> &str {
        self.provider.name()
    }

    /// How many times the provider was asked, the first included.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> Arc<Fetched> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a renewal may go now: not within the pause after a failed one.
    fn may_try(&self, now: SystemTime) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.1.is_none_or(|next| now >= next)
    }

    /// The keys to sign a request with: the current set, renewed first when it is due and
    /// no renewal is under way or paused; a renewal under way is waited for only when the set
    /// has expired.
    ///
    /// # Errors
    /// An error of kind [`ApiErrorKind::Credentials`] when the set has expired and could not
    /// be renewed.
    pub(crate) async fn current(self: &Arc<Self>) -> Result<Arc<Fetched>, ApiError> {
        let set = self.read();
        let now = SystemTime::now();
        if !set.due(now) {
            return Ok(set);
        }
        if set.valid(now) {
            // Due but valid: whoever finds no renewal under way starts one, in the
            // background; every request goes on with the valid set meanwhile.
            if let Ok(flight) = self.flight.clone().try_lock_owned() {
                if Arc::ptr_eq(&set, &self.read()) && self.may_try(now) {
                    // A failure keeps the valid set; the next try is paced.
                    drop(self.renew_apart(flight));
                }
            }
            return Ok(set);
        }
        let flight = self.flight.clone().lock_owned().await;
        let set = self.read();
        let now = SystemTime::now();
        if set.valid(now) {
            return Ok(set);
        }
        let failure = if self.may_try(now) {
            match self.renew_apart(flight).await {
                Ok(()) => return Ok(self.read()),
                Err(why) => why,
            }
        } else {
            "a renewal failed, and the next is not due yet".to_owned()
        };
        Err(
            ApiError::new(ApiErrorKind::Credentials).with_detail(format!(
                "the credentials from {} expired and could not be renewed: {failure}",
                self.provider.name()
            )),
        )
    }

    /// After a request signed with `used` was refused with 401: renews the keys once (unless
    /// another request did since) and gives the keys to send it again with, or `None` when
    /// the renewal failed.
    pub(crate) async fn after_refusal(
        self: &Arc<Self>,
        used: &Arc<Fetched>,
    ) -> Option<Arc<Fetched>> {
        let flight = self.flight.clone().lock_owned().await;
        if Arc::ptr_eq(used, &self.read()) {
            if !self.may_try(SystemTime::now()) {
                // Renewed keys were refused too, a moment ago: no fetch per request.
                return None;
            }
            self.renew_apart(flight).await.ok()?;
        }
        Some(self.read())
    }

    /// Renews in a task of its own, which holds `flight` until the provider answered or its
    /// 30 s ran out: a request that waits for the renewal and gives up (its own timeout, a
    /// cancelled wait) leaves it running, and the next request finds its keys. Its outcome,
    /// for a caller that waits for it.
    fn renew_apart(
        self: &Arc<Self>,
        flight: tokio::sync::OwnedMutexGuard<()>,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let refresher = Arc::clone(self);
        let renewal = tokio::spawn(async move {
            let renewed = refresher.renew().await;
            drop(flight);
            renewed
        });
        async move {
            renewal
                .await
                .unwrap_or_else(|_| Err("the renewal was stopped with its runtime".to_owned()))
        }
    }

    /// Renewed keys were refused as well: the refusal is not the keys' age, and the next
    /// renewal on a refusal waits its pause, as after a failed one.
    pub(crate) fn refused_again(&self) {
        let pause = self.read().pause(1);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        *failures = (failures.0 + 1, Some(SystemTime::now() + pause));
    }

    /// Asks the provider once; on success the set is swapped whole, on failure the current
    /// one is kept and the next try paced. The caller holds the flight.
    async fn renew(&self) -> Result<(), String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let provider = self.provider.name();
        let answer = tokio::time::timeout(PROVIDER_TIMEOUT, self.provider.provide()).await;
        let now = SystemTime::now();
        let current = self.read();
        let fetched = match answer {
            Err(_) => Err(format!("no answer within {PROVIDER_TIMEOUT:?}")),
            Ok(answer) => answer.map_err(|e| e.to_string()).and_then(|set| {
                // The same keys again (ECS hands out the old ones until it rotates them)
                // keep their margin, so they are due at once and asked for after a pause.
                let seen = (set.expires_at() == current.expires_at).then_some(current.margin);
                Fetched::new(&set, now, seen).map_err(str::to_owned)
            }),
        };
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(fetched) => {
                // A set that is due at once (ECS hands out the old keys until it rotates
                // them) is taken, and asked for again after a pause, not at every request.
                let stale = fetched.due(now);
                let expires_in = fetched
                    .expires_at
                    .and_then(|at| at.duration_since(now).ok());
                *failures = if stale {
                    let pause = fetched.pause(failures.0 + 1);
                    (failures.0 + 1, Some(now + pause))
                } else {
                    (0, None)
                };
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fetched);
                tracing::info!(provider, ?expires_in, "credentials renewed");
                Ok(())
            }
            Err(why) => {
                let pause = self.read().pause(failures.0 + 1);
                *failures = (failures.0 + 1, Some(now + pause));
                tracing::warn!(provider, error = %why, ?pause, "renewing credentials failed; the current ones are kept");
                Err(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(lifetime: Duration) -> Fetched {
        let now = SystemTime::now();
        Fetched::new(
            &CredentialSet::new(Credentials::aksk("AK", "SK").with_security_token("T"))
                .expiring_at(now + lifetime),
            now,
            None,
        )
        .unwrap()
    }

    /// Keys that last an hour, given `delay` after each ask, counted.
    #[derive(Debug)]
    struct Slow {
        delay: Duration,
        answers: Arc<AtomicU64>,
    }

    impl ProvideCredentials for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }

        fn provide(
            &self,
        ) -> futures::future::BoxFuture<
            '_,
            Result<CredentialSet, super::super::provider::ProviderError>,
        > {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                self.answers.fetch_add(1, Ordering::Relaxed);
                let keys = Credentials::aksk("AK2", "SK2").with_security_token("T2");
                Ok(CredentialSet::new(keys)
                    .expiring_at(SystemTime::now() + Duration::from_secs(3600)))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_slower_than_a_requests_timeout_is_not_thrown_away() {
        let answers = Arc::new(AtomicU64::new(0));
        let provider = Slow {
            delay: Duration::from_millis(1_500),
            answers: answers.clone(),
        };
        // The first set lasts 20 ms of the wall clock, which virtual time does not move.
        let first = CredentialSet::new(Credentials::aksk("AK", "SK").with_security_token("T"))
            .expiring_at(SystemTime::now() + Duration::from_millis(20));
        let refresher = Arc::new(Refresher::new(Box::new(provider), &first).unwrap());
        std::thread::sleep(Duration::from_millis(30));
        // Requests with a 1 s timeout, half a second apart, as a wait's retries go.
        let mut tries = 0;
        let keys = loop {
            tries += 1;
            assert!(tries <= 4, "no keys after {tries} requests");
            let request = tokio::time::timeout(Duration::from_secs(1), refresher.current());
            if let Ok(keys) = request.await {
                break keys.expect("renewed");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(
            tries, 2,
            "the second request found the renewal the first started"
        );
        assert!(matches!(
            keys.signing.credentials.auth(),
            Auth::AkSk { ak: "AK2", .. }
        ));
        assert_eq!(answers.load(Ordering::Relaxed), 1, "one answer, taken");
        assert_eq!(refresher.fetches(), 2);
    }

    #[test]
    fn the_margin_is_an_eighth_of_the_lifetime_up_to_ten_minutes() {
        let hour = set(Duration::from_secs(3600));
        assert!(hour.margin.abs_diff(Duration::from_secs(450)) < Duration::from_millis(5));
        let quarter = set(Duration::from_secs(900));
        assert!(quarter.margin.abs_diff(Duration::from_millis(112_500)) < Duration::from_millis(5));
        let twelve = set(Duration::from_secs(12 * 3600));
        assert_eq!(twelve.margin, Duration::from_secs(600));
    }

    #[test]
    fn pauses_after_failed_renewals_grow_to_a_quarter_of_the_margin() {
        let day = set(Duration::from_secs(12 * 3600));
        let pauses: Vec<u64> = (1..=8).map(|n| day.pause(n).as_secs()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 150, 150, 150]);
        let short = set(Duration::from_secs(3));
        assert!(
            short.pause(1) <= Duration::from_millis(50),
            "{:?}",
            short.pause(1)
        );
        assert!(short.pause(30) <= Duration::from_millis(250));
    }
}
