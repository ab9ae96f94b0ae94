//! What the API gateway does: its signature and clock checks, and the error bodies of the
//! gateway and of IoTDA.

use std::time::{Duration, SystemTime};

use wiremock::{Request, ResponseTemplate};

use crate::client::signer;

use super::server::Shared;

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// An error of the API gateway: `error_code`, `error_msg` and the request's id, the shape its
/// documentation shows for `APIGW.0301`.
pub(super) fn gateway_error(
    status: u16,
    code: &str,
    msg: &str,
    request_id: &str,
) -> ResponseTemplate {
    json_error(
        status,
        &serde_json::json!({ "error_code": code, "error_msg": msg, "request_id": request_id }),
    )
}

/// The gateway's 401 for a request it does not authenticate.
pub(super) fn unauthenticated(why: &str, request_id: &str) -> ResponseTemplate {
    gateway_error(
        401,
        "APIGW.0301",
        &format!("Incorrect IAM authentication information: {why}"),
        request_id,
    )
}

/// An error of IoTDA itself: `error_code` and `error_msg`, the shape of its error-code page.
pub(super) fn service_error(status: u16, code: &str, msg: &str) -> ResponseTemplate {
    json_error(
        status,
        &serde_json::json!({ "error_code": code, "error_msg": msg }),
    )
}

fn json_error(status: u16, body: &serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json")
}

/// The gateway's 429 for a request over its throttling threshold, with `Retry-After` in whole
/// seconds when given.
pub(super) fn throttled(retry_after: Option<Duration>, request_id: &str) -> ResponseTemplate {
    let template = gateway_error(
        429,
        "APIGW.0308",
        "The throttling threshold has been reached.",
        request_id,
    );
    match retry_after {
        Some(wait) => template.insert_header("Retry-After", wait.as_secs().to_string().as_str()),
        None => template,
    }
}

/// IoTDA's 403 for a request over its request rate limit.
pub(super) fn rate_limited() -> ResponseTemplate {
    service_error(
        403,
        "IOTDA.021101",
        "Request reached the maximum rate limit.",
    )
}

/// The simulator's own answer for a task it does not know (see "Where the simulator guesses").
pub(super) fn task_not_found() -> ResponseTemplate {
    service_error(
        404,
        "SIMULATOR.TASK_NOT_FOUND",
        "The instance task does not exist.",
    )
}

/// Checks the request's credentials the way the gateway does: an accepted IAM token, or an
/// AK/SK signature. The error is the gateway's message after its common prefix.
pub(super) fn authenticate(
    shared: &Shared,
    request: &Request,
    server_now: SystemTime,
) -> Result<(), String> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("x-auth-token") {
        let tokens = shared
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        return if tokens.contains(token) {
            Ok(())
        } else {
            Err("decrypt token fail".into())
        };
    }
    let auth = header("authorization").ok_or("x-auth-token not found")?;
    let (ak, signed, signature) =
        signer::parse_authorization(auth).ok_or("the Authorization header is malformed")?;
    let temporary;
    let sk = if ak == shared.ak {
        &shared.sk
    } else {
        match shared
            .issuer
            .secret_of(ak, header("x-security-token"), server_now)
        {
            Some(Ok(sk)) => {
                temporary = sk;
                &temporary
            }
            Some(Err(why)) => return Err(why),
            // The gateway's documentation shows the access key masked so.
            None => return Err("Get secretKey failed,ak:******,err:ak not exist".into()),
        }
    };
    let date = header("x-sdk-date").ok_or("no X-Sdk-Date header")?;
    let signed_at = jiff::fmt::strtime::parse(signer::DATE_FORMAT, date)
        .and_then(|t| t.to_datetime())
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .map_err(|_| "X-Sdk-Date is malformed")?
        .timestamp();
    let server =
        jiff::Timestamp::try_from(server_now).map_err(|_| "the server clock is out of range")?;
    if (server.as_second() - signed_at.as_second()).abs() > MAX_CLOCK_SKEW_SECS {
        return Err("the request has expired (X-Sdk-Date is too far from the server time)".into());
    }
    let mut headers = Vec::with_capacity(signed.len());
    for name in &signed {
        let value = header(name).ok_or_else(|| format!("signed header {name} is missing"))?;
        headers.push((*name, value));
    }
    let expected = signer::signature(
        sk,
        &signer::SignRequest {
            method: request.method.as_str(),
            url: &request.url,
            headers: &headers,
            body: &request.body,
        },
    );
    if expected != signature {
        return Err("verify aksk signature fail".into());
    }
    Ok(())
}
