//! `--state-dir`: each wait's state on disk while it runs, so that a retried job resumes it.

use std::path::{Path, PathBuf};

use iotda_task_watcher::watch::WaitState;
use iotda_task_watcher::{InstanceId, TaskEvent, TaskId, WaitError};

pub fn path(dir: &Path, task: &TaskId) -> PathBuf {
    dir.join(format!("{task}.json"))
}

/// Makes sure the state directory exists and takes files, before any request: a wait that
/// cannot save its state cannot keep its promise to resume.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    let refuse = |e: std::io::Error| {
        format!(
            "--state-dir {}: cannot keep state there: {e}",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(refuse)?;
    let probe = dir.join(format!(".iotda-wait-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(refuse)?;
    std::fs::remove_file(&probe).map_err(refuse)
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

/// Keeps a wait's state in `file`: written after each event (aside, then renamed, so that a
/// kill mid-write leaves the last good state), removed when the wait ends, unless it was
/// interrupted, so that the next attempt resumes it.
pub fn saver(file: PathBuf) -> impl FnMut(&TaskEvent, Option<WaitState>) + Send + 'static {
    move |event, state| {
        let result = match state {
            Some(state) => {
                let part = file.with_extension("json.part");
                let json = serde_json::to_vec_pretty(&state).expect("a wait state serializes");
                std::fs::write(&part, json).and_then(|()| std::fs::rename(&part, &file))
            }
            // Interrupted: the state stays for the next attempt.
            None if matches!(event.outcome(), Some(Err(WaitError::Cancelled { .. }))) => Ok(()),
            None => match std::fs::remove_file(&file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        if let Err(e) = result {
            note!("iotda-wait: cannot update {}: {e}", file.display());
        }
    }
}
