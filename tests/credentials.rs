//! Credentials where automation runs: each provider against the simulator's credential services
//! (ECS metadata, CCE Pod Identity, STS, IAM), over real HTTP through the real client, and
//! fetched credentials renewed through waits that outlive them.
//!
//! The lifetimes here are a few hundred milliseconds, so that a wait outlives several sets in
//! about two seconds of real time. Tests that set environment variables hold [`ENV`]: the
//! environment is the process's, shared by the tests running at once.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use iotda_task_watcher::client::provider::{
    EcsMetadata, Environment, OidcSts, PodIdentity, ProfileFile, ProvideCredentials, ProviderChain,
    ProviderError,
};
use iotda_task_watcher::client::BuildError;
use iotda_task_watcher::simulator::{
    ExpiryStyle, Metadata, Simulator, TaskScript, DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK,
    REGION,
};
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::{
    InstanceId, IotdaClient, TaskEvent, TaskId, TaskStatus, TaskType, TaskWatcher,
};

/// Held by every test that sets environment variables.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every variable a provider reads, cleared; the guard keeps other tests out of the
/// environment until it drops.
async fn clean_env() -> tokio::sync::MutexGuard<'static, ()> {
    let guard = ENV.lock().await;
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("HUAWEICLOUD_")
            || name.starts_with("HC_CONTAINER_")
            || name == "IOTDA_METADATA_ENDPOINT"
        {
            std::env::remove_var(&key);
        }
    }
    // No profile file of the machine's, and a metadata service that refuses at once.
    std::env::set_var(
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
        "/nonexistent/iotda-credentials",
    );
    std::env::set_var("HW_SHARED_CONFIG_FILE", "/nonexistent/iotda-hcloud.json");
    std::env::remove_var("HW_PROFILE");
    std::env::set_var("IOTDA_METADATA_ENDPOINT", "http://127.0.0.1:1");
    guard
}

fn ids(n: u32) -> (InstanceId, TaskId) {
    (
        "a1b2c3d4-0000-1111-2222-333344445555".parse().unwrap(),
        format!("075f413d-a3bb-4243-974d-{n:012x}").parse().unwrap(),
    )
}

fn fast() -> PollPolicy {
    PollPolicy::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(20))
}

/// A client of the simulator whose keys come from `provider`.
async fn client_from(sim: &Simulator, provider: impl ProvideCredentials + 'static) -> IotdaClient {
    IotdaClient::builder()
        .endpoint(sim.uri())
        .project_id(sim.project_id().clone())
        .credentials_provider(provider)
        .resolve()
        .await
        .unwrap()
}

/// Waits for task `n`, which runs for `running`, and returns its events and how long it took.
async fn wait(
    client: &IotdaClient,
    sim: &Simulator,
    n: u32,
    running: Duration,
) -> (Vec<TaskEvent>, Duration) {
    let (instance, task) = ids(n);
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify)
            .running_for(running)
            .succeed(),
    );
    let started = Instant::now();
    let events: Vec<TaskEvent> = TaskWatcher::new(client, &instance, &task)
        .policy(fast())
        .timeout(Duration::from_secs(30))
        .events()
        .collect()
        .await;
    (events, started.elapsed())
}

fn succeeded(events: &[TaskEvent]) -> bool {
    matches!(events.last(), Some(TaskEvent::Done(Ok(t))) if t.status == Some(TaskStatus::Success))
}

fn retries(events: &[TaskEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TaskEvent::Retrying { .. }))
        .count()
}

#[tokio::test]
async fn a_wait_across_five_expiries_is_never_refused_and_fetches_once_a_lifetime() {
    let sim = Simulator::start().await;
    let lifetime = Duration::from_millis(400);
    sim.set_credential_lifetime(lifetime);
    let client = client_from(&sim, EcsMetadata::at(sim.uri())).await;
    assert_eq!(client.credentials_source(), "ECS metadata");
    let (events, took) = wait(&client, &sim, 1, Duration::from_millis(2_050)).await;
    assert!(succeeded(&events), "{events:?}");
    assert_eq!(retries(&events), 0, "no poll failed: {events:?}");
    assert_eq!(sim.refused(), 0, "no request was refused");
    let spanned = took.as_secs_f64() / lifetime.as_secs_f64();
    assert!(spanned >= 5.0, "the wait outlived five sets ({took:?})");
    // Expiries: the lifetimes the wait spanned, the one under way at its end included.
    let expiries = spanned.ceil() as u64;
    let fetches = sim.credential_fetches();
    assert!(
        fetches <= expiries + 1,
        "{fetches} fetches over {expiries} expiries"
    );
    assert!(fetches >= 5, "renewed as it went: {fetches} fetches");
    assert_eq!(client.credential_fetches(), fetches);
    // Never early: each renewal at least seven eighths of a lifetime after the one before.
    let attempts = sim.credential_attempts();
    for pair in attempts.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(gap >= lifetime * 7 / 8, "{gap:?} in {attempts:?}");
    }
}

#[tokio::test]
async fn a_hundred_waits_at_the_moment_of_expiry_fetch_once() {
    let sim = Simulator::start().await;
    sim.set_credential_lifetime(Duration::from_secs(1));
    let client = client_from(&sim, EcsMetadata::at(sim.uri())).await;
    for n in 0..100 {
        let (instance, task) = ids(n);
        sim.add_task(
            &instance,
            &task,
            TaskScript::new(TaskType::Modify).succeed(),
        );
    }
    // The set has expired; nothing has asked for a new one yet.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(sim.credential_fetches(), 1);
    let waits = (0..100).map(|n| {
        let client = client.clone();
        tokio::spawn(async move {
            let (instance, task) = ids(n);
            TaskWatcher::new(&client, &instance, &task)
                .policy(fast())
                .timeout(Duration::from_secs(10))
                .await
        })
    });
    for outcome in futures::future::join_all(waits).await {
        assert!(outcome.unwrap().is_ok());
    }
    assert_eq!(sim.credential_fetches(), 2, "one fetch for the hundred");
    assert_eq!(sim.refused(), 0);
}

#[tokio::test]
async fn a_renewal_failing_three_times_keeps_the_valid_set_and_backs_off() {
    let sim = Simulator::start().await;
    let lifetime = Duration::from_secs(4);
    sim.set_credential_lifetime(lifetime);
    let client = client_from(&sim, EcsMetadata::at(sim.uri())).await;
    sim.fail_credential_fetches(3);
    let (events, took) = wait(&client, &sim, 1, Duration::from_millis(4_300)).await;
    assert!(took > lifetime, "{took:?}");
    assert!(succeeded(&events), "{events:?}");
    assert_eq!(
        retries(&events),
        0,
        "the waits went on unharmed: {events:?}"
    );
    assert_eq!(sim.refused(), 0);
    let attempts = sim.credential_attempts();
    assert_eq!(attempts.len(), 5, "the first, three failures, one success");
    // The margin is an eighth of 4 s (500 ms): pauses of 25, 50 and 100 ms.
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .skip(1)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    // Each try waits at least its pause (a try goes with the first request after it).
    for (gap, pause) in gaps.iter().zip([25_000u64, 50_000, 100_000]) {
        assert!(*gap >= Duration::from_micros(pause), "{gaps:?}");
    }
    let renewed = attempts[4];
    let first = attempts[0];
    assert!(
        renewed < first + lifetime,
        "renewed before the first set expired"
    );
}

#[tokio::test]
async fn a_refused_request_renews_the_keys_once_and_goes_again() {
    let sim = Simulator::start().await;
    // Keys that last 1.5 s, then a simulator clock 2 s ahead: the client's set looks
    // valid to it and is refused as expired; one renewal and one more try get through.
    sim.set_credential_lifetime(Duration::from_millis(1_500));
    let client = client_from(&sim, EcsMetadata::at(sim.uri())).await;
    let (instance, task) = ids(7);
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_credential_lifetime(Duration::from_secs(3600));
    sim.set_clock_offset(2);
    let done = client.instance_task(&instance, &task).await.unwrap();
    assert!(done.is_terminal());
    assert_eq!(sim.refused(), 1, "the first try was refused");
    assert_eq!(sim.credential_fetches(), 2, "one renewal");
}

#[tokio::test]
async fn the_metadata_service_with_and_without_an_agency() {
    let sim = Simulator::start().await;
    let fetched = EcsMetadata::at(sim.uri()).provide().await.unwrap();
    assert!(fetched.expires_at().is_some());
    assert!(fetched.project_id().is_none(), "ECS gives no project id");

    sim.set_metadata(Metadata::NoAgency);
    let error = EcsMetadata::at(sim.uri()).provide().await.unwrap_err();
    assert!(error.is_not_applicable(), "{error}");
    assert!(
        error
            .to_string()
            .contains("Please configure Cloud Service Agency first"),
        "{error}"
    );

    sim.set_metadata(Metadata::Unauthorized);
    let before = sim.requests();
    let error = EcsMetadata::at(sim.uri()).provide().await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Failed(m) if m.contains("401")),
        "{error}"
    );
    // A session token, the keys, a new session token, the keys again.
    assert_eq!(sim.requests() - before, 4);

    // Off ECS: nothing answers, and the provider says so at once.
    let started = Instant::now();
    let error = EcsMetadata::at("http://127.0.0.1:1")
        .provide()
        .await
        .unwrap_err();
    assert!(error.is_not_applicable(), "{error}");
    assert!(error.to_string().contains("not an ECS instance"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn expiries_with_and_without_fractions_and_malformed_ones() {
    let sim = Simulator::start().await;
    let expected = SystemTime::now() + Duration::from_secs(3600);
    for style in [ExpiryStyle::Micros, ExpiryStyle::Seconds] {
        sim.set_expiry_style(style);
        let set = EcsMetadata::at(sim.uri()).provide().await.unwrap();
        let at = set.expires_at().unwrap();
        let off = at.duration_since(expected).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(2), "{style:?}: {off:?}");
    }
    sim.set_expiry_style(ExpiryStyle::Malformed);
    let error = EcsMetadata::at(sim.uri()).provide().await.unwrap_err();
    assert!(error.to_string().contains("is not a time"), "{error}");
    let error = IotdaClient::builder()
        .endpoint(sim.uri())
        .project_id(sim.project_id().clone())
        .credentials_provider(EcsMetadata::at(sim.uri()))
        .resolve()
        .await
        .unwrap_err();
    assert!(matches!(error, BuildError::NoCredentials(_)), "{error}");
}

#[tokio::test]
async fn pod_identity_reads_its_token_file_each_time() {
    let sim = Simulator::start().await;
    let dir = tempdir("pod");
    let token = dir.join("token");
    std::fs::write(&token, "pod-token\n").unwrap();
    let provider = PodIdentity::at(sim.pod_identity_uri(), token.to_string_lossy());
    let set = provider.provide().await.unwrap();
    assert!(set.expires_at().is_some());
    // The set works against the API.
    let client = client_from(
        &sim,
        PodIdentity::at(sim.pod_identity_uri(), token.to_string_lossy()),
    )
    .await;
    assert_eq!(client.credentials_source(), "CCE Pod Identity");
    let (events, _) = wait(&client, &sim, 1, Duration::ZERO).await;
    assert!(succeeded(&events), "{events:?}");
    std::fs::remove_file(&token).unwrap();
    let error = provider.provide().await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Failed(m) if m.contains("token file")),
        "{error}"
    );
}

#[tokio::test]
async fn the_profile_file_and_its_failures() {
    let sim = Simulator::start().await;
    let dir = tempdir("profile");
    let path = dir.join("credentials");
    write(
        &path,
        &format!("[global]\nak = X\n[basic]\nak = {DEFAULT_AK}\nsk = {DEFAULT_SK}\nproject_id = {DEFAULT_PROJECT_ID}\n"),
    );
    let set = ProfileFile::at(&path).provide().await.unwrap();
    assert_eq!(set.credentials().access_key(), Some(DEFAULT_AK));
    assert_eq!(set.expires_at(), None, "fixed keys");
    assert_eq!(
        set.project_id().map(ToString::to_string).as_deref(),
        Some(DEFAULT_PROJECT_ID)
    );
    // The project id comes from the file: none is given to the builder.
    let client = IotdaClient::builder()
        .endpoint(sim.uri())
        .credentials_provider(ProfileFile::at(&path))
        .resolve()
        .await
        .unwrap();
    assert_eq!(client.credentials_source(), "profile file");
    assert_eq!(
        client.credential_fetches(),
        0,
        "fixed keys are never fetched again"
    );
    let (events, _) = wait(&client, &sim, 1, Duration::ZERO).await;
    assert!(succeeded(&events), "{events:?}");

    let missing = ProfileFile::at(dir.join("absent"))
        .provide()
        .await
        .unwrap_err();
    assert!(missing.is_not_applicable(), "{missing}");
    write(&path, "[other]\nak = A\nsk = S\n");
    let no_section = ProfileFile::at(&path).provide().await.unwrap_err();
    assert!(no_section.is_not_applicable(), "{no_section}");
    assert!(
        no_section.to_string().contains("no [basic] section"),
        "{no_section}"
    );
    write(&path, "[basic]\nak = A\n");
    let no_keys = ProfileFile::at(&path).provide().await.unwrap_err();
    assert!(
        no_keys.to_string().contains("neither ak and sk"),
        "{no_keys}"
    );
}

#[tokio::test]
async fn the_environment_oidc_and_a_federated_identity() {
    let sim = Simulator::start().await;
    let dir = tempdir("env");
    let _env = clean_env().await;

    std::env::set_var("HUAWEICLOUD_SDK_AK", DEFAULT_AK);
    std::env::set_var("HUAWEICLOUD_SDK_SK", DEFAULT_SK);
    let set = Environment::new().provide().await.unwrap();
    assert_eq!(set.credentials().access_key(), Some(DEFAULT_AK));
    assert_eq!(set.expires_at(), None);
    std::env::remove_var("HUAWEICLOUD_SDK_SK");
    let error = Environment::new().provide().await.unwrap_err();
    assert!(
        !error.is_not_applicable() && error.to_string().contains("HUAWEICLOUD_SDK_SK"),
        "half set is a failure: {error}"
    );
    // A failure stops the chain: no other identity is taken in its place.
    let stopped = ProviderChain::from_env().resolve().await.unwrap_err();
    assert_eq!(stopped.tried().len(), 1, "{stopped}");

    // A federated identity wins over the keys when both are set.
    let id_token = dir.join("id-token");
    std::fs::write(&id_token, "an-id-token").unwrap();
    std::env::set_var("HUAWEICLOUD_SDK_SK", DEFAULT_SK);
    std::env::set_var("HUAWEICLOUD_SDK_IDP_ID", "my-idp");
    std::env::set_var("HUAWEICLOUD_SDK_ID_TOKEN_FILE", &id_token);
    std::env::set_var("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.uri());
    let set = Environment::new().provide().await.unwrap();
    assert_ne!(set.credentials().access_key(), Some(DEFAULT_AK));
    assert!(set.expires_at().is_some(), "temporary keys from IAM");

    let error = OidcSts::new().provide().await.unwrap_err();
    assert!(error.is_not_applicable(), "{error}");
    std::env::set_var(
        "HUAWEICLOUD_OIDC_PROVIDER_URN",
        "iam::1:identity-provider:ci",
    );
    std::env::set_var("HUAWEICLOUD_OIDC_AGENCY_URN", "iam::1:agency:deploy");
    std::env::set_var("HUAWEICLOUD_OIDC_TOKEN_FILE", &id_token);
    std::env::set_var("HUAWEICLOUD_SDK_STS_ENDPOINT", sim.uri());
    let set = OidcSts::new().provide().await.unwrap();
    assert!(set.expires_at().is_some());
    let client = client_from(&sim, OidcSts::new()).await;
    let (events, _) = wait(&client, &sim, 1, Duration::ZERO).await;
    assert!(succeeded(&events), "{events:?}");
}

#[tokio::test]
async fn with_nothing_anywhere_the_chain_names_each_provider_and_why() {
    let _env = clean_env().await;
    let started = Instant::now();
    let error = ProviderChain::from_env().resolve().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let names: Vec<&str> = error
        .tried()
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "environment",
            "profile file",
            "KooCLI profile",
            "OIDC to STS",
            "CCE Pod Identity",
            "ECS metadata"
        ]
    );
    assert!(
        error.tried().iter().all(|(_, why)| why.is_not_applicable()),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("HUAWEICLOUD_SDK_AK"), "{text}");
    assert!(text.contains("/nonexistent/iotda-credentials"), "{text}");
}

#[tokio::test]
async fn the_project_is_looked_up_by_region_one_none_or_several() {
    let sim = Simulator::start().await;
    let _env = clean_env().await;
    std::env::set_var("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.uri());
    let lookup = || {
        IotdaClient::builder()
            .region(REGION)
            .endpoint(sim.uri())
            .credentials(sim.credentials())
            .resolve()
    };
    let client = lookup().await.unwrap();
    assert_eq!(client.project_id().as_str(), DEFAULT_PROJECT_ID);
    let (events, _) = wait(&client, &sim, 1, Duration::ZERO).await;
    assert!(succeeded(&events), "{events:?}");

    sim.set_projects(&[("eu-west-101", "11111111111111111111111111111111")]);
    let none = lookup().await.unwrap_err();
    assert!(
        matches!(&none, BuildError::ProjectLookup(m) if m.contains("no project named")),
        "{none}"
    );

    sim.set_projects(&[
        (REGION, "11111111111111111111111111111111"),
        (REGION, "22222222222222222222222222222222"),
    ]);
    let several = lookup().await.unwrap_err();
    assert!(
        matches!(&several, BuildError::ProjectLookup(m) if m.contains("several")),
        "{several}"
    );

    // The look-up is signed: wrong keys are refused.
    sim.set_projects(&[(REGION, DEFAULT_PROJECT_ID)]);
    let refused = IotdaClient::builder()
        .region(REGION)
        .endpoint(sim.uri())
        .credentials(iotda_task_watcher::Credentials::aksk(DEFAULT_AK, "wrong"))
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, BuildError::ProjectLookup(m) if m.contains("401")),
        "{refused}"
    );
}

/// A fresh folder under the system's temporary folder.
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iotda-credentials-{name}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &std::path::Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A provider that answers as `inner` does, `delay` after each ask.
#[derive(Debug)]
struct Slow<P> {
    inner: P,
    delay: Duration,
}

impl<P: ProvideCredentials> ProvideCredentials for Slow<P> {
    fn name(&self) -> &str {
        "slow"
    }

    fn provide(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<iotda_task_watcher::client::provider::CredentialSet, ProviderError>,
    > {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.provide().await
        })
    }
}

#[tokio::test]
async fn keys_renewed_slower_than_a_requests_timeout_are_renewed_all_the_same() {
    let sim = Simulator::start().await;
    sim.set_credential_lifetime(Duration::from_millis(300));
    let slow = Slow {
        inner: EcsMetadata::at(sim.uri()),
        delay: Duration::from_millis(150),
    };
    let client = client_from(&sim, slow).await;
    let (instance, task) = ids(8);
    sim.add_task(
        &instance,
        &task,
        TaskScript::new(TaskType::Modify).succeed(),
    );
    sim.set_credential_lifetime(Duration::from_secs(3600));
    // The first set has expired: the first poll waits for a renewal that outlasts its 100 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let outcome = TaskWatcher::new(&client, &instance, &task)
        .policy(fast())
        .request_timeout(Duration::from_millis(100))
        .timeout(Duration::from_secs(3))
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(sim.credential_fetches(), 2, "one renewal, finished");
    assert_eq!(sim.refused(), 0);
}
