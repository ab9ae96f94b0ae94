//! A budget shared through a real `redis-server` (started by each test on a loopback port),
//! by clients that stand for processes, over real HTTP through the simulator. Skipped, saying
//! so, where `redis-server` is not installed (and failing instead under `IOTDA_REQUIRE_REDIS`).

mod common;

use std::time::{Duration, Instant};

use iotda_task_watcher::client::budget::RequestBudget;
use iotda_task_watcher::client::shared::SharedBudget;
use iotda_task_watcher::simulator::{RedisServer, Simulator, TaskScript};
use iotda_task_watcher::{IotdaClient, TaskStatus, TaskType};

use common::{every_10ms as eager, task_n as id};

fn instance() -> iotda_task_watcher::InstanceId {
    common::INSTANCE.parse().unwrap()
}

/// A client of the simulator whose budget is `budget`, shared through `shared`.
fn client(sim: &Simulator, budget: RequestBudget, shared: SharedBudget) -> IotdaClient {
    sim.client_builder()
        .budget(budget)
        .shared_budget(shared)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_rate_given_is_the_fleets_not_each_processs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = Simulator::start().await;
    // 20 requests a second in bursts of 2, for three "processes" each polling its own task
    // every 10 ms (300 a second in all, left to themselves).
    let budget = RequestBudget::unlimited().with_max_rps(20.0, 2);
    let clients: Vec<_> = (0..3)
        .map(|_| client(&sim, budget, SharedBudget::redis(&redis.url()).unwrap()))
        .collect();
    for n in 0..3 {
        sim.add_task(
            &instance(),
            &id(n),
            TaskScript::new(TaskType::Modify).running(1_000_000),
        );
    }
    let start = Instant::now();
    let run = Duration::from_millis(1500);
    let waits = clients.iter().zip(0..).map(|(client, n)| {
        let watcher = eager(client, &id(n)).timeout(run);
        async move { watcher.wait().await }
    });
    for outcome in futures::future::join_all(waits).await {
        assert!(outcome.is_err(), "the tasks run on: {outcome:?}");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = sim.requests();
    // At most rate x t + burst in all (one more for a poll sent as the deadline passed).
    let most = (20.0 * elapsed + 2.0 + 1.0).floor() as u64;
    assert!(
        sent <= most,
        "{sent} requests in {elapsed:.2} s, more than {most}"
    );
    // And the rate was used: each client alone would have sent one a tick.
    assert!(sent >= 20, "{sent} requests in {elapsed:.2} s");
    for client in &clients {
        let stats = client.budget_stats();
        assert!(!stats.pacing_alone);
        // One call to Redis per request, and one for a slot booked when the deadline came.
        assert!(
            (stats.requests..=stats.requests + 1).contains(&stats.shared_calls),
            "{stats:?}"
        );
    }
}

#[tokio::test]
async fn redis_killed_mid_wait_is_never_the_waits_failure() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let logs = common::capture_logs();
    let sim = Simulator::start().await;
    let task = id(1);
    sim.add_task(
        &instance(),
        &task,
        TaskScript::new(TaskType::Modify)
            .running_for(Duration::from_millis(1200))
            .succeed(),
    );
    let shared = SharedBudget::redis(&redis.url())
        .unwrap()
        .probe_every(Duration::from_millis(200));
    let client = client(&sim, RequestBudget::default(), shared);
    let wait = tokio::spawn(eager(&client, &task).wait());
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        client.budget_stats().pacing_alone,
        "fell back within 400 ms"
    );
    let polls_while_down = sim.polls(&instance(), &task);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sim.polls(&instance(), &task) > polls_while_down,
        "polling went on while Redis was down"
    );
    redis.restart();
    let outcome = wait.await.unwrap().expect("the wait ends as the task does");
    assert_eq!(outcome.status, Some(TaskStatus::Success));
    // The task ran on its own clock: the wait ended soon after it did.
    assert!(killed.elapsed() < Duration::from_secs(5));
    // Polling brings the process back within a probe or two.
    sim.add_task(
        &instance(),
        &id(2),
        TaskScript::new(TaskType::Modify).running(20).succeed(),
    );
    eager(&client, &id(2)).wait().await.unwrap();
    assert!(!client.budget_stats().pacing_alone, "rejoined");
    let text = logs.text();
    assert_eq!(
        text.matches("the shared budget does not answer").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("the shared budget answers again").count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn a_redis_password_appears_in_no_log_error_or_debug_output() {
    let logs = common::capture_logs();
    let sim = Simulator::start().await;
    let task = id(1);
    sim.add_task(
        &instance(),
        &task,
        TaskScript::new(TaskType::Modify).running(3).succeed(),
    );
    // Nothing listens on port 1: every call fails, and the waits go on without Redis.
    let url = "redis://:hunter2-s3cret@127.0.0.1:1/0";
    let shared = SharedBudget::redis(url).unwrap();
    let shown = format!("{shared} {shared:?}");
    let builder = sim
        .client_builder()
        .shared_budget(shared)
        .budget(RequestBudget::unlimited().with_max_rps(100.0, 1));
    let debug = format!("{builder:?}");
    let client = builder.build().unwrap();
    let outcome = eager(&client, &task).wait().await;
    assert_eq!(outcome.unwrap().status, Some(TaskStatus::Success));
    assert!(client.budget_stats().pacing_alone);
    let refused = SharedBudget::redis("http://:hunter2-s3cret@host/")
        .unwrap_err()
        .to_string();
    let text = logs.text();
    assert!(text.contains("does not answer"), "{text}");
    for output in [&shown, &debug, &refused, &text] {
        assert!(!output.contains("hunter2"), "{output}");
    }
}
