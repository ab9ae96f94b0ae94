//! The booking script against a real Redis server, through the links processes use.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Shared, SharedBudget};
use crate::simulator::RedisServer;

/// A process's link to `server`, with `limits` and the adaptive limiter on or off.
fn link(server: &RedisServer, limits: &[(f64, f64)], adaptive: bool) -> Arc<Shared> {
    Arc::new(link_with(server, |config| config, limits, adaptive))
}

/// As [`link`], its settings changed by `configure`.
fn link_with(
    server: &RedisServer,
    configure: impl FnOnce(SharedBudget) -> SharedBudget,
    limits: &[(f64, f64)],
    adaptive: bool,
) -> Shared {
    let config = configure(SharedBudget::redis(&server.url()).unwrap());
    Shared::new(config, "test", limits, adaptive)
}

/// Books for `run` as a process does (each slot waited for before the next is booked), and
/// returns each slot on the server's clock, in microseconds.
async fn book_for(shared: Arc<Shared>, run: Duration) -> Vec<i64> {
    book_with_clock(shared, run, 1).await
}

/// As [`book_for`], by a process whose clock runs `speed` times as fast as the server's: it
/// waits a `speed`th of each wait it is told.
async fn book_with_clock(shared: Arc<Shared>, run: Duration, speed: u32) -> Vec<i64> {
    let end = std::time::Instant::now() + run;
    let mut slots = Vec::new();
    while std::time::Instant::now() < end {
        let booked = shared.book().await.expect("Redis answers");
        let (_, server_now) = shared.link().clock.unwrap();
        slots.push(server_now + i64::try_from(booked.wait.as_micros()).unwrap());
        tokio::time::sleep(booked.wait / speed).await;
    }
    slots
}

/// The most slots in any window of length `t`, over every `t` between two slots, checked
/// against `rate * t + burst`.
fn assert_within(slots: &mut [i64], rate: f64, burst: f64) {
    slots.sort_unstable();
    for i in 0..slots.len() {
        for j in i..slots.len() {
            #[allow(clippy::cast_precision_loss)]
            let t = (slots[j] - slots[i]) as f64 / 1e6;
            #[allow(clippy::cast_precision_loss)]
            let grants = (j - i + 1) as f64;
            // One microsecond per slot of rounding.
            let allowed = rate * (t + 1e-6 * grants) + burst;
            assert!(
                grants <= allowed,
                "{grants} slots in {t:.6} s: more than {rate} x t + {burst} = {allowed:.2}"
            );
        }
    }
}

#[tokio::test]
async fn grants_never_pass_the_rate_times_t_plus_the_burst_over_any_window() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (rate, burst) = (200.0, 5.0);
    let processes: Vec<_> = (0..3)
        .map(|_| link(&server, &[(rate, burst)], false))
        .collect();
    let runs = processes
        .iter()
        .map(|p| tokio::spawn(book_for(p.clone(), Duration::from_millis(400))));
    let mut slots: Vec<i64> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    // Booked back to back, three processes keep the limit busy.
    assert!(slots.len() >= 70, "{} slots", slots.len());
    assert_within(&mut slots, rate, burst);
    let calls: u64 = processes.iter().map(|p| p.calls()).sum();
    assert_eq!(calls, slots.len() as u64, "one round trip per slot");
}

#[tokio::test]
async fn several_limits_hold_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A fast rate with a small burst, and a window limit (30 in any 200 ms) as the budget
    // turns it into a bucket.
    let window = crate::client::budget::RequestBudget::unlimited()
        .with_max_rps(400.0, 4)
        .with_window_limit(30, Duration::from_millis(200));
    let limits = window.buckets();
    let processes: Vec<_> = (0..2).map(|_| link(&server, &limits, false)).collect();
    let runs = processes
        .iter()
        .map(|p| tokio::spawn(book_for(p.clone(), Duration::from_millis(500))));
    let mut slots: Vec<i64> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    for &(rate, burst) in &limits {
        assert_within(&mut slots, rate, burst);
    }
    // The window limit, as users state it: at most 30 in any 200 ms.
    slots.sort_unstable();
    for (i, first) in slots.iter().enumerate() {
        let within = slots[i..]
            .iter()
            .take_while(|s| **s - first < 200_000)
            .count();
        assert!(within <= 30, "{within} slots in 200 ms");
    }
    assert!(slots.len() >= 60, "{} slots", slots.len());
}

#[tokio::test]
async fn a_process_whose_clock_runs_fast_cannot_push_the_fleet_over() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (rate, burst) = (100.0, 2.0);
    let fast = link(&server, &[(rate, burst)], false);
    let steady = link(&server, &[(rate, burst)], false);
    // One process's clock runs 50 times too fast: it books again long before its slot.
    let leaping = tokio::spawn(book_with_clock(fast, Duration::from_millis(300), 50));
    let mut slots = book_for(steady, Duration::from_millis(300)).await;
    let leaped = leaping.await.unwrap();
    // It booked more than its share, further into the future: the slots are on the server's
    // clock, and the fleet's rate holds over them.
    assert!(
        leaped.len() > slots.len(),
        "{} against {}",
        leaped.len(),
        slots.len()
    );
    slots.extend(leaped);
    assert_within(&mut slots, rate, burst);
}

#[tokio::test]
async fn a_throttle_cuts_the_fleets_rate_once_per_episode() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (link(&server, &[], true), link(&server, &[], true));
    // Both book at will for a while: nothing is held back, and the fleet's rate is measured.
    for _ in 0..200 {
        assert_eq!(a.book().await.unwrap().wait, Duration::ZERO);
        assert_eq!(b.book().await.unwrap().wait, Duration::ZERO);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent_before = Instant::now();
    assert_eq!(a.book().await.unwrap().rate, None, "not engaged yet");
    // A request of each, sent at the same moment, comes back throttled. A tells first.
    a.throttled(Instant::now(), None);
    let cut = a.book().await.unwrap().rate.expect("engaged");
    b.throttled(sent_before, None);
    let after_b = b.book().await.unwrap().rate.unwrap();
    assert!(
        after_b >= cut * 0.99,
        "B's throttle, sent before the cut, cut again: {cut} then {after_b}"
    );
    // A throttle of a request sent after the cut is the probe's: alone, it does not cut.
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.throttled(Instant::now(), None);
    assert!(!b.book().await.unwrap().cut, "cut during the probe");
    // Most of the probe's low phase refused: far over a quota, it cuts again at once, to
    // what the service accepted.
    for _ in 0..20 {
        b.throttled(Instant::now(), None);
    }
    b.accepted(Instant::now());
    let again = b.book().await.unwrap();
    assert!(again.cut);
    let again = again.rate.unwrap();
    assert!(again < cut * 0.8, "{cut} then {again}");
}

#[tokio::test]
async fn a_retry_after_told_by_one_process_pauses_every_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (link(&server, &[], false), link(&server, &[], false));
    assert_eq!(b.book().await.unwrap().wait, Duration::ZERO);
    a.book().await.unwrap();
    a.throttled(Instant::now(), Some(Duration::from_millis(300)));
    a.book().await.unwrap();
    let paused = b.book().await.unwrap().wait;
    assert!(
        (Duration::from_millis(250)..=Duration::from_millis(300)).contains(&paused),
        "{paused:?}"
    );
}

#[tokio::test]
async fn a_retry_after_told_before_redis_answered_pauses_the_fleet_for_what_is_left_of_it() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let probe = |config: SharedBudget| config.probe_every(Duration::from_millis(20));
    let (a, b) = (
        link_with(&server, probe, &[], false),
        link(&server, &[], false),
    );
    // `a` has never reached Redis, so it has no server clock: the pause is told all the same.
    server.kill();
    assert!(a.book().await.is_none());
    a.throttled(Instant::now(), Some(Duration::from_millis(800)));
    let told = Instant::now();
    server.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while a.book().await.is_none() {
        assert!(told.elapsed() < Duration::from_millis(700), "not rejoined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = Duration::from_millis(800).saturating_sub(told.elapsed());
    let paused = b.book().await.unwrap().wait;
    // What is left is read as the call is sent and counted from when the script runs: the
    // pause may end late by that call's trip (a connection made anew here), not by 300 ms.
    assert!(
        paused > Duration::ZERO && paused <= left + Duration::from_millis(100),
        "paused {paused:?}, with {left:?} left of the Retry-After"
    );
}

#[tokio::test]
async fn a_report_whose_call_timed_out_after_its_script_ran_is_not_counted_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let settings = |config: SharedBudget| {
        config
            .timeout(Duration::from_millis(100))
            .probe_every(Duration::ZERO)
    };
    let a = link_with(&server, settings, &[(1.0, 1.0)], false);
    // Ten slots a second apart: the limit's next one is 10 s off; four are given back.
    for _ in 0..10 {
        a.book().await.unwrap();
    }
    (0..4).for_each(|_| a.refund());
    // Redis holds every client for 300 ms: the call times out, and its script runs after.
    let mut other = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("ALL")
        .query_async(&mut other)
        .await
        .unwrap();
    assert!(a.book().await.is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Given back once, the next slot is about 7 s after the first; twice, about 3 s.
    let wait = a.book().await.expect("answers again").wait;
    assert!(wait > Duration::from_secs(5), "the next slot in {wait:?}");
}

#[tokio::test]
async fn redis_down_falls_back_at_once_and_rejoins_after_a_probe() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let probe = |config: SharedBudget| config.probe_every(Duration::from_millis(100));
    let shared = link_with(&server, probe, &[], true);
    assert!(shared.book().await.is_some());
    server.kill();
    let start = Instant::now();
    assert!(shared.book().await.is_none());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(!shared.joined());
    assert_eq!(shared.decide(Instant::now()), super::Decision::Local);
    server.restart();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(shared.decide(Instant::now()), super::Decision::Ask);
    // The connection may take a probe or two to come back.
    let mut probes = 0;
    while shared.book().await.is_none() {
        probes += 1;
        assert!(probes < 20, "not rejoined after {probes} probes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared.joined());
}

#[tokio::test]
async fn a_restarted_redis_takes_up_the_fleets_rate_from_the_first_process_to_book() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let probe = |config: SharedBudget| config.probe_every(Duration::from_millis(50));
    let a = link_with(&server, probe, &[], true);
    for _ in 0..100 {
        a.book().await.unwrap();
    }
    a.throttled(Instant::now(), None);
    let learnt = a.book().await.unwrap().rate.expect("engaged");
    // Redis restarts with nothing: the fleet's state is gone.
    server.restart();
    let mut again = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = a.book().await;
        if again.is_some() {
            break;
        }
    }
    let rate = again.expect("rejoined").rate.expect("taken up again");
    assert!((rate - learnt).abs() < 0.01, "{learnt} then {rate}");
}

#[tokio::test]
async fn a_password_in_the_url_authenticates() {
    let Some(server) = RedisServer::start_with(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let with = |url: String| Shared::new(SharedBudget::redis(&url).unwrap(), "test", &[], true);
    let url = |auth: &str| format!("redis://{auth}127.0.0.1:{}/0", server.port());
    assert!(with(url(":s3cret-pw@")).book().await.is_some());
    // Without it, or with another, the server refuses, and the process paces itself.
    assert!(with(url("")).book().await.is_none());
    assert!(with(url(":wrong@")).book().await.is_none());
}

#[tokio::test]
async fn a_tls_url_to_a_server_without_tls_falls_back_without_panicking() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/0", server.port());
    let shared = Shared::new(SharedBudget::redis(&url).unwrap(), "test", &[], true);
    let started = Instant::now();
    assert!(shared.book().await.is_none());
    assert!(!shared.joined());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_tls_server_is_trusted_through_the_root_certificate_given() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let Some(server) =
        RedisServer::start_tls(&fixtures.join("server.pem"), &fixtures.join("server.key"))
    else {
        return;
    };
    let ca = std::fs::read(fixtures.join("ca.pem")).unwrap();
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");
    // Its certificate chains to a private authority, which the public roots do not know.
    let public = Shared::new(SharedBudget::redis(&url).unwrap(), "test", &[], true);
    assert!(public.book().await.is_none());
    let config = SharedBudget::redis(&url)
        .unwrap()
        .root_certificate(ca)
        .unwrap();
    let trusted = Shared::new(config, "test", &[], true);
    assert!(trusted.book().await.is_some());
    assert!(trusted.joined());
}

#[test]
fn a_root_certificate_is_refused_when_it_is_none_or_the_url_has_no_tls() {
    let tls = SharedBudget::redis("rediss://:pw@127.0.0.1:6380").unwrap();
    let not_pem = tls.clone().root_certificate(b"not a certificate".to_vec());
    assert!(matches!(
        not_pem,
        Err(super::SharedBudgetError::Certificate(_))
    ));
    let garbled = tls.root_certificate(
        b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n".to_vec(),
    );
    assert!(matches!(
        garbled,
        Err(super::SharedBudgetError::Certificate(_))
    ));
    let plain = SharedBudget::redis("redis://:pw@127.0.0.1:6379").unwrap();
    let error = plain.root_certificate(b"".to_vec()).unwrap_err();
    assert!(matches!(error, super::SharedBudgetError::NotTls(_)));
    assert!(!error.to_string().contains("pw"), "{error}");
}

/// Moves every time in the scope's state `by` microseconds later, as a step back of Redis's
/// clock by as much leaves it: slots booked ahead of the server's `TIME`.
async fn shift_times(server: &RedisServer, by: i64) {
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let now = seconds * 1_000_000 + micros;
    let state: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("iotda-budget:{test}")
        .query_async(&mut redis)
        .await
        .unwrap();
    let day = 86_400_000_000_i64;
    let mut shifted = 0;
    for (field, value) in state {
        // Only times: values within a day of now.
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        #[allow(clippy::cast_precision_loss)]
        if (value - now as f64).abs() < day as f64 {
            #[allow(clippy::cast_precision_loss)]
            let later = format!("{:.0}", value + by as f64);
            let () = redis::cmd("HSET")
                .arg("iotda-budget:{test}")
                .arg(&field)
                .arg(later)
                .query_async(&mut redis)
                .await
                .unwrap();
            shifted += 1;
        }
    }
    assert!(shifted >= 3, "only {shifted} times in the state");
}

#[tokio::test]
async fn a_redis_clock_stepped_back_does_not_hold_the_fleets_requests() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = link(&server, &[(10.0, 2.0)], true);
    book_for(a.clone(), Duration::from_millis(1200)).await;
    a.throttled(Instant::now(), None);
    let rate = a.book().await.unwrap().rate.expect("engaged");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Redis's clock steps back an hour.
    shift_times(&server, 3_600_000_000).await;
    let b = link(&server, &[(10.0, 2.0)], true);
    let booked = b.book().await.expect("Redis answers");
    assert!(booked.wait < Duration::from_secs(1), "{:?}", booked.wait);
    // What the fleet learned is kept.
    let kept = booked.rate.expect("still engaged");
    assert!((kept - rate).abs() < 0.01, "{rate} then {kept}");
    // And the fleet books on from the server's clock as it is now, within its limits.
    let mut slots = book_for(b, Duration::from_millis(600)).await;
    assert!(slots.len() >= 3, "{slots:?}");
    assert_within(&mut slots, 10.0, 2.0);
}

#[tokio::test]
async fn a_days_retry_after_pauses_the_fleet_for_half_a_minute_at_most() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (link(&server, &[], false), link(&server, &[], false));
    a.book().await.unwrap();
    a.throttled(Instant::now(), Some(Duration::from_secs(86_400)));
    a.book().await.unwrap();
    let paused = b.book().await.expect("Redis answers").wait;
    assert!(
        (Duration::from_secs(29)..=Duration::from_secs(30)).contains(&paused),
        "{paused:?}"
    );
}

#[tokio::test]
async fn a_slow_limit_of_another_process_is_not_taken_for_a_stepped_clock() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // One slot every 50 s: the third is booked 100 s ahead.
    let slow = link(&server, &[(0.02, 1.0)], false);
    for _ in 0..3 {
        slow.book().await.unwrap();
    }
    let other = link(&server, &[], false);
    assert!(!other.book().await.unwrap().stepped);
    let next = slow.book().await.expect("Redis answers");
    assert!(!next.stepped);
    assert!(next.wait > Duration::from_secs(140), "{:?}", next.wait);
}

#[tokio::test]
async fn what_a_fleet_learned_is_kept_a_day_for_the_fleet_started_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = link(&server, &[], true);
    book_for(a.clone(), Duration::from_millis(300)).await;
    a.throttled(Instant::now(), None);
    let learnt = a.book().await.unwrap().rate.expect("engaged");
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kept: i64 = redis::cmd("PTTL")
        .arg("iotda-budget:{test}")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(kept > 86_000_000, "kept {kept} ms");
    // A process of a fleet started again books at the rate learned from its first request.
    let b = link(&server, &[], true);
    let first = b.book().await.unwrap();
    let rate = first.rate.expect("the fleet's rate");
    assert!((rate - learnt).abs() < 0.01, "{learnt} then {rate}");
}
