//! Waits for a task on a simulated IoTDA service, with a live progress bar, and prints the
//! finished task. Needs no credentials and no network:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! Against the real service, build the client from the environment instead (see the README):
//! `IotdaClient::builder().region("cn-north-4").credentials(Credentials::from_env()?)...`.

use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use iotda_task_watcher::simulator::{Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{InstanceId, TaskEvent, TaskId, TaskType, TaskWatcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A local server that speaks the IoTDA API and checks signatures, with one task that waits
    // two polls, runs for three seconds, and succeeds.
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let task: TaskId = "075f413d-a3bb-4243-974d-8eb9221c1234".parse()?;
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .pending(2)
            .running_for(Duration::from_secs(3))
            .succeed(),
    );
    let client = sim.client();
    eprintln!("simulated IoTDA at {}; waiting for task {task}", sim.uri());

    let bar = ProgressBar::new(100).with_style(ProgressStyle::with_template(
        "{spinner} [{bar:40}] {pos:>3}% {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(100));

    let mut events = TaskWatcher::new(&client, &instance, &task)
        .policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_millis(500)),
        )
        .timeout(Duration::from_secs(60))
        .events();
    while let Some(event) = events.next().await {
        match event {
            TaskEvent::Observed { task, .. } | TaskEvent::StatusChanged { task, .. } => {
                bar.set_message(task.status_or_unknown().to_string());
                bar.set_position(task.progress_percent().unwrap_or(0).into());
            }
            TaskEvent::ProgressChanged { to: Some(p), .. } => bar.set_position(p.into()),
            TaskEvent::Retrying { error, .. } => bar.set_message(format!("retrying: {error}")),
            TaskEvent::Done(Ok(task)) => {
                bar.finish_with_message("SUCCESS");
                println!("{}", serde_json::to_string_pretty(&task)?);
            }
            TaskEvent::Done(Err(error)) => {
                bar.abandon_with_message("not SUCCESS");
                return Err(error.into());
            }
            _ => {}
        }
    }
    Ok(())
}
