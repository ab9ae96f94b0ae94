//! An in-process IoTDA server on loopback, for tests, examples, benchmarks and first steps.
//!
//! It speaks the real API: the same path, JSON and error bodies, an `X-Request-Id` and a `Date`
//! on every answer. It authenticates every request as the API gateway does: an SDK-HMAC-SHA256
//! signature with its access key, or an `X-Auth-Token` that it was given with
//! [`Simulator::accept_token`]; any other request gets the gateway's 401. Each task plays a
//! script: PENDING for some polls, RUNNING with progress over polls or over time, faults, then
//! SUCCESS or FAILED, its end time fixed when it first ends. A FAILED task can be retried
//! (`RetryInstanceTask`, a POST of `.../tasks/{task_id}/retry`, authenticated like a poll):
//! the script goes on after its failure, as [`TaskScript::fail`] says.
//!
//! ```
//! use iotda_task_watcher::simulator::{Simulator, TaskScript};
//! use iotda_task_watcher::TaskType;
//! # #[tokio::main] async fn main() {
//! let sim = Simulator::start().await;
//! let (instance, task) = ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap());
//! sim.add_task(&instance, &task, TaskScript::new(TaskType::Modify).pending(1).running(2).succeed());
//! let client = sim.client();
//! let first = client.instance_task(&instance, &task).await.unwrap();
//! assert_eq!(first.status_or_unknown().as_str(), "PENDING");
//! # }
//! ```
//!
//! For what the steps do not say (an odd body, an error code of your choosing, headers of your
//! own), a script can give a [`RawAnswer`] as it is. [`Simulator::start_on`] serves on a
//! listener of your choosing, e.g. a fixed port for other tools (`cargo run --example
//! simulator`).
//!
//! It also plays the services that hand out temporary credentials: the ECS metadata service
//! (`PUT /meta-data/latest/api/token`, `GET /openstack/latest/securitykey`), CCE Pod Identity
//! (`POST /pod-identity/credentials`, see [`Simulator::pod_identity_uri`]), STS
//! (`POST /v5/agencies/assume-with-oidc`) and IAM (a federated identity's
//! `POST /v3.0/OS-AUTH/id-token/tokens` and `POST /v3.0/OS-CREDENTIAL/securitytokens`, and the
//! signed project look-up `GET /v3/projects?name=...`). The keys it hands out last
//! [`Simulator::set_credential_lifetime`] (1 hour by default), are accepted until they expire
//! and refused with the gateway's 401 after.
//!
//! Like the real service, it can hold its account to a quota ([`Simulator::set_quota`]): a
//! token bucket over every authenticated request, whatever the task, answering a request over
//! it with the gateway's 429 or IoTDA's 403.
//!
//! # Error answers
//!
//! Every answer's `X-Request-Id` is 32 lowercase hex digits, counting the requests from
//! `00000000000000000000000000000001`. The gateway's errors carry the same id in their body:
//! `{"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information: verify
//! aksk signature fail", "request_id": "..."}`. The messages of a refused request are the
//! gateway's published ones: `verify aksk signature fail` for a wrong signature,
//! `Get secretKey failed,ak:******,err:ak not exist` for an unknown access key,
//! `x-auth-token not found` for a request with neither a signature nor a token, and
//! `decrypt token fail` for a token it was not given. IoTDA's own errors have the shape of its
//! error-code page, `error_code` and `error_msg` only: `IOTDA.021101` (HTTP 403) for its rate
//! limit, `IOTDA.000001` for a [`Fault::ServerError`] of 500.
//!
//! # Where the simulator guesses
//!
//! The public record does not say everything, and there the simulator makes up its own:
//!
//! - An unknown task (or instance, or project) answers 404 with `SIMULATOR.TASK_NOT_FOUND`, as
//!   does [`Fault::NotFound`]. The API page of this call lists no 404 at all (only 400, 401 and
//!   403), and IoTDA's error-code page names no code for a missing instance task; IoTDA answers
//!   404 with a code of its own for other missing resources (`IOTDA.010002` for a rule), so 404
//!   is likely, the code is not.
//! - [`Fault::ServerError`] of any status but 500 answers `SIMULATOR.INTERNAL_ERROR`.
//! - Whether IoTDA's own error bodies carry a `request_id` too: its error-code page shows none,
//!   so the simulator sends none there (the `X-Request-Id` header is always sent).
//! - The masked `ak:******` is copied from the gateway's documentation, which may mask what the
//!   gateway itself prints.
//! - The messages of a malformed `Authorization`, a missing or malformed `X-Sdk-Date`, a signed
//!   header that is missing, and an expired `X-Sdk-Date` (more than 15 minutes from the server's
//!   clock) are the simulator's own, after the gateway's `APIGW.0301` prefix.
//! - The messages of `APIGW.0308` (429) and `APIGW.0101` (404, a path that is not this API), and
//!   that these bodies carry `request_id` like `APIGW.0301`'s.
//! - The account quota ([`Simulator::set_quota`]): the service limits each account but does not
//!   publish how. The simulator's quota is a token bucket, checked after the signature (a
//!   refused signature costs no token) and before the task is looked up; whether the gateway's
//!   429 carries a `Retry-After` is left to the test.
//! - The credential services: the Pod Identity URL (`/pod-identity/credentials`; a pod is
//!   given the full URL in a variable), the 503 of a failing service, the bodies of their
//!   refusals, and the expired-key message (`the security token has expired`) are the
//!   simulator's own; the shapes of the keys they hand out, and of IAM's project list, are the
//!   services' published ones.
//! - `RetryInstanceTask`: what the service answers for a task that is not FAILED. The
//!   simulator refuses it with 400 and `SIMULATOR.TASK_NOT_RETRYABLE`; and it answers an
//!   accepted retry with the task PENDING at progress 0, its start and end times cleared.

mod gateway;
mod issuer;
mod list;
mod quota;
#[cfg(feature = "redis")]
mod redis_server;
mod script;
mod server;

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::StatusCode;

pub use issuer::{ExpiryStyle, Metadata};
pub use quota::{Quota, QuotaAnswer};
#[cfg(feature = "redis")]
pub use redis_server::RedisServer;
pub use script::TaskScript;
pub use server::Simulator;

/// The access key the simulator accepts unless told otherwise.
pub const DEFAULT_AK: &str = "SIMULATORACCESSKEY";
/// The secret key the simulator accepts unless told otherwise.
pub const DEFAULT_SK: &str = "simulator-secret-key";
/// The project the simulator serves unless told otherwise.
pub const DEFAULT_PROJECT_ID: &str = "0123456789abcdef0123456789abcdef";
/// The region whose project IAM's look-up names, by default: `cn-north-4`.
pub const REGION: &str = "cn-north-4";

/// A fault to answer one poll with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// An error status (5xx) with a JSON error body: IoTDA's `IOTDA.000001` for 500, the
    /// simulator's own `SIMULATOR.INTERNAL_ERROR` for any other.
    ServerError(u16),
    /// HTTP 429 `APIGW.0308` with `Retry-After` in whole seconds.
    Throttled {
        /// The wait asked for.
        retry_after: Duration,
    },
    /// HTTP 403 `IOTDA.021101`: IoTDA's request rate limit.
    RateLimited,
    /// The next answer comes this much later.
    Slow(Duration),
    /// A 200 whose body is truncated JSON.
    Malformed,
    /// HTTP 404 `SIMULATOR.TASK_NOT_FOUND`, as for an unknown task.
    NotFound,
    /// HTTP 401 `APIGW.0301`, as the gateway answers a bad signature.
    BadSignature,
}

/// An answer given as it is: any status, body and headers.
///
/// The simulator adds the `X-Request-Id` and `Date` it puts on every answer, unless this one
/// sets its own. The signature is still checked first: a badly signed request gets the
/// gateway's 401, not this answer.
///
/// ```
/// use iotda_task_watcher::simulator::{RawAnswer, TaskScript};
/// use iotda_task_watcher::TaskType;
/// let script = TaskScript::new(TaskType::Modify)
///     .raw(RawAnswer::new(503).body("<html>busy</html>").header("Retry-After", "7"))
///     .raw(RawAnswer::json(r#"{"status":"ROLLING_BACK","progress":40}"#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RawAnswer {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl RawAnswer {
    /// An answer with this status, no body and no headers of its own.
    ///
    /// # Panics
    /// When `status` is not a valid HTTP status (100 to 999).
    pub fn new(status: u16) -> Self {
        assert!(
            StatusCode::from_u16(status).is_ok(),
            "{status} is not an HTTP status"
        );
        Self {
            status,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// A 200 with this JSON, as `application/json`. The body is sent as it is, valid or not.
    pub fn json(body: impl Into<String>) -> Self {
        Self::new(200)
            .header("Content-Type", "application/json")
            .body(body.into())
    }

    /// The same answer with this body, sent as it is. It has no `Content-Type` unless one is
    /// set with [`header`](Self::header).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The same answer with this header too, in place of the simulator's own of that name and
    /// of any set before.
    ///
    /// # Panics
    /// When `name` is not a valid header name or `value` not a valid header value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("{name:?} is not a header name"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("{value:?} is not a header value"));
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        self
    }
}
