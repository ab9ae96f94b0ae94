//! Many `iotda-wait` processes, one account quota: real processes over real HTTP against the
//! simulator, which holds the account to 40 requests a second in bursts of 40 (429
//! `APIGW.0308` beyond), and a real `redis-server` for the shared budget.
//!
//! Each process waits for its own tasks (5 to 20 s long by default, one in ten FAILED, default
//! settings).
//! The runs:
//!
//! - 200 tasks with no quota, to learn how long they take unhindered and how many requests they
//!   need (the quota's need is those requests at 40 a second);
//! - 200 tasks under the quota, in 1 process, then in 4 processes of 50, each alone, shared
//!   and adaptive (told nothing but the URL), and shared with the rate given (`--max-rps 40`);
//! - 2, 4 and 8 processes of 50 tasks, the same three ways, and the 8 shared and adaptive
//!   again right after, on what Redis learned in the run before (a fleet started again);
//! - 4 processes of 50, shared and adaptive, Redis killed (SIGKILL) a third of the way into the
//!   run and started again at two thirds;
//! - 4 and 8 processes of 50 told the rate, with a Redis that never answers (nothing listens
//!   at its port): what they send a second from 1 to 10 s, and at most over any 5 s, are the
//!   figures to read.
//!
//! For each: the time until the last process exits, requests, the share throttled, the quota
//! used while waits were left, p95 detection delay (from a task's end on the server to its
//! process printing it), fairness (the most served process's accepted rate over the least
//! served one's), Redis calls per request (from Redis's own `INFO commandstats`), and whether
//! every outcome was right.
//!
//! `cargo bench --bench fleet --features cli,redis` (about 10 minutes) writes
//! `target/bench/fleet.json`. `FLEET_SEED` draws other task lengths, `FLEET_TASKS=15-40` draws
//! them from another span (5-20 s by default), and `FLEET_ONLY` runs only the runs whose names
//! contain one of its comma-separated parts. `FLEET_TIMELINE=1` prints each run's requests
//! accepted and throttled in each second, when the tasks' clocks started (a task's clock starts
//! at its first accepted poll), and where the time of the task seen last went.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotda_task_watcher::simulator::{
    Quota, RedisServer, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK,
};
use iotda_task_watcher::{InstanceId, TaskId, TaskType};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const QUOTA: f64 = 40.0;
const INSTANCE: &str = "a1b2c3d4-0000-1111-2222-333344445555";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Each process's own adaptive limiter.
    Alone,
    /// Shared through Redis, adaptive, told nothing but the URL.
    Shared,
    /// Shared through Redis, with the quota's rate given.
    SharedRate,
    /// As `SharedRate`, with a Redis that never answers (nothing listens at its port).
    SharedRateDown,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Alone => "alone",
            Mode::Shared => "shared",
            Mode::SharedRate => "shared+rate",
            Mode::SharedRateDown => "shared+rate redis-down-from-start",
        }
    }
}

struct Plan {
    name: String,
    processes: usize,
    per_process: usize,
    quota: bool,
    mode: Mode,
    kill_redis: bool,
    /// Redis keeps what the run before learned.
    warm: bool,
}

/// The simulator's counters at one moment.
#[derive(Clone, Default)]
struct Sample {
    at: f64,
    accepted: u64,
    throttled: u64,
    /// Accepted polls of each process's tasks.
    of_process: Vec<u64>,
}

#[derive(Default)]
struct Outcome {
    /// Lines saying a process fell back to its own limiter.
    fallbacks: usize,
    /// Requests throttled in the first second.
    throttled_early: u64,
    /// Requests throttled from 1 s to 10 s.
    throttled_late: u64,
    /// Requests accepted and throttled in each second of the run.
    timeline: Vec<(u64, u64)>,
    /// The most requests sent a second over any 5 s of the run.
    sent_peak: f64,
    /// Requests sent a second from 1 s to 10 s.
    sent_early: f64,
    wall: f64,
    requests: u64,
    throttled: u64,
    /// Accepted requests a second over the time waits were left, against the quota.
    quota_used: f64,
    delays: Vec<f64>,
    /// Seconds from the run's start to each task's first accepted poll, which starts its clock.
    starts: Vec<f64>,
    /// The task detected last: when its clock started, how long it ran, how late it was seen.
    last: Option<(f64, f64, f64)>,
    fairness: f64,
    redis_calls: u64,
    correct: usize,
    tasks: usize,
    /// Seconds from Redis's kill to each process's line saying it paces itself.
    fell_back: Vec<f64>,
    /// Seconds from Redis's restart to each process's line saying it rejoined.
    rejoined: Vec<f64>,
    hung: usize,
}

/// Each task's length in seconds, between `shortest` and `longest`, and whether it fails.
fn tasks(count: usize, seed: u64, (shortest, longest): (f64, f64)) -> Vec<(f64, bool)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let length = shortest + (longest - shortest) * rng.f64();
            (length, rng.u32(..10) == 0)
        })
        .collect()
}

fn task_id(i: usize) -> TaskId {
    format!("00000000-0000-0000-0000-{i:012}").parse().unwrap()
}

/// Redis's count of script calls since it started.
fn script_calls(redis: &RedisServer) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "info", "commandstats"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[allow(clippy::too_many_lines)]
async fn run(plan: &Plan, lengths: &[(f64, bool)], redis: &mut RedisServer) -> Outcome {
    let sim = Arc::new(Simulator::start().await);
    if plan.quota {
        sim.set_quota(Quota::per_second(QUOTA, 40));
    }
    if !plan.warm {
        redis.restart();
    }
    let calls_before = script_calls(redis);
    let instance: InstanceId = INSTANCE.parse().unwrap();
    let total = plan.processes * plan.per_process;
    for (i, &(secs, fails)) in lengths.iter().take(total).enumerate() {
        let script = TaskScript::new(TaskType::Modify).running_for(Duration::from_secs_f64(secs));
        let script = if fails {
            script.fail("simulated failure")
        } else {
            script.succeed()
        };
        sim.add_task(&instance, &task_id(i), script);
    }
    // When each task's clock started on the server, read while it runs.
    let since: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let watcher = {
        let (sim, since, instance) = (sim.clone(), since.clone(), instance.clone());
        tokio::spawn(async move {
            loop {
                for i in 0..total {
                    if let Some(at) = sim.running_since(&instance, &task_id(i)) {
                        since.lock().unwrap().entry(i).or_insert(at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let done: Arc<Mutex<HashMap<usize, (Instant, String)>>> = Arc::default();
    let notes: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let start = Instant::now();
    let mut children = Vec::new();
    for p in 0..plan.processes {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iotda-wait"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HUAWEICLOUD_SDK_AK", DEFAULT_AK)
            .env("HUAWEICLOUD_SDK_SK", DEFAULT_SK)
            .env("HUAWEICLOUD_SDK_PROJECT_ID", DEFAULT_PROJECT_ID)
            .env("IOTDA_METADATA_ENDPOINT", "http://127.0.0.1:1")
            .args(["--instance-id", INSTANCE, "--endpoint", &sim.uri()])
            .args(["--output", "json", "--timeout", "10m"]);
        match plan.mode {
            Mode::Alone => {}
            Mode::SharedRateDown => {
                cmd.args(["--shared-budget", "redis://127.0.0.1:1"]);
            }
            Mode::Shared | Mode::SharedRate => {
                cmd.args(["--shared-budget", &redis.url()]);
            }
        }
        if matches!(plan.mode, Mode::SharedRate | Mode::SharedRateDown) {
            cmd.args(["--max-rps", &QUOTA.to_string()]);
        }
        let first = p * plan.per_process;
        cmd.args((first..first + plan.per_process).map(|i| task_id(i).to_string()));
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("iotda-wait starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let done = done.clone();
        tokio::spawn(async move {
            let mut lines = stdout.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "done" {
                    let id = event["task_id"].as_str().unwrap_or_default();
                    let i = id.rsplit('-').next().unwrap().parse::<usize>().unwrap();
                    let outcome = event["outcome"].as_str().unwrap_or_default().to_owned();
                    done.lock().unwrap().insert(i, (Instant::now(), outcome));
                }
            }
        });
        let notes = notes.clone();
        tokio::spawn(async move {
            let mut lines = stderr.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                notes.lock().unwrap().push((Instant::now(), line));
            }
        });
        children.push(child);
    }
    // Accepted requests, in all and of each process's tasks, sampled every 100 ms.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let (sim, samples, instance) = (sim.clone(), samples.clone(), instance.clone());
        let (processes, per_process) = (plan.processes, plan.per_process);
        tokio::spawn(async move {
            loop {
                let sample = Sample {
                    at: start.elapsed().as_secs_f64(),
                    accepted: sim.requests() - sim.throttled(),
                    throttled: sim.throttled(),
                    of_process: (0..processes)
                        .map(|p| {
                            (p * per_process..(p + 1) * per_process)
                                .map(|i| sim.polls(&instance, &task_id(i)))
                                .sum()
                        })
                        .collect(),
                };
                samples.lock().unwrap().push(sample);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (mut killed_at, mut restarted_at) = (None, None);
    let mut exited = vec![None; plan.processes];
    let deadline = start + Duration::from_secs(300);
    while exited.iter().any(Option::is_none) && Instant::now() < deadline {
        if plan.kill_redis {
            let t = start.elapsed().as_secs_f64();
            if killed_at.is_none() && t >= 8.0 {
                redis.kill();
                killed_at = Some(Instant::now());
            }
            if restarted_at.is_none() && t >= 16.0 {
                redis.restart();
                restarted_at = Some(Instant::now());
            }
        }
        for (p, child) in children.iter_mut().enumerate() {
            if exited[p].is_none() && child.try_wait().unwrap().is_some() {
                exited[p] = Some(start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hung = exited.iter().filter(|e| e.is_none()).count();
    sampler.abort();
    watcher.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let wall = exited.iter().flatten().copied().fold(0.0, f64::max);

    let since = since.lock().unwrap().clone();
    let done = done.lock().unwrap().clone();
    let mut outcome = Outcome {
        wall,
        requests: sim.requests(),
        throttled: sim.throttled(),
        redis_calls: if plan.mode == Mode::Alone {
            0
        } else {
            script_calls(redis) - calls_before
        },
        tasks: total,
        hung,
        ..Outcome::default()
    };
    for (i, &(secs, fails)) in lengths.iter().take(total).enumerate() {
        let Some((at, kind)) = done.get(&i) else {
            continue;
        };
        outcome.correct += usize::from(if fails {
            kind == "failed"
        } else {
            kind == "success"
        });
        if let Some(began) = since.get(&i) {
            let ended = *began + Duration::from_secs_f64(secs);
            let delay = at.saturating_duration_since(ended).as_secs_f64();
            let began = began.saturating_duration_since(start).as_secs_f64();
            outcome.delays.push(delay);
            outcome.starts.push(began);
            if outcome
                .last
                .is_none_or(|(b, s, d)| b + s + d < began + secs + delay)
            {
                outcome.last = Some((began, secs, delay));
            }
        }
    }
    // The quota used and fairness, from 1 s to 10 s: every wait polls at about 0, 1, 3 and 7 s,
    // so every process of 50 waits or more has more polls due than the quota allows, and the
    // quota is the only limit then; the first second's burst is left out.
    let (from, to) = {
        let samples = samples.lock().unwrap();
        let at = |t: f64| {
            samples
                .iter()
                .find(|s| s.at >= t)
                .or(samples.last())
                .cloned()
        };
        (at(1.0).unwrap_or_default(), at(10.0).unwrap_or_default())
    };
    outcome.timeline = {
        let samples = samples.lock().unwrap();
        let mut seconds: Vec<(u64, u64)> = Vec::new();
        let mut last = Sample::default();
        for sample in samples.iter() {
            let second = sample.at as usize;
            if seconds.len() <= second {
                seconds.resize(second + 1, (0, 0));
            }
            seconds[second].0 += sample.accepted - last.accepted;
            seconds[second].1 += sample.throttled - last.throttled;
            last = sample.clone();
        }
        seconds
    };
    outcome.sent_peak = outcome
        .timeline
        .windows(5)
        .map(|w| w.iter().map(|(a, t)| a + t).sum::<u64>() as f64 / 5.0)
        .fold(0.0, f64::max);
    outcome.sent_early = ((to.accepted + to.throttled) - (from.accepted + from.throttled)) as f64
        / (to.at - from.at);
    outcome.throttled_early = from.throttled;
    outcome.quota_used = (to.accepted - from.accepted) as f64 / (to.at - from.at) / QUOTA;
    outcome.throttled_late = to.throttled.saturating_sub(from.throttled);
    let served: Vec<u64> = (0..plan.processes)
        .map(|p| {
            to.of_process.get(p).copied().unwrap_or(0)
                - from.of_process.get(p).copied().unwrap_or(0)
        })
        .collect();
    outcome.fairness = *served.iter().max().unwrap_or(&0) as f64
        / (*served.iter().min().unwrap_or(&0)).max(1) as f64;
    for (at, line) in notes.lock().unwrap().iter() {
        if line.contains("does not answer") {
            outcome.fallbacks += 1;
        }
        if let Some(k) = killed_at.filter(|k| at >= k) {
            if line.contains("does not answer") {
                outcome.fell_back.push(at.duration_since(k).as_secs_f64());
            }
        }
        if let Some(r) = restarted_at.filter(|r| at >= r) {
            if line.contains("answers again") {
                outcome.rejoined.push(at.duration_since(r).as_secs_f64());
            }
        }
    }
    outcome
}

fn p95(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64) * 0.95).ceil() as usize - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let seed: u64 = std::env::var("FLEET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_202);
    let only = std::env::var("FLEET_ONLY").unwrap_or_default();
    let span = std::env::var("FLEET_TASKS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((5.0, 20.0));
    let lengths = tasks(400, seed, span);
    let plan = |processes: usize, per_process: usize, quota: bool, mode: Mode, kill: bool| Plan {
        name: format!(
            "{}x{} {}{}{}",
            processes,
            per_process,
            if quota { "quota " } else { "free " },
            mode.name(),
            if kill { " redis-killed" } else { "" }
        ),
        processes,
        per_process,
        quota,
        mode,
        kill_redis: kill,
        warm: false,
    };
    let mut plans = vec![
        plan(1, 200, false, Mode::Alone, false),
        plan(1, 200, true, Mode::Alone, false),
    ];
    for mode in [Mode::Alone, Mode::Shared, Mode::SharedRate] {
        plans.push(plan(4, 50, true, mode, false));
    }
    for processes in [2, 8] {
        for mode in [Mode::Alone, Mode::Shared, Mode::SharedRate] {
            plans.push(plan(processes, 50, true, mode, false));
            if processes == 8 && mode == Mode::Shared {
                // The same fleet again, on what the run before it learned.
                let mut again = plan(processes, 50, true, mode, false);
                again.name.push_str(" again");
                again.warm = true;
                plans.push(again);
            }
        }
    }
    plans.push(plan(4, 50, true, Mode::Shared, true));
    for processes in [4, 8] {
        plans.push(plan(processes, 50, true, Mode::SharedRateDown, false));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "fleet: quota {QUOTA}/s burst 40, tasks {}-{} s (1 in 10 FAILED), seed {seed}, {} cores",
        span.0,
        span.1,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<34} {:>6} {:>8} {:>9} {:>5} {:>5} {:>6} {:>7} {:>8} {:>9} {:>8}  notes",
        "run",
        "wall s",
        "requests",
        "throttled",
        "0-1s",
        "1-10s",
        "quota",
        "p95 s",
        "fairness",
        "redis/req",
        "correct",
    );
    let mut results = Vec::new();
    let wanted = |name: &str| only.split(',').any(|part| name.contains(part));
    for plan in plans.iter().filter(|p| wanted(&p.name)) {
        let outcome = runtime.block_on(run(plan, &lengths, &mut redis));
        let throttled = outcome.throttled as f64 / outcome.requests.max(1) as f64;
        let per_request = outcome.redis_calls as f64 / outcome.requests.max(1) as f64;
        let mut notes = String::new();
        if plan.kill_redis {
            notes = format!(
                "fell back after {:?} s, rejoined after {:?} s",
                outcome
                    .fell_back
                    .iter()
                    .map(|s| (s * 100.0).round() / 100.0)
                    .collect::<Vec<_>>(),
                outcome
                    .rejoined
                    .iter()
                    .map(|s| (s * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
        }
        if !plan.kill_redis && outcome.fallbacks > 0 {
            notes.push_str(&format!("{} fallbacks", outcome.fallbacks));
        }
        notes.push_str(&format!(
            " sent {:.1}/s from 1 to 10 s, {:.1}/s at most over 5 s",
            outcome.sent_early, outcome.sent_peak
        ));
        if outcome.hung > 0 {
            notes.push_str(&format!(" {} processes did not exit", outcome.hung));
        }
        println!(
            "{:<34} {:>6.1} {:>8} {:>8.2}% {:>5} {:>5} {:>5.0}% {:>7.1} {:>8.2} {:>9.3} {:>4}/{:<3}  {}",
            plan.name,
            outcome.wall,
            outcome.requests,
            100.0 * throttled,
            outcome.throttled_early,
            outcome.throttled_late,
            100.0 * outcome.quota_used,
            p95(&outcome.delays),
            outcome.fairness,
            per_request,
            outcome.correct,
            outcome.tasks,
            notes
        );
        let latest = outcome.starts.iter().copied().fold(0.0, f64::max);
        if std::env::var_os("FLEET_TIMELINE").is_some() {
            let seconds: Vec<String> = outcome
                .timeline
                .iter()
                .map(|(accepted, throttled)| format!("{accepted}/{throttled}"))
                .collect();
            println!("  accepted/throttled each second: {}", seconds.join(" "));
            let mean = outcome.starts.iter().sum::<f64>() / outcome.starts.len().max(1) as f64;
            if let Some((began, secs, delay)) = outcome.last {
                println!(
                    "  clocks started after {mean:.1} s on average, {latest:.1} s at the latest; \
                     the last task seen started at {began:.1} s, ran {secs:.1} s, seen {delay:.1} s late"
                );
            }
        }
        results.push(json!({
            "run": plan.name,
            "wall_s": outcome.wall,
            "requests": outcome.requests,
            "throttled": outcome.throttled,
            "quota_used": outcome.quota_used,
            "sent_peak_per_s": outcome.sent_peak,
            "sent_1_to_10_s_per_s": outcome.sent_early,
            "throttled_0_to_1_s": outcome.throttled_early,
            "throttled_1_to_10_s": outcome.throttled_late,
            "p95_delay_s": p95(&outcome.delays),
            "latest_start_s": latest,
            "fairness": outcome.fairness,
            "redis_calls": outcome.redis_calls,
            "correct": outcome.correct,
            "tasks": outcome.tasks,
            "fell_back_s": outcome.fell_back,
            "rejoined_s": outcome.rejoined,
            "hung": outcome.hung,
            "timeline": outcome.timeline,
        }));
    }
    common::write_json(
        "fleet",
        &json!({ "seed": seed, "tasks_s": [span.0, span.1], "runs": results }),
    );
}
