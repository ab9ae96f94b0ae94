//! Ctrl-C cancels the wait: the watcher stops at once, mid-sleep or mid-request, and reports the
//! last state it saw. The task itself goes on: cancelling never touches the service's task.
//! Runs against the simulator, with a task that takes a minute; without a Ctrl-C the wait gives
//! up after 5 s.
//!
//! ```sh
//! cargo run --example cancel
//! ```

use std::time::Duration;

use iotda_task_watcher::simulator::{Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskId, TaskType, TaskWatcher, WaitError};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let task: TaskId = "075f413d-a3bb-4243-974d-8eb9221c1234".parse()?;
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Create)
            .running_for(Duration::from_secs(60))
            .succeed(),
    );

    let token = CancellationToken::new();
    let on_ctrl_c = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    eprintln!("waiting for a one-minute task; press Ctrl-C to stop waiting");

    let outcome = TaskWatcher::new(&sim.client(), &instance, &task)
        .timeout(Duration::from_secs(5))
        .policy(PollPolicy::default().with_min_delay(Duration::from_millis(250)))
        .cancel_token(token)
        .await;
    match outcome {
        Err(WaitError::Cancelled { last, .. }) => {
            let progress = last.as_ref().and_then(|t| t.progress_percent());
            println!("cancelled; the task was last at {progress:?}% and goes on without us");
        }
        Err(e @ WaitError::TimedOut { .. }) => println!("{e}"),
        other => println!("{other:?}"),
    }
    Ok(())
}
