//! Temporary keys for an identity from elsewhere: [`OidcSts`] (an OIDC id token traded at STS,
//! for CI systems and workloads with an OIDC identity) and a federated identity traded at IAM.

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde_json::json;
use zeroize::Zeroizing;

use super::http::{client, no_answer, read, refused, temporary};
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::env::{
    var, ENV_IAM_ENDPOINT, ENV_OIDC_AGENCY_URN, ENV_OIDC_DURATION_SECONDS, ENV_OIDC_ID_TOKEN,
    ENV_OIDC_PROVIDER_URN, ENV_OIDC_SESSION_NAME, ENV_OIDC_TOKEN_FILE, ENV_STS_ENDPOINT,
};

const DEFAULT_STS: &str = "https://sts.cn-north-4.myhuaweicloud.com";
const DEFAULT_IAM: &str = "https://iam.myhuaweicloud.com";
/// How long a federated identity's keys are asked to last: the official SDKs' 6 hours.
const FEDERATED_SECONDS: u32 = 21_600;

/// Where the id token is.
#[derive(Debug, Clone)]
enum IdToken {
    /// Given in the environment.
    Given(crate::client::credentials::Secret),
    /// In a file, read again at each renewal (id tokens are short-lived).
    File(PathBuf),
}

impl IdToken {
    fn read(&self, name: &str) -> Result<Zeroizing<String>, ProviderError> {
        match self {
            Self::Given(token) => Ok(Zeroizing::new(token.expose().to_owned())),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|t| Zeroizing::new(t.trim().to_owned()))
                .map_err(|e| {
                    ProviderError::Failed(format!(
                        "{name}: cannot read the id token file {}: {e}",
                        path.display()
                    ))
                }),
        }
    }
}

/// An OIDC id token traded at STS for temporary keys (`POST {sts}/v5/agencies/assume-with-oidc`,
/// unsigned), as the official Python SDK does. Applies when `HUAWEICLOUD_OIDC_PROVIDER_URN`,
/// `HUAWEICLOUD_OIDC_AGENCY_URN` and `HUAWEICLOUD_OIDC_ID_TOKEN` or
/// `HUAWEICLOUD_OIDC_TOKEN_FILE` are set; `HUAWEICLOUD_OIDC_SESSION_NAME` (default
/// `oidc-sts-session`) and `HUAWEICLOUD_OIDC_DURATION_SECONDS` (default 3600) are optional.
/// STS is `HUAWEICLOUD_SDK_STS_ENDPOINT`, by default `https://sts.cn-north-4.myhuaweicloud.com`.
/// A token file is read again at each renewal.
#[derive(Debug)]
pub struct OidcSts {
    http: reqwest::Client,
}

impl OidcSts {
    /// The provider; it reads the variables each time it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self {
            http: client(false),
        }
    }
}

impl Default for OidcSts {
    fn default() -> Self {
        Self::new()
    }
}

const OIDC: &str = "OIDC to STS";

impl ProvideCredentials for OidcSts {
    fn name(&self) -> &str {
        OIDC
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let missing = |e: crate::env::EnvError| ProviderError::NotApplicable(e.to_string());
            let provider = var(ENV_OIDC_PROVIDER_URN).map_err(missing)?;
            let agency = var(ENV_OIDC_AGENCY_URN).map_err(missing)?;
            let token = match (var(ENV_OIDC_ID_TOKEN), var(ENV_OIDC_TOKEN_FILE)) {
                (Ok(token), _) => IdToken::Given(crate::client::credentials::Secret::new(token)),
                (_, Ok(file)) => IdToken::File(file.into()),
                _ => {
                    return Err(ProviderError::NotApplicable(format!(
                        "neither {ENV_OIDC_ID_TOKEN} nor {ENV_OIDC_TOKEN_FILE} is set"
                    )))
                }
            };
            let session =
                var(ENV_OIDC_SESSION_NAME).unwrap_or_else(|_| "oidc-sts-session".to_owned());
            let duration: u32 = match var(ENV_OIDC_DURATION_SECONDS) {
                Ok(text) => text.parse().map_err(|_| {
                    ProviderError::Failed(format!(
                        "{OIDC}: {ENV_OIDC_DURATION_SECONDS} is not a number of seconds: {text:?}"
                    ))
                })?,
                Err(_) => 3600,
            };
            let sts = var(ENV_STS_ENDPOINT).unwrap_or_else(|_| DEFAULT_STS.to_owned());
            let url = format!("{}/v5/agencies/assume-with-oidc", sts.trim_end_matches('/'));
            let id_token = token.read(OIDC)?;
            let body = Zeroizing::new(
                json!({
                    "provider_urn": provider,
                    "agency_urn": agency,
                    "agency_session_name": session,
                    "id_token": id_token.as_str(),
                    "duration_seconds": duration,
                })
                .to_string(),
            );
            let response = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.as_bytes().to_vec())
                .send()
                .await
                .map_err(|e| no_answer(OIDC, e))?;
            let (status, body) = read(OIDC, response).await?;
            if !status.is_success() {
                return Err(refused(
                    status,
                    format!("{OIDC}: STS answered HTTP {}", status.as_u16()),
                ));
            }
            temporary(OIDC, &body)
        })
    }
}

/// A federated identity: the id token in a file traded at IAM for an IAM token
/// (`POST {iam}/v3.0/OS-AUTH/id-token/tokens` with `X-Idp-Id`), then the token for temporary
/// keys (`POST {iam}/v3.0/OS-CREDENTIAL/securitytokens`, 6 hours).
#[derive(Debug)]
pub(super) struct Federated {
    name: &'static str,
    idp: String,
    token: IdToken,
    iam: String,
    http: reqwest::Client,
}

impl Federated {
    /// The identity of `idp`, with its id token in `file`; IAM is `iam` (from a profile),
    /// else `HUAWEICLOUD_SDK_IAM_ENDPOINT`, else `https://iam.myhuaweicloud.com`.
    pub(super) fn new(name: &'static str, idp: String, file: PathBuf, iam: Option<String>) -> Self {
        let iam = iam
            .or_else(|| var(ENV_IAM_ENDPOINT).ok())
            .unwrap_or_else(|| DEFAULT_IAM.to_owned());
        Self {
            name,
            idp,
            token: IdToken::File(file),
            iam: iam.trim_end_matches('/').to_owned(),
            http: client(false),
        }
    }

    pub(super) async fn provide(&self) -> Result<CredentialSet, ProviderError> {
        let name = self.name;
        let failed = |e: reqwest::Error| no_answer(name, e);
        let id_token = self.token.read(name)?;
        let body = Zeroizing::new(
            json!({ "auth": { "id_token": { "id": id_token.as_str() } } }).to_string(),
        );
        let response = self
            .http
            .post(format!("{}/v3.0/OS-AUTH/id-token/tokens", self.iam))
            .header("X-Idp-Id", &self.idp)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(failed)?;
        let subject = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| Zeroizing::new(v.to_owned()));
        let status = response.status();
        let Some(subject) = subject.filter(|_| status.is_success()) else {
            return Err(refused(
                status,
                format!(
                    "{name}: IAM did not accept the id token (HTTP {})",
                    status.as_u16()
                ),
            ));
        };
        let body = Zeroizing::new(
            json!({ "auth": { "identity": {
                "methods": ["token"],
                "token": { "id": subject.as_str(), "duration_seconds": FEDERATED_SECONDS },
            } } })
            .to_string(),
        );
        let response = self
            .http
            .post(format!("{}/v3.0/OS-CREDENTIAL/securitytokens", self.iam))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(failed)?;
        let (status, body) = read(name, response).await?;
        if !status.is_success() {
            return Err(refused(
                status,
                format!(
                    "{name}: IAM refused temporary keys (HTTP {})",
                    status.as_u16()
                ),
            ));
        }
        temporary(name, &body)
    }
}
