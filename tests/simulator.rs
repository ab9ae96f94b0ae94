//! The simulator speaks the API as the service does, through the real client.

use std::time::Duration;

use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::simulator::{Fault, RawAnswer, Simulator, TaskScript};
use iotda_task_watcher::{Credentials, InstanceId, TaskId, TaskStatus, TaskType};

fn ids() -> (InstanceId, TaskId) {
    ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap())
}

/// A client of `sim` that signs with the right access key and the wrong secret.
fn wrong_key_client(sim: &Simulator) -> iotda_task_watcher::IotdaClient {
    sim.client_builder()
        .credentials(Credentials::aksk(
            iotda_task_watcher::simulator::DEFAULT_AK,
            "wrong",
        ))
        .build()
        .unwrap()
}

#[tokio::test]
async fn plays_a_script_poll_by_poll() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .pending(2)
            .running(3)
            .succeed()
            .operate_window("18:00", "22:00"),
    );
    let client = sim.client();
    let mut seen = Vec::new();
    for _ in 0..7 {
        let t = client.instance_task(&instance, &task).await.unwrap();
        assert_eq!(t.task_type, Some(TaskType::Modify));
        assert_eq!(
            t.operate_window.as_ref().unwrap().start_time.as_deref(),
            Some("18:00")
        );
        assert!(t.create_time.as_ref().unwrap().timestamp().is_some());
        seen.push((t.status_or_unknown().to_string(), t.progress.unwrap()));
    }
    let expected = [
        ("PENDING", 0),
        ("PENDING", 0),
        ("RUNNING", 25),
        ("RUNNING", 50),
        ("RUNNING", 75),
        ("SUCCESS", 100),
        ("SUCCESS", 100),
    ];
    let expected: Vec<(String, i64)> = expected.iter().map(|(s, p)| (s.to_string(), *p)).collect();
    assert_eq!(seen, expected);
    assert_eq!(sim.polls(&instance, &task), 7);
}

#[tokio::test]
async fn answers_faults_as_the_service_does() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .fault(Fault::ServerError(502))
            .fault(Fault::Throttled {
                retry_after: Duration::from_secs(3),
            })
            .fault(Fault::RateLimited)
            .fault(Fault::Malformed)
            .fault(Fault::NotFound)
            .fault(Fault::BadSignature)
            .fault(Fault::Slow(Duration::from_millis(300)))
            .fail("boom"),
    );
    let client = sim.client();
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let e = client.instance_task(&instance, &task).await.unwrap_err();
        assert!(e.request_id().unwrap().starts_with("sim-"), "{e}");
        assert!(e.server_date().is_some());
        kinds.push((
            e.kind(),
            e.status().unwrap().as_u16(),
            e.error_code().map(str::to_owned),
        ));
    }
    assert_eq!(
        kinds,
        [
            (
                ApiErrorKind::Server,
                502,
                Some("SIMULATOR.INTERNAL_ERROR".into())
            ),
            (ApiErrorKind::Throttled, 429, Some("APIGW.0308".into())),
            (ApiErrorKind::Throttled, 403, Some("IOTDA.021101".into())),
            (ApiErrorKind::Decode, 200, None),
            (
                ApiErrorKind::NotFound,
                404,
                Some("SIMULATOR.TASK_NOT_FOUND".into())
            ),
            (ApiErrorKind::Unauthorized, 401, Some("APIGW.0301".into())),
        ]
    );
    // The slow answer outlasts a short request timeout; the script has moved on regardless.
    let e = client
        .instance_task_with_timeout(&instance, &task, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Timeout);
    let t = client.instance_task(&instance, &task).await.unwrap();
    assert_eq!(t.status, Some(TaskStatus::Failed));
    assert_eq!(t.status_detail.as_deref(), Some("boom"));
}

#[tokio::test]
async fn gives_a_raw_answer_as_it_is_once_the_signature_is_checked() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .raw(
                RawAnswer::new(503)
                    .body("<html>busy</html>")
                    .header("X-Request-Id", "req-own"),
            )
            .raw(RawAnswer::json(
                r#"{"status":"ROLLING_BACK","progress":40}"#,
            )),
    );
    let client = sim.client();
    let e = client.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.status().unwrap().as_u16()),
        (ApiErrorKind::Server, 503)
    );
    assert_eq!(e.request_id(), Some("req-own"), "its own header wins");
    assert!(e.server_date().is_some(), "the simulator's Date is added");
    // Like a task's state, the last raw answer is given again once the script has run out.
    for _ in 0..2 {
        let t = client.instance_task(&instance, &task).await.unwrap();
        assert_eq!(t.status_or_unknown().as_str(), "ROLLING_BACK");
        assert_eq!(t.progress, Some(40));
    }
    let wrong = wrong_key_client(&sim);
    let e = wrong.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Unauthorized, "the signature first");
    assert_eq!(sim.polls(&instance, &task), 3);
}

#[tokio::test]
async fn checks_every_signature() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let wrong = wrong_key_client(&sim);
    let e = wrong.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Unauthorized);
    assert_eq!(e.error_code(), Some("APIGW.0301"));
    let stranger = sim
        .client_builder()
        .credentials(Credentials::aksk("SOMEONEELSE", "x"))
        .build()
        .unwrap();
    assert_eq!(
        stranger
            .instance_task(&instance, &task)
            .await
            .unwrap_err()
            .kind(),
        ApiErrorKind::Unauthorized
    );
    let token = sim
        .client_builder()
        .credentials(Credentials::iam_token("t"))
        .build()
        .unwrap();
    assert_eq!(
        token
            .instance_task(&instance, &task)
            .await
            .unwrap_err()
            .kind(),
        ApiErrorKind::Unauthorized
    );
    assert!(sim.client().instance_task(&instance, &task).await.is_ok());
    let unknown: TaskId = "ffff".parse().unwrap();
    assert_eq!(
        sim.client()
            .instance_task(&instance, &unknown)
            .await
            .unwrap_err()
            .kind(),
        ApiErrorKind::NotFound
    );
}

#[tokio::test]
async fn refuses_a_request_signed_too_far_from_its_clock() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_clock_offset(3600);
    let client = sim.client();
    let e = client.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::ClockSkew, "{e}");
    assert!(e.is_transient());
    assert!(e.error_msg().unwrap().contains("expired"), "{e}");
    let date = e.server_date().unwrap();
    let ahead = date.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        ahead > Duration::from_secs(3500),
        "the Date header shows the server's clock"
    );
    // The client learnt the server's time: the next request is signed at it.
    assert!(client.instance_task(&instance, &task).await.is_ok());
}
