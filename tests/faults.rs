//! The fault matrix: each fault a real loopback server can produce, through the real client and
//! the watcher. For each: the documented behaviour (retry, or which error), no panic, and the
//! last state kept. The `watch` module's docs list the same rows ("Faults, and what a wait
//! does").

mod common;

use std::future::IntoFuture;
use std::time::{Duration, SystemTime};

use common::raw::{self, Act};
use common::*;
use futures::StreamExt;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::simulator::{Fault, RawAnswer, Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{TaskEvent, TaskStatus, TaskType, TaskWatcher, WaitError};
use tokio_util::sync::CancellationToken;

const RUNNING_40: &str =
    r#"{"task_id":"075f413d-a3bb-4243-974d-8eb9221c1234","status":"RUNNING","progress":40}"#;

fn running() -> RawAnswer {
    RawAnswer::json(RUNNING_40)
}

fn error(status: u16, code: &str) -> RawAnswer {
    RawAnswer::new(status)
        .body(format!(
            r#"{{"error_code":"{code}","error_msg":"simulated"}}"#
        ))
        .header("X-Request-Id", "req-fault")
}

/// A script that starts RUNNING at 40%.
fn started() -> TaskScript {
    TaskScript::new(TaskType::Modify).raw(running())
}

fn fast(endpoint: &str) -> TaskWatcher {
    let (instance, task) = ids();
    TaskWatcher::new(&client(endpoint), &instance, &task)
        .policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(20)),
        )
        .request_timeout(Duration::from_millis(300))
}

/// Runs a wait to its end.
async fn events(watcher: TaskWatcher) -> Vec<TaskEvent> {
    tokio::time::timeout(Duration::from_secs(30), watcher.events().collect())
        .await
        .expect("the wait ends")
}

fn retries(events: &[TaskEvent]) -> Vec<ApiErrorKind> {
    events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Retrying { error, .. } => Some(error.kind()),
            _ => None,
        })
        .collect()
}

/// A transient fault between a RUNNING answer and SUCCESS: one retry of `kind`, then success.
async fn transient(fault: RawAnswer, kind: ApiErrorKind) {
    retried_once(started().raw(fault).succeed(), kind).await;
}

/// A wait through `script` retries once, for `kind`, and succeeds.
async fn retried_once(script: TaskScript, kind: ApiErrorKind) {
    let sim = simulate(script).await;
    let events = events(fast(&sim.uri())).await;
    assert_eq!(retries(&events), [kind]);
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(_)))),
        "{events:?}"
    );
}

/// A permanent fault after a RUNNING answer: the wait ends with it and the RUNNING snapshot.
async fn permanent(fault: RawAnswer, kind: ApiErrorKind) {
    let sim = simulate(started().raw(fault).succeed()).await;
    let events = events(fast(&sim.uri())).await;
    match events.last() {
        Some(TaskEvent::Done(Err(WaitError::Api { error, last, .. }))) => {
            assert_eq!(error.kind(), kind);
            assert_eq!(error.request_id(), Some("req-fault"));
            assert_eq!(
                last.as_ref().unwrap().progress,
                Some(40),
                "the last state is kept"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.requests(), 2, "no retry");
}

/// Waits for the first `Retrying`, returns it, and cancels: the wait ends with the last state.
async fn first_retry(watcher: TaskWatcher) -> (ApiErrorKind, Duration) {
    let token = CancellationToken::new();
    let mut events = watcher.cancel_token(token.clone()).events();
    let mut retry = None;
    while let Some(event) = events.next().await {
        match event {
            TaskEvent::Retrying { error, delay, .. } if retry.is_none() => {
                retry = Some((error.kind(), delay));
                token.cancel();
            }
            TaskEvent::Done(Err(WaitError::Cancelled { last, .. })) => {
                assert_eq!(last.unwrap().progress, Some(40), "the last state is kept");
            }
            TaskEvent::Done(other) => panic!("{other:?}"),
            _ => {}
        }
    }
    retry.expect("a retry")
}

#[tokio::test]
async fn server_errors_are_retried() {
    for status in [500, 502, 503, 504] {
        transient(
            RawAnswer::new(status).body("<html>busy</html>"),
            ApiErrorKind::Server,
        )
        .await;
    }
}

#[tokio::test]
async fn throttling_is_retried_after_the_wait_asked_for() {
    transient(error(403, "IOTDA.021101"), ApiErrorKind::Throttled).await;
    transient(error(429, "APIGW.0308"), ApiErrorKind::Throttled).await;

    let seconds =
        simulate(started().raw(error(429, "APIGW.0308").header("Retry-After", "7"))).await;
    let (kind, delay) = first_retry(fast(&seconds.uri())).await;
    assert_eq!(
        (kind, delay),
        (ApiErrorKind::Throttled, Duration::from_secs(7))
    );

    // An HTTP date, read against the answer's own Date: the clocks need not agree.
    let date = SystemTime::now() - Duration::from_secs(86_400);
    let dated = simulate(
        started().raw(
            error(429, "APIGW.0308")
                .header("Date", &httpdate::fmt_http_date(date))
                .header(
                    "Retry-After",
                    &httpdate::fmt_http_date(date + Duration::from_secs(9)),
                ),
        ),
    )
    .await;
    let (kind, delay) = first_retry(fast(&dated.uri())).await;
    assert_eq!(
        (kind, delay),
        (ApiErrorKind::Throttled, Duration::from_secs(9))
    );
}

#[tokio::test]
async fn refused_credentials_and_permissions_end_the_wait() {
    permanent(error(401, "APIGW.0301"), ApiErrorKind::Unauthorized).await;
    permanent(error(403, "IOTDA.000001"), ApiErrorKind::Forbidden).await;
    permanent(error(400, "IOTDA.000006"), ApiErrorKind::BadRequest).await;
}

#[tokio::test]
async fn a_404_is_tolerated_before_the_task_is_seen_and_final_after() {
    let sim = simulate(
        TaskScript::new(TaskType::Modify)
            .raw(error(404, "IOTDA.014000"))
            .raw(running())
            .succeed(),
    )
    .await;
    let events = events(fast(&sim.uri())).await;
    assert_eq!(retries(&events), [ApiErrorKind::NotFound]);
    assert!(matches!(events.last(), Some(TaskEvent::Done(Ok(_)))));
    permanent(error(404, "IOTDA.014000"), ApiErrorKind::NotFound).await;
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let addr = raw::serve(vec![Act::Json(RUNNING_40.into()), Act::Refuse]).await;
    let (kind, _) = first_retry(fast(&format!("http://{addr}"))).await;
    assert_eq!(kind, ApiErrorKind::Network);
}

/// The wait's end, and how many connections the endpoint saw.
async fn unreachable(endpoint: &str) -> WaitError {
    let watcher = fast(endpoint).timeout(Duration::from_secs(20));
    let events = events(watcher).await;
    assert_eq!(
        retries(&events),
        [ApiErrorKind::Network; 3],
        "tolerated like a 404 before the first answer"
    );
    match events.last() {
        Some(TaskEvent::Done(Err(error))) => error.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_endpoint_that_never_answers_ends_the_wait_with_the_likely_cause() {
    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let error = unreachable(&format!("http://{addr}")).await;
    let WaitError::Api {
        error: api, last, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(api.kind(), ApiErrorKind::Network);
    assert!(last.is_none());
    // The wait's message says how it ended; its source, the poll's error, says why.
    assert_eq!(
        error.to_string(),
        "the wait ended on an error that retrying cannot fix; the task was never seen"
    );
    let text = api.to_string();
    assert!(
        text.contains(&format!("cannot reach http://{addr}")),
        "{text}"
    );
    assert!(text.contains("nothing accepts connections"), "{text}");

    // https to a plain-HTTP server: the TLS handshake reads an HTTP answer.
    let sim = simulate(started().succeed()).await;
    let https = sim.uri().replace("http://", "https://");
    let text = match unreachable(&https).await {
        WaitError::Api { error, .. } => error.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(text.contains(&format!("cannot reach {https}")), "{text}");
    assert!(text.contains("does not speak TLS"), "{text}");
    assert_eq!(sim.polls(&ids().0, &ids().1), 0);
}

#[tokio::test]
async fn once_the_service_has_answered_network_failures_are_retried_to_the_deadline() {
    let addr = raw::serve(vec![Act::Json(RUNNING_40.into()), Act::Refuse]).await;
    let error = fast(&format!("http://{addr}"))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let WaitError::TimedOut { polls, last, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(*polls > 5, "{polls} polls");
    assert_eq!(last.as_ref().unwrap().progress, Some(40));
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_retried() {
    let addr = raw::serve(vec![
        Act::Json(RUNNING_40.into()),
        Act::ResetMidBody,
        Act::Json(r#"{"status":"SUCCESS","progress":100}"#.into()),
    ])
    .await;
    let events = events(fast(&format!("http://{addr}"))).await;
    assert_eq!(retries(&events), [ApiErrorKind::Network]);
    assert!(matches!(events.last(), Some(TaskEvent::Done(Ok(_)))));
}

#[tokio::test]
async fn a_server_slower_than_the_request_timeout_is_retried() {
    retried_once(
        started()
            .fault(Fault::Slow(Duration::from_secs(5)))
            .raw(running())
            .succeed(),
        ApiErrorKind::Timeout,
    )
    .await;
}

#[tokio::test]
async fn unreadable_bodies_are_retried_and_a_huge_one_is_not_read_in_full() {
    for body in [
        RUNNING_40[..25].to_owned(),
        "{\"status\": RUNNING}".to_owned(),
        String::new(),
        format!(
            r#"{{"status":"RUNNING","status_detail":"{}"}}"#,
            "x".repeat(4 * 1024 * 1024)
        ),
    ] {
        transient(RawAnswer::new(200).body(body), ApiErrorKind::Decode).await;
    }
}

#[tokio::test]
async fn odd_but_readable_answers_keep_the_wait_going() {
    let sim = simulate(
        started()
            .raw(task_json("ROLLING_BACK", 40))
            .raw(task_json("RUNNING", -1))
            .raw(task_json("RUNNING", 250))
            .raw(task_json("PENDING", 10))
            .raw(RawAnswer::json("{}"))
            .raw(RawAnswer::json(
                r#"{"status":"SUCCESS","type":"TELEPORT","target_config":{"charge_mode":"barter"}}"#,
            )),
    )
    .await;
    let events = events(fast(&sim.uri())).await;
    let changes: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::StatusChanged { from, to, .. } => Some(format!("{from}->{to}")),
            TaskEvent::ProgressChanged { from, to, .. } => Some(format!("{from:?}->{to:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            "RUNNING->ROLLING_BACK",
            "ROLLING_BACK->RUNNING",
            "Some(40)->None",
            "RUNNING->PENDING",
            "None->Some(10)",
            "PENDING->",
            "Some(10)->None",
            "->SUCCESS",
        ]
    );
    match events.last() {
        Some(TaskEvent::Done(Ok(task))) => {
            assert_eq!(task.task_type.as_ref().unwrap().as_str(), "TELEPORT");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_signature_refused_for_a_far_clock_is_retried_at_the_server_time() {
    let sim = Simulator::start().await;
    let (instance, task) = ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap());
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).running(2).succeed(),
    );
    // The server's clock is two hours ahead: our X-Sdk-Date looks stale to it.
    sim.set_clock_offset(7_200);
    let watcher = TaskWatcher::new(&sim.client(), &instance, &task).policy(
        PollPolicy::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(20)),
    );
    let events = events(watcher).await;
    assert_eq!(retries(&events), [ApiErrorKind::ClockSkew]);
    match events.last() {
        Some(TaskEvent::Done(Ok(task))) => assert_eq!(task.status, Some(TaskStatus::Success)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refused_signature_with_agreeing_clocks_is_not_retried() {
    let sim = Simulator::start().await;
    let (instance, task) = ("a1b2c3d4".parse().unwrap(), "075f413d".parse().unwrap());
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let client = sim
        .client_builder()
        .credentials(iotda_task_watcher::Credentials::aksk(
            iotda_task_watcher::simulator::DEFAULT_AK,
            "wrong",
        ))
        .build()
        .unwrap();
    let err = TaskWatcher::new(&client, &instance, &task)
        .await
        .unwrap_err();
    match err {
        WaitError::Api { error, .. } => assert_eq!(error.kind(), ApiErrorKind::Unauthorized),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn every_request_signed_before_the_clock_correction_learns_it() {
    let sim = Simulator::start().await;
    sim.set_clock_offset(3_600);
    let client = sim.client();
    let instance: iotda_task_watcher::InstanceId = "a1b2c3d4".parse().unwrap();
    let mut waits = Vec::new();
    for i in 0..4 {
        let task: iotda_task_watcher::TaskId = format!("0000000{i}").parse().unwrap();
        sim.add_task(
            &instance,
            &task,
            TaskScript::new(TaskType::Modify).succeed(),
        );
        let watcher = TaskWatcher::new(&client, &instance, &task).policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(20)),
        );
        waits.push(tokio::spawn(watcher.into_future()));
    }
    for wait in waits {
        let outcome = wait.await.unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

/// The errors from `error` down its `source()` chain.
fn chain<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Vec<&'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source()).collect()
}

/// The messages of `error` and its sources, as an error reporter prints them.
fn messages(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    chain(error).iter().map(ToString::to_string).collect()
}

/// Asserts that no message of the chain repeats another's text: each says something new.
fn each_said_once(messages: &[String]) {
    for (i, outer) in messages.iter().enumerate() {
        for inner in &messages[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats its source {inner:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_failure_keeps_its_cause_and_says_each_part_once() {
    // A refused connection: the wait times out; the chain is the wait, then the last poll's
    // error, which keeps reqwest's error as its cause.
    let addr = raw::serve(vec![Act::Json(RUNNING_40.into()), Act::Refuse]).await;
    let refused = fast(&format!("http://{addr}"))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(refused, WaitError::TimedOut { .. }), "{refused:?}");
    let links = chain(&refused);
    assert_eq!(links.len(), 2, "{links:?}");
    let api = links[1]
        .downcast_ref::<iotda_task_watcher::client::ApiError>()
        .expect("the ApiError is the wait's source");
    assert!(
        api.cause()
            .is_some_and(|cause| cause.downcast_ref::<reqwest::Error>().is_some()),
        "{api:?}"
    );
    let said = messages(&refused);
    each_said_once(&said);
    assert!(said[0].starts_with("timed out after"), "{said:?}");
    assert!(said[1].contains("cannot reach"), "{said:?}");
    // Printed as `anyhow`'s `{:#}` prints it, every part appears, and once.
    let reported = said.join(": ");
    assert_eq!(reported.matches("cannot reach").count(), 1, "{reported}");

    // A body that is not a task: the cause is serde_json's error, and the error's own line
    // says what it says.
    let sim = simulate(started().raw(RawAnswer::new(200).body("{\"status\": RUNNING}"))).await;
    let unreadable = fast(&sim.uri())
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let said = messages(&unreadable);
    each_said_once(&said);
    assert!(said[1].contains("did not decode"), "{said:?}");
    let WaitError::TimedOut {
        last_error: Some(api),
        ..
    } = &unreadable
    else {
        panic!("{unreadable:?}");
    };
    assert!(
        api.cause()
            .is_some_and(|cause| cause.downcast_ref::<serde_json::Error>().is_some()),
        "{api:?}"
    );

    // A permanent error is the source of `WaitError::Api`.
    let sim = simulate(TaskScript::new(TaskType::Modify).raw(error(403, "IOTDA.000005"))).await;
    let forbidden = fast(&sim.uri()).await.unwrap_err();
    let api = std::error::Error::source(&forbidden)
        .and_then(|e| e.downcast_ref::<iotda_task_watcher::client::ApiError>())
        .expect("the ApiError is the source");
    assert_eq!(api.kind(), ApiErrorKind::Forbidden);
    let said = messages(&forbidden);
    each_said_once(&said);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[1].contains("IOTDA.000005"), "{said:?}");
}
