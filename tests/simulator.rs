//! The simulator speaks the API as the service does, through the real client.

use std::time::Duration;

use iotda_task_watcher::client::{ApiError, ApiErrorKind};
use iotda_task_watcher::model::ChargeMode;
use iotda_task_watcher::simulator::{
    Fault, Quota, QuotaAnswer, RawAnswer, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID,
    DEFAULT_SK,
};
use iotda_task_watcher::{Credentials, InstanceId, InstanceTask, TaskId, TaskStatus, TaskType};

fn ids() -> (InstanceId, TaskId) {
    ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap())
}

/// The gateway's request ids are 32 lowercase hex digits.
fn is_request_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A GET of `path` on `sim` as it is, with these headers: the status, the `X-Request-Id` and
/// the body as JSON.
async fn raw_get(
    sim: &Simulator,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, serde_json::Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", sim.uri()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.json().await.unwrap();
    (status, id, body)
}

fn task_path(sim: &Simulator, instance: &InstanceId, task: &TaskId) -> String {
    format!(
        "/v5/iot/{}/iotda-instances/{instance}/tasks/{task}",
        sim.project_id()
    )
}

/// A client of `sim` that signs with the right access key and the wrong secret.
fn wrong_key_client(sim: &Simulator) -> iotda_task_watcher::IotdaClient {
    sim.client_builder()
        .credentials(Credentials::aksk(DEFAULT_AK, "wrong"))
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
async fn a_script_without_progress_answers_none() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    let script = TaskScript::new(TaskType::Modify)
        .running(2)
        .succeed()
        .without_progress();
    sim.add_task(&instance, &task, script);
    let client = sim.client();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let t = client.instance_task(&instance, &task).await.unwrap();
        seen.push((t.status_or_unknown().to_string(), t.progress));
    }
    let expected = [("RUNNING", None), ("RUNNING", None), ("SUCCESS", None)];
    let expected: Vec<(String, Option<i64>)> =
        expected.iter().map(|(s, p)| (s.to_string(), *p)).collect();
    assert_eq!(seen, expected);
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
            .fault(Fault::ServerError(500))
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
    for _ in 0..7 {
        let e = client.instance_task(&instance, &task).await.unwrap_err();
        assert!(is_request_id(e.request_id().unwrap()), "{e}");
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
            (ApiErrorKind::Server, 500, Some("IOTDA.000001".into())),
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

#[tokio::test]
async fn a_finished_task_keeps_the_end_time_it_first_reported() {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4".parse().unwrap();
    let scripts = [
        (
            "0001",
            TaskScript::new(TaskType::Modify).running(1).succeed(),
        ),
        (
            "0002",
            TaskScript::new(TaskType::Modify).running(1).fail("x"),
        ),
    ];
    for (task, script) in scripts {
        let task: TaskId = task.parse().unwrap();
        sim.add_task(&instance, &task, script);
        let client = sim.client();
        let running = client.instance_task(&instance, &task).await.unwrap();
        assert_eq!(running.status, Some(TaskStatus::Running));
        assert_eq!(running.end_time, None, "no end time while it runs");
        let first = client.instance_task(&instance, &task).await.unwrap();
        assert!(first.is_terminal());
        let end = first.end_time.clone().expect("an end time once it ended");
        assert!(end.timestamp() >= running.start_time.as_ref().unwrap().timestamp());
        for _ in 0..3 {
            // The times have millisecond precision: a later poll would show a later time.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let again = client.instance_task(&instance, &task).await.unwrap();
            assert_eq!(again.end_time.as_ref(), Some(&end));
            assert_eq!(again.start_time, first.start_time);
        }
    }
}

#[tokio::test]
async fn scripts_a_target_config_the_client_decodes() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .target_config("iotda.standard.s2", Some(4), ChargeMode::PrePaid)
            .running(1)
            .succeed(),
    );
    let client = sim.client();
    for _ in 0..2 {
        let t = client.instance_task(&instance, &task).await.unwrap();
        let target = t.target_config.expect("a target config in every answer");
        let flavor = target.flavor.unwrap();
        assert_eq!(flavor.flavor_type.as_deref(), Some("iotda.standard.s2"));
        assert_eq!(flavor.size, Some(4));
        assert_eq!(target.charge_mode, Some(ChargeMode::PrePaid));
    }
    // On the wire, the names of the API page (Tables 3 and 4).
    sim.accept_token("token");
    let path = task_path(&sim, &instance, &task);
    let (status, _, body) = raw_get(&sim, &path, &[("X-Auth-Token", "token")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["target_config"],
        serde_json::json!({
            "flavor": { "type": "iotda.standard.s2", "size": 4 },
            "charge_mode": "prePaid"
        })
    );
    // Without a size (only a standard instance has one), and paid per use.
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).target_config(
            "iotda.enterprise.e1",
            None,
            ChargeMode::PostPaid,
        ),
    );
    let target = client
        .instance_task(&instance, &task)
        .await
        .unwrap()
        .target_config
        .unwrap();
    assert_eq!(target.flavor.unwrap().size, None);
    assert_eq!(target.charge_mode, Some(ChargeMode::PostPaid));
}

#[tokio::test]
async fn gateway_errors_carry_the_request_id_of_the_header() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let path = task_path(&sim, &instance, &task);
    let expected = [
        (vec![], "x-auth-token not found"),
        (vec![("X-Auth-Token", "not-given")], "decrypt token fail"),
    ];
    let mut ids = Vec::new();
    for (headers, why) in expected {
        let (status, id, body) = raw_get(&sim, &path, &headers).await;
        assert_eq!(status, 401);
        assert!(is_request_id(&id), "{id}");
        assert_eq!(
            body,
            serde_json::json!({
                "error_code": "APIGW.0301",
                "error_msg": format!("Incorrect IAM authentication information: {why}"),
                "request_id": id,
            })
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "one id per request");
    let (status, id, body) = raw_get(&sim, "/v3/elsewhere", &[]).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("APIGW.0101"))
    );
    assert_eq!(body["request_id"].as_str(), Some(id.as_str()));

    // Through the client: the gateway's messages for a wrong secret and an unknown key.
    let e = wrong_key_client(&sim)
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(
        e.error_msg(),
        Some("Incorrect IAM authentication information: verify aksk signature fail")
    );
    assert!(is_request_id(e.request_id().unwrap()));
    let stranger = sim
        .client_builder()
        .credentials(Credentials::aksk("SOMEONEELSE", "x"))
        .build()
        .unwrap();
    let e = stranger.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Unauthorized);
    assert_eq!(
        e.error_msg(),
        Some(
            "Incorrect IAM authentication information: \
             Get secretKey failed,ak:******,err:ak not exist"
        )
    );
}

#[tokio::test]
async fn an_unknown_task_answers_in_iotda_s_shape_with_the_simulator_s_code() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.accept_token("token");
    let (status, id, body) = raw_get(
        &sim,
        &task_path(&sim, &instance, &task),
        &[("X-Auth-Token", "token")],
    )
    .await;
    assert_eq!(status, 404);
    assert!(is_request_id(&id));
    assert_eq!(
        body,
        serde_json::json!({
            "error_code": "SIMULATOR.TASK_NOT_FOUND",
            "error_msg": "The instance task does not exist.",
        })
    );
    let e = sim
        .client()
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::NotFound);
    assert_eq!(e.error_code(), Some("SIMULATOR.TASK_NOT_FOUND"));
}

#[tokio::test]
async fn accepts_the_iam_tokens_it_is_given_and_no_other() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).pending(1).succeed(),
    );
    let with_token = |token: &str| {
        sim.client_builder()
            .credentials(Credentials::iam_token(token))
            .build()
            .unwrap()
    };
    let e = with_token("iam-token-1")
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ApiErrorKind::Unauthorized,
        "no token until one is given"
    );
    sim.accept_token("iam-token-1");
    let t = with_token("iam-token-1")
        .instance_task(&instance, &task)
        .await
        .unwrap();
    assert_eq!(t.status, Some(TaskStatus::Pending));
    let e = with_token("iam-token-2")
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Unauthorized);
    assert_eq!(e.error_code(), Some("APIGW.0301"));
    assert_eq!(
        e.error_msg(),
        Some("Incorrect IAM authentication information: decrypt token fail")
    );
    // The same request sent by hand, and the signed client, go on with the script.
    let path = task_path(&sim, &instance, &task);
    let (status, _, body) = raw_get(&sim, &path, &[("X-Auth-Token", "iam-token-1")]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("SUCCESS")));
    assert!(sim.client().instance_task(&instance, &task).await.is_ok());
    assert_eq!(
        sim.polls(&instance, &task),
        3,
        "refused requests are not polls"
    );
}

#[tokio::test]
async fn serves_on_the_listener_it_is_given() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sim = Simulator::start_on(listener).await;
    assert_eq!(sim.uri(), format!("http://127.0.0.1:{port}"));
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let client = iotda_task_watcher::IotdaClient::builder()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .credentials(Credentials::aksk(DEFAULT_AK, DEFAULT_SK))
        .project_id(DEFAULT_PROJECT_ID.parse().unwrap())
        .build()
        .unwrap();
    let t = client.instance_task(&instance, &task).await.unwrap();
    assert_eq!(t.status, Some(TaskStatus::Success));
    assert_eq!(sim.requests(), 1);
}

/// One poll through a client of its own. A client may learn from a throttled answer to pace
/// its next requests; these tests are about the simulator's quota, so no client carries what
/// it learnt to the next request.
async fn poll(
    sim: &Simulator,
    instance: &InstanceId,
    task: &TaskId,
) -> Result<InstanceTask, ApiError> {
    sim.client().instance_task(instance, task).await
}

/// The kind, status and code of an error answer.
fn refusal(e: &ApiError) -> (ApiErrorKind, u16, Option<&str>) {
    (
        e.kind(),
        e.status().map_or(0, |s| s.as_u16()),
        e.error_code(),
    )
}

#[tokio::test]
async fn a_quota_lets_its_burst_through_then_answers_the_gateway_s_429() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).running(10),
    );
    sim.set_quota(Quota::per_second(0.001, 3).answer(QuotaAnswer::Throttled {
        retry_after: Some(Duration::from_secs(7)),
    }));
    let client = sim.client();
    for n in 1..=3 {
        let t = client.instance_task(&instance, &task).await;
        assert_eq!(t.unwrap().status, Some(TaskStatus::Running), "request {n}");
    }
    let e = client.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (ApiErrorKind::Throttled, 429, Some("APIGW.0308")),
        "{e}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(is_request_id(e.request_id().unwrap()), "{e}");
    assert_eq!((sim.requests(), sim.throttled()), (4, 1));
    assert_eq!(
        sim.polls(&instance, &task),
        3,
        "a refused request is not a poll"
    );

    // On the wire, the gateway's shape, as for its other errors.
    sim.accept_token("token");
    let path = task_path(&sim, &instance, &task);
    let (status, id, body) = raw_get(&sim, &path, &[("X-Auth-Token", "token")]).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        serde_json::json!({
            "error_code": "APIGW.0308",
            "error_msg": "The throttling threshold has been reached.",
            "request_id": id,
        })
    );

    // A new quota starts full; its default answer has no Retry-After.
    sim.set_quota(Quota::per_second(0.001, 1));
    assert!(poll(&sim, &instance, &task).await.is_ok());
    let e = poll(&sim, &instance, &task).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (ApiErrorKind::Throttled, 429, Some("APIGW.0308"))
    );
    assert_eq!(e.retry_after(), None, "{e}");
    assert_eq!(sim.throttled(), 3);
}

#[tokio::test]
async fn a_quota_can_answer_with_iotda_s_403() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_quota(Quota::per_second(0.001, 1).answer(QuotaAnswer::RateLimited));
    assert!(poll(&sim, &instance, &task).await.unwrap().is_terminal());
    let e = poll(&sim, &instance, &task).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (ApiErrorKind::Throttled, 403, Some("IOTDA.021101")),
        "{e}"
    );
    assert_eq!(
        e.error_msg(),
        Some("Request reached the maximum rate limit.")
    );
    assert_eq!(e.retry_after(), None);
    assert!(
        is_request_id(e.request_id().unwrap()),
        "the header is always sent"
    );
    // IoTDA's shape: no request id in the body.
    sim.accept_token("token");
    let path = task_path(&sim, &instance, &task);
    let (status, _, body) = raw_get(&sim, &path, &[("X-Auth-Token", "token")]).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        serde_json::json!({
            "error_code": "IOTDA.021101",
            "error_msg": "Request reached the maximum rate limit.",
        })
    );
    assert_eq!(sim.throttled(), 2);
}

#[tokio::test]
async fn a_quota_refills_at_its_rate() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).running(10),
    );
    // A token every 100 ms. The second request follows the first on the same connection, well
    // within 100 ms; after the refusal, 150 ms is more than a token's worth.
    sim.set_quota(Quota::per_second(10.0, 1));
    let client = sim.client();
    assert!(client.instance_task(&instance, &task).await.is_ok());
    let e = client.instance_task(&instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Throttled, "{e}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = poll(&sim, &instance, &task).await.unwrap();
    assert_eq!(t.status, Some(TaskStatus::Running));
    assert_eq!(sim.polls(&instance, &task), 2);
    assert_eq!(sim.throttled(), 1);
}

#[tokio::test]
async fn a_refused_signature_takes_no_token() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_quota(Quota::per_second(0.001, 1));
    let unknown_token = sim
        .client_builder()
        .credentials(Credentials::iam_token("not-given"))
        .build()
        .unwrap();
    for client in [
        wrong_key_client(&sim),
        wrong_key_client(&sim),
        unknown_token.clone(),
    ] {
        let e = client.instance_task(&instance, &task).await.unwrap_err();
        assert_eq!(
            refusal(&e),
            (ApiErrorKind::Unauthorized, 401, Some("APIGW.0301"))
        );
    }
    assert!(
        poll(&sim, &instance, &task).await.is_ok(),
        "the token is still there"
    );
    let e = poll(&sim, &instance, &task).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Throttled, "{e}");
    // Over the quota, a bad signature is still refused as such: authentication comes first.
    let e = wrong_key_client(&sim)
        .instance_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Unauthorized, "{e}");
    assert_eq!((sim.requests(), sim.throttled()), (6, 1));
}

#[tokio::test]
async fn the_quota_is_the_account_s_and_counts_its_refusals() {
    let sim = Simulator::start().await;
    let first: InstanceId = "a1b2c3d4".parse().unwrap();
    let second: InstanceId = "e5f6a7b8".parse().unwrap();
    let (task_a, task_b): (TaskId, TaskId) = ("0001".parse().unwrap(), "0002".parse().unwrap());
    sim.add_task(&first, &task_a, TaskScript::new(TaskType::Modify).succeed());
    sim.add_task(
        &second,
        &task_b,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_quota(Quota::per_second(0.001, 2));
    assert!(poll(&sim, &first, &task_a).await.is_ok());
    assert!(poll(&sim, &second, &task_b).await.is_ok());
    assert_eq!(sim.throttled(), 0);
    for (instance, task) in [(&first, &task_a), (&second, &task_b), (&second, &task_b)] {
        let e = poll(&sim, instance, task).await.unwrap_err();
        assert_eq!(e.kind(), ApiErrorKind::Throttled, "{e}");
    }
    // The quota comes before the task is looked up: an unknown one is refused the same way.
    let unknown: TaskId = "ffff".parse().unwrap();
    let e = poll(&sim, &first, &unknown).await.unwrap_err();
    assert_eq!(e.kind(), ApiErrorKind::Throttled, "{e}");
    assert_eq!((sim.requests(), sim.throttled()), (6, 4));
    assert_eq!(
        (sim.polls(&first, &task_a), sim.polls(&second, &task_b)),
        (1, 1)
    );

    // Lifted, every request is served, and a scripted throttle is not the quota's.
    sim.clear_quota();
    let task_c: TaskId = "0003".parse().unwrap();
    sim.add_task(
        &first,
        &task_c,
        TaskScript::new(TaskType::Modify)
            .fault(Fault::Throttled {
                retry_after: Duration::from_secs(1),
            })
            .succeed(),
    );
    let e = poll(&sim, &first, &task_c).await.unwrap_err();
    assert_eq!(e.error_code(), Some("APIGW.0308"));
    for (instance, task) in [(&first, &task_a), (&second, &task_b), (&first, &task_c)] {
        assert!(poll(&sim, instance, task).await.unwrap().is_terminal());
    }
    assert_eq!((sim.requests(), sim.throttled()), (10, 4));
}

#[tokio::test]
async fn retries_a_failed_task_signed_like_a_poll_and_plays_on_after_the_failure() {
    let sim = Simulator::start().await;
    let (instance, task) = ids();
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .running(1)
            .fail("flavor sold out")
            .running(1)
            .succeed(),
    );
    let client = sim.client();
    // Not FAILED yet: nothing to retry.
    let running = client.instance_task(&instance, &task).await.unwrap();
    assert_eq!(running.status, Some(TaskStatus::Running));
    let refused = client.retry_task(&instance, &task).await.unwrap_err();
    assert_eq!(refused.kind(), ApiErrorKind::BadRequest, "{refused}");
    assert_eq!(refused.error_code(), Some("SIMULATOR.TASK_NOT_RETRYABLE"));
    let failed = client.instance_task(&instance, &task).await.unwrap();
    assert_eq!(failed.status, Some(TaskStatus::Failed));
    assert!(failed.end_time.is_some());
    // A retry signed with the wrong secret is refused as a poll would be, and retries nothing.
    let unsigned = wrong_key_client(&sim)
        .retry_task(&instance, &task)
        .await
        .unwrap_err();
    assert_eq!(unsigned.kind(), ApiErrorKind::Unauthorized, "{unsigned}");
    assert_eq!(unsigned.error_code(), Some("APIGW.0301"));
    assert_eq!(sim.retries(&instance, &task), 0);
    // The retry answers the task as it restarts, then the script goes on.
    let restarted = client.retry_task(&instance, &task).await.unwrap();
    assert_eq!(restarted.status, Some(TaskStatus::Pending));
    assert_eq!(restarted.progress, Some(0));
    assert_eq!(restarted.task_id.as_deref(), Some(task.as_str()));
    assert_eq!((restarted.status_detail, restarted.end_time), (None, None));
    assert_eq!(sim.retries(&instance, &task), 1);
    let statuses = [
        client.instance_task(&instance, &task).await.unwrap().status,
        client.instance_task(&instance, &task).await.unwrap().status,
    ];
    assert_eq!(
        statuses,
        [Some(TaskStatus::Running), Some(TaskStatus::Success)]
    );
    // A retry is not a poll: two GETs before it, two after.
    assert_eq!(sim.polls(&instance, &task), 4);
    // A GET of the retry path, or a POST of the task, is not this API.
    let (status, _, body) = raw_get(
        &sim,
        &format!("{}/retry", task_path(&sim, &instance, &task)),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("APIGW.0101"))
    );
    let posted = reqwest::Client::new()
        .post(format!(
            "{}{}",
            sim.uri(),
            task_path(&sim, &instance, &task)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 404);
    let body: serde_json::Value = posted.json().await.unwrap();
    assert_eq!(body["error_code"], "APIGW.0101");
}

#[tokio::test]
async fn the_task_list_is_read_page_by_page_newest_first() {
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4".parse().unwrap();
    let other: InstanceId = "f0f0f0f0".parse().unwrap();
    let kinds = [TaskType::Create, TaskType::Modify, TaskType::Freeze];
    let mut added = Vec::new();
    for (i, kind) in kinds.iter().cycle().take(7).enumerate() {
        let task: TaskId = format!("075f413d-a3bb-4243-974d-{i:012}").parse().unwrap();
        sim.add_task(&instance, &task, TaskScript::new(kind.clone()).succeed());
        added.push(task);
        // Creation times a millisecond apart at least, as the service's are.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elsewhere: TaskId = "075f413d".parse().unwrap();
    sim.add_task(
        &other,
        &elsewhere,
        TaskScript::new(TaskType::Delete).succeed(),
    );
    // One task polled to its end: the list shows it so, without progress.
    let client = sim.client();
    assert!(client
        .instance_task(&instance, &added[0])
        .await
        .unwrap()
        .is_terminal());
    sim.set_list_page(3);
    let listed = client.list_instance_tasks(&instance).await.unwrap();
    assert_eq!(sim.list_pages(), 3, "7 tasks, 3 a page");
    let ids: Vec<&str> = listed.iter().filter_map(|t| t.task_id.as_deref()).collect();
    let mut newest_first: Vec<&str> = added.iter().map(TaskId::as_str).collect();
    newest_first.reverse();
    assert_eq!(ids, newest_first);
    let first = listed.last().unwrap();
    assert_eq!(first.status, Some(TaskStatus::Success));
    assert_eq!(first.task_type, Some(TaskType::Create));
    assert!(listed.iter().all(|t| t.progress.is_none()));
    assert!(listed[0].status == Some(TaskStatus::Pending));
    // A list of nothing is one page.
    let none: InstanceId = "0e0e0e0e".parse().unwrap();
    assert!(client.list_instance_tasks(&none).await.unwrap().is_empty());
    assert_eq!(sim.list_pages(), 4);
}

/// The official Python SDK (huaweicloudsdkiotdm), if this machine has it.
async fn python_sdk() -> bool {
    tokio::process::Command::new("python3")
        .args(["-c", "import huaweicloudsdkiotdm.v5"])
        .output()
        .await
        .is_ok_and(|out| out.status.success())
}

#[tokio::test]
async fn the_official_sdk_lists_the_tasks_and_follows_the_marker() {
    if !python_sdk().await {
        assert!(
            std::env::var_os("IOTDA_REQUIRE_SDK").is_none(),
            "IOTDA_REQUIRE_SDK is set, and python3 cannot import huaweicloudsdkiotdm"
        );
        eprintln!(
            "skipped: python3 cannot import huaweicloudsdkiotdm (pip install huaweicloudsdkiotdm)"
        );
        return;
    }
    let sim = Simulator::start().await;
    let instance: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap();
    let mut added = Vec::new();
    for i in 0..5 {
        let task: TaskId = format!("075f413d-a3bb-4243-974d-{i:012}").parse().unwrap();
        sim.add_task(
            &instance,
            &task,
            TaskScript::new(TaskType::Modify).succeed(),
        );
        added.push(task.to_string());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    added.reverse();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/list_instance_tasks.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            sim.uri().as_str(),
            DEFAULT_PROJECT_ID,
            DEFAULT_AK,
            DEFAULT_SK,
            instance.as_str(),
            "2",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["ids"], serde_json::json!(added), "{stderr}");
    assert_eq!(listed["pages"], serde_json::json!([2, 2, 1]));
    assert_eq!(listed["count"], 5);
    assert_eq!(sim.refused(), 0, "every signature accepted");
}
