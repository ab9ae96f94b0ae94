//! Waits for many tasks over one client (one connection pool), at most 16 requests in flight,
//! and prints each outcome in the order the tasks were given. Runs against the simulator.
//!
//! ```sh
//! cargo run --example many_tasks
//! ```

use std::time::Duration;

use iotda_task_watcher::simulator::{Simulator, TaskScript};
use iotda_task_watcher::{wait_all, InstanceId, TaskId, TaskType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let task: TaskId = format!("00000000-0000-0000-0000-{i:012x}").parse()?;
        let script = TaskScript::new(TaskType::UpdateAccessConfig).running(i % 3);
        let script = if i % 10 == 7 {
            script.fail("a simulated failure")
        } else {
            script.succeed()
        };
        sim.add_task(&instance, &task, script);
        tasks.push(task);
    }
    // wait_all uses the default schedule (1 s, 2 s, 4 s ...); these tasks finish within seconds.
    let started = std::time::Instant::now();
    let outcomes = wait_all(&sim.client(), &instance, tasks, 16).await;
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    for (task, outcome) in &outcomes {
        match outcome {
            Ok(_) => println!("{task} SUCCESS"),
            Err(e) => println!("{task} {e}"),
        }
    }
    eprintln!(
        "{} tasks, {failed} not SUCCESS, {} requests, {:.1?}",
        outcomes.len(),
        sim.requests(),
        started.elapsed().max(Duration::ZERO)
    );
    Ok(())
}
