//! Properties of every wait over random answer sequences, in virtual time.

mod common;

use std::time::Duration;

use common::script::*;
use futures::StreamExt;
use iotda_task_watcher::client::{ApiError, ApiErrorKind};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{TaskEvent, TaskWatcher};
use proptest::prelude::*;

fn step() -> impl Strategy<Value = Step> {
    let status = prop::sample::select(vec![
        "PENDING",
        "RUNNING",
        "RUNNING",
        "RUNNING",
        "SUCCESS",
        "FAILED",
        "ROLLING_BACK",
    ]);
    let answer = prop_oneof![
        6 => (status, -5i64..120).prop_map(|(s, p)| at(s, p)),
        1 => (prop::sample::select(vec![
                (ApiErrorKind::Server, 503u16),
                (ApiErrorKind::Throttled, 429),
                (ApiErrorKind::Network, 0),
                (ApiErrorKind::Decode, 200),
                (ApiErrorKind::NotFound, 404),
                (ApiErrorKind::Forbidden, 403),
            ]), prop::option::of(0u64..200))
            .prop_map(|((kind, status), wait)| {
                let mut e = ApiError::new(kind).with_status(status);
                if let Some(w) = wait {
                    e = e.with_retry_after(Duration::from_secs(w));
                }
                Step::Error(e)
            }),
    ];
    prop_oneof![
        8 => answer.clone(),
        2 => (1u64..20_000, answer).prop_map(|(ms, a)| Step::Slow(Duration::from_millis(ms), Box::new(a))),
        1 => Just(Step::Hang),
    ]
}

fn watcher(script: &Script, timeout: u64, seed: u64) -> TaskWatcher<Script> {
    TaskWatcher::from_source(script.clone())
        .timeout(Duration::from_secs(timeout))
        .request_timeout(Duration::from_secs(10))
        .policy(PollPolicy::default().with_jitter_seed(seed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_wait_ends_once_and_keeps_its_promises(
        steps in prop::collection::vec(step(), 1..40),
        timeout in 1u64..900,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let script = Script::new(steps.clone());
            let events: Vec<TaskEvent> = watcher(&script, timeout, seed).events().collect().await;
            let polls = script.polls();
            // Nothing more is sent, however long we wait.
            tokio::time::sleep(Duration::from_secs(86_400)).await;
            prop_assert_eq!(script.poll_count(), polls.len(), "no poll after the final event");

            let finals = events.iter().filter(|e| e.outcome().is_some()).count();
            prop_assert_eq!(finals, 1, "exactly one final event");
            prop_assert!(events.last().unwrap().outcome().is_some(), "the final event is last");
            for p in &polls {
                prop_assert!(*p <= Duration::from_secs(timeout), "poll at {:?} after the deadline {}s", p, timeout);
            }

            // Progress events only on change, and consistent with the snapshots before them.
            let mut progress: Option<Option<u8>> = None;
            for e in &events {
                match e {
                    TaskEvent::Observed { task, .. } => progress = Some(task.progress_percent()),
                    TaskEvent::ProgressChanged { from, to, .. } => {
                        prop_assert_ne!(from, to);
                        prop_assert_eq!(progress, Some(*from));
                        progress = Some(*to);
                    }
                    _ => {}
                }
            }

            // The final event is what wait() returns for the same answers.
            let again = Script::new(steps);
            let outcome = watcher(&again, timeout, seed).wait().await;
            let final_event = events.last().unwrap().outcome().unwrap();
            prop_assert_eq!(format!("{final_event:?}"), format!("{outcome:?}"));
            prop_assert_eq!(again.polls(), polls);
            Ok(())
        })?;
    }
}

/// Settings from sane to odd: any delays from 0.5 s to 2 min, any factor, with and without
/// jitter and progress guidance.
fn settings() -> impl Strategy<Value = PollPolicy> {
    let ms = |lo: u64, hi: u64| (lo..hi).prop_map(Duration::from_millis);
    (
        (
            ms(500, 5_000),
            ms(500, 120_000),
            prop::option::of(ms(0, 120_000)),
        ),
        (
            prop::option::of(ms(0, 300_000)),
            0.5f32..4.0,
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(|((min, max, near), (far, factor, jitter, guided))| {
            let mut policy = PollPolicy::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_factor(factor)
                .with_jitter(jitter)
                .with_progress_guided(guided);
            if let Some(near) = near {
                policy = policy.with_near_end_delay(near);
            }
            if let Some(far) = far {
                policy = policy.with_max_progress_delay(far);
            }
            policy
        })
}

/// A task's progress as (seconds after the start, percent) reports: rises, jumps, stalls (long
/// gaps), values that go backwards and values out of range.
fn shape() -> impl Strategy<Value = Vec<(f64, i64)>> {
    prop::collection::vec((0u64..900, -15i64..50), 0..30).prop_map(|steps| {
        let (mut t, mut p) = (0.0, 0);
        steps
            .into_iter()
            .map(|(gap, delta)| {
                t += gap as f64;
                p += delta;
                (t, p)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The lateness promise, end to end: whatever the settings and the task's progress, a task
    /// that ends (SUCCESS or FAILED, at any point of its run) is seen at most
    /// `PollPolicy::max_lateness` after its end.
    #[test]
    fn every_end_is_seen_within_the_lateness_promise(
        policy in settings(),
        points in shape(),
        ends in 0.0f64..7_200.0,
        fails in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let script = Script::from_fn(move |elapsed| {
                let t = elapsed.as_secs_f64();
                if t >= ends {
                    at(if fails { "FAILED" } else { "SUCCESS" }, 100)
                } else {
                    let p = points.iter().take_while(|(when, _)| *when <= t).last().map_or(0, |s| s.1);
                    at("RUNNING", p)
                }
            });
            let outcome = TaskWatcher::from_source(script.clone())
                .policy(policy.with_jitter_seed(seed))
                .timeout(Duration::from_secs(4 * 3600))
                .await;
            let seen = script.elapsed().as_secs_f64();
            prop_assert_eq!(outcome.is_ok(), !fails, "{:?}", outcome);
            let late = seen - ends;
            let bound = policy.max_lateness().as_secs_f64();
            // tokio's timer has millisecond slots.
            prop_assert!(
                (0.0..=bound + 0.002).contains(&late),
                "seen {late:.3} s after the end; the promise is {bound} s"
            );
            Ok(())
        })?;
    }
}
