//! The running simulator: its handle and counters, the state its requests share, and the
//! answer to each request.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::skew;
use crate::model::TaskTime;
use crate::{Credentials, InstanceId, IotdaClient, IotdaClientBuilder, ProjectId, TaskId};

use super::gateway::{
    authenticate, gateway_error, rate_limited, service_error, task_not_found, throttled,
    unauthenticated,
};
use super::issuer::{ExpiryStyle, Issuer, Metadata};
use super::quota::{Bucket, Quota, QuotaAnswer};
use super::script::{Answer, TaskScript, TaskState};
use super::{Fault, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK, REGION};

pub(super) struct Shared {
    pub(super) ak: String,
    pub(super) sk: String,
    project_id: ProjectId,
    pub(super) tasks: Mutex<HashMap<(String, String), TaskState>>,
    /// The most tasks a page of `ListInstanceTasks` holds, whatever its `limit`.
    pub(super) list_page: std::sync::atomic::AtomicUsize,
    /// Pages of `ListInstanceTasks` answered.
    pub(super) list_pages: AtomicU64,
    /// IAM tokens accepted as `X-Auth-Token`.
    pub(super) tokens: Mutex<HashSet<String>>,
    requests: AtomicU64,
    clock_offset_secs: std::sync::atomic::AtomicI64,
    /// The account quota, if one is set.
    pub(super) quota: Mutex<Option<Bucket>>,
    /// Requests the quota refused.
    pub(super) throttled: AtomicU64,
    /// Requests refused with the gateway's 401.
    refused: AtomicU64,
    /// The next retry's answer is lost: `Some(true)` after the task is restarted,
    /// `Some(false)` before.
    lose_retry: Mutex<Option<bool>>,
    /// The services that hand out temporary credentials, and the keys they issued.
    pub(super) issuer: Issuer,
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
            refused: AtomicU64::new(0),
            lose_retry: Mutex::new(None),
            list_page: std::sync::atomic::AtomicUsize::new(500),
            list_pages: AtomicU64::new(0),
            issuer: Issuer::new((REGION.to_owned(), project_id.to_owned())),
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
        let age = jiff::SignedDuration::try_from(script.age).unwrap_or_default();
        let created = jiff::Timestamp::now()
            .checked_sub(age)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let state = TaskState {
            script,
            step: 0,
            count: 0,
            running_since: None,
            polls: 0,
            created: TaskTime::from(created),
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

    /// When the task first answered RUNNING in its current step of `running_for` (the start
    /// of that step's clock); `None` before, and for a task the simulator does not know.
    #[must_use]
    pub fn running_since(
        &self,
        instance_id: &InstanceId,
        task_id: &TaskId,
    ) -> Option<std::time::Instant> {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(instance_id.to_string(), task_id.to_string()))
            .and_then(|t| t.running_since)
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

    /// Holds each page of `ListInstanceTasks` to at most `tasks` (500 by default, as the
    /// service's most), to make a list take several pages.
    pub fn set_list_page(&self, tasks: usize) {
        self.shared
            .list_page
            .store(tasks.clamp(1, 500), Ordering::Relaxed);
    }

    /// Pages of `ListInstanceTasks` answered.
    #[must_use]
    pub fn list_pages(&self) -> u64 {
        self.shared.list_pages.load(Ordering::Relaxed)
    }

    /// How long the temporary keys it hands out last from now on (default 1 hour). They are
    /// accepted until then, and refused with the gateway's 401 after.
    pub fn set_credential_lifetime(&self, lifetime: Duration) {
        self.shared.issuer.set_lifetime(lifetime);
    }

    /// How its ECS metadata service answers a request for the instance's keys.
    pub fn set_metadata(&self, metadata: Metadata) {
        self.shared.issuer.set_metadata(metadata);
    }

    /// How it writes the expiry of the keys it hands out.
    pub fn set_expiry_style(&self, style: ExpiryStyle) {
        self.shared.issuer.set_expiry_style(style);
    }

    /// Fails the next `n` requests for keys, on any route, with 503.
    pub fn fail_credential_fetches(&self, n: u32) {
        self.shared.issuer.fail_next(n);
    }

    /// The projects IAM's look-up knows, as (name, id); by default one, named
    /// [`REGION`](super::REGION), with the simulator's project id.
    pub fn set_projects(&self, projects: &[(&str, &str)]) {
        self.shared.issuer.set_projects(
            projects
                .iter()
                .map(|(name, id)| ((*name).to_owned(), (*id).to_owned()))
                .collect(),
        );
    }

    /// How many sets of temporary keys it handed out, on any route.
    #[must_use]
    pub fn credential_fetches(&self) -> u64 {
        self.shared.issuer.fetches()
    }

    /// Loses the answer to the next retry (`RetryInstanceTask`): it is held for an hour, so
    /// the client's request times out. With `restarted`, the task is restarted first (the
    /// service took the retry and the answer was lost on the way back); without, it is not
    /// (the retry never reached the service).
    pub fn lose_next_retry_answer(&self, restarted: bool) {
        *self
            .shared
            .lose_retry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(restarted);
    }

    /// How many requests it refused with the gateway's 401 (a wrong signature, an unknown or
    /// expired key).
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// When keys were asked for, on any route, failures included (by the server's clock).
    #[must_use]
    pub fn credential_attempts(&self) -> Vec<SystemTime> {
        self.shared.issuer.attempts()
    }

    /// The URL of its CCE Pod Identity service, for `HC_CONTAINER_CREDENTIALS_FULL_URI`.
    #[must_use]
    pub fn pod_identity_uri(&self) -> String {
        format!("{}/pod-identity/credentials", self.uri())
    }

    /// Sets the simulated server clock `offset` seconds from the local one: it shows in `Date`,
    /// and a request whose `X-Sdk-Date` is more than 15 minutes from it is refused as expired.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.shared
            .clock_offset_secs
            .store(offset_secs, Ordering::Relaxed);
    }
}

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

/// The answer to a retry of `task`, and how long to hold it: the task restarted, or refused
/// when it is not FAILED; or, when `lost` says so, an answer held for an hour (after the task
/// is restarted, with `Some(true)`).
fn retried(
    state: &mut TaskState,
    task: &str,
    lost: Option<bool>,
) -> (ResponseTemplate, Duration, Vec<(HeaderName, HeaderValue)>) {
    if let Some(restarted) = lost {
        if restarted {
            let _ = state.retry(task);
        }
        // No client waits so long for an answer.
        return (
            ResponseTemplate::new(504),
            Duration::from_secs(3600),
            Vec::new(),
        );
    }
    let template = match state.retry(task) {
        Some(task) => ResponseTemplate::new(200).set_body_raw(
            serde_json::to_string(&task).expect("a task serializes"),
            "application/json",
        ),
        None => service_error(
            400,
            "SIMULATOR.TASK_NOT_RETRYABLE",
            "Only a FAILED task can be retried.",
        ),
    };
    (template, Duration::ZERO, Vec::new())
}

/// The gateway's refusal of a request of the API, if it refuses it: unsigned or badly
/// signed, or over the account's quota.
fn refusal(
    shared: &Shared,
    request: &Request,
    server_now: SystemTime,
    request_id: &str,
) -> Option<ResponseTemplate> {
    if let Err(why) = authenticate(shared, request, server_now) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return Some(unauthenticated(&why, request_id));
    }
    match shared.take_token() {
        Ok(()) => None,
        Err(QuotaAnswer::Throttled { retry_after }) => Some(throttled(retry_after, request_id)),
        Err(QuotaAnswer::RateLimited) => Some(rate_limited()),
    }
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
    if let Some(template) = shared.issuer.answer(request, server_now, || {
        authenticate(shared, request, server_now)
    }) {
        return at_once(template);
    }
    let segments: Vec<&str> = request
        .url
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    if let ["v5", "iot", project, "iotda-instances", instance, "tasks"] = segments[..] {
        if request.method.as_str() == "GET" {
            if let Some(refused) = refusal(shared, request, server_now, request_id) {
                return at_once(refused);
            }
            if project != shared.project_id.as_str() {
                return at_once(task_not_found());
            }
            return at_once(super::list::list_tasks(shared, instance, request));
        }
    }
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
    if let Some(refused) = refusal(shared, request, server_now, request_id) {
        return at_once(refused);
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
        let lost = shared
            .lose_retry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        return retried(state, task, lost);
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
