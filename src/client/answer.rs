//! Reading an answer: the body, bounded; then a task, or an [`ApiError`] with what the
//! answer's status, headers and body say, and the underlying error as its cause.

use std::time::SystemTime;

use super::error::{classify, parse_error_body, parse_retry_after};
use super::{ApiError, ApiErrorKind, IotdaClient};

impl IotdaClient {
    pub(super) async fn read_response<T: serde::de::DeserializeOwned>(
        &self,
        mut response: reqwest::Response,
    ) -> Result<T, ApiError> {
        let status = response.status();
        let body = read_bounded(&mut response, self.inner.max_body_bytes).await;
        tracing::debug!(
            url = %response.url(),
            status = status.as_u16(),
            request_id = header(&response, "x-request-id").unwrap_or("-"),
            bytes = body.as_ref().map_or(0, Vec::len),
            "answered"
        );
        if status.is_success() {
            let why = match body {
                Ok(body) => match decode(&body) {
                    Ok(task) => return Ok(task),
                    Err(why) => Ok(why),
                },
                Err(e) => Err(e),
            };
            let error = error_from(&response, ApiErrorKind::Decode);
            return Err(match why {
                Ok(why) => why.into_error(error),
                Err(e) => e.into_error(error),
            });
        }
        let (error_code, error_msg) = body.as_deref().map(parse_error_body).unwrap_or_default();
        let mut error = error_from(&response, classify(status, error_code.as_deref()));
        error.parts.error_code = error_code;
        error.parts.error_msg = error_msg;
        Err(error)
    }
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error of `kind` with what the answer's headers say: status, request id, `Date` and
/// `Retry-After` (read against the answer's own `Date`, so that clocks need not agree). Only
/// failures pay for this.
fn error_from(response: &reqwest::Response, kind: ApiErrorKind) -> ApiError {
    let server_date = header(response, "date").and_then(|d| httpdate::parse_http_date(d).ok());
    let retry_after = header(response, "retry-after")
        .and_then(|v| parse_retry_after(v, server_date.unwrap_or_else(SystemTime::now)));
    let mut error = ApiError::new(kind);
    let parts = &mut error.parts;
    parts.status = Some(response.status());
    parts.request_id = header(response, "x-request-id").map(str::to_owned);
    parts.retry_after = retry_after;
    parts.server_date = server_date;
    error
}

/// Why a body did not decode.
#[derive(Debug)]
pub(crate) struct DecodeError {
    detail: String,
    source: Option<serde_json::Error>,
}

impl DecodeError {
    /// Fills `base` with what went wrong, the decoder's error as its source.
    fn into_error(self, base: ApiError) -> ApiError {
        let error = base.with_detail(self.detail);
        match self.source {
            Some(source) => error.with_cause(source),
            None => error,
        }
    }
}

/// Decodes a task, as an answer is (for the fuzz targets).
#[cfg(test)]
pub(crate) fn decode_task(body: &[u8]) -> Result<crate::model::InstanceTask, DecodeError> {
    decode(body)
}

/// Decodes an answer, a task or a page of tasks; the body must be a JSON object (serde would
/// also take an array as a struct).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        let shown = if body.is_empty() {
            "empty"
        } else {
            "not a JSON object"
        };
        return Err(DecodeError {
            detail: format!("the body is {shown} ({} bytes)", body.len()),
            source: None,
        });
    }
    serde_json::from_slice(body).map_err(|e| DecodeError {
        detail: format!("the answer did not decode: {e} ({} bytes)", body.len()),
        source: Some(e),
    })
}

/// Why a body could not be read in full.
enum BodyError {
    TooLarge(usize),
    Transport(reqwest::Error),
}

impl BodyError {
    /// Fills `base` with what went wrong; a transport failure changes its kind.
    fn into_error(self, base: ApiError) -> ApiError {
        match self {
            Self::TooLarge(limit) => {
                base.with_detail(format!("the body is larger than {limit} bytes"))
            }
            Self::Transport(e) => {
                let transport = transport_error(e);
                let mut error = base;
                error.parts.kind = transport.parts.kind;
                error.parts.detail = transport.parts.detail;
                error.parts.source = transport.parts.source;
                error
            }
        }
    }
}

async fn read_bounded(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn transport_error(e: reqwest::Error) -> ApiError {
    let kind = if e.is_timeout() {
        ApiErrorKind::Timeout
    } else {
        ApiErrorKind::Network
    };
    // Where it went: the scheme, host and port only (the path is ours, and no query is sent).
    let origin = e.url().map(|u| u.origin().ascii_serialization());
    let connect = e.is_connect();
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if connect {
        if let Some(origin) = origin {
            let hint = likely_cause(&e, &detail);
            detail = format!("cannot reach {origin}: {detail}{hint}");
        }
    }
    ApiError::new(kind).with_detail(detail).with_cause(e)
}

/// A guess at why a connection failed, from the error chain: "; " and the guess, or nothing.
fn likely_cause(e: &reqwest::Error, chain: &str) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "; nothing accepts connections there: check the port and host, and \
                        any proxy (HTTPS_PROXY, HTTP_PROXY)";
            }
        }
        source = s.source();
    }
    // rustls says so when the first bytes back are not TLS: a plain-HTTP server.
    if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        "; the server there does not speak TLS: is it an http:// endpoint, or the wrong port?"
    } else if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        "; its TLS certificate is not trusted: check the host name, and any proxy that \
         intercepts TLS"
    } else if chain.contains("dns error") || chain.contains("lookup address") {
        "; the host name does not resolve: check the region or endpoint, and DNS or proxy \
         settings"
    } else {
        ""
    }
}
