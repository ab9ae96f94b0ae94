//! A wait through several expiries of its credentials: keys from the (simulated) ECS metadata
//! service that last one second, renewed ahead of each expiry while the task runs for five.
//!
//! ```sh
//! cargo run --example credentials
//! ```
//!
//! In production the same code, with no provider given, finds credentials through the
//! official SDKs' chain (environment, profile file, OIDC, CCE Pod Identity, ECS metadata).

use std::time::Duration;

use futures::StreamExt;
use iotda_task_watcher::client::provider::EcsMetadata;
use iotda_task_watcher::simulator::{Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{IotdaClient, TaskEvent, TaskType, TaskWatcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await;
    sim.set_credential_lifetime(Duration::from_secs(1));
    let (instance, task) = ("a1b2c3d4".parse()?, "075f413d".parse()?);
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .running_for(Duration::from_secs(5))
            .succeed(),
    );

    // No keys given: the provider fetches them, and the client renews them.
    let client = IotdaClient::builder()
        .endpoint(sim.uri())
        .project_id(sim.project_id().clone())
        .credentials_provider(EcsMetadata::at(sim.uri()))
        .resolve()
        .await?;
    println!("credentials from {}", client.credentials_source());

    let policy = PollPolicy::default().with_max_delay(Duration::from_millis(500));
    let mut events = TaskWatcher::new(&client, &instance, &task)
        .policy(policy)
        .events();
    let mut fetches = client.credential_fetches();
    while let Some(event) = events.next().await {
        if client.credential_fetches() > fetches {
            fetches = client.credential_fetches();
            println!("  keys renewed (fetch {fetches})");
        }
        match event {
            TaskEvent::ProgressChanged { to: Some(p), .. } => println!("{p}%"),
            TaskEvent::Done(outcome) => {
                let task = outcome?;
                println!("{} after {fetches} fetches", task.status_or_unknown());
            }
            _ => {}
        }
    }
    println!(
        "requests refused: {}, keys handed out: {}",
        sim.refused(),
        sim.credential_fetches()
    );
    Ok(())
}
