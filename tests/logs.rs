//! What the crate logs, captured at TRACE from every target (hyper's too).
//!
//! These tests live alone in this binary: `tracing` caches per call site whether anyone listens,
//! and a test thread without a subscriber could otherwise turn a call site off for the others.

mod common;

use std::time::Duration;

use common::*;
use iotda_task_watcher::simulator::{Fault, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{Credentials, TaskType, TaskWatcher};
use wiremock::ResponseTemplate;

const RUNNING: &str = r#"{"task_id":"075f413d-a3bb-4243-974d-8eb9221c1234","type":"MODIFY","status":"RUNNING","progress":35}"#;

#[tokio::test]
async fn secrets_stay_out_of_logs_at_every_level() {
    let logs = capture_logs();
    // Wiremock, not the simulator: this test sends an IAM token too.
    let server = answering(
        ResponseTemplate::new(200)
            .set_body_string(RUNNING)
            .insert_header("X-Request-Id", "req-log-1"),
    )
    .await;
    let (instance, task) = ids();
    let creds = Credentials::aksk(AK, SK).with_security_token(TOKEN);
    let client = client_with(&server.uri(), creds);
    client.instance_task(&instance, &task).await.unwrap();
    let iam = client_with(&server.uri(), Credentials::iam_token(TOKEN));
    iam.instance_task(&instance, &task).await.unwrap();
    tracing::trace!(?client, ?iam, "clients");
    let text = logs.text();
    assert!(
        text.contains("req-log-1") && text.contains(TASK),
        "the capture works: {text}"
    );
    assert!(!text.contains(SK), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn a_wait_logs_a_span_per_wait_and_never_a_secret() {
    let logs = capture_logs();
    let sim = simulate(
        TaskScript::new(TaskType::Modify)
            .pending(1)
            .fault(Fault::ServerError(503))
            .raw(task_json("RUNNING", 50))
            .succeed(),
    )
    .await;
    let (instance, task) = ids();
    let creds = Credentials::aksk(AK, SK).with_security_token(TOKEN);
    TaskWatcher::new(&client_with(&sim.uri(), creds), &instance, &task)
        .policy(PollPolicy::default().with_min_delay(Duration::from_millis(5)))
        .await
        .unwrap();
    // The failure paths log too: a refused signature.
    let refused = simulate(TaskScript::new(TaskType::Modify).fault(Fault::BadSignature)).await;
    let (instance, task) = ids();
    let creds = Credentials::aksk(AK, SK).with_security_token(TOKEN);
    let _ = TaskWatcher::new(&client_with(&refused.uri(), creds), &instance, &task).await;
    let text = logs.text();
    assert!(text.contains("APIGW.0301"), "{text}");
    assert!(
        text.contains(&format!(
            "iotda_task_wait{{instance_id={INSTANCE} task_id={TASK}}}"
        )),
        "{text}"
    );
    assert!(text.contains("DEBUG") && text.contains("polled"), "{text}");
    assert!(
        text.contains("INFO")
            && text.contains("status changed")
            && text.contains("from=PENDING to=RUNNING"),
        "{text}"
    );
    assert!(
        text.contains("WARN") && text.contains("poll failed; retrying"),
        "{text}"
    );
    assert!(!text.contains(SK) && !text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn fetched_credentials_stay_out_of_logs_debug_and_errors() {
    use iotda_task_watcher::client::provider::{EcsMetadata, ProvideCredentials};
    use iotda_task_watcher::simulator::Simulator;
    let logs = capture_logs();
    let sim = Simulator::start().await;
    // Keys that last 300 ms, renewed along the way, one renewal refused.
    sim.set_credential_lifetime(Duration::from_millis(300));
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .running_for(Duration::from_millis(700))
            .succeed(),
    );
    let builder = iotda_task_watcher::IotdaClient::builder()
        .endpoint(sim.uri())
        .project_id(sim.project_id().clone())
        .credentials_provider(EcsMetadata::at(sim.uri()));
    tracing::trace!(?builder, "builder");
    let client = builder.resolve().await.unwrap();
    sim.fail_credential_fetches(1);
    let fast = PollPolicy::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(20));
    TaskWatcher::new(&client, &instance, &task)
        .policy(fast)
        .await
        .unwrap();
    let set = EcsMetadata::at(sim.uri()).provide().await.unwrap();
    tracing::trace!(?client, ?set, "fetched");
    // An expired set that cannot be renewed: the error names the provider, not the keys.
    sim.set_credential_lifetime(Duration::from_millis(50));
    let short = iotda_task_watcher::IotdaClient::builder()
        .endpoint(sim.uri())
        .project_id(sim.project_id().clone())
        .credentials_provider(EcsMetadata::at(sim.uri()))
        .resolve()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    sim.fail_credential_fetches(5);
    let error = short.instance_task(&instance, &task).await.unwrap_err();
    tracing::trace!(%error, ?error, "expired");
    assert!(error.to_string().contains("ECS metadata"), "{error}");
    let text = logs.text();
    assert!(
        text.contains("credentials renewed") && text.contains("renewing credentials failed"),
        "the capture saw the renewals: {text}"
    );
    for secret in [
        "simulator-temporary-secret",
        "simulator-security-token",
        "simulator-metadata-session",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}
