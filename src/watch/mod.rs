//! The watcher: polls a task until it is SUCCESS or FAILED, or until a [`Condition`] of yours
//! holds, within a deadline and until cancelled, as a stream of events or as a future.
//!
//! [`TaskWatcher`] is the builder and the wait; [`PollPolicy`] the delay policy and its lateness
//! promise, set with [`TaskWatcher::policy`]; [`Condition`] what a wait waits for;
//! [`TaskEvent`] what a wait reports on the way and [`WaitError`] why it did not end in
//! SUCCESS; [`WaitState`] a wait saved to go on in another process; [`watch_many`] and
//! [`wait_all`] many waits over one client; [`TaskSource`] the seam between the watcher and
//! HTTP, and [`BoundTask`] the client's source.
//!
//! ```no_run
//! # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use iotda_task_watcher::watch::{PollPolicy, TaskWatcher};
//!
//! let task = TaskWatcher::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?)
//!     .timeout(Duration::from_secs(30 * 60))
//!     .policy(PollPolicy::default().with_max_delay(Duration::from_secs(10)))
//!     .await?;
//! println!("done at {:?}", task.end_time);
//! # Ok(()) }
//! ```
//!
//! # The rules a wait follows
//!
//! | rule | what the wait does |
//! |---|---|
//! | first poll | At once, even when the deadline has already passed (the task may be done). A wait started after its deadline sends that one poll and no other, and its timeout says the deadline had passed. |
//! | delays | Exponential backoff, from the [`PollPolicy`] given to [`TaskWatcher::policy`]: `min_delay` (1 s), growing by `factor` (2) up to `max_delay` (30 s). Jitter adds up to 100 % of a step, capped at `max_delay`; `jitter_seed` makes it repeat from run to run. |
//! | status change | The backoff goes on where it was: leaving PENDING says nothing about when the task ends. The progress line starts over. Only a maintenance window's opening starts the backoff again from `min_delay`. |
//! | progress | Once the progress has risen, a line is fitted through the values seen in this status, recent values weighing more (each counts 0.8 times less for every value after it), and read for the time it reaches 100 % (or the progress the [condition](TaskWatcher::until) needs). A value that stands still longer than the line allows lowers the rate, so a stall pushes the end out; a value that goes backwards starts the line again. While the end is far, the wait sleeps a third of the time left: never longer than the time since the first value, nor than `max_progress_delay` (45 s). Around the end it polls every `near_end_delay` (15 s). A task late against its estimate is polled every tenth of its overrun, within `near_end_delay` and `max_delay`; each poll that finds it late with no new value doubles the near-end delay (up to `max_delay`), so an estimate that keeps slipping costs no more than the backoff. `with_progress_guided(false)` ([`PollPolicy::with_progress_guided`]) leaves the backoff alone. |
//! | maintenance window | A hint, never a verdict: only a resize made with `delay=true` waits for its window, and the task does not say which kind it is. For a PENDING task whose `operate_window` is closed, the sleeps stretch to a quarter of the time spent PENDING, up to `max_window_delay` (5 min) and never less than the backoff (so for the first two minutes, the plain backoff). No sleep passes the opening: a poll lands `min_delay` after it, and the backoff starts again there. [`TaskEvent::WaitingForWindow`] says once per opening that the task *may* be waiting for it. The wait goes on to its deadline whatever the window, unless [`TaskWatcher::fail_fast_on_window`] is on: then a window that opens after the deadline ends the wait at once with [`WaitError::WindowAfterDeadline`]. |
//! | **lateness promise** | While the service answers, a task's end (SUCCESS or FAILED, at whatever progress) is seen at most [`PollPolicy::max_lateness`] after it, plus the time of the request that sees it: `max_delay`, or with progress guidance `max_progress_delay` when that is longer. Default **45 s**. The only exceptions: a server's `Retry-After`, and the sleeps behind a closed window (at most `max_window_delay`). A property test over random settings and task histories (stalls, jumps, drops, status changes, windows) checks every sleep against it. |
//! | `Retry-After` | A longer server wait wins over the planned delay. |
//! | request budget | Every request takes a token from the client's budget first (see [`client::budget`](crate::client::budget)). The wait for it comes before the request timeout starts, and ends at the deadline, except for the one poll of a wait started after its deadline. |
//! | waits on one task | Through one client they share one stream of polls (see [`BoundTask`]): one request for all, and each answer is a poll of each. A failure is retried once, whichever wait saw it. |
//! | deadline | [`TaskWatcher::timeout`] (60 min) or an absolute [`TaskWatcher::deadline`]. The last sleep is clamped so that the final poll lands on the deadline (tokio's timer may wake it a millisecond late), and none is planned after it; a request in flight then ends within the request timeout. |
//! | 404 | Tolerated on the first 3 polls of a task not yet seen ([`TaskWatcher::not_found_tolerance`]); once the task was seen, it ends the wait. |
//! | endpoint never answers | Network failures (refused, reset, DNS, TLS) while no poll of the wait has had any answer are tolerated as often as a 404, then end the wait with [`WaitError::Api`] (kind `Network`), whose message names the endpoint (scheme, host, port) and the likely cause: nothing listening, no TLS there, an untrusted certificate, a name that does not resolve. Once the service has answered, they are transient. Request timeouts are always transient. |
//! | transient errors | Network, timeout, throttling (429, `APIGW.0308`, `IOTDA.021101` and `IOTDA.021102` over 403), 5xx, an unreadable 2xx: a [`TaskEvent::Retrying`], then the poll again after `min_delay`, growing by `factor` with each failure in a row up to `max_delay` (1, 2, 4, ... 30 s with the defaults). Failures do not move the schedule's backoff, so one failed poll near a task's end costs a second, not the longest sleep. |
//! | permanent errors | [`WaitError::Api`] at once, with the error as its source and the last snapshot. |
//! | unknown statuses | Not terminal: the wait goes on, and they show in [`TaskEvent::StatusChanged`]. |
//! | condition | Tested on every snapshot ([`TaskWatcher::until`]; by default SUCCESS). The first snapshot in which it holds resolves the wait; an end in which it does not ends it at once: [`WaitError::Failed`], or [`WaitError::Unmet`] for SUCCESS. |
//! | retry on failure | Only with [`TaskWatcher::retry_failed`]: a FAILED task is retried at once, up to `n` times, each a [`TaskEvent::Retried`]. The deadline covers every attempt, and a retry that cannot go before it ends the wait with the failure. A throttled retry goes again; any other error on a retry ends the wait with [`WaitError::Api`]. |
//! | cancellation | [`TaskWatcher::cancel_token`] ends the wait mid-sleep or mid-request with [`WaitError::Cancelled`]; dropping the future or the stream stops it too. The task on the service goes on. |
//! | tracing | A span `iotda_task_wait` with `instance_id` and `task_id` per wait; debug per poll, info on a status change, warn on a failed poll; never a secret. |
//!
//! # Faults, and what a wait does
//!
//! Each row is checked by a test (`tests/faults.rs`, and `tests/watcher.rs` for the deadline),
//! through the real client against a real server on loopback. In every case nothing panics
//! and the last snapshot is kept: a retry keeps it for the next poll, and every [`WaitError`]
//! carries it ([`WaitError::last`]). The kinds in brackets are
//! [`ApiErrorKind`](crate::client::ApiErrorKind)s.
//!
//! | fault | what the wait does |
//! |---|---|
//! | HTTP 500, 502, 503, 504 | [`TaskEvent::Retrying`] (`Server`); the next poll on the backoff |
//! | 429 with `Retry-After: 7` | `Retrying` (`Throttled`), and the next poll 7 s later (a longer server wait wins) |
//! | 429 with `Retry-After` as an HTTP date | the same, the date read against the answer's own `Date` |
//! | 403 `IOTDA.021101` or `IOTDA.021102` | `Retrying` (`Throttled`): rate limits, not a refusal |
//! | 401 `APIGW.0301`, clocks agreeing | ends: [`WaitError::Api`] (`Unauthorized`) |
//! | 401 while the answer's `Date` is over 5 minutes from the local clock | `Retrying` (`ClockSkew`); later requests are signed at the server's time, and the wait goes on |
//! | 403 with any other code, 400 | ends: [`WaitError::Api`] (`Forbidden`, `BadRequest`) |
//! | 404 before the task was seen | tolerated on the first 3 polls (`Retrying`, `NotFound`) |
//! | 404 after it was seen | ends: [`WaitError::Api`] (`NotFound`) |
//! | connection refused, after an answer | `Retrying` (`Network`), to the deadline |
//! | connection refused, or https to a plain-HTTP port, before any answer | `Retrying` (`Network`) 3 times, then ends: [`WaitError::Api`] (`Network`), naming the endpoint and the likely cause |
//! | connection reset in the middle of a body | `Retrying` (`Network`) |
//! | an answer slower than the request timeout | `Retrying` (`Timeout`); the request is dropped |
//! | truncated JSON, malformed JSON, an empty body | `Retrying` (`Decode`) |
//! | a body over [`max_body_bytes`](crate::IotdaClientBuilder::max_body_bytes) (256 KiB) | `Retrying` (`Decode`); reading stops at the bound (`Content-Length` is checked first) |
//! | unknown status, type or charge mode | kept as `Unknown(..)`; an unknown status is not terminal and shows in [`TaskEvent::StatusChanged`] |
//! | progress -1 or 250 | kept as sent in `progress`; [`progress_percent`](crate::InstanceTask::progress_percent) and the events say `None` |
//! | status going backwards (RUNNING to PENDING) | a `StatusChanged` like any other; the progress line starts over |
//! | missing fields (`{}`) | decodes; a missing status is a change to an unknown (empty) status |
//! | the deadline passes | [`WaitError::TimedOut`], with the last snapshot, the time elapsed, the polls sent, and the last poll's error, if it failed, as its source |
//! | the deadline had passed before the wait started | one poll: the task if it is done (SUCCESS, or [`WaitError::Failed`]), else `TimedOut` with `late_start` |
//! | cancellation | [`WaitError::Cancelled`], mid-sleep or mid-request |

mod clock;
mod condition;
mod engine;
mod error;
mod event;
mod events;
mod many;
mod outcome;
mod policy;
#[cfg(test)]
mod retry_tests;
mod schedule;
mod source;
mod state;
mod stop;
mod turns;
mod watcher;
mod window;

use std::time::Duration;

pub use self::condition::{Condition, ParseConditionError};
pub use self::error::{NotRetried, WaitError};
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
