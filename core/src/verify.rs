//! Verify: re-read recovery points from their targets and check sizes and
//! both digests, without loading them anywhere.

use rand::seq::SliceRandom;

use crate::manifest::Manifest;
use crate::pipeline;
use crate::progress::{Event, Reporter};
use crate::repository::Repository;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    Latest,
    /// A random sample of this many points per export and target.
    Sample(usize),
}

/// The verdict on one recovery point (or one damaged manifest).
#[derive(Debug)]
pub struct Checked {
    pub target: String,
    pub host: String,
    pub export: String,
    pub id: Option<String>,
    pub object: String,
    pub result: Result<()>,
}

/// Checks one point by reading it back in full, and records that it passed.
/// An encrypted point read without one of its identities is checked as
/// stored (its size and SHA-256, which its signed manifest binds): what a
/// host holding only public keys can prove.
pub async fn check_point(repo: &Repository, manifest: &Manifest, progress: Reporter) -> Result<()> {
    let by = if manifest.encryption.is_some() && repo.keys.identities.is_empty() {
        pipeline::check_stored(&repo.target, manifest, progress).await?;
        "verify-stored"
    } else {
        pipeline::read_verified(
            &repo.target,
            manifest,
            &repo.keys.identities,
            progress,
            |raw| {
                std::io::copy(raw, &mut std::io::sink())
                    .map(|_| ())
                    .map_err(|e| Error::io("reading the recovery point", e))
            },
        )
        .await?;
        "verify"
    };
    if let Err(e) = repo.record_verified(manifest, by).await {
        tracing::warn!(error = %e, "the verification of {} is not recorded", manifest.id);
    }
    Ok(())
}

/// Verifies the points of one export, and reports data objects that no
/// manifest commits once they are older than `grace` (younger ones may be
/// uploads in progress).
pub async fn verify(
    repo: &Repository,
    host: &str,
    export: &str,
    which: Which,
    grace: chrono::Duration,
    progress: Reporter,
) -> Vec<Checked> {
    let mut out = Vec::new();
    let listing = match repo.list(host, export).await {
        Ok(l) => l,
        Err(e) => {
            out.push(Checked {
                target: repo.name().to_string(),
                host: host.to_string(),
                export: export.to_string(),
                id: None,
                object: crate::repository::layout::manifests_dir(host, export),
                result: Err(e),
            });
            return out;
        }
    };
    for d in listing.damaged {
        out.push(Checked {
            target: repo.name().to_string(),
            host: host.to_string(),
            export: export.to_string(),
            id: None,
            object: d.object.clone(),
            result: Err(Error::Manifest {
                target: repo.name().to_string(),
                object: d.object,
                message: d.message,
            }),
        });
    }
    let known: std::collections::HashSet<String> =
        listing.points.iter().map(|m| m.id.clone()).collect();
    if let Ok(objects) = repo.data_objects(host, export).await {
        let now = chrono::Utc::now();
        for (id, object) in objects {
            let old = crate::prune::id_time(&id).is_none_or(|t| now - t > grace);
            if !known.contains(&id) && old {
                out.push(Checked {
                    target: repo.name().to_string(),
                    host: host.to_string(),
                    export: export.to_string(),
                    id: Some(id),
                    result: Err(Error::Manifest {
                        target: repo.name().to_string(),
                        object: object.clone(),
                        message: "no manifest commits this data object (the upload of a killed run, or a lost manifest); it is never restored, and `prune` removes it".into(),
                    }),
                    object,
                });
            }
        }
    }
    let mut points = listing.points;
    match which {
        Which::All => {}
        Which::Latest => points = points.split_off(points.len().saturating_sub(1)),
        Which::Sample(n) => {
            points.shuffle(&mut rand::rng());
            points.truncate(n);
        }
    }
    for m in points {
        progress.event(Event::Started {
            task: format!("verify {} on {}", m.id, repo.name()),
            total: Some(m.stored.size),
        });
        let result = check_point(repo, &m, progress.clone()).await;
        progress.event(Event::Finished);
        out.push(Checked {
            target: repo.name().to_string(),
            host: host.to_string(),
            export: export.to_string(),
            id: Some(m.id.clone()),
            object: m.stored.object.clone(),
            result,
        });
    }
    out
}
