//! Properties of every wait over random answer sequences, in virtual time.

mod common;

use std::time::Duration;

use common::script::*;
use futures::StreamExt;
use iotda_task_watcher::{ApiError, ApiErrorKind, TaskEvent, TaskWatcher};
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
        .jitter_seed(seed)
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
                    TaskEvent::Observed { task } => progress = Some(task.progress_percent()),
                    TaskEvent::ProgressChanged { from, to } => {
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
