//! Runs the simulator as a server for other tools, with three tasks, and prints the settings
//! and commands to use; Ctrl-C stops it.
//!
//! ```sh
//! cargo run --example simulator                  # a free port, printed
//! cargo run --example simulator -- --port 8480   # a fixed one (or SIMULATOR_PORT=8480)
//! ```
//!
//! It listens on 127.0.0.1 only, accepts AK/SK signatures with the simulator's default
//! credentials, the IAM token it prints, and the temporary keys its metadata service hands out
//! (they last 2 s, so a wait for task 1 is renewed through several expiries).

use std::net::TcpListener;
use std::time::Duration;

use iotda_task_watcher::model::ChargeMode;
use iotda_task_watcher::simulator::{
    Fault, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK, REGION,
};
use iotda_task_watcher::{InstanceId, TaskId, TaskType};

/// The IAM token the simulator accepts as `X-Auth-Token`.
const TOKEN: &str = "simulator-iam-token";
/// How long the temporary keys of its credential services last.
const LIFETIME: Duration = Duration::from_secs(2);

/// The port asked for: `--port N` (or `--port=N`), else `SIMULATOR_PORT`, else 0 (any free one).
fn port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut asked = None;
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--port") {
            Some("") => asked = Some(args.next().ok_or("--port needs a value")?),
            Some(value) if value.starts_with('=') => asked = Some(value[1..].to_owned()),
            _ => {
                return Err(format!(
                    "unknown argument {arg:?}; usage: simulator [--port N]"
                ))
            }
        }
    }
    let Some(port) = asked.or_else(|| std::env::var("SIMULATOR_PORT").ok()) else {
        return Ok(0);
    };
    port.trim()
        .parse()
        .map_err(|_| format!("{port:?} is not a port (0 to 65535)"))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("simulator: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port = port()?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let sim = Simulator::start_on(listener).await;
    sim.accept_token(TOKEN);
    sim.set_credential_lifetime(LIFETIME);
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    let tasks: [(TaskId, TaskScript); 3] = [
        (
            "00000000-0000-0000-0000-000000000001".parse()?,
            TaskScript::new(TaskType::Modify)
                .target_config("iotda.standard.s2", Some(4), ChargeMode::PrePaid)
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
    let uri = sim.uri();
    let first = &tasks[0].0;
    let ids: Vec<String> = tasks.iter().map(|(t, _)| t.to_string()).collect();
    println!("IoTDA simulator listening on {uri}");
    println!("# task 1 succeeds after ~8 s, task 2 fails after ~6 s, task 3 runs for an hour");
    println!("# (a task's clock starts at its first RUNNING answer); Ctrl-C stops the simulator");
    println!();
    println!("# settings (the official SDKs' variables)");
    println!(
        "export HUAWEICLOUD_SDK_AK={DEFAULT_AK} HUAWEICLOUD_SDK_SK={DEFAULT_SK} \
         HUAWEICLOUD_SDK_PROJECT_ID={DEFAULT_PROJECT_ID}"
    );
    println!();
    println!("# iotda-wait (cargo run --features cli --bin iotda-wait -- ...)");
    println!(
        "iotda-wait --endpoint {uri} --instance-id {instance} {}",
        ids.join(" ")
    );
    println!();
    println!("# as on an ECS instance with an agency: no keys, temporary ones from the metadata");
    println!(
        "# service, which last {} s here and are renewed along the way; the project is",
        LIFETIME.as_secs()
    );
    println!("# looked up from IAM by region");
    println!(
        "env -u HUAWEICLOUD_SDK_AK -u HUAWEICLOUD_SDK_SK -u HUAWEICLOUD_SDK_PROJECT_ID \\\n  \
         IOTDA_METADATA_ENDPOINT={uri} HUAWEICLOUD_SDK_IAM_ENDPOINT={uri} \\\n  \
         iotda-wait -v --region {REGION} --endpoint {uri} --instance-id {instance} {}",
        ids[0]
    );
    println!();
    println!("# curl, with the IAM token the simulator accepts");
    println!(
        "curl -s -H 'X-Auth-Token: {TOKEN}' \
         {uri}/v5/iot/{DEFAULT_PROJECT_ID}/iotda-instances/{instance}/tasks/{first}"
    );
    println!();
    println!("# the official Python SDK (pip install huaweicloudsdkcore huaweicloudsdkiotdm)");
    println!(
        "python3 -c 'from huaweicloudsdkcore.auth.credentials import BasicCredentials; \
         from huaweicloudsdkiotdm.v5 import IoTDMClient, ShowInstanceTaskRequest; \
         client = IoTDMClient.new_builder()\
         .with_credentials(BasicCredentials(\"{DEFAULT_AK}\", \"{DEFAULT_SK}\", \"{DEFAULT_PROJECT_ID}\"))\
         .with_endpoints([\"{uri}\"]).build(); \
         print(client.show_instance_task(ShowInstanceTaskRequest(instance_id=\"{instance}\", \
         task_id=\"{first}\")))'"
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
