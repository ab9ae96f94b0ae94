//! Credentials found where automation runs, and renewed before they expire.
//!
//! When a client is given no credentials, [`IotdaClientBuilder::resolve`](super::IotdaClientBuilder::resolve)
//! asks the providers of [`ProviderChain::from_env`] in turn, as the official SDKs do, and the
//! first that yields supplies the client:
//!
//! | provider | applies when | gives |
//! |---|---|---|
//! | [`Environment`] | `HUAWEICLOUD_SDK_AK` and `_SK` are set (or `HUAWEICLOUD_SDK_IDP_ID` and `HUAWEICLOUD_SDK_ID_TOKEN_FILE`, for a federated identity) | fixed keys (or temporary keys from IAM) |
//! | [`ProfileFile`] | `HUAWEICLOUD_SDK_CREDENTIALS_FILE` or `~/.huaweicloud/credentials` has a `[basic]` section | fixed keys (or temporary keys, as above) |
//! | [`KooCli`] | `HW_SHARED_CONFIG_FILE` or `~/.hcloud/config.json` (KooCLI's, which Terraform reads too) names a profile in `AKSK` or `SSO` mode (`HW_PROFILE`, else `current`) | its keys, unencrypted; an `SSO` profile's temporary keys |
//! | [`OidcSts`] | `HUAWEICLOUD_OIDC_PROVIDER_URN`, `_AGENCY_URN` and `_ID_TOKEN` or `_TOKEN_FILE` are set | temporary keys from STS |
//! | [`PodIdentity`] | `HC_CONTAINER_CREDENTIALS_FULL_URI` and `HC_CONTAINER_AUTHORIZATION_TOKEN_FILE` are set (a CCE pod) | temporary keys |
//! | [`EcsMetadata`] | the instance metadata service answers (an ECS instance with an agency) | temporary keys |
//!
//! A provider that does not apply says why, and the next is tried; one that applies and fails
//! stops the chain; the error lists each provider tried and why. Your own source (a vault, a secrets manager) is a
//! [`ProvideCredentials`] given to
//! [`IotdaClientBuilder::credentials_provider`](super::IotdaClientBuilder::credentials_provider).
//!
//! # Refresh
//!
//! Credentials with an expiry are renewed ahead of it: when the smaller of 10 minutes and an
//! eighth of their lifetime is left (1-hour keys 7.5 minutes early, after ECS has rotated
//! them, 10 minutes before their expiry; 15-minute STS keys about 2 minutes early; 12-hour
//! keys 10 minutes early). So a wait that outlives many sets fetches about once per lifetime,
//! never once per request, and a failed renewal still has room to be tried again.
//!
//! One fetch serves every request of the client: the first request that finds the set due
//! starts the renewal in the background, and every request goes on with the valid set
//! meanwhile; only a set that has expired makes requests wait for it. The renewal runs apart
//! from the requests, within its own 30 s: a request that stops waiting for it (its timeout,
//! a cancelled wait) leaves it running, and the next request takes its keys. A set is swapped whole,
//! so no request is signed with the key of one set and the token of another. A failed renewal
//! (an error, no answer within 30 s, keys that have expired already) keeps the valid set and
//! is tried again after a growing pause (from a twentieth of the margin, at most 5 s,
//! doubling up to a quarter of it); only a set that has expired fails a request, with an error
//! naming the provider. A request refused with 401 while signed with fetched credentials
//! renews them once and is sent once more; when the renewed keys are refused too, the next
//! renewal on a refusal waits its pause. Fixed credentials are never fetched again.
//!
//! # Endpoints
//!
//! | variable | what | default |
//! |---|---|---|
//! | `HUAWEICLOUD_SDK_IAM_ENDPOINT` | IAM, for the project look-up and a federated identity | `https://iam.{region}.myhuaweicloud.com` for the look-up, `https://iam.myhuaweicloud.com` for the identity |
//! | `HUAWEICLOUD_SDK_STS_ENDPOINT` | STS, for OIDC | `https://sts.cn-north-4.myhuaweicloud.com` |
//! | `IOTDA_METADATA_ENDPOINT` | the ECS metadata service (this crate's own variable, for tests and private clouds) | `http://169.254.169.254` |

mod chain;
mod env;
mod http;
mod koocli;
mod metadata;
mod pod;
mod profile;
mod sts;
mod time;

use std::fmt;
use std::time::SystemTime;

use futures::future::BoxFuture;

pub use self::chain::{NoCredentials, ProviderChain};
pub use self::env::Environment;
pub use self::koocli::KooCli;
pub use self::metadata::EcsMetadata;
pub use self::pod::PodIdentity;
pub use self::profile::ProfileFile;
pub use self::sts::OidcSts;
use super::credentials::Credentials;
use crate::ids::ProjectId;

/// Credentials as a provider gives them: the keys, when they expire, and the project id when
/// the provider knows it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use iotda_task_watcher::client::provider::CredentialSet;
/// use iotda_task_watcher::Credentials;
/// let expires = SystemTime::now() + Duration::from_secs(3600);
/// let set = CredentialSet::new(Credentials::aksk("AK", "SK").with_security_token("token"))
///     .expiring_at(expires);
/// assert_eq!(set.expires_at(), Some(expires));
/// ```
#[derive(Clone, Debug)]
pub struct CredentialSet {
    credentials: Credentials,
    expires_at: Option<SystemTime>,
    project_id: Option<ProjectId>,
}

impl CredentialSet {
    /// Credentials that do not expire.
    #[must_use]
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            expires_at: None,
            project_id: None,
        }
    }

    /// Credentials that expire at `at`: the client renews them ahead of it.
    #[must_use]
    pub fn expiring_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The project the credentials' source names.
    #[must_use]
    pub fn with_project_id(mut self, project_id: ProjectId) -> Self {
        self.project_id = Some(project_id);
        self
    }

    /// The credentials.
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// When they expire; `None` for credentials that do not.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The project id the source names, if any.
    #[must_use]
    pub fn project_id(&self) -> Option<&ProjectId> {
        self.project_id.as_ref()
    }
}

/// The file a provider reads: `given`, else the value of the variable `variable`, else
/// `under_home` in the home folder.
fn config_file(
    given: Option<&std::path::PathBuf>,
    variable: &'static str,
    under_home: &[&str],
) -> Result<std::path::PathBuf, ProviderError> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    if let Ok(path) = crate::env::var(variable) {
        return Ok(path.into());
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => {
            let mut path = std::path::PathBuf::from(home);
            path.extend(under_home);
            Ok(path)
        }
        _ => Err(ProviderError::NotApplicable(format!(
            "{variable} and HOME are not set"
        ))),
    }
}

/// Why a provider gave no credentials. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider does not apply here (its variables are unset, no metadata service
    /// answers): the chain tries the next one.
    #[error("not applicable: {0}")]
    NotApplicable(String),
    /// The provider applies but could not give credentials (a malformed file, a refused
    /// request, an answer that does not parse).
    #[error("{0}")]
    Failed(String),
    /// The provider applies, but its service did not answer, or answered with a server error
    /// or a throttle: asking again later may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl ProviderError {
    /// Whether the provider does not apply here, rather than failed.
    #[must_use]
    pub fn is_not_applicable(&self) -> bool {
        matches!(self, Self::NotApplicable(_))
    }

    /// Whether asking again later may succeed: the provider's service did not answer, or
    /// answered with a server error or a throttle.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A source of credentials: the official SDKs' providers, or your own.
///
/// ```
/// use futures::future::BoxFuture;
/// use iotda_task_watcher::client::provider::{CredentialSet, ProvideCredentials, ProviderError};
/// use iotda_task_watcher::Credentials;
///
/// /// Keys kept in a secrets manager, read again at each renewal.
/// #[derive(Debug)]
/// struct Vault;
///
/// impl ProvideCredentials for Vault {
///     fn name(&self) -> &str {
///         "vault"
///     }
///
///     fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
///         Box::pin(async {
///             // A real one would ask the vault; these expire in an hour.
///             let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
///             Ok(CredentialSet::new(Credentials::aksk("AK", "SK").with_security_token("token"))
///                 .expiring_at(expires))
///         })
///     }
/// }
/// ```
pub trait ProvideCredentials: Send + Sync + fmt::Debug {
    /// A short name for logs and errors, e.g. "ECS metadata".
    fn name(&self) -> &str;

    /// Fetches credentials. Called once when the client is built and again before each
    /// expiry; never for two callers at once by one client.
    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>>;
}

impl<P: ProvideCredentials + ?Sized> ProvideCredentials for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        (**self).provide()
    }
}
