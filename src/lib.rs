//! Waits for Huawei Cloud IoTDA instance tasks to finish.
//!
//! IoTDA instance changes (create, resize, freeze, allow-list updates, ...) run asynchronously:
//! the API hands back a task id, and the caller polls "Query Instance Task Details" until the
//! task is SUCCESS or FAILED. This crate provides:
//!
//! - [`IotdaClient`]: a typed client for that call, signed with SDK-HMAC-SHA256 exactly as
//!   Huawei Cloud's official SDKs sign it;
//! - the model of the answer, [`InstanceTask`], which keeps values it does not know;
//! - validated ids, [`ProjectId`], [`InstanceId`] and [`TaskId`], refused before any request
//!   when they could not be right;
//! - [`TaskWatcher`]: polls with exponential backoff until SUCCESS, FAILED, the deadline or
//!   cancellation, as a paced [`Stream`](futures::Stream) of [`TaskEvent`]s or as a future;
//!   [`wait_for_task`] is the one-liner, [`watch_many`] and [`wait_all`] wait for many tasks
//!   over one client.
//!
//! ```no_run
//! use iotda_task_watcher::{wait_for_task, Credentials, IotdaClient, ProjectId};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = IotdaClient::builder()
//!     .region("cn-north-4")
//!     .credentials(Credentials::from_env()?)
//!     .project_id(ProjectId::from_env()?)
//!     .build()?;
//! let task = wait_for_task(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?).await?;
//! println!("{:?}", task.status);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
#[cfg(test)]
mod fuzz;
mod ids;
mod model;
#[cfg(feature = "simulator")]
pub mod simulator;
mod watch;

pub use client::credentials::{
    Credentials, EnvError, Secret, ENV_AK, ENV_PROJECT_ID, ENV_REGION, ENV_SECURITY_TOKEN, ENV_SK,
};
pub use client::endpoint::{
    override_variable as endpoint_override_variable, Endpoint, EndpointError, REGIONS,
};
pub use client::error::{parse_retry_after, ApiError, ApiErrorKind};
pub use client::signer;
pub use client::{
    BuildError, IotdaClient, IotdaClientBuilder, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT,
    USER_AGENT,
};
pub use ids::{IdError, IdProblem, InstanceId, ProjectId, TaskId};
pub use model::{
    ChargeMode, Flavor, InstanceTask, OperateWindow, TargetConfig, TaskStatus, TaskTime, TaskType,
};
pub use watch::{
    wait_all, wait_for_task, watch_many, Backoff, BoundTask, Outcome, ResumeError, TaskEvent,
    TaskEvents, TaskSource, TaskWatcher, WaitError, WaitState, DEFAULT_NOT_FOUND_TOLERANCE,
    DEFAULT_WAIT_TIMEOUT,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
