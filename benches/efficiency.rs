//! Request efficiency against the field: a virtual-time simulation (paused tokio clock, no
//! network) of a fixed, seeded workload of 1,000 tasks, waited for by each policy. For each
//! policy: mean requests per task, and the detection delay (from the task becoming terminal on
//! the server to the wait resolving) at p50 and p95.
//!
//! The workload (fixed; no policy is tuned to it):
//! - durations log-uniform from 10 s to 2 h;
//! - 70 % report progress rising roughly linearly, with noise and uneven steps;
//! - 20 % report no progress until the end;
//! - 10 % are MODIFY tasks that stay PENDING until their maintenance window opens (within the
//!   next 3 h), then run;
//! - one task in ten ends FAILED.
//!
//! Every policy gets the same 8-hour deadline, long enough for every task to finish.
//!
//! It also works out what matching terraform's p95 costs on the silent tasks alone, whatever
//! the schedule (`silent_floor`).
//!
//! `cargo bench --bench efficiency` (`BENCH_QUICK=1` is the same run: it takes seconds).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use iotda_task_watcher::{
    ApiError, InstanceTask, OperateWindow, TaskStatus, TaskType, TaskWatcher,
};
use serde_json::json;
use tokio::time::Instant;

const TASKS: usize = 1_000;
const SEED: u64 = 20_261_127;
const DEADLINE: Duration = Duration::from_secs(8 * 3600);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Progress,
    Silent,
    Window,
}

/// One task as the server sees it, in seconds from the start of the wait.
#[derive(Clone, Debug)]
struct Model {
    class: Class,
    /// PENDING until then (queueing, or the maintenance window).
    starts: f64,
    /// Terminal from then on.
    ends: f64,
    fails: bool,
    /// (time, progress) steps while running.
    steps: Vec<(f64, i64)>,
    window: Option<OperateWindow>,
}

/// The wall-clock time at which every wait starts; windows are given in UTC `HH:mm` from it.
fn start_wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_020) // 2026-11-18T10:27:00Z
}

fn workload() -> Vec<Model> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let wall0 = jiff::Timestamp::try_from(start_wall()).unwrap();
    (0..TASKS)
        .map(|_| {
            let pick = rng.f64();
            let class = if pick < 0.7 {
                Class::Progress
            } else if pick < 0.9 {
                Class::Silent
            } else {
                Class::Window
            };
            let runs = (10f64.ln() + rng.f64() * (7200f64.ln() - 10f64.ln())).exp();
            let fails = rng.u32(..10) == 0;
            let (starts, window) = if class == Class::Window {
                // The window opens on a whole minute within the next 3 hours.
                let opens = wall0 + jiff::SignedDuration::from_secs(60 * rng.i64(1..=180));
                let opens = opens.as_second() - opens.as_second() % 60;
                let opens = jiff::Timestamp::from_second(opens).unwrap();
                let closes = opens + jiff::SignedDuration::from_hours(4);
                let hhmm = |t: jiff::Timestamp| t.strftime("%H:%M").to_string();
                let mut window = OperateWindow::default();
                window.start_time = Some(hhmm(opens));
                window.end_time = Some(hhmm(closes));
                ((opens.as_second() - wall0.as_second()) as f64, Some(window))
            } else {
                (runs * 0.03, None)
            };
            let mut steps = Vec::new();
            if class != Class::Silent {
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
        .collect()
}

impl Model {
    fn snapshot(&self, t: f64) -> InstanceTask {
        let (status, progress) = if t >= self.ends {
            (
                if self.fails {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Success
                },
                100,
            )
        } else if t < self.starts {
            (TaskStatus::Pending, 0)
        } else {
            let p = self
                .steps
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .map_or(0, |s| s.1);
            (TaskStatus::Running, p)
        };
        let mut task = InstanceTask::default();
        task.task_type = Some(if self.class == Class::Window {
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

#[derive(Clone, Copy, Debug)]
enum Policy {
    Ours,
    /// Ours with the backoff capped at 10 s instead of 30 s: a setting, shown for its trade-off.
    OursMaxDelay10s,
    TerraformFixed10s,
    Smithy,
    GoogleLro,
    Fixed5s,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursMaxDelay10s => "ours_max_delay_10s",
            Self::TerraformFixed10s => "terraform_fixed_10s",
            Self::Smithy => "smithy",
            Self::GoogleLro => "google_lro",
            Self::Fixed5s => "fixed_5s",
        }
    }
}

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
    match policy {
        Policy::Ours | Policy::OursMaxDelay10s => {
            let source = move || {
                let task = poll();
                async move { Ok::<_, ApiError>(task) }
            };
            let mut watcher = TaskWatcher::from_source(source)
                .timeout(DEADLINE)
                .jitter_seed(seed)
                .wall_clock(start_wall());
            if let Policy::OursMaxDelay10s = policy {
                watcher = watcher.max_delay(Duration::from_secs(10));
            }
            let _ = watcher.await;
        }
        Policy::TerraformFixed10s => {
            // StateChangeConf{Delay: 10s, PollInterval: 10s}: wait 10 s, then poll every 10 s.
            sleep(10.0).await;
            while !poll().is_terminal() && now() < DEADLINE.as_secs_f64() {
                sleep(10.0).await;
            }
        }
        Policy::Smithy => {
            // Smithy waiters: min 2 s, max 120 s; attempt n waits a random time in
            // [min, min * 2^(n-1)] (max past the ceiling); the last wait is clamped so the
            // final poll lands on the deadline.
            let (min, max, limit) = (2.0f64, 120.0f64, DEADLINE.as_secs_f64());
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
        Policy::GoogleLro => {
            // gax exponential backoff: 1 s initial, x2, 60 s maximum, no jitter.
            let mut delay = 1.0f64;
            while !poll().is_terminal() && now() < DEADLINE.as_secs_f64() {
                sleep(delay).await;
                delay = (delay * 2.0).min(60.0);
            }
        }
        Policy::Fixed5s => {
            while !poll().is_terminal() && now() < DEADLINE.as_secs_f64() {
                sleep(5.0).await;
            }
        }
    }
    (polls.load(Ordering::Relaxed), now())
}

/// A floor on the requests per silent task of any schedule that lets at most a share `late` of
/// the silent tasks be seen more than `within` seconds after they end, when each silent task
/// lasts from `lo` to `hi` seconds, log-uniform. The schedule may know that distribution, but
/// not the task's own duration: it polls every silent task at the same times.
///
/// A poll sees in time the tasks that ended in the `within` seconds before it, and costs one
/// request for every task still running. A poll at `u` that sees the ends in `[u - within, u]`
/// costs `S(u)` (`S`: the share still running), which is at least `S(t + within)` for every `t`
/// in that stretch; so seeing the ends around `t` in time costs at least `S(t + within) /
/// within` per second, and gains `f(t)` per second (`f`: the density of ends). The cheapest
/// cover of a given size takes the times where `f(t) / S(t + within)` is highest; a bisection
/// on that threshold finds the one of the wanted size. Each task also pays for its first poll
/// and for the one that sees it end.
fn silent_floor(lo: f64, hi: f64, within: f64, late: f64) -> f64 {
    let span = (hi / lo).ln();
    let density = |t: f64| 1.0 / (t * span);
    let running = |t: f64| (1.0 - (t / lo).ln() / span).clamp(0.0, 1.0);
    let step = 0.1;
    let cover = |threshold: f64| {
        let (mut cost, mut seen) = (0.0, 0.0);
        let mut t = lo;
        while t < hi {
            let cost_rate = running(t + within) / within;
            if density(t) >= threshold * cost_rate {
                cost += cost_rate * step;
                seen += density(t) * step;
            }
            t += step;
        }
        (cost, seen)
    };
    let (mut low, mut high) = (0.0, 1e9);
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if cover(mid).1 >= 1.0 - late {
            low = mid;
        } else {
            high = mid;
        }
    }
    cover(low).0 + 2.0
}

struct Figures {
    /// Per class (progress, silent, window): tasks, requests per task, p50 and p95 delay.
    classes: [(usize, f64, f64, f64); 3],
    requests_per_task: f64,
    p50_delay_s: f64,
    p95_delay_s: f64,
    resolved: usize,
}

fn simulate(policy: Policy, tasks: &[Model]) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let handles: Vec<_> = tasks
            .iter()
            .enumerate()
            .map(|(i, m)| tokio::spawn(wait(policy, Arc::new(m.clone()), SEED ^ i as u64)))
            .collect();
        let mut requests = 0;
        let mut delays = Vec::new();
        let mut by_class: [Vec<(u64, f64)>; 3] = Default::default();
        for (handle, model) in handles.into_iter().zip(tasks) {
            let (polls, resolved_at) = handle.await.unwrap();
            requests += polls;
            if resolved_at >= model.ends {
                delays.push(resolved_at - model.ends);
                by_class[model.class as usize].push((polls, resolved_at - model.ends));
            }
        }
        let resolved = delays.len();
        let classes = by_class.map(|rows| {
            let requests = rows.iter().map(|r| r.0).sum::<u64>() as f64 / rows.len().max(1) as f64;
            let mut delays: Vec<f64> = rows.iter().map(|r| r.1).collect();
            (
                rows.len(),
                requests,
                common::quantile(&mut delays, 0.5),
                common::quantile(&mut delays, 0.95),
            )
        });
        Figures {
            classes,
            requests_per_task: requests as f64 / tasks.len() as f64,
            p50_delay_s: common::quantile(&mut delays, 0.50),
            p95_delay_s: common::quantile(&mut delays, 0.95),
            resolved,
        }
    })
}

fn main() {
    let tasks = workload();
    let policies = [
        Policy::Ours,
        Policy::OursMaxDelay10s,
        Policy::TerraformFixed10s,
        Policy::Smithy,
        Policy::GoogleLro,
        Policy::Fixed5s,
    ];
    println!("efficiency: {TASKS} simulated tasks (seed {SEED}), virtual time");
    println!(
        "{:<22} {:>14} {:>12} {:>12} {:>10}",
        "policy", "requests/task", "p50 delay s", "p95 delay s", "resolved"
    );
    let mut rows = Vec::new();
    let mut breakdown = Vec::new();
    for policy in policies {
        let f = simulate(policy, &tasks);
        breakdown.push((policy.name(), f.classes));
        println!(
            "{:<22} {:>14.1} {:>12.1} {:>12.1} {:>10}",
            policy.name(),
            f.requests_per_task,
            f.p50_delay_s,
            f.p95_delay_s,
            f.resolved
        );
        rows.push(json!({
            "name": policy.name(),
            "requests_per_task": f.requests_per_task,
            "p50_delay_s": f.p50_delay_s,
            "p95_delay_s": f.p95_delay_s,
            "resolved": f.resolved,
        }));
    }
    println!("\nby class: requests per task / p95 detection delay (s)");
    println!(
        "{:<22} {:>16} {:>16} {:>16}",
        "policy", "progress (70%)", "silent (20%)", "window (10%)"
    );
    for (name, classes) in breakdown {
        let cell = |c: (usize, f64, f64, f64)| format!("{:.1} / {:.1}", c.1, c.3);
        println!(
            "{:<22} {:>16} {:>16} {:>16}",
            name,
            cell(classes[0]),
            cell(classes[1]),
            cell(classes[2])
        );
    }

    // What terraform's p95 costs on the silent tasks alone, however the rest is waited for.
    let within = rows
        .iter()
        .find(|r| r["name"] == "terraform_fixed_10s")
        .and_then(|r| r["p95_delay_s"].as_f64())
        .unwrap();
    // At most 5 % of all tasks may be late; all of them silent (a fifth of the workload).
    // Counted from the start of the wait a silent task ends 1.03 times its run after it
    // (PENDING for 3 % first); counted from the moment it starts running, its run. Reading the
    // run from the queue time would be fitting to this workload: neither schedule does.
    let late_share = 0.05 / 0.2;
    let silent = silent_floor(10.0 * 1.03, 7200.0 * 1.03, within, late_share)
        .min(silent_floor(10.0, 7200.0, within, late_share));
    // Every other task needs a poll that sees it unfinished and one that sees it end.
    let total = 0.2 * silent + 0.8 * 2.0;
    println!(
        "\np95 <= {within:.1} s: at least {silent:.1} requests per silent task \
         ({:.1} per task over the workload), {total:.1} per task with 2 for every other task",
        0.2 * silent
    );
    common::write_json(
        "efficiency",
        &json!({
            "tasks": TASKS,
            "seed": SEED,
            "policies": rows,
            "p95_floor": {
                "within_s": within,
                "requests_per_silent_task": silent,
                "requests_per_task": total,
            },
        }),
    );
}
