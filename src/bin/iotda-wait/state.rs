//! `--state-dir`: each wait's state on disk, so that a job killed and retried resumes it, and
//! a run after the end reports it again.
//!
//! - `DIR/<task_id>.json` holds the wait's state, written when an answer changes the task,
//!   before every retry (counted, so that a kill while it is out leaves it spent), at the end,
//!   and otherwise at most every two seconds. The end is kept: a later run with the same ids resumes from it, polls once to confirm, and spends no
//!   retry already spent. `--fresh` removes it first.
//! - Each write is whole or absent: a temporary file, synced, renamed over the old one, and
//!   the folder synced, so a reader (or a process killed mid-write) finds the old state or the
//!   new, never half of one.
//! - `DIR/choice-<instance_id>.json` holds the tasks chosen from the instance's list
//!   (`--latest`, `--since`, `--all`) with the flags, as typed, that chose them, and when: a
//!   run started again with the same flags before the first run's deadline (`--deadline`,
//!   else its start and `--timeout` after) waits for the same tasks, never newer ones. Other
//!   flags, a later run, and `--fresh` choose anew.
//! - `DIR/<task_id>.lock` is held (an advisory `flock`) while a process waits for the task. A
//!   process takes the locks of all its tasks at once or none: while one is held elsewhere it
//!   lets go of the others and tries again, up to its deadline, so processes given the same
//!   tasks in any orders never deadlock. The kernel releases the lock of a process that dies,
//!   however it dies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iotda_task_watcher::watch::WaitState;
use iotda_task_watcher::{InstanceId, InstanceTask, TaskId};

pub fn path(dir: &Path, task: &TaskId) -> PathBuf {
    dir.join(format!("{task}.json"))
}

fn lock_path(dir: &Path, task: &TaskId) -> PathBuf {
    dir.join(format!("{task}.lock"))
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

/// The tasks chosen with the flags `typed`, as typed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Choice {
    flags: String,
    /// Until when a run started again keeps to the choice.
    until: jiff::Timestamp,
    tasks: Vec<InstanceTask>,
}

fn choice_path(dir: &Path, instance: &InstanceId) -> PathBuf {
    dir.join(format!("choice-{instance}.json"))
}

/// The tasks chosen before with the flags `typed`, if they were and the choice holds still.
pub fn kept_choice(
    dir: &Path,
    instance: &InstanceId,
    typed: &str,
) -> Result<Option<Vec<InstanceTask>>, String> {
    let file = choice_path(dir, instance);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let kept: Choice = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{} is not a choice this command kept ({e}); remove it, or pass --fresh",
            file.display()
        )
    })?;
    let holds = kept.flags == typed && jiff::Timestamp::now() < kept.until;
    Ok(holds.then_some(kept.tasks))
}

/// Keeps the tasks chosen with the flags `typed`, for runs started again up to `until`: whole
/// or not at all, as a wait's state.
pub fn keep_choice(
    dir: &Path,
    instance: &InstanceId,
    typed: &str,
    until: std::time::SystemTime,
    tasks: &[InstanceTask],
) -> Result<(), String> {
    let file = choice_path(dir, instance);
    let part = dir.join(format!(
        "choice-{instance}.json.{}.part",
        std::process::id()
    ));
    let until = jiff::Timestamp::try_from(until).map_err(|e| format!("the deadline: {e}"))?;
    let kept = Choice {
        flags: typed.to_owned(),
        until,
        tasks: tasks.to_vec(),
    };
    let write = || -> std::io::Result<()> {
        let mut out = File::create(&part)?;
        out.write_all(&serde_json::to_vec_pretty(&kept).map_err(std::io::Error::other)?)?;
        out.sync_all()?;
        std::fs::rename(&part, &file)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&part);
        format!("cannot keep the choice in {}: {e}", file.display())
    })
}

/// Removes the saved state of `task`, for `--fresh`.
pub fn forget(dir: &Path, task: &TaskId) -> Result<(), String> {
    let file = path(dir, task);
    match std::fs::remove_file(&file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("--fresh: cannot remove {}: {e}", file.display()))
        }
        _ => Ok(()),
    }
}

/// The lock of one task in a state directory, held while this process waits for it.
pub struct TaskLock {
    file: File,
}

/// Why the locks of a run's tasks were not all taken.
pub enum LockError {
    /// A lock file could not be opened or locked.
    Io(String),
    /// Another process still held a lock at the deadline.
    TimedOut { task: TaskId, holder: String },
}

/// Takes the lock of every task in `tasks`, all or none at a time: when one is held by another
/// process, every lock taken so far is let go, the holder is named on stderr, and all are
/// tried again a moment later. So two processes given the same tasks in any orders never wait
/// for each other's locks at once, and the one that waits gives up at `deadline`.
pub async fn lock_all(
    dir: &Path,
    tasks: &[TaskId],
    deadline: std::time::SystemTime,
) -> Result<Vec<TaskLock>, LockError> {
    let mut pause = Duration::from_millis(10);
    let mut said: Option<(TaskId, String)> = None;
    loop {
        let mut held = Vec::with_capacity(tasks.len());
        let mut busy = None;
        for task in tasks {
            match try_lock(dir, task).map_err(LockError::Io)? {
                Ok(lock) => held.push(lock),
                Err(holder) => {
                    busy = Some((task.clone(), holder));
                    break;
                }
            }
        }
        let Some((task, holder)) = busy else {
            for (lock, task) in held.iter_mut().zip(tasks) {
                lock.mark_held();
                sweep(dir, task);
            }
            return Ok(held);
        };
        drop(held);
        if said.as_ref() != Some(&(task.clone(), holder.clone())) {
            note!(
                "iotda-wait: {task}: waiting for {holder}, which holds {}, to finish",
                lock_path(dir, &task).display()
            );
            said = Some((task.clone(), holder.clone()));
        }
        let left = deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        if left.is_zero() {
            return Err(LockError::TimedOut { task, holder });
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Takes the lock of `task` if it is free; else who holds it.
fn try_lock(dir: &Path, task: &TaskId) -> Result<Result<TaskLock, String>, String> {
    let path = lock_path(dir, task);
    let cannot = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => Ok(Ok(TaskLock { file })),
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Ok(Err(if holder.is_empty() {
                "another process".to_owned()
            } else {
                holder.to_owned()
            }))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(cannot(e)),
    }
}

impl TaskLock {
    /// Writes who holds the lock, for the next process that finds it taken.
    fn mark_held(&mut self) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let me = format!("process {} on {}", std::process::id(), host.trim());
        let file = &mut self.file;
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()));
    }
}

/// The saved state of `task`, if any. A file that cannot be used is an error rather than a
/// fresh start, which would lose the first attempt's deadline and spent retries.
pub fn load(dir: &Path, instance: &InstanceId, task: &TaskId) -> Result<Option<WaitState>, String> {
    let file = path(dir, task);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let state: WaitState = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a saved wait ({e}); pass --fresh to start over (its deadline and spent \
             retries are then forgotten)",
            file.display()
        )
    })?;
    if state.instance_id() != Some(instance) || state.task_id() != Some(task) {
        return Err(format!(
            "{} belongs to another wait; pass --fresh to start over",
            file.display()
        ));
    }
    Ok(Some(state))
}

/// How often a wait whose state changed only in its counts and schedule is written: a state
/// write costs more CPU than the poll it follows (see `docs/benchmarks.md`), so a wait polled
/// many times a second is not written as often.
const EVERY: Duration = Duration::from_secs(2);

/// Keeps a wait's state in `file`, whole (see [`WaitState::write_to`]): at once when the task,
/// the retries or the end changed; otherwise at most every two seconds, so that a process
/// killed between writes resumes at most two seconds of polls behind. A write that fails is
/// said once on stderr, and its error handed back: the wait sends no retry it could not record.
pub fn saver(file: PathBuf) -> impl FnMut(&WaitState) -> std::io::Result<()> + Send + 'static {
    let mut warned = false;
    let mut written: Option<(Instant, WaitState)> = None;
    move |state| {
        let news = state.ended()
            || written.as_ref().is_none_or(|(at, before)| {
                before.last() != state.last()
                    || before.retries() != state.retries()
                    || before.retry_unconfirmed() != state.retry_unconfirmed()
                    || at.elapsed() >= EVERY
            });
        if !news {
            return Ok(());
        }
        state
            .write_to(&file)
            .inspect(|()| written = Some((Instant::now(), state.clone())))
            .inspect_err(|e| {
                if !std::mem::replace(&mut warned, true) {
                    note!("iotda-wait: cannot update {}: {e}", file.display());
                }
            })
    }
}

/// Removes what writes of `task`'s state that failed midway left behind. Only the holder of
/// the task's lock writes its state, so every such file is stale once the lock is held.
fn sweep(dir: &Path, task: &TaskId) {
    let prefix = format!("{task}.json.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && name.ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
