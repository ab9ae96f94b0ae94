//! The signed client for "Query Instance Task Details".

pub(crate) mod credentials;
pub(crate) mod endpoint;
pub(crate) mod error;
pub mod signer;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use self::credentials::Auth;
use self::error::{classify, parse_error_body, parse_retry_after};
use crate::{
    ApiError, ApiErrorKind, Credentials, Endpoint, EndpointError, InstanceId, InstanceTask,
    ProjectId, TaskId,
};

/// The per-request timeout unless [`IotdaClientBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a response body that are read unless
/// [`IotdaClientBuilder::max_body_bytes`] says otherwise. A task is well under 2 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

const X_SDK_DATE: HeaderName = HeaderName::from_static("x-sdk-date");
const X_PROJECT_ID: HeaderName = HeaderName::from_static("x-project-id");
const X_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-security-token");
const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// A header value from text that is ASCII by construction (hex, dates, validated ids).
fn ascii_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("the value is visible ASCII")
}

/// A client for the instance-task API. Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// use iotda_task_watcher::{Credentials, IotdaClient, ProjectId};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = IotdaClient::builder()
///     .region("cn-north-4")
///     .credentials(Credentials::from_env()?)
///     .project_id(ProjectId::from_env()?)
///     .build()?;
/// let task = client
///     .instance_task(&"a1b2c3d4-0000-1111-2222-333344445555".parse()?, &"075f413d-a3bb-4243-974d-8eb9221c1234".parse()?)
///     .await?;
/// println!("{:?} {:?}", task.status, task.progress_percent());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IotdaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoint: Endpoint,
    host: String,
    host_value: HeaderValue,
    project_value: HeaderValue,
    /// `X-Security-Token` or `X-Auth-Token`, checked once at build.
    token_value: Option<HeaderValue>,
    credentials: Credentials,
    project_id: ProjectId,
    timeout: Duration,
    max_body_bytes: usize,
    /// The server's clock minus ours, in milliseconds, learnt from a refused signature.
    clock_offset_ms: AtomicI64,
}

impl std::fmt::Debug for IotdaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IotdaClient")
            .field("endpoint", &self.inner.endpoint)
            .field("project_id", &self.inner.project_id)
            .field("credentials", &self.inner.credentials)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl IotdaClient {
    /// Starts a builder.
    pub fn builder() -> IotdaClientBuilder {
        IotdaClientBuilder::default()
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The project requests are made in.
    pub fn project_id(&self) -> &ProjectId {
        &self.inner.project_id
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The URL of one task: `{endpoint}/v5/iot/{project_id}/iotda-instances/{instance_id}/tasks/{task_id}`.
    pub fn task_url(&self, instance_id: &InstanceId, task_id: &TaskId) -> Url {
        let mut url = self.inner.endpoint.as_url().clone();
        url.path_segments_mut()
            .expect("an endpoint URL has a path")
            .clear()
            .extend([
                "v5",
                "iot",
                self.inner.project_id.as_str(),
                "iotda-instances",
                instance_id.as_str(),
                "tasks",
                task_id.as_str(),
            ]);
        url
    }

    /// Queries one task: one call, one request, no retries (retrying is the watcher's job).
    ///
    /// # Errors
    /// An [`ApiError`] for a failed request or an error answer; [`ApiError::is_transient`] says
    /// whether trying again may help.
    pub async fn instance_task(
        &self,
        instance_id: &InstanceId,
        task_id: &TaskId,
    ) -> Result<InstanceTask, ApiError> {
        self.instance_task_with_timeout(instance_id, task_id, self.inner.timeout)
            .await
    }

    /// [`IotdaClient::instance_task`] with a timeout for this request alone.
    ///
    /// # Errors
    /// As for [`IotdaClient::instance_task`].
    pub async fn instance_task_with_timeout(
        &self,
        instance_id: &InstanceId,
        task_id: &TaskId,
        timeout: Duration,
    ) -> Result<InstanceTask, ApiError> {
        let url = self.task_url(instance_id, task_id);
        self.fetch(&url, Some(timeout)).await
    }

    /// One GET of a task's URL; `timeout` bounds it when given.
    pub(crate) async fn fetch(
        &self,
        url: &Url,
        timeout: Option<Duration>,
    ) -> Result<InstanceTask, ApiError> {
        let local = SystemTime::now();
        let offset_ms = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let mut request = reqwest::Request::new(reqwest::Method::GET, url.clone());
        *request.headers_mut() = self.signed_headers(url, shift(local, offset_ms));
        *request.timeout_mut() = timeout;
        let response = self
            .inner
            .http
            .execute(request)
            .await
            .map_err(transport_error)?;
        let answer = self.read_response(response).await;
        answer.map_err(|mut error| {
            if error.kind() == ApiErrorKind::Unauthorized {
                self.learn_clock(&mut error, local, offset_ms);
            }
            error
        })
    }

    /// The headers of a GET of `url` signed at `now`: `Host`, `X-Sdk-Date`, `X-Project-Id`,
    /// `X-Security-Token` and `Authorization`, or `X-Auth-Token` for an IAM token.
    fn signed_headers(&self, url: &Url, now: SystemTime) -> HeaderMap {
        let inner = &*self.inner;
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::HOST, inner.host_value.clone());
        headers.insert(X_PROJECT_ID, inner.project_value.clone());
        match inner.credentials.auth() {
            Auth::AkSk {
                ak,
                sk,
                security_token,
            } => {
                let date = sdk_date(now);
                let signed = [
                    ("host", inner.host.as_str()),
                    ("x-project-id", inner.project_id.as_str()),
                    ("x-sdk-date", date.as_str()),
                    ("x-security-token", security_token.unwrap_or_default()),
                ];
                // The token is signed when there is one.
                let count = if security_token.is_some() { 4 } else { 3 };
                let request = signer::SignRequest {
                    method: "GET",
                    url,
                    headers: &signed[..count],
                    body: b"",
                };
                let auth = signer::authorization(ak, sk, &request);
                headers.insert(X_SDK_DATE, ascii_value(date));
                let mut auth = ascii_value(auth);
                auth.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, auth);
                if let Some(token) = &inner.token_value {
                    headers.insert(X_SECURITY_TOKEN, token.clone());
                }
            }
            Auth::IamToken(_) => {
                if let Some(token) = &inner.token_value {
                    headers.insert(X_AUTH_TOKEN, token.clone());
                }
            }
        }
        headers
    }

    async fn read_response(
        &self,
        mut response: reqwest::Response,
    ) -> Result<InstanceTask, ApiError> {
        let status = response.status();
        let body = read_bounded(&mut response, self.inner.max_body_bytes).await;
        tracing::debug!(
            url = %response.url(),
            status = status.as_u16(),
            request_id = header(&response, "x-request-id").unwrap_or("-"),
            bytes = body.as_ref().map_or(0, Vec::len),
            "instance task answered"
        );
        if status.is_success() {
            let why = match body {
                Ok(body) => match decode_task(&body) {
                    Ok(task) => return Ok(task),
                    Err(why) => Ok(why),
                },
                Err(e) => Err(e),
            };
            let error = error_from(&response, ApiErrorKind::Decode);
            return Err(match why {
                Ok(why) => why.into_error(error),
                Err(e) => e.into_error(error),
            });
        }
        let (error_code, error_msg) = body.as_deref().map(parse_error_body).unwrap_or_default();
        let mut error = error_from(&response, classify(status, error_code.as_deref()));
        error.parts.error_code = error_code;
        error.parts.error_msg = error_msg;
        Err(error)
    }

    /// A signature refused while the answer's `Date` is far from the time the request was
    /// signed at (`local` plus the offset then in use): the gateway refuses a stale
    /// `X-Sdk-Date`, so later requests are signed at the server's time and this one is worth
    /// retrying. Comparing with the signing time, not the clock now, lets every request signed
    /// before the correction learn it too.
    fn learn_clock(&self, error: &mut ApiError, local: SystemTime, offset_ms: i64) {
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

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error of `kind` with what the answer's headers say: status, request id, `Date` and
/// `Retry-After` (read against the answer's own `Date`, so that clocks need not agree). Only
/// failures pay for this.
fn error_from(response: &reqwest::Response, kind: ApiErrorKind) -> ApiError {
    let server_date = header(response, "date").and_then(|d| httpdate::parse_http_date(d).ok());
    let retry_after = header(response, "retry-after")
        .and_then(|v| parse_retry_after(v, server_date.unwrap_or_else(SystemTime::now)));
    let mut error = ApiError::new(kind);
    let parts = &mut error.parts;
    parts.status = Some(response.status());
    parts.request_id = header(response, "x-request-id").map(str::to_owned);
    parts.retry_after = retry_after;
    parts.server_date = server_date;
    error
}

/// Why a body did not decode as a task.
#[derive(Debug)]
pub(crate) struct DecodeError {
    detail: String,
    source: Option<serde_json::Error>,
}

impl DecodeError {
    /// Fills `base` with what went wrong, the decoder's error as its source.
    fn into_error(self, base: ApiError) -> ApiError {
        let error = base.with_detail(self.detail);
        match self.source {
            Some(source) => error.with_source(source),
            None => error,
        }
    }
}

/// Decodes a task; the body must be a JSON object (serde would also take an array as a struct).
pub(crate) fn decode_task(body: &[u8]) -> Result<InstanceTask, DecodeError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        let shown = if body.is_empty() {
            "empty"
        } else {
            "not a JSON object"
        };
        return Err(DecodeError {
            detail: format!("the body is {shown} ({} bytes)", body.len()),
            source: None,
        });
    }
    serde_json::from_slice(body).map_err(|e| DecodeError {
        detail: format!("the task did not decode: {e} ({} bytes)", body.len()),
        source: Some(e),
    })
}

/// Why a body could not be read in full.
enum BodyError {
    TooLarge(usize),
    Transport(reqwest::Error),
}

impl BodyError {
    /// Fills `base` with what went wrong; a transport failure changes its kind.
    fn into_error(self, base: ApiError) -> ApiError {
        match self {
            Self::TooLarge(limit) => {
                base.with_detail(format!("the body is larger than {limit} bytes"))
            }
            Self::Transport(e) => {
                let transport = transport_error(e);
                let mut error = base;
                error.parts.kind = transport.parts.kind;
                error.parts.detail = transport.parts.detail;
                error.parts.source = transport.parts.source;
                error
            }
        }
    }
}

async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: reqwest::Error) -> ApiError {
    let kind = if e.is_timeout() {
        ApiErrorKind::Timeout
    } else {
        ApiErrorKind::Network
    };
    // The error chain names the URL and the cause; neither holds a secret.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::new(kind).with_detail(detail).with_source(e)
}

/// How far the server's `Date` may be from our clock before a refused signature is blamed on
/// the clocks. The gateway allows about 15 minutes.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

fn shift(t: SystemTime, ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t + d
    } else {
        t - d
    }
}

/// `X-Sdk-Date` for `now`: `YYYYMMDDTHHMMSSZ` in UTC.
pub(crate) fn sdk_date(now: SystemTime) -> String {
    jiff::Timestamp::try_from(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime(signer::DATE_FORMAT)
        .to_string()
}

/// Builds an [`IotdaClient`]; settings are checked once, in [`IotdaClientBuilder::build`].
#[derive(Default)]
#[must_use]
pub struct IotdaClientBuilder {
    target: Option<Target>,
    credentials: Option<Credentials>,
    project_id: Option<ProjectId>,
    timeout: Option<Duration>,
    max_body_bytes: Option<usize>,
    http: Option<reqwest::Client>,
}

enum Target {
    Region(String),
    Url(String),
}

impl IotdaClientBuilder {
    /// Sends requests to the `iotda-mgmt` host of `region` (see [`Endpoint::for_region`]).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.target = Some(Target::Region(region.into()));
        self
    }

    /// Sends requests to `url` instead (see [`Endpoint::custom`]); replaces any region.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Url(url.into()));
        self
    }

    /// How requests are authenticated.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The project the instance belongs to.
    pub fn project_id(mut self, project_id: ProjectId) -> Self {
        self.project_id = Some(project_id);
        self
    }

    /// The timeout of each request, from connecting to the end of the body. Default 10 s;
    /// zero is refused by [`build`](Self::build) with [`BuildError::ZeroTimeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The most bytes of a response body to read; a longer body is an error. Default 256 KiB.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = Some(limit);
        self
    }

    /// Uses `client` for requests, so that many clients and watchers share one connection pool.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Checks the settings and builds the client.
    ///
    /// # Errors
    /// [`BuildError`] when the endpoint, credentials or project id is missing or invalid.
    pub fn build(self) -> Result<IotdaClient, BuildError> {
        let endpoint = match self.target.ok_or(BuildError::MissingEndpoint)? {
            Target::Region(region) => Endpoint::for_region(&region)?,
            Target::Url(url) => Endpoint::custom(&url)?,
        };
        let credentials = self.credentials.ok_or(BuildError::MissingCredentials)?;
        let project_id = self.project_id.ok_or(BuildError::MissingProjectId)?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeout);
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(5))
                .https_only(false)
                .build()
                .map_err(|e| BuildError::Http(Arc::new(e)))?,
        };
        let token_value = match credentials.auth() {
            Auth::AkSk {
                ak, security_token, ..
            } => {
                if ak.is_empty() || !ak.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    return Err(BuildError::InvalidCredentials(
                        "the access key must be visible ASCII without ','",
                    ));
                }
                security_token.map(secret_value).transpose()?
            }
            Auth::IamToken(token) => Some(secret_value(token)?),
        };
        let host = endpoint.host_header();
        Ok(IotdaClient {
            inner: Arc::new(Inner {
                http,
                host_value: ascii_value(host.clone()),
                project_value: ascii_value(project_id.to_string()),
                token_value,
                host,
                endpoint,
                credentials,
                project_id,
                timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
                max_body_bytes: self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                clock_offset_ms: AtomicI64::new(0),
            }),
        })
    }
}

/// A secret as a header value, marked sensitive; refused without echoing it.
fn secret_value(secret: &str) -> Result<HeaderValue, BuildError> {
    let mut value = HeaderValue::from_str(secret).map_err(|_| {
        BuildError::InvalidCredentials("a token holds characters a header cannot carry")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Why a client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither a region nor an endpoint was given.
    #[error("no region or endpoint was given")]
    MissingEndpoint,
    /// No credentials were given.
    #[error("no credentials were given")]
    MissingCredentials,
    /// No project id was given.
    #[error("no project id was given")]
    MissingProjectId,
    /// The endpoint cannot be used.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The credentials cannot be sent (the secret itself is never shown).
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    /// The request timeout is zero: every request would time out before it is sent.
    #[error("the request timeout is zero")]
    ZeroTimeout,
    /// The HTTP client could not be built; the source is reqwest's error.
    #[error("the HTTP client could not be built: {0}")]
    Http(#[source] Arc<reqwest::Error>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_date_is_utc_basic_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        assert_eq!(sdk_date(t), "20240101T000000Z");
    }

    #[test]
    fn build_refuses_what_is_missing() {
        let creds = || Credentials::aksk("a", "b");
        let project = || ProjectId::new("p").unwrap();
        assert!(matches!(
            IotdaClient::builder().build().unwrap_err(),
            BuildError::MissingEndpoint
        ));
        assert!(matches!(
            IotdaClient::builder()
                .region("cn-north-4")
                .project_id(project())
                .build()
                .unwrap_err(),
            BuildError::MissingCredentials
        ));
        assert!(matches!(
            IotdaClient::builder()
                .region("cn-north-4")
                .credentials(creds())
                .build()
                .unwrap_err(),
            BuildError::MissingProjectId
        ));
        let zero = IotdaClient::builder()
            .region("cn-north-4")
            .credentials(creds())
            .project_id(project())
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(zero, BuildError::ZeroTimeout), "{zero}");
        let err = IotdaClient::builder()
            .endpoint("http://example.com")
            .credentials(creds())
            .project_id(project())
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::Endpoint(EndpointError::InsecureRemote { .. })
        ));
    }

    #[test]
    fn the_task_url_follows_the_api_page() {
        let client = IotdaClient::builder()
            .region("cn-north-4")
            .credentials(Credentials::aksk("a", "b"))
            .project_id(ProjectId::new("0123456789abcdef0123456789abcdef").unwrap())
            .build()
            .unwrap();
        let url = client.task_url(
            &"a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap(),
            &"075f413d-a3bb-4243-974d-8eb9221c1234".parse().unwrap(),
        );
        assert_eq!(
            url.as_str(),
            "https://iotda-mgmt.cn-north-4.myhuaweicloud.com/v5/iot/0123456789abcdef0123456789abcdef/iotda-instances/a1b2c3d4-0000-1111-2222-333344445555/tasks/075f413d-a3bb-4243-974d-8eb9221c1234"
        );
    }

    #[test]
    fn signed_headers_reproduce_the_service_facts_vector() {
        let client = IotdaClient::builder()
            .region("cn-north-4")
            .credentials(Credentials::aksk("AccessKey", "SecretKey"))
            .project_id(ProjectId::new("0123456789abcdef0123456789abcdef").unwrap())
            .build()
            .unwrap();
        let url = client.task_url(
            &"a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap(),
            &"075f413d-a3bb-4243-974d-8eb9221c1234".parse().unwrap(),
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        let headers = client.signed_headers(&url, now);
        assert_eq!(headers["x-sdk-date"], "20240101T000000Z");
        assert_eq!(headers["host"], "iotda-mgmt.cn-north-4.myhuaweicloud.com");
        assert_eq!(
            headers["authorization"],
            "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-project-id;x-sdk-date, \
             Signature=4d221ed5186e501465941a22ec4ea51a33dfed830521d64e428272af448c5d5c"
        );
        assert!(headers["authorization"].is_sensitive());
    }
}
