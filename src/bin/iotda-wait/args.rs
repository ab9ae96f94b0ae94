//! Command-line arguments, and the duration syntax they use.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use iotda_task_watcher::choose::{Choice, Pick};
use iotda_task_watcher::watch::Condition;
use iotda_task_watcher::TaskType;

/// What `-h` and `--help` both end with: where credentials come from, and the exit codes.
const AFTER_HELP: &str = "\
Credentials, the first found of: HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK (with
HUAWEICLOUD_SDK_SECURITY_TOKEN for temporary ones); the profile file
(HUAWEICLOUD_SDK_CREDENTIALS_FILE or ~/.huaweicloud/credentials, section [basic]); KooCLI's
profile (HW_SHARED_CONFIG_FILE or ~/.hcloud/config.json, profile HW_PROFILE or current); OIDC to STS
(HUAWEICLOUD_OIDC_*); CCE Pod Identity (HC_CONTAINER_*); the ECS metadata service (an instance
with an agency). Fetched credentials are renewed before they expire. Without --project-id, the
project is looked up from IAM by --region.

Exit codes:
  0    every task SUCCESS (with --until: its condition met)
  1    a task FAILED
  2    bad usage or input (no request sent)
  3    timed out
  4    an error that retrying cannot fix (a refused retry too)
  5    the results could not be written to stdout
  6    a task ended without meeting the --until condition
  130  interrupted (SIGINT or SIGTERM)
With several tasks: 1 if any FAILED, else 4 if any error, else 6 if any unmet, else 3 if
any timed out, else 0.";

/// The shortest delay or request timeout the command accepts: anything shorter only adds load.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The most retries of a FAILED task the command accepts.
pub const MAX_RETRIES: u32 = 100;

/// The most requests in flight the command accepts.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Waits for Huawei Cloud IoTDA instance tasks to finish.
#[derive(Debug, Parser)]
#[command(
    name = "iotda-wait",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// Prints shell completions or the manual page instead of waiting.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The instance the tasks belong to.
    #[arg(long, value_name = "ID", required = true)]
    pub instance_id: Option<String>,

    /// The tasks to wait for; an id given twice is waited for once. Without ids, choose them
    /// from the instance's list with --latest, --since or --all.
    #[arg(value_name = "TASK_ID")]
    pub task_ids: Vec<String>,

    /// Chooses the newest task of the instance (with --type, of that type), whatever its
    /// status.
    #[arg(long, conflicts_with_all = ["since", "all"])]
    pub latest: bool,

    /// Chooses the tasks created at or after TIME: RFC 3339, or a duration meaning that long
    /// ago (e.g. 10m). Until one is listed, the list is read again, paced like polls, up to
    /// the deadline.
    #[arg(long, value_name = "TIME", conflicts_with = "all")]
    pub since: Option<String>,

    /// Chooses every task PENDING or RUNNING now; none: exit 0 at once.
    #[arg(long)]
    pub all: bool,

    /// With --latest, --since or --all: tasks of this type only (CREATE, MODIFY, ...).
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: Option<String>,

    /// The project id.
    #[arg(
        long,
        value_name = "ID",
        env = "HUAWEICLOUD_SDK_PROJECT_ID",
        hide_env_values = true
    )]
    pub project_id: Option<String>,

    /// The region, e.g. cn-north-4.
    #[arg(long, value_name = "REGION", env = "HUAWEICLOUD_SDK_REGION")]
    pub region: Option<String>,

    /// The API endpoint; overrides --region's host (the region still names the project to
    /// look up). http:// is accepted for loopback hosts only.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// What to wait for: `done` (SUCCESS), `started` (RUNNING or SUCCESS: the task left
    /// PENDING), `status=<STATUS>` (e.g. status=RUNNING), or `progress>=<N>` (0 to 100; SUCCESS
    /// counts). A task that ends without meeting it exits 6, or 1 when it FAILED.
    #[arg(long, value_name = "CONDITION", default_value = "done", value_parser = parse_condition)]
    pub until: Condition,

    /// Retries a FAILED task up to N times (RetryInstanceTask), under the same deadline. A
    /// retried task may fail again for the same reason, and running a change again may cost
    /// money: never done unless asked. 0 to 100.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry_failed: u32,

    /// Gives up after this long, e.g. 90s, 10m, 1h30m [default: 60m], counted for each wait
    /// from its start; starting (credentials, the project, a task list looked at again) gives up
    /// after as long. A wait resumed from --state-dir keeps its saved deadline, unless given
    /// --timeout (counted from the wait's first start) or --deadline.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Gives up at this time (RFC 3339, e.g. 2026-11-27T18:00:00Z); overrides --timeout, and
    /// the deadline saved with --state-dir. A retried CI job can keep its first attempt's
    /// deadline.
    #[arg(long, value_name = "RFC3339", value_parser = parse_deadline)]
    pub deadline: Option<jiff::Timestamp>,

    /// Keeps each wait's state in DIR/<task_id>.json, written whole when the task changes and
    /// before every retry (otherwise at most every 2s), and resumes from it when present: the same deadline, the last state
    /// seen, the retries spent. It is kept when the wait ends: a later run with the same ids
    /// reports the same outcome (after one poll) and retries nothing already retried. One
    /// process at a time waits for a task (DIR/<task_id>.lock); another waits for it to finish.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,

    /// With --state-dir: forgets the tasks' saved states first, and starts over (a new
    /// deadline, no retries spent).
    #[arg(long, requires = "state_dir")]
    pub fresh: bool,

    /// The first delay between polls, and the delay after a maintenance window opens; at
    /// least 10ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub min_delay: Duration,

    /// The longest delay between polls; at least --min-delay.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_delay: Duration,

    /// The longest delay between polls of a PENDING task whose maintenance window is closed:
    /// the delays grow towards it only after the task has been PENDING for a while, and a poll
    /// lands just after the window opens. At least --max-delay.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub max_window_delay: Duration,

    /// Takes the credentials from this profile of KooCLI's file (`HW_SHARED_CONFIG_FILE` or
    /// ~/.hcloud/config.json), and from nowhere else.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Says on stderr where the credentials and the project id came from (never a secret).
    #[arg(short, long)]
    pub verbose: bool,

    /// Exit 3 at once when a PENDING task's maintenance window opens after the deadline.
    /// Only a resize made with `delay=true` waits for its window; any other task may start
    /// at once, so use this only for tasks known to wait for their window.
    #[arg(long)]
    pub fail_fast_on_window: bool,

    /// The timeout of each request; at least 10ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// At most this many requests per second over all tasks (bursts of as many). Without
    /// it, nothing is held back until the service throttles a request; from then on the
    /// command keeps near the rate the service accepts.
    #[arg(long, value_name = "N")]
    pub max_rps: Option<f64>,

    /// Share the request budget with every process given the same Redis server:
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for TLS. `--max-rps` is then
    /// the fleet's rate, and a throttle seen by any process slows them all. If Redis fails,
    /// each process paces itself until it answers again.
    #[arg(
        long,
        value_name = "URL",
        env = "IOTDA_SHARED_BUDGET",
        hide_env_values = true
    )]
    pub shared_budget: Option<String>,

    /// Trust the `rediss://` server of `--shared-budget` only through the CA certificate in
    /// this PEM file (a DCS instance's, from its console), not the public roots.
    #[arg(
        long,
        value_name = "FILE",
        env = "IOTDA_SHARED_BUDGET_CA",
        requires = "shared_budget"
    )]
    pub shared_budget_ca: Option<std::path::PathBuf>,

    /// The most requests in flight at once, over all tasks; 1 to 1024.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_in_flight: usize,

    /// What stdout carries: one line per task, or one JSON object per event.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

impl Args {
    /// How long to wait: `--timeout`, or an hour.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(60 * 60))
    }

    /// How the tasks are chosen from the instance's list, when they are: the rule, and the
    /// flags as typed, which name the choice kept in `--state-dir`.
    pub fn pick(&self) -> Result<Option<(Pick, String)>, String> {
        let (choice, typed) = if self.latest {
            (Choice::Latest, "--latest".to_owned())
        } else if let Some(since) = &self.since {
            let at = parse_since(since).map_err(|e| format!("--since: {e}"))?;
            (Choice::Since(at), format!("--since {since}"))
        } else if self.all {
            (Choice::Active, "--all".to_owned())
        } else {
            return Ok(None);
        };
        Ok(Some(match &self.task_type {
            Some(kind) => {
                let kind = kind.trim().to_ascii_uppercase();
                let typed = format!("{typed} --type {kind}");
                (choice.of_type(TaskType::from(kind.as_str())), typed)
            }
            None => (Pick::from(choice), typed),
        }))
    }

    /// Refuses settings that cannot be right, with the range that is allowed.
    pub fn check(&self) -> Result<(), String> {
        let choosing = self.latest || self.since.is_some() || self.all;
        if choosing && !self.task_ids.is_empty() {
            return Err(
                "--latest, --since and --all choose the tasks: give them or task ids, not both"
                    .into(),
            );
        }
        if self.task_type.is_some() && !choosing {
            return Err("--type needs --latest, --since or --all".into());
        }
        if !choosing && self.task_ids.is_empty() {
            return Err(
                "no task: give task ids, or choose them with --latest, --since or --all".into(),
            );
        }
        self.pick()?;
        let at_least = |name: &str, value: Duration, min: Duration, what: &str| {
            if value < min {
                Err(format!("{name} must be at least {what} (got {value:?})"))
            } else {
                Ok(())
            }
        };
        at_least("--min-delay", self.min_delay, MIN_INTERVAL, "10ms")?;
        at_least(
            "--request-timeout",
            self.request_timeout,
            MIN_INTERVAL,
            "10ms",
        )?;
        at_least(
            "--max-delay",
            self.max_delay,
            self.min_delay,
            &format!("--min-delay, {:?}", self.min_delay),
        )?;
        at_least(
            "--max-window-delay",
            self.max_window_delay,
            self.max_delay,
            &format!("--max-delay, {:?}", self.max_delay),
        )?;
        if let Some(rps) = self.max_rps {
            if !(rps.is_finite() && (0.01..=10_000.0).contains(&rps)) {
                return Err(format!(
                    "--max-rps must be between 0.01 and 10000 requests per second (got {rps})"
                ));
            }
        }
        if self.retry_failed > MAX_RETRIES {
            return Err(format!(
                "--retry-failed must be between 0 and {MAX_RETRIES} (got {})",
                self.retry_failed
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(format!(
                "--max-in-flight must be between 1 and {MAX_IN_FLIGHT} (got {})",
                self.max_in_flight
            ));
        }
        Ok(())
    }
}

/// What the command can print instead of waiting.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints a completion script for a shell, e.g. `iotda-wait completions bash`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the manual page (roff), e.g. `iotda-wait man > iotda-wait.1`.
    Man,
}

/// The format of stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `<task_id> <STATUS>` for each task when its wait ends.
    Text,
    /// One JSON object per line for every event.
    Json,
}

/// Parses `done`, `started`, `status=<S>` or `progress>=<N>`.
pub fn parse_condition(text: &str) -> Result<Condition, String> {
    text.parse()
        .map_err(|e: iotda_task_watcher::watch::ParseConditionError| e.to_string())
}

/// Parses an RFC 3339 time with an offset, e.g. `2026-11-27T18:00:00Z`.
pub fn parse_deadline(text: &str) -> Result<jiff::Timestamp, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-11-27T18:00:00Z: {e}"))
}

/// Parses an RFC 3339 time, or a duration (as [`parse_duration`]) meaning that long ago.
pub fn parse_since(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(at) = text.trim().parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let ago = parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 10m"))?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|e| format!("{text:?}: {e}"))?;
    jiff::Timestamp::now()
        .checked_sub(ago)
        .map_err(|e| format!("{text:?} ago: {e}"))
}

/// Parses `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("a duration is empty".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?} is not a duration like 90s, 10m or 1h30m"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}: use ms, s, m, h or d"
                ))
            }
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(u32::try_from(value).map_err(|_| format!("{text:?} is too large"))?)
            .ok_or_else(|| format!("{text:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        assert_eq!(
            parse_deadline("2026-11-27T18:00:00Z").unwrap().as_second(),
            1_795_802_400
        );
        assert!(parse_deadline("2026-11-27T18:00:00+08:00").is_ok());
        assert!(parse_deadline("tomorrow").is_err());
        assert!(parse_deadline("2026-11-27 18:00").is_err());
    }

    #[test]
    fn since_is_a_time_or_how_long_ago() {
        assert_eq!(
            parse_since("2026-11-27T18:00:00Z").unwrap().as_second(),
            1_795_802_400
        );
        let ago = jiff::Timestamp::now().as_second() - parse_since("10m").unwrap().as_second();
        assert!((599..=601).contains(&ago), "{ago}");
        assert!(parse_since("soon").is_err());
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("90s"), Ok(s(90)));
        assert_eq!(parse_duration("10m"), Ok(s(600)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("1h30m15s"), Ok(s(5415)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(s(45)));
        for bad in ["", "m", "10x", "1.5h", "-3s", "h1", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
