//! Runs the simulator on its own, to try `iotda-wait` (or anything else) against it by hand.
//! It serves three tasks and prints the settings to use; Ctrl-C stops it.
//!
//! ```sh
//! cargo run --example simulator
//! ```

use std::time::Duration;

use iotda_task_watcher::simulator::{
    Fault, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK,
};
use iotda_task_watcher::{InstanceId, TaskId, TaskType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let tasks: [(TaskId, TaskScript); 3] = [
        (
            "00000000-0000-0000-0000-000000000001".parse()?,
            TaskScript::new(TaskType::Modify)
                .pending(2)
                .running_for(Duration::from_secs(8))
                .succeed(),
        ),
        (
            "00000000-0000-0000-0000-000000000002".parse()?,
            TaskScript::new(TaskType::UpdateAllowLists)
                .running_for(Duration::from_secs(3))
                .fault(Fault::RateLimited)
                .running_for(Duration::from_secs(3))
                .fail("the allow list is too long"),
        ),
        (
            "00000000-0000-0000-0000-000000000003".parse()?,
            TaskScript::new(TaskType::Create)
                .running_for(Duration::from_secs(3600))
                .succeed(),
        ),
    ];
    for (task, script) in tasks.iter().cloned() {
        sim.add_task(&instance, &task, script);
    }
    println!("export HUAWEICLOUD_SDK_AK={DEFAULT_AK} HUAWEICLOUD_SDK_SK={DEFAULT_SK} HUAWEICLOUD_SDK_PROJECT_ID={DEFAULT_PROJECT_ID}");
    let ids: Vec<String> = tasks.iter().map(|(t, _)| t.to_string()).collect();
    println!(
        "iotda-wait --endpoint {} --instance-id {instance} {}",
        sim.uri(),
        ids.join(" ")
    );
    println!("# task 1 succeeds after ~8 s, task 2 fails after ~6 s, task 3 runs for an hour; Ctrl-C stops the simulator");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
