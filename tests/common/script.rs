//! A scripted task source for virtual-time tests: it answers from a list, or as a function of
//! the time since it was made, and records when each poll was sent, relative to when the script
//! was made.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotda_task_watcher::client::{ApiError, ApiErrorKind};
use iotda_task_watcher::watch::TaskSource;
use iotda_task_watcher::{InstanceTask, TaskStatus};
use tokio::time::Instant;

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Step {
    Task(InstanceTask),
    Error(ApiError),
    /// Answers with the inner step after this long.
    Slow(Duration, Box<Step>),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
pub struct Script {
    inner: Arc<Mutex<Inner>>,
}

/// Where the answers come from.
#[allow(clippy::large_enum_variant)]
enum Answers {
    /// Poll by poll; the last one is repeated once the list runs out.
    List {
        steps: VecDeque<Step>,
        last: Option<Step>,
    },
    /// From the time since the script was made.
    Timed(Box<dyn Fn(Duration) -> Step + Send>),
}

struct Inner {
    origin: Instant,
    answers: Answers,
    /// The answers to retries, in turn; none when the script has no retries.
    retry_answers: VecDeque<Step>,
    retries: Vec<Duration>,
    polls: Vec<Duration>,
    in_flight: usize,
    max_in_flight: usize,
}

impl Script {
    /// Answers each poll with the next step, and the last one again once they run out.
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self::with(Answers::List {
            steps: steps.into_iter().collect(),
            last: None,
        })
    }

    /// Answers each poll with `answer` of the time since the script was made.
    pub fn from_fn(answer: impl Fn(Duration) -> Step + Send + 'static) -> Self {
        Self::with(Answers::Timed(Box::new(answer)))
    }

    fn with(answers: Answers) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                origin: Instant::now(),
                answers,
                retry_answers: VecDeque::new(),
                retries: Vec::new(),
                polls: Vec::new(),
                in_flight: 0,
                max_in_flight: 0,
            })),
        }
    }

    /// The time since the script was made.
    pub fn elapsed(&self) -> Duration {
        self.inner.lock().unwrap().origin.elapsed()
    }

    /// Answers retries with these steps in turn (and an error once they run out). A retry
    /// does not move the poll answers: script those as the task goes on after it.
    #[must_use]
    pub fn on_retry(self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.inner.lock().unwrap().retry_answers = steps.into_iter().collect();
        self
    }

    /// When each retry was sent, from the script's creation.
    pub fn retries(&self) -> Vec<Duration> {
        self.inner.lock().unwrap().retries.clone()
    }

    /// When each poll was sent, from the script's creation.
    pub fn polls(&self) -> Vec<Duration> {
        self.inner.lock().unwrap().polls.clone()
    }

    /// When each poll was sent, in seconds from the script's creation.
    pub fn poll_secs(&self) -> Vec<f64> {
        self.polls().iter().map(Duration::as_secs_f64).collect()
    }

    pub fn poll_count(&self) -> usize {
        self.inner.lock().unwrap().polls.len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }

    /// The gaps between polls.
    pub fn delays(&self) -> Vec<Duration> {
        self.polls().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

struct InFlight(Arc<Mutex<Inner>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn play(mut step: Step) -> Result<InstanceTask, ApiError> {
    loop {
        match step {
            Step::Task(t) => return Ok(t),
            Step::Error(e) => return Err(e),
            Step::Slow(d, next) => {
                tokio::time::sleep(d).await;
                step = *next;
            }
            Step::Hang => std::future::pending::<()>().await,
        }
    }
}

impl TaskSource for Script {
    fn retry(&self) -> impl std::future::Future<Output = Result<InstanceTask, ApiError>> + Send {
        let step = {
            let mut s = self.inner.lock().unwrap();
            let at = s.origin.elapsed();
            s.retries.push(at);
            s.retry_answers.pop_front().unwrap_or_else(|| {
                Step::Error(
                    ApiError::new(ApiErrorKind::BadRequest)
                        .with_status(400)
                        .with_error("SCRIPT.NO_RETRY", "the script has no more retries"),
                )
            })
        };
        play(step)
    }

    fn fetch(&self) -> impl std::future::Future<Output = Result<InstanceTask, ApiError>> + Send {
        let inner = self.inner.clone();
        let step = {
            let mut s = inner.lock().unwrap();
            let at = s.origin.elapsed();
            s.polls.push(at);
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            match &mut s.answers {
                Answers::List { steps, last } => {
                    let step = steps.pop_front().or_else(|| last.clone());
                    last.clone_from(&step);
                    step.expect("the script is not empty")
                }
                Answers::Timed(answer) => answer(at),
            }
        };
        async move {
            let _guard = InFlight(inner);
            play(step).await
        }
    }
}

pub fn snapshot(status: &str, progress: Option<i64>) -> InstanceTask {
    let mut t = InstanceTask::default();
    t.task_id = Some(super::TASK.to_owned());
    t.status = Some(TaskStatus::from(status));
    t.progress = progress;
    t
}

pub fn at(status: &str, progress: i64) -> Step {
    Step::Task(snapshot(status, Some(progress)))
}

pub fn failed(detail: &str) -> Step {
    let mut t = snapshot("FAILED", Some(100));
    t.status_detail = Some(detail.to_owned());
    Step::Task(t)
}

pub fn error(kind: ApiErrorKind, status: u16) -> Step {
    Step::Error(ApiError::new(kind).with_status(status))
}

pub fn secs(s: &[f64]) -> Vec<Duration> {
    s.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}
