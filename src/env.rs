//! The official Huawei Cloud SDKs' environment variables, read the way they read them.

use crate::ids::{IdError, ProjectId};

/// The official SDKs' variable for the access key id.
pub const ENV_AK: &str = "HUAWEICLOUD_SDK_AK";
/// The official SDKs' variable for the secret access key.
pub const ENV_SK: &str = "HUAWEICLOUD_SDK_SK";
/// The official SDKs' variable for a temporary credential's security token.
pub const ENV_SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
/// The official SDKs' variable for the project id.
pub const ENV_PROJECT_ID: &str = "HUAWEICLOUD_SDK_PROJECT_ID";
/// The official SDKs' variable for the region.
pub const ENV_REGION: &str = "HUAWEICLOUD_SDK_REGION";
/// The official SDKs' variable for a federated identity provider's id.
pub const ENV_IDP_ID: &str = "HUAWEICLOUD_SDK_IDP_ID";
/// The official SDKs' variable for the file holding a federated identity's id token.
pub const ENV_ID_TOKEN_FILE: &str = "HUAWEICLOUD_SDK_ID_TOKEN_FILE";
/// The official SDKs' variable for the profile file (default `~/.huaweicloud/credentials`).
pub const ENV_CREDENTIALS_FILE: &str = "HUAWEICLOUD_SDK_CREDENTIALS_FILE";
/// The official SDKs' variable for the IAM endpoint.
pub const ENV_IAM_ENDPOINT: &str = "HUAWEICLOUD_SDK_IAM_ENDPOINT";
/// The official SDKs' variable for the STS endpoint.
pub const ENV_STS_ENDPOINT: &str = "HUAWEICLOUD_SDK_STS_ENDPOINT";
/// This crate's variable for the ECS metadata service's base URL (default
/// `http://169.254.169.254`): the official SDKs have none; tests and private clouds need one.
pub const ENV_METADATA_ENDPOINT: &str = "IOTDA_METADATA_ENDPOINT";
/// The OIDC provider's URN, for OIDC to STS (the official Python SDK's variable).
pub const ENV_OIDC_PROVIDER_URN: &str = "HUAWEICLOUD_OIDC_PROVIDER_URN";
/// The agency's URN, for OIDC to STS.
pub const ENV_OIDC_AGENCY_URN: &str = "HUAWEICLOUD_OIDC_AGENCY_URN";
/// The OIDC id token itself, for OIDC to STS.
pub const ENV_OIDC_ID_TOKEN: &str = "HUAWEICLOUD_OIDC_ID_TOKEN";
/// A file holding the OIDC id token (read again at each renewal), for OIDC to STS.
pub const ENV_OIDC_TOKEN_FILE: &str = "HUAWEICLOUD_OIDC_TOKEN_FILE";
/// The STS session's name (default `oidc-sts-session`).
pub const ENV_OIDC_SESSION_NAME: &str = "HUAWEICLOUD_OIDC_SESSION_NAME";
/// How long STS credentials last, in seconds (default 3600).
pub const ENV_OIDC_DURATION_SECONDS: &str = "HUAWEICLOUD_OIDC_DURATION_SECONDS";
/// CCE Pod Identity: the URL that hands out the pod's credentials.
pub const ENV_CONTAINER_CREDENTIALS_URI: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
/// CCE Pod Identity: the file holding the pod's authorization token.
pub const ENV_CONTAINER_TOKEN_FILE: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// KooCLI's profile file, in place of `~/.hcloud/config.json` (as Terraform's huaweicloud
/// provider reads it).
pub const ENV_KOOCLI_FILE: &str = "HW_SHARED_CONFIG_FILE";
/// The profile of KooCLI's file to use, in place of the file's `current`.
pub const ENV_KOOCLI_PROFILE: &str = "HW_PROFILE";

/// A configuration variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The variable is unset or empty.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// The variable is not valid Unicode.
    #[error("environment variable {0} is not valid Unicode")]
    NotUnicode(&'static str),
    /// `HUAWEICLOUD_SDK_PROJECT_ID` holds an invalid project id.
    #[error("environment variable {ENV_PROJECT_ID}: {0}")]
    InvalidProjectId(IdError),
}

/// The trimmed value of `name`; unset and empty are both missing.
pub(crate) fn var(name: &'static str) -> Result<String, EnvError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(EnvError::Missing(name)),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::NotUnicode(name)),
    }
}

impl ProjectId {
    /// Reads the project id from `HUAWEICLOUD_SDK_PROJECT_ID`, the official SDKs' variable.
    ///
    /// # Errors
    /// [`EnvError`] when the variable is unset or holds an invalid id.
    pub fn from_env() -> Result<Self, EnvError> {
        let value = var(ENV_PROJECT_ID)?;
        Self::new(value).map_err(EnvError::InvalidProjectId)
    }
}
