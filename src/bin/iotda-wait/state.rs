//! `--state-dir`: each wait's state on disk while it runs, so that a retried job resumes it.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use iotda_task_watcher::{InstanceId, TaskEvent, TaskEvents, TaskId, WaitError, WaitState};

pub fn path(dir: &Path, task: &TaskId) -> PathBuf {
    dir.join(format!("{task}.json"))
}

/// The saved state of `task`, if any. A file that cannot be used is an error rather than a
/// fresh start, which would lose the first attempt's deadline.
pub fn load(dir: &Path, instance: &InstanceId, task: &TaskId) -> Result<Option<WaitState>, String> {
    let file = path(dir, task);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let state: WaitState = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a saved wait ({e}); remove it to start afresh",
            file.display()
        )
    })?;
    if state.instance_id() != Some(instance) || state.task_id() != Some(task) {
        return Err(format!(
            "{} belongs to another wait; remove it to start afresh",
            file.display()
        ));
    }
    Ok(Some(state))
}

/// Passes a wait's events on, saving its state after each one and removing the file when the
/// wait ends, unless it was interrupted.
pub struct Saving {
    events: TaskEvents,
    file: Option<PathBuf>,
}

impl Saving {
    pub fn new(events: TaskEvents, file: Option<PathBuf>) -> Self {
        if let Some(dir) = file.as_ref().and_then(|f| f.parent()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("iotda-wait: cannot create {}: {e}", dir.display());
            }
        }
        Self { events, file }
    }

    fn save(&self, event: &TaskEvent) {
        let Some(file) = &self.file else {
            return;
        };
        let result = if matches!(event.outcome(), Some(Err(WaitError::Cancelled { .. }))) {
            // Interrupted: the state stays for the next attempt.
            Ok(())
        } else if event.outcome().is_some() {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else if let Some(state) = self.events.checkpoint() {
            // Written aside, then renamed: a kill mid-write leaves the last good state.
            let part = file.with_extension("json.part");
            let json = serde_json::to_vec_pretty(&state).expect("a wait state serializes");
            std::fs::write(&part, json).and_then(|()| std::fs::rename(&part, file))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            eprintln!("iotda-wait: cannot update {}: {e}", file.display());
        }
    }
}

impl Stream for Saving {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        let next = Pin::new(&mut self.events).poll_next(cx);
        if let Poll::Ready(Some(event)) = &next {
            self.save(event);
        }
        next
    }
}
