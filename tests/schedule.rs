//! Progress, maintenance windows and resumed waits, through the watcher, in virtual time.

mod common;

use std::time::{Duration, SystemTime};

use common::script::{at, error, snapshot, Script, Step};
use futures::StreamExt;
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::model::OperateWindow;
use iotda_task_watcher::watch::{Condition, PollPolicy};
use iotda_task_watcher::{InstanceTask, TaskEvent, TaskStatus, TaskWatcher, WaitError};
use tokio::time::Instant;

/// A task that runs from `starts` to `ends` (seconds after its script was made), reporting
/// progress `every` seconds, with a maintenance window if it has one.
#[derive(Clone)]
struct Run {
    starts: f64,
    ends: f64,
    every: Option<f64>,
    window: Option<(&'static str, &'static str)>,
}

impl Run {
    fn new(starts: f64, ends: f64, every: Option<f64>) -> Self {
        Self {
            starts,
            ends,
            every,
            window: None,
        }
    }

    /// The same run, reporting this maintenance window (`HH:mm` UTC).
    fn in_window(self, start: &'static str, end: &'static str) -> Self {
        Self {
            window: Some((start, end)),
            ..self
        }
    }

    /// The task as it is `t` seconds in.
    fn at(&self, t: f64) -> InstanceTask {
        let (status, progress) = if t >= self.ends {
            ("SUCCESS", 100)
        } else if t < self.starts {
            ("PENDING", 0)
        } else {
            let shown = match self.every {
                Some(every) => ((t - self.starts) / every).floor() * every,
                None => 0.0,
            };
            (
                "RUNNING",
                (100.0 * shown / (self.ends - self.starts)) as i64,
            )
        };
        let mut task = snapshot(status, Some(progress));
        if let Some((start, end)) = self.window {
            let mut w = OperateWindow::default();
            w.start_time = Some(start.to_owned());
            w.end_time = Some(end.to_owned());
            task.operate_window = Some(w);
        }
        task
    }

    /// A script that answers each poll with the task as it is then, and records the polls.
    fn script(self) -> Script {
        Script::from_fn(move |elapsed| Step::Task(self.at(elapsed.as_secs_f64())))
    }
}

/// A script of `Run::new(starts, ends, every)`.
fn timed(starts: f64, ends: f64, every: Option<f64>) -> Script {
    Run::new(starts, ends, every).script()
}

/// Delays without jitter, so that poll times are exact.
fn exact() -> PollPolicy {
    PollPolicy::default().with_jitter(false)
}

fn watcher(source: &Script) -> TaskWatcher<Script> {
    TaskWatcher::from_source(source.clone())
        .policy(exact())
        .timeout(Duration::from_secs(6 * 3600))
}

#[tokio::test(start_paused = true)]
async fn progress_saves_requests_on_a_long_task_without_losing_promptness() {
    // Two hours, progress reported every minute.
    let guided = timed(0.0, 7200.0, Some(60.0));
    let task = watcher(&guided).await.unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
    let plain = timed(0.0, 7200.0, Some(60.0));
    watcher(&plain)
        .policy(exact().with_progress_guided(false))
        .await
        .unwrap();

    let (g, p) = (guided.poll_secs(), plain.poll_secs());
    assert!(
        g.len() * 4 < p.len() * 3,
        "{} polls guided against {} without",
        g.len(),
        p.len()
    );
    // Around the estimated end the guided wait polls every near_end_delay (half of
    // max_delay: 15 s); the plain one is at its 30 s cap by then.
    let (g_end, p_end) = (*g.last().unwrap(), *p.last().unwrap());
    assert!(
        (7200.0..=7215.0).contains(&g_end),
        "guided: seen at {g_end}"
    );
    assert!((7200.0..=7230.0).contains(&p_end), "plain: seen at {p_end}");
    // And no sleep was longer than the lateness promise (45 s).
    assert!(g.windows(2).all(|w| w[1] - w[0] <= 45.0 + 1e-6), "{g:?}");
    assert!(
        g.windows(2).any(|w| w[1] - w[0] > 30.0),
        "progress stretched some sleeps"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_early_is_seen_within_max_progress_delay() {
    // Progress promises two hours (a minute's worth every minute); the task is over after 30.
    let promised = Run::new(0.0, 7200.0, Some(60.0));
    let early = Script::from_fn(move |elapsed| {
        let t = elapsed.as_secs_f64();
        if t >= 1800.0 {
            at("SUCCESS", 100)
        } else {
            Step::Task(promised.at(t))
        }
    });
    let bound = Duration::from_secs(120);
    watcher(&early)
        .policy(exact().with_max_progress_delay(bound))
        .await
        .unwrap();
    let polls = early.poll_secs();
    let last = *polls.last().unwrap();
    assert!((1800.0..=1920.0).contains(&last), "seen at {last}");
    // The setting was used: sleeps longer than the default far cap (45 s), none past it.
    let gaps: Vec<f64> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().any(|g| *g > 45.0), "{polls:?}");
    assert!(gaps.iter().all(|g| *g <= 120.0 + 1e-6), "{polls:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_poll_near_the_end_is_sent_again_after_min_delay_not_the_longest_sleep() {
    // A 100 s task reporting its progress every second. Unhindered, the line aims the polls
    // at its end, and the one after it sees it 6 s late.
    let run = Run::new(0.0, 100.0, Some(1.0));
    let clean = run.clone().script();
    watcher(&clean).await.unwrap();
    let unhindered = [
        0.0, 1.0, 16.0, 31.0, 46.121, 61.121, 76.121, 91.121, 106.121,
    ];
    assert_eq!(clean.poll_secs(), unhindered);
    // The same task, with the service throttling the poll at 91 s. The schedule's own backoff
    // is at 30 s by then; the failed poll is sent again 1 s later, and the end is seen as
    // soon as the line says.
    let throttled = Script::from_fn(move |elapsed| {
        let t = elapsed.as_secs_f64();
        if (91.0..92.0).contains(&t) {
            error(ApiErrorKind::Throttled, 429)
        } else {
            Step::Task(run.at(t))
        }
    });
    watcher(&throttled).await.unwrap();
    let polls = throttled.poll_secs();
    assert_eq!(
        polls[..9],
        [unhindered[..8].to_vec(), vec![92.121]].concat()
    );
    let seen = polls[polls.len() - 1];
    assert!((100.0..=115.0).contains(&seen), "seen at {seen}: {polls:?}");
}

/// 10:00 UTC on the day the tests pretend it is.
fn ten_o_clock() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 / 86_400 * 86_400 + 10 * 3600)
}

#[tokio::test(start_paused = true)]
async fn a_pending_task_behind_a_closed_window_is_polled_sparsely_and_seen_as_it_opens() {
    // It is 10:00 UTC; the window opens at 12:00; the task runs 10 minutes from then.
    let now = ten_o_clock();
    let source = Run::new(7200.0, 7800.0, Some(30.0))
        .in_window("12:00", "16:00")
        .script();
    let events: Vec<TaskEvent> = watcher(&source).wall_clock(now).events().collect().await;
    let waiting: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::WaitingForWindow {
                opens_at, delay, ..
            } => Some((*opens_at, *delay)),
            _ => None,
        })
        .collect();
    let opens: jiff::Timestamp =
        jiff::Timestamp::try_from(now).unwrap() + jiff::SignedDuration::from_hours(2);
    assert_eq!(
        waiting,
        [(opens, Duration::from_secs(1))],
        "said once, and the first sleep is the backoff's"
    );
    let polls = source.poll_secs();
    // The first two minutes as if there were no window, then sleeps that stretch to 5 min.
    assert_eq!(polls[..8], [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 61.0, 91.0]);
    let gaps: Vec<f64> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= 300.001), "{polls:?}");
    assert!(gaps.iter().any(|g| (g - 300.0).abs() < 0.001), "{polls:?}");
    // A poll lands a second after the window opens, and the backoff starts over there.
    let opened = polls
        .iter()
        .position(|t| *t == 7201.0)
        .expect("a poll at 7201 s");
    assert!(opened < 45, "{opened} polls while the window was closed");
    assert_eq!(polls[opened + 1], 7202.0);
    assert!(matches!(events.last(), Some(TaskEvent::Done(Ok(_)))));
    assert!(*polls.last().unwrap() <= 7800.0 + 15.0);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_starts_despite_its_window_is_seen_promptly() {
    // The window opens at 12:00, but the task (an immediate resize) starts after 20 s and is
    // done after 90 s: seen as promptly as if there were no window.
    let source = Run::new(20.0, 90.0, None)
        .in_window("12:00", "16:00")
        .script();
    let task = watcher(&source).wall_clock(ten_o_clock()).await.unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
    let last = *source.poll_secs().last().unwrap();
    assert!((90.0..=120.0).contains(&last), "seen at {last}");
}

#[tokio::test(start_paused = true)]
async fn a_window_after_the_deadline_keeps_polling_unless_told_to_fail_fast() {
    let now = ten_o_clock();
    let source = Run::new(7200.0, 7800.0, Some(30.0))
        .in_window("12:00", "16:00")
        .script();
    let err = watcher(&source)
        .wall_clock(now)
        .timeout(Duration::from_secs(3600))
        .await
        .unwrap_err();
    let polls = source.poll_secs();
    assert!(matches!(err, WaitError::TimedOut { .. }), "{err:?}");
    assert!(polls.len() > 20, "it polled all along: {polls:?}");
    assert_eq!(
        *polls.last().unwrap(),
        3600.0,
        "the last poll on the deadline"
    );

    let source = Run::new(7200.0, 7800.0, Some(30.0))
        .in_window("12:00", "16:00")
        .script();
    let started = Instant::now();
    let err = watcher(&source)
        .wall_clock(now)
        .timeout(Duration::from_secs(3600))
        .fail_fast_on_window(true)
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "at once");
    assert_eq!(source.poll_count(), 1);
    match &err {
        WaitError::WindowAfterDeadline {
            task,
            opens_at,
            deadline,
            ..
        } => {
            assert_eq!(task.status, Some(TaskStatus::Pending));
            assert_eq!(
                opens_at.duration_since(*deadline),
                jiff::SignedDuration::from_hours(1)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("maintenance window"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_resumes_where_it_stopped() {
    let wall = SystemTime::now();
    let source = timed(5.0, 600.0, Some(10.0));
    let mut events = watcher(&source)
        .wall_clock(wall)
        .timeout(Duration::from_secs(1000))
        .events();
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let progressed = matches!(event, TaskEvent::ProgressChanged { .. });
        seen.push(event);
        if progressed {
            break;
        }
    }
    let state = events.checkpoint().expect("a state between events");
    drop(events);
    let json = serde_json::to_string(&state).unwrap();
    let state: iotda_task_watcher::watch::WaitState = serde_json::from_str(&json).unwrap();
    assert_eq!(state.last().unwrap().status, Some(TaskStatus::Running));
    let polls_before = state.polls();
    assert_eq!(polls_before as usize, source.poll_count());

    // A minute later, in "another process".
    tokio::time::sleep(Duration::from_secs(60)).await;
    let wall_now = wall + source.elapsed();
    let rest: Vec<TaskEvent> = TaskWatcher::from_source(source.clone())
        .policy(exact())
        .wall_clock(wall_now)
        .resume_from(state.clone())
        .events()
        .collect()
        .await;
    assert!(
        !rest.iter().any(|e| matches!(e, TaskEvent::Observed { .. })),
        "nothing seen is reported again"
    );
    match rest.last() {
        Some(TaskEvent::Done(Ok(task))) => assert_eq!(task.status, Some(TaskStatus::Success)),
        other => panic!("{other:?}"),
    }
    assert!(
        source.poll_count() > polls_before as usize,
        "the resumed wait polled"
    );
    assert_eq!(
        state.deadline().duration_since(state.started_at()),
        jiff::SignedDuration::from_secs(1000)
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_wait_keeps_its_progress_estimate() {
    let wall = SystemTime::now();
    // Fifty minutes, progress every minute: the estimate sets the delays.
    let whole = timed(0.0, 3000.0, Some(60.0));
    watcher(&whole).wall_clock(wall).await.unwrap();

    let split = timed(0.0, 3000.0, Some(60.0));
    let mut events = watcher(&split).wall_clock(wall).events();
    let mut rises = 0;
    while rises < 3 {
        if let TaskEvent::ProgressChanged { .. } = events.next().await.unwrap() {
            rises += 1;
        }
    }
    let state = events.checkpoint().unwrap();
    drop(events);
    let json = serde_json::to_value(&state).unwrap();
    assert!(
        json["schedule"]["progress"]["n"].as_u64() >= Some(3),
        "{json}"
    );
    let state = serde_json::from_value(json).unwrap();
    TaskWatcher::from_source(split.clone())
        .policy(exact())
        .wall_clock(wall + split.elapsed())
        .resume_from(state)
        .await
        .unwrap();

    let (a, b) = (whole.poll_secs(), split.poll_secs());
    assert!(
        a.windows(2).any(|w| w[1] - w[0] > 30.0),
        "the estimate set sleeps longer than the backoff's: {a:?}"
    );
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    // The same polls, to the millisecond slots of tokio's timer.
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.002, "{a:?}\n{b:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_resumed_wait_keeps_its_deadline_and_counts() {
    // Wall time stands still on a paused tokio clock: each "process" says what time it is.
    let (wall, t0) = (SystemTime::now(), Instant::now());
    let source = timed(0.0, 1e9, None);
    let mut events = watcher(&source)
        .wall_clock(wall)
        .timeout(Duration::from_secs(100))
        .events();
    events.next().await.unwrap();
    let state = events.checkpoint().unwrap();
    drop(events);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let err = TaskWatcher::from_source(source.clone())
        .policy(exact())
        .wall_clock(wall + t0.elapsed())
        .resume_from(state)
        .await
        .unwrap_err();
    match err {
        WaitError::TimedOut {
            polls,
            elapsed,
            last,
            ..
        } => {
            // tokio's timer wheel has millisecond slots.
            let ms = Duration::from_millis(1);
            let hundred = Duration::from_secs(100);
            assert!(
                elapsed >= hundred && elapsed < hundred + ms,
                "{elapsed:?} from the first start"
            );
            assert_eq!(polls as usize, source.poll_count(), "polls of both runs");
            assert!(last.is_some());
        }
        other => panic!("{other:?}"),
    }
    let total = t0.elapsed();
    assert!(
        total >= Duration::from_secs(100) && total < Duration::from_millis(100_001),
        "the original deadline: {total:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_poll_goes_out_even_when_the_timer_wakes_just_after_the_deadline() {
    // A deadline between millisecond slots: the last sleep ends a little after it.
    let source = timed(0.0, 1e9, None);
    let deadline = Duration::from_micros(1_500_300);
    let err = TaskWatcher::from_source(source.clone())
        .policy(
            exact()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(1)),
        )
        .timeout(deadline)
        .await
        .unwrap_err();
    let polls = source.poll_secs();
    assert_eq!(polls.len(), 3, "{polls:?}");
    let last = polls[2];
    assert!(
        (1.5003..1.5013).contains(&last),
        "the last poll is on the deadline: {last}"
    );
    assert!(matches!(err, WaitError::TimedOut { polls: 3, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_too_long_for_the_clock_means_no_timeout() {
    let source = timed(0.0, 30.0, None);
    let mut events = watcher(&source).timeout(Duration::MAX).events();
    events.next().await.unwrap();
    let state = events.checkpoint().unwrap();
    assert!(
        state.deadline() > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365 * 50)
    );
    let rest: Vec<TaskEvent> = events.collect().await;
    assert!(matches!(rest.last(), Some(TaskEvent::Done(Ok(_)))));
}

#[tokio::test(start_paused = true)]
async fn there_is_nothing_to_save_after_the_final_event() {
    let source = timed(0.0, 0.0, None);
    let mut events = watcher(&source).events();
    assert!(matches!(
        events.next().await,
        Some(TaskEvent::Observed { .. })
    ));
    assert!(events.checkpoint().is_some());
    assert!(matches!(events.next().await, Some(TaskEvent::Done(Ok(_)))));
    assert!(events.checkpoint().is_none());
    assert!(events.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_hostile_saved_state_neither_hangs_nor_panics() {
    let source = timed(0.0, 5.0, Some(1.0));
    let mut events = watcher(&source).events();
    events.next().await.unwrap();
    let mut state = serde_json::to_value(events.checkpoint().unwrap()).unwrap();
    drop(events);
    state["polls"] = u32::MAX.into();
    state["failures"] = u32::MAX.into();
    state["schedule"]["steps"] = u32::MAX.into();
    state["schedule"]["resets"] = u64::MAX.into();
    // A progress line no real wait could have fitted.
    let at = state["started_at"].clone();
    state["schedule"]["progress"] = serde_json::json!({
        "origin": at, "seen_at": at, "last": 0, "n": u32::MAX,
        "mean_x": 1e308, "mean_y": -1e308, "cxx": 1e-308, "cxy": 1e308,
    });
    let state: iotda_task_watcher::watch::WaitState = serde_json::from_value(state).unwrap();
    let mut events = TaskWatcher::from_source(source.clone())
        .policy(exact())
        .resume_from(state)
        .events();
    events.next().await.unwrap();
    let saved = serde_json::to_value(events.checkpoint().unwrap()).unwrap();
    assert_eq!(
        saved["schedule"]["progress"]["n"], 1,
        "the line starts again: {saved}"
    );
    let rest: Vec<TaskEvent> = events.collect().await;
    assert!(
        matches!(rest.last(), Some(TaskEvent::Done(Ok(_)))),
        "{rest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_saved_state_cannot_plan_a_poll_past_its_deadline() {
    let source = timed(0.0, 7200.0, Some(60.0));
    let mut events = watcher(&source).timeout(Duration::from_secs(600)).events();
    events.next().await.unwrap();
    let mut state = serde_json::to_value(events.checkpoint().unwrap()).unwrap();
    drop(events);
    // Hand-edited: the next poll in 2100, the deadline ten minutes after the start.
    state["next_poll_at"] = "2100-01-01T00:00:00Z".into();
    let state: iotda_task_watcher::watch::WaitState = serde_json::from_value(state).unwrap();
    let started = Instant::now();
    let err = TaskWatcher::from_source(source.clone())
        .resume_from(state)
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::TimedOut { .. }), "{err:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(600),
        "ended after {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_progress_line_at_zero_percent_survives_a_resume() {
    // RUNNING at 0 % when first seen: the line holds one point, at 0 %.
    let source = timed(0.0, 7200.0, Some(600.0));
    let mut events = watcher(&source).events();
    events.next().await.unwrap();
    let saved = events.checkpoint().unwrap();
    drop(events);
    let json = serde_json::to_value(&saved).unwrap();
    assert_eq!(json["schedule"]["progress"]["last"], 0, "{json}");
    // The resumed wait starts from the same line, not from nothing.
    let resumed = TaskWatcher::from_source(source.clone())
        .resume_from(saved)
        .events();
    let again = serde_json::to_value(resumed.checkpoint().unwrap()).unwrap();
    assert_eq!(
        again["schedule"]["progress"], json["schedule"]["progress"],
        "{again}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_started_behind_a_closed_window_polls_just_after_it_opens() {
    // It is 10:00 UTC; the window opens at 12:00; the task starts then and runs 10 minutes.
    let source = Run::new(7200.0, 7800.0, Some(30.0))
        .in_window("12:00", "16:00")
        .script();
    let started = watcher(&source)
        .wall_clock(ten_o_clock())
        .until(Condition::started())
        .timeout(Duration::from_secs(4 * 3600))
        .await
        .unwrap();
    assert_eq!(started.status, Some(TaskStatus::Running));
    // Resolved by the poll a second after the opening, long before the task's end.
    assert_eq!(source.poll_secs().last(), Some(&7201.0));
    assert!(source.poll_count() < 45, "{:?}", source.poll_secs());
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_a_progress_resolves_near_the_time_it_is_reached_not_the_end() {
    // 1 % every 10 s from 0 s: N % at N x 10 s, the end at 1000 s.
    for n in [20u8, 30, 40, 60, 70] {
        let source = timed(0.0, 1000.0, Some(10.0));
        let reached = watcher(&source)
            .until(Condition::progress_at_least(n))
            .timeout(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(reached.status, Some(TaskStatus::Running));
        assert!(reached.progress_percent().unwrap() >= n, "{reached:?}");
        // Seen within the near-end delay (15 s) of the time it was reached: the polls
        // gathered there. Aimed at the end, they are a third of the time left to it apart
        // (up to 45 s) when the task passes N.
        let seen = *source.poll_secs().last().unwrap();
        let due = f64::from(n) * 10.0;
        assert!((due..=due + 15.0).contains(&seen), "{n} %: seen at {seen}");
    }
}
