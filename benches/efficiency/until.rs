//! The wait for progress >= 50 on a workload, with progress guidance on and off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use iotda_task_watcher::client::ApiError;
use iotda_task_watcher::watch::{Condition, PollPolicy};
use iotda_task_watcher::TaskWatcher;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common;
use crate::workloads::{start_wall, Model, Workload};
use crate::DEADLINE;

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
        .timeout(DEADLINE)
        .policy(
            PollPolicy::default()
                .with_progress_guided(guided)
                .with_jitter_seed(seed),
        )
        .wall_clock(start_wall())
        .await;
    (
        polls.load(Ordering::Relaxed),
        origin.elapsed().as_secs_f64(),
    )
}

/// The wait for 50 % over a workload, guided and plain: its table and figures.
pub(super) fn half(workload: &Workload) -> Value {
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
