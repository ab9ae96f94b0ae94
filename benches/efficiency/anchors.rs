//! The policies compared: ours at each `max_delay` of its sweep, and the anchors' polling loops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iotda_task_watcher::client::ApiError;
use iotda_task_watcher::watch::PollPolicy;
use iotda_task_watcher::TaskWatcher;
use tokio::time::Instant;

use crate::workloads::{start_wall, Model};
use crate::DEADLINE;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Policy {
    /// Ours with the defaults, but for `max_delay` (seconds) when set.
    Ours(Option<u64>),
    /// `StateChangeConf{Delay: 10s, PollInterval: N}`, as Huawei's provider writes it.
    Terraform(u64),
    /// Smithy waiters with a 2 s minimum and this maximum.
    Smithy(u64),
    /// gax exponential backoff: 1 s initial, x2, this maximum, no jitter.
    GoogleLro(u64),
    /// A poll every N seconds from the start.
    Fixed(u64),
}

impl Policy {
    pub(super) fn name(self) -> String {
        match self {
            Self::Ours(None) => "ours".into(),
            Self::Ours(Some(s)) => format!("ours_max_delay_{s}s"),
            Self::Terraform(s) => format!("terraform_fixed_{s}s"),
            Self::Smithy(s) => format!("smithy_max_{s}s"),
            Self::GoogleLro(s) => format!("google_lro_max_{s}s"),
            Self::Fixed(s) => format!("fixed_{s}s"),
        }
    }

    /// The `max_delay` of an ours policy, in seconds.
    pub(super) fn ours_max_delay(self) -> Option<u64> {
        match self {
            Self::Ours(max) => Some(max.unwrap_or(30)),
            _ => None,
        }
    }
}

/// The sweep of ours, in order of `max_delay`.
pub(super) const OURS: [Policy; 7] = [
    Policy::Ours(Some(5)),
    Policy::Ours(Some(10)),
    Policy::Ours(Some(15)),
    Policy::Ours(Some(20)),
    Policy::Ours(None),
    Policy::Ours(Some(60)),
    Policy::Ours(Some(120)),
];

pub(super) const ANCHORS: [Policy; 12] = [
    Policy::Terraform(5),
    Policy::Terraform(10),
    Policy::Terraform(20),
    Policy::Terraform(30),
    Policy::Terraform(60),
    Policy::Smithy(30),
    Policy::Smithy(60),
    Policy::Smithy(120),
    Policy::GoogleLro(10),
    Policy::GoogleLro(30),
    Policy::GoogleLro(60),
    Policy::Fixed(5),
];

/// Waits for `model` under `policy`; returns the polls sent and when the wait resolved (s).
pub(super) async fn wait(policy: Policy, model: Arc<Model>, seed: u64) -> (u64, f64) {
    let origin = Instant::now();
    let now = move || origin.elapsed().as_secs_f64();
    let polls = Arc::new(AtomicU64::new(0));
    let poll = {
        let (model, polls) = (model.clone(), polls.clone());
        move || {
            polls.fetch_add(1, Ordering::Relaxed);
            model.snapshot(now())
        }
    };
    let sleep = |s: f64| tokio::time::sleep(Duration::from_secs_f64(s.max(0.0)));
    let limit = DEADLINE.as_secs_f64();
    match policy {
        Policy::Ours(max_delay) => {
            let source = move || {
                let task = poll();
                async move { Ok::<_, ApiError>(task) }
            };
            let mut policy = PollPolicy::default().with_jitter_seed(seed);
            if let Some(max) = max_delay {
                policy = policy.with_max_delay(Duration::from_secs(max));
            }
            let _ = TaskWatcher::from_source(source)
                .timeout(DEADLINE)
                .policy(policy)
                .wall_clock(start_wall())
                .await;
        }
        Policy::Terraform(interval) => {
            sleep(10.0).await;
            while !poll().is_terminal() && now() < limit {
                sleep(interval as f64).await;
            }
        }
        Policy::Smithy(max) => {
            // Attempt n waits a random time in [min, min * 2^(n-1)] (max past the ceiling);
            // the last wait is clamped so the final poll lands on the deadline.
            let (min, max) = (2.0f64, max as f64);
            let ceiling = ((max / min).ln() / 2f64.ln()).floor() as u32 + 1;
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut attempt = 0;
            while !poll().is_terminal() {
                attempt += 1;
                let mut delay = if attempt > ceiling {
                    max
                } else {
                    let hi = (min * 2f64.powi(attempt as i32 - 1)).min(max);
                    min + rng.f64() * (hi - min)
                };
                let remaining = limit - now();
                if remaining <= 0.0 {
                    break;
                }
                if remaining - delay <= min {
                    delay = remaining - min;
                }
                sleep(delay).await;
            }
        }
        Policy::GoogleLro(max) => {
            let mut delay = 1.0f64;
            while !poll().is_terminal() && now() < limit {
                sleep(delay).await;
                delay = (delay * 2.0).min(max as f64);
            }
        }
        Policy::Fixed(interval) => {
            while !poll().is_terminal() && now() < limit {
                sleep(interval as f64).await;
            }
        }
    }
    (polls.load(Ordering::Relaxed), now())
}
