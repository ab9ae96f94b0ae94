//! The watcher: polls a task until it is SUCCESS or FAILED, with exponential delays, a deadline
//! and cancellation, as a stream of events or as a future.
//!
//! [`TaskWatcher`] is the builder and the wait; [`PollPolicy`] the delay policy and its lateness
//! promise; [`TaskEvent`] what a wait reports on the way and [`WaitError`] why it did not end
//! in SUCCESS; [`WaitState`] a wait saved to go on in another process; [`TaskSource`] the seam
//! between the watcher and HTTP.

mod clock;
mod condition;
mod engine;
mod error;
mod event;
mod events;
mod many;
mod outcome;
mod policy;
mod schedule;
mod source;
mod state;
mod stop;
mod watcher;
mod window;

use std::time::Duration;

pub use self::condition::{Condition, ParseConditionError};
pub use self::error::WaitError;
pub use self::event::{Outcome, TaskEvent};
pub use self::events::TaskEvents;
pub use self::many::{wait_all, watch_many};
pub use self::outcome::OutcomeKind;
pub use self::policy::PollPolicy;
pub use self::source::{BoundTask, TaskSource};
pub use self::state::{ResumeError, WaitState};
pub use self::watcher::TaskWatcher;
use crate::{InstanceId, IotdaClient, TaskId};

/// How long a wait may run unless told otherwise: 60 minutes.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How many polls may answer 404 before a new task is first seen: 3.
pub const DEFAULT_NOT_FOUND_TOLERANCE: u32 = 3;

/// Waits for one task with the defaults: 60 minutes at most, delays from 1 s to 30 s.
///
/// ```no_run
/// # async fn deploy(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
/// use iotda_task_watcher::wait_for_task;
/// let instance = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
/// let task = "075f413d-a3bb-4243-974d-8eb9221c1234".parse()?;
/// let done = wait_for_task(&client, &instance, &task).await?;
/// println!("{} finished: {:?}", task, done.end_time);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`WaitError`] when the task FAILED, the deadline passed, or the service answered with an
/// error that retrying cannot fix; each carries the last snapshot seen.
pub async fn wait_for_task(
    client: &IotdaClient,
    instance_id: &InstanceId,
    task_id: &TaskId,
) -> Outcome {
    TaskWatcher::new(client, instance_id, task_id).wait().await
}
