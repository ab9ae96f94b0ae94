//! What the command prints: stderr for people, stdout for programs.

use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use iotda_task_watcher::{InstanceTask, Outcome, TaskEvent, TaskId, WaitError};
use serde_json::{json, Map, Value};

use crate::args::Output;

/// How a wait ended, as the command names it.
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(_) => "success",
        Err(WaitError::Failed { .. }) => "failed",
        // A window that opens after the deadline is a timeout known in advance.
        Err(WaitError::TimedOut { .. } | WaitError::WindowAfterDeadline { .. }) => "timed_out",
        Err(WaitError::Cancelled { .. }) => "cancelled",
        Err(_) => "error",
    }
}

/// The exit code for all outcomes: 130 when interrupted, else 1 if any FAILED, else 4 if any
/// error, else 3 if any timed out, else 0.
pub fn exit_code(outcomes: &[&Outcome], interrupted: bool) -> u8 {
    let any = |name| outcomes.iter().any(|o| outcome_name(o) == name);
    if interrupted || any("cancelled") {
        130
    } else if any("failed") {
        1
    } else if any("error") {
        4
    } else if any("timed_out") {
        3
    } else {
        0
    }
}

pub struct Reporter {
    output: Output,
    people: People,
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
        Self { output, people }
    }

    /// Reports one event of task number `index`; `last` is that task's last snapshot.
    pub fn event(&self, index: usize, id: &TaskId, event: &TaskEvent, last: Option<&InstanceTask>) {
        self.for_people(index, id, event);
        match self.output {
            Output::Json => {
                if let Some(line) = json_line(id, event, last) {
                    self.emit(&line.to_string());
                }
            }
            Output::Text => {
                if let TaskEvent::Done(outcome) = event {
                    let status = match outcome {
                        Ok(task) | Err(WaitError::Failed { task, .. }) => {
                            task.status_or_unknown().to_string()
                        }
                        Err(WaitError::TimedOut { .. } | WaitError::WindowAfterDeadline { .. }) => {
                            "TIMED_OUT".into()
                        }
                        Err(WaitError::Cancelled { .. }) => "CANCELLED".into(),
                        Err(_) => "ERROR".into(),
                    };
                    self.emit(&format!("{id} {status}"));
                }
            }
        }
    }

    fn for_people(&self, index: usize, id: &TaskId, event: &TaskEvent) {
        match &self.people {
            People::Bars { bars, .. } => {
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
                    TaskEvent::Done(outcome) => match outcome {
                        Ok(_) => {
                            bar.set_position(100);
                            bar.finish_with_message("SUCCESS");
                        }
                        Err(WaitError::Failed { task, .. }) => {
                            let detail = task.status_detail.as_deref().unwrap_or("no detail");
                            bar.abandon_with_message(format!("FAILED: {detail}"));
                        }
                        Err(e) => bar.abandon_with_message(e.to_string()),
                    },
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
                    TaskEvent::Done(Ok(_)) => "SUCCESS".into(),
                    TaskEvent::Done(Err(e)) => e.to_string(),
                    _ => return,
                };
                let _ = writeln!(std::io::stderr().lock(), "{id}: {line}");
            }
        }
    }
}

fn percent(p: Option<u8>) -> String {
    p.map(|p| format!(" {p}%")).unwrap_or_default()
}

impl Reporter {
    /// Writes a line to stdout, with the bars out of the way when they share a terminal.
    fn emit(&self, line: &str) {
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        match &self.people {
            People::Bars { multi, .. } => multi.suspend(write),
            People::Lines => write(),
        }
    }
}

/// The JSON line of an event: always `event` and `task_id`, with `status` and `progress` where
/// known.
fn json_line(id: &TaskId, event: &TaskEvent, last: Option<&InstanceTask>) -> Option<Value> {
    let mut line = Map::new();
    let (name, task) = match event {
        TaskEvent::Observed { task, .. } => ("observed", Some(task)),
        TaskEvent::StatusChanged { from, task, .. } => {
            line.insert("from".into(), json!(from.as_str()));
            ("status", Some(task))
        }
        TaskEvent::ProgressChanged { from, .. } => {
            line.insert("from".into(), json!(from));
            ("progress", last)
        }
        TaskEvent::Retrying {
            error,
            attempt,
            delay,
            ..
        } => {
            line.insert("error".into(), json!(error.to_string()));
            line.insert("attempt".into(), json!(attempt));
            line.insert("delay_ms".into(), json!(delay.as_millis() as u64));
            ("retrying", last)
        }
        TaskEvent::WaitingForWindow {
            opens_at, delay, ..
        } => {
            line.insert("opens_at".into(), json!(opens_at.to_string()));
            line.insert("delay_ms".into(), json!(delay.as_millis() as u64));
            ("window", last)
        }
        TaskEvent::Done(outcome) => {
            line.insert("outcome".into(), json!(outcome_name(outcome)));
            let task = match outcome {
                Ok(task) => Some(task),
                Err(e) => {
                    line.insert("error".into(), json!(e.to_string()));
                    e.last()
                }
            };
            line.insert("task".into(), json!(task));
            ("done", task)
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
