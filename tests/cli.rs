//! The built `iotda-wait` binary, run as a process against the simulator.

use std::process::Stdio;
use std::time::Duration;

use iotda_task_watcher::model::ChargeMode;
use iotda_task_watcher::simulator::{
    Fault, Metadata, Quota, RawAnswer, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID,
    DEFAULT_SK, REGION,
};
use iotda_task_watcher::{InstanceId, TaskId, TaskType};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const INSTANCE: &str = "a1b2c3d4-0000-1111-2222-333344445555";

fn task(n: u32) -> TaskId {
    format!("00000000-0000-0000-0000-{n:012}").parse().unwrap()
}

fn instance() -> InstanceId {
    INSTANCE.parse().unwrap()
}

/// The command with credentials for the simulator and fast polling; no variable of the
/// environment running the tests leaks in.
fn command(sim: &Simulator, args: &[&str]) -> Command {
    command_to(&sim.uri(), INSTANCE, args)
}

fn command_to(endpoint: &str, instance: &str, args: &[&str]) -> Command {
    let mut cmd = bare(&[
        "--endpoint",
        endpoint,
        "--instance-id",
        instance,
        "--min-delay",
        "10ms",
        "--max-delay",
        "40ms",
    ]);
    cmd.args(args);
    cmd
}

/// The command with the simulator's credentials and only `args`.
fn bare(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotda-wait"));
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("HUAWEICLOUD_")
            || name.starts_with("HC_CONTAINER_")
            || key == "RUST_LOG"
            || key == "NO_COLOR"
        {
            cmd.env_remove(key);
        }
    }
    // No credentials but the ones given here: no profile file, and a metadata service that
    // refuses at once.
    cmd.env(
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
        "/nonexistent/iotda-wait-test-credentials",
    )
    .env(
        "HW_SHARED_CONFIG_FILE",
        "/nonexistent/iotda-wait-test-hcloud.json",
    )
    .env_remove("HW_PROFILE")
    .env("IOTDA_METADATA_ENDPOINT", "http://127.0.0.1:1");
    cmd.env("HUAWEICLOUD_SDK_AK", DEFAULT_AK)
        .env("HUAWEICLOUD_SDK_SK", DEFAULT_SK)
        .env("HUAWEICLOUD_SDK_PROJECT_ID", DEFAULT_PROJECT_ID)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

async fn run(mut cmd: Command) -> Run {
    // A bound that only turns a hang into a failure; every run here takes well under a second.
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the command finishes")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[tokio::test]
async fn a_stderr_nobody_reads_does_not_change_the_exit_code() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).fail("quota exceeded"),
    );
    // stderr is a pipe nobody reads: every write to it fails with a broken pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // An id given twice is noted on stderr before the wait starts.
    let mut cmd = command(&sim, &[task(1).as_str(), task(1).as_str()]);
    // `output()` would capture stderr: spawn with it on the pipe instead.
    cmd.stdout(Stdio::piped()).stderr(writer);
    let child = cmd.spawn().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap();
    let stdout = String::from_utf8(done.stdout).unwrap();
    assert_eq!(done.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
}

#[tokio::test]
async fn success_exits_0_with_one_line_per_task() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .pending(1)
            .running(2)
            .succeed(),
    );
    let out = run(command(&sim, &[task(1).as_str()])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} SUCCESS\n", task(1)));
    assert!(out.stderr.contains("PENDING -> RUNNING"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{}: SUCCESS", task(1))),
        "{}",
        out.stderr
    );
    assert_eq!(sim.polls(&instance(), &task(1)), 4);
}

#[tokio::test]
async fn failed_exits_1_and_says_why() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Freeze)
            .running(1)
            .fail("quota exceeded"),
    );
    let out = run(command(&sim, &[task(1).as_str()])).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, format!("{} FAILED\n", task(1)));
    assert!(
        out.stderr.contains("FAILED: quota exceeded"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn bad_input_exits_2_before_any_request() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let good = task(1).to_string();

    let out = run(command(&sim, &["NOT-A-TASK"])).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("invalid task id \"NOT-A-TASK\""),
        "{}",
        out.stderr
    );

    let mut cmd = command(&sim, &[&good]);
    cmd.env_remove("HUAWEICLOUD_SDK_SK");
    let out = run(cmd).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("HUAWEICLOUD_SDK_SK is not set"),
        "{}",
        out.stderr
    );

    let out = run(command_to("http://203.0.113.9:8080", INSTANCE, &[&good])).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("https is required"), "{}", out.stderr);

    let mut cmd = command(&sim, &[&good]);
    cmd.env_remove("HUAWEICLOUD_SDK_PROJECT_ID");
    let out = run(cmd).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("project id"), "{}", out.stderr);

    let out = run(command(&sim, &["--timeout", "soon", &good])).await;
    assert_eq!(out.code, 2, "clap reports bad usage with 2");

    let out = run(command_to(&sim.uri(), "../x", &[&good])).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("invalid instance id \"../x\""),
        "{}",
        out.stderr
    );

    assert_eq!(sim.requests(), 0, "nothing was sent");
}

#[tokio::test]
async fn settings_that_cannot_be_right_are_refused_with_the_allowed_range() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let uri = sim.uri();
    let id = task(1).to_string();
    for (settings, says) in [
        (
            &["--min-delay", "0s", "--max-delay", "0s"][..],
            "--min-delay must be at least 10ms (got 0ns)",
        ),
        (
            &["--min-delay", "10s", "--max-delay", "1s"],
            "--max-delay must be at least --min-delay, 10s (got 1s)",
        ),
        (
            &["--request-timeout", "0s"],
            "--request-timeout must be at least 10ms (got 0ns)",
        ),
        (
            &["--max-in-flight", "0"],
            "--max-in-flight must be between 1 and 1024 (got 0)",
        ),
        (
            &["--max-rps", "0"],
            "--max-rps must be between 0.01 and 10000 requests per second (got 0)",
        ),
        (
            &["--max-delay", "1m", "--max-window-delay", "30s"],
            "--max-window-delay must be at least --max-delay, 60s (got 30s)",
        ),
    ] {
        let args = [
            &["--endpoint", &uri, "--instance-id", INSTANCE][..],
            settings,
            &[&id],
        ]
        .concat();
        let out = run(bare(&args)).await;
        assert_eq!(out.code, 2, "{settings:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{settings:?}: {}", out.stderr);
    }
    assert_eq!(sim.requests(), 0, "nothing was sent");
}

#[tokio::test]
async fn an_endpoint_that_never_answers_exits_4_and_names_the_likely_cause() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    // https to the simulator's plain-HTTP port.
    let https = sim.uri().replace("http://", "https://");
    let out = run(command_to(&https, INSTANCE, &[task(1).as_str()])).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} ERROR\n", task(1)));
    assert!(
        out.stderr.contains(&format!("cannot reach {https}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("does not speak TLS"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("retrying").count(),
        3,
        "tolerated three times, like a 404 before the first answer: {}",
        out.stderr
    );
    assert_eq!(sim.requests(), 0);

    // Nothing listening on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = run(command_to(
        &format!("http://127.0.0.1:{port}"),
        INSTANCE,
        &[task(1).as_str()],
    ))
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing accepts connections there"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_written_is_refused_before_any_request() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    // A directory below a file: no permission bits make this writable, even for root.
    let file = std::env::temp_dir().join(format!("iotda-wait-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"").unwrap();
    let dir = file.join("state");
    let dir = dir.to_str().unwrap();
    let out = run(command(&sim, &["--state-dir", dir, task(1).as_str()])).await;
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("--state-dir {dir}: cannot keep state there")),
        "{}",
        out.stderr
    );
    assert_eq!(sim.requests(), 0);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_result_that_cannot_be_written_exits_5() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let mut cmd = command(&sim, &[task(1).as_str()]);
    // `output()` would capture stdout: spawn with it on the full device instead.
    cmd.stdout(std::fs::File::create("/dev/full").unwrap())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap();
    let out = Run {
        code: done.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8(done.stderr).unwrap(),
    };
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot write the results to stdout: No space left on device"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("SUCCESS"),
        "the wait itself ran: {}",
        out.stderr
    );
}

/// Runs `cmd` with its stderr on a pseudo-terminal `columns` wide; returns the exit code and
/// every byte the terminal received.
#[cfg(target_os = "linux")]
async fn on_a_terminal(mut cmd: Command, columns: u16) -> (i32, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Read;

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let size = rustix::termios::Winsize {
        ws_row: 24,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&terminal, size).unwrap();
    // Drained as the child writes, so that it never blocks on a full terminal; the read
    // ends when the last copy of the terminal's other end is closed.
    let mut screen = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = screen.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    cmd.stderr(terminal).stdout(Stdio::piped());
    let child = cmd.spawn().unwrap();
    drop(cmd);
    let done = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap();
    let bytes = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    (
        done.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn on_a_narrow_terminal_each_final_line_is_printed_whole() {
    let sim = Simulator::start().await;
    let detail = "the new flavor needs 4 more vCPUs than the quota of project \
                  0123456789abcdef allows in this region; raise the quota or pick a smaller one";
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(2).fail(detail),
    );
    sim.add_task(
        &instance(),
        &task(2),
        TaskScript::new(TaskType::Modify).running(1).succeed(),
    );
    let cmd = command(&sim, &[task(1).as_str(), task(2).as_str()]);
    let (code, screen) = on_a_terminal(cmd, 80).await;
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains(&format!("{}: task {} FAILED: {detail}", task(1), task(1))),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("{}: SUCCESS", task(2))),
        "{screen}"
    );
}

#[tokio::test]
async fn the_done_line_carries_the_target_config_and_the_one_end_time() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .target_config("iotda.standard.s2", Some(4), ChargeMode::PrePaid)
            .running(1)
            .succeed(),
    );
    let out = run(command(&sim, &["--output", "json", task(1).as_str()])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json();
    let done = &lines.last().unwrap()["task"];
    assert_eq!(done["target_config"]["flavor"]["type"], "iotda.standard.s2");
    assert_eq!(done["target_config"]["flavor"]["size"], 4);
    assert_eq!(done["target_config"]["charge_mode"], "prePaid");
    // A finished task reports one end time, however often it is asked.
    let end = done["end_time"].as_str().unwrap().to_owned();
    let again = sim
        .client()
        .instance_task(&instance(), &task(1))
        .await
        .unwrap();
    assert_eq!(again.end_time.map(|t| t.to_string()), Some(end));
}

#[tokio::test]
async fn throttling_shows_in_the_events_and_a_summary_line() {
    let sim = Simulator::start().await;
    for n in 1..=3 {
        sim.add_task(
            &instance(),
            &task(n),
            TaskScript::new(TaskType::Modify).running(4).succeed(),
        );
    }
    // Room for the first polls, then 40 a second: less than three tasks polled every
    // 10-40 ms ask for.
    sim.set_quota(Quota::per_second(40.0, 4));
    let ids: Vec<String> = (1..=3).map(|n| task(n).to_string()).collect();
    let mut args = vec!["--output", "json"];
    args.extend(ids.iter().map(String::as_str));
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(sim.throttled() > 0, "the quota was reached");
    let throttled = out
        .json()
        .into_iter()
        .filter(|l| l["event"] == "retrying" && l["reason"] == "throttled")
        .count();
    assert!(throttled > 0, "{}", out.stdout);
    let summary = format!("the service throttled {} of", sim.throttled());
    assert!(out.stderr.contains(&summary), "{}", out.stderr);
    assert!(
        out.stderr.contains("requests were slowed to"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn max_rps_caps_the_requests_of_every_task_together() {
    let sim = Simulator::start().await;
    for n in 1..=3 {
        sim.add_task(
            &instance(),
            &task(n),
            TaskScript::new(TaskType::Modify).running(4).succeed(),
        );
    }
    let ids: Vec<String> = (1..=3).map(|n| task(n).to_string()).collect();
    let mut args = vec!["--max-rps", "10"];
    args.extend(ids.iter().map(String::as_str));
    let started = std::time::Instant::now();
    let out = run(command(&sim, &args)).await;
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    // 15 requests at 10 a second in bursts of 10: the last five wait half a second at
    // least, where the delays alone (10-40 ms) would take a fraction of that.
    assert_eq!(sim.requests(), 15);
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(!out.stderr.contains("throttled"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("wait for their turn"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_short_budget_is_said_once_with_how_often_each_task_is_polled() {
    let sim = Simulator::start().await;
    for n in 1..=25 {
        sim.add_task(
            &instance(),
            &task(n),
            TaskScript::new(TaskType::Modify).succeed(),
        );
    }
    // 25 first polls at 10 a second in bursts of 10, all of them in flight at once: the last
    // ones wait over a second for their turn.
    let ids: Vec<String> = (1..=25).map(|n| task(n).to_string()).collect();
    let mut args = vec!["--max-rps", "10", "--max-in-flight", "25"];
    args.extend(ids.iter().map(String::as_str));
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("polls wait for their turn"))
        .collect();
    assert_eq!(said.len(), 1, "{}", out.stderr);
    assert!(
        said[0].contains("requests a second go through for")
            && said[0].contains("so each task is polled about every"),
        "{}",
        said[0]
    );
}

#[tokio::test]
async fn a_task_id_given_twice_is_waited_for_once() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(1).succeed(),
    );
    let out = run(command(&sim, &[task(1).as_str(), task(1).as_str()])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} SUCCESS\n", task(1)));
    assert!(
        out.stderr.contains(&format!(
            "{} is given more than once; it is waited for once",
            task(1)
        )),
        "{}",
        out.stderr
    );
    assert_eq!(sim.polls(&instance(), &task(1)), 2);
}

#[tokio::test]
async fn regions_and_endpoints_are_named_helpfully_and_without_secrets() {
    let id = task(1).to_string();
    let out = run(bare(&["--region", "", "--instance-id", INSTANCE, &id])).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the region is empty"), "{}", out.stderr);
    assert!(!out.stderr.contains("IOTDM_"), "{}", out.stderr);

    let out = run(bare(&[
        "--region",
        "CN-NORTH-4",
        "--instance-id",
        INSTANCE,
        &id,
    ]))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("lower-case; use cn-north-4"),
        "{}",
        out.stderr
    );

    let out = run(bare(&[
        "--endpoint",
        "https://iotda.example/?access_token=s3cr3t",
        "--instance-id",
        INSTANCE,
        &id,
    ]))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("https://iotda.example/?***"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
}

#[tokio::test]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let mut cmd = command(&sim, &[task(1).as_str()]);
    cmd.env("RUST_LOG", "iotda_task_watcher=debug");
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("task succeeded"), "{}", out.stderr);
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
}

#[tokio::test]
async fn short_help_names_the_command_credentials_and_exit_codes() {
    for flag in ["-h", "--help"] {
        let out = run(bare(&[flag])).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let help = out.stdout;
        assert!(
            help.starts_with("Waits for Huawei Cloud IoTDA instance tasks to finish"),
            "{flag}: {help}"
        );
        assert!(
            !help.contains("a signed client"),
            "{flag}: the library's description"
        );
        for needed in [
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "Exit codes",
            "130",
        ] {
            assert!(help.contains(needed), "{flag}: {needed}: {help}");
        }
    }
}

#[tokio::test]
async fn completions_and_the_manual_page_come_from_the_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(bare(&["completions", shell])).await;
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(
            out.stdout.contains("instance-id"),
            "{shell}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("max-window-delay"), "{shell}");
    }
    let out = run(bare(&["completions", "tcsh"])).await;
    assert_eq!(out.code, 2, "an unknown shell is bad usage");
    let out = run(bare(&["man"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(".TH iotda-wait 1"), "{}", out.stdout);
    assert!(out.stdout.contains("instance\\-id"), "{}", out.stdout);
}

#[tokio::test]
async fn a_timeout_exits_3() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    let out = run(command(&sim, &["--timeout", "300ms", task(1).as_str()])).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} TIMED_OUT\n", task(1)));
    assert!(out.stderr.contains("timed out after"), "{}", out.stderr);
}

#[tokio::test]
async fn a_bad_signature_exits_4() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let mut cmd = command(&sim, &[task(1).as_str()]);
    cmd.env("HUAWEICLOUD_SDK_SK", "not-the-secret");
    let out = run(cmd).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("APIGW.0301"), "{}", out.stderr);
    assert!(!out.stderr.contains("not-the-secret") && !out.stdout.contains("not-the-secret"));
    assert_eq!(sim.requests(), 1, "a permanent error is not retried");
}

#[tokio::test]
async fn a_missing_task_exits_4_after_the_tolerated_polls() {
    let sim = Simulator::start().await;
    let out = run(command(&sim, &[task(9).as_str()])).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} ERROR\n", task(9)));
    assert_eq!(
        sim.requests(),
        4,
        "three 404s tolerated, the fourth is final"
    );
}

#[tokio::test]
async fn several_tasks_combine_their_exit_codes() {
    let cases: [(&[u32], i32); 5] = [
        (&[1, 2, 3, 4], 1),
        (&[1, 3, 4], 4),
        (&[4, 1], 3),
        (&[1, 1], 0),
        (&[3, 4], 4),
    ];
    for (tasks, code) in cases {
        // 1 succeeds, 2 fails, 3 is refused (permanent error), 4 runs past the timeout.
        let sim = Simulator::start().await;
        let script = || TaskScript::new(TaskType::Modify);
        sim.add_task(&instance(), &task(1), script().succeed());
        sim.add_task(&instance(), &task(2), script().fail("no"));
        sim.add_task(&instance(), &task(3), script().fault(Fault::BadSignature));
        sim.add_task(&instance(), &task(4), script().running(1_000_000));
        let ids: Vec<String> = tasks.iter().map(|n| task(*n).to_string()).collect();
        let mut args = vec!["--timeout", "400ms"];
        args.extend(ids.iter().map(String::as_str));
        let out = run(command(&sim, &args)).await;
        assert_eq!(out.code, code, "{tasks:?}: {}", out.stderr);
        let mut unique = tasks.to_vec();
        unique.dedup();
        assert_eq!(out.stdout.lines().count(), unique.len(), "{}", out.stdout);
    }
}

#[tokio::test]
async fn json_lines_report_every_change_and_the_outcome() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .pending(1)
            .running(3)
            .fault(Fault::Throttled {
                retry_after: Duration::ZERO,
            })
            .succeed(),
    );
    sim.add_task(
        &instance(),
        &task(2),
        TaskScript::new(TaskType::Delete).running(1).fail("locked"),
    );
    let out = run(command(
        &sim,
        &["--output", "json", task(1).as_str(), task(2).as_str()],
    ))
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = out.json();
    for line in &lines {
        assert!(
            line["event"].is_string() && line["task_id"].is_string(),
            "{line}"
        );
    }
    let of = |id: &TaskId| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["task_id"] == id.as_str())
            .collect()
    };

    let one = of(&task(1));
    let names: Vec<&str> = one.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "observed", "status", "progress", "progress", "progress", "retrying", "status",
            "progress", "done"
        ]
    );
    assert_eq!(one[0]["status"], "PENDING");
    assert_eq!(one[1]["status"], "RUNNING");
    assert_eq!(one[1]["from"], "PENDING");
    assert_eq!(one[2]["progress"], 25);
    assert!(
        one[5]["error"].as_str().unwrap().contains("APIGW.0308"),
        "{}",
        one[5]
    );
    assert_eq!(one[5]["attempt"], 1);
    assert_eq!(
        one[6]["status"], "SUCCESS",
        "the last change gets its own line"
    );
    let done = one[8];
    assert_eq!(done["outcome"], "success");
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["task"]["task_id"], task(1).as_str());
    assert_eq!(done["task"]["type"], "MODIFY");
    assert!(done.get("error").is_none());

    let two = of(&task(2));
    let done = two.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["outcome"], "failed");
    assert_eq!(done["task"]["status"], "FAILED");
    assert_eq!(done["task"]["status_detail"], "locked");
    assert!(done["error"].as_str().unwrap().contains("locked"));
}

/// SIGINT and SIGTERM cancel the wait: the last state is printed and the exit code is 130.
#[cfg(unix)]
#[tokio::test]
async fn signals_cancel_the_wait_and_exit_130() {
    for signal in ["-INT", "-TERM"] {
        let sim = Simulator::start().await;
        sim.add_task(
            &instance(),
            &task(1),
            TaskScript::new(TaskType::Modify).running(1_000_000),
        );
        let mut cmd = command(&sim, &["--output", "json", task(1).as_str()]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = stdout.next_line().await.unwrap().unwrap();
        assert!(first.contains("\"observed\""), "{first}");
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        // Without the signal the wait would go on for 60 minutes; this bound only catches a hang.
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the command exits after the signal")
            .unwrap();
        assert_eq!(status.code(), Some(130), "{signal}");
        let mut done = None;
        while let Some(line) = stdout.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "done" {
                done = Some(v);
            }
        }
        let done = done.expect("a done line");
        assert_eq!(done["outcome"], "cancelled");
        assert_eq!(done["status"], "RUNNING", "the last state is reported");
        assert_eq!(done["task"]["task_id"], task(1).as_str());
        let polls = sim.polls(&instance(), &task(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            sim.polls(&instance(), &task(1)),
            polls,
            "nothing is sent after the exit"
        );
    }
}

#[tokio::test]
async fn a_deadline_in_the_past_polls_once_and_says_it_had_passed() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.add_task(
        &instance(),
        &task(2),
        TaskScript::new(TaskType::Modify).running(5).succeed(),
    );
    let past = ["--deadline", "2020-01-01T00:00:00Z"];
    // Already done: one poll sees it.
    let out = run(command(&sim, &[&past[..], &[task(1).as_str()]].concat())).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} SUCCESS\n", task(1)));
    assert_eq!(sim.requests(), 1);
    // Still running: one poll, then a timeout that says the deadline had passed.
    let out = run(command(&sim, &[&past[..], &[task(2).as_str()]].concat())).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the deadline had already passed when the wait started (1 poll)"),
        "{}",
        out.stderr
    );
    assert_eq!(sim.polls(&instance(), &task(2)), 1);
    let out = run(command(&sim, &["--deadline", "soon", task(1).as_str()])).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// A state directory of this test process's own, and its path as an argument.
fn state_dir(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("iotda-wait-{name}-{}", std::process::id()));
    let arg = dir.to_str().unwrap().to_owned();
    (dir, arg)
}

/// Starts a wait, reads its first JSON line, and stops it with SIGTERM.
#[cfg(unix)]
async fn start_and_stop(cmd: &mut Command) -> (i32, Value) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    while stdout.next_line().await.unwrap().is_some() {}
    (status.code().unwrap_or(-1), first)
}

#[cfg(unix)]
#[tokio::test]
async fn a_second_process_resumes_the_wait_from_the_state_dir() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .running_for(Duration::from_millis(600))
            .succeed(),
    );
    let (dir, dir_arg) = state_dir("state");
    let one = task(1).to_string();
    let args = [
        "--output",
        "json",
        "--state-dir",
        &dir_arg,
        "--timeout",
        "10m",
        one.as_str(),
    ];

    let (code, first) = start_and_stop(&mut command(&sim, &args)).await;
    assert_eq!(code, 130);
    assert_eq!(first["event"], "observed");
    let file = dir.join(format!("{}.json", task(1)));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the state was kept")).unwrap();
    assert_eq!(saved["task_id"], task(1).as_str());
    assert_eq!(saved["last"]["status"], "RUNNING");
    let deadline = saved["deadline"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(700)).await;
    // Run again with no deadline given: the saved one holds.
    let again = ["--output", "json", "--state-dir", &dir_arg, one.as_str()];
    let out = run(command(&sim, &again)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json();
    let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        names.first(),
        Some(&"status"),
        "what was seen is not reported again: {names:?}"
    );
    assert_eq!(lines[0]["from"], "RUNNING");
    assert_eq!(lines.last().unwrap()["outcome"], "success");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the end is kept")).unwrap();
    assert_eq!(kept["deadline"].as_str(), Some(deadline.as_str()));
    assert_eq!(kept["last"]["status"], "SUCCESS");

    // A run after the end reports it again, after one poll.
    let polls = sim.polls(&instance(), &task(1));
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json().last().unwrap()["outcome"], "success");
    assert_eq!(sim.polls(&instance(), &task(1)), polls + 1);

    // --fresh starts over: a new deadline.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut fresh = args.to_vec();
    fresh.insert(0, "--fresh");
    let out = run(command(&sim, &fresh)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let renewed: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_ne!(renewed["deadline"].as_str(), Some(deadline.as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[tokio::test]
async fn a_resumed_wait_keeps_the_first_deadline_unless_given_another() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    let (dir, dir_arg) = state_dir("deadline");
    let one = task(1).to_string();
    let first = [
        "--output",
        "json",
        "--state-dir",
        &dir_arg,
        "--timeout",
        "1500ms",
        one.as_str(),
    ];
    let (code, _) = start_and_stop(&mut command(&sim, &first)).await;
    assert_eq!(code, 130);
    let file = dir.join(format!("{}.json", task(1)));
    let deadline = |file: &std::path::Path| -> jiff::Timestamp {
        let saved: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        saved["deadline"].as_str().unwrap().parse().unwrap()
    };
    let first_deadline = deadline(&file);
    // Run again with no deadline given: the wait keeps its first one.
    let again = ["--state-dir", &dir_arg, one.as_str()];
    let out = run(command(&sim, &again)).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("timed out after 1.5s"),
        "{}",
        out.stderr
    );
    assert_eq!(deadline(&file), first_deadline);
    // Given a longer timeout, the wait runs to it, counted from its first start.
    let longer = ["--state-dir", &dir_arg, "--timeout", "3s", one.as_str()];
    let out = run(command(&sim, &longer)).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("timed out after 3.0s"),
        "{}",
        out.stderr
    );
    let later = deadline(&file);
    let moved = later.duration_since(first_deadline);
    assert_eq!(moved.as_millis(), 1500, "{later} after {first_deadline}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_end_of_a_wait_is_written_however_soon_after_the_write_before() {
    let sim = Simulator::start().await;
    // RUNNING throughout, at one progress: nothing a poll sees changes, so between the first
    // write and the end only the end asks for one.
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    let (dir, dir_arg) = state_dir("end");
    let one = task(1).to_string();
    let args = ["--state-dir", &dir_arg, "--timeout", "400ms", one.as_str()];
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{one}.json"))).unwrap()).unwrap();
    let polls = sim.polls(&instance(), &task(1));
    assert!(polls >= 3, "{polls} polls");
    assert_eq!(saved["polls"], polls, "{saved}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_state_file_that_cannot_be_used_is_refused() {
    let sim = Simulator::start().await;
    let (dir, _) = state_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.json", task(1))), "not json").unwrap();
    let out = run(command(
        &sim,
        &["--state-dir", dir.to_str().unwrap(), task(1).as_str()],
    ))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is not a saved wait"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--fresh"),
        "says how to start over: {}",
        out.stderr
    );
    assert_eq!(sim.requests(), 0);
    // --fresh starts over on purpose.
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let out = run(command(
        &sim,
        &[
            "--state-dir",
            dir.to_str().unwrap(),
            "--fresh",
            task(1).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `HH:mm` UTC, `minutes` from now.
fn utc_hh_mm(minutes: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes))
        .strftime("%H:%M")
        .to_string()
}

#[tokio::test]
async fn an_immediate_resize_behind_a_window_that_opens_after_the_deadline_is_waited_for() {
    let sim = Simulator::start().await;
    // The window opens in three hours, long after the 20-minute deadline; the resize was not
    // delayed, so it runs at once anyway.
    let script = TaskScript::new(TaskType::Modify)
        .operate_window(&utc_hh_mm(180), &utc_hh_mm(240))
        .pending(2)
        .running(3)
        .succeed();
    sim.add_task(&instance(), &task(1), script);
    let out = run(command(&sim, &["--timeout", "20m", task(1).as_str()])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} SUCCESS\n", task(1)));
    assert!(out.stderr.contains("maintenance window"), "{}", out.stderr);
    assert_eq!(sim.requests(), 6, "2 PENDING, 3 RUNNING, then SUCCESS");
}

#[tokio::test]
async fn failing_fast_on_a_window_after_the_deadline_is_opt_in() {
    let sim = Simulator::start().await;
    let script = TaskScript::new(TaskType::Modify).operate_window(&utc_hh_mm(180), &utc_hh_mm(240));
    sim.add_task(&instance(), &task(1), script);
    let out = run(command(
        &sim,
        &[
            "--timeout",
            "60m",
            "--fail-fast-on-window",
            task(1).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} TIMED_OUT\n", task(1)));
    assert!(out.stderr.contains("maintenance window"), "{}", out.stderr);
    assert_eq!(
        sim.requests(),
        1,
        "one poll, then no polling to a certain timeout"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn waiting_for_a_window_is_reported() {
    let sim = Simulator::start().await;
    let opens = utc_hh_mm(3);
    let script = TaskScript::new(TaskType::Modify).operate_window(&opens, &utc_hh_mm(63));
    sim.add_task(&instance(), &task(1), script);
    let mut cmd = command(
        &sim,
        &["--output", "json", "--timeout", "20m", task(1).as_str()],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    let second: Value = serde_json::from_str(&stdout.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "observed");
    assert_eq!(second["event"], "window", "{second}");
    assert_eq!(second["status"], "PENDING");
    assert!(
        second["opens_at"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{opens}:00Z")),
        "{second}"
    );
    // A hint, not a verdict: the watcher goes on polling.
    let polled_on = async {
        while sim.requests() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), polled_on)
        .await
        .expect("polling goes on behind a closed window");
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The `done` line of a run with `--output json`, and every event name.
fn done_and_events(out: &Run) -> (Value, Vec<String>) {
    let lines = out.json();
    let names = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    (lines.last().cloned().unwrap(), names)
}

#[tokio::test]
async fn until_started_exits_0_once_the_task_runs_and_the_done_line_names_it() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .pending(2)
            .running(1000)
            .succeed(),
    );
    let out = run(command(
        &sim,
        &["--until", "started", "--output", "json", task(1).as_str()],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (done, _) = done_and_events(&out);
    assert_eq!(done["event"], "done");
    assert_eq!(done["outcome"], "met");
    assert_eq!(done["condition"], "started");
    assert_eq!(done["status"], "RUNNING");
    assert!(
        out.stderr.contains("started met: RUNNING"),
        "{}",
        out.stderr
    );
    assert_eq!(
        sim.polls(&instance(), &task(1)),
        3,
        "PENDING twice, then RUNNING"
    );
    // The text form says MET, not SUCCESS: the task has not ended.
    let out = run(command(&sim, &["--until", "started", task(1).as_str()])).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, format!("{} MET\n", task(1)).as_str())
    );
}

#[tokio::test]
async fn until_a_status_and_until_a_progress() {
    let sim = Simulator::start().await;
    let script = || {
        TaskScript::new(TaskType::Modify)
            .pending(1)
            .running(9)
            .succeed()
    };
    sim.add_task(&instance(), &task(1), script());
    sim.add_task(&instance(), &task(2), script());
    let out = run(command(
        &sim,
        &[
            "--until",
            "status=running",
            "--output",
            "json",
            task(1).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (done, _) = done_and_events(&out);
    assert_eq!(
        (&done["outcome"], &done["condition"], &done["status"]),
        (&"met".into(), &"status=RUNNING".into(), &"RUNNING".into())
    );
    // Progress over 9 polls: 10, 20, ... 90 %; 50 % is the fifth.
    let out = run(command(
        &sim,
        &[
            "--until",
            "progress>=50",
            "--output",
            "json",
            task(2).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (done, _) = done_and_events(&out);
    assert_eq!(done["condition"], "progress>=50");
    assert_eq!(done["progress"], 50);
    assert_eq!(sim.polls(&instance(), &task(2)), 6);
}

#[tokio::test]
async fn until_done_is_the_default_and_an_end_without_the_condition_exits_6() {
    let sim = Simulator::start().await;
    let script = || TaskScript::new(TaskType::Modify).running(1).succeed();
    sim.add_task(&instance(), &task(1), script());
    sim.add_task(&instance(), &task(2), script());
    let out = run(command(
        &sim,
        &["--until", "done", "--output", "json", task(1).as_str()],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (done, _) = done_and_events(&out);
    assert_eq!(
        (&done["outcome"], &done["condition"]),
        (&"success".into(), &"done".into())
    );

    // Waiting for PENDING, the task runs and ends: it can no longer be PENDING.
    let out = run(command(
        &sim,
        &["--until", "status=PENDING", task(2).as_str()],
    ))
    .await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{} UNMET\n", task(2)));
    assert!(
        out.stderr
            .contains("ended SUCCESS without meeting the condition status=PENDING"),
        "{}",
        out.stderr
    );
    // A FAILED task that never met the condition exits 1, as any failure does.
    sim.add_task(
        &instance(),
        &task(3),
        TaskScript::new(TaskType::Modify).fail("no"),
    );
    let out = run(command(
        &sim,
        &["--until", "progress>=50", task(3).as_str()],
    ))
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
}

#[tokio::test]
async fn an_until_that_is_not_a_condition_exits_2_before_any_request() {
    let sim = Simulator::start().await;
    for bad in ["finished", "progress>=101", "status=", "progress>50"] {
        let out = run(command(&sim, &["--until", bad, task(1).as_str()])).await;
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("is not a condition"), "{}", out.stderr);
    }
    let out = run(command(&sim, &["--retry-failed", "101", task(1).as_str()])).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("between 0 and 100"), "{}", out.stderr);
    assert_eq!(sim.requests(), 0);
}

#[tokio::test]
async fn retry_failed_retries_and_reports_each_retry() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .running(1)
            .fail("flavor sold out")
            .running(1)
            .fail("flavor sold out again")
            .running(1)
            .succeed(),
    );
    let out = run(command(
        &sim,
        &["--retry-failed", "2", "--output", "json", task(1).as_str()],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json();
    let retried: Vec<(u64, &str, &str)> = lines
        .iter()
        .filter(|l| l["event"] == "retried")
        .map(|l| {
            (
                l["attempt"].as_u64().unwrap(),
                l["detail"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        retried,
        [
            (1, "flavor sold out", "PENDING"),
            (2, "flavor sold out again", "PENDING")
        ]
    );
    let (done, _) = done_and_events(&out);
    assert_eq!(done["outcome"], "success");
    assert_eq!(sim.retries(&instance(), &task(1)), 2);
    assert!(
        out.stderr
            .contains("FAILED (flavor sold out); retried (1 of 2), now PENDING"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn retries_run_out_and_a_refused_retry_exits_4() {
    let sim = Simulator::start().await;
    let twice = || {
        TaskScript::new(TaskType::Modify)
            .fail("first")
            .fail("second")
    };
    sim.add_task(&instance(), &task(1), twice());
    // One retry: the second failure ends the wait, exit 1.
    let out = run(command(&sim, &["--retry-failed", "1", task(1).as_str()])).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("FAILED: second"), "{}", out.stderr);
    assert_eq!(sim.retries(&instance(), &task(1)), 1);
    // Without --retry-failed, nothing is retried.
    sim.add_task(&instance(), &task(2), twice());
    let out = run(command(&sim, &[task(2).as_str()])).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(sim.retries(&instance(), &task(2)), 0);
    // A retry the service refuses ends the wait with its error. (The simulator refuses to
    // retry a task whose FAILED it gave as a raw answer: it is not FAILED in its script.)
    sim.add_task(
        &instance(),
        &task(3),
        TaskScript::new(TaskType::Modify).raw(RawAnswer::json(
            r#"{"status":"FAILED","status_detail":"locked","progress":100}"#,
        )),
    );
    let out = run(command(
        &sim,
        &["--retry-failed", "1", "--output", "json", task(3).as_str()],
    ))
    .await;
    let (done, _) = done_and_events(&out);
    assert_eq!(done["outcome"], "error");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("SIMULATOR.TASK_NOT_RETRYABLE"),
        "{done}"
    );
    assert_eq!(done["status"], "FAILED", "the failure seen is kept: {done}");
    assert_eq!(out.code, 4, "{}", out.stderr);
}

/// A command of `sim` with no credentials and no project id in its environment.
fn without_credentials(sim: &Simulator, args: &[&str]) -> Command {
    let mut cmd = command(sim, args);
    cmd.env_remove("HUAWEICLOUD_SDK_AK")
        .env_remove("HUAWEICLOUD_SDK_SK")
        .env_remove("HUAWEICLOUD_SDK_PROJECT_ID");
    cmd
}

/// A fresh file in the system's temporary folder holding `text`.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "iotda-wait-{name}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn in_a_cce_pod_the_pod_identity_variables_are_enough() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let token = temp_file("pod-token", "a-pod-token");
    let mut cmd = without_credentials(&sim, &["-v", task(1).as_str()]);
    cmd.env("HUAWEICLOUD_SDK_PROJECT_ID", DEFAULT_PROJECT_ID)
        .env("HC_CONTAINER_CREDENTIALS_FULL_URI", sim.pod_identity_uri())
        .env("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token);
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials from CCE Pod Identity"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("simulator-temporary-secret"),
        "{}",
        out.stderr
    );
    assert_eq!(sim.credential_fetches(), 1);
}

#[tokio::test]
async fn on_ecs_the_metadata_service_and_a_region_are_enough() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let mut cmd = without_credentials(&sim, &["-v", "--region", REGION, task(1).as_str()]);
    cmd.env("IOTDA_METADATA_ENDPOINT", sim.uri())
        .env("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.uri());
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials from ECS metadata")
            && out
                .stderr
                .contains(&format!("project {DEFAULT_PROJECT_ID} (found)")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_credentials_service_down_for_a_moment_at_the_start_is_waited_for() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    // The metadata service answers 503 to the first two asks for keys.
    sim.fail_credential_fetches(2);
    let mut cmd = without_credentials(&sim, &["--region", REGION, task(1).as_str()]);
    cmd.env("IOTDA_METADATA_ENDPOINT", sim.uri())
        .env("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.uri());
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let retries: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| line.contains("trying again in"))
        .collect();
    assert_eq!(retries.len(), 2, "{}", out.stderr);
    assert!(retries[0].contains("HTTP 503"), "{}", out.stderr);
    assert_eq!(sim.credential_attempts().len(), 3);
}

#[tokio::test]
async fn a_credentials_service_down_until_the_deadline_times_out_with_its_error() {
    let sim = Simulator::start().await;
    sim.fail_credential_fetches(u32::MAX);
    let mut cmd = without_credentials(
        &sim,
        &["--region", REGION, "--timeout", "1s", task(1).as_str()],
    );
    cmd.env("IOTDA_METADATA_ENDPOINT", sim.uri())
        .env("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.uri());
    let out = run(cmd).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("timed out before the first request: no credentials were given, and none")
            && out.stderr.contains("HTTP 503")
            && out.stderr.contains("the same again; trying again in"),
        "{}",
        out.stderr
    );
    assert_eq!(sim.polls(&instance(), &task(1)), 0);
}

#[tokio::test]
async fn credentials_a_service_refuses_are_not_tried_again() {
    let sim = Simulator::start().await;
    sim.set_metadata(Metadata::Unauthorized);
    let mut cmd = without_credentials(&sim, &["--region", REGION, task(1).as_str()]);
    cmd.env("IOTDA_METADATA_ENDPOINT", sim.uri());
    let out = run(cmd).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains("trying again"), "{}", out.stderr);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
}

#[tokio::test]
async fn a_profile_file_alone_is_enough() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let file = temp_file(
        "profile",
        &format!(
            "[basic]\nak = {DEFAULT_AK}\nsk = {DEFAULT_SK}\nproject_id = {DEFAULT_PROJECT_ID}\n"
        ),
    );
    let mut cmd = without_credentials(&sim, &["-v", task(1).as_str()]);
    cmd.env("HUAWEICLOUD_SDK_CREDENTIALS_FILE", &file);
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials from profile file"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn with_no_credentials_anywhere_it_exits_2_naming_what_it_tried() {
    let sim = Simulator::start().await;
    let started = std::time::Instant::now();
    let mut cmd = without_credentials(&sim, &[task(1).as_str()]);
    cmd.env("HUAWEICLOUD_SDK_PROJECT_ID", DEFAULT_PROJECT_ID);
    let out = run(cmd).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for provider in [
        "environment",
        "profile file",
        "OIDC to STS",
        "CCE Pod Identity",
        "ECS metadata",
    ] {
        assert!(out.stderr.contains(provider), "{provider}: {}", out.stderr);
    }
    assert_eq!(sim.requests(), 0, "nothing was sent");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn processes_given_one_shared_budget_keep_to_one_rate() {
    let sim = Simulator::start().await;
    // A URL that is not Redis's is refused before any request, without its password.
    let out = run(command(
        &sim,
        &[
            "--shared-budget",
            "http://:pa55word@host/",
            task(1).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--shared-budget"), "{}", out.stderr);
    assert!(!out.stderr.contains("pa55word"), "{}", out.stderr);
    assert_eq!(sim.requests(), 0);

    let Some(redis) = iotda_task_watcher::simulator::RedisServer::start() else {
        return;
    };
    // Three processes, each polling its own task every 10 to 40 ms for 1.5 s, share 20
    // requests a second in bursts of 20.
    for n in 1..=3 {
        sim.add_task(
            &instance(),
            &task(n),
            TaskScript::new(TaskType::Modify).running(1_000_000),
        );
    }
    let started = std::time::Instant::now();
    let runs = (1..=3).map(|n| {
        let mut cmd = command(
            &sim,
            &["--timeout", "1500ms", "--max-rps", "20", task(n).as_str()],
        );
        cmd.env("IOTDA_SHARED_BUDGET", redis.url());
        run(cmd)
    });
    let outs = futures::future::join_all(runs).await;
    let elapsed = started.elapsed().as_secs_f64();
    for out in &outs {
        assert_eq!(out.code, 3, "timed out: {}", out.stderr);
        assert!(!out.stderr.contains("does not answer"), "{}", out.stderr);
    }
    // The rate over all three, with its burst: the processes' first polls came after Redis
    // had been asked, so the bound holds from the first start.
    let sent = sim.requests();
    let most = (20.0 * elapsed + 20.0 + 3.0).floor() as u64;
    assert!(
        sent <= most,
        "{sent} requests in {elapsed:.2} s, more than {most}"
    );
    assert!(sent >= 20, "{sent} requests");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_shared_budget_over_tls_is_trusted_through_the_ca_file_given() {
    let sim = Simulator::start().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let ca = fixtures.join("ca.pem");
    // A file without a certificate is refused before any request.
    let out = run(command(
        &sim,
        &[
            "--shared-budget",
            "rediss://127.0.0.1:1",
            "--shared-budget-ca",
            fixtures.join("server.key").to_str().unwrap(),
            task(1).as_str(),
        ],
    ))
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--shared-budget-ca"), "{}", out.stderr);
    assert_eq!(sim.requests(), 0);

    let Some(redis) = iotda_task_watcher::simulator::RedisServer::start_tls(
        &fixtures.join("server.pem"),
        &fixtures.join("server.key"),
    ) else {
        return;
    };
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let mut cmd = command(&sim, &[task(1).as_str()]);
    cmd.env("IOTDA_SHARED_BUDGET", redis.url())
        .env("IOTDA_SHARED_BUDGET_CA", &ca);
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("does not answer"), "{}", out.stderr);
    assert_eq!(sim.requests(), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn a_process_waiting_for_a_tasks_lock_gives_up_at_its_deadline_naming_the_holder() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).running(1_000_000),
    );
    let (dir, dir_arg) = state_dir("held");
    let one = task(1).to_string();
    let args = ["--output", "json", "--state-dir", &dir_arg, one.as_str()];
    let mut holder = command(&sim, &args);
    holder.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    let pid = holder.id().unwrap();
    // Its first line comes once it holds the lock and has polled.
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    lines.next_line().await.unwrap().expect("a first event");
    let second = ["--state-dir", &dir_arg, "--timeout", "300ms", one.as_str()];
    let out = run(command(&sim, &second)).await;
    holder.start_kill().unwrap();
    holder.wait().await.unwrap();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("timed out waiting for process {pid} on")),
        "{}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[tokio::test]
async fn two_processes_given_the_same_tasks_in_opposite_orders_both_finish() {
    let sim = Simulator::start().await;
    for n in [1, 2] {
        sim.add_task(
            &instance(),
            &task(n),
            TaskScript::new(TaskType::Modify)
                .running_for(Duration::from_millis(300))
                .succeed(),
        );
    }
    let (dir, dir_arg) = state_dir("orders");
    let (one, two) = (task(1).to_string(), task(2).to_string());
    for _ in 0..3 {
        let forward = ["--state-dir", &dir_arg, one.as_str(), two.as_str()];
        let backward = ["--state-dir", &dir_arg, two.as_str(), one.as_str()];
        let (a, b) = tokio::join!(run(command(&sim, &forward)), run(command(&sim, &backward)));
        assert_eq!(a.code, 0, "{}", a.stderr);
        assert_eq!(b.code, 0, "{}", b.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn files_left_by_failed_writes_are_removed_once_the_tasks_lock_is_held() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let (dir, dir_arg) = state_dir("parts");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(format!("{}.json.4242.part", task(1)));
    let other = dir.join(format!("{}.json.4242.part", task(2)));
    std::fs::write(&stale, "{\"half").unwrap();
    std::fs::write(&other, "{\"half").unwrap();
    let one = task(1).to_string();
    let out = run(command(&sim, &["--state-dir", &dir_arg, one.as_str()])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!stale.exists(), "the stale write of the task is removed");
    assert!(
        other.exists(),
        "another task's files are not this run's to remove"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of `size` mounted at a fresh folder, unmounted when dropped; `None` where this
/// process may not mount.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<Self> {
        let (dir, _) = state_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Self(dir))
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = [0u8; 512];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn on_a_full_disk_a_retry_is_not_sent_and_a_run_after_spends_no_more_than_allowed() {
    let Some(disk) = SmallDisk::mount("full", "64k") else {
        eprintln!("skipped: this process may not mount a tmpfs");
        return;
    };
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify)
            .running_for(Duration::from_millis(500))
            .fail("first")
            .running(1)
            .fail("second"),
    );
    let dir_arg = disk.0.to_str().unwrap().to_owned();
    let one = task(1).to_string();
    let args = ["--state-dir", &dir_arg, "--retry-failed", "1", one.as_str()];
    let mut cmd = command(&sim, &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The first write, then no space left.
    let file = disk.0.join(format!("{one}.json"));
    let started = std::time::Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no first write"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let filler = disk.fill();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(sim.retries(&instance(), &task(1)), 0, "{stderr}");
    // Space again: the run after spends the one retry allowed, and no more.
    std::fs::remove_file(filler).unwrap();
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("FAILED: second"), "{}", out.stderr);
    assert_eq!(sim.retries(&instance(), &task(1)), 1);
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["retries"], 1, "{saved}");
}

/// Adds task `n` of `kind` to `sim`, succeeding at its first poll, a few milliseconds after
/// the task added before it.
async fn add_listed(sim: &Simulator, n: u32, kind: TaskType) {
    tokio::time::sleep(Duration::from_millis(3)).await;
    sim.add_task(&instance(), &task(n), TaskScript::new(kind).succeed());
}

#[tokio::test]
async fn the_newest_task_of_a_type_is_chosen_and_named() {
    let sim = Simulator::start().await;
    add_listed(&sim, 1, TaskType::Modify).await;
    add_listed(&sim, 2, TaskType::Modify).await;
    add_listed(&sim, 3, TaskType::Freeze).await;
    let out = run(command(
        &sim,
        &["--latest", "--type", "modify", "--output", "json"],
    ))
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json();
    assert_eq!(lines[0]["event"], "selected", "{}", out.stdout);
    assert_eq!(lines[0]["task_id"], task(2).as_str());
    assert_eq!(lines[0]["type"], "MODIFY");
    assert!(lines[0]["create_time"].is_string());
    let (done, _) = done_and_events(&out);
    assert_eq!(done["task_id"], task(2).as_str());
    assert!(
        out.stderr
            .contains(&format!("chose {} (MODIFY, created", task(2))),
        "{}",
        out.stderr
    );
    assert_eq!(sim.polls(&instance(), &task(1)), 0);
    assert_eq!(sim.polls(&instance(), &task(3)), 0);
}

#[tokio::test]
async fn since_keeps_looking_until_a_task_of_the_type_is_listed() {
    let sim = Simulator::start().await;
    // Created before the time given: never chosen.
    add_listed(&sim, 1, TaskType::Modify).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = jiff::Timestamp::now().to_string();
    let mut cmd = command(
        &sim,
        &["--since", &since, "--type", "MODIFY", "--output", "json"],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Listed a moment after the command started looking.
    tokio::time::sleep(Duration::from_millis(150)).await;
    add_listed(&sim, 2, TaskType::Freeze).await;
    add_listed(&sim, 3, TaskType::Modify).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "selected");
    assert_eq!(first["task_id"], task(3).as_str());
    assert!(sim.list_pages() >= 2, "looked again: {}", sim.list_pages());
    assert_eq!(sim.polls(&instance(), &task(1)), 0);
}

#[tokio::test]
async fn since_gives_up_at_the_deadline_saying_none_was_listed() {
    let sim = Simulator::start().await;
    add_listed(&sim, 1, TaskType::Modify).await;
    // A FREEZE of two hours ago is not one since an hour ago.
    sim.add_task(
        &instance(),
        &task(2),
        TaskScript::new(TaskType::Freeze)
            .created_ago(Duration::from_secs(7200))
            .succeed(),
    );
    let out = run(command(
        &sim,
        &["--since", "1h", "--type", "FREEZE", "--timeout", "300ms"],
    ))
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("timed out: no task of type FREEZE created since"),
        "{}",
        out.stderr
    );
    assert!(sim.list_pages() >= 2);
}

#[tokio::test]
async fn all_waits_for_every_task_under_way_and_ends_at_once_when_there_is_none() {
    let sim = Simulator::start().await;
    let out = run(command(&sim, &["--all"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no task is PENDING or RUNNING; nothing to wait for"),
        "{}",
        out.stderr
    );
    assert_eq!(sim.list_pages(), 1);
    add_listed(&sim, 1, TaskType::Modify).await;
    add_listed(&sim, 2, TaskType::Create).await;
    let out = run(command(&sim, &["--all", "--output", "json"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let selected: Vec<Value> = out
        .json()
        .into_iter()
        .filter(|l| l["event"] == "selected")
        .map(|l| l["task_id"].clone())
        .collect();
    assert_eq!(selected, [task(2).as_str(), task(1).as_str()]);
    assert_eq!(sim.polls(&instance(), &task(1)), 1);
    assert_eq!(sim.polls(&instance(), &task(2)), 1);
}

#[tokio::test]
async fn choosing_flags_and_task_ids_are_refused_together_and_type_needs_a_choice() {
    let sim = Simulator::start().await;
    for (args, says) in [
        (vec!["--latest", task(1).as_str()], "not both"),
        (vec!["--type", "MODIFY", task(1).as_str()], "--type needs"),
        (vec![], "give task ids, or choose them"),
    ] {
        let out = run(command(&sim, &args)).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert_eq!(sim.requests(), 0);
    // A type this command does not know is looked for all the same, with a warning.
    add_listed(&sim, 1, TaskType::from("RESIZE_DISK")).await;
    let out = run(command(&sim, &["--latest", "--type", "RESIZE_DISK"])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--type RESIZE_DISK is not a type this command knows (CREATE, MODIFY"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_choice_kept_in_the_state_dir_is_waited_for_again_never_a_newer_task() {
    let sim = Simulator::start().await;
    add_listed(&sim, 1, TaskType::Modify).await;
    let (dir, dir_arg) = state_dir("choice");
    let args = [
        "--state-dir",
        &dir_arg,
        "--latest",
        "--type",
        "MODIFY",
        "--output",
        "json",
    ];
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()[0]["task_id"], task(1).as_str());
    // A newer task of the type: the run again keeps to the one it chose, without listing.
    add_listed(&sim, 2, TaskType::Modify).await;
    let pages = sim.list_pages();
    let out = run(command(&sim, &args)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()[0]["task_id"], task(1).as_str());
    assert_eq!(sim.list_pages(), pages, "not listed again");
    assert_eq!(sim.polls(&instance(), &task(2)), 0);
    // Other flags, or --fresh, choose anew.
    let fresh = [&args[..], &["--fresh"]].concat();
    let out = run(command(&sim, &fresh)).await;
    assert_eq!(out.json()[0]["task_id"], task(2).as_str(), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_koocli_profile_is_enough_and_an_encrypted_one_is_refused_with_the_advice() {
    let sim = Simulator::start().await;
    sim.add_task(
        &instance(),
        &task(1),
        TaskScript::new(TaskType::Modify).succeed(),
    );
    let profiles = |ak: &str, sk: &str| {
        json!({
            "current": "other",
            "profiles": [
                {"name": "other", "mode": "ecsAgency"},
                {"name": "ci", "mode": "AKSK", "accessKeyId": ak, "secretAccessKey": sk,
                 "region": REGION, "projectId": DEFAULT_PROJECT_ID}
            ]
        })
        .to_string()
    };
    let file = temp_file("hcloud", &profiles(DEFAULT_AK, DEFAULT_SK));
    let mut cmd = without_credentials(&sim, &["-v", task(1).as_str()]);
    cmd.env("HW_SHARED_CONFIG_FILE", &file)
        .env("HW_PROFILE", "ci");
    let out = run(cmd).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials from KooCLI profile ci;")
            && out
                .stderr
                .contains(&format!("project {DEFAULT_PROJECT_ID} (found)")),
        "{}",
        out.stderr
    );
    // The same profile by flag; a profile the file does not have is named.
    let mut cmd = without_credentials(&sim, &["--profile", "ci", task(1).as_str()]);
    cmd.env("HW_SHARED_CONFIG_FILE", &file);
    assert_eq!(run(cmd).await.code, 0);
    let mut cmd = without_credentials(&sim, &["--profile", "nope", task(1).as_str()]);
    cmd.env("HW_SHARED_CONFIG_FILE", &file);
    let out = run(cmd).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(r#"no profile named "nope""#),
        "{}",
        out.stderr
    );
    // As KooCLI saves keys by default: encrypted, never sent.
    let encrypted = temp_file(
        "hcloud-encrypted",
        &profiles("cQ9+vL2m/Xk0aZ7e==", "b64secret=="),
    );
    let requests = sim.requests();
    let mut cmd = without_credentials(&sim, &[task(1).as_str()]);
    cmd.env("HW_SHARED_CONFIG_FILE", &encrypted)
        .env("HW_PROFILE", "ci");
    let out = run(cmd).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("hcloud configure set --cli-auth-encrypt=false"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("cQ9+vL2m"), "{}", out.stderr);
    assert_eq!(sim.requests(), requests, "nothing sent");
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(encrypted);
}

#[tokio::test]
async fn the_newest_task_chosen_when_it_has_failed_exits_1() {
    let sim = Simulator::start().await;
    add_listed(&sim, 1, TaskType::Modify).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    sim.add_task(
        &instance(),
        &task(2),
        TaskScript::new(TaskType::Modify).fail("flavor sold out"),
    );
    let out = run(command(&sim, &["--latest"])).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("chose {}", task(2))),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("flavor sold out"), "{}", out.stderr);
}
