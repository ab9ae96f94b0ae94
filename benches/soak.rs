//! Soak: 10,000 concurrent waits, kept at that number for several minutes, against a server
//! that answers one request in five with a fault. Every wait must resolve with its task's real
//! outcome; RSS must stay flat after warm-up; the runtime's task count must come back to its
//! baseline at the end.
//!
//! `cargo bench --bench soak` (300 s; `SOAK_SECONDS=N` to choose, `BENCH_QUICK=1` for 45 s;
//! `SOAK_BUDGET=unlimited` for a client with no request budget). A wrong outcome fails the run.

mod common;

use std::time::Duration;

use common::server::ServerProcess;
use iotda_task_watcher::client::budget::RequestBudget;
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskId, TaskStatus, TaskWatcher, WaitError};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

const WAITS: usize = 10_000;

fn main() {
    if common::server::run_if_server() {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if common::quick() { 45 } else { 300 });
    let server = ServerProcess::spawn();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let baseline_tasks = metrics.num_alive_tasks();
        let unlimited = std::env::var("SOAK_BUDGET").is_ok_and(|b| b == "unlimited");
        let mut builder = common::client_builder(server.uri.as_str());
        if unlimited {
            builder = builder.budget(RequestBudget::unlimited());
        }
        let client = builder.build().unwrap();
        let budget = if unlimited { "unlimited" } else { "default" };
        let instance: InstanceId = common::INSTANCE.parse().unwrap();
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let mut next = 0u64;
        let spawn = |set: &mut JoinSet<(bool, Result<_, WaitError>)>, next: &mut u64| {
            *next += 1;
            let runs_ms = fastrand::u64(5_000..40_000);
            let fails = fastrand::u8(..10) == 0;
            let finish = server.now_ms() + runs_ms;
            let task: TaskId = format!("f-{finish:x}-{}-{:x}", u8::from(fails), *next)
                .parse()
                .unwrap();
            let watcher = TaskWatcher::new(&client, &instance, &task)
                .policy(
                    PollPolicy::default()
                        .with_min_delay(Duration::from_secs(2))
                        .with_max_delay(Duration::from_secs(10)),
                )
                .request_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(600));
            set.spawn(async move { (fails, watcher.await) });
        };
        let mut set = JoinSet::new();
        for _ in 0..WAITS {
            spawn(&mut set, &mut next);
        }
        let (mut resolved, mut wrong) = (0u64, 0u64);
        let mut samples: Vec<(f64, u64)> = Vec::new();
        let mut sample_at = started;
        while let Some(done) = set.join_next().await {
            let (fails, outcome) = done.unwrap();
            resolved += 1;
            let right = match &outcome {
                Ok(task) => !fails && task.status == Some(TaskStatus::Success),
                Err(WaitError::Failed { .. }) => fails,
                Err(_) => false,
            };
            if !right {
                wrong += 1;
                eprintln!("wrong outcome: {outcome:?}");
            }
            let now = Instant::now();
            if now < until {
                spawn(&mut set, &mut next);
            }
            if now >= sample_at {
                samples.push((
                    now.duration_since(started).as_secs_f64(),
                    common::rss_bytes(),
                ));
                sample_at += Duration::from_secs(5);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        drop(client);
        // Idle connections close, and their tasks with them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let end_tasks = metrics.num_alive_tasks();

        // Warm-up is the first fifth of the run; flat means no sample after it is more than 10 %
        // above the first sample after it.
        let steady: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= seconds as f64 / 5.0 && *t <= seconds as f64)
            .map(|s| s.1)
            .collect();
        let first = steady.first().copied().unwrap_or(0);
        let max = steady.iter().copied().max().unwrap_or(0);
        let growth = if first > 0 {
            max as f64 / first as f64 - 1.0
        } else {
            f64::NAN
        };
        println!(
            "soak: {WAITS} concurrent waits for {seconds} s, 20 % faults, {budget} budget ({})",
            common::machine()
        );
        println!("{:<34} {:>12}", "waits resolved", resolved);
        println!("{:<34} {:>12}", "wrong outcomes", wrong);
        println!(
            "{:<34} {:>12.1}",
            "waits per second",
            resolved as f64 / elapsed
        );
        println!(
            "{:<34} {:>12.1}",
            "RSS after warm-up, MiB",
            first as f64 / 1048576.0
        );
        println!(
            "{:<34} {:>12.1}",
            "RSS max after warm-up, MiB",
            max as f64 / 1048576.0
        );
        println!(
            "{:<34} {:>11.1}%",
            "RSS growth after warm-up",
            growth * 100.0
        );
        println!("{:<34} {:>12}", "tokio tasks before", baseline_tasks);
        println!("{:<34} {:>12}", "tokio tasks after", end_tasks);
        common::write_json(
            "soak",
            &json!({
                "seconds": seconds,
                "budget": budget,
                "concurrent_waits": WAITS,
                "waits_resolved": resolved,
                "wrong_outcomes": wrong,
                "rss_samples": samples,
                "rss_after_warmup_bytes": first,
                "rss_max_after_warmup_bytes": max,
                "rss_growth_after_warmup": growth,
                "tokio_tasks_before": baseline_tasks,
                "tokio_tasks_after": end_tasks,
            }),
        );
        assert_eq!(wrong, 0, "{wrong} waits ended with a wrong outcome");
    });
}
