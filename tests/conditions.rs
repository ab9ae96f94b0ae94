//! Waiting for a condition, and retrying a FAILED task, over scripted sources in virtual time.

mod common;

use std::time::Duration;

use common::retries_of;
use common::script::*;
use futures::StreamExt;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::watch::{Condition, OutcomeKind, PollPolicy};
use iotda_task_watcher::{InstanceTask, TaskEvent, TaskStatus, TaskWatcher, WaitError};

/// Delays without jitter, so that poll times are exact.
fn exact() -> PollPolicy {
    PollPolicy::default().with_jitter(false)
}

fn watcher(script: &Script) -> TaskWatcher<Script> {
    TaskWatcher::from_source(script.clone())
        .policy(exact())
        .timeout(Duration::from_secs(3600))
}

fn status(task: &InstanceTask) -> &str {
    task.status.as_ref().map_or("", TaskStatus::as_str)
}

#[tokio::test(start_paused = true)]
async fn started_resolves_with_the_first_snapshot_past_pending() {
    let script = Script::new([at("PENDING", 0), at("PENDING", 0), at("RUNNING", 5)]);
    let events: Vec<TaskEvent> = watcher(&script)
        .until(Condition::started())
        .events()
        .collect()
        .await;
    let Some(TaskEvent::Done(Ok(task))) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!((status(task), task.progress), ("RUNNING", Some(5)));
    assert_eq!(script.poll_count(), 3);
    assert_eq!(
        OutcomeKind::of(&Ok(task.clone())),
        OutcomeKind::Met,
        "met, not SUCCESS: the task has not ended"
    );
}

#[tokio::test(start_paused = true)]
async fn an_end_implies_started_and_every_progress_but_failed_implies_neither() {
    for condition in [Condition::started(), Condition::progress_at_least(80)] {
        // SUCCESS at a progress field of 10: the end says it all happened.
        let script = Script::new([at("PENDING", 0), at("SUCCESS", 10)]);
        let task = watcher(&script).until(condition.clone()).await.unwrap();
        assert_eq!(status(&task), "SUCCESS", "{condition}");
        assert_eq!(OutcomeKind::of(&Ok(task)), OutcomeKind::Success);
        // FAILED at 100 %: the wait ends at once, with the failure.
        let script = Script::new([at("PENDING", 0), failed("disk full")]);
        let err = watcher(&script).until(condition.clone()).await.unwrap_err();
        let WaitError::Failed { task, .. } = &err else {
            panic!("{condition}: {err:?}");
        };
        assert_eq!(task.status_detail.as_deref(), Some("disk full"));
        assert_eq!(script.poll_secs(), [0.0, 1.0], "{condition}: at once");
    }
}

#[tokio::test(start_paused = true)]
async fn a_progress_resolves_with_the_first_snapshot_that_reaches_it() {
    let script = Script::new([
        at("RUNNING", 10),
        at("RUNNING", 40),
        at("RUNNING", 55),
        at("RUNNING", 70),
    ]);
    let task = watcher(&script)
        .until(Condition::progress_at_least(50))
        .policy(exact().with_progress_guided(false))
        .await
        .unwrap();
    assert_eq!(task.progress, Some(55));
    assert_eq!(script.poll_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_status_holds_even_when_it_is_failed() {
    let script = Script::new([at("RUNNING", 50), failed("quota exceeded")]);
    let task = watcher(&script)
        .until(Condition::status(TaskStatus::Failed))
        .retry_failed(3)
        .await
        .unwrap();
    assert_eq!(status(&task), "FAILED");
    assert!(
        script.retries().is_empty(),
        "a FAILED the wait is for is not retried"
    );
    assert_eq!(OutcomeKind::of(&Ok(task)), OutcomeKind::Met);
}

#[tokio::test(start_paused = true)]
async fn an_end_in_which_the_condition_cannot_hold_ends_the_wait_at_once_with_the_snapshot() {
    // Waiting for RUNNING, the task goes from PENDING straight to SUCCESS.
    let script = Script::new([at("PENDING", 0), at("PENDING", 0), at("SUCCESS", 100)]);
    let err = watcher(&script)
        .until(Condition::status(TaskStatus::Running))
        .await
        .unwrap_err();
    let WaitError::Unmet {
        task, condition, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(status(task), "SUCCESS");
    assert_eq!(condition.to_string(), "status=RUNNING");
    assert_eq!(err.last().map(status), Some("SUCCESS"));
    assert_eq!(
        err.to_string(),
        "task 075f413d-a3bb-4243-974d-8eb9221c1234 ended SUCCESS without meeting the condition \
         status=RUNNING"
    );
    assert_eq!(OutcomeKind::of(&Err(err)), OutcomeKind::Unmet);
    // Not at the deadline (an hour): the third poll, 3 s in.
    assert_eq!(script.poll_secs(), [0.0, 1.0, 3.0]);
}

#[tokio::test(start_paused = true)]
async fn a_custom_test_and_combinations() {
    let mut detailed = snapshot("RUNNING", Some(30));
    detailed.status_detail = Some("migrating devices".into());
    let script = Script::new([at("RUNNING", 10), Step::Task(detailed)]);
    let task = watcher(&script)
        .until(Condition::custom("says what it does", |t| {
            t.status_detail.is_some()
        }))
        .await
        .unwrap();
    assert_eq!(task.status_detail.as_deref(), Some("migrating devices"));

    // Not PENDING: an unknown status counts, unlike for `started`.
    let script = Script::new([at("PENDING", 0), at("ROLLING_BACK", 0), at("RUNNING", 5)]);
    let task = watcher(&script)
        .until(!Condition::status(TaskStatus::Pending))
        .await
        .unwrap();
    assert_eq!(status(&task), "ROLLING_BACK");
    let script = Script::new([at("PENDING", 0), at("ROLLING_BACK", 0), at("RUNNING", 5)]);
    let task = watcher(&script).until(Condition::started()).await.unwrap();
    assert_eq!(status(&task), "RUNNING");

    // RUNNING and past 50 %; a SUCCESS first means it can no longer hold.
    let both = Condition::status(TaskStatus::Running).and(Condition::progress_at_least(50));
    let script = Script::new([at("RUNNING", 40), at("SUCCESS", 100)]);
    let err = watcher(&script).until(both).await.unwrap_err();
    assert!(matches!(err, WaitError::Unmet { .. }), "{err:?}");

    // Either holds: the first one that does.
    let either = Condition::progress_at_least(90).or(Condition::status(TaskStatus::Failed));
    let script = Script::new([at("RUNNING", 40), failed("x")]);
    let task = watcher(&script).until(either).await.unwrap();
    assert_eq!(status(&task), "FAILED");
}

#[tokio::test(start_paused = true)]
async fn the_default_condition_is_done() {
    let script = Script::new([at("RUNNING", 40), at("SUCCESS", 100)]);
    let task = watcher(&script).await.unwrap();
    assert_eq!(OutcomeKind::of(&Ok(task)), OutcomeKind::Success);
    let script = Script::new([at("RUNNING", 40), failed("x")]);
    let err = watcher(&script).await.unwrap_err();
    assert!(matches!(err, WaitError::Failed { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_is_retried_on_request_and_each_retry_is_an_event() {
    let script = Script::new([
        at("RUNNING", 50),
        failed("flavor sold out"),
        at("RUNNING", 20),
        at("SUCCESS", 100),
    ])
    .on_retry([at("PENDING", 0)]);
    let events: Vec<TaskEvent> = watcher(&script)
        .retry_failed(2)
        .policy(exact().with_progress_guided(false))
        .events()
        .collect()
        .await;
    assert_eq!(
        retries_of(&events),
        [(1, Some("flavor sold out".to_owned()), "PENDING".to_owned())]
    );
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if status(t) == "SUCCESS"),
        "{events:?}"
    );
    // Retried at once after the poll that saw FAILED (1 s); the backoff starts over after it.
    assert_eq!(script.retries(), secs(&[1.0]));
    assert_eq!(script.poll_secs(), [0.0, 1.0, 2.0, 4.0]);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_the_last_failure_ends_the_wait() {
    let script = Script::new([failed("first"), failed("second"), failed("third")]).on_retry([
        at("PENDING", 0),
        at("PENDING", 0),
        at("PENDING", 0),
    ]);
    let err = watcher(&script).retry_failed(2).await.unwrap_err();
    let WaitError::Failed { task, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(task.status_detail.as_deref(), Some("third"));
    assert_eq!(script.retries().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_retry_ends_the_wait_with_its_error_and_the_failure() {
    let script = Script::new([failed("disk full")]).on_retry([error(ApiErrorKind::Forbidden, 403)]);
    let err = watcher(&script).retry_failed(1).await.unwrap_err();
    let WaitError::Api { error, last, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(error.kind(), ApiErrorKind::Forbidden);
    assert_eq!(
        last.as_ref().and_then(|t| t.status_detail.as_deref()),
        Some("disk full")
    );
    assert_eq!(script.poll_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_share_one_deadline() {
    // Fails every time, and is retried every time: the deadline still ends the wait.
    let script = Script::new([failed("flaky")]).on_retry(vec![at("PENDING", 0); 1000]);
    let started = tokio::time::Instant::now();
    let err = watcher(&script)
        .timeout(Duration::from_secs(30))
        .retry_failed(1000)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_secs(30) + Duration::from_millis(50),
        "{waited:?}"
    );
    // It ends on the deadline with the failure its last poll saw, not a timeout that hides it.
    assert!(matches!(&err, WaitError::Failed { .. }), "{err:?}");
    assert!(script.retries().len() >= 10, "{:?}", script.retries());
}

#[tokio::test(start_paused = true)]
async fn a_source_that_cannot_retry_says_so() {
    let source = || async { Ok(snapshot("FAILED", None)) };
    let err = TaskWatcher::from_source(source)
        .retry_failed(1)
        .await
        .unwrap_err();
    let WaitError::Api { error, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(error.kind(), ApiErrorKind::Other);
    assert!(error.to_string().contains("cannot retry"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_resumed_wait_retries_only_as_often_as_is_left() {
    let script = Script::new([failed("first"), at("RUNNING", 10)]).on_retry([at("PENDING", 0)]);
    let mut events = watcher(&script).retry_failed(1).events();
    let mut saved = None;
    while let Some(event) = events.next().await {
        if matches!(event, TaskEvent::Retried { .. }) {
            saved = events.checkpoint();
            break;
        }
    }
    let state = saved.expect("a retry");
    assert_eq!(state.retries(), 1);
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains(r#""retries":1"#), "{json}");
    // Elsewhere, the task fails again: no retries are left.
    let again = Script::new([failed("second")]).on_retry([at("PENDING", 0)]);
    let err = watcher(&again)
        .retry_failed(1)
        .resume_from(serde_json::from_str(&json).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Failed { .. }), "{err:?}");
    assert!(again.retries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_answer_to_a_retry_is_a_snapshot_the_condition_is_tested_on() {
    let script = Script::new([failed("busy")]).on_retry([at("RUNNING", 0)]);
    let events: Vec<TaskEvent> = watcher(&script)
        .until(Condition::started())
        .retry_failed(1)
        .events()
        .collect()
        .await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            TaskEvent::Observed { .. } => "observed",
            TaskEvent::Retried { .. } => "retried",
            TaskEvent::StatusChanged { .. } => "status",
            TaskEvent::ProgressChanged { .. } => "progress",
            TaskEvent::Done(_) => "done",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["observed", "retried", "status", "progress", "done"]);
    let Some(TaskEvent::Done(Ok(task))) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(status(task), "RUNNING");
    assert_eq!(
        script.poll_count(),
        1,
        "resolved by the retry's answer, no poll after it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_retry_goes_again_after_the_servers_wait_and_costs_no_attempt() {
    let throttled = Step::Error(
        iotda_task_watcher::client::ApiError::new(ApiErrorKind::Throttled)
            .with_status(429)
            .with_retry_after(Duration::from_secs(7)),
    );
    let script =
        Script::new([failed("busy"), at("SUCCESS", 100)]).on_retry([throttled, at("PENDING", 0)]);
    let events: Vec<TaskEvent> = watcher(&script).retry_failed(1).events().collect().await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            TaskEvent::Retrying { error, delay, .. }
                if error.kind() == ApiErrorKind::Throttled && *delay == Duration::from_secs(7)
        )),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if status(t) == "SUCCESS"),
        "{events:?}"
    );
    assert_eq!(script.retries(), secs(&[0.0, 7.0]));
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_record_cannot_be_saved_is_not_sent() {
    let script = Script::new([failed("disk full")]).on_retry([at("PENDING", 0)]);
    // The hook saves the first states, then the disk is full.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let states = seen.clone();
    let err = watcher(&script)
        .retry_failed(1)
        .on_state(move |state| {
            let mut states = states.lock().unwrap();
            states.push((state.retries(), state.ended()));
            if state.retries() > 0 {
                return Err(std::io::Error::other("No space left on device"));
            }
            Ok(())
        })
        .await
        .unwrap_err();
    let WaitError::Failed {
        task, not_retried, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(task.status_detail.as_deref(), Some("disk full"));
    let why = not_retried.as_ref().expect("says why it was not retried");
    let cause = std::error::Error::source(why).expect("the hook's error");
    assert_eq!(cause.to_string(), "No space left on device");
    assert!(script.retries().is_empty(), "the retry went out");
    // The count was taken back, and the end handed to the hook as such.
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(0, true)),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_state_that_cannot_be_saved_between_retries_does_not_end_the_wait() {
    let script = Script::new([at("RUNNING", 10), at("SUCCESS", 100)]);
    let task = watcher(&script)
        .on_state(|_| Err(std::io::Error::other("read-only file system")))
        .await
        .unwrap();
    assert_eq!(status(&task), "SUCCESS");
}
