//! [`EcsMetadata`]: the temporary keys of an ECS instance's agency.

use futures::future::BoxFuture;
use reqwest::StatusCode;
use zeroize::Zeroizing;

use super::http::{client, describe, read, refused, temporary};
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::env::{var, ENV_METADATA_ENDPOINT};

/// The metadata service's address on every ECS instance.
const DEFAULT_BASE: &str = "http://169.254.169.254";
/// How long the first request may take before the service is taken to be absent.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// What the service says on an instance with no agency.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

/// The ECS instance metadata service: the keys of the instance's agency
/// (`GET {base}/openstack/latest/securitykey`), with the optional session token first
/// (`PUT {base}/meta-data/latest/api/token`; a service without it answers 404, 405 or 503,
/// and the keys are asked for without one). `{base}` is `IOTDA_METADATA_ENDPOINT`, by default
/// `http://169.254.169.254`.
///
/// Off ECS nothing answers there: the provider gives up after one second and does not apply.
/// An instance with no agency does not apply either, and says so. A 401 for another reason is
/// asked again once, with a new session token.
#[derive(Debug)]
pub struct EcsMetadata {
    http: reqwest::Client,
    base: Option<String>,
}

impl EcsMetadata {
    /// The provider; it reads `IOTDA_METADATA_ENDPOINT` each time it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self {
            http: client(true),
            base: None,
        }
    }

    /// The provider of the metadata service at `base` (e.g. `http://169.254.169.254`),
    /// whatever the environment says.
    #[must_use]
    pub fn at(base: impl Into<String>) -> Self {
        Self {
            http: client(true),
            base: Some(base.into()),
        }
    }

    fn base(&self) -> String {
        self.base
            .clone()
            .or_else(|| var(ENV_METADATA_ENDPOINT).ok())
            .unwrap_or_else(|| DEFAULT_BASE.to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    /// The session token, or `None` where the service has none.
    async fn session_token(&self, base: &str) -> Result<Option<Zeroizing<String>>, ProviderError> {
        // The first request probes for the service: off ECS, whatever takes the connection
        // at the address gets a second to answer.
        let response = self
            .http
            .put(format!("{base}/meta-data/latest/api/token"))
            .header("X-Metadata-Token-Ttl-Seconds", "21600")
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(base, e))?;
        match response.status() {
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::SERVICE_UNAVAILABLE => Ok(None),
            status if status.is_success() => {
                let (_, body) = read(NAME, response).await?;
                let token = String::from_utf8(body.to_vec()).map_err(|_| {
                    ProviderError::Failed(format!("{NAME}: the session token is not text"))
                })?;
                Ok(Some(Zeroizing::new(token.trim().to_owned())))
            }
            status => Err(refused(
                status,
                format!(
                    "{NAME}: the session token was refused (HTTP {})",
                    status.as_u16()
                ),
            )),
        }
    }

    /// One request for the keys: the answer's status and body.
    async fn security_key(
        &self,
        base: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ProviderError> {
        let mut request = self
            .http
            .get(format!("{base}/openstack/latest/securitykey"));
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                ProviderError::Failed(format!("{NAME}: the session token is not a header value"))
            })?;
            value.set_sensitive(true);
            request = request.header("X-Metadata-Token", value);
        }
        let response = request.send().await.map_err(|e| unreachable(base, e))?;
        read(NAME, response).await
    }
}

impl Default for EcsMetadata {
    fn default() -> Self {
        Self::new()
    }
}

const NAME: &str = "ECS metadata";

/// A request that got no answer: off ECS, the provider does not apply.
fn unreachable(base: &str, error: reqwest::Error) -> ProviderError {
    let error = describe(&error.without_url());
    ProviderError::NotApplicable(format!(
        "no metadata service answers at {base} (not an ECS instance?): {error}"
    ))
}

impl ProvideCredentials for EcsMetadata {
    fn name(&self) -> &str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let base = self.base();
            let mut token = self.session_token(&base).await?;
            let mut asked_again = false;
            loop {
                let (status, body) = self
                    .security_key(&base, token.as_deref().map(String::as_str))
                    .await?;
                if status.is_success() {
                    return temporary(NAME, &body);
                }
                let text = String::from_utf8_lossy(&body);
                if status == StatusCode::UNAUTHORIZED && text.contains(NO_AGENCY) {
                    return Err(ProviderError::NotApplicable(format!(
                        "the ECS instance has no agency: {NO_AGENCY}"
                    )));
                }
                if status == StatusCode::UNAUTHORIZED && !asked_again {
                    // The session token may have expired: a new one, once.
                    asked_again = true;
                    token = self.session_token(&base).await?;
                    continue;
                }
                return Err(refused(
                    status,
                    format!(
                        "{NAME}: the security key was refused (HTTP {})",
                        status.as_u16()
                    ),
                ));
            }
        })
    }
}
