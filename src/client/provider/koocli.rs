//! [`KooCli`]: the profile file of KooCLI (`hcloud`), which Terraform's huaweicloud provider
//! reads too.

use std::path::PathBuf;
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::time::parse_expiry;
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::client::credentials::Credentials;
use crate::env::{var, ENV_KOOCLI_FILE, ENV_KOOCLI_PROFILE};
use crate::ids::ProjectId;

/// KooCLI's profile file: `HW_SHARED_CONFIG_FILE`, else `~/.hcloud/config.json`; the profile
/// named by `HW_PROFILE`, else the file's `current`. An `AKSK` profile gives its
/// `accessKeyId` and `secretAccessKey` (with `securityToken` and `expiresAt` when set), an
/// `SSO` profile the keys of its `ssoAuth.stsToken`; either gives its `projectId`. An
/// `ecsAgency` profile does not apply here: its keys come from the ECS metadata service,
/// which the chain asks later.
///
/// KooCLI encrypts the keys it saves unless told not to. Keys that are not of a key's form (an
/// access key is letters and digits, upper case; a secret key holds no `+`, `/` or `=`, which
/// an encrypted one in base64 does) are never sent: the error advises `hcloud configure set --cli-auth-encrypt=false`. So are temporary
/// keys past their `expiresAt`. In the default chain, such a profile does not apply, and the
/// providers after it are asked (an ECS agency, OIDC); with a profile named by
/// [`profile`](Self::profile), it is an error.
///
/// ```text
/// {"current": "default", "profiles": [{"name": "default", "mode": "AKSK",
///   "accessKeyId": "YOUR_AK", "secretAccessKey": "YOUR_SK", "region": "cn-north-4",
///   "projectId": "0123456789abcdef0123456789abcdef"}]}
/// ```
#[derive(Debug, Default)]
pub struct KooCli {
    path: Option<PathBuf>,
    profile: Option<String>,
    /// "KooCLI profile NAME", once a profile was read.
    named: std::sync::OnceLock<String>,
}

impl KooCli {
    /// The provider of the file KooCLI writes; found when it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The provider of the file at `path`.
    #[must_use]
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::default()
        }
    }

    /// Reads the profile `name`, in place of `HW_PROFILE` or the file's `current`.
    #[must_use]
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }

    fn path(&self) -> Result<PathBuf, ProviderError> {
        super::config_file(
            self.path.as_ref(),
            ENV_KOOCLI_FILE,
            &[".hcloud", "config.json"],
        )
    }
}

const NAME: &str = "KooCLI profile";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    profiles: Vec<Profile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(flatten)]
    keys: Keys,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    sso_auth: Option<SsoAuth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoAuth {
    #[serde(default)]
    sts_token: Option<Keys>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Keys {
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    security_token: Option<String>,
}

/// A value that is set: present and not blank.
fn set(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl ProvideCredentials for KooCli {
    /// "KooCLI profile", and the profile's name once it was read.
    fn name(&self) -> &str {
        self.named.get().map_or(NAME, String::as_str)
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let path = self.path()?;
            let shown = path.display().to_string();
            let text = match std::fs::read(&path) {
                Ok(text) => Zeroizing::new(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ProviderError::NotApplicable(format!(
                        "{shown} does not exist"
                    )))
                }
                Err(e) => {
                    return Err(ProviderError::Failed(format!(
                        "{NAME}: cannot read {shown}: {e}"
                    )))
                }
            };
            // The decoder's message could quote a secret: say only where it failed.
            let file: File = serde_json::from_slice(&text).map_err(|e| {
                ProviderError::Failed(format!(
                    "{NAME}: {shown} is not KooCLI's JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
            let wanted = self
                .profile
                .clone()
                .or_else(|| var(ENV_KOOCLI_PROFILE).ok())
                .or(file.current.clone());
            let Some(wanted) = wanted.filter(|w| !w.trim().is_empty()) else {
                return Err(ProviderError::NotApplicable(format!(
                    "{shown} names no current profile, and {ENV_KOOCLI_PROFILE} is not set"
                )));
            };
            let Some(profile) = file.profiles.iter().find(|p| p.name == wanted) else {
                return Err(ProviderError::Failed(format!(
                    "{NAME}: {shown} has no profile named {wanted:?}"
                )));
            };
            let named = self.profile.is_some();
            let keys = read_profile(profile, &shown, SystemTime::now())
                .map_err(|unusable| unusable.into_error(named))?;
            let _ = self.named.set(format!("{NAME} {wanted}"));
            Ok(keys)
        })
    }
}

/// The credentials of `profile`, of the file `shown`.
/// Why a profile's credentials cannot be used.
enum Unusable {
    /// The keys are there, but encrypted or expired.
    Keys(String),
    /// Anything else.
    Error(ProviderError),
}

impl Unusable {
    /// The provider's error: keys that cannot be used fail a profile named, and do not apply
    /// in the default chain.
    fn into_error(self, named: bool) -> ProviderError {
        match self {
            Self::Error(error) => error,
            Self::Keys(why) if named => ProviderError::Failed(why),
            Self::Keys(why) => ProviderError::NotApplicable(why),
        }
    }
}

impl From<ProviderError> for Unusable {
    fn from(error: ProviderError) -> Self {
        Self::Error(error)
    }
}

/// Temporary keys that expired before `now` are refused: KooCLI renews them when it runs.
fn read_profile(
    profile: &Profile,
    shown: &str,
    now: SystemTime,
) -> Result<CredentialSet, Unusable> {
    let name = &profile.name;
    let mode = profile.mode.as_deref().unwrap_or("AKSK");
    let none = Keys::default();
    let keys = match mode {
        "AKSK" => &profile.keys,
        "SSO" => profile
            .sso_auth
            .as_ref()
            .and_then(|s| s.sts_token.as_ref())
            .unwrap_or(&none),
        "ecsAgency" => {
            return Err(ProviderError::NotApplicable(format!(
                "profile {name:?} of {shown} takes its keys from the ECS metadata service"
            ))
            .into())
        }
        other => {
            return Err(ProviderError::Failed(format!(
                "{NAME}: profile {name:?} of {shown} has mode {other:?}; AKSK, SSO and ecsAgency are known"
            )).into())
        }
    };
    let (ak, sk, token) = (
        set(keys.access_key_id.as_ref()),
        set(keys.secret_access_key.as_ref()),
        set(keys.security_token.as_ref()),
    );
    let (Some(ak), Some(sk)) = (ak, sk) else {
        return Err(ProviderError::Failed(format!(
            "{NAME}: profile {name:?} of {shown} ({mode}) has no access key and secret"
        ))
        .into());
    };
    if !looks_like_an_access_key(ak) || sk.contains(['+', '/', '=']) {
        return Err(Unusable::Keys(format!(
            "{NAME}: the keys of profile {name:?} in {shown} are encrypted (KooCLI encrypts \
             them by default): run `hcloud configure set --cli-auth-encrypt=false`, or give \
             the keys another way"
        )));
    }
    let credentials = Credentials::aksk(ak, sk);
    let mut keys = CredentialSet::new(match token {
        Some(token) => credentials.with_security_token(token),
        None => credentials,
    });
    if let Some(expires) = set(profile.expires_at.as_ref()).filter(|_| token.is_some()) {
        let at = parse_expiry(NAME, expires)?;
        if at <= now {
            return Err(Unusable::Keys(format!(
                "{NAME}: the temporary keys of profile {name:?} in {shown} expired at \
                 {expires}: run hcloud to renew them"
            )));
        }
        keys = keys.expiring_at(at);
    }
    if let Some(project) = set(profile.project_id.as_ref()) {
        let project = ProjectId::new(project).map_err(|e| {
            ProviderError::Failed(format!(
                "{NAME}: projectId of profile {name:?} in {shown}: {e}"
            ))
        })?;
        keys = keys.with_project_id(project);
    }
    Ok(keys)
}

/// Whether `ak` has the form of an access key: letters and digits, upper case, 8 to 128 of
/// them. What KooCLI's encryption makes of one has another (lower case, `+`, `/`, `=`).
fn looks_like_an_access_key(ak: &str) -> bool {
    (8..=128).contains(&ak.len())
        && ak
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The profile read at 11:00 as in the default chain (`named` false) or named.
    fn read(json: serde_json::Value, named: bool) -> Result<CredentialSet, ProviderError> {
        let profile: Profile = serde_json::from_value(json).unwrap();
        let now = "2026-12-08T11:00:00Z".parse::<jiff::Timestamp>().unwrap();
        read_profile(&profile, "config.json", now.into()).map_err(|u| u.into_error(named))
    }

    fn profile(json: serde_json::Value) -> Result<CredentialSet, ProviderError> {
        read(json, true)
    }

    #[test]
    fn an_aksk_profile_gives_its_keys_and_project() {
        let set = profile(serde_json::json!({
            "name": "default", "mode": "AKSK", "accessKeyId": "AKEXAMPLE0123456789X",
            "secretAccessKey": "secret", "projectId": "0123456789abcdef0123456789abcdef"
        }))
        .unwrap();
        assert_eq!(
            set.project_id().map(ProjectId::as_str),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(set.expires_at().is_none());
    }

    #[test]
    fn an_sso_profile_gives_its_temporary_keys_until_they_expire() {
        let set = profile(serde_json::json!({
            "name": "sso", "mode": "SSO", "expiresAt": "2026-12-08T12:00:00Z",
            "ssoAuth": {"stsToken": {"accessKeyId": "STSEXAMPLE012345", "secretAccessKey": "s",
                                     "securityToken": "token"}}
        }))
        .unwrap();
        assert!(set.expires_at().is_some());
        // An hour later, they have expired.
        let expired: Profile = serde_json::from_value(serde_json::json!({
            "name": "sso", "mode": "AKSK", "expiresAt": "2026-12-08T10:00:00Z",
            "accessKeyId": "STSEXAMPLE012345", "secretAccessKey": "s", "securityToken": "t"
        }))
        .unwrap();
        let now = "2026-12-08T11:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .into();
        let said = read_profile(&expired, "config.json", now)
            .map_err(|u| u.into_error(true))
            .unwrap_err()
            .to_string();
        assert!(said.contains("expired at 2026-12-08T10:00:00Z"), "{said}");
    }

    #[tokio::test]
    async fn a_profile_that_is_not_in_the_file_is_named_in_the_error() {
        let path = std::env::temp_dir().join(format!("koocli-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"current": "a", "profiles": [{"name": "a", "mode": "ecsAgency"}]}"#,
        )
        .unwrap();
        let error = KooCli::at(&path).profile("b").provide().await.unwrap_err();
        assert!(
            error.to_string().contains("no profile named \"b\""),
            "{error}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn encrypted_keys_are_refused_with_the_advice_and_never_shown() {
        let error = profile(serde_json::json!({
            "name": "default", "mode": "AKSK",
            "accessKeyId": "x9/kQm2Zp+Lr0aY7Vb3Nc5Wd8Ef1Gh==", "secretAccessKey": "c2VjcmV0c2VjcmV0"
        }))
        .unwrap_err();
        let said = error.to_string();
        assert!(!error.is_not_applicable(), "a profile named fails: {said}");
        assert!(said.contains("--cli-auth-encrypt=false"), "{said}");
        assert!(
            !said.contains("x9/kQm2Zp") && !said.contains("c2VjcmV0"),
            "{said}"
        );
    }

    #[test]
    fn in_the_default_chain_encrypted_keys_leave_it_to_the_providers_after() {
        let encrypted = serde_json::json!({
            "name": "default", "mode": "AKSK", "accessKeyId": "AKEXAMPLE0123456789X",
            "secretAccessKey": "c2VjcmV0+c2VjcmV0/=="
        });
        let error = read(encrypted, false).unwrap_err();
        assert!(error.is_not_applicable(), "{error}");
        assert!(
            error.to_string().contains("--cli-auth-encrypt=false"),
            "{error}"
        );
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
    }

    #[test]
    fn an_ecs_agency_profile_leaves_it_to_the_metadata_service() {
        let error = profile(serde_json::json!({"name": "ecs", "mode": "ecsAgency"})).unwrap_err();
        assert!(error.is_not_applicable(), "{error}");
        let error = profile(serde_json::json!({"name": "odd", "mode": "AKSK"})).unwrap_err();
        assert!(!error.is_not_applicable(), "{error}");
    }
}
