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
