//! Building a client: every setting checked once, at [`IotdaClientBuilder::build`], or at
//! [`IotdaClientBuilder::resolve`], which also finds the credentials and project id that were
//! not given.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{Budget, RequestBudget};
use super::credentials::Credentials;
use super::endpoint::{Endpoint, EndpointError};
use super::keys::{Keys, Refresher, Signing};
use super::provider::{NoCredentials, ProvideCredentials, ProviderChain};
use super::{
    ascii_value, iam, Inner, IotdaClient, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT, USER_AGENT,
};
use crate::ids::ProjectId;

/// Builds an [`IotdaClient`]; settings are checked once, in [`IotdaClientBuilder::build`]
/// (everything given) or [`IotdaClientBuilder::resolve`] (credentials and project id found
/// when not given).
#[derive(Default)]
#[must_use]
pub struct IotdaClientBuilder {
    region: Option<String>,
    url: Option<String>,
    credentials: Option<Credentials>,
    provider: Option<Box<dyn ProvideCredentials>>,
    project_id: Option<ProjectId>,
    timeout: Option<Duration>,
    max_body_bytes: Option<usize>,
    http: Option<reqwest::Client>,
    budget: Option<RequestBudget>,
    #[cfg(feature = "redis")]
    shared: Option<super::shared::SharedBudget>,
}

/// Shows the settings, but not an endpoint URL (it may hold a password) nor a secret.
impl std::fmt::Debug for IotdaClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("IotdaClientBuilder");
        f.field("region", &self.region)
            .field("custom_endpoint", &self.url.is_some())
            .field("credentials", &self.credentials)
            .field(
                "provider",
                &self.provider.as_ref().map(ProvideCredentials::name),
            )
            .field("project_id", &self.project_id)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http_client", &self.http.is_some())
            .field("budget", &self.budget);
        #[cfg(feature = "redis")]
        f.field("shared_budget", &self.shared);
        f.finish()
    }
}

/// What a client's keys are built from.
enum KeySource {
    Fixed(Credentials, String),
    Fetched(Arc<Refresher>),
}

impl IotdaClientBuilder {
    /// Sends requests to the `iotda-mgmt` host of `region` (see [`Endpoint::for_region`]),
    /// unless an [`endpoint`](Self::endpoint) is given; the region also names the project
    /// [`resolve`](Self::resolve) looks up.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to `url` instead of the region's host (see [`Endpoint::custom`]).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// How requests are authenticated: fixed credentials, never fetched again.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Where [`resolve`](Self::resolve) fetches credentials, and renews them before they
    /// expire, when none are [given](Self::credentials); by default the official SDKs'
    /// chain, [`ProviderChain::from_env`].
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.provider = Some(Box::new(provider));
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

    /// The request budget every wait on this client (and its clones) shares: see
    /// [`RequestBudget`]. Default: no fixed cap, the adaptive limiter on.
    pub fn budget(mut self, budget: RequestBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Shares the [budget](Self::budget) with every process that names the same Redis server
    /// and scope: its limits become the fleet's, and a throttle seen by any process slows them
    /// all. See [`shared`](super::shared) for what happens when Redis fails (the process paces
    /// itself until it answers again).
    ///
    /// ```no_run
    /// use iotda_task_watcher::client::budget::RequestBudget;
    /// use iotda_task_watcher::client::shared::SharedBudget;
    /// use iotda_task_watcher::{Credentials, IotdaClient, ProjectId};
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = IotdaClient::builder()
    ///     .region("cn-north-4")
    ///     .credentials(Credentials::from_env()?)
    ///     .project_id(ProjectId::from_env()?)
    ///     // 40 requests a second for the whole fleet.
    ///     .budget(RequestBudget::default().with_max_rps(40.0, 40))
    ///     .shared_budget(SharedBudget::redis("redis://10.0.0.5:6379/0")?)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn shared_budget(mut self, shared: super::shared::SharedBudget) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Checks the settings and builds the client, with the credentials and project id given.
    ///
    /// # Errors
    /// [`BuildError`] when the endpoint, credentials or project id is missing or invalid.
    pub fn build(mut self) -> Result<IotdaClient, BuildError> {
        let endpoint = self.target()?;
        let credentials = self
            .credentials
            .take()
            .ok_or(BuildError::MissingCredentials)?;
        let project_id = self.project_id.take().ok_or(BuildError::MissingProjectId)?;
        self.finish(
            endpoint,
            KeySource::Fixed(credentials, "given".into()),
            project_id,
        )
    }

    /// Builds the client, finding what was not given: credentials from the
    /// [provider](Self::credentials_provider) (by default the official SDKs' chain, see
    /// [`provider`](super::provider)), and the project id from the provider, else from IAM by
    /// the [region](Self::region) (`GET {iam}/v3/projects?name={region}`, signed). Credentials
    /// that expire are renewed before they do, for as long as the client lives.
    ///
    /// ```no_run
    /// use iotda_task_watcher::IotdaClient;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // On an ECS instance with an agency, in a CCE pod, or with the SDKs' variables or
    /// // profile file: nothing else to configure.
    /// let client = IotdaClient::builder().region("cn-north-4").resolve().await?;
    /// println!("credentials from {}", client.credentials_source());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`BuildError::NoCredentials`] naming each provider tried and why it gave nothing;
    /// [`BuildError::ProjectLookup`] when the project cannot be found; and the errors of
    /// [`build`](Self::build).
    pub async fn resolve(mut self) -> Result<IotdaClient, BuildError> {
        let endpoint = self.target()?;
        let (keys, found_project) = match self.credentials.take() {
            Some(credentials) => (KeySource::Fixed(credentials, "given".into()), None),
            None => {
                let chain = match self.provider.take() {
                    Some(provider) => ProviderChain::empty().with(provider),
                    None => ProviderChain::from_env(),
                };
                let (provider, set) = chain.resolve().await.map_err(BuildError::NoCredentials)?;
                let project = set.project_id().cloned();
                let keys = if set.expires_at().is_some() {
                    KeySource::Fetched(
                        Refresher::new(provider, &set)
                            .map(Arc::new)
                            .map_err(BuildError::InvalidCredentials)?,
                    )
                } else {
                    // Keys that do not expire are never fetched again.
                    KeySource::Fixed(set.credentials().clone(), provider.name().to_owned())
                };
                (keys, project)
            }
        };
        let project_id = match self.project_id.take().or(found_project) {
            Some(project) => project,
            None => {
                let region = self.region.clone().ok_or(BuildError::MissingProjectId)?;
                let (fixed, fetched);
                let signing = match &keys {
                    KeySource::Fixed(credentials, _) => {
                        fixed = Signing::new(credentials.clone())
                            .map_err(BuildError::InvalidCredentials)?;
                        &fixed
                    }
                    KeySource::Fetched(refresher) => {
                        fetched = refresher
                            .current()
                            .await
                            .map_err(|e| BuildError::ProjectLookup(e.to_string()))?;
                        &fetched.signing
                    }
                };
                iam::project_id(&region, signing).await?
            }
        };
        self.finish(endpoint, keys, project_id)
    }

    fn target(&self) -> Result<Endpoint, BuildError> {
        Ok(match (&self.url, &self.region) {
            (Some(url), _) => Endpoint::custom(url)?,
            (None, Some(region)) => Endpoint::for_region(region)?,
            (None, None) => return Err(BuildError::MissingEndpoint),
        })
    }

    fn finish(
        mut self,
        endpoint: Endpoint,
        keys: KeySource,
        project_id: ProjectId,
    ) -> Result<IotdaClient, BuildError> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeout);
        }
        let budget = Arc::new(self.make_budget(&project_id));
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(5))
                .https_only(false)
                .build()
                .map_err(BuildError::Http)?,
        };
        let (keys, source) = match keys {
            KeySource::Fixed(credentials, source) => (
                Keys::Fixed(Signing::new(credentials).map_err(BuildError::InvalidCredentials)?),
                source,
            ),
            KeySource::Fetched(refresher) => {
                let source = refresher.provider().to_owned();
                (Keys::Fetched(refresher), source)
            }
        };
        let host = endpoint.host_header();
        Ok(IotdaClient {
            inner: Arc::new(Inner {
                http,
                host_value: ascii_value(host.clone()),
                project_value: ascii_value(project_id.to_string()),
                host,
                endpoint,
                keys,
                source,
                project_id,
                timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
                max_body_bytes: self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                clock_offset_ms: AtomicI64::new(0),
                budget,
                feeds: super::feed::Feeds::default(),
            }),
        })
    }
}

impl IotdaClientBuilder {
    /// The client's budget, shared through Redis when asked.
    fn make_budget(&mut self, project_id: &ProjectId) -> Budget {
        let config = self.budget.unwrap_or_default();
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared.take() {
            let fleet = super::shared::Shared::new(
                shared,
                project_id.as_str(),
                &config.buckets(),
                config.adaptive(),
            );
            return Budget::with_fleet(config, std::sync::Arc::new(fleet));
        }
        let _ = project_id;
        Budget::new(config)
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither a region nor an endpoint was given.
    #[error("no region or endpoint was given")]
    MissingEndpoint,
    /// No credentials were given to [`build`](IotdaClientBuilder::build) (which fetches
    /// none: [`resolve`](IotdaClientBuilder::resolve) does).
    #[error("no credentials were given")]
    MissingCredentials,
    /// No credentials were given to [`resolve`](IotdaClientBuilder::resolve), and no
    /// provider had any: the source says what each provider said.
    #[error("no credentials were given, and none were found")]
    NoCredentials(#[source] NoCredentials),
    /// The project id was not given, and IAM's answer to its look-up named none.
    #[error("the project id could not be looked up: {0}")]
    ProjectLookup(String),
    /// A service the client needs to start did not answer, or answered with a server error
    /// or a throttle: IAM, for the project look-up. Building again later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// No project id was given, nor a region to look it up by.
    #[error("no project id was given, nor a region to look it up by")]
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
    #[error("the HTTP client could not be built")]
    Http(#[source] reqwest::Error),
}

impl BuildError {
    /// Whether building again later may succeed: a service the client needs to start (IAM,
    /// a credentials provider's) did not answer, or answered with a server error or a
    /// throttle. Everything else needs another setting.
    ///
    /// ```
    /// use iotda_task_watcher::client::BuildError;
    /// assert!(BuildError::Unavailable("IAM did not answer".into()).is_transient());
    /// assert!(!BuildError::MissingProjectId.is_transient());
    /// ```
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::NoCredentials(none) => none
                .tried()
                .last()
                .is_some_and(|(_, why)| why.is_transient()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
