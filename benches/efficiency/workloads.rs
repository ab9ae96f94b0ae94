//! The two seeded workloads of simulated tasks, and what each task answers a poll at any time.

use std::time::{Duration, SystemTime};

use iotda_task_watcher::model::OperateWindow;
use iotda_task_watcher::{InstanceTask, TaskStatus, TaskType};

use crate::{SEED_A, SEED_B, TASKS};

/// One task as the server sees it, in seconds from the start of the wait.
#[derive(Clone, Debug)]
pub(super) struct Model {
    /// Index into the workload's class names.
    pub(super) class: usize,
    /// PENDING until then (queueing, or the maintenance window).
    starts: f64,
    /// Terminal from then on.
    pub(super) ends: f64,
    fails: bool,
    /// (time, progress) steps while running.
    steps: Vec<(f64, i64)>,
    window: Option<OperateWindow>,
}

pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) seed: u64,
    pub(super) classes: &'static [&'static str],
    pub(super) tasks: Vec<Model>,
}

/// The wall-clock time at which every wait starts; windows are given in UTC `HH:mm` from it.
pub(super) fn start_wall() -> SystemTime {
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
pub(super) fn workload_a() -> Workload {
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
pub(super) fn workload_b() -> Workload {
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
    pub(super) fn reaches(&self, n: i64) -> Option<f64> {
        let running = self
            .steps
            .iter()
            .find(|(at, value)| *value >= n && *at < self.ends)
            .map(|(at, _)| at.max(self.starts));
        running.or((!self.fails).then_some(self.ends))
    }

    pub(super) fn snapshot(&self, t: f64) -> InstanceTask {
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
