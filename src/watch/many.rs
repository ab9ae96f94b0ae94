//! Many waits over one client: merged events, and all outcomes at once.

use futures::stream::{Stream, StreamExt};

use super::turns::Turns;
use super::{Outcome, TaskEvent, TaskSource, TaskWatcher};
use crate::{InstanceId, IotdaClient, TaskId};

/// Runs many waits at once and merges their events, each tagged with its key. At most
/// `max_in_flight` polls are in flight together (at least one; `usize::MAX` for no limit),
/// each in its turn: first come first served, but a wait whose last poll the service
/// throttled goes first. Every wait keeps its own schedule and deadline. The stream ends
/// after every wait's [`TaskEvent::Done`].
///
/// ```no_run
/// # async fn run(client: iotda_task_watcher::IotdaClient, instance: iotda_task_watcher::InstanceId,
/// #              tasks: Vec<iotda_task_watcher::TaskId>) {
/// use futures::StreamExt;
/// use iotda_task_watcher::{watch_many, TaskEvent, TaskWatcher};
/// let watchers = tasks.into_iter().map(|t| (t.clone(), TaskWatcher::new(&client, &instance, &t)));
/// let mut events = watch_many(watchers, 8);
/// while let Some((task, event)) = events.next().await {
///     if let TaskEvent::Done(outcome) = event {
///         println!("{task}: {}", if outcome.is_ok() { "SUCCESS" } else { "not SUCCESS" });
///     }
/// }
/// # }
/// ```
pub fn watch_many<K, S, I>(
    watchers: I,
    max_in_flight: usize,
) -> impl Stream<Item = (K, TaskEvent)> + Send
where
    I: IntoIterator<Item = (K, TaskWatcher<S>)>,
    K: Clone + Send + Unpin + 'static,
    S: TaskSource + 'static,
{
    let limiter = Turns::new(max_in_flight);
    futures::stream::select_all(watchers.into_iter().map(|(key, watcher)| {
        watcher
            .request_limiter(limiter.clone())
            .events()
            .map(move |event| (key.clone(), event))
    }))
}

/// Waits for every task with the default settings, at most `max_in_flight` polls at a time
/// (as [`watch_many`] counts them). The outcomes come back in the order of `task_ids`.
#[allow(
    clippy::missing_panics_doc,
    reason = "cannot panic: every event stream ends with TaskEvent::Done"
)]
pub async fn wait_all(
    client: &IotdaClient,
    instance_id: &InstanceId,
    task_ids: impl IntoIterator<Item = TaskId>,
    max_in_flight: usize,
) -> Vec<(TaskId, Outcome)> {
    let ids: Vec<TaskId> = task_ids.into_iter().collect();
    let watchers = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i, TaskWatcher::new(client, instance_id, id)))
        .collect::<Vec<_>>();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ids.len()];
    let mut events = std::pin::pin!(watch_many(watchers, max_in_flight));
    while let Some((i, event)) = events.next().await {
        if let TaskEvent::Done(outcome) = event {
            outcomes[i] = Some(outcome);
        }
    }
    ids.into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| (id, outcome.expect("every wait ends with TaskEvent::Done")))
        .collect()
}
