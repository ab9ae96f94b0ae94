//! The limiter driven through patterns of refusals in virtual time: a client with a steady
//! demand, a service with a quota (a token bucket), refusals of its own at some share, and a
//! neighbour spending part of the quota. No runtime: the time is a number passed in.

use std::collections::VecDeque;

use super::*;

/// How the service answers, second by second.
#[derive(Clone, Copy)]
struct World {
    /// The account's quota (requests a second, burst), if any.
    quota: Option<(f64, f64)>,
    /// From this second on, this quota in place of the first.
    quota_later: Option<(f64, (f64, f64))>,
    /// The share refused whatever the rate, from second `.1` to second `.2`.
    noise: (f64, f64, f64),
    /// Another client of the account, taking this many of the quota's tokens a second.
    neighbour: f64,
}

impl World {
    const CLEAN: Self = Self {
        quota: None,
        quota_later: None,
        noise: (0.0, 0.0, f64::INFINITY),
        neighbour: 0.0,
    };

    fn quota(self, rate: f64, burst: f64) -> Self {
        Self {
            quota: Some((rate, burst)),
            ..self
        }
    }

    fn noise(self, share: f64) -> Self {
        Self {
            noise: (share, 0.0, f64::INFINITY),
            ..self
        }
    }
}

/// What one second of a run saw.
#[derive(Debug, Default, Clone, Copy)]
struct Second {
    sent: u32,
    refused: u32,
    /// The limiter's rate at the end of the second (`None`: idle).
    rate: Option<f64>,
}

/// `demand` requests a second (each waits its turn, as a wait's poll does, up to a second's
/// worth), answered after 20 ms, for `seconds`.
fn run(world: World, demand: f64, seconds: u32, seed: u64) -> Vec<Second> {
    const STEP: f64 = 0.005;
    const STEPS_A_SECOND: u32 = 200;
    const RTT: Duration = Duration::from_millis(20);
    let mut rng = fastrand::Rng::with_seed(seed);
    let t0 = Instant::now();
    let mut limiter = Limiter::new(t0);
    let mut service = world.quota.map_or(0.0, |(_, burst)| burst);
    let mut answers: VecDeque<(Instant, Instant, bool)> = VecDeque::new();
    let mut backlog = 0.0;
    let mut out = vec![Second::default(); seconds as usize];
    for step in 0..seconds * STEPS_A_SECOND {
        let t = f64::from(step) * STEP;
        let now = t0 + Duration::from_secs_f64(t);
        let second = &mut out[(step / STEPS_A_SECOND) as usize];
        while answers.front().is_some_and(|a| a.0 <= now) {
            let (at, sent_at, refused) = answers.pop_front().unwrap();
            limiter.answered(at, sent_at, refused);
        }
        let quota = match world.quota_later {
            Some((from, later)) if t >= from => Some(later),
            _ => world.quota,
        };
        if let Some((rate, burst)) = quota {
            service = (service + rate * STEP).min(burst);
            let taken = (world.neighbour * STEP).min(service);
            service -= taken;
        }
        backlog = (backlog + demand * STEP).min(demand.max(1.0));
        while backlog >= 1.0 {
            if let Some(bucket) = limiter.bucket() {
                bucket.refill(now);
                if bucket.tokens < 1.0 {
                    break;
                }
                bucket.tokens -= 1.0;
            }
            backlog -= 1.0;
            limiter.sent(now);
            let (share, from, to) = world.noise;
            let noisy = t >= from && t < to && rng.f64() < share;
            let refused = noisy
                || match quota {
                    Some(_) if service >= 1.0 => {
                        service -= 1.0;
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
            second.sent += 1;
            second.refused += u32::from(refused);
            answers.push_back((now + RTT, now, refused));
        }
        second.rate = limiter.rate();
    }
    out
}

/// Requests sent, refused and accepted a second over `seconds`.
fn rates(run: &[Second], seconds: std::ops::Range<usize>) -> (f64, f64, f64) {
    let span = &run[seconds];
    let n = f64::from(u32::try_from(span.len()).unwrap());
    let sent: u32 = span.iter().map(|s| s.sent).sum();
    let refused: u32 = span.iter().map(|s| s.refused).sum();
    (
        f64::from(sent) / n,
        f64::from(refused) / n,
        f64::from(sent - refused) / n,
    )
}

/// Runs `world` at `demand` for `seconds` and checks that from second `from` on the service
/// accepted at least 85 % of `open` a second, and refused at most `refused_share` of what was
/// sent.
fn assert_kept(
    world: World,
    demand: f64,
    (seconds, from): (u32, usize),
    seed: u64,
    open: f64,
    refused_share: f64,
) {
    let seconds_seen = run(world, demand, seconds, seed);
    let (sent, refused, accepted) = rates(&seconds_seen, from..seconds_seen.len());
    assert!(
        accepted >= 0.85 * open,
        "{demand}/s wanted, seed {seed}: {accepted:.1} accepted of {open:.1}"
    );
    assert!(
        refused <= refused_share * sent,
        "{demand}/s wanted, seed {seed}: {refused:.1} of {sent:.1} refused"
    );
}

#[test]
fn refusals_at_the_same_share_at_any_rate_do_not_hold_the_rate_down() {
    // A gateway refusing a random share of 5 to 30 % of requests, whatever the rate.
    let mut draws = fastrand::Rng::with_seed(7);
    for seed in 0..12 {
        let share = 0.05 + 0.25 * draws.f64();
        let run = run(World::CLEAN.noise(share), 40.0, 120, seed);
        let (sent, _, _) = rates(&run, 20..120);
        assert!(
            sent >= 0.95 * 40.0,
            "{share:.2} refused: {sent:.1} sent a second of 40 wanted"
        );
        let lowest = run[20..]
            .iter()
            .filter_map(|s| s.rate)
            .fold(f64::INFINITY, f64::min);
        assert!(
            lowest >= 0.5 * 40.0,
            "{share:.2} refused: the rate went down to {lowest:.1}"
        );
    }
}

#[test]
fn a_quota_is_found_and_kept() {
    for (seed, demand) in [(1, 60.0), (2, 100.0), (3, 400.0)] {
        assert_kept(
            World::CLEAN.quota(40.0, 40.0),
            demand,
            (120, 10),
            seed,
            40.0,
            0.05,
        );
    }
}

#[test]
fn a_quota_with_refusals_of_its_own_is_still_found() {
    for (seed, share) in [(4, 0.1), (5, 0.2)] {
        let world = World::CLEAN.quota(40.0, 40.0).noise(share);
        assert_kept(
            world,
            100.0,
            (120, 10),
            seed,
            40.0 * (1.0 - share),
            share + 0.1,
        );
    }
}

#[test]
fn a_neighbour_spending_most_of_the_quota_leaves_the_rest() {
    // A neighbour takes 30 of the account's 40 a second: 10 are left.
    let world = World {
        neighbour: 30.0,
        ..World::CLEAN.quota(40.0, 40.0)
    };
    for seed in [6, 7] {
        assert_kept(world, 40.0, (120, 10), seed, 10.0, 0.1);
    }
}

#[test]
fn refusals_for_ten_seconds_then_none_leave_the_rate_where_it_was() {
    // Everything refused from 10 s to 20 s, then nothing.
    let world = World {
        noise: (1.0, 10.0, 20.0),
        ..World::CLEAN
    };
    let seen = run(world, 40.0, 60, 8);
    let (sent, refused, _) = rates(&seen, 25..60);
    assert!(
        sent >= 0.95 * 40.0,
        "{sent:.1} sent a second after the refusals"
    );
    assert!(refused == 0.0);
    // And half refused for 10 s.
    let world = World {
        noise: (0.5, 10.0, 20.0),
        ..World::CLEAN
    };
    let seen = run(world, 40.0, 60, 9);
    let (sent, _, _) = rates(&seen, 25..60);
    assert!(
        sent >= 0.95 * 40.0,
        "{sent:.1} sent a second after the refusals"
    );
}

#[test]
fn a_quota_halved_mid_run_is_found_again() {
    // 40 a second, then 20 from 60 s on; judged from 70 s.
    let world = World {
        quota_later: Some((60.0, (20.0, 20.0))),
        ..World::CLEAN.quota(40.0, 40.0)
    };
    for seed in [10, 11] {
        assert_kept(world, 60.0, (150, 70), seed, 20.0, 0.05);
    }
}

#[test]
fn a_throttle_sent_before_the_last_cut_does_not_cut_again() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(t0);
    let mut at = t0;
    for _ in 0..200 {
        at += Duration::from_millis(25);
        limiter.sent(at);
        limiter.answered(at, at, false);
    }
    let before = at;
    at += Duration::from_millis(10);
    assert!(matches!(limiter.answered(at, before, true), Change::Cut(_)));
    let once = limiter.rate().unwrap();
    assert!((once - 40.0 * BETA).abs() < 2.0, "{once}");
    for _ in 0..10 {
        assert_eq!(limiter.answered(at, before, true), Change::None);
    }
    assert_eq!(limiter.rate(), Some(once));
}

/// Sends one request every `1 / rate` seconds (40 a second while idle) for `seconds`, each
/// answered at once and refused when `refuse(time)` says so; returns what each answer changed.
fn drive(
    limiter: &mut Limiter,
    at: &mut Instant,
    seconds: f64,
    mut refuse: impl FnMut(Instant) -> bool,
) -> Vec<Change> {
    let end = *at + Duration::from_secs_f64(seconds);
    let mut changes = Vec::new();
    while *at < end {
        *at += Duration::from_secs_f64(1.0 / limiter.rate().unwrap_or(40.0));
        limiter.sent(*at);
        changes.push(limiter.answered(*at, *at, refuse(*at)));
    }
    changes
}

#[test]
fn a_probe_holds_the_cut_then_the_rate_before_it_and_learns_the_noise() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(t0);
    let mut at = t0;
    drive(&mut limiter, &mut at, 5.0, |_| false);
    // One in five refused from here on, whatever the rate.
    let mut n = 0u32;
    let mut one_in_five = move |_| {
        n += 1;
        n.is_multiple_of(5)
    };
    let first = drive(&mut limiter, &mut at, 0.2, &mut one_in_five);
    let cut = limiter.rate().unwrap();
    let cuts: Vec<_> = first.iter().filter(|c| **c != Change::None).collect();
    assert_eq!(cuts, [&Change::Cut(cut)]);
    assert!((cut - 40.0 * BETA).abs() < 2.0, "cut to {cut}");
    // The low phase holds the cut whatever is refused.
    let low = drive(&mut limiter, &mut at, 0.8, &mut one_in_five);
    assert!(low.iter().all(|c| *c == Change::None), "{low:?}");
    assert_eq!(limiter.rate(), Some(cut));
    // Then the rate before it, and a verdict: the same share refused, so noise.
    let high = drive(&mut limiter, &mut at, 3.0, &mut one_in_five);
    assert!(
        high.iter()
            .any(|c| matches!(c, Change::Restored(r) if (r - 40.0).abs() < 2.0)),
        "{high:?}"
    );
    assert!((0.1..=0.3).contains(&limiter.noise), "{}", limiter.noise);
    // Refusals at that share cut no more.
    let after = drive(&mut limiter, &mut at, 30.0, &mut one_in_five);
    assert!(after.iter().all(|c| *c == Change::None));
    assert!(limiter.rate().unwrap() >= 40.0);
}

#[test]
fn a_probe_that_finds_a_quota_settles_under_it() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(t0);
    let mut at = t0;
    // A quota of 30 a second, in bursts of 30.
    let mut service = Bucket::new(30.0, 30.0, t0);
    let (sent, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let mut quota = |now| {
        service.refill(now);
        let no = service.tokens < 1.0;
        if !no {
            service.tokens -= 1.0;
        }
        sent.set(sent.get() + 1);
        refused.set(refused.get() + u32::from(no));
        no
    };
    let changes = drive(&mut limiter, &mut at, 40.0, &mut quota);
    assert!(changes.iter().any(|c| matches!(c, Change::Cut(_))));
    assert!(!changes.iter().any(|c| matches!(c, Change::Restored(_))));
    assert!(limiter.noise < 1e-12, "{}", limiter.noise);
    let found = limiter.quota.unwrap();
    assert!((27.0..=36.0).contains(&found), "found {found}");
    // Over the next 40 s: close to the quota, few refused.
    sent.set(0);
    refused.set(0);
    drive(&mut limiter, &mut at, 40.0, &mut quota);
    let (sent, refused) = (f64::from(sent.get()), f64::from(refused.get()));
    assert!(
        sent - refused >= 0.85 * 30.0 * 40.0,
        "{sent} sent, {refused} refused"
    );
    assert!(refused <= 0.05 * sent, "{sent} sent, {refused} refused");
}

#[test]
fn the_accepted_rate_is_what_the_service_let_through() {
    // Answers from 10 s after the limiter was made: the rate counts from the first of them.
    let t0 = Instant::now();
    let first = t0 + Duration::from_secs(10);
    let mut limiter = Limiter::new(t0);
    assert_eq!(limiter.accepted_rate(), None);
    limiter.answered(first, first, false);
    assert_eq!(limiter.accepted_rate(), None, "not a second of answers yet");
    for i in 1..300u32 {
        let at = first + Duration::from_millis(50) * i;
        limiter.answered(at, at, i % 4 == 0);
        if i == 30 {
            let early = limiter.accepted_rate().unwrap();
            assert!((early - 15.0).abs() < 1.5, "after 1.5 s: {early}");
        }
    }
    let accepted = limiter.accepted_rate().unwrap();
    assert!((accepted - 15.0).abs() < 1.0, "{accepted}");
    assert!((limiter.refused_share() - 0.25).abs() < 0.02);
}

#[test]
fn a_limiter_engaged_at_a_share_grows_from_it() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(t0);
    limiter.engage_at(10.0, t0);
    for i in 0..100u32 {
        limiter.sent(t0 + Duration::from_millis(10) * i);
    }
    limiter.answered(t0, t0, false);
    assert!((limiter.rate().unwrap() - 10.0).abs() < 1e-9);
    let later = t0 + Duration::from_secs(2);
    limiter.answered(later, later, false);
    let grown = limiter.rate().unwrap();
    assert!((grown - (10.0 + scale(10.0) * 8.0)).abs() < 1e-6, "{grown}");
}

#[test]
fn one_of_a_fleet_unseen_cuts_at_every_throttle_and_probes_none() {
    let t0 = Instant::now();
    // The same refusals a probe takes for noise (see the test above) go on cutting here: the
    // process cannot tell its own part in them.
    let mut n = 0u32;
    let mut one_in_five = |_: Instant| {
        n += 1;
        n.is_multiple_of(5)
    };
    let mut alone = Limiter::new(t0);
    let mut at = t0;
    alone.engage_at(20.0, t0);
    let restored = drive(&mut alone, &mut at, 30.0, &mut one_in_five);
    assert!(restored.iter().any(|c| matches!(c, Change::Restored(_))));
    let mut unseen = Limiter::new(t0);
    let mut at = t0;
    unseen.engage_in_a_fleet_unseen(20.0, t0);
    let changes = drive(&mut unseen, &mut at, 30.0, &mut one_in_five);
    assert!(!changes.iter().any(|c| matches!(c, Change::Restored(_))));
    assert!(unseen.probe.is_none());
    let cuts = changes
        .iter()
        .filter(|c| matches!(c, Change::Cut(_)))
        .count();
    assert!(cuts >= 5, "{cuts} cuts");
    assert!(unseen.rate().unwrap() < alone.rate().unwrap() / 2.0);
}

/// Every pattern above on many draws of the noise and of the refusals: a random share of 5 to
/// 30 % alone, with a quota, and with a neighbour spending 30 of the quota's 40; a quota alone
/// at 60 and 400 wanted; a neighbour at 100 wanted; an outage of 10 s; a quota halved. With
/// the neighbour and the noise, 10 answers a second leave a few seconds' share too uncertain
/// to tell 10 points of a quota's refusals from the noise: up to 20 points over it pass.
#[test]
fn every_pattern_holds_on_many_draws() {
    let mut missed = Vec::new();
    for seed in 1000..1040u64 {
        let share = 0.05 + 0.25 * fastrand::Rng::with_seed(seed).f64();
        let seen = run(World::CLEAN.noise(share), 40.0, 120, seed);
        let (sent, _, _) = rates(&seen, 20..120);
        let lowest = seen[20..]
            .iter()
            .filter_map(|s| s.rate)
            .fold(f64::INFINITY, f64::min);
        if sent < 0.95 * 40.0 || lowest < 0.5 * 40.0 {
            missed.push(format!(
                "noise {share:.2}, seed {seed}: {sent:.1} sent, lowest {lowest:.1}"
            ));
        }
        let quota = World::CLEAN.quota(40.0, 40.0);
        let neighbour = World {
            neighbour: 30.0,
            ..quota
        };
        let outage = World {
            noise: (1.0, 10.0, 20.0),
            ..World::CLEAN
        };
        let halved = World {
            quota_later: Some((60.0, (20.0, 20.0))),
            ..quota
        };
        // (pattern, world, wanted, (seconds, judged from), least accepted, most refused share)
        let patterns = [
            ("quota at 60", quota, 60.0, (120, 10), 0.85 * 40.0, 0.05),
            ("quota at 400", quota, 400.0, (120, 10), 0.85 * 40.0, 0.05),
            (
                "quota and noise",
                quota.noise(share),
                100.0,
                (120, 10),
                0.85 * 40.0 * (1.0 - share),
                share + 0.1,
            ),
            (
                "quota and noise at 400",
                quota.noise(share),
                400.0,
                (120, 10),
                0.85 * 40.0 * (1.0 - share),
                share + 0.1,
            ),
            ("neighbour", neighbour, 100.0, (120, 10), 0.85 * 10.0, 0.1),
            (
                "neighbour and noise",
                neighbour.noise(share),
                40.0,
                (120, 10),
                0.85 * 10.0 * (1.0 - share),
                share + 0.2,
            ),
            ("outage", outage, 40.0, (60, 25), 0.95 * 40.0, 0.0),
            ("halved", halved, 60.0, (150, 70), 0.85 * 20.0, 0.05),
        ];
        for (name, world, demand, (seconds, from), least, most) in patterns {
            let seen = run(world, demand, seconds, seed);
            let (sent, refused, accepted) = rates(&seen, from..seen.len());
            if accepted < least || refused > most * sent {
                missed.push(format!(
                    "{name}, share {share:.2}, seed {seed}: {accepted:.1} accepted (least {least:.1}), {refused:.1} of {sent:.1} refused"
                ));
            }
        }
    }
    assert!(missed.is_empty(), "{missed:#?}");
}

/// Quotas of a few requests a second, as a short quota leaves: the curve rises by the same
/// share of the rate as at 20 a second, and more slowly each time a throttle finds the quota
/// where it was, so few are refused once the quota is found.
#[test]
fn a_low_quota_is_kept_with_few_refused() {
    for (quota, demand) in [
        (2.0, 5.0),
        (2.0, 40.0),
        (3.0, 60.0),
        (5.0, 100.0),
        (8.0, 20.0),
    ] {
        assert_kept(
            World::CLEAN.quota(quota, quota),
            demand,
            (120, 5),
            0,
            quota,
            0.1,
        );
    }
}
