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
//! - `RetryInstanceTask`: what the service answers for a task that is not FAILED. The
//!   simulator refuses it with 400 and `SIMULATOR.TASK_NOT_RETRYABLE`; and it answers an
//!   accepted retry with the task PENDING at progress 0, its start and end times cleared.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::StatusCode;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::{signer, skew};
use crate::model::{ChargeMode, Flavor, OperateWindow, TargetConfig, TaskTime};
use crate::{
    Credentials, InstanceId, InstanceTask, IotdaClient, IotdaClientBuilder, ProjectId, TaskId,
    TaskStatus, TaskType,
};

/// The access key the simulator accepts unless told otherwise.
pub const DEFAULT_AK: &str = "SIMULATORACCESSKEY";
/// The secret key the simulator accepts unless told otherwise.
pub const DEFAULT_SK: &str = "simulator-secret-key";
/// The project the simulator serves unless told otherwise.
pub const DEFAULT_PROJECT_ID: &str = "0123456789abcdef0123456789abcdef";

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

/// An account quota: a token bucket of `rate` requests per second holding at most `burst`,
/// shared by every authenticated request the simulator serves, whatever the instance or task.
///
/// The bucket starts full and refills continuously in real time. A request that finds less
/// than a whole token is refused with the quota's [`QuotaAnswer`] and takes nothing.
///
/// ```
/// use std::time::Duration;
/// use iotda_task_watcher::simulator::{Quota, QuotaAnswer};
/// // 10 requests per second in bursts of 20, the 21st of a burst refused with a 429 and
/// // `Retry-After: 1`.
/// let quota = Quota::per_second(10.0, 20).answer(QuotaAnswer::Throttled {
///     retry_after: Some(Duration::from_secs(1)),
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Quota {
    rate: f64,
    burst: u32,
    answer: QuotaAnswer,
}

impl Quota {
    /// `rate` requests per second, at most `burst` at once, answered over it with the default
    /// [`QuotaAnswer`] (a 429 without `Retry-After`). A rate of 0 never refills: `burst`
    /// requests in all. A burst of 0 refuses every request.
    ///
    /// # Panics
    /// When `rate` is negative, infinite or NaN.
    pub fn per_second(rate: f64, burst: u32) -> Self {
        assert!(
            rate.is_finite() && rate >= 0.0,
            "a quota's rate is a finite number of requests per second, 0 or more, not {rate}"
        );
        Self {
            rate,
            burst,
            answer: QuotaAnswer::default(),
        }
    }

    /// The same quota, answering a request over it with `answer`.
    pub fn answer(mut self, answer: QuotaAnswer) -> Self {
        self.answer = answer;
        self
    }
}

/// How the simulator answers a request over its [`Quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaAnswer {
    /// HTTP 429 `APIGW.0308`, the API gateway's answer (as [`Fault::Throttled`]), with
    /// `Retry-After` in whole seconds (any fraction dropped) when given. The default, without
    /// `Retry-After`.
    Throttled {
        /// The wait asked for, if any.
        retry_after: Option<Duration>,
    },
    /// HTTP 403 `IOTDA.021101`, IoTDA's request rate limit (as [`Fault::RateLimited`]).
    RateLimited,
}

impl Default for QuotaAnswer {
    fn default() -> Self {
        Self::Throttled { retry_after: None }
    }
}

/// A [`Quota`] being enforced: the tokens it holds, as of `at`.
#[derive(Debug)]
struct Bucket {
    quota: Quota,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    fn new(quota: Quota, now: Instant) -> Self {
        Self {
            quota,
            tokens: f64::from(quota.burst),
            at: now,
        }
    }

    /// Takes a token for a request at `now`, or says how to refuse it.
    fn take(&mut self, now: Instant) -> Result<(), QuotaAnswer> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.quota.rate).min(f64::from(self.quota.burst));
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.quota.answer)
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Pending(u32),
    Running(u32),
    RunningFor(Duration),
    Fault(Fault),
    Raw(RawAnswer),
    Succeed,
    Fail(String),
}

/// What a task does over its polls.
#[derive(Debug, Clone)]
#[must_use]
pub struct TaskScript {
    task_type: TaskType,
    window: Option<OperateWindow>,
    target: Option<TargetConfig>,
    steps: Vec<Step>,
}

impl TaskScript {
    /// An empty script for a task of `task_type`; without steps it answers PENDING.
    pub fn new(task_type: TaskType) -> Self {
        Self {
            task_type,
            window: None,
            target: None,
            steps: Vec::new(),
        }
    }

    /// PENDING, progress 0, for `polls` polls.
    pub fn pending(mut self, polls: u32) -> Self {
        self.steps.push(Step::Pending(polls));
        self
    }

    /// RUNNING for `polls` polls, progress rising evenly below 100.
    pub fn running(mut self, polls: u32) -> Self {
        self.steps.push(Step::Running(polls));
        self
    }

    /// RUNNING for `duration` of real time from its first answer, progress rising with it.
    pub fn running_for(mut self, duration: Duration) -> Self {
        self.steps.push(Step::RunningFor(duration));
        self
    }

    /// Answers one poll with `fault` (a [`Fault::Slow`] delays the next answer instead).
    pub fn fault(mut self, fault: Fault) -> Self {
        self.steps.push(Step::Fault(fault));
        self
    }

    /// Answers one poll with `answer`, as it is. Like a task's state, and unlike a fault, the
    /// last one is answered again once the script has run out.
    pub fn raw(mut self, answer: RawAnswer) -> Self {
        self.steps.push(Step::Raw(answer));
        self
    }

    /// Ends in SUCCESS, progress 100.
    pub fn succeed(mut self) -> Self {
        self.steps.push(Step::Succeed);
        self
    }

    /// Ends in FAILED with `detail` as `status_detail`, until the task is retried: a retry
    /// answers the task PENDING, and the steps after this one play from the next poll (with
    /// none, the task stays PENDING).
    ///
    /// ```
    /// use iotda_task_watcher::simulator::TaskScript;
    /// use iotda_task_watcher::TaskType;
    /// // Fails once, then succeeds when retried.
    /// let script = TaskScript::new(TaskType::Modify)
    ///     .running(2)
    ///     .fail("flavor sold out")
    ///     .running(2)
    ///     .succeed();
    /// ```
    pub fn fail(mut self, detail: impl Into<String>) -> Self {
        self.steps.push(Step::Fail(detail.into()));
        self
    }

    /// Reports this maintenance window (`HH:mm` UTC) in every answer.
    pub fn operate_window(mut self, start: &str, end: &str) -> Self {
        self.window = Some(OperateWindow {
            start_time: Some(start.to_owned()),
            end_time: Some(end.to_owned()),
        });
        self
    }

    /// Reports this `target_config` in every answer: the specification the instance is changed
    /// to, `flavor_type` (e.g. `iotda.standard.s2`) and, for a standard instance, its `size` in
    /// units, and how it is paid for.
    ///
    /// ```
    /// use iotda_task_watcher::model::ChargeMode;
    /// use iotda_task_watcher::simulator::TaskScript;
    /// use iotda_task_watcher::TaskType;
    /// let script = TaskScript::new(TaskType::Modify)
    ///     .target_config("iotda.standard.s2", Some(4), ChargeMode::PrePaid)
    ///     .running(3)
    ///     .succeed();
    /// ```
    pub fn target_config(
        mut self,
        flavor_type: &str,
        size: Option<i64>,
        charge_mode: ChargeMode,
    ) -> Self {
        self.target = Some(TargetConfig {
            flavor: Some(Flavor {
                flavor_type: Some(flavor_type.to_owned()),
                size,
            }),
            charge_mode: Some(charge_mode),
        });
        self
    }
}

struct TaskState {
    script: TaskScript,
    step: usize,
    /// Polls answered by the current step.
    count: u32,
    running_since: Option<Instant>,
    polls: u64,
    created: TaskTime,
    started: Option<TaskTime>,
    /// When the task first answered SUCCESS or FAILED; every later answer reports this time.
    ended: Option<TaskTime>,
    /// The last task or raw answer, given again past the end of the script.
    last: Option<Answer>,
    /// Retries accepted.
    retries: u64,
}

#[derive(Clone)]
enum Answer {
    Task(Box<InstanceTask>),
    Raw(RawAnswer),
    Fault(Fault),
}

impl TaskState {
    /// Plays the script one poll further. Returns the answer and any delay to add to it.
    fn advance(&mut self, task_id: &str) -> (Answer, Duration) {
        self.polls += 1;
        let mut delay = Duration::ZERO;
        loop {
            let Some(step) = self.script.steps.get(self.step).cloned() else {
                // Past the end: the last answer again (PENDING if there was none).
                let answer = self.last.clone().unwrap_or_else(|| {
                    let task = self.snapshot(task_id, TaskStatus::Pending, 0, None);
                    Answer::Task(Box::new(task))
                });
                return (answer, delay);
            };
            let answer = match step {
                Step::Pending(n) | Step::Running(n) if self.count >= n => {
                    self.next_step();
                    continue;
                }
                Step::Pending(_) => {
                    self.count += 1;
                    self.snapshot(task_id, TaskStatus::Pending, 0, None)
                }
                Step::Running(n) => {
                    self.count += 1;
                    let progress = i64::from(self.count) * 100 / (i64::from(n) + 1);
                    self.snapshot(task_id, TaskStatus::Running, progress, None)
                }
                Step::RunningFor(duration) => {
                    let since = *self.running_since.get_or_insert_with(Instant::now);
                    let elapsed = since.elapsed();
                    if elapsed >= duration {
                        self.next_step();
                        continue;
                    }
                    #[allow(
                        clippy::cast_possible_truncation,
                        reason = "a share of the run below 1, in percent"
                    )]
                    let progress = (elapsed.as_secs_f64() / duration.as_secs_f64() * 100.0) as i64;
                    self.snapshot(task_id, TaskStatus::Running, progress.min(99), None)
                }
                Step::Fault(Fault::Slow(d)) => {
                    delay += d;
                    self.next_step();
                    continue;
                }
                Step::Fault(fault) => {
                    self.next_step();
                    return (Answer::Fault(fault), delay);
                }
                Step::Raw(raw) => {
                    self.next_step();
                    self.last = Some(Answer::Raw(raw.clone()));
                    return (Answer::Raw(raw), delay);
                }
                Step::Succeed => self.snapshot(task_id, TaskStatus::Success, 100, None),
                Step::Fail(detail) => self.snapshot(task_id, TaskStatus::Failed, 100, Some(detail)),
            };
            let answer = Answer::Task(Box::new(answer));
            self.last = Some(answer.clone());
            return (answer, delay);
        }
    }

    /// Retries the task if its last answer was FAILED: the script goes on after the failure,
    /// from PENDING. `None` when the task is not FAILED.
    fn retry(&mut self, task_id: &str) -> Option<InstanceTask> {
        let failed =
            matches!(&self.last, Some(Answer::Task(t)) if t.status == Some(TaskStatus::Failed));
        if !failed {
            return None;
        }
        self.retries += 1;
        self.next_step();
        self.started = None;
        self.ended = None;
        let task = self.snapshot(task_id, TaskStatus::Pending, 0, None);
        self.last = Some(Answer::Task(Box::new(task.clone())));
        Some(task)
    }

    fn next_step(&mut self) {
        self.step += 1;
        self.count = 0;
        self.running_since = None;
    }

    fn snapshot(
        &mut self,
        task_id: &str,
        status: TaskStatus,
        progress: i64,
        detail: Option<String>,
    ) -> InstanceTask {
        let now = || TaskTime::from(jiff::Timestamp::now());
        if status != TaskStatus::Pending && self.started.is_none() {
            self.started = Some(now());
        }
        let end_time = if status.is_terminal() {
            Some(self.ended.get_or_insert_with(now).clone())
        } else {
            None
        };
        InstanceTask {
            task_id: Some(task_id.to_owned()),
            task_type: Some(self.script.task_type.clone()),
            create_time: Some(self.created.clone()),
            start_time: self.started.clone(),
            end_time,
            operate_window: self.script.window.clone(),
            status_detail: detail,
            status: Some(status),
            progress: Some(progress),
            target_config: self.script.target.clone(),
        }
    }
}

struct Shared {
    ak: String,
    sk: String,
    project_id: ProjectId,
    tasks: Mutex<HashMap<(String, String), TaskState>>,
    /// IAM tokens accepted as `X-Auth-Token`.
    tokens: Mutex<HashSet<String>>,
    requests: AtomicU64,
    clock_offset_secs: std::sync::atomic::AtomicI64,
    /// The account quota, if one is set.
    quota: Mutex<Option<Bucket>>,
    /// Requests the quota refused.
    throttled: AtomicU64,
}

/// A running simulator. The server stops when this is dropped.
pub struct Simulator {
    server: MockServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("uri", &self.server.uri())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a simulator on a free loopback port, accepting [`DEFAULT_AK`] / [`DEFAULT_SK`]
    /// for project [`DEFAULT_PROJECT_ID`].
    pub async fn start() -> Self {
        Self::start_with(DEFAULT_AK, DEFAULT_SK, DEFAULT_PROJECT_ID).await
    }

    /// Starts a simulator accepting these credentials for this project.
    ///
    /// # Panics
    /// When `project_id` is not a valid project id.
    pub async fn start_with(ak: &str, sk: &str, project_id: &str) -> Self {
        Self::launch(ak, sk, project_id, None).await
    }

    /// Starts a simulator serving on `listener`, with the defaults of [`start`](Self::start).
    /// Its [`uri`](Self::uri) is the listener's address.
    ///
    /// This is how to give it a fixed port, for a tool that is told where to connect:
    ///
    /// ```
    /// use iotda_task_watcher::simulator::Simulator;
    /// # #[tokio::main] async fn main() -> std::io::Result<()> {
    /// // Port 0 picks a free one here; a tool would be given a fixed one, e.g. 8480.
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let sim = Simulator::start_on(listener).await;
    /// assert_eq!(sim.uri(), format!("http://127.0.0.1:{port}"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// When the listener cannot be set non-blocking or handed to the runtime.
    pub async fn start_on(listener: TcpListener) -> Self {
        Self::launch(DEFAULT_AK, DEFAULT_SK, DEFAULT_PROJECT_ID, Some(listener)).await
    }

    async fn launch(ak: &str, sk: &str, project_id: &str, listener: Option<TcpListener>) -> Self {
        let shared = Arc::new(Shared {
            ak: ak.to_owned(),
            sk: sk.to_owned(),
            project_id: ProjectId::new(project_id).expect("a valid project id"),
            tasks: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashSet::new()),
            requests: AtomicU64::new(0),
            clock_offset_secs: std::sync::atomic::AtomicI64::new(0),
            quota: Mutex::new(None),
            throttled: AtomicU64::new(0),
        });
        // Requests are counted here; wiremock need not keep them all.
        let builder = MockServer::builder().disable_request_recording();
        let builder = match listener {
            Some(listener) => builder.listener(listener),
            None => builder,
        };
        let server = builder.start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder(shared.clone()))
            .mount(&server)
            .await;
        Self { server, shared }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    #[must_use]
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The credentials the simulator accepts.
    #[must_use]
    pub fn credentials(&self) -> Credentials {
        Credentials::aksk(&self.shared.ak, &self.shared.sk)
    }

    /// The project the simulator serves.
    #[must_use]
    pub fn project_id(&self) -> &ProjectId {
        &self.shared.project_id
    }

    /// A client builder already pointed at the simulator with its credentials and project.
    pub fn client_builder(&self) -> IotdaClientBuilder {
        IotdaClient::builder()
            .endpoint(self.uri())
            .credentials(self.credentials())
            .project_id(self.shared.project_id.clone())
    }

    /// A client for the simulator.
    ///
    /// # Panics
    /// Never in practice: the simulator's own settings are valid.
    #[must_use]
    pub fn client(&self) -> IotdaClient {
        self.client_builder()
            .build()
            .expect("the simulator's settings are valid")
    }

    /// Adds (or replaces) a task and its script.
    pub fn add_task(&self, instance_id: &InstanceId, task_id: &TaskId, script: TaskScript) {
        let state = TaskState {
            script,
            step: 0,
            count: 0,
            running_since: None,
            polls: 0,
            created: TaskTime::from(jiff::Timestamp::now()),
            started: None,
            ended: None,
            last: None,
            retries: 0,
        };
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((instance_id.to_string(), task_id.to_string()), state);
    }

    /// Accepts `token` as an IAM token: a request whose `X-Auth-Token` is one the simulator was
    /// given is served without a signature. Any other token is refused with the gateway's 401
    /// (`APIGW.0301`, `decrypt token fail`), as is every token until one is given.
    ///
    /// ```
    /// use iotda_task_watcher::simulator::{Simulator, TaskScript};
    /// use iotda_task_watcher::{Credentials, TaskType};
    /// # #[tokio::main] async fn main() {
    /// let sim = Simulator::start().await;
    /// let (instance, task) = ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap());
    /// sim.add_task(&instance, &task, TaskScript::new(TaskType::Modify).succeed());
    /// sim.accept_token("my-iam-token");
    /// let client = sim.client_builder().credentials(Credentials::iam_token("my-iam-token")).build().unwrap();
    /// assert!(client.instance_task(&instance, &task).await.unwrap().is_terminal());
    /// # }
    /// ```
    pub fn accept_token(&self, token: impl Into<String>) {
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.into());
    }

    /// How many polls of this task reached the simulator (faults included).
    #[must_use]
    pub fn polls(&self, instance_id: &InstanceId, task_id: &TaskId) -> u64 {
        self.count(instance_id, task_id, |t| t.polls)
    }

    /// How many retries of this task the simulator accepted.
    #[must_use]
    pub fn retries(&self, instance_id: &InstanceId, task_id: &TaskId) -> u64 {
        self.count(instance_id, task_id, |t| t.retries)
    }

    /// A count kept on a task; 0 for a task the simulator does not know.
    fn count(&self, instance_id: &InstanceId, task_id: &TaskId, of: fn(&TaskState) -> u64) -> u64 {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(instance_id.to_string(), task_id.to_string()))
            .map_or(0, of)
    }

    /// How many requests reached the simulator, of any kind.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Holds the account to `quota` from now on, its bucket full, in place of any quota set
    /// before. Every request that passes authentication takes a token, whatever its task, before
    /// the task is looked up; one that finds none gets the quota's answer. A refused request is
    /// counted by [`requests`](Self::requests) and [`throttled`](Self::throttled), not as a
    /// poll: its task's script does not move.
    ///
    /// ```
    /// use iotda_task_watcher::client::ApiErrorKind;
    /// use iotda_task_watcher::simulator::{Quota, QuotaAnswer, Simulator, TaskScript};
    /// use iotda_task_watcher::TaskType;
    /// # #[tokio::main] async fn main() {
    /// let sim = Simulator::start().await;
    /// let (instance, task) = ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap());
    /// sim.add_task(&instance, &task, TaskScript::new(TaskType::Modify).succeed());
    /// // Two requests, then one every 1000 seconds, refused with IoTDA's 403.
    /// sim.set_quota(Quota::per_second(0.001, 2).answer(QuotaAnswer::RateLimited));
    /// let client = sim.client();
    /// for _ in 0..2 {
    ///     assert!(client.instance_task(&instance, &task).await.is_ok());
    /// }
    /// let refused = client.instance_task(&instance, &task).await.unwrap_err();
    /// assert_eq!(refused.kind(), ApiErrorKind::Throttled);
    /// assert_eq!(refused.error_code(), Some("IOTDA.021101"));
    /// assert_eq!((sim.requests(), sim.throttled()), (3, 1));
    /// sim.clear_quota();
    /// assert!(client.instance_task(&instance, &task).await.is_ok());
    /// # }
    /// ```
    pub fn set_quota(&self, quota: Quota) {
        *self.shared.quota_bucket() = Some(Bucket::new(quota, Instant::now()));
    }

    /// Lifts the account quota: every request is served again.
    pub fn clear_quota(&self) {
        *self.shared.quota_bucket() = None;
    }

    /// How many requests the account quota refused, over every quota set (a scripted
    /// [`Fault::Throttled`] or [`Fault::RateLimited`] is not counted here).
    #[must_use]
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }

    /// Sets the simulated server clock `offset` seconds from the local one: it shows in `Date`,
    /// and a request whose `X-Sdk-Date` is more than 15 minutes from it is refused as expired.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.shared
            .clock_offset_secs
            .store(offset_secs, Ordering::Relaxed);
    }
}

impl Shared {
    fn quota_bucket(&self) -> std::sync::MutexGuard<'_, Option<Bucket>> {
        // The bucket is plain numbers, whole after every statement: a panic elsewhere cannot
        // leave it half-written.
        self.quota
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a token from the account quota, if one is set; otherwise says how to refuse.
    fn take_token(&self) -> Result<(), QuotaAnswer> {
        let mut bucket = self.quota_bucket();
        let Some(bucket) = bucket.as_mut() else {
            return Ok(());
        };
        bucket.take(Instant::now()).inspect_err(|_| {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

struct Responder(Arc<Shared>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let shared = &self.0;
        let n = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let request_id = format!("{n:032x}");
        let offset = shared.clock_offset_secs.load(Ordering::Relaxed);
        let server_now = skew::shift(SystemTime::now(), offset.saturating_mul(1000));
        let (template, delay, own) = answer(shared, request, server_now, &request_id);
        let template = template
            .insert_header("X-Request-Id", request_id.as_str())
            .insert_header("Date", httpdate::fmt_http_date(server_now).as_str())
            .set_delay(delay);
        // A raw answer's own headers win over the simulator's.
        own.into_iter().fold(template, |template, (name, value)| {
            template.insert_header(name, value)
        })
    }
}

/// An error of the API gateway: `error_code`, `error_msg` and the request's id, the shape its
/// documentation shows for `APIGW.0301`.
fn gateway_error(status: u16, code: &str, msg: &str, request_id: &str) -> ResponseTemplate {
    json_error(
        status,
        &serde_json::json!({ "error_code": code, "error_msg": msg, "request_id": request_id }),
    )
}

/// The gateway's 401 for a request it does not authenticate.
fn unauthenticated(why: &str, request_id: &str) -> ResponseTemplate {
    gateway_error(
        401,
        "APIGW.0301",
        &format!("Incorrect IAM authentication information: {why}"),
        request_id,
    )
}

/// An error of IoTDA itself: `error_code` and `error_msg`, the shape of its error-code page.
fn service_error(status: u16, code: &str, msg: &str) -> ResponseTemplate {
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
fn throttled(retry_after: Option<Duration>, request_id: &str) -> ResponseTemplate {
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
fn rate_limited() -> ResponseTemplate {
    service_error(
        403,
        "IOTDA.021101",
        "Request reached the maximum rate limit.",
    )
}

/// The simulator's own answer for a task it does not know (see "Where the simulator guesses").
fn task_not_found() -> ResponseTemplate {
    service_error(
        404,
        "SIMULATOR.TASK_NOT_FOUND",
        "The instance task does not exist.",
    )
}

/// The answer to `request`, how long to hold it, and the headers of its own it sends.
fn answer(
    shared: &Shared,
    request: &Request,
    server_now: SystemTime,
    request_id: &str,
) -> (ResponseTemplate, Duration, Vec<(HeaderName, HeaderValue)>) {
    let at_once = |template| (template, Duration::ZERO, Vec::new());
    let no_such_api = || {
        gateway_error(
            404,
            "APIGW.0101",
            "The API does not exist or has not been published in the environment",
            request_id,
        )
    };
    let segments: Vec<&str> = request
        .url
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let (project, instance, task, retry) = match segments[..] {
        ["v5", "iot", project, "iotda-instances", instance, "tasks", task]
            if request.method.as_str() == "GET" =>
        {
            (project, instance, task, false)
        }
        ["v5", "iot", project, "iotda-instances", instance, "tasks", task, "retry"]
            if request.method.as_str() == "POST" =>
        {
            (project, instance, task, true)
        }
        _ => return at_once(no_such_api()),
    };
    if let Err(why) = authenticate(shared, request, server_now) {
        return at_once(unauthenticated(&why, request_id));
    }
    match shared.take_token() {
        Ok(()) => {}
        Err(QuotaAnswer::Throttled { retry_after }) => {
            return at_once(throttled(retry_after, request_id));
        }
        Err(QuotaAnswer::RateLimited) => return at_once(rate_limited()),
    }
    if project != shared.project_id.as_str() {
        return at_once(task_not_found());
    }
    let mut tasks = shared
        .tasks
        .lock()
        .expect("the task table is never poisoned");
    let Some(state) = tasks.get_mut(&(instance.to_owned(), task.to_owned())) else {
        return at_once(task_not_found());
    };
    if retry {
        return at_once(match state.retry(task) {
            Some(task) => ResponseTemplate::new(200).set_body_raw(
                serde_json::to_string(&task).expect("a task serializes"),
                "application/json",
            ),
            None => service_error(
                400,
                "SIMULATOR.TASK_NOT_RETRYABLE",
                "Only a FAILED task can be retried.",
            ),
        });
    }
    let (answer, delay) = state.advance(task);
    let template = match answer {
        Answer::Raw(raw) => {
            let template = ResponseTemplate::new(raw.status).set_body_bytes(raw.body);
            return (template, delay, raw.headers);
        }
        Answer::Task(task) => ResponseTemplate::new(200).set_body_raw(
            serde_json::to_string(&*task).expect("a task serializes"),
            "application/json",
        ),
        Answer::Fault(Fault::ServerError(500)) => {
            service_error(500, "IOTDA.000001", "Internal server error.")
        }
        Answer::Fault(Fault::ServerError(status)) => service_error(
            status,
            "SIMULATOR.INTERNAL_ERROR",
            "Simulated server error.",
        ),
        Answer::Fault(Fault::Throttled { retry_after }) => throttled(Some(retry_after), request_id),
        Answer::Fault(Fault::RateLimited) => rate_limited(),
        Answer::Fault(Fault::Malformed) => ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"task_id":"{task}","status":"RUN"#),
            "application/json",
        ),
        Answer::Fault(Fault::NotFound) => task_not_found(),
        Answer::Fault(Fault::BadSignature) => {
            unauthenticated("verify aksk signature fail", request_id)
        }
        Answer::Fault(Fault::Slow(_)) => unreachable!("a slow step delays the next answer"),
    };
    (template, delay, Vec::new())
}

/// Checks the request's credentials the way the gateway does: an accepted IAM token, or an
/// AK/SK signature. The error is the gateway's message after its common prefix.
fn authenticate(shared: &Shared, request: &Request, server_now: SystemTime) -> Result<(), String> {
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
    if ak != shared.ak {
        // The gateway's documentation shows the access key masked so.
        return Err("Get secretKey failed,ak:******,err:ak not exist".into());
    }
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
        &shared.sk,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quota_lets_its_burst_through_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let answer = QuotaAnswer::RateLimited;
        let mut bucket = Bucket::new(Quota::per_second(4.0, 2).answer(answer), t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Ok(()));
        assert_eq!(bucket.take(t0), Err(answer));
        // A refusal takes nothing: a quarter of a second later one token is back, whole.
        assert_eq!(bucket.take(t0 + ms(125)), Err(answer));
        assert_eq!(bucket.take(t0 + ms(250)), Ok(()));
        assert_eq!(bucket.take(t0 + ms(250)), Err(answer));
        // However long it waits, it holds no more than its burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Ok(()));
        assert_eq!(bucket.take(later), Err(QuotaAnswer::RateLimited));
    }

    #[test]
    fn a_quota_without_rate_or_burst_refills_nothing() {
        let t0 = Instant::now();
        let mut once = Bucket::new(Quota::per_second(0.0, 1), t0);
        assert_eq!(once.take(t0), Ok(()));
        assert_eq!(
            once.take(t0 + Duration::from_secs(3600)),
            Err(QuotaAnswer::Throttled { retry_after: None })
        );
        let mut none = Bucket::new(Quota::per_second(1000.0, 0), t0);
        assert!(none.take(t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_clock_read_out_of_order_adds_no_tokens() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Quota::per_second(2.0, 1), t0 + ms(500));
        assert_eq!(bucket.take(t0 + ms(500)), Ok(()));
        // An instant before the last one counts as no time at all, and the time runs on from
        // the latest instant seen: half a token by 750 ms, a whole one by 1000 ms.
        assert!(bucket.take(t0).is_err());
        assert!(bucket.take(t0 + ms(750)).is_err());
        assert_eq!(bucket.take(t0 + ms(1000)), Ok(()));
    }

    #[test]
    #[should_panic(expected = "a quota's rate")]
    fn a_quota_refuses_a_rate_that_is_not_a_number() {
        let _ = Quota::per_second(f64::NAN, 1);
    }
}
