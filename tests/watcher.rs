//! The watcher's rules, over scripted sources in virtual time (`start_paused`): deterministic and
//! instant.

mod common;

use std::time::Duration;

use common::script::*;
use futures::StreamExt;
use iotda_task_watcher::client::{ApiError, ApiErrorKind};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{TaskEvent, TaskStatus, TaskWatcher, WaitError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Delays without jitter, so that poll times are exact.
fn exact() -> PollPolicy {
    PollPolicy::default().with_jitter(false)
}

fn watcher(script: &Script) -> TaskWatcher<Script> {
    TaskWatcher::from_source(script.clone()).policy(exact())
}

async fn collect(w: TaskWatcher<Script>) -> Vec<TaskEvent> {
    w.events().collect().await
}

#[tokio::test(start_paused = true)]
async fn the_first_poll_is_immediate_and_delays_double_up_to_the_cap() {
    let script = Script::new([at("RUNNING", 10)]);
    let err = watcher(&script)
        .timeout(Duration::from_secs(100))
        .wait()
        .await
        .unwrap_err();
    assert_eq!(
        script.polls(),
        secs(&[0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0, 100.0]),
        "1, 2, 4, 8, 16, 30, 30 s, then the last sleep is clamped to land on the deadline"
    );
    match err {
        WaitError::TimedOut {
            last,
            elapsed,
            polls,
            last_error,
            ..
        } => {
            assert_eq!(last.unwrap().status, Some(TaskStatus::Running));
            assert_eq!(elapsed, Duration::from_secs(100));
            assert_eq!(polls, 9);
            assert!(last_error.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_fixed_seed_gives_the_same_jittered_delays_every_run() {
    let run = |seed| async move {
        let script = Script::new([at("RUNNING", 10)]);
        let _ = TaskWatcher::from_source(script.clone())
            .policy(PollPolicy::default().with_jitter_seed(seed))
            .timeout(Duration::from_secs(300))
            .wait()
            .await;
        script.delays()
    };
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert_ne!(a, run(43).await);
    let steps = secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0]);
    for (d, step) in a.iter().zip(&steps) {
        assert!(
            *d >= *step && *d <= (*step * 2).min(Duration::from_secs(30)),
            "{d:?} from step {step:?}"
        );
    }
    assert_ne!(a[..5], steps[..5], "jitter is on by default");
}

#[tokio::test(start_paused = true)]
async fn custom_delays_and_factor() {
    let script = Script::new([at("RUNNING", 10)]);
    let _ = watcher(&script)
        .policy(
            exact()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(5))
                .with_factor(3.0),
        )
        .timeout(Duration::from_secs(20))
        .wait()
        .await;
    assert_eq!(script.delays(), secs(&[0.5, 1.5, 4.5, 5.0, 5.0, 3.5]));
}

#[tokio::test(start_paused = true)]
async fn a_status_change_keeps_the_pace() {
    let script = Script::new([
        at("PENDING", 0),
        at("PENDING", 0),
        at("PENDING", 0),
        at("PENDING", 0),
        at("RUNNING", 5),
        at("RUNNING", 5),
        at("RUNNING", 5),
        at("SUCCESS", 100),
    ]);
    let task = watcher(&script).wait().await.unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
    // Leaving PENDING says nothing about when the task ends: the backoff goes on.
    assert_eq!(
        script.delays(),
        secs(&[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])
    );
}

#[tokio::test(start_paused = true)]
async fn a_longer_retry_after_wins_and_a_shorter_one_does_not() {
    let throttled = |wait: f64| {
        Step::Error(
            ApiError::new(ApiErrorKind::Throttled)
                .with_status(429)
                .with_retry_after(Duration::from_secs_f64(wait)),
        )
    };
    let script = Script::new([
        at("RUNNING", 1),
        throttled(20.0),
        throttled(0.5),
        at("RUNNING", 1),
        at("SUCCESS", 100),
    ]);
    let events = collect(watcher(&script)).await;
    // The second failure in a row waits 2 s, and the schedule's backoff goes on at its own
    // second step: failed polls do not move it.
    assert_eq!(script.delays(), secs(&[1.0, 20.0, 2.0, 2.0]));
    let retries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::Retrying {
                attempt,
                delay,
                error,
                ..
            } => Some((*attempt, *delay, error.kind())),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        [
            (1, Duration::from_secs(20), ApiErrorKind::Throttled),
            (2, Duration::from_secs(2), ApiErrorKind::Throttled)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_is_clamped_to_it() {
    let script = Script::new([Step::Error(
        ApiError::new(ApiErrorKind::Throttled).with_retry_after(Duration::from_secs(3600)),
    )]);
    let err = watcher(&script)
        .timeout(Duration::from_secs(30))
        .wait()
        .await
        .unwrap_err();
    assert_eq!(script.polls(), secs(&[0.0, 30.0]));
    match err {
        WaitError::TimedOut {
            last,
            polls,
            last_error,
            ..
        } => {
            assert!(last.is_none());
            assert_eq!(polls, 2);
            assert_eq!(last_error.unwrap().kind(), ApiErrorKind::Throttled);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_at_the_deadline_is_bounded_by_the_request_timeout() {
    let script = Script::new([Step::Hang]);
    let started = Instant::now();
    let err = watcher(&script)
        .timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(3))
        .wait()
        .await
        .unwrap_err();
    // Polls at 0 (times out at 3), 4 (times out at 7), 9 (in flight at the deadline, 10, and
    // cut at 12 by the request timeout): the wait ends within deadline + request timeout.
    assert_eq!(script.polls(), secs(&[0.0, 4.0, 9.0]));
    assert_eq!(started.elapsed(), Duration::from_secs(12));
    match err {
        WaitError::TimedOut {
            elapsed,
            last_error,
            ..
        } => {
            assert_eq!(elapsed, Duration::from_secs(12));
            assert_eq!(last_error.unwrap().kind(), ApiErrorKind::Timeout);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_passed_still_gets_one_poll() {
    // The task may be done by now: one poll says so.
    let done = Script::new([at("SUCCESS", 100)]);
    let passed = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
    let task = watcher(&done)
        .deadline_instant(passed.into_std())
        .wait()
        .await
        .unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
    assert_eq!(done.polls(), secs(&[0.0]));

    // Otherwise the wait times out after that one poll, and says why.
    let running = Script::new([at("RUNNING", 10)]);
    let err = watcher(&running)
        .timeout(Duration::ZERO)
        .wait()
        .await
        .unwrap_err();
    assert_eq!(running.polls(), secs(&[0.0]));
    match &err {
        WaitError::TimedOut {
            polls,
            late_start,
            last,
            ..
        } => {
            assert_eq!((*polls, *late_start), (1, true));
            assert_eq!(last.as_ref().unwrap().progress, Some(10));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "timed out at once: the deadline had already passed when the wait started (1 poll); \
         last seen RUNNING at 10%"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_does_not_add_a_poll_after_the_deadline() {
    let script = Script::new([Step::Slow(
        Duration::from_secs(2),
        Box::new(at("RUNNING", 1)),
    )]);
    let _ = watcher(&script)
        .timeout(Duration::from_secs(5))
        .wait()
        .await;
    // Poll at 0 answers at 2, poll at 3 answers at 5 = the deadline: no more.
    assert_eq!(script.polls(), secs(&[0.0, 3.0]));
}

#[tokio::test(start_paused = true)]
async fn a_new_task_may_be_missing_for_its_first_polls() {
    let not_found = || error(ApiErrorKind::NotFound, 404);
    let script = Script::new([not_found(), not_found(), not_found(), at("SUCCESS", 100)]);
    assert!(watcher(&script).wait().await.is_ok());
    assert_eq!(script.poll_count(), 4);

    let script = Script::new([
        not_found(),
        not_found(),
        not_found(),
        not_found(),
        at("SUCCESS", 100),
    ]);
    match watcher(&script).wait().await.unwrap_err() {
        WaitError::Api { error, last, .. } => {
            assert_eq!(error.kind(), ApiErrorKind::NotFound);
            assert!(last.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script.poll_count(), 4);

    let script = Script::new([not_found(), at("SUCCESS", 100)]);
    assert!(watcher(&script)
        .not_found_tolerance(0)
        .wait()
        .await
        .is_err());
    assert_eq!(script.poll_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn once_seen_a_404_is_permanent_and_keeps_the_last_state() {
    let script = Script::new([
        at("RUNNING", 40),
        error(ApiErrorKind::NotFound, 404),
        at("SUCCESS", 100),
    ]);
    match watcher(&script).wait().await.unwrap_err() {
        WaitError::Api { error, last, .. } => {
            assert_eq!(error.kind(), ApiErrorKind::NotFound);
            assert_eq!(last.unwrap().progress, Some(40));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script.poll_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn events_come_once_each_in_order_and_end_with_done() {
    let script = Script::new([
        at("PENDING", 0),
        at("PENDING", 0),
        at("RUNNING", 10),
        at("RUNNING", 10),
        error(ApiErrorKind::Server, 503),
        at("RUNNING", 60),
        at("SUCCESS", 100),
    ]);
    let events = collect(watcher(&script)).await;
    let shown: Vec<String> = events
        .iter()
        .map(|e| match e {
            TaskEvent::Observed { task, .. } => format!("observed {}", task.status_or_unknown()),
            TaskEvent::StatusChanged { from, to, .. } => format!("status {from}->{to}"),
            TaskEvent::ProgressChanged { from, to, .. } => format!("progress {from:?}->{to:?}"),
            TaskEvent::Retrying { attempt, .. } => format!("retrying {attempt}"),
            TaskEvent::Done(outcome) => format!("done {}", outcome.is_ok()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "observed PENDING",
            "status PENDING->RUNNING",
            "progress Some(0)->Some(10)",
            "retrying 1",
            "progress Some(10)->Some(60)",
            "status RUNNING->SUCCESS",
            "progress Some(60)->Some(100)",
            "done true",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn emit_then_sleep() {
    let script = Script::new([at("RUNNING", 10), at("SUCCESS", 100)]);
    let started = Instant::now();
    let mut events = watcher(&script)
        .policy(exact().with_min_delay(Duration::from_secs(7)))
        .events();
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::Observed { .. })
    ));
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the first answer is emitted at once"
    );
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::StatusChanged { .. })
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    let rest: Vec<_> = events.collect().await;
    assert!(matches!(
        rest.as_slice(),
        [TaskEvent::ProgressChanged { .. }, TaskEvent::Done(Ok(_))]
    ));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(7),
        "no sleep after the final event"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_statuses_keep_the_wait_going_and_show_in_events() {
    let script = Script::new([
        at("RUNNING", 10),
        at("ROLLING_BACK", 10),
        at("ROLLING_BACK", 20),
        at("FAILED", 100),
    ]);
    let events = collect(watcher(&script)).await;
    assert!(events.iter().any(|e| matches!(e,
        TaskEvent::StatusChanged { to: TaskStatus::Unknown(s), .. } if s == "ROLLING_BACK")));
    assert_eq!(script.poll_count(), 4);
    assert!(matches!(
        events.last(),
        Some(TaskEvent::Done(Err(WaitError::Failed { .. })))
    ));
}

#[tokio::test(start_paused = true)]
async fn failed_carries_the_task_and_says_why() {
    let script = Script::new([
        at("RUNNING", 10),
        failed("insufficient quota for iotda.standard.s2"),
    ]);
    let err = watcher(&script).wait().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "task 075f413d-a3bb-4243-974d-8eb9221c1234 FAILED: insufficient quota for iotda.standard.s2"
    );
    assert_eq!(err.last().unwrap().status, Some(TaskStatus::Failed));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_ends_the_wait_with_the_last_state_and_what_to_act_on() {
    let script = Script::new([
        at("RUNNING", 30),
        Step::Error(
            ApiError::new(ApiErrorKind::Forbidden)
                .with_status(403)
                .with_error("IOTDA.000001", "Forbidden")
                .with_request_id("req-77"),
        ),
    ]);
    let err = watcher(&script).wait().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the wait ended on an error that retrying cannot fix; last seen RUNNING at 30%"
    );
    let cause = std::error::Error::source(&err).expect("the service's error is the source");
    assert_eq!(
        cause.to_string(),
        "forbidden (HTTP 403): IOTDA.000001: Forbidden [request id req-77]"
    );
    assert_eq!(err.last().unwrap().progress_percent(), Some(30));
    assert_eq!(script.poll_count(), 2);
}

/// A token that a spawned task cancels after `delay`.
fn cancelled_after(delay: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        t.cancel();
    });
    token
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_sleep_is_prompt() {
    let script = Script::new([at("RUNNING", 10)]);
    let token = cancelled_after(Duration::from_millis(5_500));
    let started = Instant::now();
    let err = watcher(&script)
        .cancel_token(token)
        .wait()
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(5_500));
    assert_eq!(script.polls(), secs(&[0.0, 1.0, 3.0]));
    match err {
        WaitError::Cancelled { last, .. } => assert_eq!(last.unwrap().progress, Some(10)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_request_is_prompt() {
    let script = Script::new([at("RUNNING", 10), Step::Hang]);
    let token = cancelled_after(Duration::from_millis(1_200));
    let started = Instant::now();
    let err = watcher(&script)
        .cancel_token(token)
        .wait()
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(1_200));
    assert_eq!(script.poll_count(), 2);
    assert!(matches!(err, WaitError::Cancelled { last: Some(_), .. }));
    assert_eq!(err.to_string(), "cancelled; last seen RUNNING at 10%");
}

#[tokio::test(start_paused = true)]
async fn a_token_cancelled_before_the_start_sends_nothing() {
    let script = Script::new([at("RUNNING", 10)]);
    let token = CancellationToken::new();
    token.cancel();
    let err = watcher(&script)
        .cancel_token(token)
        .wait()
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Cancelled { last: None, .. }));
    assert_eq!(script.poll_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_or_the_future_stops_polling() {
    let script = Script::new([at("RUNNING", 10)]);
    let mut events = watcher(&script).events();
    events.next().await.unwrap();
    drop(events);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(script.poll_count(), 1);

    let script = Script::new([at("RUNNING", 10)]);
    let wait = watcher(&script).wait();
    let _ = tokio::time::timeout(Duration::from_millis(3_500), wait).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(script.polls(), secs(&[0.0, 1.0, 3.0]));
}

#[tokio::test(start_paused = true)]
async fn a_watcher_is_a_future() {
    let script = Script::new([at("RUNNING", 10), at("SUCCESS", 100)]);
    let task = watcher(&script).await.unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
}

#[tokio::test(start_paused = true)]
async fn the_default_deadline_is_sixty_minutes() {
    let script = Script::new([at("RUNNING", 10)]);
    let started = Instant::now();
    let err = watcher(&script).wait().await.unwrap_err();
    assert!(matches!(err, WaitError::TimedOut { .. }));
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
    assert_eq!(*script.polls().last().unwrap(), Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn an_absolute_deadline() {
    let script = Script::new([at("RUNNING", 10)]);
    let deadline = Instant::now() + Duration::from_secs(45);
    let _ = watcher(&script)
        .deadline_instant(deadline.into_std())
        .wait()
        .await;
    assert_eq!(*script.polls().last().unwrap(), Duration::from_secs(45));
}

#[tokio::test(start_paused = true)]
async fn watch_many_tags_events_and_limits_requests_in_flight() {
    let scripts: Vec<Script> = (0..6)
        .map(|i| {
            Script::new([
                Step::Slow(Duration::from_secs(1), Box::new(at("RUNNING", 10))),
                Step::Slow(
                    Duration::from_secs(1),
                    Box::new(if i % 2 == 0 {
                        at("SUCCESS", 100)
                    } else {
                        failed("no")
                    }),
                ),
            ])
        })
        .collect();
    let watchers = scripts.iter().enumerate().map(|(i, s)| (i, watcher(s)));
    let events: Vec<(usize, TaskEvent)> =
        iotda_task_watcher::watch_many(watchers, 2).collect().await;
    for (i, script) in scripts.iter().enumerate() {
        let done: Vec<_> = events
            .iter()
            .filter(|(k, e)| *k == i && e.outcome().is_some())
            .collect();
        assert_eq!(done.len(), 1, "one final event for task {i}");
        assert_eq!(done[0].1.outcome().unwrap().is_ok(), i % 2 == 0);
        assert_eq!(script.poll_count(), 2);
        assert!(script.max_in_flight() <= 1);
    }
    let in_flight_now = |t: Duration| {
        scripts
            .iter()
            .flat_map(|s| s.polls())
            .filter(|p| *p <= t && t < *p + Duration::from_secs(1))
            .count()
    };
    for tenth in 0..200 {
        let t = Duration::from_millis(tenth * 100);
        assert!(in_flight_now(t) <= 2, "at most 2 polls in flight at {t:?}");
    }
}
