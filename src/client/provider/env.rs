//! [`Environment`]: the official SDKs' variables.

use futures::future::BoxFuture;

use super::sts::Federated;
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::client::credentials::Credentials;
use crate::env::{
    var, EnvError, ENV_AK, ENV_IDP_ID, ENV_ID_TOKEN_FILE, ENV_SECURITY_TOKEN, ENV_SK,
};
use crate::ids::ProjectId;

/// Credentials in the environment: `HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK` and, for
/// temporary keys, `HUAWEICLOUD_SDK_SECURITY_TOKEN`; or a federated identity,
/// `HUAWEICLOUD_SDK_IDP_ID` with `HUAWEICLOUD_SDK_ID_TOKEN_FILE` (which win when both are
/// set, as in the official SDKs), traded at IAM for temporary keys. The project id comes
/// from `HUAWEICLOUD_SDK_PROJECT_ID` when set.
#[derive(Debug, Default)]
pub struct Environment {
    _private: (),
}

impl Environment {
    /// The provider; it reads the variables each time it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

const NAME: &str = "environment";

impl ProvideCredentials for Environment {
    fn name(&self) -> &str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let project = project_id()?;
            let set = match (var(ENV_IDP_ID), var(ENV_ID_TOKEN_FILE)) {
                (Ok(idp), Ok(file)) => {
                    Federated::new(NAME, idp, file.into(), None)
                        .provide()
                        .await?
                }
                _ => fixed()?,
            };
            Ok(match project {
                Some(project) => set.with_project_id(project),
                None => set,
            })
        })
    }
}

/// The AK/SK (and token) in the environment.
fn fixed() -> Result<CredentialSet, ProviderError> {
    let not_applicable = |e: EnvError| ProviderError::NotApplicable(e.to_string());
    let ak = var(ENV_AK).map_err(not_applicable)?;
    let sk = var(ENV_SK).map_err(|e| ProviderError::Failed(format!("{ENV_AK} is set, but {e}")))?;
    let credentials = Credentials::aksk(ak, sk);
    Ok(CredentialSet::new(match var(ENV_SECURITY_TOKEN) {
        Ok(token) => credentials.with_security_token(token),
        Err(_) => credentials,
    }))
}

fn project_id() -> Result<Option<ProjectId>, ProviderError> {
    match ProjectId::from_env() {
        Ok(project) => Ok(Some(project)),
        Err(EnvError::Missing(_)) => Ok(None),
        Err(e) => Err(ProviderError::Failed(e.to_string())),
    }
}
