//! Shared by the benches: measurements of this process, JSON output, and a loopback server that
//! runs in a child process so that its CPU time and memory are not counted as ours.
#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;

use iotda_task_watcher::{Credentials, IotdaClientBuilder, ProjectId};

pub const AK: &str = "BENCHAK";
pub const SK: &str = "bench-secret";
pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";
pub const INSTANCE: &str = "a1b2c3d4-0000-1111-2222-333344445555";

/// A client builder for the bench server at `uri`.
pub fn client_builder(uri: &str) -> IotdaClientBuilder {
    iotda_task_watcher::IotdaClient::builder()
        .endpoint(uri)
        .credentials(Credentials::aksk(AK, SK))
        .project_id(ProjectId::new(PROJECT).unwrap())
}
use std::time::Duration;

/// `BENCH_QUICK=1`: every bench finishes in under a minute.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// CPU time used so far by every thread of this process, in nanoseconds (from
/// `/proc/self/task/*/schedstat`, which counts in nanoseconds).
pub fn cpu_time_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory now, in bytes.
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// The most resident memory so far, in bytes.
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// The `q`-quantile (0..=1) of `values`, by nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

pub fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

/// Writes `value` to `target/bench/<name>.json` and says where.
pub fn write_json(name: &str, value: &serde_json::Value) {
    let path = bench_dir().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value).unwrap() + "\n")
        .expect("the JSON can be written");
    println!("wrote {}", path.display());
}

/// `target/bench`, created if need be.
pub fn bench_dir() -> PathBuf {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("target/bench can be created");
    dir
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A one-line description of the machine for the tables.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// Adds `count` tasks to `sim` that run for a span drawn from `secs` after their first answer
/// (with `progress` or without), one in ten then FAILED, the rest SUCCESS; returns each id,
/// span and whether it fails.
pub fn add_timed_tasks(
    sim: &iotda_task_watcher::simulator::Simulator,
    instance: &iotda_task_watcher::InstanceId,
    count: usize,
    secs: std::ops::Range<f64>,
    progress: bool,
    draw: u64,
) -> Vec<(iotda_task_watcher::TaskId, f64, bool)> {
    use iotda_task_watcher::simulator::TaskScript;
    use iotda_task_watcher::TaskType;
    let mut rng = fastrand::Rng::with_seed(draw);
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let id = format!("00000000-0000-0000-0000-{i:012}").parse().unwrap();
            let span = secs.start + (secs.end - secs.start) * rng.f64();
            (id, span, rng.u32(..10) == 0)
        })
        .collect();
    for (id, span, fails) in &tasks {
        let script = TaskScript::new(TaskType::Modify).running_for(Duration::from_secs_f64(*span));
        let script = if progress {
            script
        } else {
            script.without_progress()
        };
        let script = if *fails {
            script.fail("simulated failure")
        } else {
            script.succeed()
        };
        sim.add_task(instance, id, script);
    }
    tasks
}

/// How one wait on a task that ends `secs` after its first answer went.
pub struct Ended {
    pub kind: iotda_task_watcher::watch::OutcomeKind,
    /// Whether the outcome was the task's own (SUCCESS, or FAILED when it fails).
    pub right: bool,
    /// When the task ended on the server (`None` for a wait that never saw the task).
    pub task_ended: Option<std::time::Instant>,
    /// When the wait ended.
    pub at: std::time::Instant,
}

/// Runs `watcher` to its end for a task that ends `secs` after its first answer, FAILED when
/// `fails`.
pub async fn watch_ends<S>(
    watcher: iotda_task_watcher::TaskWatcher<S>,
    secs: f64,
    fails: bool,
) -> Ended
where
    S: iotda_task_watcher::watch::TaskSource + 'static,
{
    use iotda_task_watcher::watch::OutcomeKind;
    use iotda_task_watcher::{TaskEvent, TaskStatus, WaitError};
    let mut events = watcher.events();
    let (mut first_seen, mut outcome) = (None, None);
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        match event {
            TaskEvent::Observed { .. } => first_seen = Some(std::time::Instant::now()),
            TaskEvent::Done(done) => outcome = Some((done, std::time::Instant::now())),
            _ => {}
        }
    }
    let (done, at) = outcome.expect("a wait ends with Done");
    let right = match &done {
        Ok(task) => !fails && task.status == Some(TaskStatus::Success),
        Err(WaitError::Failed { .. }) => fails,
        Err(_) => false,
    };
    Ended {
        kind: OutcomeKind::of(&done),
        right,
        // The task's clock starts at its first answer.
        task_ended: first_seen.map(|seen| seen + Duration::from_secs_f64(secs)),
        at,
    }
}

/// [`watch_ends`]: whether the outcome was right, and the delay from the task's end to the
/// wait's (`None` for a wait that never saw the task).
pub async fn watch_timed<S>(
    watcher: iotda_task_watcher::TaskWatcher<S>,
    secs: f64,
    fails: bool,
) -> (bool, Option<f64>)
where
    S: iotda_task_watcher::watch::TaskSource + 'static,
{
    let ended = watch_ends(watcher, secs, fails).await;
    let delay = ended
        .task_ended
        .map(|e| ended.at.saturating_duration_since(e).as_secs_f64());
    (ended.right, delay)
}
