//! A loopback IoTDA server for the benches, run in a child process (the bench binary itself,
//! started again with `IOTDA_BENCH_ROLE=server`). It is stateless but for poll counts: the task
//! id says how the task behaves.
//!
//! Task ids (all `[a-f0-9-]`):
//! - `a-<n>-<uniq>`: RUNNING for `n` polls (hex), then SUCCESS;
//! - `b-<ms>-<f>-<uniq>`: RUNNING until `ms` (hex) after the parent's epoch, then SUCCESS
//!   (`f` = 0) or FAILED (`f` = 1);
//! - `c-<ms>-<uniq>`: every answer takes `ms` (hex) milliseconds; RUNNING forever;
//! - `f-<ms>-<f>-<uniq>`: as `b`, but one answer in five is a fault: 500, 503, 429 with
//!   `Retry-After: 1`, `IOTDA.021101` over 403, malformed JSON, or an answer slower than the
//!   soak's 1-second request timeout.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ROLE: &str = "IOTDA_BENCH_ROLE";
const EPOCH: &str = "IOTDA_BENCH_EPOCH_MS";

/// The server child; it stops when this is dropped.
pub struct ServerProcess {
    child: Child,
    pub uri: String,
    pub epoch_ms: u64,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl ServerProcess {
    /// Starts the server child and waits until it listens.
    pub fn spawn() -> Self {
        let epoch_ms = unix_ms();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "server")
            .env(EPOCH, epoch_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the bench can start itself as the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let uri = line
            .trim()
            .strip_prefix("LISTENING ")
            .expect("the server says where it listens")
            .to_owned();
        Self {
            child,
            uri,
            epoch_ms,
        }
    }

    /// Milliseconds since the server's epoch.
    pub fn now_ms(&self) -> u64 {
        unix_ms() - self.epoch_ms
    }
}

/// Runs the server when this process was started as one; returns false otherwise.
pub fn run_if_server() -> bool {
    if std::env::var(ROLE).as_deref() != Ok("server") {
        return false;
    }
    let epoch_ms: u64 = std::env::var(EPOCH).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(Tasks {
                epoch_ms,
                counts: Mutex::new(HashMap::new()),
            })
            .mount(&server)
            .await;
        println!("LISTENING {}", server.uri());
        // Until the parent goes away.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await;
    });
    true
}

struct Tasks {
    epoch_ms: u64,
    counts: Mutex<HashMap<String, u64>>,
}

fn body(task_id: &str, status: &str, progress: u64) -> String {
    format!(
        r#"{{"task_id":"{task_id}","type":"MODIFY","status":"{status}","create_time":"2026-11-27T01:52:49.493Z","start_time":"2026-11-27T01:52:50.012Z","target_config":{{"flavor":{{"type":"iotda.standard.s2","size":2}}}},"operate_window":{{"start_time":"18:00","end_time":"22:00"}},"progress":{progress}}}"#
    )
}

impl Respond for Tasks {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let task = request.url.path().rsplit('/').next().unwrap_or_default();
        let parts: Vec<&str> = task.split('-').collect();
        let hex =
            |i: usize| u64::from_str_radix(parts.get(i).copied().unwrap_or("0"), 16).unwrap_or(0);
        let ok = |status: &str, progress: u64| {
            ResponseTemplate::new(200).set_body_string(body(task, status, progress))
        };
        match parts.first().copied() {
            Some("a") => {
                let mut counts = self.counts.lock().unwrap();
                let seen = counts.entry(task.to_owned()).or_insert(0);
                *seen += 1;
                if *seen > hex(1) {
                    ok("SUCCESS", 100)
                } else {
                    ok("RUNNING", (*seen * 100 / (hex(1) + 1)).min(99))
                }
            }
            Some("f") if fastrand::u8(..5) == 0 => match fastrand::u8(..6) {
                0 => ResponseTemplate::new(500)
                    .set_body_string(r#"{"error_code":"BENCH.500","error_msg":"fault"}"#),
                1 => ResponseTemplate::new(503).set_body_string("<html>unavailable</html>"),
                2 => ResponseTemplate::new(429)
                    .insert_header("Retry-After", "1")
                    .set_body_string(r#"{"error_code":"APIGW.0308","error_msg":"throttled"}"#),
                3 => ResponseTemplate::new(403)
                    .set_body_string(r#"{"error_code":"IOTDA.021101","error_msg":"rate limit"}"#),
                4 => ResponseTemplate::new(200).set_body_string(r#"{"task_id":"x","status":"RUN"#),
                _ => ok("RUNNING", 1).set_delay(Duration::from_millis(1_500)),
            },
            Some("b" | "f") => {
                let now = unix_ms() - self.epoch_ms;
                let finish = hex(1);
                if now >= finish {
                    if hex(2) == 1 {
                        ok("FAILED", 100)
                    } else {
                        ok("SUCCESS", 100)
                    }
                } else {
                    ok("RUNNING", now * 100 / finish.max(1))
                }
            }
            Some("c") => ok("RUNNING", 50).set_delay(Duration::from_millis(hex(1))),
            _ => ResponseTemplate::new(404)
                .set_body_string(r#"{"error_code":"BENCH.NOT_FOUND","error_msg":"unknown task"}"#),
        }
    }
}
