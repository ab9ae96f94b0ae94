//! The signed client for "Query Instance Task Details": [`IotdaClient`], its builder, and
//! [`ApiError`], what a failed call says. The submodules hold the credentials, the endpoints
//! and the signer.

pub(crate) mod answer;
pub mod budget;
mod builder;
pub mod credentials;
pub mod endpoint;
pub(crate) mod error;
pub(crate) mod feed;
mod iam;
mod keys;
pub mod provider;
#[cfg(feature = "redis")]
pub mod shared;
pub mod signer;
pub(crate) mod skew;

pub use self::builder::{BuildError, IotdaClientBuilder};
pub use self::error::{ApiError, ApiErrorKind};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use self::budget::{Budget, BudgetStats};
use self::endpoint::Endpoint;
use self::feed::{Feed, Feeds};
use self::keys::{Keys, Signing};
use crate::ids::{InstanceId, ProjectId, TaskId};
use crate::model::InstanceTask;

/// The per-request timeout unless [`IotdaClientBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a response body that are read unless
/// [`IotdaClientBuilder::max_body_bytes`] says otherwise. A task is well under 2 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

const X_PROJECT_ID: HeaderName = HeaderName::from_static("x-project-id");

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
    /// The keys requests are signed with.
    keys: Keys,
    /// Where the keys came from: "given", or the provider's name.
    source: String,
    project_id: ProjectId,
    timeout: Duration,
    max_body_bytes: usize,
    /// The server's clock minus ours, in milliseconds, learnt from a refused signature.
    clock_offset_ms: AtomicI64,
    /// The request budget every wait on this client shares.
    budget: Arc<Budget>,
    /// The tasks being waited for, so that waits on one task share its polls.
    feeds: Feeds,
}

impl std::fmt::Debug for IotdaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IotdaClient")
            .field("endpoint", &self.inner.endpoint)
            .field("project_id", &self.inner.project_id)
            .field("credentials", &self.inner.keys)
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
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The project requests are made in.
    #[must_use]
    pub fn project_id(&self) -> &ProjectId {
        &self.inner.project_id
    }

    /// Where the client's credentials came from: `given` (to the builder), or the name of the
    /// provider that supplied them (e.g. `ECS metadata`). Never the credentials themselves.
    #[must_use]
    pub fn credentials_source(&self) -> &str {
        &self.inner.source
    }

    /// How many times the client fetched credentials from its provider (0 for fixed ones).
    #[must_use]
    pub fn credential_fetches(&self) -> u64 {
        match &self.inner.keys {
            Keys::Fixed(_) => 0,
            Keys::Fetched(refresher) => refresher.fetches(),
        }
    }

    /// The per-request timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// What the request budget has seen: requests, throttled answers, time spent waiting for
    /// a token, and the adaptive rate once engaged.
    #[must_use]
    pub fn budget_stats(&self) -> BudgetStats {
        self.inner.budget.stats()
    }

    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.inner.budget
    }

    /// The feed of the task at `url`, which every wait on it through this client shares.
    pub(crate) fn feed(&self, url: Url) -> Arc<Feed> {
        self.inner.feeds.join(url, |url| {
            let client = self.clone();
            let request: feed::Request = Arc::new(move |url| {
                let client = client.clone();
                Box::pin(async move { client.fetch(&url, None).await })
            });
            Feed::new(url, request).with_budget(self.inner.budget.clone())
        })
    }

    /// The URL of one task: `{endpoint}/v5/iot/{project_id}/iotda-instances/{instance_id}/tasks/{task_id}`.
    #[must_use]
    #[allow(
        clippy::missing_panics_doc,
        reason = "cannot panic: an endpoint is an http(s) URL, checked at build, and has a path"
    )]
    pub fn task_url(&self, instance_id: &InstanceId, task_id: &TaskId) -> Url {
        let mut url = self.tasks_url(instance_id);
        url.path_segments_mut()
            .expect("an endpoint URL has a path")
            .push(task_id.as_str());
        url
    }

    /// Queries one task: one call, one request, no retries (retrying is the watcher's job).
    /// The request takes its turn in the client's [budget](budget::RequestBudget) first.
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
        self.inner.budget.acquire().await;
        self.fetch(&url, Some(timeout)).await
    }

    /// Lists an instance's tasks, newest first: `ListInstanceTasks`, a signed GET of
    /// `/v5/iot/{project_id}/iotda-instances/{instance_id}/tasks`, 500 records a page, each
    /// page after the first from the last record's id (`marker`), until the pages hold the
    /// `count` the service gave. Each page takes its turn in the client's
    /// [budget](budget::RequestBudget). The service lists the tasks of the last 180 days;
    /// listed tasks carry no progress.
    ///
    /// ```no_run
    /// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
    /// let instance = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    /// for task in client.list_instance_tasks(&instance).await? {
    ///     println!("{:?} {:?} {:?}", task.task_id, task.task_type, task.status);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// An [`ApiError`] for the first page that fails, as for [`IotdaClient::instance_task`].
    pub async fn list_instance_tasks(
        &self,
        instance_id: &InstanceId,
    ) -> Result<Vec<InstanceTask>, ApiError> {
        /// Pages followed at most: the service keeps a few dozen tasks an instance.
        const MOST_PAGES: usize = 100;
        let mut tasks: Vec<InstanceTask> = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MOST_PAGES {
            let mut url = self.tasks_url(instance_id);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", "500");
                if let Some(marker) = &marker {
                    query.append_pair("marker", marker);
                }
            }
            self.inner.budget.acquire().await;
            let page: crate::model::TaskPage = self
                .send(reqwest::Method::GET, &url, Some(self.inner.timeout))
                .await?;
            let got = page.tasks.len();
            tasks.extend(page.tasks);
            let count = page.page.count.and_then(|n| usize::try_from(n).ok());
            let next = page.page.marker.filter(|m| !m.is_empty());
            let complete = count.is_none_or(|n| tasks.len() >= n);
            if got == 0 || complete || next.is_none() || next == marker {
                break;
            }
            marker = next;
        }
        Ok(tasks)
    }

    /// The URL of an instance's tasks.
    fn tasks_url(&self, instance_id: &InstanceId) -> Url {
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
            ]);
        url
    }

    /// Retries a task that FAILED: `RetryInstanceTask`, a signed POST of
    /// `{task URL}/retry` with an empty body, answered with the task as the service restarts
    /// it. One call, one request, no retries; it takes its turn in the client's
    /// [budget](budget::RequestBudget) first. A retried task may fail again for the same
    /// reason, and running it again may cost money: see
    /// [`TaskWatcher::retry_failed`](crate::TaskWatcher::retry_failed).
    ///
    /// # Errors
    /// An [`ApiError`], as for [`IotdaClient::instance_task`]; the service refuses to retry a
    /// task that is not FAILED.
    pub async fn retry_task(
        &self,
        instance_id: &InstanceId,
        task_id: &TaskId,
    ) -> Result<InstanceTask, ApiError> {
        let url = retry_url(&self.task_url(instance_id, task_id));
        self.inner.budget.acquire().await;
        self.send(reqwest::Method::POST, &url, Some(self.inner.timeout))
            .await
    }

    /// One GET of a task's URL; `timeout` bounds it when given. The caller has taken a token
    /// from the budget; the answer is reported to it.
    pub(crate) async fn fetch(
        &self,
        url: &Url,
        timeout: Option<Duration>,
    ) -> Result<InstanceTask, ApiError> {
        self.send(reqwest::Method::GET, url, timeout).await
    }

    /// One signed request with an empty body, answered with a task: a GET of a task or a POST
    /// of its retry.
    pub(crate) async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &Url,
        timeout: Option<Duration>,
    ) -> Result<T, ApiError> {
        match &self.inner.keys {
            Keys::Fixed(signing) => self.send_signed(&method, url, timeout, signing).await,
            Keys::Fetched(refresher) => {
                let keys = refresher.current().await?;
                let answer = self.send_signed(&method, url, timeout, &keys.signing).await;
                match answer {
                    // Fetched keys refused: renewed once, and the request sent once more.
                    Err(error) if error.kind() == ApiErrorKind::Unauthorized => {
                        match refresher.after_refusal(&keys).await {
                            Some(renewed) => {
                                tracing::info!("sending again with renewed credentials");
                                let again = self
                                    .send_signed(&method, url, timeout, &renewed.signing)
                                    .await;
                                if again
                                    .as_ref()
                                    .is_err_and(|e| e.kind() == ApiErrorKind::Unauthorized)
                                {
                                    refresher.refused_again();
                                }
                                again
                            }
                            None => Err(error),
                        }
                    }
                    answer => answer,
                }
            }
        }
    }

    /// One request signed with `keys`.
    async fn send_signed<T: serde::de::DeserializeOwned>(
        &self,
        method: &reqwest::Method,
        url: &Url,
        timeout: Option<Duration>,
        keys: &Signing,
    ) -> Result<T, ApiError> {
        let local = SystemTime::now();
        let offset_ms = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let headers = self.signed_headers(method, url, skew::shift(local, offset_ms), keys);
        let mut request = reqwest::Request::new(method.clone(), url.clone());
        *request.headers_mut() = headers;
        *request.timeout_mut() = timeout;
        let sent_at = tokio::time::Instant::now();
        let response = self
            .inner
            .http
            .execute(request)
            .await
            .map_err(answer::transport_error)?;
        let answer = self.read_response(response).await;
        let throttled = answer
            .as_ref()
            .err()
            .filter(|e| e.kind() == ApiErrorKind::Throttled);
        self.inner.budget.answered(
            sent_at,
            throttled.is_some(),
            throttled.and_then(ApiError::retry_after),
        );
        answer.map_err(|mut error| {
            if error.kind() == ApiErrorKind::Unauthorized {
                self.learn_clock(&mut error, local, offset_ms);
            }
            error
        })
    }

    /// The headers of a request with an empty body to `url`, signed at `now`: `Host`,
    /// `X-Sdk-Date`, `X-Project-Id`, `X-Security-Token` and `Authorization`, or
    /// `X-Auth-Token` for an IAM token.
    fn signed_headers(
        &self,
        method: &reqwest::Method,
        url: &Url,
        now: SystemTime,
        keys: &Signing,
    ) -> HeaderMap {
        let inner = &*self.inner;
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::HOST, inner.host_value.clone());
        headers.insert(X_PROJECT_ID, inner.project_value.clone());
        keys.authorize(
            method.as_str(),
            url,
            now,
            &[
                ("host", inner.host.as_str()),
                ("x-project-id", inner.project_id.as_str()),
            ],
            &mut headers,
        );
        headers
    }
}

/// The URL of a task's retry: `{task URL}/retry`.
pub(crate) fn retry_url(task: &Url) -> Url {
    let mut url = task.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push("retry");
    }
    url
}

#[cfg(test)]
mod tests {
    use super::credentials::Credentials;
    use super::*;

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
        let Keys::Fixed(keys) = &client.inner.keys else {
            panic!("given credentials are fixed");
        };
        let headers = client.signed_headers(&reqwest::Method::GET, &url, now, keys);
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
