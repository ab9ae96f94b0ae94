//! What the providers share: their HTTP clients, and the shapes of the answers that carry
//! temporary credentials.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::time::parse_expiry;
use super::{CredentialSet, ProviderError};
use crate::client::credentials::Credentials;

/// How long a provider waits to connect: off ECS, the metadata address answers nothing, and
/// the chain gives up on it after this.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a provider's request may take in all.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of an answer that are read.
const MAX_BODY: usize = 64 * 1024;

/// A client for a provider's requests; `direct` ones (to link-local and in-cluster addresses)
/// bypass any proxy.
pub(super) fn client(direct: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(crate::client::USER_AGENT);
    let builder = if direct { builder.no_proxy() } else { builder };
    builder.build().unwrap_or_default()
}

/// A transport error in one line, its causes included, without the URL's query.
pub(super) fn describe(error: &reqwest::Error) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// A request of `name`'s that got no answer (a refused connection, a timeout): its service
/// may answer later.
pub(super) fn no_answer(name: &str, error: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(format!("{name}: {}", describe(&error.without_url())))
}

/// A request of `name`'s answered with `status`, not a success, saying `message`: a server
/// error or a throttle may pass, anything else is a refusal.
pub(super) fn refused(status: StatusCode, message: String) -> ProviderError {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::Unavailable(message)
    } else {
        ProviderError::Failed(message)
    }
}

/// An answer's status and body, read up to a limit into memory that is wiped when dropped
/// (it may hold secrets).
pub(super) async fn read(
    name: &str,
    mut response: reqwest::Response,
) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ProviderError> {
    let status = response.status();
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::Unavailable(format!("{name}: {}", describe(&e))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::Failed(format!(
                "{name}: the answer is over {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// Temporary credentials in any of the shapes the services use: `credential` with `access`,
/// `secret`, `securitytoken`, `expires_at` (ECS metadata, IAM); `credentials` with
/// `access_key_id`, `secret_access_key`, `security_token`, `expiration` (STS), or with
/// `accessKeyId`, `secretAccessKey`, `securityToken`, `expiration` (CCE Pod Identity).
#[derive(Deserialize)]
struct Envelope {
    #[serde(alias = "credentials")]
    credential: Temporary,
}

#[derive(Deserialize)]
struct Temporary {
    #[serde(alias = "access_key_id", alias = "accessKeyId")]
    access: String,
    #[serde(alias = "secret_access_key", alias = "secretAccessKey")]
    secret: String,
    #[serde(alias = "security_token", alias = "securityToken")]
    securitytoken: String,
    #[serde(alias = "expiration")]
    expires_at: String,
}

/// Reads temporary credentials from an answer's body.
pub(super) fn temporary(name: &str, body: &[u8]) -> Result<CredentialSet, ProviderError> {
    // The decoder's message would quote the body, secrets and all: say only where it failed.
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        ProviderError::Failed(format!(
            "{name}: the answer is not temporary credentials (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Temporary {
        access,
        secret,
        securitytoken,
        expires_at,
    } = envelope.credential;
    let expires_at = parse_expiry(name, &expires_at)?;
    if access.is_empty() || secret.is_empty() {
        return Err(ProviderError::Failed(format!(
            "{name}: the answer has an empty access key or secret"
        )));
    }
    let credentials = Credentials::aksk(access, secret).with_security_token(securitytoken);
    Ok(CredentialSet::new(credentials).expiring_at(expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_of_temporary_credentials_reads() {
        let shapes = [
            r#"{"credential":{"access":"A","secret":"S","securitytoken":"T","expires_at":"2030-01-01T00:00:00.000000Z"}}"#,
            r#"{"credentials":{"access_key_id":"A","secret_access_key":"S","security_token":"T","expiration":"2030-01-01T00:00:00Z"}}"#,
            r#"{"credentials":{"accessKeyId":"A","secretAccessKey":"S","securityToken":"T","expiration":"2030-01-01T00:00:00.5Z"}}"#,
        ];
        for body in shapes {
            let set = temporary("test", body.as_bytes()).unwrap();
            assert_eq!(set.credentials().access_key(), Some("A"), "{body}");
            assert!(set.expires_at().is_some());
        }
    }

    #[test]
    fn a_malformed_answer_never_quotes_the_secret() {
        let body = br#"{"credential":{"access":"A","secret":"TOP-SECRET","securitytoken":1}}"#;
        let error = temporary("ECS metadata", body).unwrap_err().to_string();
        assert!(!error.contains("TOP-SECRET"), "{error}");
        assert!(error.contains("ECS metadata"), "{error}");
    }
}
