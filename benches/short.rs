//! A quota far too short for the waits: 80 waits on one client with the default budget and
//! policy, an account quota of 2 requests a second in bursts of 2, an 85 s deadline, tasks
//! ending 20 to 50 s after their first poll with no progress reported (one in ten FAILED).
//! Two draws of the tasks, side by side on servers of their own.
//!
//! The fair interval is the waits over the rate the service accepted (80 / 2 = 40 s): polls
//! take their turns first come, first served, so each wait is polled about that often. The
//! bench fails on a wrong outcome: SUCCESS or FAILED other than the task's, or `TimedOut` for a
//! task that ended more than a fair interval and 5 s before its deadline. It fails too when
//! more than 10 % of the requests after the first 5 s were throttled, or when the client's
//! `BudgetStats` never said how often each task could be polled.
//!
//! `cargo bench --bench short` writes `target/bench/short.json` (about 90 s); `SHORT_TRACE=1`
//! prints each client's `BudgetStats` every second on stderr.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use iotda_task_watcher::simulator::{Quota, Simulator};
use iotda_task_watcher::watch::OutcomeKind;
use iotda_task_watcher::{InstanceId, TaskWatcher};
use serde_json::{json, Value};

const WAITS: usize = 80;
const QUOTA: f64 = 2.0;
const DEADLINE: Duration = Duration::from_secs(85);
/// Throttles in the first seconds are how a client, told nothing, finds the quota.
const WARM_UP: Duration = Duration::from_secs(5);
const DRAWS: [u64; 2] = [20_261_207, 5_318_008];

/// What one run measured.
struct Run {
    draw: u64,
    seconds: f64,
    requests: u64,
    throttled: u64,
    /// Requests and throttles after the warm-up.
    later: (u64, u64),
    /// The first `BudgetStats::poll_interval` seen, sampled each second, and when.
    said: Option<(f64, f64)>,
    fair_interval: f64,
    right: usize,
    timed_out: usize,
    /// `TimedOut` for a task that ended a fair interval and 5 s before the deadline or earlier.
    wrong_timeouts: usize,
    /// Other wrong outcomes.
    wrong: usize,
    /// From a task's end to its wait's, for the waits that saw it.
    delays: Vec<f64>,
}

async fn run(draw: u64) -> Run {
    let sim = Arc::new(Simulator::start().await);
    sim.set_quota(Quota::per_second(QUOTA, QUOTA as u32));
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap();
    let client = sim.client_builder().build().unwrap();
    let tasks = common::add_timed_tasks(&sim, &instance, WAITS, 20.0..50.0, false, draw);
    let start = Instant::now();
    // The first `poll_interval` the budget reports, and the counts at the warm-up's end.
    let sampled = Arc::new(std::sync::Mutex::new((None, None)));
    let sampler = {
        let (client, sim, sampled) = (client.clone(), sim.clone(), sampled.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let elapsed = start.elapsed();
                if std::env::var_os("SHORT_TRACE").is_some() {
                    let s = client.budget_stats();
                    eprintln!(
                        "TRACE {draw} {:5.1} rate {:?} accepted {:?} share {:.2} requests {} \
                         throttled {} queued {} tasks {}",
                        elapsed.as_secs_f64(),
                        s.adaptive_rate,
                        s.accepted_rate,
                        s.throttled_share,
                        s.requests,
                        s.throttled,
                        s.queued,
                        s.tasks
                    );
                }
                let mut sampled = sampled.lock().unwrap();
                if sampled.1.is_none() && elapsed >= WARM_UP {
                    sampled.1 = Some((sim.requests(), sim.throttled()));
                }
                if sampled.0.is_none() {
                    sampled.0 = client
                        .budget_stats()
                        .poll_interval
                        .map(|i| (elapsed.as_secs_f64(), i.as_secs_f64()));
                }
            }
        })
    };
    let waits: Vec<_> = tasks
        .iter()
        .map(|(id, secs, fails)| {
            let watcher = TaskWatcher::new(&client, &instance, id).timeout(DEADLINE);
            tokio::spawn(common::watch_ends(watcher, *secs, *fails))
        })
        .collect();
    let mut ends = Vec::new();
    for wait in waits {
        ends.push(wait.await.unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    let (requests, throttled) = (sim.requests(), sim.throttled());
    let accepted_rate = (requests - throttled) as f64 / seconds;
    let fair_interval = WAITS as f64 / accepted_rate;
    let deadline = start + DEADLINE;
    let (mut right, mut timed_out, mut wrong_timeouts, mut wrong) = (0, 0, 0, 0);
    let mut delays = Vec::new();
    for end in &ends {
        if end.right {
            right += 1;
            if let Some(ended) = end.task_ended {
                delays.push(end.at.saturating_duration_since(ended).as_secs_f64());
            }
        } else if end.kind == OutcomeKind::TimedOut {
            timed_out += 1;
            let allowed_from = deadline - Duration::from_secs_f64(fair_interval + 5.0);
            if end.task_ended.is_some_and(|ended| ended <= allowed_from) {
                wrong_timeouts += 1;
            }
        } else {
            wrong += 1;
        }
    }
    sampler.abort();
    let (said, warm) = *sampled.lock().unwrap();
    let (warm_requests, warm_throttled) = warm.unwrap_or_default();
    Run {
        draw,
        seconds,
        requests,
        throttled,
        later: (requests - warm_requests, throttled - warm_throttled),
        said,
        fair_interval,
        right,
        timed_out,
        wrong_timeouts,
        wrong,
        delays,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runs: Vec<Run> = runtime.block_on(async {
        let all: Vec<_> = DRAWS.iter().map(|&d| tokio::spawn(run(d))).collect();
        let mut runs = Vec::new();
        for run in all {
            runs.push(run.await.unwrap());
        }
        runs
    });

    println!(
        "short: {WAITS} waits, tasks 20-50 s without progress, quota {QUOTA}/s, deadline {} s, \
         default budget ({})",
        DEADLINE.as_secs(),
        common::machine()
    );
    println!(
        "{:>10}{:>8}{:>10}{:>10}{:>9}{:>9}{:>14}{:>7}{:>10}{:>7}{:>8}",
        "draw",
        "done s",
        "requests",
        "thr >5s",
        "fair s",
        "said s",
        "right",
        "p95 s",
        "timed out",
        "early",
        "wrong"
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for run in &mut runs {
        let p95 = common::quantile(&mut run.delays, 0.95);
        let later_share = run.later.1 as f64 / run.later.0.max(1) as f64;
        let said = run.said.map(|(_, interval)| interval);
        println!(
            "{:>10}{:>8.1}{:>10}{:>9.1}%{:>9.1}{:>9}{:>11}/{WAITS}{:>7.1}{:>10}{:>7}{:>8}",
            run.draw,
            run.seconds,
            run.requests,
            100.0 * later_share,
            run.fair_interval,
            said.map_or("never".into(), |s| format!("{s:.1}")),
            run.right,
            p95,
            run.timed_out,
            run.wrong_timeouts,
            run.wrong,
        );
        let draw = run.draw;
        if run.wrong_timeouts > 0 || run.wrong > 0 {
            failures.push(format!(
                "draw {draw}: {} timed out that ended in time, {} other wrong outcomes",
                run.wrong_timeouts, run.wrong
            ));
        }
        if later_share > 0.10 {
            failures.push(format!(
                "draw {draw}: {:.1} % throttled after the first {} s",
                100.0 * later_share,
                WARM_UP.as_secs()
            ));
        }
        if said.is_none() {
            failures.push(format!("draw {draw}: the budget never said it was short"));
        }
        rows.push(json!({
            "draw": draw,
            "seconds": run.seconds,
            "requests": run.requests,
            "throttled": run.throttled,
            "throttled_share_after_warm_up": later_share,
            "fair_interval_s": run.fair_interval,
            "poll_interval_said_s": said,
            "poll_interval_said_at_s": run.said.map(|(at, _)| at),
            "right": run.right,
            "timed_out": run.timed_out,
            "timed_out_early": run.wrong_timeouts,
            "wrong": run.wrong,
            "p95_delay_s": p95,
            "waits": WAITS,
        }));
    }
    common::write_json("short", &json!({ "runs": Value::Array(rows) }));
    assert!(failures.is_empty(), "{failures:#?}");
}
