//! CPU time per completed poll: the watcher against a minimal hand-written loop that sends the
//! same signed GET and decodes the same JSON, with the same `reqwest::Client`, against the same
//! loopback server (a child process, so its CPU is not counted), interleaved in one run.
//!
//! `cargo bench --bench overhead` (`BENCH_QUICK=1` for a short run; `OVERHEAD_ONLY=watcher` or
//! `OVERHEAD_ONLY=baseline` runs one side alone, for a profiler).

mod common;

use std::time::{Duration, SystemTime};

use common::server::ServerProcess;
use common::{AK, INSTANCE, PROJECT, SK};
use iotda_task_watcher::client::signer;
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, InstanceTask, TaskId, TaskStatus, TaskWatcher};
use serde_json::json;

/// The baseline: what a caller would write by hand for the same job.
async fn hand_written(http: &reqwest::Client, base: &str, host: &str, task: &str) -> u64 {
    let url: url::Url = format!("{base}/v5/iot/{PROJECT}/iotda-instances/{INSTANCE}/tasks/{task}")
        .parse()
        .unwrap();
    let mut polls = 0;
    loop {
        polls += 1;
        let date = jiff::Timestamp::try_from(SystemTime::now())
            .unwrap()
            .strftime(signer::DATE_FORMAT)
            .to_string();
        let headers = [
            ("host", host),
            ("x-sdk-date", date.as_str()),
            ("x-project-id", PROJECT),
        ];
        let auth = signer::authorization(
            AK,
            SK,
            &signer::SignRequest {
                method: "GET",
                url: &url,
                headers: &headers,
                body: b"",
            },
        );
        let response = http
            .get(url.clone())
            .header("host", host)
            .header("x-sdk-date", &date)
            .header("x-project-id", PROJECT)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        let body = response.bytes().await.unwrap();
        let task: InstanceTask = serde_json::from_slice(&body).unwrap();
        if task.status == Some(TaskStatus::Success) {
            return polls;
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// The pause between polls on both sides: the shortest delay the watcher takes (shorter ones
/// count as 1 ms, so that no setting makes a wait a busy loop).
const PAUSE: Duration = Duration::from_millis(1);

fn main() {
    if common::server::run_if_server() {
        return;
    }
    let quick = common::quick();
    let (rounds, polls_per_round) = if quick { (12, 400u64) } else { (40, 1_000) };
    let server = ServerProcess::spawn();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let client = common::client_builder(server.uri.as_str())
        .http_client(http.clone())
        .build()
        .unwrap();
    let host = client.endpoint().host_header();
    let instance: InstanceId = INSTANCE.parse().unwrap();

    let mut uniq = 0u64;
    let mut next_task = |polls: u64| {
        uniq += 1;
        TaskId::new(format!("a-{:x}-{uniq:x}", polls - 1)).unwrap()
    };
    // For profiling one side alone, e.g. under `valgrind --tool=callgrind`.
    let only = match std::env::var("OVERHEAD_ONLY").as_deref() {
        Ok("watcher") => Some(0),
        Ok("baseline") => Some(1),
        _ => None,
    };
    let mut watcher_us = Vec::new();
    let mut baseline_us = Vec::new();
    runtime.block_on(async {
        for round in 0..=rounds {
            // Alternate which goes first, so that neither always runs on a warmer machine.
            for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if only.is_some_and(|o| o != which) {
                    continue;
                }
                let task = next_task(polls_per_round);
                let before = common::cpu_time_ns();
                let polls = if which == 0 {
                    let done = TaskWatcher::new(&client, &instance, &task)
                        // Back-to-back polls: the server's progress rises per poll, not per
                        // second, so a progress estimate would only add sleeps here.
                        .policy(
                            PollPolicy::default()
                                .with_min_delay(PAUSE)
                                .with_max_delay(PAUSE)
                                .with_jitter(false)
                                .with_progress_guided(false),
                        )
                        .await
                        .unwrap();
                    assert_eq!(done.status, Some(TaskStatus::Success));
                    polls_per_round
                } else if std::env::var("CLIENT_LOOP").is_ok() {
                    let mut n = 0;
                    loop {
                        n += 1;
                        let t = client.instance_task(&instance, &task).await.unwrap();
                        if t.status == Some(TaskStatus::Success) {
                            break n;
                        }
                        tokio::time::sleep(PAUSE).await;
                    }
                } else {
                    hand_written(&http, &server.uri, &host, task.as_str()).await
                };
                assert_eq!(polls, polls_per_round);
                let us = (common::cpu_time_ns() - before) as f64 / 1e3 / polls as f64;
                // Round 0 warms the connection pool and the caches; it is not counted.
                if round > 0 {
                    if which == 0 {
                        watcher_us.push(us)
                    } else {
                        baseline_us.push(us)
                    }
                }
            }
        }
    });
    if only.is_some() {
        return;
    }
    let watcher = common::median(&mut watcher_us);
    let baseline = common::median(&mut baseline_us);
    let ratio = watcher / baseline;
    println!("overhead: CPU time per completed poll, median of {rounds} interleaved rounds of {polls_per_round} polls ({})", common::machine());
    println!("{:<28} {:>12}", "", "us/poll");
    println!("{:<28} {:>12.1}", "watcher (TaskWatcher)", watcher);
    println!("{:<28} {:>12.1}", "baseline (hand-written loop)", baseline);
    println!("{:<28} {:>12.3}", "ratio", ratio);
    common::write_json(
        "overhead",
        &json!({
            "ratio": ratio,
            "watcher_us_per_poll": watcher,
            "baseline_us_per_poll": baseline,
            "rounds": rounds,
            "polls_per_round": polls_per_round,
            "watcher_rounds_us": watcher_us,
            "baseline_rounds_us": baseline_us,
        }),
    );
}
