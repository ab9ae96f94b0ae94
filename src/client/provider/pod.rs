//! [`PodIdentity`]: the credentials of a CCE pod.

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::http::{client, no_answer, read, refused, temporary};
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::env::{var, ENV_CONTAINER_CREDENTIALS_URI, ENV_CONTAINER_TOKEN_FILE};

/// CCE Pod Identity: `POST` to `HC_CONTAINER_CREDENTIALS_FULL_URI` with the token in
/// `HC_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read again each time: it rotates) as its
/// `Authorization`, answered with temporary keys. Applies when both variables are set.
#[derive(Debug)]
pub struct PodIdentity {
    http: reqwest::Client,
    given: Option<(String, String)>,
}

impl PodIdentity {
    /// The provider; it reads the variables each time it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self {
            http: client(true),
            given: None,
        }
    }

    /// The provider of the service at `uri`, with the token in `token_file`, whatever the
    /// environment says.
    #[must_use]
    pub fn at(uri: impl Into<String>, token_file: impl Into<String>) -> Self {
        Self {
            http: client(true),
            given: Some((uri.into(), token_file.into())),
        }
    }
}

impl Default for PodIdentity {
    fn default() -> Self {
        Self::new()
    }
}

const NAME: &str = "CCE Pod Identity";

impl ProvideCredentials for PodIdentity {
    fn name(&self) -> &str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let missing = |e: crate::env::EnvError| ProviderError::NotApplicable(e.to_string());
            let (uri, file) = match &self.given {
                Some(given) => given.clone(),
                None => (
                    var(ENV_CONTAINER_CREDENTIALS_URI).map_err(missing)?,
                    var(ENV_CONTAINER_TOKEN_FILE).map_err(missing)?,
                ),
            };
            let token = std::fs::read_to_string(&file)
                .map(|t| Zeroizing::new(t.trim().to_owned()))
                .map_err(|e| {
                    ProviderError::Failed(format!("{NAME}: cannot read the token file {file}: {e}"))
                })?;
            let mut authorization =
                reqwest::header::HeaderValue::from_str(&token).map_err(|_| {
                    ProviderError::Failed(format!(
                        "{NAME}: the token file {file} does not hold a token"
                    ))
                })?;
            authorization.set_sensitive(true);
            let response = self
                .http
                .post(&uri)
                .header(reqwest::header::AUTHORIZATION, authorization)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .await
                .map_err(|e| no_answer(NAME, e))?;
            let (status, body) = read(NAME, response).await?;
            if !status.is_success() {
                return Err(refused(
                    status,
                    format!(
                        "{NAME}: the credentials service answered HTTP {}",
                        status.as_u16()
                    ),
                ));
            }
            temporary(NAME, &body)
        })
    }
}
