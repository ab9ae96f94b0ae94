//! Many waits on one client against an account quota: 500 concurrent waits with `max_delay`
//! 5 s (a demand near 100 polls a second at first), tasks of 5 to 60 s, one in ten FAILED, and
//! the simulator holding the account to 50 requests a second in bursts of 50 (answering 429
//! `APIGW.0308` beyond). Run three ways, one after the other on fresh servers:
//!
//! - `none`: no budget, every wait paces itself alone (backing off on its own throttles);
//! - `fixed`: a fixed cap at the quota, 50 a second in bursts of 50;
//! - `adaptive`: the default, not told the quota.
//!
//! For each: requests, the share throttled after the first 5 s, the polls the service accepted
//! per second while more were due than the quota allows, detection delays (from the task
//! ending on the server to its wait resolving) and whether every outcome was right.
//!
//! `cargo bench --bench quota` writes `target/bench/quota.json`; `BENCH_QUICK=1` halves the
//! waits and the quota (the same demand per allowed request; about 5 minutes in all either way).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotda_task_watcher::client::budget::RequestBudget;
use iotda_task_watcher::simulator::{Quota, Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskId, TaskType, TaskWatcher};
use serde_json::{json, Value};

const SEED: u64 = 20_261_128;
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Throttles in the first seconds are how any client, told nothing, finds the quota.
const WARM_UP: Duration = Duration::from_secs(5);

struct Setup {
    waits: usize,
    quota: f64,
    /// Each task's duration (s) and whether it fails.
    tasks: Vec<(f64, bool)>,
}

fn setup() -> Setup {
    let (waits, quota) = if common::quick() {
        (250, 25.0)
    } else {
        (500, 50.0)
    };
    let mut rng = fastrand::Rng::with_seed(SEED);
    let tasks = (0..waits)
        .map(|_| (5.0 + 55.0 * rng.f64(), rng.u32(..10) == 0))
        .collect();
    Setup {
        waits,
        quota,
        tasks,
    }
}

/// What one run measured.
struct Run {
    name: &'static str,
    requests: u64,
    throttled: u64,
    throttled_after_warm_up: u64,
    requests_after_warm_up: u64,
    accepted_per_s: f64,
    delays: Vec<f64>,
    correct: usize,
}

/// The simulator's counters, sampled every 100 ms: (time, requests, throttled, waits left).
type Samples = Arc<Mutex<Vec<(f64, u64, u64, usize)>>>;

async fn run(name: &'static str, budget: RequestBudget, setup: &Setup) -> Run {
    let sim = Arc::new(Simulator::start().await);
    let burst = u32::try_from(setup.quota as u64).unwrap_or(u32::MAX);
    sim.set_quota(Quota::per_second(setup.quota, burst));
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap();
    let client = sim.client_builder().budget(budget).build().unwrap();
    let ids: Vec<TaskId> = (0..setup.waits)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}").parse().unwrap())
        .collect();
    for (id, &(secs, fails)) in ids.iter().zip(&setup.tasks) {
        let script = TaskScript::new(TaskType::Modify).running_for(Duration::from_secs_f64(secs));
        let script = if fails {
            script.fail("simulated failure")
        } else {
            script.succeed()
        };
        sim.add_task(&instance, id, script);
    }

    let start = Instant::now();
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(setup.waits));
    let samples: Samples = Arc::default();
    let sampler = {
        let (sim, left, samples) = (sim.clone(), left.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                samples.lock().unwrap().push((
                    start.elapsed().as_secs_f64(),
                    sim.requests(),
                    sim.throttled(),
                    left.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
        })
    };
    let waits: Vec<_> = ids
        .iter()
        .zip(&setup.tasks)
        .map(|(id, &(secs, fails))| {
            let watcher = TaskWatcher::new(&client, &instance, id)
                .policy(PollPolicy::default().with_max_delay(MAX_DELAY))
                .timeout(Duration::from_secs(600));
            let left = left.clone();
            tokio::spawn(async move {
                let timed = common::watch_timed(watcher, secs, fails).await;
                left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                timed
            })
        })
        .collect();
    let mut delays = Vec::new();
    let mut correct = 0;
    for wait in waits {
        let (ok, delay) = wait.await.unwrap();
        correct += usize::from(ok);
        delays.extend(delay);
    }
    sampler.abort();
    let samples = samples.lock().unwrap().clone();

    // After the warm-up, and while more polls are due than the quota allows: the waits left
    // poll at least every `MAX_DELAY`, so while more than quota x MAX_DELAY are left.
    let at = |t: f64| {
        samples
            .iter()
            .find(|s| s.0 >= t)
            .or(samples.last())
            .copied()
            .unwrap_or_default()
    };
    let warm = at(WARM_UP.as_secs_f64());
    let busy_until = samples
        .iter()
        .find(|s| (s.3 as f64) < setup.quota * MAX_DELAY.as_secs_f64())
        .copied()
        .unwrap_or(warm);
    let busy = (busy_until.0 - warm.0).max(f64::EPSILON);
    let accepted = (busy_until.1 - busy_until.2).saturating_sub(warm.1 - warm.2);
    Run {
        name,
        requests: sim.requests(),
        throttled: sim.throttled(),
        throttled_after_warm_up: sim.throttled() - warm.2,
        requests_after_warm_up: sim.requests() - warm.1,
        accepted_per_s: accepted as f64 / busy,
        delays,
        correct,
    }
}

fn main() {
    let setup = setup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let modes = [
        ("none", RequestBudget::unlimited()),
        (
            "fixed",
            RequestBudget::unlimited().with_max_rps(setup.quota, setup.quota as u32),
        ),
        ("adaptive", RequestBudget::default()),
    ];
    let runs: Vec<Run> = modes
        .into_iter()
        .map(|(name, budget)| runtime.block_on(run(name, budget, &setup)))
        .collect();

    println!(
        "quota: {} waits, max_delay 5 s, tasks 5-60 s, quota {}/s burst {} ({})",
        setup.waits,
        setup.quota,
        setup.quota,
        common::machine()
    );
    println!(
        "{:<10}{:>10}{:>11}{:>16}{:>13}{:>9}{:>9}{:>9}{:>9}",
        "mode",
        "requests",
        "throttled",
        "throttled >5s",
        "accepted/s",
        "p50 s",
        "p95 s",
        "max s",
        "correct"
    );
    let mut rows = Vec::new();
    for run in runs {
        let mut delays = run.delays.clone();
        let (p50, p95) = (
            common::quantile(&mut delays, 0.5),
            common::quantile(&mut delays, 0.95),
        );
        let max = delays.iter().copied().fold(0.0, f64::max);
        let share = run.throttled_after_warm_up as f64 / run.requests_after_warm_up.max(1) as f64;
        println!(
            "{:<10}{:>10}{:>11}{:>15.2}%{:>13.1}{:>9.1}{:>9.1}{:>9.1}{:>5}/{}",
            run.name,
            run.requests,
            run.throttled,
            100.0 * share,
            run.accepted_per_s,
            p50,
            p95,
            max,
            run.correct,
            setup.waits
        );
        rows.push(json!({
            "name": run.name,
            "requests": run.requests,
            "throttled": run.throttled,
            "throttled_share": share,
            "accepted_per_s": run.accepted_per_s,
            "quota_per_s": setup.quota,
            "p50_delay_s": p50,
            "p95_delay_s": p95,
            "max_delay_s": max,
            "correct": run.correct,
            "waits": setup.waits,
        }));
    }
    common::write_json("quota", &json!({ "modes": Value::Array(rows) }));
}
