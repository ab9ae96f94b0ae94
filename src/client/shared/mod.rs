//! A request budget shared by every process of a fleet through Redis (feature `redis`).
//!
//! Each request's slot is booked by one Lua script run in Redis: a GCRA over every limit
//! of the [`RequestBudget`](super::budget::RequestBudget) (the fixed cap, a window limit, and
//! the adaptive limiter's rate), read against the server's clock (`TIME`), never the hosts'.
//! The script answers how long to wait for the booked slot, so the fleet's polls go out in one
//! order instead of retrying in a storm. The same call carries this process's news: the
//! answers since its last call with their send times (the fleet's limiter probes its cuts by
//! them, by the rule one process's limiter follows), a throttle (which cuts the fleet's
//! adaptive rate once per episode, past the noise found), a `Retry-After` (which pauses every
//! process, for 30 s at most), and tokens given back. It is one round trip per request, and
//! nothing else.
//!
//! Both keys carry one hash tag, `{scope}`, so the script runs on a Redis cluster and on
//! Huawei's DCS alike. The scope defaults to the client's project id: clients of one account
//! and region share it, other accounts on the same Redis do not.
//!
//! Redis failing is never a wait's failure: a call that errs or takes longer than
//! [`SharedBudget::timeout`] (250 ms by default) switches the process to its own limiter at
//! once, seeded with the fleet's share of each limit from empty buckets (a process that never
//! reached Redis paces by its adaptive limiter, from a quarter of its lowest limit); a call every
//! [`SharedBudget::probe_every`] (2 s) tries Redis again and rejoins. So does a booked wait
//! longer than the fleet's limits can explain. Slots booked ahead of Redis's clock, as a step
//! back of that clock leaves them, are dropped by the script, which keeps what the fleet
//! learned. Each switch is one log line.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::budget::fleet::{Booking, Fleet};
use super::budget::BudgetStats;

/// The script that books a slot; see its header for its keys and arguments.
const RESERVE: &str = include_str!("reserve.lua");

/// How a fleet shares one budget through Redis: the server's URL and the scope its keys
/// are named by.
///
/// ```
/// use iotda_task_watcher::client::shared::SharedBudget;
/// let shared = SharedBudget::redis("rediss://:secret@redis.example.com:6380/2")?
///     .scope("account-7");
/// // The password is never shown.
/// assert_eq!(shared.to_string(), "rediss://redis.example.com:6380/2 (scope account-7)");
/// assert!(!format!("{shared:?}").contains("secret"));
/// # Ok::<(), iotda_task_watcher::client::shared::SharedBudgetError>(())
/// ```
#[derive(Clone)]
pub struct SharedBudget {
    client: redis::Client,
    shown: String,
    scope: Option<String>,
    timeout: Duration,
    probe_every: Duration,
}

/// Why a shared budget's URL was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedBudgetError {
    /// The URL is not a Redis URL (`redis://` or `rediss://`).
    #[error("{0} is not a Redis URL (redis://HOST:PORT[/DB] or rediss://...)")]
    NotRedis(String),
    /// A root certificate was given for a URL without TLS (`redis://`).
    #[error("{0} does not use TLS: a root certificate needs a rediss:// URL")]
    NotTls(String),
    /// The root certificate given is not a PEM certificate.
    #[error("the root certificate is not a PEM certificate: {0}")]
    Certificate(String),
}

impl SharedBudget {
    /// A budget shared through the Redis server at `url`: `redis://[:PASSWORD@]HOST[:PORT][/DB]`,
    /// or `rediss://` for TLS. Nothing is connected until the first request.
    ///
    /// # Errors
    /// [`SharedBudgetError::NotRedis`] for anything else; the error shows the URL without its
    /// password.
    pub fn redis(url: &str) -> Result<Self, SharedBudgetError> {
        let shown = redact(url);
        let parsed =
            url::Url::parse(url).map_err(|_| SharedBudgetError::NotRedis(shown.clone()))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
            return Err(SharedBudgetError::NotRedis(shown));
        }
        let client =
            redis::Client::open(url).map_err(|_| SharedBudgetError::NotRedis(shown.clone()))?;
        Ok(Self {
            client,
            shown,
            scope: None,
            timeout: Duration::from_millis(250),
            probe_every: Duration::from_secs(2),
        })
    }

    /// Trusts the server's certificate only if it chains to `pem`, one or more PEM
    /// certificates, in place of the public roots: for a server whose certificate a private
    /// authority signed, such as a DCS instance's (its CA certificate is downloaded from the
    /// console).
    ///
    /// ```
    /// use iotda_task_watcher::client::shared::{SharedBudget, SharedBudgetError};
    /// let shared = SharedBudget::redis("redis://127.0.0.1:6379")?;
    /// let refused = shared.root_certificate(b"-----BEGIN CERTIFICATE-----".to_vec());
    /// assert!(matches!(refused, Err(SharedBudgetError::NotTls(_))));
    /// # Ok::<(), SharedBudgetError>(())
    /// ```
    ///
    /// # Errors
    /// [`SharedBudgetError::NotTls`] for a `redis://` URL, [`SharedBudgetError::Certificate`]
    /// when `pem` holds no certificate or one that does not parse.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Result<Self, SharedBudgetError> {
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        let pem = pem.into();
        let info = self.client.get_connection_info().clone();
        if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            return Err(SharedBudgetError::NotTls(self.shown));
        }
        if !pem.windows(BEGIN.len()).any(|w| w == BEGIN) {
            return Err(SharedBudgetError::Certificate(
                "no BEGIN CERTIFICATE block".to_owned(),
            ));
        }
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        self.client = redis::Client::build_with_tls(info, certificates)
            .map_err(|e| SharedBudgetError::Certificate(e.to_string()))?;
        Ok(self)
    }

    /// Names the keys: processes with the same scope share one budget. By default, the
    /// client's project id. Braces are dropped, as they would split the hash tag; a scope
    /// left empty names the default one (an empty tag is no tag on a cluster).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        let scope: String = scope
            .into()
            .chars()
            .filter(|c| !"{}".contains(*c))
            .collect();
        self.scope = (!scope.is_empty()).then_some(scope);
        self
    }

    /// The longest a call to Redis may take before the process falls back to its own limiter
    /// (250 ms by default).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often a process that fell back tries Redis again (every 2 s by default; at most
    /// once a day, a longer time is taken as a day).
    #[must_use]
    pub fn probe_every(mut self, every: Duration) -> Self {
        self.probe_every = every.min(Duration::from_secs(86_400));
        self
    }

    /// The keys of a scope: one hash tag for both, so that they share a cluster slot.
    fn keys(&self, default_scope: &str) -> [String; 2] {
        let scope = self.scope.as_deref().unwrap_or(default_scope);
        [
            format!("iotda-budget:{{{scope}}}"),
            format!("iotda-budget:{{{scope}}}:members"),
        ]
    }
}

impl fmt::Display for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.shown)?;
        if let Some(scope) = &self.scope {
            write!(f, " (scope {scope})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("url", &self.shown)
            .field("scope", &self.scope)
            .field("timeout", &self.timeout)
            .field("probe_every", &self.probe_every)
            .finish_non_exhaustive()
    }
}

/// The URL with any user name and password taken out.
fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        // Both fail for a URL without a host ("redis:/:pw@host"), whose text may still hold
        // a password: it is cut by hand below.
        if parsed.set_username("").is_ok() && parsed.set_password(None).is_ok() {
            return parsed.to_string();
        }
    }
    match url.rsplit_once('@') {
        Some((_, host)) => format!("<credentials>@{host}"),
        None => url.to_owned(),
    }
}

/// What a booking answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Booked {
    /// How long until the booked slot.
    pub(crate) wait: Duration,
    /// The fleet's adaptive rate, once engaged.
    pub(crate) rate: Option<f64>,
    /// Processes that booked in the last 10 s.
    pub(crate) members: u32,
    /// Whether the throttle this call reported cut the fleet's rate.
    pub(crate) cut: bool,
    /// Whether the script dropped the fleet's times, booked ahead of its clock.
    pub(crate) stepped: bool,
}

/// The longest one `Retry-After` pauses the fleet: a gateway's "come back tomorrow" must not
/// stop every process for a day. The wait that was told still honours all of it, up to its
/// deadline.
const PAUSE_MOST: Duration = Duration::from_secs(30);

/// The most answers a report carries with their send times (the latest): a booking carries
/// a few, and a process that paced alone for a while has little to tell a probe.
const ANSWERS_MOST: usize = 64;

/// What this process has to tell the fleet with its next booking.
#[derive(Debug, Default, Clone)]
struct Report {
    refunds: u32,
    /// Answers that were not throttled.
    accepted: u32,
    /// Answers whose send time is known on the server's clock (us), and whether each was
    /// throttled: the fleet's probe counts each in the phase it was sent in.
    answers: Vec<(i64, bool)>,
    /// When the latest throttled request was sent, on the server's clock (us).
    throttled_sent: Option<i64>,
    /// Until when the service asked to be left alone.
    retry_until: Option<Instant>,
}

impl Report {
    fn answer(&mut self, sent: i64, throttled: bool) {
        if self.answers.len() == ANSWERS_MOST {
            self.answers.remove(0);
        }
        self.answers.push((sent, throttled));
    }

    /// A throttled answer to a request sent at `sent` on the server's clock (us).
    fn throttle(&mut self, sent: i64) {
        self.throttled_sent = Some(self.throttled_sent.map_or(sent, |s| s.max(sent)));
        self.answer(sent, true);
    }

    /// The answers as the script reads them: `sent:refused` pairs joined by commas.
    fn answers_text(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.answers.len() * 20);
        for (sent, throttled) in &self.answers {
            let comma = if text.is_empty() { "" } else { "," };
            // Writing to a String cannot fail.
            let _ = write!(text, "{comma}{sent}:{}", u8::from(*throttled));
        }
        text
    }
}

#[derive(Debug)]
struct Link {
    connection: Option<ConnectionManager>,
    /// Whether the last call succeeded (else the process runs on its own limiter).
    joined: bool,
    /// When a process that fell back may try Redis again.
    next_try: Instant,
    /// The server's clock (us) at a local instant, from the last booking.
    clock: Option<(Instant, i64)>,
    report: Report,
    last: Option<Booked>,
}

impl Link {
    /// `at` on the server's clock (us), once a booking has told its offset.
    fn on_server_clock(&self, at: Instant) -> Option<i64> {
        let (base, server) = self.clock?;
        let offset = if at >= base {
            i64::try_from(at.duration_since(base).as_micros()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from(base.duration_since(at).as_micros()).unwrap_or(i64::MAX)
        };
        Some(server.saturating_add(offset))
    }
}

/// A client's link to the shared budget.
pub(crate) struct Shared {
    config: SharedBudget,
    keys: [String; 2],
    member: String,
    script: redis::Script,
    limits: Vec<(u64, u32)>,
    /// The longest interval between requests any limit allows, in us.
    slowest: u64,
    adaptive: bool,
    link: Mutex<Link>,
    calls: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Whether the process uses Redis now, or runs on its own limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Book through Redis.
    Ask,
    /// Use the local limiter.
    Local,
}

impl Shared {
    /// A link for a client whose limits are `limits` (each as requests a second and burst).
    pub(crate) fn new(
        config: SharedBudget,
        default_scope: &str,
        limits: &[(f64, f64)],
        adaptive: bool,
    ) -> Self {
        let keys = config.keys(default_scope);
        let member = format!(
            "{}-{:016x}",
            std::process::id(),
            // Distinct for clients of one process, and for processes that reuse a pid.
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
        );
        let limits = limits
            .iter()
            .map(|&(rate, burst)| {
                // Truncation is meant: a whole number of microseconds, at least one.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let interval = (1e6 / rate).clamp(1.0, 1e15) as u64;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let burst = burst.clamp(1.0, 1e9) as u32;
                (interval, burst)
            })
            .collect::<Vec<_>>();
        // The adaptive limiter's floor is half a request a second (the script counts it
        // always, as other processes of the scope may be adaptive).
        let floor = 2_000_000;
        let slowest = limits
            .iter()
            .map(|&(interval, _)| interval)
            .fold(floor, u64::max);
        Self {
            config,
            keys,
            member,
            script: redis::Script::new(RESERVE),
            limits,
            slowest,
            adaptive,
            link: Mutex::new(Link {
                connection: None,
                joined: true,
                next_try: Instant::now(),
                clock: None,
                report: Report::default(),
                last: None,
            }),
            calls: AtomicU64::new(0),
        }
    }

    /// The longest a booked wait can sanely be for a fleet of `members`: the longest pause,
    /// and two turns of every member at the slowest limit (each books one slot at a time).
    /// The script drops times booked further ahead (a clock stepped back); a longer wait
    /// still is Redis failing.
    fn most_wait(&self, members: u32) -> Duration {
        let turns = self.slowest.saturating_mul(2 * u64::from(members.max(1)));
        PAUSE_MOST.saturating_add(Duration::from_micros(turns))
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls made to Redis, answered or not.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether the process is using Redis now.
    pub(crate) fn joined(&self) -> bool {
        self.link().joined
    }

    /// Whether the next request is booked through Redis.
    pub(crate) fn decide(&self, now: Instant) -> Decision {
        let link = self.link();
        if link.joined || now >= link.next_try {
            Decision::Ask
        } else {
            Decision::Local
        }
    }

    /// A token taken for a request that was not sent, given back with the next booking.
    pub(crate) fn refund(&self) {
        let mut link = self.link();
        link.report.refunds = link.report.refunds.saturating_add(1);
    }

    /// An answer that was not throttled to a request sent at `sent_at`, counted for the fleet
    /// with the next booking: what the service accepts is where a cut starts from.
    pub(crate) fn accepted(&self, sent_at: Instant) {
        let mut link = self.link();
        link.report.accepted = link.report.accepted.saturating_add(1);
        if let Some(sent) = link.on_server_clock(sent_at) {
            link.report.answer(sent, false);
        }
    }

    /// A throttled answer to a request sent at `sent_at`, told to the fleet with the next
    /// booking.
    pub(crate) fn throttled(&self, sent_at: Instant, retry_after: Option<Duration>) {
        let mut link = self.link();
        // A pause holds from now, told with the next booking even if that is late.
        if let Some(until) = retry_after.and_then(|wait| Instant::now().checked_add(wait)) {
            link.report.retry_until = link.report.retry_until.max(Some(until));
        }
        // A send time means something to the fleet only on the server's clock.
        if let Some(sent) = link.on_server_clock(sent_at) {
            link.report.throttle(sent);
        }
    }

    /// Books the next slot. `None` when Redis failed or was too slow: the process then runs
    /// on its own limiter until the next probe, and the report waits for it.
    pub(crate) async fn book(&self) -> Option<Booked> {
        let (connection, report) = {
            let mut link = self.link();
            let connection = match &link.connection {
                Some(connection) => connection.clone(),
                None => match self.connect() {
                    Ok(connection) => {
                        link.connection = Some(connection.clone());
                        connection
                    }
                    Err(error) => {
                        drop(link);
                        self.fell_back(&format!("{:?}", error.kind()));
                        return None;
                    }
                },
            };
            (connection, std::mem::take(&mut link.report))
        };
        let started = Instant::now();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer =
            tokio::time::timeout(self.config.timeout, self.invoke(connection, &report)).await;
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                self.restore(report, error.is_connection_refusal());
                self.fell_back(&error.kind_text());
                return None;
            }
            Err(_) => {
                self.restore(report, false);
                self.fell_back(&format!(
                    "no answer within {} ms",
                    self.config.timeout.as_millis()
                ));
                return None;
            }
        };
        let (wait_us, server_now, thousandths, members, cut, stepped) = reply;
        let members = u32::try_from(members).unwrap_or(u32::MAX).max(1);
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        if wait > self.most_wait(members) {
            self.fell_back(&format!(
                "it booked a wait of {} s, longer than the fleet's limits can explain",
                wait.as_secs()
            ));
            return None;
        }
        let mut link = self.link();
        // The server read its clock about halfway through the round trip.
        link.clock = Some((started + started.elapsed() / 2, server_now));
        let booked = Booked {
            wait,
            #[allow(clippy::cast_precision_loss)]
            rate: (thousandths >= 0).then(|| thousandths as f64 / 1000.0),
            members,
            cut: cut == 1,
            stepped: stepped == 1,
        };
        link.last = Some(booked);
        if booked.stepped {
            tracing::warn!(
                budget = %self.config,
                "the shared budget's clock stepped back: the slots booked ahead of it are dropped"
            );
        }
        if booked.cut {
            tracing::debug!(rate = booked.rate, "throttled: the fleet's rate is cut");
        }
        if !link.joined {
            link.joined = true;
            drop(link);
            tracing::info!(
                budget = %self.config,
                members = booked.members,
                "the shared budget answers again: requests are booked through it"
            );
        }
        Some(booked)
    }

    /// The fleet as last seen: its adaptive rate and its members.
    pub(crate) fn last(&self) -> Option<Booked> {
        self.link().last
    }

    /// Books through Redis unless it failed lately; else, or if booking fails, says to pace
    /// alone from the fleet as last seen.
    async fn book_or_alone(&self) -> Booking {
        if self.decide(Instant::now()) == Decision::Ask {
            if let Some(booked) = self.book().await {
                return Booking::Booked(booked.wait);
            }
        }
        let last = self.last();
        Booking::Alone {
            members: last.map(|fleet| fleet.members),
            rate: last.and_then(|fleet| fleet.rate),
        }
    }

    fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.config.probe_every);
        ConnectionManager::new_lazy_with_config(self.config.client.clone(), config)
    }

    async fn invoke(
        &self,
        mut connection: ConnectionManager,
        report: &Report,
    ) -> redis::RedisResult<(i64, i64, i64, i64, i64, i64)> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let known = self
            .last()
            .and_then(|fleet| fleet.rate)
            .map_or(0, |rate| (rate * 1000.0).clamp(0.0, 1e12) as u64);
        let mut call = self.script.prepare_invoke();
        call.key(&self.keys[0])
            .key(&self.keys[1])
            .arg(&self.member)
            .arg(report.refunds)
            .arg(report.throttled_sent.unwrap_or(0))
            .arg(report.retry_until.map_or(0, |until| {
                let left = until.saturating_duration_since(Instant::now());
                u64::try_from(left.as_micros()).unwrap_or(u64::MAX)
            }))
            .arg(u8::from(self.adaptive))
            .arg(report.accepted)
            .arg(known)
            .arg(report.answers_text())
            .arg(u64::try_from(PAUSE_MOST.as_micros()).unwrap_or(u64::MAX));
        for &(interval, burst) in &self.limits {
            call.arg(interval).arg(burst);
        }
        call.invoke_async(&mut connection).await
    }

    /// Puts back a report whose call failed, merged with what came since. A call that
    /// timed out or lost its connection may have run the script all the same: its counts
    /// are put back only if it surely did not (`unsent`), as counting them twice would give
    /// the fleet slots it has not got. The throttle and the pause count once however often
    /// they are told.
    fn restore(&self, report: Report, unsent: bool) {
        let mut link = self.link();
        let now = &mut link.report;
        if unsent {
            now.refunds = now.refunds.saturating_add(report.refunds);
            now.accepted = now.accepted.saturating_add(report.accepted);
            let later = std::mem::replace(&mut now.answers, report.answers);
            for (sent, throttled) in later {
                now.answer(sent, throttled);
            }
        }
        now.throttled_sent = now.throttled_sent.max(report.throttled_sent);
        now.retry_until = now.retry_until.max(report.retry_until);
    }

    fn fell_back(&self, why: &str) {
        let mut link = self.link();
        link.next_try = Instant::now() + self.config.probe_every;
        if link.joined {
            link.joined = false;
            drop(link);
            tracing::warn!(
                budget = %self.config,
                why,
                "the shared budget does not answer: this process paces itself until it does"
            );
        }
    }
}

/// A short description of a Redis error, with nothing of the URL in it.
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    fn kind_text(&self) -> String {
        match self.code() {
            Some(code) => format!("the server answered {code}"),
            None if self.is_timeout() => "timed out".to_owned(),
            None if self.is_connection_refusal() => "connection refused".to_owned(),
            None if self.is_connection_dropped() || self.is_io_error() => {
                "connection lost".to_owned()
            }
            None => format!("{:?}", self.kind()),
        }
    }
}

impl Fleet for Shared {
    fn book(&self) -> BoxFuture<'_, Booking> {
        Box::pin(self.book_or_alone())
    }

    fn answered(&self, sent_at: Instant, throttled: bool, retry_after: Option<Duration>) {
        if throttled {
            self.throttled(sent_at, retry_after);
        } else {
            self.accepted(sent_at);
        }
    }

    fn refund(&self) -> bool {
        let joined = self.joined();
        if joined {
            Shared::refund(self);
        }
        joined
    }

    fn report(&self, stats: &mut BudgetStats) {
        stats.shared_calls = self.calls();
        stats.pacing_alone = !self.joined();
        if !stats.pacing_alone {
            stats.adaptive_rate = self.last().and_then(|fleet| fleet.rate);
        }
    }
}

#[cfg(test)]
mod tests;

/// Against a real `redis-server` (skipped, saying so, where none is installed).
#[cfg(all(test, feature = "simulator"))]
mod server_tests;

/// The fleet's limiter in virtual time, against a real `redis-server`.
#[cfg(all(test, feature = "simulator"))]
mod fleet_tests;
