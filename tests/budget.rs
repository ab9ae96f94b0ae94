//! Many waits on one client: a throttle seen by one slows all of them, and waits on one task
//! share its polls. Real HTTP on loopback, through the simulator and the real client.

mod common;

use std::time::Duration;

use futures::StreamExt;
use iotda_task_watcher::client::budget::{BudgetStats, RequestBudget};
use iotda_task_watcher::simulator::{Fault, Simulator, TaskScript};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{wait_all, TaskEvent, TaskStatus, TaskType, TaskWatcher};

use common::{every_10ms as eager, task_n as id};

fn instance() -> iotda_task_watcher::InstanceId {
    common::INSTANCE.parse().unwrap()
}

/// A task whose first poll is throttled (no `Retry-After`) and that then runs on.
fn throttled_then_running() -> TaskScript {
    TaskScript::new(TaskType::Modify)
        .fault(Fault::Throttled {
            retry_after: Duration::ZERO,
        })
        .running(1_000_000)
}

/// What the client's budget saw in the half second after task 1's first poll was throttled,
/// while task 2 was polled every 10 ms on the same client, with the budget set to `budget`.
async fn after_a_throttle(budget: RequestBudget) -> BudgetStats {
    let sim = Simulator::start().await;
    let (throttled, other) = (id(1), id(2));
    sim.add_task(&instance(), &throttled, throttled_then_running());
    sim.add_task(
        &instance(),
        &other,
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    let client = sim.client_builder().budget(budget).build().unwrap();
    let background = tokio::spawn(eager(&client, &other).wait());
    let mut events = eager(&client, &throttled).events();
    while let Some(event) = events.next().await {
        if matches!(event, TaskEvent::Retrying { .. }) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.budget_stats().tasks, 2, "two tasks being waited for");
    background.abort();
    let _ = background.await;
    drop(events);
    let stats = client.budget_stats();
    assert_eq!(stats.tasks, 0, "no task waited for any more");
    stats
}

#[tokio::test]
async fn a_throttle_seen_by_one_wait_delays_the_polls_of_another_on_the_same_client() {
    // Adaptive (the default): the throttle engages the limiter for the whole client, at 0.7
    // times the rate it had measured, with no token saved up: the other wait's next polls
    // wait their turn (the first at least 1/rate, over 10 ms at any rate two waits reach
    // in their first moments).
    let adaptive = after_a_throttle(RequestBudget::default()).await;
    assert_eq!(adaptive.throttled, 1);
    assert!(adaptive.adaptive_rate.is_some(), "{adaptive:?}");
    assert!(adaptive.waited >= Duration::from_millis(10), "{adaptive:?}");
    // Without a budget, nothing waits.
    let unlimited = after_a_throttle(RequestBudget::unlimited()).await;
    assert_eq!(unlimited.throttled, 1);
    assert_eq!(unlimited.adaptive_rate, None);
    assert_eq!(unlimited.waited, Duration::ZERO);
}

#[tokio::test]
async fn two_waits_on_one_task_send_one_request_per_poll() {
    let sim = Simulator::start().await;
    let task = id(1);
    let script = || TaskScript::new(TaskType::Modify).running(6).succeed();
    sim.add_task(&instance(), &task, script());
    let client = sim.client();
    // Alone, the wait sends one request per answer of the script: 6 RUNNING, then SUCCESS.
    let alone = TaskWatcher::new(&client, &instance(), &task).policy(
        PollPolicy::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(20)),
    );
    alone.wait().await.unwrap();
    assert_eq!(sim.polls(&instance(), &task), 7);

    // Two waits on the same task, each with its own jitter, deadline and events.
    let again = id(2);
    sim.add_task(&instance(), &again, script());
    let wait = |timeout| {
        TaskWatcher::new(&client, &instance(), &again)
            .policy(
                PollPolicy::default()
                    .with_min_delay(Duration::from_millis(5))
                    .with_max_delay(Duration::from_millis(20)),
            )
            .timeout(timeout)
            .events()
            .collect::<Vec<_>>()
    };
    let (first, second) =
        tokio::join!(wait(Duration::from_secs(20)), wait(Duration::from_secs(30)));
    assert_eq!(sim.polls(&instance(), &again), 7, "one request per poll");
    for events in [&first, &second] {
        let done = events.last().unwrap();
        assert!(
            matches!(done, TaskEvent::Done(Ok(task)) if task.status == Some(TaskStatus::Success)),
            "{done:?}"
        );
        assert!(
            matches!(events.first(), Some(TaskEvent::Observed { .. })),
            "each wait has its own events: {events:?}"
        );
    }
}

#[tokio::test]
async fn wait_all_given_one_id_twice_polls_it_once() {
    let sim = Simulator::start().await;
    let task = id(1);
    sim.add_task(
        &instance(),
        &task,
        TaskScript::new(TaskType::Modify).running(1).succeed(),
    );
    // The defaults: a poll at once, the next a second later.
    let outcomes = wait_all(&sim.client(), &instance(), [task.clone(), task.clone()], 8).await;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes.iter().all(|(t, o)| *t == task && o.is_ok()),
        "{outcomes:?}"
    );
    assert_eq!(sim.polls(&instance(), &task), 2);
}

#[tokio::test]
async fn a_stream_left_alone_while_it_queues_for_a_token_holds_up_no_other_wait() {
    let sim = Simulator::start().await;
    let (neglected, other) = (id(1), id(2));
    sim.add_task(
        &instance(),
        &neglected,
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    sim.add_task(
        &instance(),
        &other,
        TaskScript::new(TaskType::Modify).running(3).succeed(),
    );
    // One token every 50 ms, none saved up.
    let client = sim
        .client_builder()
        .budget(RequestBudget::unlimited().with_max_rps(20.0, 1))
        .build()
        .unwrap();
    let mut events = eager(&client, &neglected).events();
    // The first poll takes the token; 10 ms later the second queues for the next one, and the
    // stream is left alone while it does.
    assert!(events.next().await.is_some());
    let queued = tokio::time::timeout(Duration::from_millis(20), events.next()).await;
    assert!(
        queued.is_err(),
        "the second poll is still queued: {queued:?}"
    );

    let outcome = eager(&client, &other)
        .timeout(Duration::from_secs(5))
        .wait()
        .await;
    assert_eq!(
        outcome.expect("the other wait ends").status,
        Some(TaskStatus::Success)
    );
    assert_eq!(sim.polls(&instance(), &other), 4);
    // The neglected stream polled once: its token was handed over and went unused.
    assert_eq!(sim.polls(&instance(), &neglected), 1);
    drop(events);
}

/// How many polls of other tasks went out before task 1's first poll was throttled, and
/// between that throttle and the answer to task 1's next poll, while ten waits on the others,
/// started just before task 1's, each kept a poll queued for a token (20 a second, none saved
/// up). With `max_in_flight`, the eleven waits run in one `watch_many`, each queued for its
/// turn to have a request in flight before it queues for its token.
async fn others_polled_around_a_throttle(max_in_flight: Option<usize>) -> (u64, u64) {
    let sim = Simulator::start().await;
    let throttled = id(1);
    sim.add_task(&instance(), &throttled, throttled_then_running());
    let others: Vec<_> = (2..12).map(id).collect();
    for task in &others {
        sim.add_task(
            &instance(),
            task,
            TaskScript::new(TaskType::Modify).running(1_000_000),
        );
    }
    let polled =
        |sim: &Simulator| -> u64 { others.iter().map(|t| sim.polls(&instance(), t)).sum() };
    let client = sim
        .client_builder()
        .budget(RequestBudget::unlimited().with_max_rps(20.0, 1))
        .build()
        .unwrap();
    let mut watchers: Vec<_> = others.iter().map(|t| (false, eager(&client, t))).collect();
    watchers.push((true, eager(&client, &throttled)));
    let mut background = Vec::new();
    let mut events = match max_in_flight {
        Some(n) => iotda_task_watcher::watch_many(watchers, n)
            .filter_map(|(mine, event)| async move { mine.then_some(event) })
            .boxed(),
        None => {
            let (_, mine) = watchers.pop().unwrap();
            for (_, other) in watchers {
                background.push(tokio::spawn(other.wait()));
            }
            tokio::task::yield_now().await;
            mine.events().boxed()
        }
    };
    let mut at_throttle = None;
    while let Some(event) = events.next().await {
        match event {
            TaskEvent::Retrying { .. } => at_throttle = Some(polled(&sim)),
            TaskEvent::Observed { .. } => break,
            _ => {}
        }
    }
    let at_throttle = at_throttle.expect("the first poll was throttled");
    for wait in background {
        wait.abort();
    }
    assert_eq!(sim.polls(&instance(), &throttled), 2);
    (at_throttle, polled(&sim) - at_throttle)
}

#[tokio::test]
async fn a_poll_the_service_throttled_keeps_its_place_in_line() {
    for max_in_flight in [None, Some(1), Some(4)] {
        let (before, between) = others_polled_around_a_throttle(max_in_flight).await;
        // The first poll queued behind the others' ...
        assert!(
            before >= 5,
            "{max_in_flight:?}: the first poll went after {before} others"
        );
        // ... its next, 10 ms after the throttle, went ahead of them: after the poll whose
        // token was on its way, and at most two more should the timers run late.
        assert!(
            between <= 3,
            "{max_in_flight:?}: the poll after the throttle went after {between} others"
        );
    }
}

/// The delays a wait planned after each of five throttles in a row, on a client with `budget`.
async fn delays_after_throttles(budget: RequestBudget) -> Vec<Duration> {
    let sim = Simulator::start().await;
    let task = id(1);
    let mut script = TaskScript::new(TaskType::Modify);
    for _ in 0..5 {
        script = script.fault(Fault::Throttled {
            retry_after: Duration::ZERO,
        });
    }
    sim.add_task(&instance(), &task, script.running(1).succeed());
    let client = sim.client_builder().budget(budget).build().unwrap();
    let policy = PollPolicy::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_jitter(false);
    let events: Vec<TaskEvent> = TaskWatcher::new(&client, &instance(), &task)
        .policy(policy)
        .timeout(Duration::from_secs(30))
        .events()
        .collect()
        .await;
    events
        .iter()
        .filter_map(|event| match event {
            TaskEvent::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn under_the_adaptive_budget_throttles_in_a_row_do_not_grow_a_waits_own_backoff() {
    // The budget paces every wait after a throttle; a wait refused a few times in a row
    // (a gateway refusing a share at random) comes back after its shortest delay.
    let paced = delays_after_throttles(RequestBudget::default()).await;
    assert_eq!(paced.len(), 5, "{paced:?}");
    assert!(
        paced.iter().all(|d| *d <= Duration::from_millis(5)),
        "{paced:?}"
    );
    // With no budget, the wait backs off alone: 5, 10, 20, 40, 80 ms.
    let alone = delays_after_throttles(RequestBudget::unlimited()).await;
    assert_eq!(alone.len(), 5, "{alone:?}");
    assert!(alone[4] >= Duration::from_millis(79), "{alone:?}");
}
