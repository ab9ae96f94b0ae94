//! The figures of each policy's waits over a workload, and the workload's tables and JSON.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::anchors::{wait, Policy, ANCHORS, OURS};
use crate::common;
use crate::plot::plot;
use crate::until::half;
use crate::workloads::Workload;
use crate::{SLACK, TASKS};

/// Requests per task and detection delays (s) of a set of waits.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    tasks: usize,
    pub(super) requests: f64,
    p50: f64,
    pub(super) p95: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(rows: &[(u64, f64)]) -> Self {
        let mut delays: Vec<f64> = rows.iter().map(|r| r.1).collect();
        Self {
            tasks: rows.len(),
            requests: rows.iter().map(|r| r.0).sum::<u64>() as f64 / rows.len().max(1) as f64,
            p50: common::quantile(&mut delays, 0.50),
            p95: common::quantile(&mut delays, 0.95),
            p99: common::quantile(&mut delays, 0.99),
            max: delays.iter().copied().fold(0.0, f64::max),
        }
    }
}

pub(super) struct Figures {
    pub(super) all: Stats,
    classes: Vec<Stats>,
    resolved: usize,
}

fn simulate(policy: Policy, workload: &Workload) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let handles: Vec<_> = workload
            .tasks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let seed = workload.seed ^ i as u64;
                tokio::spawn(wait(policy, Arc::new(m.clone()), seed))
            })
            .collect();
        let mut all = Vec::new();
        let mut by_class = vec![Vec::new(); workload.classes.len()];
        for (handle, model) in handles.into_iter().zip(&workload.tasks) {
            let (polls, resolved_at) = handle.await.unwrap();
            // A wait that gave up before the end counts its requests, not a delay.
            let delay = resolved_at - model.ends;
            if delay >= 0.0 {
                all.push((polls, delay));
                by_class[model.class].push((polls, delay));
            }
        }
        Figures {
            all: Stats::of(&all),
            classes: by_class.iter().map(|rows| Stats::of(rows)).collect(),
            resolved: all.len(),
        }
    })
}

/// The cheapest point of ours' sweep that beats `anchor`: fewer requests, with p50 and p95
/// each within [`SLACK`] times the anchor's.
fn cheapest_beating<'a>(
    anchor: &Stats,
    ours: &'a [(Policy, Figures)],
) -> Option<&'a (Policy, Figures)> {
    ours.iter()
        .filter(|(_, f)| {
            f.all.requests < anchor.requests
                && f.all.p50 <= anchor.p50 * SLACK
                && f.all.p95 <= anchor.p95 * SLACK
        })
        .min_by(|a, b| a.1.all.requests.total_cmp(&b.1.all.requests))
}

pub(super) fn run(workload: &Workload) -> Value {
    println!(
        "\nworkload {}: {TASKS} simulated tasks (seed {}), virtual time",
        workload.name, workload.seed
    );
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "policy", "req/task", "p50 s", "p95 s", "p99 s", "max s", "resolved"
    );
    let measure = |policies: &[Policy]| -> Vec<(Policy, Figures)> {
        policies
            .iter()
            .map(|&p| {
                let f = simulate(p, workload);
                println!(
                    "{:<22} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9}",
                    p.name(),
                    f.all.requests,
                    f.all.p50,
                    f.all.p95,
                    f.all.p99,
                    f.all.max,
                    f.resolved
                );
                (p, f)
            })
            .collect()
    };
    let ours = measure(&OURS);
    let anchors = measure(&ANCHORS);

    println!("\nby class: requests per task / p95 / max detection delay (s)");
    print!("{:<22}", "policy");
    for (i, class) in workload.classes.iter().enumerate() {
        let tasks = ours[0].1.classes[i].tasks;
        print!(" {:>20}", format!("{class} ({tasks})"));
    }
    println!();
    for (policy, f) in ours.iter().chain(&anchors) {
        print!("{:<22}", policy.name());
        for c in &f.classes {
            print!(
                " {:>20}",
                format!("{:.1} / {:.1} / {:.0}", c.requests, c.p95, c.max)
            );
        }
        println!();
    }

    println!(
        "\nagainst each anchor: the cheapest ours with fewer requests, p50 and p95 within {SLACK}x"
    );
    let mut ratios = Vec::new();
    let mut beaten = Vec::new();
    for (anchor, f) in &anchors {
        match cheapest_beating(&f.all, &ours) {
            Some((by, g)) => {
                let ratio = g.all.requests / f.all.requests;
                ratios.push(ratio);
                println!(
                    "{:<22} by {:<20} requests {:>7.1} / {:>7.1} = {ratio:.2}",
                    anchor.name(),
                    by.name(),
                    g.all.requests,
                    f.all.requests
                );
                beaten.push(json!({"anchor": anchor.name(), "by": by.name(), "ratio": ratio}));
            }
            None => {
                println!("{:<22} not beaten", anchor.name());
                beaten.push(json!({"anchor": anchor.name(), "by": null, "ratio": null}));
            }
        }
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len().max(1) as f64).exp();
    println!(
        "beaten: {} of {}; geometric mean of the ratios: {geomean:.3}",
        ratios.len(),
        anchors.len()
    );

    plot(workload, &ours, &anchors);
    let row = |(policy, f): &(Policy, Figures)| {
        let stats = |s: &Stats| {
            json!({
                "requests_per_task": s.requests,
                "p50_delay_s": s.p50,
                "p95_delay_s": s.p95,
                "p99_delay_s": s.p99,
                "max_delay_s": s.max,
            })
        };
        let mut value = stats(&f.all);
        value["name"] = json!(policy.name());
        value["resolved"] = json!(f.resolved);
        value["classes"] = workload
            .classes
            .iter()
            .zip(&f.classes)
            .map(|(name, s)| {
                let mut v = stats(s);
                v["tasks"] = json!(s.tasks);
                (name.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        value
    };
    json!({
        "tasks": TASKS,
        "seed": workload.seed,
        "until_progress_50": half(workload),
        "policies": ours.iter().chain(&anchors).map(row).collect::<Vec<_>>(),
        "anchors_beaten": beaten,
        "geomean_ratio": geomean,
    })
}
