//! Many concurrent watchers on one runtime and one client against a loopback server (a child
//! process), tasks finishing at random times. Measures memory per sleeping watcher, polls per
//! second, and how late each poll ran against its schedule.
//!
//! Every watcher polls at a constant delay `D` (no jitter, no progress guidance), so its
//! schedule is exact: a poll
//! planned `D` after the previous answer that runs at `t` is `t - (answer + D)` late. `D` grows
//! with the number of watchers so that the load stays near 2,500 polls per second.
//!
//! `cargo bench --bench scale` (`BENCH_QUICK=1`: 1k and 10k watchers; otherwise 100k too).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::ServerProcess;
use iotda_task_watcher::client::ApiError;
use iotda_task_watcher::watch::{BoundTask, PollPolicy, TaskSource};
use iotda_task_watcher::{
    InstanceId, InstanceTask, IotdaClient, TaskId, TaskStatus, TaskWatcher, WaitError,
};
use serde_json::json;
use tokio::time::Instant;

/// The client's source, timed: it records how late each poll started.
struct Timed {
    inner: BoundTask,
    delay: Duration,
    last_answer: Mutex<Option<Instant>>,
    lateness_ms: Arc<Mutex<Vec<f32>>>,
}

impl TaskSource for Timed {
    async fn fetch(&self) -> Result<InstanceTask, ApiError> {
        let started = Instant::now();
        if let Some(answer) = *self.last_answer.lock().unwrap() {
            let late = started.saturating_duration_since(answer + self.delay);
            self.lateness_ms
                .lock()
                .unwrap()
                .push(common::ms(late) as f32);
        }
        let result = self.inner.fetch().await;
        *self.last_answer.lock().unwrap() = Some(Instant::now());
        result
    }
}

struct Run {
    watchers: usize,
    all_resolved: bool,
    rss_per_watcher_bytes: f64,
    peak_rss_bytes: u64,
    polls_per_s: f64,
    p50_lateness_ms: f64,
    p99_lateness_ms: f64,
    max_lateness_ms: f64,
    seconds: f64,
}

fn run(server: &ServerProcess, client: &IotdaClient, n: usize, seed: u64) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let delay = Duration::from_secs_f64((n as f64 / 2_500.0).max(1.0));
    let mut rng = fastrand::Rng::with_seed(seed);
    let instance: InstanceId = common::INSTANCE.parse().unwrap();
    let lateness = Arc::new(Mutex::new(Vec::with_capacity(n * 8)));
    let polls = Arc::new(std::sync::atomic::AtomicU64::new(0));

    runtime.block_on(async {
        // Warm the pool, then take the baseline.
        let warm: TaskId = format!("b-0-0-{seed:x}").parse().unwrap();
        let _ = client.instance_task(&instance, &warm).await;
        let rss_before = common::rss_bytes();
        let started = Instant::now();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            // Starts spread over one delay; tasks end 2 to 5 delays after their start.
            let offset = delay.mul_f64(rng.f64());
            let runs_for = delay.mul_f64(2.0 + 3.0 * rng.f64());
            let fails = rng.u8(..10) == 0;
            let finish_ms = server.now_ms() + (offset + runs_for).as_millis() as u64;
            let task: TaskId = format!("b-{finish_ms:x}-{}-{i:x}", u8::from(fails))
                .parse()
                .unwrap();
            let source = Timed {
                inner: BoundTask::new(client, &instance, &task),
                delay,
                last_answer: Mutex::new(None),
                lateness_ms: lateness.clone(),
            };
            let watcher = TaskWatcher::from_source(source)
                // An exact schedule, to measure lateness against.
                .policy(
                    PollPolicy::default()
                        .with_min_delay(delay)
                        .with_max_delay(delay)
                        .with_jitter(false)
                        .with_progress_guided(false),
                )
                .timeout(delay * 20);
            handles.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                (fails, watcher.await)
            }));
        }
        // Halfway between the last start and the first possible end, every watcher sleeps.
        tokio::time::sleep_until(started + delay.mul_f64(1.5)).await;
        let rss_sleeping = common::rss_bytes();
        let mut all_resolved = true;
        for handle in handles {
            let (fails, outcome) = handle.await.unwrap();
            let right = match &outcome {
                Ok(task) => !fails && task.status == Some(TaskStatus::Success),
                Err(WaitError::Failed { .. }) => fails,
                Err(_) => false,
            };
            all_resolved &= right;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut late: Vec<f64> = lateness
            .lock()
            .unwrap()
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        polls.store(
            late.len() as u64 + n as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Run {
            watchers: n,
            all_resolved,
            rss_per_watcher_bytes: rss_sleeping.saturating_sub(rss_before) as f64 / n as f64,
            peak_rss_bytes: common::peak_rss_bytes(),
            polls_per_s: (late.len() + n) as f64 / seconds,
            p50_lateness_ms: common::quantile(&mut late, 0.50),
            p99_lateness_ms: common::quantile(&mut late, 0.99),
            max_lateness_ms: common::quantile(&mut late, 1.0),
            seconds,
        }
    })
}

fn main() {
    if common::server::run_if_server() {
        return;
    }
    let sizes: &[usize] = if common::quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let server = ServerProcess::spawn();
    let client = common::client_builder(server.uri.as_str()).build().unwrap();
    let mut results = Vec::new();
    println!(
        "scale: concurrent watchers, one runtime, one client ({})",
        common::machine()
    );
    println!(
        "{:>9} {:>9} {:>15} {:>10} {:>9} {:>12} {:>12} {:>12} {:>8}",
        "watchers",
        "resolved",
        "rss/watcher B",
        "peak MiB",
        "polls/s",
        "p50 late ms",
        "p99 late ms",
        "max late ms",
        "seconds"
    );
    for (i, &n) in sizes.iter().enumerate() {
        let r = run(&server, &client, n, 7 + i as u64);
        println!(
            "{:>9} {:>9} {:>15.0} {:>10.1} {:>9.0} {:>12.2} {:>12.2} {:>12.2} {:>8.1}",
            r.watchers,
            r.all_resolved,
            r.rss_per_watcher_bytes,
            r.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            r.polls_per_s,
            r.p50_lateness_ms,
            r.p99_lateness_ms,
            r.max_lateness_ms,
            r.seconds
        );
        results.push(json!({
            "watchers": r.watchers,
            "all_resolved": r.all_resolved,
            "rss_per_watcher_bytes": r.rss_per_watcher_bytes,
            "peak_rss_bytes": r.peak_rss_bytes,
            "polls_per_s": r.polls_per_s,
            "p50_lateness_ms": r.p50_lateness_ms,
            "p99_lateness_ms": r.p99_lateness_ms,
            "max_lateness_ms": r.max_lateness_ms,
            "seconds": r.seconds,
        }));
    }
    common::write_json(
        "scale",
        &json!({ "machine": common::machine(), "results": results }),
    );
}
