//! The watcher end to end: the real client, signer and decoder against wiremock on loopback.
//! Real waits are kept to milliseconds; assertions do not depend on timing.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::{wait_all, wait_for_task, TaskEvent, TaskStatus, TaskWatcher, WaitError};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fast(w: TaskWatcher) -> TaskWatcher {
    w.min_delay(Duration::from_millis(5))
        .max_delay(Duration::from_millis(20))
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn wait_for_task_returns_the_successful_task() {
    let server = sequence_server([task_json("SUCCESS", 100)]).await;
    let (instance, task) = ids();
    let done = wait_for_task(&client(&server.uri()), &instance, &task)
        .await
        .unwrap();
    assert_eq!(done.status, Some(TaskStatus::Success));
    assert_eq!(requests(&server).await, 1);
    let req = &server.received_requests().await.unwrap()[0];
    check_wiremock(req, AK, SK).unwrap();
}

#[tokio::test]
async fn a_wait_through_progress_retries_and_success() {
    let server = sequence_server([
        task_json("PENDING", 0),
        task_json("RUNNING", 20),
        ResponseTemplate::new(503).set_body_string("busy"),
        ResponseTemplate::new(403)
            .set_body_string(r#"{"error_code":"IOTDA.021101","error_msg":"rate limit"}"#),
        task_json("RUNNING", 70),
        task_json("SUCCESS", 100),
    ])
    .await;
    let (instance, task) = ids();
    let events: Vec<TaskEvent> = fast(TaskWatcher::new(&client(&server.uri()), &instance, &task))
        .events()
        .collect()
        .await;
    let retries: Vec<ApiErrorKind> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Retrying { error, .. } => Some(error.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [ApiErrorKind::Server, ApiErrorKind::Throttled]);
    let progress: Vec<Option<u8>> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::ProgressChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(progress, [Some(20), Some(70), Some(100)]);
    assert!(matches!(events.last(), Some(TaskEvent::Done(Ok(_)))));
    assert_eq!(requests(&server).await, 6);
    for req in server.received_requests().await.unwrap() {
        check_wiremock(&req, AK, SK).unwrap();
    }
}

#[tokio::test]
async fn a_task_not_yet_visible_is_waited_for() {
    let not_found = || {
        ResponseTemplate::new(404)
            .set_body_string(r#"{"error_code":"IOTDA.000009","error_msg":"task not found"}"#)
    };
    let server = sequence_server([not_found(), not_found(), task_json("SUCCESS", 100)]).await;
    let (instance, task) = ids();
    let done = fast(TaskWatcher::new(&client(&server.uri()), &instance, &task)).await;
    assert!(done.is_ok());
    assert_eq!(requests(&server).await, 3);
}

#[tokio::test]
async fn a_bad_signature_ends_the_wait_at_once() {
    let server = sequence_server([ResponseTemplate::new(401)
        .insert_header("X-Request-Id", "req-401")
        .set_body_string(
            r#"{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information"}"#,
        )])
    .await;
    let (instance, task) = ids();
    let err = fast(TaskWatcher::new(&client(&server.uri()), &instance, &task))
        .await
        .unwrap_err();
    match &err {
        WaitError::Api { error, last, .. } => {
            assert_eq!(error.kind(), ApiErrorKind::Unauthorized);
            assert!(last.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("APIGW.0301") && err.to_string().contains("req-401"),
        "{err}"
    );
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn no_request_reaches_the_server_after_the_stream_is_dropped() {
    let server = sequence_server([task_json("RUNNING", 10)]).await;
    let (instance, task) = ids();
    let mut events = fast(TaskWatcher::new(&client(&server.uri()), &instance, &task)).events();
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::Observed { .. })
    ));
    drop(events);
    // Many times the longest delay: a live watcher would have polled several times by now.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn cancelling_mid_request_ends_the_wait_and_sends_nothing_more() {
    let server = sequence_server([
        task_json("RUNNING", 10),
        task_json("RUNNING", 10).set_delay(Duration::from_secs(30)),
    ])
    .await;
    let (instance, task) = ids();
    let token = CancellationToken::new();
    let watcher = fast(TaskWatcher::new(&client(&server.uri()), &instance, &task))
        .cancel_token(token.clone());
    let mut events = watcher.events();
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::Observed { .. })
    ));
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.cancel();
    });
    // The second poll hangs for 30 s on the server; cancellation ends it long before.
    let rest: Vec<TaskEvent> = events.collect().await;
    canceller.await.unwrap();
    match rest.as_slice() {
        [TaskEvent::Done(Err(WaitError::Cancelled {
            last: Some(task), ..
        }))] => {
            assert_eq!(task.progress, Some(10));
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn wait_all_shares_one_client_and_keeps_the_order() {
    let server = MockServer::start().await;
    let instance = INSTANCE;
    let ids: Vec<String> = (0..5)
        .map(|i| format!("00000000-0000-0000-0000-00000000000{i}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let body = if i == 3 {
            r#"{"status":"FAILED","status_detail":"quota"}"#
        } else {
            r#"{"status":"SUCCESS"}"#
        };
        Mock::given(method("GET"))
            .and(path(format!(
                "/v5/iot/{PROJECT}/iotda-instances/{instance}/tasks/{id}"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
    }
    let task_ids: Vec<_> = ids.iter().map(|s| s.parse().unwrap()).collect();
    let results = wait_all(
        &client(&server.uri()),
        &instance.parse().unwrap(),
        task_ids.clone(),
        2,
    )
    .await;
    let got: Vec<_> = results.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, task_ids);
    for (i, (_, outcome)) in results.iter().enumerate() {
        assert_eq!(outcome.is_ok(), i != 3, "{outcome:?}");
    }
    assert_eq!(requests(&server).await, 5);
}
