//! Cancellation: 1,000 waits, half cancelled while they sleep between polls and half while a
//! request is in flight (the server holds it for 30 s). For each: the time from
//! `CancellationToken::cancel` to the wait's end, and whether any request reached the server
//! after the cancel.
//!
//! `cargo bench --bench cancel` (`BENCH_QUICK=1` is the same run: it is short).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskId, TaskWatcher, WaitError};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const WAITS: usize = 1_000;

/// Answers every task RUNNING: at once for `a…` tasks, after 30 s for `b…` tasks; records when
/// each request arrived.
struct Server {
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Respond for Server {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let task = request
            .url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let slow = task.starts_with('b');
        self.arrivals.lock().unwrap().push((task, Instant::now()));
        let answer =
            ResponseTemplate::new(200).set_body_string(r#"{"status":"RUNNING","progress":10}"#);
        if slow {
            answer.set_delay(Duration::from_secs(30))
        } else {
            answer
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(Server {
                arrivals: arrivals.clone(),
            })
            .mount(&server)
            .await;
        let client = common::client_builder(&server.uri()).build().unwrap();
        let instance: InstanceId = common::INSTANCE.parse().unwrap();

        // Half sleep 60 s after their first answer; half wait on a request the server holds.
        let mut waits = Vec::with_capacity(WAITS);
        let mut handles = Vec::with_capacity(WAITS);
        for i in 0..WAITS {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            let task: TaskId = format!("{kind}-{i:x}").parse().unwrap();
            let token = CancellationToken::new();
            let watcher = TaskWatcher::new(&client, &instance, &task)
                .policy(
                    PollPolicy::default()
                        .with_min_delay(Duration::from_secs(60))
                        .with_jitter(false),
                )
                .request_timeout(Duration::from_secs(120))
                .cancel_token(token.clone());
            let handle = tokio::spawn(async move {
                let outcome = watcher.await;
                (Instant::now(), outcome)
            });
            waits.push((task, token));
            handles.push(Some(handle));
        }
        // Every wait has sent its first request: the `a` ones now sleep, the `b` ones wait.
        while arrivals.lock().unwrap().len() < WAITS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Cancel one at a time, spread over about a second.
        let mut rng = fastrand::Rng::with_seed(11);
        let mut order: Vec<usize> = (0..WAITS).collect();
        rng.shuffle(&mut order);
        let mut cancelled_at = vec![Instant::now(); WAITS];
        let mut latency_us = [Vec::new(), Vec::new()];
        let mut all_cancelled = true;
        for &i in &order {
            tokio::time::sleep(Duration::from_micros(rng.u64(0..2_000))).await;
            cancelled_at[i] = Instant::now();
            waits[i].1.cancel();
            let (ended, outcome) = handles[i].take().unwrap().await.unwrap();
            all_cancelled &= matches!(outcome, Err(WaitError::Cancelled { .. }));
            latency_us[i % 2].push(ended.duration_since(cancelled_at[i]).as_secs_f64() * 1e6);
        }
        // Anything still on its way has had time to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let arrivals = arrivals.lock().unwrap();
        let index: std::collections::HashMap<&str, usize> = waits
            .iter()
            .enumerate()
            .map(|(i, w)| (w.0.as_str(), i))
            .collect();
        let after = arrivals
            .iter()
            .filter(|(task, at)| {
                index
                    .get(task.as_str())
                    .is_some_and(|&i| *at > cancelled_at[i])
            })
            .count();

        let mut all: Vec<f64> = latency_us.concat();
        let p50 = common::quantile(&mut all, 0.50);
        let p99 = common::quantile(&mut all, 0.99);
        let max = common::quantile(&mut all, 1.0);
        let p99_sleep = common::quantile(&mut latency_us[0], 0.99);
        let p99_request = common::quantile(&mut latency_us[1], 0.99);
        println!(
            "cancel: {WAITS} waits, half mid-sleep, half mid-request ({})",
            common::machine()
        );
        println!("{:<34} {:>10}", "", "us");
        println!("{:<34} {:>10.0}", "p50 cancel to end", p50);
        println!("{:<34} {:>10.0}", "p99 cancel to end", p99);
        println!("{:<34} {:>10.0}", "p99 mid-sleep", p99_sleep);
        println!("{:<34} {:>10.0}", "p99 mid-request", p99_request);
        println!("{:<34} {:>10.0}", "max", max);
        println!("{:<34} {:>10}", "requests after cancel", after);
        println!("{:<34} {:>10}", "every wait ended Cancelled", all_cancelled);
        common::write_json(
            "cancel",
            &json!({
                "p99_cancel_us": p99,
                "p50_cancel_us": p50,
                "max_cancel_us": max,
                "p99_mid_sleep_us": p99_sleep,
                "p99_mid_request_us": p99_request,
                "requests_after_cancel": after,
                "all_cancelled": all_cancelled,
                "waits": WAITS,
            }),
        );
    });
}
