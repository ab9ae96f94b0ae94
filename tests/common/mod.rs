//! Shared by the integration tests. Which helper to script a task's answers with:
//!
//! - The watcher alone, in virtual time (`start_paused`): `script::Script`, answering poll by
//!   poll (`Script::new`) or by the time since it was made (`Script::from_fn`); it records when
//!   each poll was sent.
//! - Over HTTP, through the real client: the crate's simulator, via `simulate(script)` (or
//!   `simulator()` for several tasks). It checks every signature as the gateway does; its steps
//!   say PENDING, RUNNING, faults and ends, and `TaskScript::raw` gives any other answer as it
//!   is (`task_json` for a task in any state).
//! - A broken connection (a reset mid-body, a refused one): `raw::serve`, the only way to break
//!   one.
//! - The request as the client sent it: `answering(template)`, a bare wiremock server with one
//!   answer that keeps the requests. The simulator keeps none, and it refuses any IAM token but
//!   those given to `Simulator::accept_token`.
//! - A signature, checked apart from the crate's signer: `gateway_check`, written from the
//!   algorithm's description (`check_wiremock` over a request `answering` kept).
//! - What was logged: `capture_logs`.
#![allow(dead_code)]

pub mod raw;
pub mod script;

use hmac::{Hmac, Mac};
use iotda_task_watcher::simulator::{RawAnswer, Simulator, TaskScript};
use iotda_task_watcher::{Credentials, InstanceId, IotdaClient, ProjectId, TaskId};
use sha2::{Digest, Sha256};

pub const AK: &str = "TESTAK0123456789";
pub const SK: &str = "test-secret-key-do-not-leak-7f3a";
pub const TOKEN: &str = "test-security-token-do-not-leak-91c2";
pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";
pub const INSTANCE: &str = "a1b2c3d4-0000-1111-2222-333344445555";
pub const TASK: &str = "075f413d-a3bb-4243-974d-8eb9221c1234";

pub fn task_path() -> String {
    format!("/v5/iot/{PROJECT}/iotda-instances/{INSTANCE}/tasks/{TASK}")
}

pub fn ids() -> (InstanceId, TaskId) {
    (INSTANCE.parse().unwrap(), TASK.parse().unwrap())
}

pub fn client(uri: &str) -> IotdaClient {
    client_with(uri, Credentials::aksk(AK, SK))
}

pub fn client_with(uri: &str, credentials: Credentials) -> IotdaClient {
    IotdaClient::builder()
        .endpoint(uri)
        .credentials(credentials)
        .project_id(ProjectId::new(PROJECT).unwrap())
        .build()
        .unwrap()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks `authorization` against the request as a gateway would: it rebuilds the canonical
/// request from what arrived, using exactly the headers that `SignedHeaders` lists.
/// Returns the signed header names.
pub fn gateway_check(
    method: &str,
    path: &str,
    query: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    ak: &str,
    sk: &str,
) -> Result<Vec<String>, String> {
    let auth = header("authorization").ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("SDK-HMAC-SHA256 ")
        .ok_or("not SDK-HMAC-SHA256")?;
    let mut access = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').ok_or("malformed Authorization")?;
        match k {
            "Access" => access = v,
            "SignedHeaders" => signed = v,
            "Signature" => signature = v,
            _ => return Err(format!("unexpected field {k}")),
        }
    }
    if access != ak {
        return Err(format!("access key {access} is not {ak}"));
    }
    let names: Vec<String> = signed.split(';').map(str::to_owned).collect();
    let mut canonical = format!("{method}\n");
    let mut uri = path
        .split('/')
        .map(|s| enc(&percent_decode(s)))
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    canonical.push_str(&uri);
    canonical.push('\n');
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (enc(&percent_decode(k)), enc(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    canonical.push_str(&q.join("&"));
    canonical.push('\n');
    for name in &names {
        let value = header(name).ok_or(format!("signed header {name} is missing"))?;
        canonical.push_str(&format!("{name}:{}\n", value.trim()));
    }
    canonical.push('\n');
    canonical.push_str(signed);
    canonical.push('\n');
    canonical.push_str(&hex::encode(Sha256::digest(body)));
    let date = header("x-sdk-date").ok_or("no X-Sdk-Date")?;
    let to_sign = format!(
        "SDK-HMAC-SHA256\n{date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(sk.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    if expected != signature {
        return Err(format!("signature {signature} is not {expected}"));
    }
    Ok(names)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `gateway_check` over a request wiremock received.
pub fn check_wiremock(req: &wiremock::Request, ak: &str, sk: &str) -> Result<Vec<String>, String> {
    gateway_check(
        req.method.as_str(),
        req.url.path(),
        req.url.query(),
        |name| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        },
        &req.body,
        ak,
        sk,
    )
}

/// Everything logged at any level while the guard lives on this thread.
pub struct Captured {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

/// Captures TRACE and up from every target, with spans' fields, on this thread.
pub fn capture_logs() -> Captured {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || SharedWriter(writer.clone()))
        .finish();
    Captured {
        buffer,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

struct SharedWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Task number `n`, as `00000000-0000-0000-0000-<n>`.
pub fn task_n(n: u32) -> TaskId {
    format!("00000000-0000-0000-0000-{n:012}").parse().unwrap()
}

/// A wait on task `task` of `INSTANCE` that polls every 10 ms, for at most 30 s.
pub fn every_10ms(client: &IotdaClient, task: &TaskId) -> iotda_task_watcher::TaskWatcher {
    let instance: InstanceId = INSTANCE.parse().unwrap();
    iotda_task_watcher::TaskWatcher::new(client, &instance, task)
        .policy(
            iotda_task_watcher::watch::PollPolicy::default()
                .with_min_delay(std::time::Duration::from_millis(10))
                .with_max_delay(std::time::Duration::from_millis(10)),
        )
        .timeout(std::time::Duration::from_secs(30))
}

/// A simulator that accepts `AK`/`SK` for `PROJECT`, with no tasks yet.
pub async fn simulator() -> Simulator {
    Simulator::start_with(AK, SK, PROJECT).await
}

/// A simulator that accepts `AK`/`SK` for `PROJECT` and plays `script` for the test task.
pub async fn simulate(script: TaskScript) -> Simulator {
    let sim = simulator().await;
    let (instance, task) = ids();
    sim.add_task(&instance, &task, script);
    sim
}

/// How many polls of the test task passed the simulator's signature check and were answered
/// by its script.
pub fn polls(sim: &Simulator) -> u64 {
    let (instance, task) = ids();
    sim.polls(&instance, &task)
}

/// A 200 with a task in `status` at `progress`, for answers the simulator's steps do not give.
pub fn task_json(status: &str, progress: i64) -> RawAnswer {
    RawAnswer::json(format!(
        r#"{{"task_id":"{TASK}","type":"MODIFY","status":"{status}","progress":{progress}}}"#
    ))
}

/// A wiremock server answering every GET of the test task with `template`. It keeps the
/// requests, for tests of what the client sends.
pub async fn answering(template: wiremock::ResponseTemplate) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("GET"))
        .and(path(task_path()))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// The retries a wait reported: each `Retried` event's attempt, the failure's detail, and the
/// status the retry answered.
pub fn retries_of(events: &[iotda_task_watcher::TaskEvent]) -> Vec<(u32, Option<String>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            iotda_task_watcher::TaskEvent::Retried {
                attempt,
                failed,
                task,
                ..
            } => Some((
                *attempt,
                failed.status_detail.clone(),
                task.status_or_unknown().to_string(),
            )),
            _ => None,
        })
        .collect()
}
