//! Credentials: an AK/SK pair (with an optional security token) or an IAM token.
//!
//! Secrets are held in [`Secret`], whose `Debug` and `Display` print `***`, and whose memory is
//! wiped when it is dropped; no error or log line of this crate ever holds one.

use std::fmt;

use crate::env::{var as env_var, EnvError, ENV_AK, ENV_SECURITY_TOKEN, ENV_SK};

/// A secret string: it can be used, but not printed, and its memory is overwritten with zeros
/// when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Mind where it goes.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How requests are authenticated.
///
/// ```
/// use iotda_task_watcher::Credentials;
/// let creds = Credentials::aksk("AccessKey", "SecretKey").with_security_token("token");
/// let shown = format!("{creds:?}");
/// assert!(shown.contains("AccessKey") && !shown.contains("SecretKey") && !shown.contains("token\""));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    AkSk {
        ak: String,
        sk: Secret,
        security_token: Option<Secret>,
    },
    IamToken(Secret),
}

/// The borrowed parts of [`Credentials`], for signing.
pub(crate) enum Auth<'a> {
    AkSk {
        ak: &'a str,
        sk: &'a str,
        security_token: Option<&'a str>,
    },
    IamToken(&'a str),
}

impl Credentials {
    /// Permanent AK/SK credentials: requests are signed with SDK-HMAC-SHA256.
    pub fn aksk(ak: impl Into<String>, sk: impl Into<String>) -> Self {
        Self(Kind::AkSk {
            ak: ak.into(),
            sk: Secret::new(sk),
            security_token: None,
        })
    }

    /// Adds the security token of temporary AK/SK credentials; it is sent, and signed, as
    /// `X-Security-Token`. It has no effect on IAM-token credentials.
    #[must_use]
    pub fn with_security_token(self, token: impl Into<String>) -> Self {
        match self.0 {
            Kind::AkSk { ak, sk, .. } => Self(Kind::AkSk {
                ak,
                sk,
                security_token: Some(Secret::new(token)),
            }),
            Kind::IamToken(token) => Self(Kind::IamToken(token)),
        }
    }

    /// An IAM token, sent as `X-Auth-Token` instead of a signature.
    pub fn iam_token(token: impl Into<String>) -> Self {
        Self(Kind::IamToken(Secret::new(token)))
    }

    /// Reads `HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK` and, when set,
    /// `HUAWEICLOUD_SDK_SECURITY_TOKEN`: the official SDKs' variables.
    ///
    /// # Errors
    /// [`EnvError::Missing`] naming the first variable that is unset or empty.
    pub fn from_env() -> Result<Self, EnvError> {
        let creds = Self::aksk(env_var(ENV_AK)?, env_var(ENV_SK)?);
        Ok(match env_var(ENV_SECURITY_TOKEN) {
            Ok(token) => creds.with_security_token(token),
            Err(_) => creds,
        })
    }

    /// The access key id, when these are AK/SK credentials. It is not a secret.
    #[must_use]
    pub fn access_key(&self) -> Option<&str> {
        match &self.0 {
            Kind::AkSk { ak, .. } => Some(ak),
            Kind::IamToken(_) => None,
        }
    }

    pub(crate) fn auth(&self) -> Auth<'_> {
        match &self.0 {
            Kind::AkSk {
                ak,
                sk,
                security_token,
            } => Auth::AkSk {
                ak,
                sk: sk.expose(),
                security_token: security_token.as_ref().map(Secret::expose),
            },
            Kind::IamToken(token) => Auth::IamToken(token.expose()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::AkSk {
                ak,
                sk,
                security_token,
            } => f
                .debug_struct("Credentials::AkSk")
                .field("ak", ak)
                .field("sk", sk)
                .field("security_token", security_token)
                .finish(),
            Kind::IamToken(token) => f.debug_tuple("Credentials::IamToken").field(token).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_secrets() {
        let creds = Credentials::aksk("AK-visible", "SK-hidden-0123")
            .with_security_token("TOKEN-hidden-4567");
        let shown = format!("{creds:?} {creds:#?}");
        assert!(shown.contains("AK-visible"));
        assert!(!shown.contains("SK-hidden-0123"), "{shown}");
        assert!(!shown.contains("TOKEN-hidden-4567"), "{shown}");
        let token = Credentials::iam_token("IAM-hidden-89");
        assert!(!format!("{token:?}").contains("IAM-hidden-89"));
        assert_eq!(Secret::new("x").to_string(), "***");
    }

    #[test]
    fn a_security_token_does_not_turn_an_iam_token_into_aksk() {
        let creds = Credentials::iam_token("t").with_security_token("s");
        assert!(matches!(creds.auth(), Auth::IamToken("t")));
        assert_eq!(creds.access_key(), None);
    }
}
