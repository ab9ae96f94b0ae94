//! [`TaskEvents`]: the stream of one wait's events, which can be saved between events.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FusedStream, Stream};
use sync_wrapper::SyncWrapper;

use super::{engine, TaskEvent, WaitState};

/// The events of one wait; see [`TaskWatcher::events`](super::TaskWatcher::events).
#[must_use = "streams do nothing unless polled"]
pub struct TaskEvents {
    state: Events,
    on_checkpoint: Option<CheckpointHook>,
}

/// Called after each event with where the wait then stands; see
/// [`TaskWatcher::on_checkpoint`](super::TaskWatcher::on_checkpoint).
/// Only ever called through `&mut`, so the wrapper keeps the stream `Sync` without asking the
/// hook to be.
pub(crate) type CheckpointHook = SyncWrapper<Box<dyn FnMut(&TaskEvent, Option<WaitState>) + Send>>;

impl TaskEvents {
    pub(crate) fn new(engine: Box<dyn engine::Run>, on_checkpoint: Option<CheckpointHook>) -> Self {
        Self {
            state: Events::Idle(engine),
            on_checkpoint,
        }
    }
}

enum Events {
    /// Between events: the engine is here, and can be saved.
    Idle(Box<dyn engine::Run>),
    /// Working on the next event. The step is only ever touched through `&mut`, so the
    /// wrapper makes the stream `Sync` without asking the task source's futures to be.
    Busy(SyncWrapper<engine::StepFuture>),
    Done,
}

impl TaskEvents {
    /// Where the wait stands, to resume it later, perhaps in another process, with
    /// [`TaskWatcher::resume`](super::TaskWatcher::resume) or
    /// [`TaskWatcher::resume_from`](super::TaskWatcher::resume_from). `None` while the stream is
    /// working towards an event (take it after an event instead) and after the final one.
    ///
    /// ```no_run
    /// # async fn run(client: iotda_task_watcher::IotdaClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    /// use iotda_task_watcher::TaskWatcher;
    /// let mut events = TaskWatcher::new(&client, &"a1b2c3d4".parse()?, &"075f413d".parse()?).events();
    /// while let Some(_event) = events.next().await {
    ///     if let Some(state) = events.checkpoint() {
    ///         std::fs::write("wait.json", serde_json::to_vec(&state)?)?;
    ///     }
    /// }
    /// // Elsewhere, later: TaskWatcher::resume(&client, serde_json::from_slice(&std::fs::read("wait.json")?)?)?
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn checkpoint(&self) -> Option<WaitState> {
        match &self.state {
            Events::Idle(engine) => Some(engine.checkpoint()),
            Events::Busy(_) | Events::Done => None,
        }
    }
}

impl Stream for TaskEvents {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        loop {
            match std::mem::replace(&mut self.state, Events::Done) {
                Events::Idle(engine) => self.state = Events::Busy(SyncWrapper::new(engine.next())),
                Events::Busy(mut step) => {
                    return match step.get_mut().as_mut().poll(cx) {
                        Poll::Pending => {
                            self.state = Events::Busy(step);
                            Poll::Pending
                        }
                        Poll::Ready((Some(event), engine)) => {
                            // After the final event there is nothing left to save.
                            if event.outcome().is_none() {
                                self.state = Events::Idle(engine);
                            }
                            if self.on_checkpoint.is_some() {
                                let state = self.checkpoint();
                                if let Some(save) = self.on_checkpoint.as_mut() {
                                    (save.get_mut())(&event, state);
                                }
                            }
                            Poll::Ready(Some(event))
                        }
                        Poll::Ready((None, _)) => Poll::Ready(None),
                    };
                }
                Events::Done => return Poll::Ready(None),
            }
        }
    }
}

impl FusedStream for TaskEvents {
    fn is_terminated(&self) -> bool {
        matches!(self.state, Events::Done)
    }
}

impl std::fmt::Debug for TaskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            Events::Idle(_) => "idle",
            Events::Busy(_) => "busy",
            Events::Done => "done",
        };
        f.debug_struct("TaskEvents")
            .field("state", &state)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .finish()
    }
}
