//! A deployment step: wait for one task with a deadline, and turn every outcome into a clear
//! message and exit status. Runs against the simulator, where the task fails.
//!
//! ```sh
//! cargo run --example deploy_hook
//! ```

use std::process::ExitCode;
use std::time::Duration;

use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::simulator::{Fault, Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskId, TaskType, TaskWatcher, WaitError};

#[tokio::main]
async fn main() -> ExitCode {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555"
        .parse()
        .expect("a valid id");
    let task: TaskId = "0a1b2c3d-0000-4000-8000-000000000001"
        .parse()
        .expect("a valid id");
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::UpdateAllowLists)
            .running(2)
            .fault(Fault::ServerError(503))
            .running(1)
            .fail("the allow list exceeds the instance's limit of 100 entries"),
    );
    let client = sim.client();

    // In real deployment code this is `wait_for_task(&client, &instance, &task)` with defaults,
    // or a watcher with the deadline of the pipeline step.
    let outcome = TaskWatcher::new(&client, &instance, &task)
        .timeout(Duration::from_secs(15 * 60))
        .policy(PollPolicy::default().with_min_delay(Duration::from_millis(100)))
        .await;

    match outcome {
        Ok(task) => {
            println!(
                "allow list updated at {}",
                task.end_time.map(|t| t.to_string()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(WaitError::Failed { task, .. }) => {
            eprintln!(
                "the change failed: {}",
                task.status_detail.unwrap_or_default()
            );
            ExitCode::from(1)
        }
        Err(WaitError::TimedOut { last, elapsed, .. }) => {
            let status = last.and_then(|t| t.status).map(|s| s.to_string());
            eprintln!("still {status:?} after {elapsed:?}; the task goes on, check it later");
            ExitCode::from(3)
        }
        Err(WaitError::Api { error, .. }) if error.kind() == ApiErrorKind::Unauthorized => {
            eprintln!("check HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK: {error}");
            ExitCode::from(4)
        }
        Err(other) => {
            eprintln!("{other}");
            ExitCode::from(4)
        }
    }
}
