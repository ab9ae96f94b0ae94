//! Progress bars driven by the event stream: one bar per task, with retries shown as they
//! happen. Runs against the simulator.
//!
//! ```sh
//! cargo run --example progress_bar
//! ```

use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use iotda_task_watcher::simulator::{Fault, Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{watch_many, InstanceId, TaskEvent, TaskId, TaskType, TaskWatcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let scripts = [
        TaskScript::new(TaskType::Modify)
            .pending(3)
            .running_for(Duration::from_secs(4))
            .succeed(),
        TaskScript::new(TaskType::OpenSnat)
            .running_for(Duration::from_secs(2))
            .fault(Fault::Throttled {
                retry_after: Duration::from_secs(1),
            })
            .running_for(Duration::from_secs(2))
            .succeed(),
        TaskScript::new(TaskType::Freeze)
            .running_for(Duration::from_secs(3))
            .fail("the instance has open orders"),
    ];
    let client = sim.client();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>3}% {msg}")?;
    let mut bars = Vec::new();
    let mut watchers = Vec::new();
    for (i, script) in scripts.into_iter().enumerate() {
        let task: TaskId = format!("00000000-0000-0000-0000-00000000000{i}").parse()?;
        sim.add_task(&instance, &task, script);
        let bar = multi.add(ProgressBar::new(100).with_style(style.clone()));
        bar.set_prefix(format!("task {i}"));
        bars.push(bar);
        let watcher = TaskWatcher::new(&client, &instance, &task).policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_millis(500)),
        );
        watchers.push((i, watcher));
    }

    let mut events = std::pin::pin!(watch_many(watchers, 4));
    while let Some((i, event)) = events.next().await {
        let bar = &bars[i];
        match event {
            TaskEvent::Observed { task, .. } | TaskEvent::StatusChanged { task, .. } => {
                bar.set_message(task.status_or_unknown().to_string());
                bar.set_position(task.progress_percent().unwrap_or(0).into());
            }
            TaskEvent::ProgressChanged { to: Some(p), .. } => bar.set_position(p.into()),
            TaskEvent::Retrying { error, delay, .. } => {
                bar.set_message(format!("{} - again in {delay:.1?}", error.kind()));
            }
            TaskEvent::Done(Ok(_)) => bar.finish_with_message("SUCCESS"),
            TaskEvent::Done(Err(e)) => bar.abandon_with_message(e.to_string()),
            _ => {}
        }
    }
    Ok(())
}
