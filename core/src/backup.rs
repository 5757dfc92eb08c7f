//! One backup: export a source once and store it on every target of the
//! export, committing each target's copy independently.

use std::time::Instant;

use chrono::Utc;

use crate::config::Policy;
use crate::hooks::{self, Around, HookRun};
use crate::manifest::{self, CompressionInfo, Encryption, Manifest, StoredObject};
use crate::pipeline;
use crate::progress::{Event, Reporter};
use crate::repository;
use crate::source;
use crate::{Error, ExitCode, Result};

/// What happened on one target.
#[derive(Debug)]
pub struct TargetOutcome {
    pub target: String,
    pub location: String,
    pub result: Result<Manifest>,
}

#[derive(Debug)]
pub struct BackupReport {
    pub host: String,
    pub export: String,
    pub id: String,
    pub source_error: Option<Error>,
    pub targets: Vec<TargetOutcome>,
    pub seconds: f64,
    /// The export's hooks that ran around it, in order.
    pub hooks: Vec<HookRun>,
}

impl BackupReport {
    pub fn committed(&self) -> impl Iterator<Item = &Manifest> {
        self.targets.iter().filter_map(|t| t.result.as_ref().ok())
    }

    pub fn exit_code(&self) -> ExitCode {
        let ok = self.committed().count();
        let no_repository = !self.targets.is_empty()
            && self
                .targets
                .iter()
                .all(|t| matches!(t.result, Err(Error::NotFound(_))));
        if ok == 0 && no_repository {
            ExitCode::NotFound
        } else if self.source_error.is_some() || ok == 0 {
            ExitCode::Failed
        } else if ok < self.targets.len() || self.hook_errors().next().is_some() {
            // Committed, but an `after` or `on_error` hook failed: what it
            // was to bring back may not be running.
            ExitCode::Partial
        } else {
            ExitCode::Ok
        }
    }

    /// What failed, as the report says it first: the export's error, or
    /// the first target's.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.source_error {
            return Some(e.to_string());
        }
        let failed = self.targets.iter().find_map(|t| t.result.as_ref().err());
        match (failed, self.committed().next()) {
            (Some(e), _) => Some(e.to_string()),
            (None, None) => Some("no target took the point".into()),
            (None, Some(_)) => None,
        }
    }

    /// The `after` and `on_error` hooks that failed, as their errors (a
    /// failed `before` is the report's `source_error`).
    pub fn hook_errors(&self) -> impl Iterator<Item = &str> {
        self.hooks
            .iter()
            .filter(|h| h.hook != hooks::Hook::Before)
            .filter_map(|h| h.error.as_deref())
    }
}

/// Exports `export_name` once to all of its targets, between the export's
/// hooks: a `before` that fails leaves the export undone (nothing
/// committed, the report's error says why); `on_error` and `after` follow.
pub async fn run(policy: &Policy, export_name: &str, progress: Reporter) -> Result<BackupReport> {
    let export = policy.export(export_name)?;
    let started = Instant::now();
    let hooked = hooks::around(
        policy,
        export.hooks.as_ref(),
        Around::Export(&export.name),
        export_once(policy, export_name, progress),
        |r: &Result<BackupReport>| match r {
            Ok(report) => report.failure(),
            Err(e) => Some(e.to_string()),
        },
    )
    .await;
    let mut report = match hooked.outcome {
        Some(r) => r?,
        None => {
            let mut skipped = new_report(policy, &export.name, Utc::now());
            skipped.source_error = Some(Error::Failed(format!(
                "{}; the backup was not taken and nothing was committed",
                hooked.refused().unwrap_or("the `before` hook failed")
            )));
            skipped
        }
    };
    report.hooks = hooked.runs;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn new_report(policy: &Policy, export: &str, started_at: chrono::DateTime<Utc>) -> BackupReport {
    BackupReport {
        host: policy.host.clone(),
        export: export.to_string(),
        id: manifest::new_id(started_at),
        source_error: None,
        targets: Vec::new(),
        seconds: 0.0,
        hooks: Vec::new(),
    }
}

/// The export itself, to every target.
async fn export_once(
    policy: &Policy,
    export_name: &str,
    progress: Reporter,
) -> Result<BackupReport> {
    let export = policy.export(export_name)?.clone();
    let started = Instant::now();
    let started_at = Utc::now();
    let mut report = new_report(policy, &export.name, started_at);
    let id = report.id.clone();

    let mut live = Vec::new();
    for (name, opened) in crate::repository::open_targets(policy, &export.targets).await {
        match opened {
            Ok(repo) => live.push(repo),
            Err(e) => report.targets.push(TargetOutcome {
                location: policy
                    .targets
                    .get(&name)
                    .map(|t| t.backend().location())
                    .unwrap_or_default(),
                target: name,
                result: Err(e),
            }),
        }
    }
    if live.is_empty() {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let src = source::build(&export.source, &policy.base_dir);
    let describe = src.describe();
    let exported = match source::directory::incremental::settings(&export.source) {
        // An incremental tree: a restic snapshot per target, then the
        // point's descriptor as the stream.
        Some(c) => Ok(source::directory::incremental::export(
            c,
            &policy.base_dir,
            &policy.host,
            &export.name,
            &id,
            live.iter()
                .filter_map(|r| Some((r.name().to_string(), policy.targets.get(r.name())?.clone())))
                .collect(),
            progress.clone(),
        )
        .await),
        None => tokio::task::spawn_blocking(move || src.export()).await,
    };
    let stream = match exported {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            report.source_error = Some(e.into());
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        Err(e) => return Err(Error::Failed(format!("the export task stopped: {e}"))),
    };

    let data = repository::layout::data(&policy.host, &export.name, &id);
    progress.event(Event::Started {
        task: format!(
            "{}: export to {}",
            export.name,
            live.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
        ),
        total: None,
    });
    let outcome = pipeline::export(
        stream,
        export.compression,
        live.iter()
            .map(|r| (r.target.clone(), data.clone()))
            .collect(),
        progress.clone(),
    )
    .await;
    progress.event(Event::Finished);

    let info = match outcome.source {
        Ok(info) => Some(info),
        Err(e) => {
            report.source_error = Some(e);
            None
        }
    };
    for (repo, written) in live.into_iter().zip(outcome.targets) {
        let result = match (&info, written) {
            (_, Err(e)) => Err(e),
            (None, Ok(_)) => Err(Error::target(
                repo.name(),
                "not committed: the export failed",
            )),
            (Some(info), Ok(_)) if incremental_of(info, repo.name()).is_err() => {
                Err(Error::target(
                    repo.name(),
                    format!(
                        "not committed: its restic snapshot was not taken: {}",
                        incremental_of(info, repo.name()).err().unwrap_or_default()
                    ),
                ))
            }
            (Some(info), Ok(stored)) => {
                let m = Manifest {
                    format: manifest::FORMAT,
                    id: id.clone(),
                    host: policy.host.clone(),
                    export: export.name.clone(),
                    kind: export.source.kind().to_string(),
                    source: describe.clone(),
                    consistency_time: info.consistency_time,
                    started_at,
                    finished_at: Utc::now(),
                    raw: outcome.raw.clone(),
                    stored: StoredObject {
                        object: data.clone(),
                        size: stored.size,
                        sha256: stored.sha256,
                    },
                    compression: CompressionInfo {
                        algorithm: "zstd".into(),
                        level: export.compression.level,
                    },
                    tools: info.tools.clone(),
                    agent: repository::agent_id(),
                    wal: info.wal.clone(),
                    binlog: info.binlog.clone(),
                    encryption: Encryption::to(&repo.target.recipients),
                    signed_by: repo.keys.signer.as_ref().map(|s| s.key_id()),
                    incremental: incremental_of(info, repo.name()).ok().flatten(),
                };
                repo.commit(&m).await.map(|_| m)
            }
        };
        report.targets.push(TargetOutcome {
            target: repo.target.name.clone(),
            location: repo.target.location.clone(),
            result,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// An incremental run's snapshot on `target`: none for other exports, an
/// error when the run took none there.
fn incremental_of(
    info: &source::ExportInfo,
    target: &str,
) -> std::result::Result<Option<manifest::Incremental>, String> {
    if info.incremental.is_empty() {
        return Ok(None);
    }
    match info.incremental.get(target) {
        Some(Ok(i)) => Ok(Some(i.clone())),
        Some(Err(e)) => Err(e.clone()),
        None => Err("no snapshot was taken there".into()),
    }
}
