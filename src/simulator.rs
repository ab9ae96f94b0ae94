//! An in-process IoTDA server on loopback, for tests, examples, benchmarks and first steps.
//!
//! It speaks the real API: the same path, JSON and error bodies, an `X-Request-Id` and a `Date`
//! on every answer, and it checks every request's SDK-HMAC-SHA256 signature (or IAM token) as
//! the gateway does. Each task plays a script: PENDING for some polls, RUNNING with progress
//! over polls or over time, faults, then SUCCESS or FAILED.
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
//! own), a script can give a [`RawAnswer`] as it is.
//!
//! Codes of its own: an unknown task, and [`Fault::NotFound`], answer 404 with
//! `SIMULATOR.TASK_NOT_FOUND`; [`Fault::ServerError`] answers with `SIMULATOR.INTERNAL_ERROR`.
//! The gateway's codes (`APIGW.0301`, `APIGW.0308`) and IoTDA's rate limit (`IOTDA.021101`) are
//! the service's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::StatusCode;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::{signer, skew};
use crate::model::{OperateWindow, TaskTime};
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
    /// An error status (5xx) with a JSON error body.
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
    /// HTTP 404, as for an unknown task.
    NotFound,
    /// HTTP 401 `APIGW.0301`, as for a bad signature.
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
    steps: Vec<Step>,
}

impl TaskScript {
    /// An empty script for a task of `task_type`; without steps it answers PENDING.
    pub fn new(task_type: TaskType) -> Self {
        Self {
            task_type,
            window: None,
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

    /// Ends in FAILED with `detail` as `status_detail`.
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
    /// The last task or raw answer, given again past the end of the script.
    last: Option<Answer>,
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
        InstanceTask {
            task_id: Some(task_id.to_owned()),
            task_type: Some(self.script.task_type.clone()),
            create_time: Some(self.created.clone()),
            start_time: self.started.clone(),
            end_time: status.is_terminal().then(now),
            operate_window: self.script.window.clone(),
            status_detail: detail,
            status: Some(status),
            progress: Some(progress),
            target_config: None,
        }
    }
}

struct Shared {
    ak: String,
    sk: String,
    project_id: ProjectId,
    tasks: Mutex<HashMap<(String, String), TaskState>>,
    requests: AtomicU64,
    clock_offset_secs: std::sync::atomic::AtomicI64,
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
        let shared = Arc::new(Shared {
            ak: ak.to_owned(),
            sk: sk.to_owned(),
            project_id: ProjectId::new(project_id).expect("a valid project id"),
            tasks: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            clock_offset_secs: std::sync::atomic::AtomicI64::new(0),
        });
        // Requests are counted here; wiremock need not keep them all.
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
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
            last: None,
        };
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((instance_id.to_string(), task_id.to_string()), state);
    }

    /// How many polls of this task reached the simulator (faults included).
    #[must_use]
    pub fn polls(&self, instance_id: &InstanceId, task_id: &TaskId) -> u64 {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(instance_id.to_string(), task_id.to_string()))
            .map_or(0, |t| t.polls)
    }

    /// How many requests reached the simulator, of any kind.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Sets the simulated server clock `offset` seconds from the local one: it shows in `Date`,
    /// and a request whose `X-Sdk-Date` is more than 15 minutes from it is refused as expired.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.shared
            .clock_offset_secs
            .store(offset_secs, Ordering::Relaxed);
    }
}

/// How far `X-Sdk-Date` may be from the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

struct Responder(Arc<Shared>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let shared = &self.0;
        let n = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let offset = shared.clock_offset_secs.load(Ordering::Relaxed);
        let server_now = skew::shift(SystemTime::now(), offset.saturating_mul(1000));
        let (template, delay, own) = answer(shared, request, server_now);
        let template = template
            .insert_header("X-Request-Id", format!("sim-{n:08}").as_str())
            .insert_header("Date", httpdate::fmt_http_date(server_now).as_str())
            .set_delay(delay);
        // A raw answer's own headers win over the simulator's.
        own.into_iter().fold(template, |template, (name, value)| {
            template.insert_header(name, value)
        })
    }
}

fn error(status: u16, code: &str, msg: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        serde_json::json!({ "error_code": code, "error_msg": msg }).to_string(),
        "application/json",
    )
}

fn no_such_api() -> ResponseTemplate {
    error(
        404,
        "APIGW.0101",
        "The API does not exist or has not been published in the environment",
    )
}

/// The answer to `request`, how long to hold it, and the headers of its own it sends.
fn answer(
    shared: &Shared,
    request: &Request,
    server_now: SystemTime,
) -> (ResponseTemplate, Duration, Vec<(HeaderName, HeaderValue)>) {
    let not_found = || error(404, "SIMULATOR.TASK_NOT_FOUND", "The task does not exist.");
    let segments: Vec<&str> = request
        .url
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let ["v5", "iot", project, "iotda-instances", instance, "tasks", task] = segments[..] else {
        return (no_such_api(), Duration::ZERO, Vec::new());
    };
    if request.method.as_str() != "GET" {
        return (no_such_api(), Duration::ZERO, Vec::new());
    }
    if let Err(why) = authenticate(shared, request, server_now) {
        return (
            error(
                401,
                "APIGW.0301",
                &format!("Incorrect IAM authentication information: {why}"),
            ),
            Duration::ZERO,
            Vec::new(),
        );
    }
    if project != shared.project_id.as_str() {
        return (not_found(), Duration::ZERO, Vec::new());
    }
    let mut tasks = shared
        .tasks
        .lock()
        .expect("the task table is never poisoned");
    let Some(state) = tasks.get_mut(&(instance.to_owned(), task.to_owned())) else {
        return (not_found(), Duration::ZERO, Vec::new());
    };
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
        Answer::Fault(Fault::ServerError(status)) => error(
            status,
            "SIMULATOR.INTERNAL_ERROR",
            "Simulated server error.",
        ),
        Answer::Fault(Fault::Throttled { retry_after }) => error(
            429,
            "APIGW.0308",
            "The throttling threshold has been reached.",
        )
        .insert_header("Retry-After", retry_after.as_secs().to_string().as_str()),
        Answer::Fault(Fault::RateLimited) => {
            error(403, "IOTDA.021101", "Request rate limit exceeded.")
        }
        Answer::Fault(Fault::Malformed) => ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"task_id":"{task}","status":"RUN"#),
            "application/json",
        ),
        Answer::Fault(Fault::NotFound) => not_found(),
        Answer::Fault(Fault::BadSignature) => error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: verify aksk signature fail.",
        ),
        Answer::Fault(Fault::Slow(_)) => unreachable!("a slow step delays the next answer"),
    };
    (template, delay, Vec::new())
}

/// Checks the request's credentials the way the gateway does.
fn authenticate(shared: &Shared, request: &Request, server_now: SystemTime) -> Result<(), String> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-auth-token").is_some() {
        return Err("the simulator accepts AK/SK signatures only".into());
    }
    let auth = header("authorization").ok_or("no Authorization header")?;
    let (ak, signed, signature) =
        signer::parse_authorization(auth).ok_or("the Authorization header is malformed")?;
    if ak != shared.ak {
        return Err("unknown access key".into());
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
