//! What the command prints: stderr for people, stdout for programs.

use std::cell::Cell;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::model::TaskTime;
use iotda_task_watcher::watch::{Condition, OutcomeKind};
use iotda_task_watcher::{
    InstanceTask, Outcome, TaskEvent, TaskId, TaskStatus, TaskType, WaitError,
};
use serde_json::{json, Map, Value};

use crate::args::Output;

pub struct Reporter {
    output: Output,
    people: People,
    /// What the waits are for, as `--until` says it.
    condition: String,
    /// How many retries each task may have.
    retries: u32,
    /// A line could not be written to stdout.
    lost: Cell<bool>,
}

enum People {
    Bars {
        multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Lines,
}

impl Reporter {
    /// Progress bars on a terminal's stderr, plain lines elsewhere.
    pub fn new(output: Output, task_ids: &[TaskId], terminal: bool, color: bool) -> Self {
        let people = if terminal {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let template = if color {
                "{prefix:.bold} [{bar:32.cyan/blue}] {pos:>3}% {wide_msg}"
            } else {
                "{prefix} [{bar:32}] {pos:>3}% {wide_msg}"
            };
            let style = ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> ");
            let bars = task_ids
                .iter()
                .map(|id| {
                    let bar = multi.add(ProgressBar::new(100).with_style(style.clone()));
                    bar.set_prefix(id.to_string());
                    bar.set_message("waiting");
                    bar
                })
                .collect();
            People::Bars { multi, bars }
        } else {
            People::Lines
        };
        Self {
            output,
            people,
            condition: Condition::done().to_string(),
            retries: 0,
            lost: Cell::new(false),
        }
    }

    /// The condition the waits are for, and how often a FAILED task may be retried.
    pub fn waiting_for(mut self, condition: &Condition, retries: u32) -> Self {
        self.condition = condition.to_string();
        self.retries = retries;
        self
    }

    /// Whether a result could not be written to stdout.
    pub fn lost_output(&self) -> bool {
        self.lost.get()
    }

    /// Reports one event of task number `index`; `last` is that task's last snapshot, for
    /// events that bring none.
    pub fn event(&self, index: usize, id: &TaskId, event: &TaskEvent, last: Option<&InstanceTask>) {
        self.for_people(index, id, event);
        match self.output {
            Output::Json => {
                if let Some(line) = json_line(id, event, last, &self.condition) {
                    self.emit(&line.to_string());
                }
            }
            Output::Text => {
                if let Some(outcome) = event.outcome() {
                    self.emit(&format!("{id} {}", OutcomeKind::of(outcome)));
                }
            }
        }
    }

    fn for_people(&self, index: usize, id: &TaskId, event: &TaskEvent) {
        match &self.people {
            People::Bars { bars, multi } => {
                let bar = &bars[index];
                match event {
                    TaskEvent::Observed { task, .. } | TaskEvent::StatusChanged { task, .. } => {
                        bar.set_message(task.status_or_unknown().to_string());
                        if let Some(p) = task.progress_percent() {
                            bar.set_position(p.into());
                        }
                    }
                    TaskEvent::ProgressChanged { to: Some(p), .. } => bar.set_position((*p).into()),
                    TaskEvent::Retrying { error, delay, .. } => {
                        bar.set_message(format!(
                            "retrying in {:.1}s: {error}",
                            delay.as_secs_f64()
                        ));
                    }
                    TaskEvent::WaitingForWindow { opens_at, .. } => {
                        bar.set_message(format!(
                            "PENDING; may be waiting for its window, which opens at {opens_at}"
                        ));
                    }
                    TaskEvent::Retried {
                        attempt,
                        failed,
                        task,
                        ..
                    } => {
                        bar.set_message(self.retried(*attempt, failed, task));
                        bar.set_position(0);
                    }
                    // A bar is as wide as the terminal: the final line goes above the bars,
                    // whole, and the bar goes.
                    TaskEvent::Done(outcome) => {
                        let _ = multi.println(format!("{id}: {}", self.final_words(outcome)));
                        bar.finish_and_clear();
                    }
                    _ => {}
                }
            }
            People::Lines => {
                let line = match event {
                    TaskEvent::Observed { task, .. } => {
                        format!(
                            "{}{}",
                            task.status_or_unknown(),
                            percent(task.progress_percent())
                        )
                    }
                    TaskEvent::StatusChanged { from, to, task, .. } => {
                        format!("{from} -> {to}{}", percent(task.progress_percent()))
                    }
                    TaskEvent::ProgressChanged { to, .. } => format!("progress{}", percent(*to)),
                    TaskEvent::Retrying {
                        error,
                        attempt,
                        delay,
                        ..
                    } => format!(
                        "retrying in {:.1}s (attempt {attempt}): {error}",
                        delay.as_secs_f64()
                    ),
                    TaskEvent::WaitingForWindow { opens_at, delay, .. } => format!(
                        "PENDING; it may be waiting for its maintenance window, which opens at {opens_at}; next poll in {:.0}s",
                        delay.as_secs_f64()
                    ),
                    TaskEvent::Retried {
                        attempt,
                        failed,
                        task,
                        ..
                    } => self.retried(*attempt, failed, task),
                    TaskEvent::Done(outcome) => self.final_words(outcome),
                    _ => return,
                };
                let _ = writeln!(std::io::stderr().lock(), "{id}: {line}");
            }
        }
    }
}

impl Reporter {
    /// How a wait ended, in full: `SUCCESS`, the condition met and where the task stood, or
    /// the error with everything it carries.
    fn final_words(&self, outcome: &Outcome) -> String {
        match outcome {
            Ok(_) if OutcomeKind::of(outcome) == OutcomeKind::Success => "SUCCESS".into(),
            Ok(task) => format!(
                "{} met: {}{}",
                self.condition,
                task.status_or_unknown(),
                percent(task.progress_percent())
            ),
            Err(e) => error_words(e),
        }
    }

    /// "FAILED (why); retried (1 of 3), now PENDING".
    fn retried(&self, attempt: u32, failed: &InstanceTask, task: &InstanceTask) -> String {
        format!(
            "FAILED ({}); retried ({attempt} of {}), now {}",
            detail(failed),
            self.retries,
            task.status_or_unknown()
        )
    }
}

/// Why a wait did not succeed, in one line: the error with its cause.
fn error_words(e: &WaitError) -> String {
    match e {
        WaitError::Api { error, .. } => format!("{error}; {}", e.last_seen()),
        WaitError::TimedOut {
            last_error: Some(error),
            ..
        } => format!("{e}; last error: {error}"),
        _ => e.to_string(),
    }
}

/// An error and its sources, in one line: "outer: cause: its cause".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// A task's `status_detail`, or that it has none.
fn detail(task: &InstanceTask) -> &str {
    task.status_detail
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or("the service gave no detail")
}

fn percent(p: Option<u8>) -> String {
    p.map(|p| format!(" {p}%")).unwrap_or_default()
}

impl Reporter {
    /// Says which task was chosen from the instance's list: a `selected` event in JSON (its
    /// id, type and creation time), and a line on stderr.
    pub fn selected(&self, task: &InstanceTask) {
        let id = task.task_id.as_deref().unwrap_or_default();
        let kind = task.task_type.as_ref().map(TaskType::as_str);
        let created = task.create_time.as_ref().map(TaskTime::as_str);
        if self.output == Output::Json {
            let line = json!({
                "event": "selected",
                "task_id": id,
                "type": kind,
                "create_time": created,
            });
            self.emit(&line.to_string());
        }
        self.note(&format!(
            "iotda-wait: chose {id} ({}, created {}, {})",
            kind.unwrap_or("type unknown"),
            created.unwrap_or("at a time unknown"),
            task.status
                .as_ref()
                .map_or("status unknown", TaskStatus::as_str)
        ));
    }

    /// Writes a line to stderr, with the bars out of the way when they are drawn there.
    pub fn note(&self, line: &str) {
        match &self.people {
            People::Bars { multi, .. } => multi.suspend(|| note!("{line}")),
            People::Lines => note!("{line}"),
        }
    }

    /// Writes a line to stdout, with the bars out of the way when they share a terminal. A
    /// line that cannot be written is said once on stderr, and the exit code says so.
    fn emit(&self, line: &str) {
        let write = || {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush())
        };
        let written = match &self.people {
            People::Bars { multi, .. } => multi.suspend(write),
            People::Lines => write(),
        };
        if let Err(e) = written {
            if !self.lost.replace(true) {
                note!("iotda-wait: cannot write the results to stdout: {e}");
            }
        }
    }
}

/// The `reason` of a `retrying` line: why the poll failed, as a word.
fn reason(kind: ApiErrorKind) -> &'static str {
    match kind {
        ApiErrorKind::Network => "network",
        ApiErrorKind::Timeout => "timeout",
        ApiErrorKind::Throttled => "throttled",
        ApiErrorKind::Server => "server",
        ApiErrorKind::ClockSkew => "clock_skew",
        ApiErrorKind::Decode => "decode",
        ApiErrorKind::NotFound => "not_found",
        _ => "other",
    }
}

/// The JSON line of an event: always `event` and `task_id`, with `status` and `progress` where
/// known.
fn json_line(
    id: &TaskId,
    event: &TaskEvent,
    last: Option<&InstanceTask>,
    condition: &str,
) -> Option<Value> {
    let mut line = Map::new();
    let task = event.task().or(last);
    let name = match event {
        TaskEvent::Observed { .. } => "observed",
        TaskEvent::StatusChanged { from, .. } => {
            line.insert("from".into(), json!(from.as_str()));
            "status"
        }
        TaskEvent::ProgressChanged { from, .. } => {
            line.insert("from".into(), json!(from));
            "progress"
        }
        TaskEvent::Retrying {
            error,
            attempt,
            delay,
            ..
        } => {
            line.insert("error".into(), json!(error.to_string()));
            line.insert("reason".into(), json!(reason(error.kind())));
            line.insert("attempt".into(), json!(attempt));
            line.insert("delay_ms".into(), json!(delay.as_millis() as u64));
            "retrying"
        }
        TaskEvent::WaitingForWindow {
            opens_at, delay, ..
        } => {
            line.insert("opens_at".into(), json!(opens_at.to_string()));
            line.insert("delay_ms".into(), json!(delay.as_millis() as u64));
            "window"
        }
        TaskEvent::Retried {
            attempt, failed, ..
        } => {
            line.insert("attempt".into(), json!(attempt));
            line.insert("detail".into(), json!(failed.status_detail));
            line.insert("failed".into(), json!(failed));
            "retried"
        }
        TaskEvent::Done(outcome) => {
            line.insert("outcome".into(), json!(OutcomeKind::of(outcome).as_str()));
            line.insert("condition".into(), json!(condition));
            if let Err(e) = outcome {
                line.insert("error".into(), json!(error_words(e)));
            }
            line.insert("task".into(), json!(event.task()));
            "done"
        }
        _ => return None,
    };
    line.insert("event".into(), json!(name));
    line.insert("task_id".into(), json!(id.as_str()));
    if let Some(task) = task {
        if let Some(status) = &task.status {
            line.insert("status".into(), json!(status.as_str()));
        }
        if let Some(progress) = task.progress_percent() {
            line.insert("progress".into(), json!(progress));
        }
    }
    Some(Value::Object(line))
}
