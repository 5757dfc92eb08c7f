//! Running exports the way production needs: one at a time per export (the
//! lock), with the run recorded in the state, metrics refreshed and people
//! notified; on demand, when due (cron/systemd one-shot), or as a daemon
//! keeping its own schedule.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backup::{self, BackupReport};
use crate::config::Policy;
use crate::export_lock::ExportLock;
use crate::notify;
use crate::progress::Reporter;
use crate::state::{ExportState, Kept};
use crate::{Error, ExitCode, Result, metrics, state};

/// A run of one export and what followed it.
pub struct RunOutcome {
    pub report: BackupReport,
    /// Notification channels that failed (the backup's result stands).
    pub notify_errors: Vec<String>,
}

/// What follows a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upkeep {
    /// The backup only (`backup`, a drill's fresh point).
    None,
    /// Scheduled runs: once the backup committed, read its point back and
    /// apply retention (prune), still under the export's lock.
    VerifyAndPrune,
}

/// Runs one export under its lock, then records, publishes and notifies.
pub async fn run_export(
    policy: &Policy,
    export: &str,
    lock_wait: Duration,
    now: DateTime<Utc>,
    upkeep: Upkeep,
    progress: Reporter,
) -> Result<RunOutcome> {
    policy.export(export)?;
    let (state_dir, host, name) = (
        policy.state_dir.clone(),
        policy.host.clone(),
        export.to_string(),
    );
    let lock = tokio::task::spawn_blocking(move || {
        ExportLock::acquire(&state_dir, &host, &name, lock_wait)
    })
    .await
    .map_err(|e| Error::Failed(format!("lock task stopped: {e}")))??;
    let attempt = now;
    let ping = policy.export(export)?.ping.clone();
    let mut ping_errors = Vec::new();
    if let Some(p) = &ping
        && let Err(e) = p
            .send(
                &policy.base_dir,
                notify::ping::Ping::Start,
                format!("{}/{export}: starting", policy.host),
            )
            .await
    {
        ping_errors.push(format!("ping: {e}"));
    }
    let report = backup::run(policy, export, progress.clone()).await?;
    let mut st = ExportState::load(policy, export);
    st.last_attempt = Some(attempt);
    st.last_duration_seconds = Some(report.seconds);
    let result = match report.exit_code() {
        ExitCode::Ok => state::RunResult::Ok,
        ExitCode::Partial => state::RunResult::Partial,
        _ => state::RunResult::Failed,
    };
    st.last_result = Some(result);
    let errors: Vec<String> = report
        .source_error
        .iter()
        .map(|e| e.to_string())
        .chain(
            report
                .targets
                .iter()
                .filter_map(|t| t.result.as_ref().err().map(|e| e.to_string())),
        )
        .chain(report.hook_errors().map(str::to_string))
        .collect();
    st.last_error = errors.first().cloned();
    if let Some(m) = report.committed().next() {
        // An incremental point: the tree read, and the new bytes it stored.
        st.last_raw_bytes = Some(
            m.incremental
                .as_ref()
                .map_or(m.raw.size, |i| i.bytes_scanned),
        );
        st.last_stored_bytes = Some(
            m.incremental
                .as_ref()
                .map_or(m.stored.size, |i| i.bytes_added),
        );
        if result == state::RunResult::Ok {
            st.last_success = Some(m.finished_at);
        }
    }
    if upkeep == Upkeep::VerifyAndPrune && report.committed().next().is_some() {
        st.last_maintenance = Some(maintain(policy, export, &report, now, progress.clone()).await);
    }
    refresh_points(policy, export, &mut st).await;
    st.save(policy, export)?;
    drop(lock);
    if let Err(e) = metrics::write_textfile(policy, Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
    let message = notify::Message {
        host: policy.host.clone(),
        export: export.to_string(),
        result,
        point: report.committed().next().map(|m| m.id.clone()),
        committed: report
            .targets
            .iter()
            .filter(|t| t.result.is_ok())
            .map(|t| t.target.clone())
            .collect(),
        failed: report
            .targets
            .iter()
            .filter(|t| t.result.is_err())
            .map(|t| t.target.clone())
            .collect(),
        errors,
        seconds: report.seconds,
        at: Utc::now(),
        title: None,
    };
    let mut notify_errors = notify::send(&policy.notify, &policy.base_dir, &message).await;
    if let Some(p) = &ping {
        let which = match result {
            state::RunResult::Ok => notify::ping::Ping::Success,
            _ => notify::ping::Ping::Fail,
        };
        if let Err(e) = p.send(&policy.base_dir, which, message.text()).await {
            ping_errors.push(format!("ping: {e}"));
        }
    }
    for e in &ping_errors {
        tracing::warn!("{e}");
    }
    notify_errors.extend(ping_errors);
    Ok(RunOutcome {
        report,
        notify_errors,
    })
}

/// Reads the new point back on every target that took it (recording the
/// verification `min_verified` counts), then applies retention.
async fn maintain(
    policy: &Policy,
    export: &str,
    report: &BackupReport,
    now: DateTime<Utc>,
    progress: Reporter,
) -> state::Maintenance {
    let mut done = state::Maintenance {
        at: Some(Utc::now()),
        ..Default::default()
    };
    let names: Vec<String> = report
        .targets
        .iter()
        .filter(|t| t.result.is_ok())
        .map(|t| t.target.clone())
        .collect();
    let opened = crate::repository::open_targets(policy, &names).await;
    for (t, (_, repo)) in report
        .targets
        .iter()
        .filter(|t| t.result.is_ok())
        .zip(opened)
    {
        let Ok(manifest) = &t.result else { continue };
        let checked = match repo {
            Ok(repo) => crate::verify::check_point(&repo, manifest, progress.clone()).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => done.verified.push(t.target.clone()),
            Err(e) => done.errors.push(format!("verify on `{}`: {e}", t.target)),
        }
    }
    let pruned = if policy.prune.after_backup {
        crate::prune::prune_export(policy, export, now, false).await
    } else {
        Ok(Vec::new())
    };
    match pruned {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => {
                        done.deleted += t.points.iter().filter(|p| p.deleted).count();
                        done.kept += t.points.iter().filter(|p| p.decision.keep()).count();
                        done.orphans_removed += t.orphans.len();
                        done.errors.extend(
                            t.errors
                                .into_iter()
                                .map(|e| format!("prune on `{}`: {e}", t.target)),
                        );
                    }
                    Err(e) => done.errors.push(format!("prune: {e}")),
                }
            }
        }
        Err(e) => done.errors.push(format!("prune: {e}")),
    }
    for e in &done.errors {
        tracing::warn!(export, "{e}");
    }
    done
}

/// Records each target's point count and the newest point, from the
/// catalogue index's head (a few reads, whatever the number of points).
pub async fn refresh_points(policy: &Policy, export: &str, st: &mut state::ExportState) {
    let Ok(e) = policy.export(export) else { return };
    for (name, opened) in crate::repository::open_targets(policy, &e.targets).await {
        if let Ok(repo) = opened
            && let Ok(summary) = repo.summary(&policy.host, export).await
        {
            st.points.insert(name, summary.points);
            if let Some(newest) = summary.newest
                && st.newest_consistency.is_none_or(|t| t < newest)
            {
                st.newest_consistency = Some(newest);
            }
        }
    }
}

/// The exports due at `now`, with the slot that made each due.
pub fn due_exports(policy: &Policy, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    policy
        .exports
        .values()
        .filter_map(|e| {
            let st = ExportState::load(policy, &e.name);
            e.schedule
                .due(st.last_attempt, now)
                .map(|slot| (e.name.clone(), slot))
        })
        .collect()
}

/// How the daemon stops.
#[derive(Debug, Clone, Copy)]
pub struct DaemonOptions {
    /// How long SIGTERM waits for a running backup before abandoning it.
    pub stop_timeout: Duration,
    pub lock_wait: Duration,
}

/// Work the daemon keeps running beside the schedule for as long as it
/// keeps a policy (the agent's watchdog, whose checks and rungs are runbook
/// actions the core does not know): `None` when the policy asks for none.
pub type Beside = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Keeps the policy's schedule until SIGTERM/SIGINT. SIGHUP reloads the
/// policy (an invalid one is reported and the old one kept). Each pass runs
/// what is due; a backup running at SIGTERM gets `stop_timeout` to finish,
/// then is abandoned cleanly (its tool stopped, nothing committed).
///
/// `beside` is started with the policy in a task of its own, started again
/// with a reloaded policy (one it refuses is reported and the running one
/// kept), and aborted at shutdown, as the archiver is.
pub async fn daemon(
    policy_path: std::path::PathBuf,
    options: DaemonOptions,
    progress: Reporter,
    on_run: impl Fn(&std::result::Result<RunOutcome, Error>, &str) + Send + Sync,
    beside: impl Fn(&Policy) -> Result<Option<Beside>>,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let policy = Arc::new(tokio::sync::RwLock::new(Policy::load(&policy_path)?));
    let (state_dir, host) = {
        let p = policy.read().await;
        (p.state_dir.clone(), p.host.clone())
    };
    let _daemon = ExportLock::daemon(&state_dir, &host)?;
    let mut _beside = beside(&*policy.read().await)?.map(|f| AbortOnDrop(tokio::spawn(f)));
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::io("cannot watch SIGHUP", e))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot watch SIGTERM", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot watch SIGINT", e))?;
    let listen = policy
        .read()
        .await
        .metrics
        .listen
        .unwrap_or_else(|| "127.0.0.1:9464".parse().expect("address"));
    // Bound before the loop, so a taken address is an error at start, not later.
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("cannot serve /metrics on {listen} (set `metrics.listen`)"),
            e,
        )
    })?;
    let server = tokio::spawn(metrics::serve(listener, policy.clone()));
    tracing::info!(%listen, "serving /metrics");
    // WAL is archived beside the schedule, never behind a running backup.
    let archiver = tokio::spawn(crate::archiving::run::archiver(policy.clone()));
    let _archiver = AbortOnDrop(archiver);
    loop {
        let current = policy.read().await.clone();
        // A fenced host keeps its fenced services down at every turn.
        crate::fence::turn(&current).await;
        crate::standby::turn(&current).await;
        for (export, slot) in due_exports(&current, Utc::now()) {
            tracing::info!(export, %slot, "running due export");
            let run = run_export(
                &current,
                &export,
                options.lock_wait,
                Utc::now(),
                Upkeep::VerifyAndPrune,
                progress.clone(),
            );
            tokio::pin!(run);
            let result = tokio::select! {
                r = &mut run => r,
                _ = term.recv() => return stop(run, options, &on_run, &export, server).await,
                _ = int.recv() => return stop(run, options, &on_run, &export, server).await,
            };
            on_run(&result, &export);
        }
        expire_snapshots(&current).await;
        for (export, result) in crate::rehearsal::run_due(&current, Utc::now()).await {
            match result {
                Ok(tested) => {
                    for t in tested {
                        tracing::info!(export, point = t.id, passed = t.passed, "restore test");
                    }
                }
                Err(e) => tracing::warn!(export, error = %e, "restore test not run"),
            }
            if let Err(e) = metrics::write_textfile(&current, Utc::now()) {
                tracing::warn!(error = %e, "metrics textfile not written");
            }
        }
        let now = Utc::now();
        let next = current
            .exports
            .values()
            .filter_map(|e| e.schedule.next(now))
            .min();
        let sleep = next
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600))
            .min(
                current
                    .fencing
                    .as_ref()
                    .map(|f| f.check_every())
                    .unwrap_or(Duration::MAX),
            )
            .min(if current.standby.is_empty() {
                Duration::MAX
            } else {
                crate::standby::CHECK_EVERY
            });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = hup.recv() => match Policy::load(&policy_path) {
                Ok(p) => {
                    tracing::info!("policy reloaded");
                    match beside(&p) {
                        // The one running is aborted as the new one starts.
                        Ok(b) => _beside = b.map(|f| AbortOnDrop(tokio::spawn(f))),
                        Err(e) => tracing::error!(error = %e, "the reloaded policy's watch not started, keeping the previous one"),
                    }
                    *policy.write().await = p;
                }
                Err(e) => tracing::error!(error = %e, "policy not reloaded, keeping the previous one"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    server.abort();
    Ok(())
}

/// Expires the snapshot sets retention no longer keeps; errors are logged
/// (the next pass tries again).
pub async fn expire_snapshots(policy: &Policy) {
    match crate::snapshot::expire_due(policy).await {
        Ok(sets) => {
            for (id, errors) in sets {
                if errors.is_empty() {
                    tracing::info!(set = id, "snapshot set expired");
                } else {
                    tracing::warn!(set = id, "snapshot set not expired: {}", errors.join("; "));
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "snapshot sets not expired"),
    }
}

async fn stop<F: std::future::Future<Output = Result<RunOutcome>>>(
    run: std::pin::Pin<&mut F>,
    options: DaemonOptions,
    on_run: &(impl Fn(&std::result::Result<RunOutcome, Error>, &str) + Send + Sync),
    export: &str,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<()> {
    tracing::info!(export, "stopping: waiting for the running backup");
    match tokio::time::timeout(options.stop_timeout, run).await {
        Ok(result) => on_run(&result, export),
        Err(_) => tracing::warn!(
            export,
            "backup abandoned at shutdown: nothing was committed"
        ),
    }
    server.abort();
    Ok(())
}

/// Stops a background task when its owner returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
