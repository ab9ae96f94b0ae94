//! Progress, maintenance windows and resumed waits, through the watcher, in virtual time.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::script::snapshot;
use futures::StreamExt;
use iotda_task_watcher::{
    ApiError, InstanceTask, OperateWindow, TaskEvent, TaskSource, TaskStatus, TaskWatcher,
    WaitError,
};
use tokio::time::Instant;

/// A task that runs from `starts` to `ends` (seconds after the source was made), reporting
/// progress `every` seconds; it records when it was polled.
#[derive(Clone)]
struct Timed {
    origin: Instant,
    starts: f64,
    ends: f64,
    every: Option<f64>,
    window: Option<(String, String)>,
    polls: Arc<Mutex<Vec<f64>>>,
}

impl Timed {
    fn new(starts: f64, ends: f64, every: Option<f64>) -> Self {
        Self {
            origin: Instant::now(),
            starts,
            ends,
            every,
            window: None,
            polls: Arc::default(),
        }
    }

    fn polls(&self) -> Vec<f64> {
        self.polls.lock().unwrap().clone()
    }

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
        if let Some((start, end)) = &self.window {
            let mut w = OperateWindow::default();
            w.start_time = Some(start.clone());
            w.end_time = Some(end.clone());
            task.operate_window = Some(w);
        }
        task
    }
}

impl TaskSource for Timed {
    async fn fetch(&self) -> Result<InstanceTask, ApiError> {
        let t = self.origin.elapsed().as_secs_f64();
        self.polls.lock().unwrap().push(t);
        Ok(self.at(t))
    }
}

fn watcher(source: &Timed) -> TaskWatcher<Timed> {
    TaskWatcher::from_source(source.clone())
        .jitter(false)
        .timeout(Duration::from_secs(6 * 3600))
}

#[tokio::test(start_paused = true)]
async fn progress_saves_requests_on_a_long_task_without_losing_promptness() {
    // Two hours, progress reported every minute.
    let guided = Timed::new(0.0, 7200.0, Some(60.0));
    let task = watcher(&guided).await.unwrap();
    assert_eq!(task.status, Some(TaskStatus::Success));
    let plain = Timed::new(0.0, 7200.0, Some(60.0));
    watcher(&plain).progress_guided(false).await.unwrap();

    let (g, p) = (guided.polls(), plain.polls());
    assert!(
        g.len() * 2 < p.len(),
        "{} polls guided against {} without",
        g.len(),
        p.len()
    );
    // Around the estimated end the guided wait polls every near_end_delay (10 s); the plain
    // one is at its 30 s cap by then.
    let (g_end, p_end) = (*g.last().unwrap(), *p.last().unwrap());
    assert!(
        (7200.0..=7210.0).contains(&g_end),
        "guided: seen at {g_end}"
    );
    assert!((7200.0..=7230.0).contains(&p_end), "plain: seen at {p_end}");
    // And no sleep was longer than max_progress_delay (5 minutes).
    assert!(g.windows(2).all(|w| w[1] - w[0] <= 300.0 + 1e-6), "{g:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_early_is_seen_within_max_progress_delay() {
    // Progress promises two hours; the task is over after 30 minutes.
    let mut early = Timed::new(0.0, 7200.0, Some(60.0));
    early.ends = 1800.0;
    let bound = Duration::from_secs(120);
    watcher(&early).max_progress_delay(bound).await.unwrap();
    let last = *early.polls().last().unwrap();
    assert!((1800.0..=1920.0).contains(&last), "seen at {last}");
}

#[tokio::test(start_paused = true)]
async fn a_pending_task_sleeps_until_its_window_opens() {
    // It is 10:00 UTC; the window opens at 12:00; the task runs 10 minutes from then.
    let now =
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 / 86_400 * 86_400 + 10 * 3600);
    let mut source = Timed::new(7200.0, 7800.0, Some(30.0));
    source.window = Some(("12:00".into(), "16:00".into()));
    let events: Vec<TaskEvent> = watcher(&source).wall_clock(now).events().collect().await;
    let waiting: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TaskEvent::WaitingForWindow { opens_at, delay } => Some((*opens_at, *delay)),
            _ => None,
        })
        .collect();
    let opens: jiff::Timestamp =
        jiff::Timestamp::try_from(now).unwrap() + jiff::SignedDuration::from_hours(2);
    assert_eq!(
        waiting,
        [(opens, Duration::from_secs(7199))],
        "one sleep, to a second before it opens"
    );
    let polls = source.polls();
    assert_eq!(
        polls[..2],
        [0.0, 7199.0],
        "nothing is sent while the window is closed"
    );
    assert!(polls.len() < 40, "{} polls", polls.len());
    assert!(matches!(events.last(), Some(TaskEvent::Done(Ok(_)))));
    assert!(*polls.last().unwrap() <= 7800.0 + 30.0);
}

#[tokio::test(start_paused = true)]
async fn a_window_after_the_deadline_fails_fast_or_waits_as_asked() {
    let now =
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000 / 86_400 * 86_400 + 10 * 3600);
    let mut source = Timed::new(7200.0, 7800.0, Some(30.0));
    source.window = Some(("12:00".into(), "16:00".into()));
    let started = Instant::now();
    let err = watcher(&source)
        .wall_clock(now)
        .timeout(Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "at once");
    assert_eq!(source.polls().len(), 1);
    match &err {
        WaitError::WindowAfterDeadline {
            task,
            opens_at,
            deadline,
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

    let mut source = Timed::new(7200.0, 7800.0, Some(30.0));
    source.window = Some(("12:00".into(), "16:00".into()));
    let err = watcher(&source)
        .wall_clock(now)
        .timeout(Duration::from_secs(3600))
        .fail_fast_on_window(false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WaitError::TimedOut { polls: 2, .. }),
        "{err:?}"
    );
    assert_eq!(source.polls(), [0.0, 3600.0], "it slept to the deadline");
}

#[tokio::test(start_paused = true)]
async fn a_wait_resumes_where_it_stopped() {
    let wall = SystemTime::now();
    let source = Timed::new(5.0, 600.0, Some(10.0));
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
    let state: iotda_task_watcher::WaitState = serde_json::from_str(&json).unwrap();
    assert_eq!(state.last().unwrap().status, Some(TaskStatus::Running));
    let polls_before = state.polls();
    assert_eq!(polls_before as usize, source.polls().len());

    // A minute later, in "another process".
    tokio::time::sleep(Duration::from_secs(60)).await;
    let wall_now = wall + source.origin.elapsed();
    let polled = Arc::new(AtomicU32::new(0));
    let counted = {
        let source = source.clone();
        let polled = polled.clone();
        move || {
            polled.fetch_add(1, Ordering::Relaxed);
            let source = source.clone();
            async move { source.fetch().await }
        }
    };
    let rest: Vec<TaskEvent> = TaskWatcher::from_source(counted)
        .jitter(false)
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
    assert!(polled.load(Ordering::Relaxed) > 0);
    assert_eq!(
        state.deadline().duration_since(state.started_at()),
        jiff::SignedDuration::from_secs(1000)
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_wait_keeps_its_progress_estimate() {
    let wall = SystemTime::now();
    // Fifty minutes, progress every minute: the estimate sets the delays.
    let whole = Timed::new(0.0, 3000.0, Some(60.0));
    watcher(&whole).wall_clock(wall).await.unwrap();

    let split = Timed::new(0.0, 3000.0, Some(60.0));
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
        .jitter(false)
        .wall_clock(wall + split.origin.elapsed())
        .resume_from(state)
        .await
        .unwrap();

    let (a, b) = (whole.polls(), split.polls());
    assert!(a.len() < 40, "the estimate kept polls sparse: {a:?}");
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
    let source = Timed::new(0.0, 1e9, None);
    let mut events = watcher(&source)
        .wall_clock(wall)
        .timeout(Duration::from_secs(100))
        .events();
    events.next().await.unwrap();
    let state = events.checkpoint().unwrap();
    drop(events);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let err = TaskWatcher::from_source(source.clone())
        .jitter(false)
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
            assert_eq!(polls as usize, source.polls().len(), "polls of both runs");
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
    let source = Timed::new(0.0, 1e9, None);
    let deadline = Duration::from_micros(1_500_300);
    let err = TaskWatcher::from_source(source.clone())
        .jitter(false)
        .min_delay(Duration::from_secs(1))
        .max_delay(Duration::from_secs(1))
        .timeout(deadline)
        .await
        .unwrap_err();
    let polls = source.polls();
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
    let source = Timed::new(0.0, 30.0, None);
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
    let source = Timed::new(0.0, 0.0, None);
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
    let source = Timed::new(0.0, 5.0, Some(1.0));
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
    let state: iotda_task_watcher::WaitState = serde_json::from_value(state).unwrap();
    let mut events = TaskWatcher::from_source(source.clone())
        .jitter(false)
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
