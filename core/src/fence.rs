//! Fencing on the host's side: after a failover, the old primary learns
//! that it lost and keeps the services its own policy lists under
//! `fencing:` stopped, until the fence is lifted.
//!
//! The fence records (`records::Fence`) live in the repositories, where a
//! coordinator that could not reach the host left them, and in the host's
//! state, where the last one seen stays when no repository answers: a
//! fenced host stays fenced until it reads a newer record lifting it. The
//! record says only whether the host is fenced; what stopping means is the
//! host's own policy.

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;

use crate::config::Policy;
use crate::config::fencing::FencedService;
use crate::records::Fence;
use crate::{Error, Result, state};

/// How long telling whether a service runs may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long stopping a service may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a pass over the fence found and did.
#[derive(Debug, Clone, Default)]
pub struct Enforced {
    /// The record in force when it fences this host.
    pub fence: Option<Fence>,
    /// Services that were running and were stopped.
    pub stopped: Vec<String>,
    /// Services that could not be told or stopped, with why.
    pub errors: Vec<String>,
    /// Repositories that could not be read (the state's record stands in).
    pub unread: Vec<String>,
}

impl Enforced {
    pub fn fenced(&self) -> bool {
        self.fence.is_some()
    }

    /// One line for a person: why the host is fenced and what was done.
    pub fn summary(&self) -> String {
        let Some(f) = &self.fence else {
            return "not fenced".into();
        };
        let mut s = format!(
            "{} is fenced since {} by {} ({}{})",
            f.host,
            f.at.format("%Y-%m-%d %H:%M:%S UTC"),
            f.by,
            f.reason,
            f.successor
                .as_deref()
                .map(|h| format!("; {h} took its place"))
                .unwrap_or_default()
        );
        if !self.stopped.is_empty() {
            s += &format!("; stopped {}", self.stopped.join(", "));
        }
        for e in &self.errors {
            s += &format!("; {e}");
        }
        s
    }
}

/// The newest of the records in the policy's repositories and in the
/// host's state (kept up to date); `None` when the host was never fenced.
pub async fn newest(policy: &Policy) -> (Option<Fence>, Vec<String>) {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, unreachable) = crate::repository::open_reachable(policy, &names).await;
    let mut unread: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
    let kept = state::load_fence(policy);
    let mut newest = kept.clone();
    for repo in &repos {
        match repo.fences(&policy.host).await {
            Ok(found) => {
                for f in found {
                    if newest.as_ref().is_none_or(|n| f.at > n.at) {
                        newest = Some(f);
                    }
                }
            }
            Err(e) => unread.push(e.to_string()),
        }
    }
    if let Some(f) = &newest
        && kept.as_ref() != Some(f)
        && let Err(e) = state::save_fence(policy, f)
    {
        tracing::warn!(error = %e, "the fence record was not kept in the host's state");
    }
    (newest, unread)
}

/// Reads the fence and, when this host is fenced, stops every listed
/// service found running. Alerts through the policy's channels when it
/// stopped something or could not.
pub async fn enforce(policy: &Policy) -> Enforced {
    let (newest, unread) = newest(policy).await;
    let mut out = Enforced {
        unread,
        ..Enforced::default()
    };
    let Some(fence) = newest.filter(|f| f.fenced) else {
        return out;
    };
    for service in policy.fencing.iter().flat_map(|f| &f.services) {
        match stop_if_running(service).await {
            Ok(true) => out.stopped.push(service.name.clone()),
            Ok(false) => {}
            Err(e) => out.errors.push(e),
        }
    }
    out.fence = Some(fence);
    if !out.stopped.is_empty() || !out.errors.is_empty() {
        tracing::error!("{}", out.summary());
        let title = format!("drp: {} is fenced", policy.host);
        crate::notify::alert(policy, "fencing", &[], title, &out.summary()).await;
    }
    out
}

/// A scheduled turn (`run --due`, the daemon): when the policy declares
/// `fencing`, the fence enforced and, while it holds, logged. A fenced host
/// still backs up and archives what it has.
pub async fn turn(policy: &Policy) {
    if policy.fencing.is_none() {
        return;
    }
    let done = enforce(policy).await;
    if done.fenced() {
        tracing::warn!("{}", done.summary());
    }
}

/// Records `fence` (about this host) in its state and its repositories,
/// then applies it. Used when a coordinator reaches the host itself.
pub async fn record_here(policy: &Policy, fence: &Fence) -> Result<Enforced> {
    if fence.host != policy.host {
        return Err(Error::Usage(format!(
            "a fence record of `{}` cannot be applied on host `{}`",
            fence.host, policy.host
        )));
    }
    state::save_fence(policy, fence)?;
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    save(policy, &names, fence).await;
    Ok(enforce(policy).await)
}

/// Stores `fence` on each of `targets` of `policy`; the targets that could
/// not take it, with why.
pub async fn save(policy: &Policy, targets: &[String], fence: &Fence) -> Vec<String> {
    let (repos, unreachable) = crate::repository::open_reachable(policy, targets).await;
    let mut failed: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
    for repo in &repos {
        if let Err(e) = repo.save_fence(fence).await {
            failed.push(e.to_string());
        }
    }
    failed
}

/// A record written now by `by`.
pub fn now(host: &str, fenced: bool, by: String, reason: String) -> Fence {
    Fence {
        host: host.to_string(),
        fenced,
        at: Utc::now(),
        by,
        reason,
        runbook: None,
        successor: None,
        forced: false,
        witnesses: Vec::new(),
    }
}

/// Whether `service` ran (and was then stopped).
async fn stop_if_running(service: &FencedService) -> std::result::Result<bool, String> {
    let name = &service.name;
    match run(&service.running, PROBE_TIMEOUT).await {
        Ok(false) => return Ok(false),
        Ok(true) => {}
        Err(e) => return Err(format!("cannot tell whether {name} runs: {e}")),
    }
    match run(&service.stop, STOP_TIMEOUT).await {
        Ok(true) => {}
        Ok(false) => return Err(format!("stopping {name} failed")),
        Err(e) => return Err(format!("cannot stop {name}: {e}")),
    }
    match run(&service.running, PROBE_TIMEOUT).await {
        Ok(false) => Ok(true),
        Ok(true) => Err(format!("{name} still runs after it was stopped")),
        Err(e) => Err(format!("cannot tell whether {name} stopped: {e}")),
    }
}

/// Runs `argv` without a shell, its output discarded; whether it exited 0.
/// Killed with its process group when `timeout` passes.
async fn run(argv: &[String], timeout: Duration) -> std::result::Result<bool, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{program}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status.success()),
        Ok(Err(e)) => Err(format!("`{program}`: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: a signal to the process group this command leads.
                unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            }
            Err(format!(
                "`{program}` did not end within {}s",
                timeout.as_secs()
            ))
        }
    }
}
