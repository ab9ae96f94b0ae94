//! Validated identifiers: a value of these types is always safe to put on a request path.
//!
//! The API page allows up to 36 characters of `[a-f0-9-]` for an instance id and up to 64 for a
//! task id. A project id is not constrained by the page; Huawei Cloud issues 32 hex digits, and
//! this crate accepts up to 64 ASCII letters, digits, `-` and `_`, which is enough to refuse
//! anything that could add a path segment or a query.

use std::fmt;
use std::str::FromStr;

/// What was wrong with an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {problem}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    problem: IdProblem,
}

impl IdError {
    /// Which identifier was refused, e.g. `"task id"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// What was wrong with it.
    #[must_use]
    pub fn problem(&self) -> &IdProblem {
        &self.problem
    }
}

/// The reason an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdProblem {
    /// The identifier was empty.
    #[error("it is empty")]
    Empty,
    /// The identifier was longer than the API allows.
    #[error("it is {len} characters long, at most {max} are allowed")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The most the API allows.
        max: usize,
    },
    /// The identifier held a character the API does not allow.
    #[error("character {ch:?} at position {position} is not allowed ({allowed})")]
    BadChar {
        /// The first character refused.
        ch: char,
        /// Its position, counted in characters from 0.
        position: usize,
        /// The characters that are allowed.
        allowed: &'static str,
    },
}

fn validate(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: fn(char) -> bool,
) -> Result<(), IdError> {
    let fail = |problem| {
        // Keep the error readable even when the input is enormous.
        let value = value.chars().take(80).collect();
        Err(IdError {
            kind,
            value,
            problem,
        })
    };
    if value.is_empty() {
        return fail(IdProblem::Empty);
    }
    if let Some((position, ch)) = value.chars().enumerate().find(|&(_, c)| !ok(c)) {
        return fail(IdProblem::BadChar {
            ch,
            position,
            allowed,
        });
    }
    let len = value.chars().count();
    if len > max {
        return fail(IdProblem::TooLong { len, max });
    }
    Ok(())
}

fn lower_hex_or_dash(c: char) -> bool {
    matches!(c, 'a'..='f' | '0'..='9' | '-')
}

fn project_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

macro_rules! id_type {
    (
        $(#[$doc:meta])*
        $name:ident, $kind:literal, $max:literal, $allowed:literal, $ok:path
    ) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The most characters the API allows.
            pub const MAX_LEN: usize = $max;

            /// Validates `value`.
            ///
            /// # Errors
            /// An [`IdError`] saying what is wrong when `value` is empty, too long, or holds a
            /// character the API does not allow.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value, $max, $allowed, $ok)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A Huawei Cloud project id: 1 to 64 ASCII letters, digits, `-` or `_`.
    ///
    /// ```
    /// use iotda_task_watcher::ProjectId;
    /// let id: ProjectId = "0123456789abcdef0123456789abcdef".parse()?;
    /// assert!("../x".parse::<ProjectId>().is_err());
    /// # Ok::<(), iotda_task_watcher::ids::IdError>(())
    /// ```
    ProjectId, "project id", 64, "ASCII letters, digits, '-' and '_'", project_char
);

id_type!(
    /// An IoTDA instance id: 1 to 36 characters of `a-f`, `0-9` and `-`.
    ///
    /// ```
    /// use iotda_task_watcher::InstanceId;
    /// let id: InstanceId = "a1b2c3d4-0000-1111-2222-333344445555".parse()?;
    /// let err = "A1B2".parse::<InstanceId>().unwrap_err();
    /// assert!(err.to_string().contains("not allowed"));
    /// # Ok::<(), iotda_task_watcher::ids::IdError>(())
    /// ```
    InstanceId, "instance id", 36, "only 'a'-'f', '0'-'9' and '-'", lower_hex_or_dash
);

id_type!(
    /// An instance task id: 1 to 64 characters of `a-f`, `0-9` and `-`.
    ///
    /// ```
    /// use iotda_task_watcher::TaskId;
    /// let id: TaskId = "075f413d-a3bb-4243-974d-8eb9221c1234".parse()?;
    /// assert!("075f413d/../retry".parse::<TaskId>().is_err());
    /// # Ok::<(), iotda_task_watcher::ids::IdError>(())
    /// ```
    TaskId, "task id", 64, "only 'a'-'f', '0'-'9' and '-'", lower_hex_or_dash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_api_page_examples() {
        assert!(TaskId::new("075f413d-a3bb-4243-974d-8eb9221c1234").is_ok());
        assert!(InstanceId::new("a1b2c3d4-0000-1111-2222-333344445555").is_ok());
        assert!(ProjectId::new("0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn lengths_are_bounded_by_the_api() {
        assert!(InstanceId::new("a".repeat(36)).is_ok());
        let err = InstanceId::new("a".repeat(37)).unwrap_err();
        assert_eq!(err.problem(), &IdProblem::TooLong { len: 37, max: 36 });
        assert!(TaskId::new("0".repeat(64)).is_ok());
        assert!(TaskId::new("0".repeat(65)).is_err());
        assert!(ProjectId::new("Z".repeat(65)).is_err());
    }

    #[test]
    fn refuses_empty_and_foreign_characters_with_a_clear_reason() {
        assert_eq!(TaskId::new("").unwrap_err().problem(), &IdProblem::Empty);
        for bad in [
            "ABC", "abc/def", "abc?x=1", "abc#", "ab%2f", "..", " abc", "abcé", "g",
        ] {
            let err = TaskId::new(bad).unwrap_err();
            assert!(
                matches!(err.problem(), IdProblem::BadChar { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("invalid task id"), "{err}");
        }
        let err = InstanceId::new("abcX").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid instance id \"abcX\": character 'X' at position 3 is not allowed \
             (only 'a'-'f', '0'-'9' and '-')"
        );
        assert!(ProjectId::new("abc/..").is_err());
        assert!(ProjectId::new("a b").is_err());
    }

    #[test]
    fn a_huge_bad_id_gives_a_short_error() {
        let err = TaskId::new("x".repeat(100_000)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    proptest::proptest! {
        /// Whatever a caller passes, an id that is accepted is one path segment: no `/`, `?`,
        /// `#`, `%` or dot-segment can reach the URL.
        #[test]
        fn an_accepted_id_is_one_plain_path_segment(raw in ".{0,80}") {
            for accepted in [
                TaskId::new(raw.as_str()).ok().map(String::from),
                InstanceId::new(raw.as_str()).ok().map(String::from),
                ProjectId::new(raw.as_str()).ok().map(String::from),
            ].into_iter().flatten() {
                proptest::prop_assert!(accepted.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                proptest::prop_assert!(accepted != "." && accepted != "..");
            }
        }
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let id: TaskId = serde_json::from_str("\"abc-123\"").unwrap();
        assert_eq!(id.as_str(), "abc-123");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc-123\"");
        assert!(serde_json::from_str::<TaskId>("\"../x\"").is_err());
    }
}
