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

mod anchors;
#[path = "../common/mod.rs"]
mod common;
mod plot;
mod report;
mod until;
mod workloads;

use std::time::Duration;

use serde_json::json;

use report::run;
use until::half;
use workloads::{workload_a, workload_b};

const TASKS: usize = 1_000;
const SEED_A: u64 = 20_261_127;
const SEED_B: u64 = 20_261_128;
const DEADLINE: Duration = Duration::from_secs(8 * 3600);
/// What "as good as" allows when ours is compared with an anchor: 5 % on p50 and p95.
const SLACK: f64 = 1.05;

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
            // Workload A at the top level; B under its own key.
            "policies": a["policies"],
            "workloads": {"A": a, "B": b},
        }),
    );
}
