//! `iotda-wait --state-dir` killed with SIGKILL at seeded random moments (asleep, mid-request,
//! mid-retry, mid-write) and started again each time, against the simulator on loopback; and
//! two processes on one task in one state directory.
//!
//! `KILL_TEST_RUNS` (default 200) and `KILL_TEST_SEED` (default 1) choose how many kills and
//! which moments; a longer run: `KILL_TEST_RUNS=5000 cargo test --all-features --test kill`.

#![cfg(unix)]

use std::process::Stdio;
use std::time::Duration;

use iotda_task_watcher::simulator::{
    Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK,
};
use iotda_task_watcher::watch::WaitState;
use iotda_task_watcher::{InstanceId, TaskId, TaskType};
use tokio::process::Command;

const INSTANCE: &str = "a1b2c3d4-0000-1111-2222-333344445555";

fn ids() -> (InstanceId, TaskId) {
    (
        INSTANCE.parse().unwrap(),
        "075f413d-a3bb-4243-974d-8eb9221c1234".parse().unwrap(),
    )
}

/// The command against `sim`, keeping its state in `dir`, retrying a failure up to `retries`
/// times.
fn command(sim: &Simulator, dir: &std::path::Path, retries: u32) -> Command {
    let (_, task) = ids();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotda-wait"));
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("HUAWEICLOUD_") || name.starts_with("HC_CONTAINER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HUAWEICLOUD_SDK_AK", DEFAULT_AK)
        .env("HUAWEICLOUD_SDK_SK", DEFAULT_SK)
        .env("HUAWEICLOUD_SDK_PROJECT_ID", DEFAULT_PROJECT_ID)
        .env_remove("RUST_LOG")
        .args(["--endpoint", &sim.uri(), "--instance-id", INSTANCE])
        .args([
            "--min-delay",
            "10ms",
            "--max-delay",
            "20ms",
            "--timeout",
            "10m",
        ])
        .args(["--retry-failed", &retries.to_string()])
        .arg("--state-dir")
        .arg(dir)
        .arg(task.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iotda-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A task that fails after six polls, and again six polls after every retry.
fn failing_again() -> TaskScript {
    let mut script = TaskScript::new(TaskType::Modify);
    for _ in 0..20 {
        script = script.running(6).fail("the flavor is sold out");
    }
    script
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_it_never_restarts_a_task_more_than_allowed() {
    let runs: usize = env_or("KILL_TEST_RUNS", 200);
    let seed: u64 = env_or("KILL_TEST_SEED", 1);
    let allowed = 2;
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(&instance, &task, failing_again());
    let dir = state_dir("random");
    let file = dir.join(format!("{task}.json"));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut deadline = None;
    let (mut killed, mut ended, mut retry_out) = (0, 0, 0);
    // Until `runs` kills (a run that ends first counts as a run, not a kill).
    while killed < runs {
        assert!(
            killed + ended < runs * 20,
            "{ended} runs ended before their kill"
        );
        let mut child = command(&sim, &dir, allowed).spawn().unwrap();
        let after = Duration::from_micros(rng.u64(0..25_000));
        tokio::select! {
            status = child.wait() => {
                ended += 1;
                assert_eq!(status.unwrap().code(), Some(1), "a finished run reports FAILED");
            }
            () = tokio::time::sleep(after) => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                killed += 1;
            }
        }
        // After every kill, the state is whole, and its deadline is the first one.
        if let Ok(bytes) = std::fs::read(&file) {
            let state: WaitState = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("a torn state ({e}): {}", String::from_utf8_lossy(&bytes))
            });
            let first = *deadline.get_or_insert(state.deadline());
            assert_eq!(state.deadline(), first, "the deadline never moves");
            assert!(state.retries() <= allowed, "{state:?}");
            retry_out += usize::from(state.retry_unconfirmed());
        }
        assert!(
            sim.retries(&instance, &task) <= u64::from(allowed),
            "restarted {} times",
            sim.retries(&instance, &task)
        );
    }
    // Then to its end, and once more after it.
    for _ in 0..2 {
        let status = command(&sim, &dir, allowed).status().await.unwrap();
        assert_eq!(status.code(), Some(1), "FAILED after its retries");
    }
    let restarts = sim.retries(&instance, &task);
    assert!(restarts <= u64::from(allowed), "restarted {restarts} times");
    let state: WaitState = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(state.retries(), allowed, "every retry spent, none twice");
    assert_eq!(Some(state.deadline()), deadline);
    eprintln!(
        "{killed} kills, {ended} runs to the end; {retry_out} kills left a retry unconfirmed; \
         the task was restarted {restarts} times of {allowed} allowed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_task_poll_once_and_report_the_same_outcome() {
    let script = || {
        TaskScript::new(TaskType::Modify)
            .running(3)
            .fail("the flavor is sold out")
            .running(3)
            .succeed()
    };
    let (instance, task) = ids();
    // One process alone: how many polls the wait takes.
    let alone = Simulator::start().await;
    alone.add_task(&instance, &task, script());
    let dir = state_dir("alone");
    let status = command(&alone, &dir, 1).status().await.unwrap();
    assert_eq!(status.code(), Some(0));
    let polls = alone.polls(&instance, &task);
    let _ = std::fs::remove_dir_all(&dir);

    // Two at once, on one state directory.
    let sim = Simulator::start().await;
    sim.add_task(&instance, &task, script());
    let dir = state_dir("two");
    let (first, second) = tokio::join!(
        command(&sim, &dir, 1).status(),
        command(&sim, &dir, 1).status()
    );
    assert_eq!(first.unwrap().code(), Some(0));
    assert_eq!(second.unwrap().code(), Some(0), "the same outcome");
    assert_eq!(sim.retries(&instance, &task), 1, "one retry in all");
    assert!(
        sim.polls(&instance, &task) <= polls + 1,
        "one set of polls, and one to confirm: {} against {polls}",
        sim.polls(&instance, &task)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
