//! Executes runbook steps: timeouts, retries with exponential backoff,
//! on-failure choices (abort, continue, fallbacks), and the record of every
//! attempt that measurements and reports are built from.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionError, Context};
use crate::runbook::{OnFailure, Phase, Runbook, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
    TimedOut,
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// `inject`, `main`, `fallback` or `cleanup`.
    pub section: String,
    pub name: String,
    pub phase: Option<Phase>,
    /// The inventory host it ran on; `None`: where `drp` ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub action: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub seconds: f64,
    pub attempts: u32,
    pub status: StepStatus,
    pub message: String,
}

impl StepRecord {
    pub fn passed(&self) -> bool {
        self.status == StepStatus::Passed
    }

    /// The host it ran on, `local` being the coordinator's host's name.
    pub fn host_or<'a>(&'a self, local: &'a str) -> &'a str {
        self.host.as_deref().unwrap_or(local)
    }
}

/// What the engine tells the CLI as it goes.
pub enum Event<'a> {
    Started { section: &'a str, step: &'a Step },
    Finished(&'a StepRecord),
}

pub type Observer<'a> = &'a (dyn Fn(Event) + Send + Sync);

/// Runs one step: attempts until one passes or retries run out, waiting
/// longer after each failed attempt.
pub async fn run_step(
    section: &str,
    step: &Step,
    phase: Option<Phase>,
    ctx: &Context,
    observe: Observer<'_>,
) -> StepRecord {
    observe(Event::Started { section, step });
    let started_at = Utc::now();
    let clock = Instant::now();
    let action = step.action.action();
    let mut attempts = 0;
    let (status, message) = loop {
        attempts += 1;
        let result = attempt(step, action, ctx).await;
        let status = status_of(&result);
        let message = match result {
            Ok(msg) => msg,
            Err(why) => why.to_string(),
        };
        if status == StepStatus::Passed || attempts > step.retries {
            break (status, message);
        }
        let delay = backoff(step, attempts);
        tracing::info!(step = step.name, attempts, ?delay, %message, "retrying");
        tokio::time::sleep(delay).await;
    };
    let record = StepRecord {
        section: section.to_string(),
        name: step.name.clone(),
        phase,
        host: step.host.clone(),
        action: action.describe(),
        started_at,
        ended_at: Utc::now(),
        seconds: clock.elapsed().as_secs_f64(),
        attempts,
        status,
        message,
    };
    observe(Event::Finished(&record));
    record
}

/// One attempt of the step's action, here or on its host, given up after
/// the step's timeout (a remote step is then cancelled on its host).
async fn attempt(step: &Step, action: &dyn Action, ctx: &Context) -> Result<String, ActionError> {
    let run = async {
        match (&step.host, &ctx.fleet) {
            (None, _) => action.run(ctx).await,
            (Some(host), Some(fleet)) => fleet.run(host, crate::fleet::request(step), ctx).await,
            (Some(host), None) => Err(ActionError::failed(format!(
                "step on host `{host}` without an inventory"
            ))),
        }
    };
    tokio::time::timeout(step.timeout, run)
        .await
        .unwrap_or(Err(ActionError::TimedOut(step.timeout)))
}

fn status_of(result: &Result<String, ActionError>) -> StepStatus {
    match result {
        Ok(_) => StepStatus::Passed,
        Err(ActionError::TimedOut(_)) => StepStatus::TimedOut,
        Err(_) => StepStatus::Failed,
    }
}

/// The wait before the next attempt: the step's backoff, doubled after each
/// failed attempt, at most 64 times the backoff.
fn backoff(step: &Step, attempts: u32) -> Duration {
    step.backoff.saturating_mul(1 << (attempts - 1).min(6))
}

/// The outcome of a list of steps.
pub struct Outcome {
    pub records: Vec<StepRecord>,
    /// Why the procedure stopped early, if it did.
    pub aborted: Option<Aborted>,
}

/// Why a list of steps stopped early: the step that failed and, when its
/// fallbacks ran, the fallback that failed too.
#[derive(Debug, Clone, PartialEq)]
pub struct Aborted {
    pub step: Failure,
    pub fallback: Option<Failure>,
}

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}", self.step)?;
        match &self.fallback {
            Some(fallback) => write!(f, "; fallback {fallback}"),
            None => Ok(()),
        }
    }
}

/// A step that did not pass, as an abort names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub name: String,
    pub status: StepStatus,
    pub message: String,
}

impl From<&StepRecord> for Failure {
    fn from(r: &StepRecord) -> Failure {
        Failure {
            name: r.name.clone(),
            status: r.status,
            message: r.message.clone(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` {}: {}",
            self.name,
            status_word(self.status),
            self.message
        )
    }
}

/// Runs steps in order, applying each one's on-failure choice; the steps
/// of a phase the runbook runs in parallel start together, and their
/// failures are handled in step order once all have ended.
pub async fn run_steps(
    section: &str,
    steps: &[Step],
    runbook: &Runbook,
    ctx: &Context,
    observe: Observer<'_>,
) -> Outcome {
    let mut records = Vec::new();
    let mut rest = steps;
    while let Some(first) = rest.first() {
        let together = match first.phase {
            Some(p) if runbook.parallel.contains(&p) => {
                rest.iter().take_while(|s| s.phase == Some(p)).count()
            }
            _ => 1,
        };
        let (group, after) = rest.split_at(together);
        rest = after;
        let ran = futures::future::join_all(
            group
                .iter()
                .map(|step| run_step(section, step, step.phase, ctx, observe)),
        )
        .await;
        let mut ran = group.iter().zip(ran);
        while let Some((step, record)) = ran.next() {
            if let Some(aborted) =
                after_step(step, record, runbook, ctx, observe, &mut records).await
            {
                // The steps that ran beside it are recorded too.
                records.extend(ran.map(|(_, r)| r));
                return Outcome {
                    records,
                    aborted: Some(aborted),
                };
            }
        }
    }
    Outcome {
        records,
        aborted: None,
    }
}

/// Records a step and applies its on-failure choice: why the procedure
/// stops, if it does.
async fn after_step(
    step: &Step,
    record: StepRecord,
    runbook: &Runbook,
    ctx: &Context,
    observe: Observer<'_>,
    records: &mut Vec<StepRecord>,
) -> Option<Aborted> {
    let failure = (!record.passed()).then(|| Failure::from(&record));
    records.push(record);
    let failure = failure?;
    match &step.on_failure {
        OnFailure::Continue => None,
        OnFailure::Abort => Some(Aborted {
            step: failure,
            fallback: None,
        }),
        OnFailure::Fallback(names) => run_fallbacks(names, step, runbook, ctx, observe, records)
            .await
            .map(|fallback| Aborted {
                step: failure,
                fallback: Some(fallback),
            }),
    }
}

/// Runs the fallbacks of a failed step in order, in its phase, until one
/// fails; that one, if any.
async fn run_fallbacks(
    names: &[String],
    step: &Step,
    runbook: &Runbook,
    ctx: &Context,
    observe: Observer<'_>,
    records: &mut Vec<StepRecord>,
) -> Option<Failure> {
    for name in names {
        let fb = &runbook.fallbacks[name];
        let r = run_step("fallback", fb, step.phase, ctx, observe).await;
        let failure = (!r.passed()).then(|| Failure::from(&r));
        records.push(r);
        if failure.is_some() {
            return failure;
        }
    }
    None
}

/// Runs steps that must all be attempted whatever happens (cleanup).
pub async fn run_all(
    section: &str,
    steps: &[Step],
    ctx: &Context,
    observe: Observer<'_>,
) -> Vec<StepRecord> {
    let mut out = Vec::new();
    for step in steps {
        out.push(run_step(section, step, None, ctx, observe).await);
    }
    out
}

pub fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Passed => "passed",
        StepStatus::Failed => "failed",
        StepStatus::TimedOut => "timed out",
    }
}

/// The RTO: the time from the failure to the end of the last verify step,
/// measured only when every verify step passed; with the time of each phase
/// as consecutive segments (detect ends when the last detect step ends, …).
pub fn measure_rto(t_fail: DateTime<Utc>, main: &[StepRecord]) -> (Option<f64>, Vec<(Phase, f64)>) {
    let mut phases = Vec::new();
    let mut prev = t_fail;
    for phase in Phase::ALL {
        let end = main
            .iter()
            .filter(|r| r.phase == Some(phase))
            .map(|r| r.ended_at)
            .max();
        if let Some(end) = end {
            phases.push((phase, secs(end - prev)));
            prev = end;
        }
    }
    let verify: Vec<_> = main
        .iter()
        .filter(|r| r.phase == Some(Phase::Verify) && r.section == "main")
        .collect();
    let recovered = !verify.is_empty() && verify.iter().all(|r| r.passed());
    let rto = recovered
        .then(|| secs(verify.iter().map(|r| r.ended_at).max().expect("non-empty") - t_fail));
    (rto, phases)
}

pub fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}
