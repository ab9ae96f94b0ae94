//! The common traits the public types promise: a compile-time check, so that losing one (a
//! field that is not `Send`, a removed `Debug`) fails the build of this test.

use iotda_task_watcher::client::{ApiError, BuildError};
use iotda_task_watcher::watch::{BoundTask, OutcomeKind, PollPolicy, TaskEvents, WaitState};
use iotda_task_watcher::{
    InstanceTask, IotdaClient, IotdaClientBuilder, TaskEvent, TaskWatcher, WaitError,
};

fn send_sync<T: Send + Sync>() {}
fn debug<T: std::fmt::Debug>() {}
fn error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn the_client_the_watcher_and_the_event_stream_cross_threads() {
    send_sync::<IotdaClient>();
    send_sync::<BoundTask>();
    send_sync::<TaskWatcher>();
    send_sync::<TaskWatcher<fn() -> std::future::Ready<Result<InstanceTask, ApiError>>>>();
    send_sync::<TaskEvents>();
    send_sync::<TaskEvent>();
    send_sync::<InstanceTask>();
    send_sync::<WaitState>();
    send_sync::<PollPolicy>();
    send_sync::<OutcomeKind>();
}

#[test]
fn the_public_types_are_debug_and_the_errors_are_errors() {
    debug::<IotdaClient>();
    debug::<IotdaClientBuilder>();
    debug::<TaskWatcher>();
    debug::<TaskEvents>();
    debug::<PollPolicy>();
    error::<ApiError>();
    error::<BuildError>();
    error::<WaitError>();
}
