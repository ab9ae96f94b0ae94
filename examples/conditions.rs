//! Hooks along a task's run: go on once it has started, again at 50 %, and retry it once if it
//! fails. Runs against the simulator, where the task fails once and succeeds when retried.
//!
//! ```sh
//! cargo run --example conditions
//! ```

use std::time::Duration;

use futures::StreamExt;
use iotda_task_watcher::simulator::{Simulator, TaskScript};
use iotda_task_watcher::watch::{Condition, PollPolicy};
use iotda_task_watcher::{InstanceId, TaskEvent, TaskId, TaskType, TaskWatcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let task: TaskId = "0a1b2c3d-0000-4000-8000-000000000002".parse()?;
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .pending(2)
            .running(4)
            .fail("the flavor is sold out in this zone")
            .running(3)
            .succeed(),
    );
    let client = sim.client();
    // The simulator's task moves on each poll: poll it often.
    let watcher = || {
        TaskWatcher::new(&client, &instance, &task).policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(100)),
        )
    };

    let started = watcher().until(Condition::started()).await?;
    let percent = |t: &iotda_task_watcher::InstanceTask| t.progress_percent().unwrap_or_default();
    println!(
        "started: {} at {} %",
        started.status_or_unknown(),
        percent(&started)
    );

    let half = watcher().until(Condition::progress_at_least(50)).await?;
    println!("half way: {} %", percent(&half));

    // Retrying is opt-in: a retried task may fail again, and may cost money.
    let mut events = watcher().retry_failed(1).events();
    while let Some(event) = events.next().await {
        match event {
            TaskEvent::Retried {
                attempt, failed, ..
            } => println!(
                "retry {attempt} after: {}",
                failed.status_detail.unwrap_or_default()
            ),
            TaskEvent::Done(outcome) => {
                let done = outcome?;
                println!("done: {}", done.status_or_unknown());
            }
            _ => {}
        }
    }
    println!(
        "retries the service accepted: {}",
        sim.retries(&instance, &task)
    );
    Ok(())
}
