//! Task scripts, and the playback of a task's script over its polls and over time.

use std::time::{Duration, Instant};

use crate::model::{ChargeMode, Flavor, OperateWindow, TargetConfig, TaskTime};
use crate::{InstanceTask, TaskStatus, TaskType};

use super::{Fault, RawAnswer};

#[derive(Debug, Clone)]
enum Step {
    Pending(u32),
    Running(u32),
    RunningFor(Duration),
    Fault(Fault),
    Raw(RawAnswer),
    Succeed,
    Fail(String),
}

/// What a task does over its polls.
#[derive(Debug, Clone)]
#[must_use]
pub struct TaskScript {
    task_type: TaskType,
    window: Option<OperateWindow>,
    target: Option<TargetConfig>,
    steps: Vec<Step>,
    progress: bool,
    /// How long before it was added the task was created.
    pub(super) age: Duration,
}

impl TaskScript {
    /// An empty script for a task of `task_type`; without steps it answers PENDING.
    pub fn new(task_type: TaskType) -> Self {
        Self {
            task_type,
            window: None,
            target: None,
            steps: Vec::new(),
            progress: true,
            age: Duration::ZERO,
        }
    }

    /// Created `age` before the simulator was given it (by default, as it is given): a task
    /// of the past, for a list to pass over.
    pub fn created_ago(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Answers with no `progress` (the field is optional, and some tasks never report it).
    pub fn without_progress(mut self) -> Self {
        self.progress = false;
        self
    }

    /// PENDING, progress 0, for `polls` polls.
    pub fn pending(mut self, polls: u32) -> Self {
        self.steps.push(Step::Pending(polls));
        self
    }

    /// RUNNING for `polls` polls, progress rising evenly below 100.
    pub fn running(mut self, polls: u32) -> Self {
        self.steps.push(Step::Running(polls));
        self
    }

    /// RUNNING for `duration` of real time from its first answer, progress rising with it.
    pub fn running_for(mut self, duration: Duration) -> Self {
        self.steps.push(Step::RunningFor(duration));
        self
    }

    /// Answers one poll with `fault` (a [`Fault::Slow`] delays the next answer instead).
    pub fn fault(mut self, fault: Fault) -> Self {
        self.steps.push(Step::Fault(fault));
        self
    }

    /// Answers one poll with `answer`, as it is. Like a task's state, and unlike a fault, the
    /// last one is answered again once the script has run out.
    pub fn raw(mut self, answer: RawAnswer) -> Self {
        self.steps.push(Step::Raw(answer));
        self
    }

    /// Ends in SUCCESS, progress 100.
    pub fn succeed(mut self) -> Self {
        self.steps.push(Step::Succeed);
        self
    }

    /// Ends in FAILED with `detail` as `status_detail`, until the task is retried: a retry
    /// answers the task PENDING, and the steps after this one play from the next poll (with
    /// none, the task stays PENDING).
    ///
    /// ```
    /// use iotda_task_watcher::simulator::TaskScript;
    /// use iotda_task_watcher::TaskType;
    /// // Fails once, then succeeds when retried.
    /// let script = TaskScript::new(TaskType::Modify)
    ///     .running(2)
    ///     .fail("flavor sold out")
    ///     .running(2)
    ///     .succeed();
    /// ```
    pub fn fail(mut self, detail: impl Into<String>) -> Self {
        self.steps.push(Step::Fail(detail.into()));
        self
    }

    /// Reports this maintenance window (`HH:mm` UTC) in every answer.
    pub fn operate_window(mut self, start: &str, end: &str) -> Self {
        self.window = Some(OperateWindow {
            start_time: Some(start.to_owned()),
            end_time: Some(end.to_owned()),
        });
        self
    }

    /// Reports this `target_config` in every answer: the specification the instance is changed
    /// to, `flavor_type` (e.g. `iotda.standard.s2`) and, for a standard instance, its `size` in
    /// units, and how it is paid for.
    ///
    /// ```
    /// use iotda_task_watcher::model::ChargeMode;
    /// use iotda_task_watcher::simulator::TaskScript;
    /// use iotda_task_watcher::TaskType;
    /// let script = TaskScript::new(TaskType::Modify)
    ///     .target_config("iotda.standard.s2", Some(4), ChargeMode::PrePaid)
    ///     .running(3)
    ///     .succeed();
    /// ```
    pub fn target_config(
        mut self,
        flavor_type: &str,
        size: Option<i64>,
        charge_mode: ChargeMode,
    ) -> Self {
        self.target = Some(TargetConfig {
            flavor: Some(Flavor {
                flavor_type: Some(flavor_type.to_owned()),
                size,
            }),
            charge_mode: Some(charge_mode),
        });
        self
    }
}

pub(super) struct TaskState {
    pub(super) script: TaskScript,
    pub(super) step: usize,
    /// Polls answered by the current step.
    pub(super) count: u32,
    pub(super) running_since: Option<Instant>,
    pub(super) polls: u64,
    pub(super) created: TaskTime,
    pub(super) started: Option<TaskTime>,
    /// When the task first answered SUCCESS or FAILED; every later answer reports this time.
    pub(super) ended: Option<TaskTime>,
    /// The last task or raw answer, given again past the end of the script.
    pub(super) last: Option<Answer>,
    /// Retries accepted.
    pub(super) retries: u64,
}

#[derive(Clone)]
pub(super) enum Answer {
    Task(Box<InstanceTask>),
    Raw(RawAnswer),
    Fault(Fault),
}

impl TaskState {
    /// Plays the script one poll further. Returns the answer and any delay to add to it.
    pub(super) fn advance(&mut self, task_id: &str) -> (Answer, Duration) {
        self.polls += 1;
        let mut delay = Duration::ZERO;
        loop {
            let Some(step) = self.script.steps.get(self.step).cloned() else {
                // Past the end: the last answer again (PENDING if there was none).
                let answer = self.last.clone().unwrap_or_else(|| {
                    let task = self.snapshot(task_id, TaskStatus::Pending, 0, None);
                    Answer::Task(Box::new(task))
                });
                return (answer, delay);
            };
            let answer = match step {
                Step::Pending(n) | Step::Running(n) if self.count >= n => {
                    self.next_step();
                    continue;
                }
                Step::Pending(_) => {
                    self.count += 1;
                    self.snapshot(task_id, TaskStatus::Pending, 0, None)
                }
                Step::Running(n) => {
                    self.count += 1;
                    let progress = i64::from(self.count) * 100 / (i64::from(n) + 1);
                    self.snapshot(task_id, TaskStatus::Running, progress, None)
                }
                Step::RunningFor(duration) => {
                    let since = *self.running_since.get_or_insert_with(Instant::now);
                    let elapsed = since.elapsed();
                    if elapsed >= duration {
                        self.next_step();
                        continue;
                    }
                    #[allow(
                        clippy::cast_possible_truncation,
                        reason = "a share of the run below 1, in percent"
                    )]
                    let progress = (elapsed.as_secs_f64() / duration.as_secs_f64() * 100.0) as i64;
                    self.snapshot(task_id, TaskStatus::Running, progress.min(99), None)
                }
                Step::Fault(Fault::Slow(d)) => {
                    delay += d;
                    self.next_step();
                    continue;
                }
                Step::Fault(fault) => {
                    self.next_step();
                    return (Answer::Fault(fault), delay);
                }
                Step::Raw(raw) => {
                    self.next_step();
                    self.last = Some(Answer::Raw(raw.clone()));
                    return (Answer::Raw(raw), delay);
                }
                Step::Succeed => self.snapshot(task_id, TaskStatus::Success, 100, None),
                Step::Fail(detail) => self.snapshot(task_id, TaskStatus::Failed, 100, Some(detail)),
            };
            let answer = Answer::Task(Box::new(answer));
            self.last = Some(answer.clone());
            return (answer, delay);
        }
    }

    /// Retries the task if its last answer was FAILED: the script goes on after the failure,
    /// from PENDING. `None` when the task is not FAILED.
    pub(super) fn retry(&mut self, task_id: &str) -> Option<InstanceTask> {
        let failed =
            matches!(&self.last, Some(Answer::Task(t)) if t.status == Some(TaskStatus::Failed));
        if !failed {
            return None;
        }
        self.retries += 1;
        self.next_step();
        self.started = None;
        self.ended = None;
        let task = self.snapshot(task_id, TaskStatus::Pending, 0, None);
        self.last = Some(Answer::Task(Box::new(task.clone())));
        Some(task)
    }

    /// The task as `ListInstanceTasks` lists it: as last seen, else PENDING, without
    /// progress (the list carries none). Not a poll: nothing moves on.
    pub(super) fn listed(&mut self, task_id: &str) -> InstanceTask {
        let mut task = match &self.last {
            Some(Answer::Task(task)) => (**task).clone(),
            _ => self.snapshot(task_id, TaskStatus::Pending, 0, None),
        };
        task.progress = None;
        task
    }

    fn next_step(&mut self) {
        self.step += 1;
        self.count = 0;
        self.running_since = None;
    }

    fn snapshot(
        &mut self,
        task_id: &str,
        status: TaskStatus,
        progress: i64,
        detail: Option<String>,
    ) -> InstanceTask {
        let now = || TaskTime::from(jiff::Timestamp::now());
        if status != TaskStatus::Pending && self.started.is_none() {
            self.started = Some(now());
        }
        let end_time = if status.is_terminal() {
            Some(self.ended.get_or_insert_with(now).clone())
        } else {
            None
        };
        InstanceTask {
            task_id: Some(task_id.to_owned()),
            task_type: Some(self.script.task_type.clone()),
            create_time: Some(self.created.clone()),
            start_time: self.started.clone(),
            end_time,
            operate_window: self.script.window.clone(),
            status_detail: detail,
            status: Some(status),
            progress: self.script.progress.then_some(progress),
            target_config: self.script.target.clone(),
        }
    }
}
