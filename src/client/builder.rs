//! Building a client: every setting checked once, at [`IotdaClientBuilder::build`].

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;

use super::budget::{Budget, RequestBudget};
use super::credentials::{Auth, Credentials};
use super::endpoint::{Endpoint, EndpointError};
use super::{ascii_value, Inner, IotdaClient, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT, USER_AGENT};
use crate::ids::ProjectId;

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
    budget: Option<RequestBudget>,
}

enum Target {
    Region(String),
    Url(String),
}

/// Shows the settings, but not an endpoint URL (it may hold a password) nor a secret.
impl std::fmt::Debug for IotdaClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Some(Target::Region(region)) => format!("region {region}"),
            Some(Target::Url(_)) => "a custom endpoint".to_owned(),
            None => "none".to_owned(),
        };
        f.debug_struct("IotdaClientBuilder")
            .field("target", &target)
            .field("credentials", &self.credentials)
            .field("project_id", &self.project_id)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http_client", &self.http.is_some())
            .field("budget", &self.budget)
            .finish()
    }
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

    /// The request budget every wait on this client (and its clones) shares: see
    /// [`RequestBudget`]. Default: no fixed cap, the adaptive limiter on.
    pub fn budget(mut self, budget: RequestBudget) -> Self {
        self.budget = Some(budget);
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
                .map_err(BuildError::Http)?,
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
                budget: Arc::new(Budget::new(self.budget.unwrap_or_default())),
                feeds: super::feed::Feeds::default(),
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
#[derive(Debug, thiserror::Error)]
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
    #[error("the HTTP client could not be built")]
    Http(#[source] reqwest::Error),
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
