//! Choosing the tasks to wait for from an instance's list ([`IotdaClient::list_instance_tasks`]),
//! for callers that hold an instance id and no task id: the calls that change an instance
//! answer none.
//!
//! A choice is a plain function of the list: [`Choice::pick`] looks at nothing else, so the
//! caller decides how often to list again while nothing is chosen.
//!
//! ```
//! use iotda_task_watcher::choose::{Choice, Pick};
//! use iotda_task_watcher::{InstanceTask, TaskType};
//!
//! let listed: Vec<InstanceTask> = serde_json::from_str(r#"[
//!     {"task_id": "075f413d-a3bb-4243-974d-8eb9221c0002", "type": "MODIFY", "status": "RUNNING",
//!      "create_time": "2026-12-08T10:05:00.000Z"},
//!     {"task_id": "075f413d-a3bb-4243-974d-8eb9221c0001", "type": "CREATE", "status": "SUCCESS",
//!      "create_time": "2026-12-01T09:00:00.000Z"}
//! ]"#)?;
//! let since = "2026-12-08T10:00:00Z".parse()?;
//! let chosen = Choice::Since(since).of_type(TaskType::Modify).pick(&listed);
//! assert_eq!(chosen.len(), 1);
//! assert_eq!(Choice::Latest.pick(&listed)[0].task_type, Some(TaskType::Modify));
//! assert_eq!(Choice::Active.of_type(TaskType::Create).pick(&listed).len(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`IotdaClient::list_instance_tasks`]: crate::IotdaClient::list_instance_tasks

use std::fmt;

use crate::model::{InstanceTask, TaskStatus, TaskType};

/// Which of an instance's tasks to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// The newest task, whatever its status.
    Latest,
    /// Every task created at or after this time. A task whose creation time is missing or
    /// does not parse is never chosen.
    Since(jiff::Timestamp),
    /// Every task PENDING or RUNNING.
    Active,
}

/// A [`Choice`], limited to one type of task or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    choice: Choice,
    task_type: Option<TaskType>,
}

impl Choice {
    /// The choice among the tasks of `task_type` only.
    #[must_use]
    pub fn of_type(self, task_type: TaskType) -> Pick {
        Pick {
            choice: self,
            task_type: Some(task_type),
        }
    }

    /// The tasks of `listed` this choice takes, in the list's order (newest first); see
    /// [`Pick::pick`].
    #[must_use]
    pub fn pick(self, listed: &[InstanceTask]) -> Vec<&InstanceTask> {
        Pick::from(self).pick(listed)
    }
}

impl From<Choice> for Pick {
    fn from(choice: Choice) -> Self {
        Self {
            choice,
            task_type: None,
        }
    }
}

impl Pick {
    /// The choice.
    #[must_use]
    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    /// The type of task it is limited to, if any.
    #[must_use]
    pub fn task_type(&self) -> Option<&TaskType> {
        self.task_type.as_ref()
    }

    /// The tasks of `listed` it takes, in the list's order. A task without an id is never
    /// taken. For [`Choice::Latest`], the one with the latest creation time (the first
    /// listed among equals, and among tasks whose time is unknown when none is known).
    #[must_use]
    pub fn pick<'a>(&self, listed: &'a [InstanceTask]) -> Vec<&'a InstanceTask> {
        let candidates = listed.iter().filter(|task| {
            task.task_id.is_some()
                && self
                    .task_type
                    .as_ref()
                    .is_none_or(|wanted| task.task_type.as_ref() == Some(wanted))
        });
        match &self.choice {
            Choice::Latest => {
                let created = |task: &InstanceTask| {
                    task.create_time
                        .as_ref()
                        .and_then(crate::model::TaskTime::timestamp)
                };
                let mut newest: Option<&InstanceTask> = None;
                for task in candidates {
                    if newest.is_none_or(|best| created(task) > created(best)) {
                        newest = Some(task);
                    }
                }
                newest.into_iter().collect()
            }
            Choice::Since(since) => candidates
                .filter(|task| {
                    task.create_time
                        .as_ref()
                        .and_then(crate::model::TaskTime::timestamp)
                        .is_some_and(|created| created >= *since)
                })
                .collect(),
            Choice::Active => candidates
                .filter(|task| {
                    matches!(task.status, Some(TaskStatus::Pending | TaskStatus::Running))
                })
                .collect(),
        }
    }
}

impl fmt::Display for Pick {
    /// In words: "the newest task", "tasks created since T", "tasks PENDING or RUNNING",
    /// with "of type X" when limited.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let of_type = self
            .task_type
            .as_ref()
            .map(|t| format!(" of type {t}"))
            .unwrap_or_default();
        match &self.choice {
            Choice::Latest => write!(f, "the newest task{of_type}"),
            Choice::Since(since) => write!(f, "tasks{of_type} created since {since}"),
            Choice::Active => write!(f, "tasks{of_type} PENDING or RUNNING"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u32, kind: &str, status: &str, created: &str) -> InstanceTask {
        serde_json::from_value(serde_json::json!({
            "task_id": format!("075f413d-a3bb-4243-974d-{id:012}"),
            "type": kind,
            "status": status,
            "create_time": created,
        }))
        .unwrap()
    }

    fn ids(tasks: &[&InstanceTask]) -> Vec<String> {
        tasks
            .iter()
            .map(|t| {
                t.task_id.clone().unwrap()[24..]
                    .trim_start_matches('0')
                    .to_owned()
            })
            .collect()
    }

    fn listed() -> Vec<InstanceTask> {
        vec![
            task(4, "FREEZE", "PENDING", "2026-12-08T10:06:00.000Z"),
            task(3, "MODIFY", "RUNNING", "2026-12-08T10:05:00.000Z"),
            task(2, "MODIFY", "FAILED", "2026-12-08T10:00:00.000Z"),
            task(1, "CREATE", "SUCCESS", "2026-12-01T09:00:00.000Z"),
        ]
    }

    #[test]
    fn the_newest_is_by_creation_time_and_of_the_type_asked() {
        let listed = listed();
        assert_eq!(ids(&Choice::Latest.pick(&listed)), ["4"]);
        let modify = Choice::Latest.of_type(TaskType::Modify);
        assert_eq!(ids(&modify.pick(&listed)), ["3"]);
        // Listed oldest first, the newest is still the newest.
        let mut reversed = listed.clone();
        reversed.reverse();
        assert_eq!(ids(&modify.pick(&reversed)), ["3"]);
        assert!(Choice::Latest
            .of_type(TaskType::Delete)
            .pick(&listed)
            .is_empty());
        assert!(Choice::Latest.pick(&[]).is_empty());
    }

    #[test]
    fn since_takes_every_task_created_at_or_after_the_time() {
        let listed = listed();
        let at = |t: &str| Choice::Since(t.parse().unwrap());
        assert_eq!(
            ids(&at("2026-12-08T10:00:00Z").pick(&listed)),
            ["4", "3", "2"]
        );
        let modify = at("2026-12-08T10:00:00Z").of_type(TaskType::Modify);
        assert_eq!(ids(&modify.pick(&listed)), ["3", "2"]);
        assert!(at("2026-12-08T10:07:00Z").pick(&listed).is_empty());
        // A time that does not parse is never taken for a recent one.
        let odd = vec![task(9, "MODIFY", "RUNNING", "yesterday")];
        assert!(at("2000-01-01T00:00:00Z").pick(&odd).is_empty());
    }

    #[test]
    fn active_takes_the_pending_and_running_tasks() {
        let listed = listed();
        assert_eq!(ids(&Choice::Active.pick(&listed)), ["4", "3"]);
        let modify = Choice::Active.of_type(TaskType::Modify);
        assert_eq!(ids(&modify.pick(&listed)), ["3"]);
        assert_eq!(
            modify.to_string(),
            "tasks of type MODIFY PENDING or RUNNING"
        );
    }

    #[test]
    fn a_task_without_an_id_is_never_taken() {
        let mut nameless = task(5, "MODIFY", "RUNNING", "2026-12-08T11:00:00.000Z");
        nameless.task_id = None;
        let listed = [nameless];
        assert!(Choice::Latest.pick(&listed).is_empty());
        assert!(Choice::Active.pick(&listed).is_empty());
    }
}
