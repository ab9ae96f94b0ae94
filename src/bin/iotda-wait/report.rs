//! What the command prints: stderr for people, stdout for programs.

use std::cell::Cell;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use iotda_task_watcher::client::ApiErrorKind;
use iotda_task_watcher::watch::OutcomeKind;
use iotda_task_watcher::{InstanceTask, Outcome, TaskEvent, TaskId};
use serde_json::{json, Map, Value};

use crate::args::Output;

pub struct Reporter {
    output: Output,
    people: People,
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
            lost: Cell::new(false),
        }
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
                if let Some(line) = json_line(id, event, last) {
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
                    // A bar is as wide as the terminal: the final line goes above the bars,
                    // whole, and the bar goes.
                    TaskEvent::Done(outcome) => {
                        let _ = multi.println(format!("{id}: {}", final_words(outcome)));
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
                    TaskEvent::Done(outcome) => final_words(outcome),
                    _ => return,
                };
                let _ = writeln!(std::io::stderr().lock(), "{id}: {line}");
            }
        }
    }
}

/// How a wait ended, in full: `SUCCESS`, or the error with everything it carries.
fn final_words(outcome: &Outcome) -> String {
    match outcome {
        Ok(_) => "SUCCESS".into(),
        Err(e) => e.to_string(),
    }
}

fn percent(p: Option<u8>) -> String {
    p.map(|p| format!(" {p}%")).unwrap_or_default()
}

impl Reporter {
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
fn json_line(id: &TaskId, event: &TaskEvent, last: Option<&InstanceTask>) -> Option<Value> {
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
        TaskEvent::Done(outcome) => {
            line.insert("outcome".into(), json!(OutcomeKind::of(outcome).as_str()));
            if let Err(e) = outcome {
                line.insert("error".into(), json!(e.to_string()));
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
