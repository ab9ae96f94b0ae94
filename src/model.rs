//! The response of "Query Instance Task Details" (the API page's Tables 2 to 5).
//!
//! Decoding is forgiving where the service may change under us: every field may be absent,
//! enumerations keep values this crate does not know, a timestamp that does not parse is kept as
//! text, and a progress outside `0..=100` is kept as sent. Serializing writes back what was read.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One instance task, as the service reports it.
///
/// ```
/// use iotda_task_watcher::{InstanceTask, TaskStatus};
/// let task: InstanceTask = serde_json::from_str(r#"{"status":"RUNNING","progress":40}"#)?;
/// assert_eq!(task.status, Some(TaskStatus::Running));
/// assert_eq!(task.progress_percent(), Some(40));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceTask {
    /// The task id. Kept as sent: it is not validated on the way in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// What the task does.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// Where the task stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// The service's description of the status; on FAILED, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// When the task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<TaskTime>,
    /// When the task started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<TaskTime>,
    /// When the task ended; often absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<TaskTime>,
    /// The specification the instance is changed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_config: Option<TargetConfig>,
    /// The maintenance window in which a change is carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operate_window: Option<OperateWindow>,
    /// Progress as sent by the service; see [`InstanceTask::progress_percent`].
    #[serde(
        default,
        deserialize_with = "lenient_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress: Option<i64>,
}

impl InstanceTask {
    /// Progress in percent when the service sent a value in `0..=100`; `None` otherwise.
    #[must_use]
    pub fn progress_percent(&self) -> Option<u8> {
        self.progress
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| *p <= 100)
    }

    /// True when the status is SUCCESS or FAILED.
    pub fn is_terminal(&self) -> bool {
        self.status.as_ref().is_some_and(TaskStatus::is_terminal)
    }

    /// The status, or [`TaskStatus::Unknown`] with an empty name when the service sent none.
    #[must_use]
    pub fn status_or_unknown(&self) -> TaskStatus {
        self.status
            .clone()
            .unwrap_or_else(|| TaskStatus::Unknown(String::new()))
    }
}

macro_rules! open_enum {
    (
        $(#[$doc:meta])*
        $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $wire:literal, )* }
    ) => {
        $(#[$doc])*
        ///
        /// Values the service adds appear as `Unknown` until this crate names them; naming
        /// one later is not a breaking change, so match with a `_` arm.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// A value this crate does not know, kept as sent.
            Unknown(String),
        }

        impl $name {
            /// Every value this crate names, as it appears on the wire.
            pub const KNOWN: &'static [&'static str] = &[$( $wire, )*];

            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Unknown(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$variant, )*
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

open_enum!(
    /// Where a task stands. Only SUCCESS and FAILED are terminal.
    TaskStatus {
        /// The task waits to be run (a MODIFY task may wait for its maintenance window).
        Pending = "PENDING",
        /// The task runs.
        Running = "RUNNING",
        /// The task succeeded.
        Success = "SUCCESS",
        /// The task failed; `status_detail` says why.
        Failed = "FAILED",
    }
);

impl TaskStatus {
    /// True for SUCCESS and FAILED. Unknown statuses are not terminal.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

open_enum!(
    /// What a task does.
    TaskType {
        /// Creates an instance.
        Create = "CREATE",
        /// Changes an instance's specification.
        Modify = "MODIFY",
        /// Deletes an instance.
        Delete = "DELETE",
        /// Freezes an instance.
        Freeze = "FREEZE",
        /// Unfreezes an instance.
        Unfreeze = "UNFREEZE",
        /// Changes an instance's access information.
        UpdateAccessConfig = "UPDATE_ACCESS_CONFIG",
        /// Changes an instance's access allow-list.
        UpdateAllowLists = "UPDATE_ALLOW_LISTS",
        /// Enables SNAT for an instance.
        OpenSnat = "OPEN_SNAT",
    }
);

open_enum!(
    /// How an instance is paid for.
    ChargeMode {
        /// Yearly or monthly.
        PrePaid = "prePaid",
        /// Pay per use.
        PostPaid = "postPaid",
    }
);

/// The specification an instance is changed to (Table 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TargetConfig {
    /// The instance's specification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<Flavor>,
    /// How the instance is paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_mode: Option<ChargeMode>,
}

/// An instance specification (Table 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Flavor {
    /// The specification's name, e.g. `iotda.standard.s2`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub flavor_type: Option<String>,
    /// The number of units of a standard instance.
    #[serde(
        default,
        deserialize_with = "lenient_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub size: Option<i64>,
}

/// A daily maintenance window in UTC, `HH:mm` to `HH:mm` (Table 5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OperateWindow {
    /// When the window opens, `HH:mm` UTC, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the window closes, `HH:mm` UTC, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

impl OperateWindow {
    /// The opening time, when it parses as `HH:mm`.
    pub fn start(&self) -> Option<jiff::civil::Time> {
        self.start_time.as_deref().and_then(parse_hh_mm)
    }

    /// The closing time, when it parses as `HH:mm`.
    pub fn end(&self) -> Option<jiff::civil::Time> {
        self.end_time.as_deref().and_then(parse_hh_mm)
    }
}

fn parse_hh_mm(s: &str) -> Option<jiff::civil::Time> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    jiff::civil::Time::new(h, m, 0, 0).ok()
}

/// A timestamp as the service sent it, with its parsed value when it parses.
///
/// The API's format is `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` (UTC); any RFC 3339 time is accepted.
/// A value that does not parse is kept as text so that nothing is lost and the rest of the
/// response still decodes.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskTime {
    raw: String,
    parsed: Option<jiff::Timestamp>,
}

impl TaskTime {
    /// Wraps `raw`, parsing it when it can.
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let parsed = raw.parse().ok();
        Self { raw, parsed }
    }

    /// The time, when the text parsed.
    #[must_use]
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.parsed
    }

    /// The text as the service sent it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl From<jiff::Timestamp> for TaskTime {
    fn from(t: jiff::Timestamp) -> Self {
        Self {
            raw: t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            parsed: Some(t),
        }
    }
}

impl fmt::Debug for TaskTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parsed {
            Some(t) => write!(f, "{t}"),
            None => write!(f, "unparsed({:?})", self.raw),
        }
    }
}

impl fmt::Display for TaskTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for TaskTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for TaskTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::new(s.into_owned()))
    }
}

/// Reads an integer that may arrive as a float, a numeric string, or something else entirely;
/// what is not a number becomes `None` rather than failing the whole response.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a float outside i64 saturates, which is as good as any value for a number this wrong"
)]
fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_EXAMPLE: &str = r#"{
      "task_id" : "075f413d-a3bb-4243-974d-8eb9221c1234",
      "type" : "MODIFY",
      "status" : "PENDING",
      "create_time" : "2021-08-19T01:52:49.493Z",
      "start_time" : "2021-08-19T01:52:49.492Z",
      "end_time" : "2021-08-19T01:52:49.492Z",
      "target_config" : {
        "flavor" : {
          "type" : "iotda.standard.s2",
          "size" : 2
        }
      },
      "operate_window" : {
        "start_time" : "18:00",
        "end_time" : "22:00"
      },
      "progress" : 80
    }"#;

    #[test]
    fn the_page_example_decodes_and_round_trips() {
        let task: InstanceTask = serde_json::from_str(PAGE_EXAMPLE).unwrap();
        assert_eq!(
            task.task_id.as_deref(),
            Some("075f413d-a3bb-4243-974d-8eb9221c1234")
        );
        assert_eq!(task.task_type, Some(TaskType::Modify));
        assert_eq!(task.status, Some(TaskStatus::Pending));
        let created = task.create_time.as_ref().unwrap().timestamp().unwrap();
        assert_eq!(created, "2021-08-19T01:52:49.493Z".parse().unwrap());
        let flavor = task
            .target_config
            .as_ref()
            .unwrap()
            .flavor
            .as_ref()
            .unwrap();
        assert_eq!(flavor.flavor_type.as_deref(), Some("iotda.standard.s2"));
        assert_eq!(flavor.size, Some(2));
        let window = task.operate_window.as_ref().unwrap();
        assert_eq!(window.start(), Some(jiff::civil::time(18, 0, 0, 0)));
        assert_eq!(window.end(), Some(jiff::civil::time(22, 0, 0, 0)));
        assert_eq!(task.progress_percent(), Some(80));

        let again = serde_json::to_value(&task).unwrap();
        let original: serde_json::Value = serde_json::from_str(PAGE_EXAMPLE).unwrap();
        assert_eq!(again, original);
        let back: InstanceTask = serde_json::from_value(again).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn every_field_may_be_absent() {
        let task: InstanceTask = serde_json::from_str("{}").unwrap();
        assert_eq!(task, InstanceTask::default());
        assert!(!task.is_terminal());
        assert_eq!(serde_json::to_string(&task).unwrap(), "{}");
        let task: InstanceTask =
            serde_json::from_str(r#"{"status":null,"progress":null}"#).unwrap();
        assert_eq!(task, InstanceTask::default());
    }

    #[test]
    fn unknown_values_are_kept_and_round_trip() {
        let json =
            r#"{"type":"MIGRATE","status":"ROLLING_BACK","target_config":{"charge_mode":"spot"}}"#;
        let task: InstanceTask = serde_json::from_str(json).unwrap();
        assert_eq!(task.task_type, Some(TaskType::Unknown("MIGRATE".into())));
        assert_eq!(
            task.status,
            Some(TaskStatus::Unknown("ROLLING_BACK".into()))
        );
        assert!(!task.is_terminal());
        let mode = task.target_config.as_ref().unwrap().charge_mode.clone();
        assert_eq!(mode, Some(ChargeMode::Unknown("spot".into())));
        assert_eq!(serde_json::to_string(&task).unwrap(), json);
    }

    #[test]
    fn known_values_parse() {
        for (s, v) in [
            ("RUNNING", TaskStatus::Running),
            ("SUCCESS", TaskStatus::Success),
            ("FAILED", TaskStatus::Failed),
        ] {
            assert_eq!(TaskStatus::from(s), v);
            assert_eq!(v.as_str(), s);
        }
        assert!(TaskStatus::Success.is_terminal() && TaskStatus::Failed.is_terminal());
        assert!(!TaskStatus::Running.is_terminal());
        assert_eq!(ChargeMode::from("prePaid"), ChargeMode::PrePaid);
        assert_eq!(TaskType::from("OPEN_SNAT"), TaskType::OpenSnat);
    }

    #[test]
    fn a_bad_timestamp_is_kept_without_failing_the_response() {
        let json = r#"{"status":"RUNNING","create_time":"yesterday","start_time":"2021-08-19T01:52:49.492Z"}"#;
        let task: InstanceTask = serde_json::from_str(json).unwrap();
        let created = task.create_time.as_ref().unwrap();
        assert_eq!(created.timestamp(), None);
        assert_eq!(created.as_str(), "yesterday");
        assert!(task.start_time.as_ref().unwrap().timestamp().is_some());
        assert_eq!(serde_json::to_string(&task).unwrap(), json);
    }

    #[test]
    fn progress_out_of_range_or_oddly_typed_does_not_fail() {
        for (json, raw, pct) in [
            (r#"{"progress":-1}"#, Some(-1), None),
            (r#"{"progress":250}"#, Some(250), None),
            (r#"{"progress":100}"#, Some(100), Some(100)),
            (r#"{"progress":0}"#, Some(0), Some(0)),
            (r#"{"progress":42.7}"#, Some(42), Some(42)),
            (r#"{"progress":"55"}"#, Some(55), Some(55)),
            (r#"{"progress":"lots"}"#, None, None),
            (r#"{"progress":[1]}"#, None, None),
            (r#"{"progress":1e300}"#, Some(i64::MAX), None),
        ] {
            let task: InstanceTask = serde_json::from_str(json).unwrap();
            assert_eq!(task.progress, raw, "{json}");
            assert_eq!(task.progress_percent(), pct, "{json}");
        }
    }

    #[test]
    fn a_window_that_does_not_parse_is_none() {
        for bad in ["1800", "18:0", "25:00", "18:60", "", "ab:cd"] {
            let w = OperateWindow {
                start_time: Some(bad.into()),
                end_time: None,
            };
            assert_eq!(w.start(), None, "{bad}");
        }
        let w = OperateWindow {
            start_time: Some("9:30".into()),
            end_time: None,
        };
        assert_eq!(w.start(), Some(jiff::civil::time(9, 30, 0, 0)));
    }

    #[test]
    fn task_time_formats_like_the_api() {
        let t: jiff::Timestamp = "2021-08-19T01:52:49.493Z".parse().unwrap();
        assert_eq!(TaskTime::from(t).as_str(), "2021-08-19T01:52:49.493Z");
    }
}

/// One page of `ListInstanceTasks`: the tasks, newest first, and how many the query matches.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct TaskPage {
    #[serde(default)]
    pub(crate) tasks: Vec<InstanceTask>,
    #[serde(default)]
    pub(crate) page: PageInfo,
}

/// Where a page of `ListInstanceTasks` stands.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PageInfo {
    /// The records the query matches, in all pages.
    #[serde(default)]
    pub(crate) count: Option<u64>,
    /// The last record's id: the next page holds the records older than it.
    #[serde(default)]
    pub(crate) marker: Option<String>,
}
