//! The cost of keeping a wait's state on disk after every answer (`iotda-wait --state-dir`,
//! `WaitState::write_to`): a whole write (aside, synced, renamed, the folder synced) beside
//! the same bytes written without the syncs, and the serialization alone, in one run.
//!
//! `cargo bench --bench state` (`BENCH_QUICK=1` for fewer writes). The files go to
//! `target/bench/state/`, on the disk that holds the build.

mod common;

use std::time::{Duration, Instant, SystemTime};

use iotda_task_watcher::watch::{PollPolicy, WaitState};
use iotda_task_watcher::{InstanceTask, TaskWatcher};
use serde_json::json;

/// A wait's state as it stands after a few polls of a running task with progress.
fn a_state() -> WaitState {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let polls = std::sync::atomic::AtomicU32::new(0);
        let source = move || {
            let n = polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let task: InstanceTask = serde_json::from_value(json!({
                "task_id": "075f413d-a3bb-4243-974d-8eb9221c1234",
                "type": "MODIFY",
                "status": "RUNNING",
                "status_detail": "resizing the instance",
                "create_time": "2026-12-01T10:00:00Z",
                "start_time": "2026-12-01T10:00:05Z",
                "progress": 10 + n * 5,
                "target_config": {"flavor": {"max_connections": 10000, "max_tps": 1000}},
            }))
            .unwrap();
            async move { Ok(task) }
        };
        let mut saved = None;
        let mut events = TaskWatcher::from_source(source)
            .policy(PollPolicy::default().with_jitter(false))
            .timeout(Duration::from_secs(6 * 3600))
            .events();
        for _ in 0..6 {
            futures::StreamExt::next(&mut events).await;
            saved = events.checkpoint();
        }
        saved.expect("a state between events")
    })
}

/// Microseconds per call of `f`, over `n` calls: (median, p99).
fn time(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut us: Vec<f64> = (0..n)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    (common::median(&mut us), common::quantile(&mut us, 0.99))
}

fn main() {
    let n = if common::quick() { 200 } else { 2_000 };
    let state = a_state();
    let dir = common::bench_dir().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let whole = dir.join("whole.json");
    let plain = dir.join("plain.json");
    let bytes = serde_json::to_vec_pretty(&state).unwrap().len();

    let serialize = time(n, |_| {
        std::hint::black_box(serde_json::to_vec_pretty(&state).unwrap());
    });
    let unsynced = time(n, |_| {
        let json = serde_json::to_vec_pretty(&state).unwrap();
        let part = dir.join("plain.json.part");
        std::fs::write(&part, json).unwrap();
        std::fs::rename(&part, &plain).unwrap();
    });
    let cpu_before = common::cpu_time_ns();
    let synced = time(n, |_| state.write_to(&whole).unwrap());
    let cpu_per_write = (common::cpu_time_ns() - cpu_before) as f64 / n as f64 / 1e3;

    println!(
        "state write, {n} writes of {bytes} bytes, {}",
        common::machine()
    );
    println!("| write | median (us) | p99 (us) |");
    println!("|---|---|---|");
    println!(
        "| serialize only | {:.1} | {:.1} |",
        serialize.0, serialize.1
    );
    println!(
        "| write + rename, no sync | {:.1} | {:.1} |",
        unsynced.0, unsynced.1
    );
    println!(
        "| write_to: write, sync, rename, sync the folder | {:.1} | {:.1} |",
        synced.0, synced.1
    );
    println!("CPU time per write_to: {cpu_per_write:.1} us");
    common::write_json(
        "state",
        &json!({
            "writes": n,
            "bytes": bytes,
            "serialize_us": [serialize.0, serialize.1],
            "unsynced_us": [unsynced.0, unsynced.1],
            "write_to_us": [synced.0, synced.1],
            "write_to_cpu_us": cpu_per_write,
            "when": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        }),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
