//! [`ProfileFile`]: the official SDKs' credentials file.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::sts::Federated;
use super::{CredentialSet, ProvideCredentials, ProviderError};
use crate::client::credentials::Credentials;
use crate::env::ENV_CREDENTIALS_FILE;
use crate::ids::ProjectId;

/// The official SDKs' profile file: `HUAWEICLOUD_SDK_CREDENTIALS_FILE`, else
/// `~/.huaweicloud/credentials`, an INI file whose `[basic]` section holds `ak`, `sk` and
/// optionally `security_token` and `project_id`; or `idp_id` and `id_token_file` for a
/// federated identity (with `iam_endpoint` when IAM is not the default). Other sections and
/// keys are ignored.
///
/// ```text
/// [basic]
/// ak = YOUR_AK
/// sk = YOUR_SK
/// project_id = 0123456789abcdef0123456789abcdef
/// ```
#[derive(Debug, Default)]
pub struct ProfileFile {
    path: Option<PathBuf>,
}

impl ProfileFile {
    /// The provider of the file the official SDKs read; found when it is asked.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The provider of the file at `path`.
    #[must_use]
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    fn path(&self) -> Result<PathBuf, ProviderError> {
        super::config_file(
            self.path.as_ref(),
            ENV_CREDENTIALS_FILE,
            &[".huaweicloud", "credentials"],
        )
    }
}

const NAME: &str = "profile file";

impl ProvideCredentials for ProfileFile {
    fn name(&self) -> &str {
        NAME
    }

    fn provide(&self) -> BoxFuture<'_, Result<CredentialSet, ProviderError>> {
        Box::pin(async {
            let path = self.path()?;
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => Zeroizing::new(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ProviderError::NotApplicable(format!(
                        "{} does not exist",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(ProviderError::Failed(format!(
                        "{NAME}: cannot read {}: {e}",
                        path.display()
                    )))
                }
            };
            let shown = path.display().to_string();
            let basic = section(&text, "basic").ok_or_else(|| {
                ProviderError::NotApplicable(format!("{shown} has no [basic] section"))
            })?;
            let set = match (basic.get("ak"), basic.get("sk"), basic.get("idp_id"), basic.get("id_token_file")) {
                (_, _, Some(idp), Some(file)) => {
                    let iam = basic.get("iam_endpoint").map(|s| (*s).to_owned());
                    Federated::new(NAME, (*idp).to_owned(), (*file).into(), iam)
                        .provide()
                        .await?
                }
                (Some(ak), Some(sk), _, _) => {
                    let credentials = Credentials::aksk(*ak, *sk);
                    CredentialSet::new(match basic.get("security_token") {
                        Some(token) => credentials.with_security_token(*token),
                        None => credentials,
                    })
                }
                _ => {
                    return Err(ProviderError::Failed(format!(
                        "{NAME}: the [basic] section of {shown} has neither ak and sk nor idp_id and id_token_file"
                    )))
                }
            };
            Ok(match basic.get("project_id") {
                Some(project) => set.with_project_id(ProjectId::new(*project).map_err(|e| {
                    ProviderError::Failed(format!("{NAME}: project_id in {shown}: {e}"))
                })?),
                None => set,
            })
        })
    }
}

/// The keys of section `name` of an INI text, with their values trimmed; `None` when the
/// section is absent. Lines starting with `#` or `;` are comments; empty values are absent.
fn section<'t>(text: &'t str, name: &str) -> Option<HashMap<&'t str, &'t str>> {
    // A byte-order mark, as some editors write, is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut found = None;
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(header.trim());
            if header.trim() == name {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current != Some(name) {
            continue;
        }
        if let (Some(keys), Some((key, value))) = (found.as_mut(), line.split_once('=')) {
            let value = value.trim();
            if !value.is_empty() {
                keys.insert(key.trim(), value);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_read_with_comments_and_other_sections_ignored() {
        let text = "# top\n[global]\nak = G\n\n[basic]\n; comment\nak = A \nsk=S\nempty =\n[other]\nsk = X\n";
        let basic = section(text, "basic").unwrap();
        assert_eq!(basic.get("ak"), Some(&"A"));
        assert_eq!(basic.get("sk"), Some(&"S"));
        assert_eq!(basic.get("empty"), None);
        assert!(section(text, "missing").is_none());
        assert!(section("[basic]\n", "basic").unwrap().is_empty());
    }

    #[test]
    fn a_file_that_starts_with_a_byte_order_mark_is_read() {
        // As Windows editors save it.
        let basic = section("\u{feff}[basic]\r\nak = A\r\nsk = S\r\n", "basic").unwrap();
        assert_eq!(basic.get("ak"), Some(&"A"));
        assert_eq!(basic.get("sk"), Some(&"S"));
    }
}
