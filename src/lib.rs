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
//!   cancellation (or until a [`Condition`](watch::Condition) of yours holds, and retrying a
//!   FAILED task when asked to), as a paced [`Stream`](futures::Stream) of [`TaskEvent`]s or
//!   as a future;
//!   [`wait_for_task`] is the one-liner, [`watch_many`] and [`wait_all`] wait for many tasks
//!   over one client. Its one promise about time: a task's end is seen at most
//!   [`PollPolicy::max_lateness`](watch::PollPolicy::max_lateness) after it (45 s by default).
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
//!
//! # Try it without an account
//!
//! The `simulator` feature adds the `simulator` module: an IoTDA server on loopback with
//! scripted tasks and faults, which checks signatures as the gateway does. `cargo run --example
//! quickstart` waits for a simulated task with a progress bar; the crate's own tests and
//! benches use it.
//!
//! # Features
//!
//! - `simulator`: the `simulator` module (pulls in `wiremock`).
//! - `cli`: the `iotda-wait` command (`cargo install iotda-task-watcher --features cli,redis`),
//!   with exit codes for scripts and JSON lines for programs; without `redis`, it refuses
//!   `--shared-budget`.
//! - `redis`: a request budget shared by many processes through Redis (`client::shared`).
//!
//! # Where things are
//!
//! The root holds what a first program needs. The rest is in modules named for what they
//! hold: [`client`] (the client, its builder, [`ApiError`](client::ApiError)), with
//! [`client::credentials`], [`client::endpoint`] and [`client::signer`]; [`ids`]; [`model`]
//! (the answer); [`watch`] (the watcher, its settings, events, errors and saved state);
//! [`env`](mod@env) (the official SDKs' environment variables).
//!
//! # Stability
//!
//! Configuration types are built with methods, not struct literals, and enums and their struct
//! variants that may grow are `#[non_exhaustive]`: new settings, events, error reasons and
//! fields, and new known status or type values, arrive without a breaking change.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::pedantic)]
#![allow(
    clippy::single_match_else,
    reason = "a two-arm match over Some and None reads as clearly as if-let-else"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod choose;
pub mod client;
pub mod env;
#[cfg(test)]
mod fuzz;
pub mod ids;
pub mod model;
mod queue;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod simulator;
pub mod watch;

pub use client::credentials::Credentials;
pub use client::{IotdaClient, IotdaClientBuilder};
pub use ids::{InstanceId, ProjectId, TaskId};
pub use model::{InstanceTask, TaskStatus, TaskType};
pub use watch::{wait_all, wait_for_task, watch_many, Outcome, TaskEvent, TaskWatcher, WaitError};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
