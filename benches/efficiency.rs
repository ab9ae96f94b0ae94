//! Request efficiency against the field: a virtual-time simulation (paused tokio clock, no
//! network) of two fixed, seeded workloads of 1,000 tasks each, waited for by each policy. For
//! each policy: mean requests per task, and the detection delay (from the task becoming
//! terminal on the server to the wait resolving) at p50, p95, p99 and its maximum, for the
//! whole workload and per class of task.
//!
//! Workload A (seed 20261127):
//! - durations log-uniform from 10 s to 2 h, PENDING for 3 % of the run first;
//! - 70 % report progress rising roughly linearly, with noise and uneven steps;
//! - 20 % report no progress until the end;
//! - 10 % are MODIFY tasks that stay PENDING until their maintenance window opens (within the
//!   next 3 h), then run;
//! - one task in ten ends FAILED, at the end of its run.
//!
//! Workload B (seed 20261128), shapes that break naive progress estimates; queue times are
//! drawn apart from the durations (mostly a few seconds, sometimes up to two minutes):
//! - short (25 %): 0.2 s to 90 s; a fifth end before the second poll, half of the rest report
//!   progress in 2 or 3 coarse jumps;
//! - front-loaded (15 %): 2 to 20 min, 80 % in the first third, then slow; noisy, and one in
//!   five reports a value that goes backwards once;
//! - back-loaded (10 %): 1 to 30 min, progress rising as the square of the time;
//! - stalls (15 %): 20 min to 2 h, 30 % at once, then stuck at 30 % for 30 to 50 % of the run,
//!   a climb to 99 %, and stuck at 99 % for the last 5 to 15 %;
//! - silent (20 %): 10 s to 1 h, no progress until the end;
//! - window (15 %): a closed maintenance window that opens within 3 h; half wait for it (a
//!   resize with `delay=true`), half run after a short queue anyway (immediate resizes);
//! - 12 % of all tasks fail at a random point of their run, their progress frozen there.
//!
//! Every policy gets the same 8-hour deadline, long enough for every task to finish.
//!
//! A second wait on each workload is for "progress >= 50" (`Condition::progress_at_least(50)`):
//! ours with progress guidance, which aims at the time of 50 %, beside ours with the guidance
//! off (the plain backoff), both at the defaults. The delay is from the moment the server's
//! progress first reached 50 (or its SUCCESS, if it never showed 50 while running) to the wait
//! resolving; tasks that fail before showing 50 count their requests, not a delay. Ours is
//! run at `max_delay` 5, 10, 15, 20, 30 (the default), 60 and 120 s, nothing else changed; the
//! anchors are terraform (10 s delay, then a fixed interval), smithy waiters (2 s minimum),
//! google-cloud-rust's LRO polling (1 s, x2) and a plain fixed 5 s.
//!
//! `cargo bench --bench efficiency` prints the tables and writes `target/bench/efficiency.json`
//! and one SVG per workload (`target/bench/efficiency_<workload>.svg`): requests per task
//! against p95 detection delay. `EFFICIENCY_SEED_SHIFT=N` adds N to both seeds: the same shapes,
//! other tasks, to check that no figure hangs on one draw. `EFFICIENCY_ONLY=until` runs only
//! the wait for 50 % (and writes `target/bench/efficiency_until.json`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iotda_task_watcher::client::ApiError;
use iotda_task_watcher::model::OperateWindow;
use iotda_task_watcher::watch::Condition;
use iotda_task_watcher::{InstanceTask, TaskStatus, TaskType, TaskWatcher};
use plotters::prelude::*;
use serde_json::{json, Value};
use tokio::time::Instant;

const TASKS: usize = 1_000;
const SEED_A: u64 = 20_261_127;
const SEED_B: u64 = 20_261_128;
const DEADLINE: Duration = Duration::from_secs(8 * 3600);
/// What "as good as" allows when ours is compared with an anchor: 5 % on p50 and p95.
const SLACK: f64 = 1.05;

/// One task as the server sees it, in seconds from the start of the wait.
#[derive(Clone, Debug)]
struct Model {
    /// Index into the workload's class names.
    class: usize,
    /// PENDING until then (queueing, or the maintenance window).
    starts: f64,
    /// Terminal from then on.
    ends: f64,
    fails: bool,
    /// (time, progress) steps while running.
    steps: Vec<(f64, i64)>,
    window: Option<OperateWindow>,
}

struct Workload {
    name: &'static str,
    seed: u64,
    classes: &'static [&'static str],
    tasks: Vec<Model>,
}

/// The wall-clock time at which every wait starts; windows are given in UTC `HH:mm` from it.
fn start_wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_020) // 2026-11-18T10:27:00Z
}

fn log_uniform(rng: &mut fastrand::Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.f64() * (hi.ln() - lo.ln())).exp()
}

/// A daily window that opens on a whole minute `minutes` after the start and lasts 4 hours,
/// and the time from the start to its opening, in seconds.
fn window_opening_in(minutes: i64) -> (OperateWindow, f64) {
    let wall0 = jiff::Timestamp::try_from(start_wall()).unwrap();
    let opens = wall0 + jiff::SignedDuration::from_secs(60 * minutes);
    let opens = jiff::Timestamp::from_second(opens.as_second() - opens.as_second() % 60).unwrap();
    let closes = opens + jiff::SignedDuration::from_hours(4);
    let hhmm = |t: jiff::Timestamp| t.strftime("%H:%M").to_string();
    let mut window = OperateWindow::default();
    window.start_time = Some(hhmm(opens));
    window.end_time = Some(hhmm(closes));
    (window, (opens.as_second() - wall0.as_second()) as f64)
}

/// What `EFFICIENCY_SEED_SHIFT` adds to the seeds (0 when unset).
fn seed_shift() -> u64 {
    std::env::var("EFFICIENCY_SEED_SHIFT").map_or(0, |v| {
        v.parse()
            .expect("EFFICIENCY_SEED_SHIFT is a non-negative integer")
    })
}

/// Workload A, exactly as it has been measured since the first efficiency figures.
fn workload_a() -> Workload {
    const PROGRESS: usize = 0;
    const SILENT: usize = 1;
    const WINDOW: usize = 2;
    let seed = SEED_A + seed_shift();
    let mut rng = fastrand::Rng::with_seed(seed);
    let tasks = (0..TASKS)
        .map(|_| {
            let pick = rng.f64();
            let class = if pick < 0.7 {
                PROGRESS
            } else if pick < 0.9 {
                SILENT
            } else {
                WINDOW
            };
            let runs = log_uniform(&mut rng, 10.0, 7200.0);
            let fails = rng.u32(..10) == 0;
            let (starts, window) = if class == WINDOW {
                let (window, opens) = window_opening_in(rng.i64(1..=180));
                (opens, Some(window))
            } else {
                (runs * 0.03, None)
            };
            let mut steps = Vec::new();
            if class != SILENT {
                // Uneven steps: 4 to 40 reports at random times, each near the linear value.
                let count = rng.usize(4..=40);
                let mut times: Vec<f64> = (0..count).map(|_| rng.f64() * runs).collect();
                times.sort_by(f64::total_cmp);
                let mut last = 0;
                for t in times {
                    let noisy = 100.0 * t / runs + (rng.f64() - 0.5) * 16.0;
                    let value = (noisy.round() as i64).clamp(last, 99);
                    steps.push((starts + t, value));
                    last = value;
                }
            }
            Model {
                class,
                starts,
                ends: starts + runs,
                fails,
                steps,
                window,
            }
        })
        .collect();
    Workload {
        name: "A",
        seed,
        classes: &["progress", "silent", "window"],
        tasks,
    }
}

/// Progress reported `count` times at random points of a run of `runs` seconds starting at
/// `starts`, following `shape` (the share of the run done, to percent), with up to `noise`
/// points either way; never above 99 and never down, but where `drop` makes one value go
/// backwards.
fn reports(
    rng: &mut fastrand::Rng,
    starts: f64,
    runs: f64,
    count: usize,
    noise: f64,
    drop: bool,
    shape: impl Fn(f64) -> f64,
) -> Vec<(f64, i64)> {
    let mut at: Vec<f64> = (0..count).map(|_| rng.f64()).collect();
    at.sort_by(f64::total_cmp);
    let dropped = drop.then(|| rng.usize(..count.max(1)));
    let mut last = 0;
    let mut steps = Vec::new();
    for (i, u) in at.into_iter().enumerate() {
        let value = shape(u) + (rng.f64() - 0.5) * 2.0 * noise;
        let mut value = (value.round() as i64).clamp(last, 99);
        if dropped == Some(i) {
            value = (value - rng.i64(5..=15)).max(0);
        }
        steps.push((starts + u * runs, value));
        last = value;
    }
    steps
}

/// Workload B: short, front-loaded, back-loaded, stalled, silent and window tasks, with
/// failures anywhere in the run.
fn workload_b() -> Workload {
    const SHORT: usize = 0;
    const FRONT: usize = 1;
    const BACK: usize = 2;
    const STALL: usize = 3;
    const SILENT: usize = 4;
    const WINDOW: usize = 5;
    let seed = SEED_B + seed_shift();
    let mut rng = fastrand::Rng::with_seed(seed);
    let tasks = (0..TASKS)
        .map(|_| {
            let pick = rng.f64();
            let class = match pick {
                p if p < 0.25 => SHORT,
                p if p < 0.40 => FRONT,
                p if p < 0.50 => BACK,
                p if p < 0.65 => STALL,
                p if p < 0.85 => SILENT,
                _ => WINDOW,
            };
            // Queue times drawn apart from the durations.
            let mut starts = if rng.f64() < 0.8 {
                rng.f64() * 5.0
            } else {
                rng.f64() * 120.0
            };
            let mut window = None;
            let (runs, steps) = match class {
                SHORT => {
                    if rng.f64() < 0.2 {
                        // Done before the second poll.
                        starts = 0.0;
                        (0.2 + rng.f64() * 0.7, Vec::new())
                    } else {
                        let runs = log_uniform(&mut rng, 3.0, 90.0);
                        let steps = if rng.bool() {
                            let jumps = rng.usize(2..=3);
                            (1..jumps)
                                .map(|k| {
                                    let share = k as f64 / jumps as f64;
                                    (starts + share * runs, (share * 100.0) as i64)
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        (runs, steps)
                    }
                }
                FRONT => {
                    let runs = log_uniform(&mut rng, 120.0, 1200.0);
                    let count = rng.usize(6..=30);
                    let drop = rng.u32(..5) == 0;
                    let steps = reports(&mut rng, starts, runs, count, 5.0, drop, |u| {
                        if u < 1.0 / 3.0 {
                            240.0 * u
                        } else {
                            80.0 + 19.0 * (u - 1.0 / 3.0) * 1.5
                        }
                    });
                    (runs, steps)
                }
                BACK => {
                    let runs = log_uniform(&mut rng, 60.0, 1800.0);
                    let count = rng.usize(5..=30);
                    let steps =
                        reports(&mut rng, starts, runs, count, 3.0, false, |u| 100.0 * u * u);
                    (runs, steps)
                }
                STALL => {
                    let runs = log_uniform(&mut rng, 1200.0, 7200.0);
                    let stuck = 0.3 + rng.f64() * 0.2;
                    let tail = 0.05 + rng.f64() * 0.1;
                    let climb = (0.05 + stuck, 1.0 - tail);
                    let count = rng.usize(10..=40);
                    let steps = reports(&mut rng, starts, runs, count, 2.0, false, |u| {
                        if u < climb.0 {
                            30.0
                        } else if u < climb.1 {
                            30.0 + 69.0 * (u - climb.0) / (climb.1 - climb.0)
                        } else {
                            99.0
                        }
                    });
                    // 30 % shows at once.
                    let mut all = vec![(starts + 0.02 * runs, 30)];
                    all.extend(steps.into_iter().filter(|s| s.0 > starts + 0.02 * runs));
                    (runs, all)
                }
                SILENT => (log_uniform(&mut rng, 10.0, 3600.0), Vec::new()),
                _ => {
                    let (w, opens) = window_opening_in(rng.i64(1..=180));
                    window = Some(w);
                    if rng.bool() {
                        // Waits for its window.
                        starts = opens;
                    } else {
                        // Runs after a short queue anyway.
                        starts = 2.0 + rng.f64() * 18.0;
                    }
                    let runs = log_uniform(&mut rng, 30.0, 1800.0);
                    let count = rng.usize(4..=20);
                    let steps = reports(&mut rng, starts, runs, count, 4.0, false, |u| 100.0 * u);
                    (runs, steps)
                }
            };
            // Failures at any point of the run, the progress frozen where it stood.
            let fails = rng.f64() < 0.12;
            let runs = if fails {
                runs * rng.f64().max(0.01)
            } else {
                runs
            };
            let ends = starts + runs;
            let steps = steps.into_iter().filter(|s| s.0 < ends).collect();
            Model {
                class,
                starts,
                ends,
                fails,
                steps,
                window,
            }
        })
        .collect();
    Workload {
        name: "B",
        seed,
        classes: &["short", "front", "back", "stall", "silent", "window"],
        tasks,
    }
}

impl Model {
    /// When the server first showed progress `n` or more while running, or its SUCCESS; `None`
    /// for a task that fails first.
    fn reaches(&self, n: i64) -> Option<f64> {
        let running = self
            .steps
            .iter()
            .find(|(at, value)| *value >= n && *at < self.ends)
            .map(|(at, _)| at.max(self.starts));
        running.or((!self.fails).then_some(self.ends))
    }

    fn snapshot(&self, t: f64) -> InstanceTask {
        let progress = |t: f64| {
            self.steps
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .map_or(0, |s| s.1)
        };
        let (status, progress) = if t >= self.ends {
            if self.fails {
                (TaskStatus::Failed, progress(t))
            } else {
                (TaskStatus::Success, 100)
            }
        } else if t < self.starts {
            (TaskStatus::Pending, 0)
        } else {
            (TaskStatus::Running, progress(t))
        };
        let mut task = InstanceTask::default();
        task.task_type = Some(if self.window.is_some() {
            TaskType::Modify
        } else {
            TaskType::UpdateAllowLists
        });
        task.status = Some(status);
        task.progress = Some(progress);
        task.operate_window = self.window.clone();
        task
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    /// Ours with the defaults, but for `max_delay` (seconds) when set.
    Ours(Option<u64>),
    /// `StateChangeConf{Delay: 10s, PollInterval: N}`, as Huawei's provider writes it.
    Terraform(u64),
    /// Smithy waiters with a 2 s minimum and this maximum.
    Smithy(u64),
    /// gax exponential backoff: 1 s initial, x2, this maximum, no jitter.
    GoogleLro(u64),
    /// A poll every N seconds from the start.
    Fixed(u64),
}

impl Policy {
    fn name(self) -> String {
        match self {
            Self::Ours(None) => "ours".into(),
            Self::Ours(Some(s)) => format!("ours_max_delay_{s}s"),
            Self::Terraform(s) => format!("terraform_fixed_{s}s"),
            Self::Smithy(s) => format!("smithy_max_{s}s"),
            Self::GoogleLro(s) => format!("google_lro_max_{s}s"),
            Self::Fixed(s) => format!("fixed_{s}s"),
        }
    }

    /// The `max_delay` of an ours policy, in seconds.
    fn ours_max_delay(self) -> Option<u64> {
        match self {
            Self::Ours(max) => Some(max.unwrap_or(30)),
            _ => None,
        }
    }
}

/// The sweep of ours, in order of `max_delay`.
const OURS: [Policy; 7] = [
    Policy::Ours(Some(5)),
    Policy::Ours(Some(10)),
    Policy::Ours(Some(15)),
    Policy::Ours(Some(20)),
    Policy::Ours(None),
    Policy::Ours(Some(60)),
    Policy::Ours(Some(120)),
];

const ANCHORS: [Policy; 12] = [
    Policy::Terraform(5),
    Policy::Terraform(10),
    Policy::Terraform(20),
    Policy::Terraform(30),
    Policy::Terraform(60),
    Policy::Smithy(30),
    Policy::Smithy(60),
    Policy::Smithy(120),
    Policy::GoogleLro(10),
    Policy::GoogleLro(30),
    Policy::GoogleLro(60),
    Policy::Fixed(5),
];

/// Waits for `model` under `policy`; returns the polls sent and when the wait resolved (s).
async fn wait(policy: Policy, model: Arc<Model>, seed: u64) -> (u64, f64) {
    let origin = Instant::now();
    let now = move || origin.elapsed().as_secs_f64();
    let polls = Arc::new(AtomicU64::new(0));
    let poll = {
        let (model, polls) = (model.clone(), polls.clone());
        move || {
            polls.fetch_add(1, Ordering::Relaxed);
            model.snapshot(now())
        }
    };
    let sleep = |s: f64| tokio::time::sleep(Duration::from_secs_f64(s.max(0.0)));
    let limit = DEADLINE.as_secs_f64();
    match policy {
        Policy::Ours(max_delay) => {
            let source = move || {
                let task = poll();
                async move { Ok::<_, ApiError>(task) }
            };
            let mut watcher = TaskWatcher::from_source(source)
                .timeout(DEADLINE)
                .jitter_seed(seed)
                .wall_clock(start_wall());
            if let Some(max) = max_delay {
                watcher = watcher.max_delay(Duration::from_secs(max));
            }
            let _ = watcher.await;
        }
        Policy::Terraform(interval) => {
            sleep(10.0).await;
            while !poll().is_terminal() && now() < limit {
                sleep(interval as f64).await;
            }
        }
        Policy::Smithy(max) => {
            // Attempt n waits a random time in [min, min * 2^(n-1)] (max past the ceiling);
            // the last wait is clamped so the final poll lands on the deadline.
            let (min, max) = (2.0f64, max as f64);
            let ceiling = ((max / min).ln() / 2f64.ln()).floor() as u32 + 1;
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut attempt = 0;
            while !poll().is_terminal() {
                attempt += 1;
                let mut delay = if attempt > ceiling {
                    max
                } else {
                    let hi = (min * 2f64.powi(attempt as i32 - 1)).min(max);
                    min + rng.f64() * (hi - min)
                };
                let remaining = limit - now();
                if remaining <= 0.0 {
                    break;
                }
                if remaining - delay <= min {
                    delay = remaining - min;
                }
                sleep(delay).await;
            }
        }
        Policy::GoogleLro(max) => {
            let mut delay = 1.0f64;
            while !poll().is_terminal() && now() < limit {
                sleep(delay).await;
                delay = (delay * 2.0).min(max as f64);
            }
        }
        Policy::Fixed(interval) => {
            while !poll().is_terminal() && now() < limit {
                sleep(interval as f64).await;
            }
        }
    }
    (polls.load(Ordering::Relaxed), now())
}

/// Waits for `model` to show 50 %, with progress guidance on or off; returns the polls sent
/// and when the wait resolved (s).
async fn wait_for_half(guided: bool, model: Arc<Model>, seed: u64) -> (u64, f64) {
    let origin = Instant::now();
    let polls = Arc::new(AtomicU64::new(0));
    let source = {
        let polls = polls.clone();
        move || {
            polls.fetch_add(1, Ordering::Relaxed);
            let task = model.snapshot(origin.elapsed().as_secs_f64());
            async move { Ok::<_, ApiError>(task) }
        }
    };
    let _ = TaskWatcher::from_source(source)
        .until(Condition::progress_at_least(50))
        .progress_guided(guided)
        .timeout(DEADLINE)
        .jitter_seed(seed)
        .wall_clock(start_wall())
        .await;
    (
        polls.load(Ordering::Relaxed),
        origin.elapsed().as_secs_f64(),
    )
}

/// The wait for 50 % over a workload, guided and plain: its table and figures.
fn half(workload: &Workload) -> Value {
    println!(
        "
workload {}: waiting for progress >= 50",
        workload.name
    );
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "policy", "req/task", "p50 s", "p95 s", "max s", "resolved"
    );
    let mut rows = Vec::new();
    for guided in [true, false] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let waits: Vec<(u64, f64)> = runtime.block_on(async {
            let handles: Vec<_> = workload
                .tasks
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    tokio::spawn(wait_for_half(
                        guided,
                        Arc::new(m.clone()),
                        workload.seed ^ i as u64,
                    ))
                })
                .collect();
            let mut out = Vec::new();
            for handle in handles {
                out.push(handle.await.unwrap());
            }
            out
        });
        let mut delays = Vec::new();
        let mut requests = 0;
        for ((polls, resolved_at), model) in waits.iter().zip(&workload.tasks) {
            requests += polls;
            if let Some(reached) = model.reaches(50) {
                delays.push(resolved_at - reached);
            }
        }
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        assert!(
            min >= -1e-6,
            "a wait resolved before the server showed 50 %: {min}"
        );
        let name = if guided {
            "ours_progress_guided"
        } else {
            "ours_plain_backoff"
        };
        let stats = (
            requests as f64 / waits.len() as f64,
            common::quantile(&mut delays, 0.50),
            common::quantile(&mut delays, 0.95),
            delays.iter().copied().fold(0.0, f64::max),
        );
        println!(
            "{name:<22} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
            stats.0,
            stats.1,
            stats.2,
            stats.3,
            delays.len()
        );
        rows.push(json!({
            "name": name,
            "requests_per_task": stats.0,
            "p50_delay_s": stats.1,
            "p95_delay_s": stats.2,
            "max_delay_s": stats.3,
            "resolved": delays.len(),
        }));
    }
    Value::Array(rows)
}

/// Requests per task and detection delays (s) of a set of waits.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    tasks: usize,
    requests: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(rows: &[(u64, f64)]) -> Self {
        let mut delays: Vec<f64> = rows.iter().map(|r| r.1).collect();
        Self {
            tasks: rows.len(),
            requests: rows.iter().map(|r| r.0).sum::<u64>() as f64 / rows.len().max(1) as f64,
            p50: common::quantile(&mut delays, 0.50),
            p95: common::quantile(&mut delays, 0.95),
            p99: common::quantile(&mut delays, 0.99),
            max: delays.iter().copied().fold(0.0, f64::max),
        }
    }
}

struct Figures {
    all: Stats,
    classes: Vec<Stats>,
    resolved: usize,
}

fn simulate(policy: Policy, workload: &Workload) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let handles: Vec<_> = workload
            .tasks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let seed = workload.seed ^ i as u64;
                tokio::spawn(wait(policy, Arc::new(m.clone()), seed))
            })
            .collect();
        let mut all = Vec::new();
        let mut by_class = vec![Vec::new(); workload.classes.len()];
        for (handle, model) in handles.into_iter().zip(&workload.tasks) {
            let (polls, resolved_at) = handle.await.unwrap();
            // A wait that gave up before the end counts its requests, not a delay.
            let delay = resolved_at - model.ends;
            if delay >= 0.0 {
                all.push((polls, delay));
                by_class[model.class].push((polls, delay));
            }
        }
        Figures {
            all: Stats::of(&all),
            classes: by_class.iter().map(|rows| Stats::of(rows)).collect(),
            resolved: all.len(),
        }
    })
}

/// The cheapest point of ours' sweep that beats `anchor`: fewer requests, with p50 and p95
/// each within [`SLACK`] times the anchor's.
fn cheapest_beating<'a>(
    anchor: &Stats,
    ours: &'a [(Policy, Figures)],
) -> Option<&'a (Policy, Figures)> {
    ours.iter()
        .filter(|(_, f)| {
            f.all.requests < anchor.requests
                && f.all.p50 <= anchor.p50 * SLACK
                && f.all.p95 <= anchor.p95 * SLACK
        })
        .min_by(|a, b| a.1.all.requests.total_cmp(&b.1.all.requests))
}

fn run(workload: &Workload) -> Value {
    println!(
        "\nworkload {}: {TASKS} simulated tasks (seed {}), virtual time",
        workload.name, workload.seed
    );
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "policy", "req/task", "p50 s", "p95 s", "p99 s", "max s", "resolved"
    );
    let measure = |policies: &[Policy]| -> Vec<(Policy, Figures)> {
        policies
            .iter()
            .map(|&p| {
                let f = simulate(p, workload);
                println!(
                    "{:<22} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
                    p.name(),
                    f.all.requests,
                    f.all.p50,
                    f.all.p95,
                    f.all.p99,
                    f.all.max,
                    f.resolved
                );
                (p, f)
            })
            .collect()
    };
    let ours = measure(&OURS);
    let anchors = measure(&ANCHORS);

    println!("\nby class: requests per task / p95 / max detection delay (s)");
    print!("{:<22}", "policy");
    for (i, class) in workload.classes.iter().enumerate() {
        let tasks = ours[0].1.classes[i].tasks;
        print!(" {:>20}", format!("{class} ({tasks})"));
    }
    println!();
    for (policy, f) in ours.iter().chain(&anchors) {
        print!("{:<22}", policy.name());
        for c in &f.classes {
            print!(
                " {:>20}",
                format!("{:.1} / {:.1} / {:.0}", c.requests, c.p95, c.max)
            );
        }
        println!();
    }

    println!(
        "\nagainst each anchor: the cheapest ours with fewer requests, p50 and p95 within {SLACK}x"
    );
    let mut ratios = Vec::new();
    let mut beaten = Vec::new();
    for (anchor, f) in &anchors {
        match cheapest_beating(&f.all, &ours) {
            Some((by, g)) => {
                let ratio = g.all.requests / f.all.requests;
                ratios.push(ratio);
                println!(
                    "{:<22} by {:<20} requests {:>7.1} / {:>7.1} = {ratio:.2}",
                    anchor.name(),
                    by.name(),
                    g.all.requests,
                    f.all.requests
                );
                beaten.push(json!({"anchor": anchor.name(), "by": by.name(), "ratio": ratio}));
            }
            None => {
                println!("{:<22} not beaten", anchor.name());
                beaten.push(json!({"anchor": anchor.name(), "by": null, "ratio": null}));
            }
        }
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len().max(1) as f64).exp();
    println!(
        "beaten: {} of {}; geometric mean of the ratios: {geomean:.3}",
        ratios.len(),
        anchors.len()
    );

    plot(workload, &ours, &anchors);
    let row = |(policy, f): &(Policy, Figures)| {
        let stats = |s: &Stats| {
            json!({
                "requests_per_task": s.requests,
                "p50_delay_s": s.p50,
                "p95_delay_s": s.p95,
                "p99_delay_s": s.p99,
                "max_delay_s": s.max,
            })
        };
        let mut value = stats(&f.all);
        value["name"] = json!(policy.name());
        value["resolved"] = json!(f.resolved);
        value["classes"] = workload
            .classes
            .iter()
            .zip(&f.classes)
            .map(|(name, s)| {
                let mut v = stats(s);
                v["tasks"] = json!(s.tasks);
                (name.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        value
    };
    json!({
        "tasks": TASKS,
        "seed": workload.seed,
        "until_progress_50": half(workload),
        "policies": ours.iter().chain(&anchors).map(row).collect::<Vec<_>>(),
        "anchors_beaten": beaten,
        "geomean_ratio": geomean,
    })
}

/// Requests per task against p95 detection delay, both on log scales: the anchors as
/// labelled points, ours' sweep as a labelled line.
fn plot(workload: &Workload, ours: &[(Policy, Figures)], anchors: &[(Policy, Figures)]) {
    let path = common::bench_dir().join(format!("efficiency_{}.svg", workload.name));
    let points = ours
        .iter()
        .chain(anchors)
        .map(|(_, f)| (f.all.requests, f.all.p95));
    let (mut x_hi, mut y_hi) = (1.0f64, 1.0f64);
    let (mut x_lo, mut y_lo) = (f64::MAX, f64::MAX);
    for (x, y) in points {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    let root = SVGBackend::new(&path, (900, 620)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "workload {}: requests per task against p95 detection delay",
                workload.name
            ),
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_lo * 0.7..x_hi * 1.5).log_scale(),
            (y_lo * 0.7..y_hi * 1.5).log_scale(),
        )
        .unwrap();
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_labels(12)
        .y_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("requests per task (log)")
        .y_desc("p95 detection delay, s (log)")
        .draw()
        .unwrap();
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            ours.iter().map(|(_, f)| (f.all.requests, f.all.p95)),
            blue.stroke_width(2),
        ))
        .unwrap()
        .label("ours, max_delay 5 to 120 s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_series(ours.iter().map(|(p, f)| {
            let label = format!("{}s", p.ours_max_delay().unwrap_or(30));
            EmptyElement::at((f.all.requests, f.all.p95))
                + Circle::new((0, 0), 4, blue.filled())
                + Text::new(label, (6, -14), ("sans-serif", 13).into_font().color(&blue))
        }))
        .unwrap();
    chart
        .draw_series(anchors.iter().enumerate().map(|(i, (p, f))| {
            // Staggered, so that anchors close together keep readable labels.
            let dy = [-16, 2, 16][i % 3];
            EmptyElement::at((f.all.requests, f.all.p95))
                + TriangleMarker::new((0, 0), 5, red.filled())
                + Text::new(
                    p.name(),
                    (7, dy),
                    ("sans-serif", 12).into_font().color(&red),
                )
        }))
        .unwrap()
        .label("anchors")
        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 5, red.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .unwrap();
    root.present().unwrap();
    println!("wrote {}", path.display());
}

fn main() {
    // The wait for 50 % alone, on other draws too, without the whole sweep.
    if std::env::var("EFFICIENCY_ONLY").as_deref() == Ok("until") {
        let (a, b) = (half(&workload_a()), half(&workload_b()));
        common::write_json("efficiency_until", &json!({"A": a, "B": b}));
        return;
    }
    let a = run(&workload_a());
    let b = run(&workload_b());
    common::write_json(
        "efficiency",
        &json!({
            "tasks": TASKS,
            "seed": a["seed"],
            // Workload A at the top level, as in earlier runs.
            "policies": a["policies"],
            "workloads": {"A": a, "B": b},
        }),
    );
}
