//! The watcher end to end: the real client, signer and decoder against the simulator on
//! loopback, which checks every signature as the gateway does. Real waits are kept to
//! milliseconds; assertions do not depend on timing.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::simulator::{Fault, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{
    wait_all, wait_for_task, watch_many, TaskEvent, TaskStatus, TaskType, TaskWatcher, WaitError,
};
use tokio_util::sync::CancellationToken;

fn fast(w: TaskWatcher) -> TaskWatcher {
    w.policy(
        PollPolicy::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(20)),
    )
}

fn modify() -> TaskScript {
    TaskScript::new(TaskType::Modify)
}

#[tokio::test]
async fn wait_for_task_returns_the_successful_task() {
    let sim = simulate(modify().succeed()).await;
    let (instance, task) = ids();
    let done = wait_for_task(&client(&sim.uri()), &instance, &task)
        .await
        .unwrap();
    assert_eq!(done.status, Some(TaskStatus::Success));
    assert_eq!(sim.requests(), 1);
    assert_eq!(polls(&sim), 1, "its signature verified");
}

#[tokio::test]
async fn a_wait_through_progress_retries_and_success() {
    let sim = simulate(
        modify()
            .pending(1)
            .raw(task_json("RUNNING", 20))
            .fault(Fault::ServerError(503))
            .fault(Fault::RateLimited)
            .raw(task_json("RUNNING", 70))
            .succeed(),
    )
    .await;
    let (instance, task) = ids();
    let events: Vec<TaskEvent> = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task))
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
    assert_eq!(sim.requests(), 6);
    assert_eq!(polls(&sim), 6, "every signature verified");
}

#[tokio::test]
async fn a_task_not_yet_visible_is_waited_for() {
    let sim = simulate(
        modify()
            .fault(Fault::NotFound)
            .fault(Fault::NotFound)
            .succeed(),
    )
    .await;
    let (instance, task) = ids();
    let done = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task)).await;
    assert!(done.is_ok());
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn a_bad_signature_ends_the_wait_at_once() {
    let sim = simulate(modify().fault(Fault::BadSignature)).await;
    let (instance, task) = ids();
    let err = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task))
        .await
        .unwrap_err();
    let WaitError::Api { error, last, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(error.kind(), ApiErrorKind::Unauthorized);
    assert!(last.is_none());
    let text = error.to_string();
    assert!(
        text.contains("APIGW.0301") && text.contains(&format!("{:032x}", 1)),
        "{text}"
    );
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn no_request_reaches_the_server_after_the_stream_is_dropped() {
    let sim = simulate(modify().raw(task_json("RUNNING", 10))).await;
    let (instance, task) = ids();
    let mut events = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task)).events();
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::Observed { .. })
    ));
    drop(events);
    // Many times the longest delay: a live watcher would have polled several times by now.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn cancelling_mid_request_ends_the_wait_and_sends_nothing_more() {
    let sim = simulate(
        modify()
            .raw(task_json("RUNNING", 10))
            .fault(Fault::Slow(Duration::from_secs(30)))
            .raw(task_json("RUNNING", 10)),
    )
    .await;
    let (instance, task) = ids();
    let token = CancellationToken::new();
    let watcher =
        fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task)).cancel_token(token.clone());
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
    assert_eq!(sim.requests(), 2);
}

#[tokio::test]
async fn wait_all_shares_one_client_and_keeps_the_order() {
    let sim = simulator().await;
    let instance = INSTANCE.parse().unwrap();
    let task_ids: Vec<_> = (0..5)
        .map(|i| {
            format!("00000000-0000-0000-0000-00000000000{i}")
                .parse()
                .unwrap()
        })
        .collect();
    for (i, id) in task_ids.iter().enumerate() {
        let script = if i == 3 {
            modify().fail("quota")
        } else {
            modify().succeed()
        };
        sim.add_task(&instance, id, script);
    }
    let results = wait_all(&client(&sim.uri()), &instance, task_ids.clone(), 2).await;
    let got: Vec<_> = results.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, task_ids);
    for (i, (_, outcome)) in results.iter().enumerate() {
        assert_eq!(outcome.is_ok(), i != 3, "{outcome:?}");
    }
    assert_eq!(sim.requests(), 5);
}

#[tokio::test]
async fn a_failed_task_is_retried_through_the_signed_post_and_succeeds() {
    let sim = simulate(
        modify()
            .running(1)
            .fail("flavor sold out")
            .running(1)
            .succeed(),
    )
    .await;
    let (instance, task) = ids();
    let events: Vec<TaskEvent> = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task))
        .retry_failed(1)
        .events()
        .collect()
        .await;
    assert_eq!(
        retries_of(&events),
        [(1, Some("flavor sold out".into()), "PENDING".into())]
    );
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if t.status == Some(TaskStatus::Success)),
        "{events:?}"
    );
    assert_eq!(sim.retries(&instance, &task), 1, "its signature verified");
}

#[tokio::test]
async fn waits_sharing_a_task_retry_one_failure_once() {
    let sim = simulate(
        modify()
            .running(1)
            .fail("flavor sold out")
            .running(2)
            .succeed(),
    )
    .await;
    let (instance, task) = ids();
    let client = client(&sim.uri());
    let wait = || {
        fast(TaskWatcher::new(&client, &instance, &task))
            .retry_failed(1)
            .timeout(Duration::from_secs(20))
            .events()
            .collect::<Vec<_>>()
    };
    let (a, b, c) = tokio::join!(wait(), wait(), wait());
    for events in [a, b, c] {
        assert!(
            matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if t.status == Some(TaskStatus::Success)),
            "{events:?}"
        );
        // Each wait saw the failure and its retry, whoever sent it.
        assert_eq!(retries_of(&events).len(), 1, "{events:?}");
        assert_eq!(retries_of(&events)[0].0, 1, "{events:?}");
    }
    assert_eq!(
        sim.retries(&instance, &task),
        1,
        "one failure, one retry; a second would have been refused"
    );
}

#[tokio::test]
async fn waits_sharing_a_task_spend_their_retries_together() {
    // Fails, is retried, fails again: with one retry each, every wait ends with the second
    // failure, and the task was retried once in all.
    let sim = simulate(modify().fail("first").running(1).fail("second")).await;
    let (instance, task) = ids();
    let client = client(&sim.uri());
    let wait = || {
        fast(TaskWatcher::new(&client, &instance, &task))
            .retry_failed(1)
            .timeout(Duration::from_secs(20))
            .wait()
    };
    let (a, b) = tokio::join!(wait(), wait());
    for outcome in [a, b] {
        let err = outcome.unwrap_err();
        assert!(
            matches!(&err, WaitError::Failed { task, .. } if task.status_detail.as_deref() == Some("second")),
            "{err:?}"
        );
    }
    assert_eq!(sim.retries(&instance, &task), 1);
}

/// A wait on a task that fails once, then succeeds after a retry, whose retry's answer is lost;
/// `retries` allowed.
async fn a_lost_retry_answer(restarted: bool, retries: u32) -> (Vec<TaskEvent>, u64) {
    let sim = simulate(modify().fail("flavor sold out").running(1).succeed()).await;
    sim.lose_next_retry_answer(restarted);
    let (instance, task) = ids();
    let events: Vec<TaskEvent> = fast(TaskWatcher::new(&client(&sim.uri()), &instance, &task))
        .request_timeout(Duration::from_millis(200))
        .retry_failed(retries)
        .timeout(Duration::from_secs(10))
        .events()
        .collect()
        .await;
    (events, sim.retries(&instance, &task))
}

#[tokio::test]
async fn a_retry_cut_off_after_the_restart_is_settled_by_a_read() {
    let (events, restarts) = a_lost_retry_answer(true, 1).await;
    assert_eq!(restarts, 1);
    assert!(
        events.iter().any(|e| matches!(e, TaskEvent::Retrying { error, .. } if error.kind() == ApiErrorKind::Timeout)),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if t.status == Some(TaskStatus::Success)),
        "the read found the task running again: {events:?}"
    );
}

#[tokio::test]
async fn a_retry_cut_off_before_it_reached_the_service_is_spent_all_the_same() {
    // One retry allowed: it was sent, so it is spent; the read shows the failure, and the
    // wait ends with it.
    let (events, restarts) = a_lost_retry_answer(false, 1).await;
    assert_eq!(restarts, 0);
    assert!(
        matches!(
            events.last(),
            Some(TaskEvent::Done(Err(WaitError::Failed { .. })))
        ),
        "{events:?}"
    );
    // Two allowed: the second goes out after the read, and restarts the task.
    let (events, restarts) = a_lost_retry_answer(false, 2).await;
    assert_eq!(restarts, 1);
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if t.status == Some(TaskStatus::Success)),
        "{events:?}"
    );
}

#[tokio::test]
async fn any_limit_on_requests_in_flight_is_taken_even_the_largest() {
    let sim = simulate(modify().succeed()).await;
    let (instance, task) = ids();
    let client = client(&sim.uri());
    let all = wait_all(&client, &instance, [task.clone()], usize::MAX).await;
    assert!(all[0].1.is_ok(), "{all:?}");
    let watchers = [(0, fast(TaskWatcher::new(&client, &instance, &task)))];
    let events: Vec<_> = watch_many(watchers, usize::MAX).collect().await;
    assert!(
        matches!(events.last(), Some((0, TaskEvent::Done(Ok(_))))),
        "{events:?}"
    );
}
