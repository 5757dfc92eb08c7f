//! Restore: choose a recovery point, show what will be replaced, receive it
//! next to the destination, check both digests, and only then apply it.
//! `drp-agent restore` and `drp restore` both go through here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::manifest::Manifest;
use crate::pipeline;
use crate::progress::{Event, Reporter};
use crate::repository::Repository;
use crate::source::{Destination, Source};
use crate::{Error, Result};

/// Which recovery point to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest committed point.
    Latest,
    /// A point by id.
    Id(String),
    /// The newest point consistent strictly before this time (e.g. before a
    /// bad migration ran).
    Before(DateTime<Utc>),
}

/// What a restore will do, shown before anything changes.
pub struct Plan {
    pub host: String,
    pub export: String,
    pub manifest: Manifest,
    pub repository: Repository,
    pub destination: Destination,
    /// What exists at the destination and would be replaced.
    pub replaces: Option<String>,
    /// Targets that could not be searched, damaged manifests: said, not hidden.
    pub notes: Vec<String>,
}

impl Plan {
    /// Data written after the point's consistency time is lost by restoring
    /// it: the window up to `until` (the failure time, or now).
    pub fn data_loss_window(&self, until: DateTime<Utc>) -> chrono::Duration {
        until - self.manifest.consistency_time
    }
}

pub struct Report {
    pub id: String,
    pub target: String,
    pub destination: String,
    pub raw_bytes: u64,
    pub seconds: f64,
}

/// Finds the point `selector` designates, searching the repositories in order.
pub async fn find(
    repos: &[Repository],
    host: &str,
    export: &str,
    selector: &Selector,
) -> Result<(Repository, Manifest, Vec<String>)> {
    let mut notes = Vec::new();
    let mut best: Option<(Repository, Manifest)> = None;
    for repo in repos {
        let listing = match repo.list(host, export).await {
            Ok(l) => l,
            Err(e) => {
                notes.push(format!("target `{}` skipped: {e}", repo.name()));
                continue;
            }
        };
        for d in &listing.damaged {
            notes.push(format!(
                "target `{}`: damaged manifest {} ignored: {}",
                repo.name(),
                d.object,
                d.message
            ));
        }
        let candidate = match selector {
            Selector::Latest => listing.points.last(),
            Selector::Id(id) => listing.points.iter().find(|m| &m.id == id),
            Selector::Before(t) => listing
                .points
                .iter()
                .rev()
                .find(|m| m.consistency_time < *t),
        };
        if let Some(m) = candidate {
            let better = match &best {
                None => true,
                Some((_, b)) => m.consistency_time > b.consistency_time,
            };
            if better {
                best = Some((repo.clone(), m.clone()));
            }
        }
    }
    match best {
        Some((repo, m)) => Ok((repo, m, notes)),
        None => {
            let what = match selector {
                Selector::Latest => "no recovery point".to_string(),
                Selector::Id(id) => format!("no recovery point `{id}`"),
                Selector::Before(t) => {
                    format!("no recovery point consistent before {}", t.to_rfc3339())
                }
            };
            let mut msg = format!("{what} for {host}/{export}");
            if !notes.is_empty() {
                msg += &format!(" ({})", notes.join("; "));
            }
            Err(Error::NotFound(msg))
        }
    }
}

pub async fn plan(
    repos: &[Repository],
    host: &str,
    export: &str,
    selector: &Selector,
    source: Arc<dyn Source>,
    to: Option<&str>,
) -> Result<Plan> {
    let (repository, manifest, notes) = find(repos, host, export, selector).await?;
    let destination = match to {
        Some(t) => source.destination(t),
        None => source.default_destination(),
    };
    let (src, dest) = (source.clone(), destination.clone());
    let replaces = tokio::task::spawn_blocking(move || src.existing(&dest))
        .await
        .map_err(|e| Error::Failed(format!("inspecting the destination stopped: {e}")))??;
    Ok(Plan {
        host: host.to_string(),
        export: export.to_string(),
        manifest,
        repository,
        destination,
        replaces,
        notes,
    })
}

/// Applies a plan. Existing data is replaced only when `confirmed`; the point
/// is fully received and verified before the destination is touched.
pub async fn execute(
    plan: &Plan,
    source: Arc<dyn Source>,
    confirmed: bool,
    workdir: Option<PathBuf>,
    progress: Reporter,
) -> Result<Report> {
    if plan.replaces.is_some() && !confirmed {
        return Err(Error::NotConfirmed {
            destination: plan.destination.to_string(),
        });
    }
    let started = Instant::now();
    let workdir = workdir.unwrap_or_else(std::env::temp_dir);
    let destination = plan.destination.clone();
    progress.event(Event::Started {
        task: format!("restore {} to {}", plan.manifest.id, plan.destination),
        total: Some(plan.manifest.stored.size),
    });
    let src = source.clone();
    let staged = pipeline::read_verified(
        &plan.repository.target,
        &plan.manifest,
        progress.clone(),
        move |raw| src.stage(raw, &destination, &workdir).map_err(Error::from),
    )
    .await;
    progress.event(Event::Finished);
    let staged = staged?;
    tokio::task::spawn_blocking(move || staged.commit())
        .await
        .map_err(|e| Error::Failed(format!("loading stopped: {e}")))??;
    Ok(Report {
        id: plan.manifest.id.clone(),
        target: plan.repository.name().to_string(),
        destination: plan.destination.to_string(),
        raw_bytes: plan.manifest.raw.size,
        seconds: started.elapsed().as_secs_f64(),
    })
}
