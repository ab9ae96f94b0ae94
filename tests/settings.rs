//! Odd settings, each with its one documented behaviour, through the watcher in virtual time.

mod common;

use std::time::Duration;

use common::script::{at, Script, Step};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{TaskWatcher, WaitError};

/// A task that stays RUNNING and answers at once; the script records when it was polled.
fn running() -> Script {
    Script::new([at("RUNNING", 10)])
}

fn gaps(polls: &[f64]) -> Vec<f64> {
    polls
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 1000.0).round() / 1000.0)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn zero_delays_count_as_one_millisecond_not_a_busy_loop() {
    let source = running();
    let err = TaskWatcher::from_source(source.clone())
        .policy(
            PollPolicy::default()
                .with_min_delay(Duration::ZERO)
                .with_max_delay(Duration::ZERO),
        )
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::TimedOut { .. }), "{err:?}");
    let polls = source.poll_secs();
    // One poll a millisecond over one second, and not one more.
    assert!((990..=1002).contains(&polls.len()), "{} polls", polls.len());
    assert!(
        gaps(&polls).iter().all(|g| *g >= 0.001),
        "{:?}",
        &polls[..10]
    );
}

#[tokio::test(start_paused = true)]
async fn a_max_delay_below_the_min_delay_counts_as_the_min_delay() {
    let source = running();
    let _ = TaskWatcher::from_source(source.clone())
        .policy(
            PollPolicy::default()
                .with_min_delay(Duration::from_secs(5))
                .with_max_delay(Duration::from_secs(1))
                .with_jitter(false)
                .with_progress_guided(false),
        )
        .timeout(Duration::from_secs(20))
        .await;
    assert_eq!(source.poll_secs(), [0.0, 5.0, 10.0, 15.0, 20.0]);
}

#[tokio::test(start_paused = true)]
async fn a_zero_request_timeout_counts_as_one_millisecond() {
    // An answer that comes at once still arrives within it.
    let done = Script::new([at("SUCCESS", 100)]);
    let task = TaskWatcher::from_source(done)
        .request_timeout(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(task.progress, Some(100));
    // A slower one times out, and the wait goes on on the backoff, not in a loop.
    let slow = Script::new([Step::Slow(
        Duration::from_millis(5),
        Box::new(at("SUCCESS", 100)),
    )]);
    let err = TaskWatcher::from_source(slow)
        .request_timeout(Duration::ZERO)
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_err();
    match err {
        WaitError::TimedOut {
            polls, last_error, ..
        } => {
            assert!(polls < 12, "{polls} polls in 10 s");
            assert_eq!(
                last_error.unwrap().kind(),
                iotda_task_watcher::client::ApiErrorKind::Timeout
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The gaps between the first polls with `factor`, without jitter or progress guidance.
async fn gaps_with_factor(factor: f32) -> Vec<f64> {
    let source = running();
    let _ = TaskWatcher::from_source(source.clone())
        .policy(
            PollPolicy::default()
                .with_factor(factor)
                .with_jitter(false)
                .with_progress_guided(false),
        )
        .timeout(Duration::from_secs(200))
        .await;
    gaps(&source.poll_secs()[..6])
}

#[tokio::test(start_paused = true)]
async fn odd_factors_have_one_meaning_each() {
    // NaN and anything below 1: a constant delay of min_delay.
    for factor in [f32::NAN, 0.5, -3.0, f32::NEG_INFINITY] {
        assert_eq!(gaps_with_factor(factor).await, [1.0; 5], "factor {factor}");
    }
    // Infinity: min_delay, then max_delay at once.
    assert_eq!(
        gaps_with_factor(f32::INFINITY).await,
        [1.0, 30.0, 30.0, 30.0, 30.0]
    );
    assert_eq!(
        gaps_with_factor(2.0).await,
        [1.0, 2.0, 4.0, 8.0, 16.0],
        "and a sane one"
    );
}
