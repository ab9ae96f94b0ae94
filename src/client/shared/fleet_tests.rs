//! The fleet's adaptive limiter against a real Redis server, on a clock the test moves: the
//! script reads the key `clock` (us) in place of `TIME`, and the processes, a service with a
//! quota and a gateway's refusals are driven in virtual time, one booking after another. So
//! a minute of a fleet takes a fraction of a second, and every run is the same.
//!
//! `FLEET_TRACE=1` prints the fleet's state four times a second (with `--nocapture`).
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "times in microseconds and rates, far inside f64's and i64's ranges"
)]

use std::collections::VecDeque;
use std::time::Duration;

use super::{Shared, SharedBudget, RESERVE};
use crate::simulator::RedisServer;

/// The time a request takes to be answered.
const LATENCY_US: i64 = 50_000;

/// A service: a token bucket of `quota` a second (a second's burst), from which a neighbour
/// takes `neighbour` a second, behind a gateway that refuses a share `noise` of requests
/// whatever the rate.
#[derive(Debug, Clone, Copy)]
struct Service {
    quota: f64,
    neighbour: f64,
    noise: f64,
}

/// What a run saw over its last part.
#[derive(Debug)]
struct Seen {
    /// Requests sent a second.
    sent: f64,
    /// Of them, accepted a second.
    accepted: f64,
    /// The share refused.
    refused: f64,
}

/// One process: its link, and the answers on their way to it.
struct Process {
    shared: Shared,
    /// When it books next.
    next: i64,
    /// Answers (arriving, sent, refused).
    coming: VecDeque<(i64, i64, bool)>,
}

/// Tells the fleet, with the next booking, of an answer to a request sent at `sent` (us).
fn tell(shared: &Shared, sent: i64, throttled: bool) {
    let mut link = shared.link();
    if throttled {
        link.report.throttle(sent);
    } else {
        link.report.accepted += 1;
        link.report.answer(sent, false);
    }
}

/// A link whose script reads its clock from the key `clock`.
fn on_clock_key(server: &RedisServer) -> Shared {
    let text = RESERVE.replace(
        "local clock = redis.call('TIME')",
        "local clock = {'0', redis.call('GET', 'clock')}",
    );
    assert_ne!(text, RESERVE, "the script reads its clock elsewhere");
    let config = SharedBudget::redis(&server.url())
        .unwrap()
        .timeout(Duration::from_secs(5));
    Shared {
        script: redis::Script::new(&text),
        ..Shared::new(config, "fleet", &[], true)
    }
}

/// Runs `processes`, each asking for up to `demand` requests a second, for `seconds` against
/// `service(t)` (t in seconds), and returns what was seen after `from` seconds.
async fn run(
    processes: usize,
    demand: f64,
    service: impl Fn(f64) -> Service,
    seconds: f64,
    from: f64,
    draw: u64,
) -> Seen {
    let server = RedisServer::start().expect("redis-server");
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut rng = fastrand::Rng::with_seed(draw);
    let mut fleet: Vec<Process> = (0..processes)
        .map(|i| Process {
            shared: on_clock_key(&server),
            // Started a few milliseconds apart.
            next: 1_000_000 + i64::try_from(i).unwrap() * 7_000,
            coming: VecDeque::new(),
        })
        .collect();
    let gap = (1e6 / demand) as i64;
    let (end, from) = (
        (seconds * 1e6) as i64 + 1_000_000,
        (from * 1e6) as i64 + 1_000_000,
    );
    let (mut tokens, mut bucket_at) = (service(0.0).quota, 1_000_000i64);
    let (mut sent, mut accepted, mut refused) = (0u32, 0u32, 0u32);
    let trace = std::env::var_os("FLEET_TRACE").is_some();
    let mut shown = 0;
    let (mut sent_all, mut refused_all) = (0u32, 0u32);
    loop {
        let (i, now) = fleet
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.next))
            .min_by_key(|&(_, next)| next)
            .unwrap();
        if now >= end {
            break;
        }
        let process = &mut fleet[i];
        while process.coming.front().is_some_and(|a| a.0 <= now) {
            let (_, at, throttled) = process.coming.pop_front().unwrap();
            tell(&process.shared, at, throttled);
        }
        redis::cmd("SET")
            .arg("clock")
            .arg(now)
            .exec_async(&mut connection)
            .await
            .unwrap();
        let booked = process.shared.book().await.expect("Redis answers");
        if trace && now / 250_000 != shown {
            shown = now / 250_000;
            print_state(&mut connection, now, sent_all, refused_all).await;
        }
        let slot = now + i64::try_from(booked.wait.as_micros()).unwrap();
        // The service, at the slot: the gateway first, then the bucket the neighbour shares.
        let at = service((slot - 1_000_000) as f64 / 1e6);
        let elapsed = (slot - bucket_at).max(0) as f64 / 1e6;
        tokens = (tokens + elapsed * (at.quota - at.neighbour)).min(at.quota);
        bucket_at = bucket_at.max(slot);
        let throttled = if rng.f64() < at.noise {
            true
        } else if tokens >= 1.0 {
            tokens -= 1.0;
            false
        } else {
            true
        };
        process
            .coming
            .push_back((slot + LATENCY_US, slot, throttled));
        sent_all += 1;
        refused_all += u32::from(throttled);
        process.next = slot.max(now + gap);
        if slot >= from && slot < end {
            sent += 1;
            if throttled {
                refused += 1;
            } else {
                accepted += 1;
            }
        }
    }
    let span = (end - from) as f64 / 1e6;
    Seen {
        sent: f64::from(sent) / span,
        accepted: f64::from(accepted) / span,
        refused: f64::from(refused) / f64::from(sent.max(1)),
    }
}

/// The fleet's state at `now`, on one line.
async fn print_state(
    connection: &mut redis::aio::MultiplexedConnection,
    now: i64,
    sent: u32,
    refused: u32,
) {
    let state: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("iotda-budget:{fleet}")
        .query_async(connection)
        .await
        .unwrap();
    let field = |k: &str| {
        state
            .iter()
            .find(|(f, _)| f == k)
            .map_or("-".into(), |(_, v)| v.chars().take(8).collect::<String>())
    };
    let fields = [
        "rate", "noise", "quota", "pl", "ph", "lr", "ln", "hr", "hn", "hs",
    ];
    let shown: Vec<String> = fields.iter().map(|f| format!("{f} {}", field(f))).collect();
    eprintln!(
        "{:6.2} {} sent {sent} refused {refused}",
        now as f64 / 1e6 - 1.0,
        shown.join(" ")
    );
}

fn steady(quota: f64, neighbour: f64, noise: f64) -> impl Fn(f64) -> Service {
    move |_| Service {
        quota,
        neighbour,
        noise,
    }
}

#[tokio::test]
async fn a_fleet_behind_a_gateways_refusals_keeps_its_rate() {
    if RedisServer::start().is_none() {
        return;
    }
    for noise in [0.1, 0.2, 0.3] {
        for draw in [1, 2, 3] {
            // Four processes asking for 10 a second each, no quota near: only the gateway.
            let seen = run(4, 10.0, steady(1000.0, 0.0, noise), 60.0, 20.0, draw).await;
            assert!(
                seen.sent >= 0.85 * 40.0,
                "{noise} refused, draw {draw}: {seen:?}"
            );
            assert!(
                (seen.refused - noise).abs() < 0.05,
                "{noise} refused, draw {draw}: {seen:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_fleets_quota_is_found_and_kept_with_few_refused() {
    if RedisServer::start().is_none() {
        return;
    }
    for (processes, quota) in [(4u8, 40.0), (8, 40.0), (4, 10.0), (2, 3.0)] {
        for draw in [1, 2] {
            // Asking for twice the quota.
            let demand = 2.0 * quota / f64::from(processes);
            let seen = run(
                usize::from(processes),
                demand,
                steady(quota, 0.0, 0.0),
                90.0,
                15.0,
                draw,
            )
            .await;
            let at = format!("{processes} processes, quota {quota}, draw {draw}: {seen:?}");
            assert!(seen.refused <= 0.05, "{at}");
            assert!(seen.accepted >= 0.85 * quota, "{at}");
        }
    }
}

#[tokio::test]
async fn a_fleet_keeps_what_a_neighbour_leaves_and_a_quota_halved() {
    if RedisServer::start().is_none() {
        return;
    }
    for draw in [1, 2] {
        // A neighbour spends 30 of 40 a second.
        let seen = run(4, 10.0, steady(40.0, 30.0, 0.0), 90.0, 15.0, draw).await;
        assert!(seen.refused <= 0.1, "neighbour, draw {draw}: {seen:?}");
        assert!(
            seen.accepted >= 0.8 * 10.0,
            "neighbour, draw {draw}: {seen:?}"
        );
        // The quota halves 30 s in.
        let halved = |t: f64| Service {
            quota: if t < 30.0 { 40.0 } else { 20.0 },
            neighbour: 0.0,
            noise: 0.0,
        };
        let seen = run(4, 20.0, halved, 90.0, 45.0, draw).await;
        assert!(seen.refused <= 0.05, "halved, draw {draw}: {seen:?}");
        assert!(
            seen.accepted >= 0.85 * 20.0,
            "halved, draw {draw}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_fleet_behind_a_quota_and_a_gateway_keeps_the_quota() {
    if RedisServer::start().is_none() {
        return;
    }
    for draw in [1, 2, 3] {
        // A quota and refusals at any rate together: probes under the quota find the noise,
        // and the rate climbs to the quota and past it before the next one. The fleet keeps
        // most of the quota, far from the floor AWS's rule sinks to.
        let seen = run(4, 20.0, steady(40.0, 0.0, 0.1), 90.0, 15.0, draw).await;
        assert!(seen.accepted >= 0.65 * 40.0, "draw {draw}: {seen:?}");
        assert!(seen.refused <= 0.1 + 0.2, "draw {draw}: {seen:?}");
    }
}

/// One process on the clock key, driven step by step.
struct Stepped {
    shared: Shared,
    connection: redis::aio::MultiplexedConnection,
    now: i64,
}

impl Stepped {
    async fn new(server: &RedisServer) -> Self {
        let client = redis::Client::open(server.url()).unwrap();
        Self {
            shared: on_clock_key(server),
            connection: client.get_multiplexed_async_connection().await.unwrap(),
            now: 1_000_000,
        }
    }

    /// Books at the current time, and moves it to the slot booked.
    async fn book(&mut self) -> super::Booked {
        redis::cmd("SET")
            .arg("clock")
            .arg(self.now)
            .exec_async(&mut self.connection)
            .await
            .unwrap();
        let booked = self.shared.book().await.expect("Redis answers");
        self.now += i64::try_from(booked.wait.as_micros()).unwrap();
        booked
    }

    fn answer(&self, sent: i64, throttled: bool) {
        tell(&self.shared, sent, throttled);
    }

    async fn probing(&mut self) -> bool {
        let pl: Option<f64> = redis::cmd("HGET")
            .arg("iotda-budget:{fleet}")
            .arg("pl")
            .query_async(&mut self.connection)
            .await
            .unwrap();
        pl.is_some_and(|pl| pl > 0.0)
    }

    /// Engages the fleet's limiter at 20 requests a second, as a cut from what the service
    /// accepted in the fleet's first moments, and books every slot, answered as `answer` says
    /// for the nth, until its probe has a verdict. Returns the throttle's send time, and how
    /// many were accepted since.
    async fn engage_at_20(&mut self, answer: impl Fn(u32) -> Option<bool>) -> (i64, u32) {
        // Booked at will first, so that the fleet's booked rate is above what was accepted.
        for _ in 0..5 {
            self.book().await;
            self.now += 1_000;
        }
        for _ in 0..20 {
            self.answer(self.now, false);
        }
        self.book().await;
        let sent = self.now;
        self.answer(sent, true);
        let booked = self.book().await;
        assert!(booked.cut);
        let rate = booked.rate.expect("engaged");
        assert!((rate - 20.0).abs() < 0.5, "{rate}");
        let (mut n, mut accepted) = (0, 0);
        while self.probing().await {
            if let Some(throttled) = answer(n) {
                self.answer(self.now, throttled);
                accepted += u32::from(!throttled);
            }
            n += 1;
            self.book().await;
            assert!(n < 1_000, "no verdict");
        }
        (sent, accepted)
    }
}

#[tokio::test]
async fn throttles_of_slots_booked_before_a_cut_do_not_cut_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut a = Stepped::new(&server).await;
    // Every request of the probe accepted: it finds the quota where the service accepted.
    a.engage_at_20(|_| Some(false)).await;
    let rate = a.shared.last().unwrap().rate.unwrap();
    // A request sent a moment before the slot booked with the verdict was booked before it,
    // and its throttle is of the episode the probe judged.
    a.answer(a.now - 1_000, true);
    assert!(!a.book().await.cut, "cut again");
    // One sent later was booked after it: the rate is still too high.
    a.answer(a.now + (2e6 / rate) as i64, true);
    a.now += (2e6 / rate) as i64;
    assert!(a.book().await.cut);
}

#[tokio::test]
async fn a_cut_starts_from_what_the_service_accepted_since_the_cut_before() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut a = Stepped::new(&server).await;
    // The fleet books all its rate, and the service accepts one request in two (the others'
    // answers are not in yet), through the probe and 1.2 s past it. Then a throttle: the
    // service's bucket was empty at both throttles, so it showed its rate, what it accepted
    // in between, over that time.
    let half = |n: u32| n.is_multiple_of(2).then_some(false);
    let (first, mut accepted) = a.engage_at_20(half).await;
    let until = a.now + 1_200_000;
    let mut n = 0u32;
    while a.now < until {
        if n.is_multiple_of(2) {
            a.answer(a.now, false);
            accepted += 1;
        }
        n += 1;
        a.book().await;
    }
    let sent = a.now;
    a.answer(sent, true);
    let after = a.book().await;
    assert!(after.cut);
    let rate = after.rate.unwrap();
    let shown = f64::from(accepted) / ((sent - first) as f64 / 1e6);
    assert!(
        (rate - 0.7 * shown).abs() < 0.1 * shown,
        "cut to {rate}, from {shown} accepted a second"
    );
}
