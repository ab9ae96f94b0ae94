//! One process, 400 waits with the default budget and policy, tasks ending 10 to 40 s after
//! their first poll (one in ten FAILED), against an account quota of 40 requests a second in
//! bursts of 40, four ways side by side on servers of their own:
//!
//! - `clean`: the quota alone;
//! - `10 %`, `20 %`: a gateway in front refusing that share of requests at random, whatever
//!   the rate (429 `APIGW.0308`, as the quota's refusals);
//! - `neighbour`: another client of the account spending 30 of the 40 a second.
//!
//! Each on two draws of the tasks, all eight at once. For each: how long until every wait
//! ended, requests, the share refused, detection delays (from the task ending on the server to
//! its wait resolving) and whether every outcome was right. The bench fails when an outcome is
//! wrong, when an end is seen later than the policy's 45 s promise, or when a noisy run takes
//! more than 1.25 times the clean run's time plus 5 s or sees its p95 delay more than 10 s over
//! the clean run's. The neighbour's run is held to none of the last two: the 10 requests a
//! second it leaves take at least 80 s for the two polls each of 400 waits need.
//!
//! `cargo bench --bench noise` writes `target/bench/noise.json` (about 80 s); `NOISE_ONLY=clean`
//! (or `10 %`, `20 %`, `neighbour`) runs one world; `NOISE_TRACE=1` prints each client's
//! `BudgetStats` every second on stderr.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use iotda_task_watcher::simulator::{Quota, Simulator};
use iotda_task_watcher::{InstanceId, TaskWatcher};
use serde_json::{json, Value};

const WAITS: usize = 400;
const QUOTA: f64 = 40.0;
/// The default policy's promise: an end is seen at most this long after it happened.
const PROMISE: f64 = 45.0;
const DRAWS: [u64; 2] = [20_261_207, 7_041_977];

/// What one run measured.
struct Run {
    world: &'static str,
    draw: u64,
    seconds: f64,
    requests: u64,
    refused: u64,
    delays: Vec<f64>,
    correct: usize,
}

async fn run(world: &'static str, quota: Quota, draw: u64) -> Run {
    let sim = Arc::new(Simulator::start().await);
    sim.set_quota(quota);
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap();
    let client = sim.client_builder().build().unwrap();
    let tasks = common::add_timed_tasks(&sim, &instance, WAITS, 10.0..40.0, true, draw);
    let start = Instant::now();
    if std::env::var("NOISE_TRACE").is_ok() {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = client.budget_stats();
                eprintln!("TRACE {world} {draw} {:5.1} rate {:?} accepted {:?} share {:.2} requests {} throttled {}", start.elapsed().as_secs_f64(), s.adaptive_rate.map(|r| r.round()), s.accepted_rate.map(|r| r.round()), s.throttled_share, s.requests, s.throttled);
            }
        });
    }
    let waits: Vec<_> = tasks
        .iter()
        .map(|(id, secs, fails)| {
            let watcher =
                TaskWatcher::new(&client, &instance, id).timeout(Duration::from_secs(600));
            let (secs, fails) = (*secs, *fails);
            tokio::spawn(common::watch_timed(watcher, secs, fails))
        })
        .collect();
    let (mut delays, mut correct) = (Vec::new(), 0);
    for wait in waits {
        let (ok, delay) = wait.await.unwrap();
        correct += usize::from(ok);
        delays.extend(delay);
    }
    Run {
        world,
        draw,
        seconds: start.elapsed().as_secs_f64(),
        requests: sim.requests(),
        refused: sim.throttled(),
        delays,
        correct,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let quota = Quota::per_second(QUOTA, QUOTA as u32);
    let worlds = [
        ("clean", quota),
        ("10 %", quota.refusing(0.1)),
        ("20 %", quota.refusing(0.2)),
        ("neighbour", quota.with_neighbour(30.0)),
    ];
    let only = std::env::var("NOISE_ONLY").ok();
    let mut runs: Vec<Run> = runtime.block_on(async {
        let all = DRAWS.iter().flat_map(|&draw| {
            worlds
                .into_iter()
                .filter(|(world, _)| only.as_deref().is_none_or(|o| o == *world))
                .map(move |(world, quota)| tokio::spawn(run(world, quota, draw)))
        });
        let mut runs = Vec::new();
        for run in all.collect::<Vec<_>>() {
            runs.push(run.await.unwrap());
        }
        runs
    });

    println!(
        "noise: {WAITS} waits, tasks 10-40 s, quota {QUOTA}/s burst {QUOTA}, default budget ({})",
        common::machine()
    );
    println!(
        "{:<11}{:>10}{:>8}{:>10}{:>9}{:>8}{:>8}{:>8}{:>10}",
        "world", "draw", "done s", "requests", "refused", "p50 s", "p95 s", "max s", "correct"
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut clean = std::collections::HashMap::new();
    for run in &mut runs {
        let p50 = common::quantile(&mut run.delays, 0.5);
        let p95 = common::quantile(&mut run.delays, 0.95);
        let max = run.delays.iter().copied().fold(0.0, f64::max);
        let share = run.refused as f64 / run.requests.max(1) as f64;
        println!(
            "{:<11}{:>10}{:>8.1}{:>10}{:>8.1}%{:>8.1}{:>8.1}{:>8.1}{:>6}/{WAITS}",
            run.world,
            run.draw,
            run.seconds,
            run.requests,
            100.0 * share,
            p50,
            p95,
            max,
            run.correct,
        );
        if run.world == "clean" {
            clean.insert(run.draw, (run.seconds, p95));
        }
        let (world, draw) = (run.world, run.draw);
        if run.correct != WAITS {
            failures.push(format!(
                "{world}, draw {draw}: {} of {WAITS} right",
                run.correct
            ));
        }
        if max > PROMISE {
            failures.push(format!("{world}, draw {draw}: an end seen {max:.1} s late"));
        }
        rows.push(json!({
            "world": world,
            "draw": draw,
            "seconds": run.seconds,
            "requests": run.requests,
            "refused": run.refused,
            "refused_share": share,
            "p50_delay_s": p50,
            "p95_delay_s": p95,
            "max_delay_s": max,
            "correct": run.correct,
            "waits": WAITS,
        }));
    }
    // The noisy runs only: see the module docs for the neighbour's.
    for row in rows
        .iter()
        .filter(|row| row["world"].as_str().unwrap().ends_with('%'))
    {
        let (world, draw) = (
            row["world"].as_str().unwrap(),
            row["draw"].as_u64().unwrap(),
        );
        let (seconds, p95) = (
            row["seconds"].as_f64().unwrap(),
            row["p95_delay_s"].as_f64().unwrap(),
        );
        let Some(&(clean_seconds, clean_p95)) = clean.get(&draw) else {
            continue;
        };
        if seconds > 1.25 * clean_seconds + 5.0 {
            failures.push(format!(
                "{world}, draw {draw}: {seconds:.1} s, clean {clean_seconds:.1} s"
            ));
        }
        if p95 > clean_p95 + 10.0 {
            failures.push(format!(
                "{world}, draw {draw}: p95 {p95:.1} s, clean {clean_p95:.1} s"
            ));
        }
    }
    common::write_json("noise", &json!({ "runs": Value::Array(rows) }));
    assert!(failures.is_empty(), "{failures:#?}");
}
