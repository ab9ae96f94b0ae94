//! [`Condition`]: what a wait waits for.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::model::{InstanceTask, TaskStatus};

/// What a wait waits for: by default [`Condition::done`], the task's SUCCESS. Set it with
/// [`TaskWatcher::until`](crate::TaskWatcher::until).
///
/// A condition is tested on every snapshot, and the wait resolves with the first snapshot in
/// which it holds. Only an end decides that it cannot hold: when the task is SUCCESS or
/// FAILED and the condition does not hold in that snapshot, the wait ends at once, with
/// [`WaitError::Failed`](super::WaitError::Failed) for FAILED (unless
/// [`retry_failed`](crate::TaskWatcher::retry_failed) retries it) and
/// [`WaitError::Unmet`](super::WaitError::Unmet) for SUCCESS. An end implies what it shows: a
/// SUCCESS has started and has reached every progress, whatever its `progress` field says; a
/// FAILED has reached none, whatever its progress.
///
/// | condition | holds in | cannot hold once |
/// |---|---|---|
/// | `done()` | SUCCESS | FAILED |
/// | `started()` | RUNNING, SUCCESS | FAILED |
/// | `status(S)` | status S | the task ends in another status |
/// | `progress_at_least(N)` | progress >= N while not ended; SUCCESS | FAILED |
/// | `custom(name, f)` | `f(task)` | the task ends and `f` is false |
/// | `a.and(b)`, `a.or(b)`, `!a` | as the words say | the task ends and it is false |
///
/// A status this crate does not know (see [`TaskStatus::Unknown`]) never counts as started:
/// the wait goes on until the task is RUNNING or ends.
///
/// ```
/// use iotda_task_watcher::watch::Condition;
/// use iotda_task_watcher::TaskStatus;
///
/// let half = Condition::progress_at_least(50);
/// assert_eq!(half.to_string(), "progress>=50");
/// let parsed: Condition = "status=running".parse()?;
/// assert_eq!(parsed.to_string(), "status=RUNNING");
/// let either = Condition::started().or(Condition::status(TaskStatus::Failed));
/// assert_eq!(either.to_string(), "(started or status=FAILED)");
/// let left_pending = !Condition::status(TaskStatus::Pending);
/// assert_eq!(left_pending.to_string(), "not status=PENDING");
/// # Ok::<(), iotda_task_watcher::watch::ParseConditionError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct Condition(Kind);

#[derive(Clone)]
enum Kind {
    Done,
    Started,
    Status(TaskStatus),
    ProgressAtLeast(u8),
    Custom {
        name: Arc<str>,
        test: Arc<dyn Fn(&InstanceTask) -> bool + Send + Sync>,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// The task is SUCCESS: what a wait waits for unless told otherwise.
    pub fn done() -> Self {
        Self(Kind::Done)
    }

    /// The task has started: it is RUNNING or SUCCESS. For a task behind a closed
    /// maintenance window, the watcher lands a poll just after the window opens.
    pub fn started() -> Self {
        Self(Kind::Started)
    }

    /// The task's status is `status`. `status(TaskStatus::Failed)` makes FAILED the wait's
    /// success.
    pub fn status(status: TaskStatus) -> Self {
        Self(Kind::Status(status))
    }

    /// The task's progress is at least `percent` (above 100 counts as 100), or it is SUCCESS.
    /// The watcher's progress guidance aims its polls at the time the task should reach
    /// `percent`, not its end.
    pub fn progress_at_least(percent: u8) -> Self {
        Self(Kind::ProgressAtLeast(percent.min(100)))
    }

    /// `test` holds. `name` is how errors, logs and `Display` call it.
    ///
    /// ```
    /// use iotda_task_watcher::watch::Condition;
    /// let has_detail = Condition::custom("has a detail", |task| task.status_detail.is_some());
    /// assert_eq!(has_detail.to_string(), "has a detail");
    /// ```
    pub fn custom(
        name: impl Into<String>,
        test: impl Fn(&InstanceTask) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self(Kind::Custom {
            name: name.into().into(),
            test: Arc::new(test),
        })
    }

    /// Both this and `other` hold in the same snapshot.
    pub fn and(self, other: Condition) -> Self {
        Self(Kind::And(Box::new(self), Box::new(other)))
    }

    /// This or `other` holds.
    pub fn or(self, other: Condition) -> Self {
        Self(Kind::Or(Box::new(self), Box::new(other)))
    }

    /// Whether the condition holds in `task`.
    ///
    /// ```
    /// use iotda_task_watcher::watch::Condition;
    /// use iotda_task_watcher::{InstanceTask, TaskStatus};
    /// let done: InstanceTask = serde_json::from_str(r#"{"status":"SUCCESS","progress":0}"#)?;
    /// assert!(Condition::progress_at_least(50).holds(&done));
    /// assert!(Condition::started().holds(&done));
    /// assert!(!Condition::status(TaskStatus::Running).holds(&done));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    #[must_use]
    pub fn holds(&self, task: &InstanceTask) -> bool {
        let status = task.status.as_ref();
        match &self.0 {
            Kind::Done => status == Some(&TaskStatus::Success),
            Kind::Started => matches!(status, Some(TaskStatus::Running | TaskStatus::Success)),
            Kind::Status(wanted) => status == Some(wanted),
            Kind::ProgressAtLeast(n) => match status {
                Some(TaskStatus::Success) => true,
                Some(TaskStatus::Failed) => false,
                _ => task.progress_percent().is_some_and(|p| p >= *n),
            },
            Kind::Custom { test, .. } => test(task),
            Kind::And(a, b) => a.holds(task) && b.holds(task),
            Kind::Or(a, b) => a.holds(task) || b.holds(task),
            Kind::Not(a) => !a.holds(task),
        }
    }

    /// The progress the schedule aims at: the lowest that can make the condition hold, or
    /// 100 (the end) when no progress can.
    pub(crate) fn target(&self) -> u8 {
        self.progress_needed().unwrap_or(100)
    }

    /// The lowest progress at which the condition can hold, as far as progress decides it:
    /// `None` when it does not depend on progress (a status, a test of yours).
    fn progress_needed(&self) -> Option<u8> {
        let both = |a: Option<u8>, b: Option<u8>, pick: fn(u8, u8) -> u8| match (a, b) {
            (Some(a), Some(b)) => Some(pick(a, b)),
            (a, b) => a.or(b),
        };
        match &self.0 {
            Kind::Done => Some(100),
            Kind::ProgressAtLeast(n) => Some(*n),
            // Both must hold: the later progress. Either may: the earlier.
            Kind::And(a, b) => both(a.progress_needed(), b.progress_needed(), u8::max),
            Kind::Or(a, b) => both(a.progress_needed(), b.progress_needed(), u8::min),
            Kind::Started | Kind::Status(_) | Kind::Custom { .. } | Kind::Not(_) => None,
        }
    }
}

impl Default for Condition {
    fn default() -> Self {
        Self::done()
    }
}

impl std::ops::Not for Condition {
    type Output = Condition;

    /// The condition does not hold.
    fn not(self) -> Condition {
        Self(Kind::Not(Box::new(self)))
    }
}

/// Built-ins as `iotda-wait --until` writes them (`done`, `started`, `status=RUNNING`,
/// `progress>=50`), a custom condition by its name, and combinations in parentheses.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Done => f.write_str("done"),
            Kind::Started => f.write_str("started"),
            Kind::Status(s) => write!(f, "status={s}"),
            Kind::ProgressAtLeast(n) => write!(f, "progress>={n}"),
            Kind::Custom { name, .. } => f.write_str(name),
            Kind::And(a, b) => write!(f, "({a} and {b})"),
            Kind::Or(a, b) => write!(f, "({a} or {b})"),
            Kind::Not(a) => write!(f, "not {a}"),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({self})")
    }
}

/// A condition that is not one of `done`, `started`, `status=<S>` or `progress>=<N>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a condition: use done, started, status=<STATUS> or progress>=<0-100>")]
pub struct ParseConditionError {
    text: String,
}

/// Parses the built-ins as `iotda-wait --until` takes them: `done`, `started`,
/// `status=<S>` (any status word, upper-cased: `status=running` is RUNNING) and
/// `progress>=<N>` with N from 0 to 100.
impl FromStr for Condition {
    type Err = ParseConditionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || ParseConditionError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        if let Some(status) = trimmed.strip_prefix("status=") {
            let word = status.trim();
            let valid = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(refuse());
            }
            return Ok(Self::status(TaskStatus::from(
                word.to_ascii_uppercase().as_str(),
            )));
        }
        if let Some(n) = trimmed.strip_prefix("progress>=") {
            return match n.trim().parse::<u8>() {
                Ok(n) if n <= 100 => Ok(Self::progress_at_least(n)),
                _ => Err(refuse()),
            };
        }
        match trimmed {
            "done" => Ok(Self::done()),
            "started" => Ok(Self::started()),
            _ => Err(refuse()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str, progress: Option<i64>) -> InstanceTask {
        InstanceTask {
            status: Some(TaskStatus::from(status)),
            progress,
            ..InstanceTask::default()
        }
    }

    #[test]
    fn each_built_in_holds_where_the_table_says() {
        let cases: [(Condition, &str, Option<i64>, bool); 16] = [
            (Condition::done(), "SUCCESS", Some(100), true),
            (Condition::done(), "RUNNING", Some(100), false),
            (Condition::done(), "FAILED", Some(100), false),
            (Condition::started(), "PENDING", Some(0), false),
            (Condition::started(), "RUNNING", Some(0), true),
            (Condition::started(), "SUCCESS", None, true),
            (Condition::started(), "FAILED", Some(40), false),
            (Condition::started(), "ROLLING_BACK", Some(40), false),
            (Condition::progress_at_least(50), "RUNNING", Some(49), false),
            (Condition::progress_at_least(50), "RUNNING", Some(50), true),
            (Condition::progress_at_least(50), "SUCCESS", Some(10), true),
            (Condition::progress_at_least(50), "FAILED", Some(90), false),
            // A progress outside 0..=100 is no progress.
            (
                Condition::progress_at_least(50),
                "RUNNING",
                Some(150),
                false,
            ),
            (Condition::status(TaskStatus::Failed), "FAILED", None, true),
            (
                Condition::status(TaskStatus::Running),
                "SUCCESS",
                None,
                false,
            ),
            (
                Condition::status(TaskStatus::Unknown("ROLLING_BACK".into())),
                "ROLLING_BACK",
                None,
                true,
            ),
        ];
        for (condition, status, progress, expected) in cases {
            assert_eq!(
                condition.holds(&task(status, progress)),
                expected,
                "{condition} in {status} {progress:?}"
            );
        }
        assert!(!Condition::started().holds(&InstanceTask::default()));
    }

    #[test]
    fn combinations_hold_as_their_words_say() {
        let running_half =
            Condition::status(TaskStatus::Running).and(Condition::progress_at_least(50));
        assert!(running_half.holds(&task("RUNNING", Some(60))));
        assert!(!running_half.holds(&task("RUNNING", Some(40))));
        assert!(!running_half.holds(&task("SUCCESS", Some(100))));
        let either = Condition::started().or(Condition::status(TaskStatus::Failed));
        assert!(either.holds(&task("FAILED", None)));
        assert!(!either.holds(&task("PENDING", None)));
        let not_pending = !Condition::status(TaskStatus::Pending);
        assert!(not_pending.holds(&task("ROLLING_BACK", None)));
        assert!(!not_pending.holds(&task("PENDING", None)));
        let custom = Condition::custom("has a detail", |t| t.status_detail.is_some());
        assert!(!custom.holds(&task("RUNNING", None)));
    }

    #[test]
    fn the_target_is_the_lowest_progress_that_can_make_it_hold() {
        let p = Condition::progress_at_least;
        assert_eq!(Condition::done().target(), 100);
        assert_eq!(Condition::started().target(), 100);
        assert_eq!(p(50).target(), 50);
        assert_eq!(p(200).target(), 100);
        assert_eq!(p(30).or(p(70)).target(), 30);
        assert_eq!(p(30).and(p(70)).target(), 70);
        assert_eq!(
            Condition::status(TaskStatus::Running).and(p(50)).target(),
            50
        );
        assert_eq!(Condition::started().or(p(50)).target(), 50);
        assert_eq!(Condition::done().or(p(50)).target(), 50);
        assert_eq!((!p(30)).target(), 100);
        assert_eq!(Condition::custom("x", |_| true).target(), 100);
    }

    #[test]
    fn the_command_line_forms_parse_and_print_back() {
        for (text, shown) in [
            ("done", "done"),
            ("started", "started"),
            (" status=running ", "status=RUNNING"),
            ("status=FAILED", "status=FAILED"),
            ("status=rolling_back", "status=ROLLING_BACK"),
            ("progress>=50", "progress>=50"),
            ("progress>=0", "progress>=0"),
            ("progress>=100", "progress>=100"),
        ] {
            let condition: Condition = text.parse().unwrap();
            assert_eq!(condition.to_string(), shown);
            assert_eq!(shown.parse::<Condition>().unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "finished",
            "status=",
            "status=RUN NING",
            "progress>=101",
            "progress>=-1",
            "progress>50",
            "progress>=half",
        ] {
            let error = bad.parse::<Condition>().unwrap_err();
            assert!(error.to_string().contains("is not a condition"), "{error}");
        }
    }
}
