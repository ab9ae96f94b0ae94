//! The seam between the watcher and HTTP: something that returns the latest snapshot of a task.

use std::future::Future;

use std::sync::Arc;

use crate::client::feed::Feed;
use crate::client::{ApiError, IotdaClient};
use crate::ids::{InstanceId, TaskId};
use crate::model::InstanceTask;

/// Where a watcher gets the latest snapshot of its task.
///
/// [`BoundTask`] is the production source. Any `Fn() -> impl Future<Output =
/// Result<InstanceTask, ApiError>>` closure is one too, which is how tests script a task:
///
/// ```
/// use iotda_task_watcher::{InstanceTask, TaskWatcher};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let source = || async { Ok(serde_json::from_str::<InstanceTask>(r#"{"status":"SUCCESS"}"#).unwrap()) };
/// let task = TaskWatcher::from_source(source).wait().await.unwrap();
/// assert!(task.is_terminal());
/// # }
/// ```
pub trait TaskSource: Send + Sync {
    /// Fetches the latest snapshot. The watcher bounds the returned future with its request
    /// timeout, and drops it on cancellation.
    fn fetch(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send;

    /// The instance and task this source reads, for logs and tags.
    fn ids(&self) -> Option<(&InstanceId, &TaskId)> {
        None
    }

    /// Waits until a request may be sent: the client's request budget, for
    /// [`BoundTask`]. The watcher starts the request timeout after it, and gives up on it at
    /// its deadline. Ready at once by default.
    fn ready(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// As [`ready`](Self::ready), for a poll after one the service throttled: that one had its
    /// turn and was refused, so this one keeps its place in line, ahead of every poll queued
    /// but those after throttles of their own. For [`BoundTask`], a place at the front of the
    /// client budget's queue. By default, [`ready`](Self::ready).
    fn ready_ahead(&self) -> impl Future<Output = ()> + Send {
        self.ready()
    }

    /// Retries the task after it FAILED, and answers with the task as the service restarts
    /// it: for [`BoundTask`], [`IotdaClient::retry_task`]. The watcher calls it only with
    /// [`retry_failed`](crate::TaskWatcher::retry_failed), after [`ready`](Self::ready), and
    /// bounds it with its request timeout. By default the source cannot retry: an error of kind
    /// [`Other`](crate::client::ApiErrorKind::Other), which ends the wait.
    fn retry(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
        std::future::ready(Err(ApiError::new(crate::client::ApiErrorKind::Other)
            .with_detail("this task source cannot retry a task")))
    }
}

impl<F, Fut> TaskSource for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<InstanceTask, ApiError>> + Send,
{
    fn fetch(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
        self()
    }
}

/// A client bound to one task: the production [`TaskSource`], which
/// [`TaskWatcher::new`](crate::TaskWatcher::new) makes.
///
/// Waits on one task through one client share its polls: one request goes out for all of
/// them, and every answer reaches each as one of its own polls; a failure is retried once,
/// whichever wait saw it. A wait whose source is a `BoundTask` shares; a source of yours that
/// wraps one polls on its own.
///
/// ```no_run
/// # fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
/// use iotda_task_watcher::watch::BoundTask;
/// use iotda_task_watcher::TaskWatcher;
/// let bound = BoundTask::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?);
/// let watcher = TaskWatcher::from_source(bound);
/// # drop(watcher); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BoundTask {
    client: IotdaClient,
    instance_id: InstanceId,
    task_id: TaskId,
    /// The polls shared with every other wait on this task through this client, and the
    /// task's URL (built once: every poll asks for it).
    feed: Arc<Feed>,
}

impl BoundTask {
    /// `client` bound to `task_id` on `instance_id`.
    #[must_use]
    pub fn new(client: &IotdaClient, instance_id: &InstanceId, task_id: &TaskId) -> Self {
        Self {
            feed: client.feed(client.task_url(instance_id, task_id)),
            client: client.clone(),
            instance_id: instance_id.clone(),
            task_id: task_id.clone(),
        }
    }

    /// The task's shared polls.
    pub(crate) fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// The client.
    #[must_use]
    pub fn client(&self) -> &IotdaClient {
        &self.client
    }

    /// The instance.
    #[must_use]
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// The task.
    #[must_use]
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }
}

impl TaskSource for BoundTask {
    fn fetch(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
        // The watcher's timeout bounds the request; a second timer here would only add work.
        self.client.fetch(self.feed.url(), None)
    }

    fn ids(&self) -> Option<(&InstanceId, &TaskId)> {
        Some((&self.instance_id, &self.task_id))
    }

    fn ready(&self) -> impl Future<Output = ()> + Send {
        self.client.budget().acquire()
    }

    fn ready_ahead(&self) -> impl Future<Output = ()> + Send {
        self.client.budget().acquire_ahead()
    }

    fn retry(&self) -> impl Future<Output = Result<InstanceTask, ApiError>> + Send {
        let url = crate::client::retry_url(self.feed.url());
        let client = self.client.clone();
        async move { client.send(reqwest::Method::POST, &url, None).await }
    }
}
