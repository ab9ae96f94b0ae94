//! What a failed call says, and whether trying again can help.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// What kind of failure an [`ApiError`] is. The kind decides [`ApiError::is_transient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// The connection failed or broke (refused, reset, DNS, TLS). Transient.
    Network,
    /// No complete answer within the request timeout. Transient.
    Timeout,
    /// The service asked us to slow down: HTTP 429, `APIGW.0308`, or `IoTDA`'s rate limits
    /// `IOTDA.021101` / `IOTDA.021102`, which arrive as HTTP 403. Transient.
    Throttled,
    /// A 5xx answer, or 408. Transient.
    Server,
    /// The signature was refused while the server's clock is far from ours; later requests
    /// are signed at the server's time. Transient.
    ClockSkew,
    /// A successful answer whose body could not be read as a task (not JSON, truncated, too
    /// large). Transient: the next answer may be whole.
    Decode,
    /// The signature or token was refused (HTTP 401, e.g. `APIGW.0301`). Permanent.
    Unauthorized,
    /// The caller may not see this task (HTTP 403). Permanent.
    Forbidden,
    /// The task, instance or API was not found (HTTP 404). Permanent; the watcher tolerates it
    /// while a new task is not yet visible.
    NotFound,
    /// The request was refused as invalid (HTTP 400). Permanent.
    BadRequest,
    /// Any other answer. Permanent.
    Other,
    /// The client's fetched credentials expired and could not be renewed; the detail names
    /// the provider and what it said. Transient: the provider may answer again.
    Credentials,
}

impl ApiErrorKind {
    /// True when the same request may succeed later.
    #[must_use]
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Network
                | Self::Timeout
                | Self::Throttled
                | Self::Server
                | Self::Decode
                | Self::ClockSkew
                | Self::Credentials
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Network => "network error",
            Self::Timeout => "request timed out",
            Self::Throttled => "throttled",
            Self::Server => "server error",
            Self::Decode => "unreadable response",
            Self::ClockSkew => "signature refused, clocks apart",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not found",
            Self::BadRequest => "bad request",
            Self::Other => "unexpected response",
            Self::Credentials => "credentials expired",
        }
    }
}

impl fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A failed call to the API, with everything the service said about it.
///
/// Small to move and to keep (one pointer): a watcher holds the last one while it sleeps.
#[derive(Clone)]
pub struct ApiError {
    pub(crate) parts: Box<Parts>,
}

#[derive(Debug, Clone)]
pub(crate) struct Parts {
    pub(crate) kind: ApiErrorKind,
    pub(crate) status: Option<StatusCode>,
    pub(crate) error_code: Option<String>,
    pub(crate) error_msg: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) server_date: Option<SystemTime>,
    pub(crate) detail: Option<String>,
    /// The underlying error: the transport's, or the decoder's.
    pub(crate) source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error of `kind` with nothing else known; the `with_*` methods add the rest. Useful
    /// for [`TaskSource`](crate::watch::TaskSource) implementations and scripted tests.
    #[must_use]
    pub fn new(kind: ApiErrorKind) -> Self {
        Self {
            parts: Box::new(Parts {
                kind,
                status: None,
                error_code: None,
                error_msg: None,
                request_id: None,
                retry_after: None,
                server_date: None,
                detail: None,
                source: None,
            }),
        }
    }

    /// The error of a request that had no answer within `timeout`.
    pub(crate) fn no_answer_within(timeout: std::time::Duration) -> Self {
        Self::new(ApiErrorKind::Timeout).with_detail(format!("no answer within {timeout:?}"))
    }

    /// Adds a description of a failure that had no error body.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.parts.detail = Some(detail.into());
        self
    }

    /// Adds the underlying error, returned by [`cause`](Self::cause). `Display` does not show
    /// it: say what it says with [`with_detail`](Self::with_detail).
    #[must_use]
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.parts.source = Some(Arc::new(cause));
        self
    }

    /// The underlying error, when there is one, to inspect or downcast: a [`reqwest::Error`]
    /// for a failed transport, a [`serde_json::Error`] for a body that did not decode. It is
    /// not the error's [`source`](std::error::Error::source): `Display` already says what it
    /// says, in one line, so that a log line of the error alone tells the whole story.
    #[must_use]
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.parts.source.as_deref()
    }

    /// Adds the HTTP status; an invalid code is ignored.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.parts.status = StatusCode::from_u16(status).ok();
        self
    }

    /// Adds the service's error code and message.
    #[must_use]
    pub fn with_error(mut self, code: impl Into<String>, msg: impl Into<String>) -> Self {
        self.parts.error_code = Some(code.into());
        self.parts.error_msg = Some(msg.into());
        self
    }

    /// Adds the request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.parts.request_id = Some(id.into());
        self
    }

    /// Adds how long the service asked us to wait.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.parts.retry_after = Some(wait);
        self
    }

    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> ApiErrorKind {
        self.parts.kind
    }

    /// True when trying again may help (network, timeout, throttling, 5xx, unreadable 200).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.parts.kind.is_transient()
    }

    /// The HTTP status, when an answer arrived.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        self.parts.status
    }

    /// The service's error code, e.g. `IOTDA.000006` or `APIGW.0301`.
    #[must_use]
    pub fn error_code(&self) -> Option<&str> {
        self.parts.error_code.as_deref()
    }

    /// The service's error message.
    #[must_use]
    pub fn error_msg(&self) -> Option<&str> {
        self.parts.error_msg.as_deref()
    }

    /// The `X-Request-Id` of the answer: quote it to Huawei Cloud support.
    #[must_use]
    pub fn request_id(&self) -> Option<&str> {
        self.parts.request_id.as_deref()
    }

    /// How long the service asked us to wait (`Retry-After`, seconds or an HTTP date).
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.parts.retry_after
    }

    /// The answer's `Date` header, when it had one.
    #[must_use]
    pub fn server_date(&self) -> Option<SystemTime> {
        self.parts.server_date
    }

    /// More about a failure that had no error body: the transport's error, or why a body did
    /// not decode.
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        self.parts.detail.as_deref()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.parts.kind.describe())?;
        if let Some(status) = self.parts.status {
            write!(f, " (HTTP {})", status.as_u16())?;
        }
        match (&self.parts.error_code, &self.parts.error_msg) {
            (Some(code), Some(msg)) => write!(f, ": {code}: {msg}")?,
            (Some(code), None) => write!(f, ": {code}")?,
            (None, Some(msg)) => write!(f, ": {msg}")?,
            (None, None) => {}
        }
        if let Some(detail) = &self.parts.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(wait) = self.parts.retry_after {
            write!(f, "; retry after {}s", wait.as_secs_f64())?;
        }
        if let Some(id) = &self.parts.request_id {
            write!(f, " [request id {id}]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.fmt(f)
    }
}

/// An `ApiError` has no [`source`](std::error::Error::source): its `Display` already says
/// what the underlying error says. [`ApiError::cause`] gives that error itself.
impl std::error::Error for ApiError {}

/// The kind of an answer with a non-success status, from the status and the error code.
pub(crate) fn classify(status: StatusCode, code: Option<&str>) -> ApiErrorKind {
    match (status.as_u16(), code) {
        (_, Some("APIGW.0308")) | (403, Some("IOTDA.021101" | "IOTDA.021102")) | (429, _) => {
            ApiErrorKind::Throttled
        }
        (408 | 500..=599, _) => ApiErrorKind::Server,
        (400, _) => ApiErrorKind::BadRequest,
        (401, _) => ApiErrorKind::Unauthorized,
        (403, _) => ApiErrorKind::Forbidden,
        (404, _) => ApiErrorKind::NotFound,
        _ => ApiErrorKind::Other,
    }
}

/// Reads `error_code`/`error_msg`, or `code`/`message`, at the top of an error body or one
/// level down (`{"error": {...}}`). Anything else yields `(None, None)`.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) else {
        return (None, None);
    };
    let pick = |obj: &serde_json::Map<String, serde_json::Value>| {
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| match obj.get(*k) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        (
            text(&["error_code", "code", "errorCode"]),
            text(&["error_msg", "message", "errorMsg", "msg"]),
        )
    };
    let top = pick(&map);
    if top.0.is_some() || top.1.is_some() {
        return top;
    }
    map.values()
        .filter_map(|v| v.as_object())
        .map(pick)
        .find(|p| p.0.is_some() || p.1.is_some())
        .unwrap_or((None, None))
}

/// Parses `Retry-After`: whole seconds, or an HTTP date measured from `now`. A date in the past
/// is zero; anything unreadable is `None`. Seconds are capped at one day.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const CAP: u64 = 24 * 60 * 60;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(CAP)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(CAP)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_service() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(
            classify(s(403), Some("IOTDA.021101")),
            ApiErrorKind::Throttled
        );
        assert_eq!(
            classify(s(403), Some("IOTDA.021102")),
            ApiErrorKind::Throttled
        );
        assert_eq!(
            classify(s(403), Some("IOTDA.000001")),
            ApiErrorKind::Forbidden
        );
        assert_eq!(classify(s(403), None), ApiErrorKind::Forbidden);
        assert_eq!(
            classify(s(429), Some("APIGW.0308")),
            ApiErrorKind::Throttled
        );
        assert_eq!(classify(s(429), None), ApiErrorKind::Throttled);
        assert_eq!(
            classify(s(401), Some("APIGW.0301")),
            ApiErrorKind::Unauthorized
        );
        assert_eq!(classify(s(404), Some("APIGW.0101")), ApiErrorKind::NotFound);
        assert_eq!(
            classify(s(400), Some("IOTDA.000006")),
            ApiErrorKind::BadRequest
        );
        for code in [408, 500, 502, 503, 504] {
            assert_eq!(classify(s(code), None), ApiErrorKind::Server);
        }
        assert_eq!(classify(s(409), None), ApiErrorKind::Other);
        for kind in [
            ApiErrorKind::Network,
            ApiErrorKind::Timeout,
            ApiErrorKind::Throttled,
            ApiErrorKind::Server,
            ApiErrorKind::Decode,
        ] {
            assert!(kind.is_transient());
        }
        for kind in [
            ApiErrorKind::Unauthorized,
            ApiErrorKind::Forbidden,
            ApiErrorKind::NotFound,
            ApiErrorKind::BadRequest,
            ApiErrorKind::Other,
        ] {
            assert!(!kind.is_transient());
        }
    }

    #[test]
    fn error_bodies_in_every_known_shape() {
        let both = |c: &str, m: &str| (Some(c.to_owned()), Some(m.to_owned()));
        assert_eq!(
            parse_error_body(br#"{"error_code":"IOTDA.000006","error_msg":"Invalid input data."}"#),
            both("IOTDA.000006", "Invalid input data.")
        );
        assert_eq!(
            parse_error_body(
                br#"{"code":"APIGW.0301","message":"Incorrect IAM authentication information"}"#
            ),
            both("APIGW.0301", "Incorrect IAM authentication information")
        );
        assert_eq!(
            parse_error_body(br#"{"error":{"code":"APIGW.0308","message":"throttled"}}"#),
            both("APIGW.0308", "throttled")
        );
        assert_eq!(parse_error_body(b""), (None, None));
        assert_eq!(parse_error_body(b"<html>bad gateway</html>"), (None, None));
        assert_eq!(parse_error_body(b"[1,2]"), (None, None));
        assert_eq!(parse_error_body(br#"{"error_code":"#), (None, None));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("99999999999999999999", now), None);
        assert_eq!(
            parse_retry_after("999999999", now),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn display_names_what_a_person_can_act_on() {
        let e = ApiError::new(ApiErrorKind::Throttled)
            .with_status(403)
            .with_error("IOTDA.021101", "request rate limit")
            .with_request_id("req-1")
            .with_retry_after(Duration::from_secs(3));
        assert_eq!(
            e.to_string(),
            "throttled (HTTP 403): IOTDA.021101: request rate limit; retry after 3s [request id req-1]"
        );
    }
}
