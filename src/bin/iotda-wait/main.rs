//! `iotda-wait`: waits for IoTDA instance tasks from shell scripts and CI.
#![forbid(unsafe_code)]

/// A line on stderr, like `eprintln!`, except that a closed stderr is not a panic: the exit
/// code still says what happened.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod report;
mod state;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use futures::StreamExt;
use iotda_task_watcher::choose::{Choice, Pick};
use iotda_task_watcher::client::budget::RequestBudget;
use iotda_task_watcher::client::provider::KooCli;
#[cfg(feature = "redis")]
use iotda_task_watcher::client::shared::SharedBudget;
use iotda_task_watcher::client::BuildError;
use iotda_task_watcher::watch::{OutcomeKind, PollPolicy, WaitState};
use iotda_task_watcher::{
    watch_many, InstanceId, InstanceTask, IotdaClient, IotdaClientBuilder, ProjectId, TaskId,
    TaskType, TaskWatcher,
};
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Command};
use crate::report::Reporter;

/// Bad usage or input: nothing was sent.
const USAGE: u8 = 2;
/// The results could not be written to stdout.
const UNWRITTEN: u8 = 5;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = &args.command {
        return ExitCode::from(print_extra(command));
    }
    init_logs();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note!("iotda-wait: cannot start the runtime: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let (client, waits, _locks) = match runtime.block_on(prepare(&args)) {
        Ok(ready) => ready,
        Err(Stop { code, message }) => {
            note!("iotda-wait: {message}");
            return ExitCode::from(code);
        }
    };
    ExitCode::from(runtime.block_on(run(&args, client, waits)))
}

/// Everything that can be refused before a request is sent.
type Prepared = (IotdaClient, Waits, Vec<state::TaskLock>);

/// The waits to run: their tasks, the states they resume from, and the tasks chosen from the
/// instance's list, if they were.
struct Waits {
    instance_id: InstanceId,
    task_ids: Vec<TaskId>,
    saved: Vec<Option<WaitState>>,
    selected: Vec<InstanceTask>,
}

/// Why the command stopped before any wait began: what to say, and the exit code.
struct Stop {
    code: u8,
    message: String,
}

/// What the user typed, or what is in the files named.
impl From<String> for Stop {
    fn from(message: String) -> Self {
        Self {
            code: USAGE,
            message,
        }
    }
}

async fn prepare(args: &Args) -> Result<Prepared, Stop> {
    args.check()?;
    let instance_id = args.instance_id.as_deref().unwrap_or_default();
    let instance_id = InstanceId::new(instance_id).map_err(|e| e.to_string())?;
    let mut task_ids: Vec<TaskId> = Vec::with_capacity(args.task_ids.len());
    for id in &args.task_ids {
        let id = TaskId::new(id.as_str()).map_err(|e| e.to_string())?;
        if task_ids.contains(&id) {
            note!("iotda-wait: {id} is given more than once; it is waited for once");
        } else {
            task_ids.push(id);
        }
    }
    let project_id = match args.project_id.as_deref() {
        Some(id) => Some(ProjectId::new(id).map_err(|e| e.to_string())?),
        None => None,
    };
    // The deadline of the start (the state kept may have another for the waits).
    let deadline = args.deadline.map_or_else(
        || std::time::SystemTime::now() + args.timeout(),
        std::time::SystemTime::from,
    );
    // Read before the start, which may take a while: `--since 10m` counts from now.
    let picked = args.pick()?;
    let client = start_client(args, project_id.as_ref(), deadline).await?;
    if args.verbose {
        let project = if project_id.is_some() {
            "given"
        } else {
            "found"
        };
        note!(
            "iotda-wait: credentials from {}; project {} ({project})",
            client.credentials_source(),
            client.project_id()
        );
    }
    let mut selected = Vec::new();
    if let Some((pick, typed)) = picked {
        if let Some(kind) = pick
            .task_type()
            .filter(|k| !TaskType::KNOWN.contains(&k.as_str()))
        {
            note!(
                "iotda-wait: --type {kind} is not a type this command knows ({}); tasks of it are \
                 chosen all the same",
                TaskType::KNOWN.join(", ")
            );
        }
        let kept = match &args.state_dir {
            Some(dir) => {
                state::check_writable(dir)?;
                if args.fresh {
                    None
                } else {
                    state::kept_choice(dir, &instance_id, &typed)?
                }
            }
            None => None,
        };
        selected = match kept {
            Some(tasks) => tasks,
            None => {
                let chosen = choose(args, &client, &instance_id, &pick, deadline).await?;
                if let Some(dir) = &args.state_dir {
                    state::keep_choice(dir, &instance_id, &typed, deadline, &chosen)?;
                }
                chosen
            }
        };
        for task in &selected {
            let id = task.task_id.as_deref().unwrap_or_default();
            let id = TaskId::new(id).map_err(|e| Stop {
                code: exit_code(OutcomeKind::Error),
                message: format!("the service listed a task whose id is not valid: {e}"),
            })?;
            if !task_ids.contains(&id) {
                task_ids.push(id);
            }
        }
    }
    let mut saved = Vec::with_capacity(task_ids.len());
    let mut locks = Vec::new();
    match &args.state_dir {
        Some(dir) => {
            state::check_writable(dir)?;
            // The locks first: the states read after them are the last ones written.
            locks = match state::lock_all(dir, &task_ids, deadline).await {
                Ok(locks) => locks,
                Err(state::LockError::Io(message)) => return Err(message.into()),
                Err(state::LockError::TimedOut { task, holder }) => {
                    return Err(Stop {
                        code: exit_code(OutcomeKind::TimedOut),
                        message: format!(
                            "{task}: timed out waiting for {holder} to let go of the task's lock"
                        ),
                    })
                }
            };
            for id in &task_ids {
                if args.fresh {
                    state::forget(dir, id)?;
                }
                saved.push(state::load(dir, &instance_id, id)?);
            }
        }
        None => saved.resize(task_ids.len(), None),
    }
    let waits = Waits {
        instance_id,
        task_ids,
        saved,
        selected,
    };
    Ok((client, waits, locks))
}

/// The tasks `pick` chooses from the instance's list. Until one is listed (a change's task
/// may be listed a moment after the call that started it), the list is read again, from
/// `--min-delay` doubling up to `--max-delay`, up to `deadline`; none PENDING or RUNNING for
/// `--all` ends at once, exit 0.
async fn choose(
    args: &Args,
    client: &IotdaClient,
    instance_id: &InstanceId,
    pick: &Pick,
    deadline: std::time::SystemTime,
) -> Result<Vec<InstanceTask>, Stop> {
    let mut pause = args.min_delay;
    loop {
        let bound = time_left(deadline).max(args.request_timeout);
        let listing = tokio::time::timeout(bound, client.list_instance_tasks(instance_id));
        let Ok(listed) = listing.await else {
            return Err(Stop {
                code: exit_code(OutcomeKind::TimedOut),
                message: format!("{instance_id}: timed out listing the tasks"),
            });
        };
        let why = match listed {
            Ok(listed) => {
                let chosen: Vec<InstanceTask> = pick.pick(&listed).into_iter().cloned().collect();
                if !chosen.is_empty() {
                    return Ok(chosen);
                }
                if *pick.choice() == Choice::Active {
                    return Err(Stop {
                        code: 0,
                        message: format!(
                            "{instance_id}: no {}; nothing to wait for",
                            none_of(pick)
                        ),
                    });
                }
                format!("no {} yet", none_of(pick))
            }
            Err(error) if error.is_transient() => {
                format!("listing the tasks failed: {}", report::chain(&error))
            }
            Err(error) => {
                return Err(Stop {
                    code: exit_code(OutcomeKind::Error),
                    message: format!(
                        "{instance_id}: the tasks could not be listed: {}",
                        report::chain(&error)
                    ),
                })
            }
        };
        let left = timed_out_unless_left(deadline, || format!("{instance_id}: timed out: {why}"))?;
        tokio::time::sleep(pause.min(left)).await;
        pause = pause.saturating_mul(2).min(args.max_delay);
    }
}

/// The time left until `deadline`, zero once it has passed.
fn time_left(deadline: std::time::SystemTime) -> std::time::Duration {
    deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

/// The time left until `deadline`; none left stops the command as timed out, saying `why`.
fn timed_out_unless_left(
    deadline: std::time::SystemTime,
    why: impl FnOnce() -> String,
) -> Result<std::time::Duration, Stop> {
    match time_left(deadline) {
        left if !left.is_zero() => Ok(left),
        _ => Err(Stop {
            code: exit_code(OutcomeKind::TimedOut),
            message: why(),
        }),
    }
}

/// What was looked for and not found, after "no": "task of type MODIFY created since T".
fn none_of(pick: &Pick) -> String {
    let of_type = pick
        .task_type()
        .map(|t| format!(" of type {t}"))
        .unwrap_or_default();
    match pick.choice() {
        Choice::Latest => format!("task{of_type} is listed"),
        Choice::Since(since) => format!("task{of_type} created since {since} is listed"),
        Choice::Active => format!("task{of_type} is PENDING or RUNNING"),
        _ => format!("task{of_type} is listed"),
    }
}

/// The client, built again while what fails may pass (IAM or a credentials service that does
/// not answer for a moment), with a growing pause and a line on stderr each time, up to
/// `deadline`.
async fn start_client(
    args: &Args,
    project_id: Option<&ProjectId>,
    deadline: std::time::SystemTime,
) -> Result<IotdaClient, Stop> {
    let mut pause = std::time::Duration::from_millis(200);
    let mut said = String::new();
    loop {
        // Tried once at least, as a wait polls once past its deadline; no try outlasts it.
        let bound = time_left(deadline).max(args.request_timeout);
        let building = tokio::time::timeout(bound, client_builder(args, project_id)?.resolve());
        let error = match building.await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(Stop {
                    code: exit_code(OutcomeKind::TimedOut),
                    message: "timed out before the client could start".to_owned(),
                })
            }
        };
        let why = report::chain(&error);
        if !error.is_transient() {
            // IAM answered, and named no project: the service's word, not the user's typing.
            let code = if matches!(error, BuildError::ProjectLookup(_)) {
                exit_code(OutcomeKind::Error)
            } else {
                USAGE
            };
            return Err(Stop { code, message: why });
        }
        let left = timed_out_unless_left(deadline, || {
            format!("timed out before the first request: {why}")
        })?;
        let now = pause.min(left);
        let seconds = now.as_secs_f64();
        if why == said {
            note!("iotda-wait: the same again; trying again in {seconds:.1} s");
        } else {
            note!("iotda-wait: {why}; trying again in {seconds:.1} s");
            said = why;
        }
        tokio::time::sleep(now).await;
        pause = pause
            .saturating_mul(2)
            .min(std::time::Duration::from_secs(10));
    }
}

/// The client's builder, from the flags.
fn client_builder(args: &Args, project_id: Option<&ProjectId>) -> Result<IotdaClientBuilder, Stop> {
    let mut budget = RequestBudget::default();
    if let Some(rps) = args.max_rps {
        // Bursts of one second's worth, at least one request.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let burst = rps.ceil() as u32;
        budget = budget.with_max_rps(rps, burst);
    }
    let mut builder = IotdaClient::builder()
        .timeout(args.request_timeout)
        .budget(budget);
    builder = shared_budget(builder, args)?;
    if let Some(profile) = &args.profile {
        builder = builder.credentials_provider(KooCli::new().profile(profile.as_str()));
    }
    if let Some(project_id) = project_id {
        builder = builder.project_id(project_id.clone());
    }
    if let Some(region) = &args.region {
        builder = builder.region(region.as_str());
    }
    match &args.endpoint {
        Some(endpoint) => builder = builder.endpoint(endpoint.as_str()),
        None if args.region.is_none() => {
            return Err(
                "no endpoint: pass --region, set HUAWEICLOUD_SDK_REGION, or pass --endpoint"
                    .to_owned()
                    .into(),
            )
        }
        None => {}
    }
    Ok(builder)
}

/// The builder with the fleet's budget of `--shared-budget`, if given.
#[cfg(feature = "redis")]
fn shared_budget(
    mut builder: IotdaClientBuilder,
    args: &Args,
) -> Result<IotdaClientBuilder, String> {
    let Some(url) = &args.shared_budget else {
        return Ok(builder);
    };
    let mut shared = SharedBudget::redis(url).map_err(|e| format!("--shared-budget: {e}"))?;
    if let Some(file) = &args.shared_budget_ca {
        let pem = std::fs::read(file)
            .map_err(|e| format!("--shared-budget-ca: {}: {e}", file.display()))?;
        shared = shared
            .root_certificate(pem)
            .map_err(|e| format!("--shared-budget-ca: {}: {e}", file.display()))?;
    }
    if args.verbose {
        note!("iotda-wait: the request budget is shared through {shared}");
    }
    builder = builder.shared_budget(shared);
    Ok(builder)
}

/// Without the `redis` feature, `--shared-budget` is refused.
#[cfg(not(feature = "redis"))]
fn shared_budget(builder: IotdaClientBuilder, args: &Args) -> Result<IotdaClientBuilder, String> {
    match &args.shared_budget {
        Some(_) => Err(
            "--shared-budget: this iotda-wait was built without the `redis` feature \
                        (cargo install iotda-task-watcher --features cli,redis)"
                .into(),
        ),
        None => Ok(builder),
    }
}

async fn run(args: &Args, client: IotdaClient, waits: Waits) -> u8 {
    let Waits {
        instance_id,
        task_ids,
        saved,
        selected,
    } = waits;
    let token = CancellationToken::new();
    let interrupted = CancellationToken::new();
    tokio::spawn(cancel_on_signal(token.clone(), interrupted.clone()));

    let terminal = std::io::stderr().is_terminal();
    let color = color_wanted();
    let reporter = Reporter::new(args.output, &task_ids, terminal, color)
        .waiting_for(&args.until, args.retry_failed);
    for task in &selected {
        reporter.selected(task);
    }

    // A resumed wait reports no `Observed`: its last snapshot comes from the saved state.
    let mut last: Vec<Option<InstanceTask>> = saved
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.last().cloned()))
        .collect();
    let policy = PollPolicy::default()
        .with_min_delay(args.min_delay)
        .with_max_delay(args.max_delay)
        .with_max_window_delay(args.max_window_delay);
    let watchers: Vec<_> = task_ids
        .iter()
        .zip(saved)
        .enumerate()
        .map(|(i, (id, saved))| {
            let mut watcher = TaskWatcher::new(&client, &instance_id, id)
                .timeout(args.timeout())
                .policy(policy)
                .fail_fast_on_window(args.fail_fast_on_window)
                .until(args.until.clone())
                .retry_failed(args.retry_failed)
                .request_timeout(args.request_timeout)
                .cancel_token(token.clone());
            // A deadline given now wins over the one saved; a timeout counts from the wait's
            // first start, so that a job run again as it was keeps its deadline.
            let started = saved.as_ref().map(WaitState::started_at);
            if let Some(state) = saved {
                watcher = watcher.resume_from(state);
            }
            if let Some(deadline) = args.deadline {
                watcher = watcher.deadline(deadline.into());
            } else if let (Some(timeout), Some(started)) = (args.timeout, started) {
                watcher = watcher.deadline(std::time::SystemTime::from(started) + timeout);
            }
            if let Some(dir) = &args.state_dir {
                watcher = watcher.on_state(state::saver(state::path(dir, id)));
            }
            (i, watcher)
        })
        .collect();
    let mut events = std::pin::pin!(watch_many(watchers, args.max_in_flight));
    // With many tasks, the most severe outcome decides the exit code.
    let mut worst = OutcomeKind::Success;
    let mut short_said = false;
    let mut looks = tokio::time::interval(std::time::Duration::from_secs(1));
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = looks.tick(), if !short_said => {
                short_said = say_if_short(&client, &reporter);
                continue;
            }
        };
        let Some((i, event)) = next else { break };
        if !short_said {
            short_said = say_if_short(&client, &reporter);
        }
        if let Some(task) = event.task() {
            last[i] = Some(task.clone());
        }
        reporter.event(i, &task_ids[i], &event, last[i].as_ref());
        if let Some(outcome) = event.outcome() {
            worst = worst.max(OutcomeKind::of(outcome));
        }
    }
    summarize_throttling(&client);
    if interrupted.is_cancelled() {
        exit_code(OutcomeKind::Cancelled)
    } else if reporter.lost_output() {
        UNWRITTEN
    } else {
        exit_code(worst)
    }
}

/// The exit code of an outcome: 0 success or met, 1 failed, 3 timed out, 4 error, 6 unmet,
/// 130 cancelled (as for an interrupt). Outcomes are ordered by severity, so the exit code of
/// many waits is that of the worst.
fn exit_code(kind: OutcomeKind) -> u8 {
    match kind {
        OutcomeKind::Success | OutcomeKind::Met => 0,
        OutcomeKind::Failed => 1,
        OutcomeKind::TimedOut => 3,
        OutcomeKind::Unmet => 6,
        OutcomeKind::Cancelled => 130,
        // An error, and any kind of outcome this command does not know.
        _ => 4,
    }
}

/// Says on stderr, when the request budget is short, that polls wait for their turn and how
/// often each task can be polled at the rate that goes through; whether it did.
fn say_if_short(client: &IotdaClient, reporter: &Reporter) -> bool {
    let stats = client.budget_stats();
    let Some(interval) = stats.poll_interval else {
        return false;
    };
    let rate = stats.tasks as f64 / interval.as_secs_f64();
    reporter.note(&format!(
        "iotda-wait: polls wait for their turn: about {rate:.1} requests a second go through \
         for {} tasks, so each task is polled about every {:.0}s",
        stats.tasks,
        interval.as_secs_f64().ceil()
    ));
    true
}

/// One line on stderr when the service throttled: how often, and what the command did.
fn summarize_throttling(client: &IotdaClient) {
    let stats = client.budget_stats();
    if stats.throttled == 0 {
        return;
    }
    let slowed = match stats.adaptive_rate {
        Some(rate) => format!("; requests were slowed to {rate:.1}/s"),
        None => String::new(),
    };
    note!(
        "iotda-wait: the service throttled {} of {} requests{slowed}; they waited {:.1}s in all \
         for their turn",
        stats.throttled,
        stats.requests,
        stats.waited.as_secs_f64()
    );
}

/// Prints shell completions or the manual page; the exit code.
fn print_extra(command: &Command) -> u8 {
    let mut args = Args::command();
    // Rendered first: the completion generator cannot report a failed write.
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut args, "iotda-wait", &mut text);
        }
        Command::Man => clap_mangen::Man::new(args)
            .render(&mut text)
            .expect("rendering into memory does not fail"),
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_all(&text).and_then(|()| out.flush());
    match written {
        Ok(()) => 0,
        Err(e) => {
            note!("iotda-wait: cannot write to stdout: {e}");
            UNWRITTEN
        }
    }
}

/// SIGINT or SIGTERM cancels every wait; the waits then end at once with their last state.
async fn cancel_on_signal(token: CancellationToken, interrupted: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
    }
    interrupted.cancel();
    token.cancel();
}

/// Colours, unless `NO_COLOR` is set to something.
fn color_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to stderr what `RUST_LOG` asks for, and otherwise only a shared budget's changes
/// (Redis stopped answering, or answers again); colours only on a terminal.
fn init_logs() {
    let filter = if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::EnvFilter::from_default_env()
    } else {
        tracing_subscriber::EnvFilter::new("iotda_task_watcher::client::shared=info")
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && color_wanted())
        .try_init();
}
