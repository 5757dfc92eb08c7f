//! Restore an export's recovery point through `drp_core`: the same
//! path as `drp restore`, digests verified before anything is replaced.
//!
//! With `from_host:`, the point is another host's (a primary's export, read
//! from this policy's targets), restored into this policy's `into:` export:
//! how a standby is rebuilt from the primary's off-site repository.
//!
//! With `paths:`, only those folders or files of an incremental tree export
//! come back (the same restore as `drp-agent restore --path`), into a folder
//! beside the tree unless `to:` names one: an album, not the library.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid, RestoredPoint};
use drp_core::config::{Policy, SourceConfig};
use drp_core::restore::{Restore, Selector};
use drp_core::source::directory::{Mode, incremental};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    pub export: String,
    /// `before_failure` (default: the newest point consistent before the
    /// failure), `latest`, or a point id.
    #[serde(default = "default_point")]
    pub point: String,
    /// A database name or path instead of the source itself.
    pub to: Option<String>,
    /// Another export of the same kind whose source receives the point
    /// (a standby's database, on another server).
    pub into: Option<String>,
    /// Only this target.
    pub from: Option<String>,
    /// Another host whose export `export` is restored (into `into`, from
    /// this policy's targets).
    pub from_host: Option<String>,
    /// Only these folders or files of an incremental tree export, relative
    /// to the tree's root.
    #[serde(default)]
    pub paths: Vec<String>,
}

fn default_point() -> String {
    "before_failure".into()
}

impl Action for RestoreBackup {
    fn describe(&self) -> String {
        let to = self
            .to
            .as_deref()
            .map(|t| format!(" into {t}"))
            .unwrap_or_default();
        let into = self
            .into
            .as_deref()
            .map(|e| format!(" into the source of `{e}`"))
            .unwrap_or_default();
        let of = self
            .from_host
            .as_deref()
            .map(|h| format!("{h}'s "))
            .unwrap_or_default();
        let paths = match self.paths.as_slice() {
            [] => String::new(),
            paths => format!(", only {}", paths.join(", ")),
        };
        format!(
            "restore {of}`{}` ({}){paths}{into}{to}",
            self.export, self.point
        )
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        self.validate_paths(policy)?;
        if let Some(host) = &self.from_host {
            return self.validate_from_host(policy, host);
        }
        let Some(e) = policy.exports.get(&self.export) else {
            return Err(Invalid::unknown_export(&self.export, policy));
        };
        if let Some(t) = &self.from
            && !e.targets.contains(t)
        {
            return Err(Invalid::NotOnTarget {
                export: self.export.clone(),
                target: t.clone(),
            });
        }
        if let Some(into) = &self.into {
            let Some(other) = policy.exports.get(into) else {
                return Err(Invalid::unknown_export(into, policy));
            };
            if into == &self.export || other.source.kind() != e.source.kind() {
                return Err(Invalid::NotInto {
                    export: self.export.clone(),
                    into: into.clone(),
                });
            }
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let policy = &ctx.policy;
            // The point's own source, or another export's (a standby's).
            let destination = match &self.into {
                Some(into) => policy.export(into)?,
                None => policy.export(&self.export)?,
            };
            // Another host's points are on the receiving export's targets.
            let names = match (&self.from, &self.from_host) {
                (Some(t), _) => vec![t.clone()],
                (None, Some(_)) => destination.targets.clone(),
                (None, None) => policy.export(&self.export)?.targets.clone(),
            };
            let repos: Vec<_> = drp_core::repository::open_targets(policy, &names)
                .await
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .collect();
            if repos.is_empty() {
                return Err(ActionError::failed(format!(
                    "no target of `{}` is reachable",
                    self.export
                )));
            }
            let selector = match self.point.as_str() {
                "before_failure" => Selector::Before(ctx.t_fail),
                "latest" => Selector::Latest,
                id => Selector::Id(id.to_string()),
            };
            let mut config = destination.source.clone();
            if !self.paths.is_empty() {
                // Checked by `validate`, which the engine and a serving
                // agent both run first.
                let SourceConfig::Directory(c) = &mut config else {
                    return Err(ActionError::failed(
                        "`paths:` restores part of an incremental tree export only",
                    ));
                };
                c.restore_paths = self.paths.clone();
            }
            let source: Arc<dyn drp_core::source::Source> =
                Arc::from(drp_core::source::build(&config, &policy.base_dir));
            let host = self.from_host.as_deref().unwrap_or(&policy.host);
            let restore = Restore::new(&repos, host, &self.export, source)
                .to(self.to.clone())
                .policy(Some(policy))
                .workdir(ctx.workdir.clone());
            let planned = restore.plan(&selector).await?;
            let plan = planned.plan();
            if plan.manifest.kind != destination.source.kind().name() {
                return Err(ActionError::failed(format!(
                    "{host}'s point {} is a {} export; `{}` is {}: nothing was restored",
                    plan.manifest.id,
                    plan.manifest.kind,
                    self.into.as_deref().unwrap_or(&self.export),
                    destination.source.kind().name()
                )));
            }
            let report = planned.execute(true).await?;
            ctx.restored
                .lock()
                .expect("restored lock")
                .push(RestoredPoint {
                    export: self.export.clone(),
                    id: plan.manifest.id.clone(),
                    target: report.target.clone(),
                    consistency_time: report
                        .replaced
                        .replayed
                        .as_ref()
                        .and_then(|r| r.reached)
                        .unwrap_or_else(|| plan.reaches()),
                });
            let replaced = match (&report.replaced.kept, &report.replaced.dropped) {
                (Some(kept), _) => format!("; the replaced data is kept as {kept}"),
                (None, Some(dropped)) => format!("; the replaced data ({dropped}) was dropped"),
                (None, None) => String::new(),
            };
            let replayed = match &report.replaced.replayed {
                Some(r) => format!(
                    ", its WAL replayed to {} (timeline {})",
                    r.reached.map_or("-".into(), |t| t.to_rfc3339()),
                    r.timeline
                ),
                None => String::new(),
            };
            let only = match self.paths.as_slice() {
                [] => String::new(),
                paths => format!(" ({} only)", paths.join(", ")),
            };
            Ok(format!(
                "restored {}{only} (consistent at {}{replayed}) from `{}` into {} in {:.1}s{replaced}",
                report.id,
                plan.manifest.consistency_time.to_rfc3339(),
                report.target,
                report.destination,
                report.seconds
            ))
        })
    }
}

impl RestoreBackup {
    /// `paths:` restores part of an incremental tree export (the one that
    /// receives the point: `into:` or `export`), each path inside the tree,
    /// never over the whole tree itself (that would replace the tree with
    /// those paths alone).
    fn validate_paths(&self, policy: &Policy) -> Result<(), Invalid> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let receiving = self.into.as_deref().unwrap_or(&self.export);
        let invalid = |why: String| Invalid::Paths {
            export: receiving.to_string(),
            why,
        };
        let Some(e) = policy.exports.get(receiving) else {
            // Named by the other checks.
            return Ok(());
        };
        let tree = match &e.source {
            SourceConfig::Directory(c) if c.mode == Mode::Incremental => {
                drp_core::config::resolve_relative(&policy.base_dir, &c.path)
            }
            other => {
                return Err(invalid(format!(
                    "it is a {} export; only an incremental tree export (`kind: directory, mode: incremental`) \
                     restores some paths",
                    match other {
                        SourceConfig::Directory(_) => "tar directory".to_string(),
                        other => other.kind().name().to_string(),
                    }
                )));
            }
        };
        for p in &self.paths {
            if incremental::restore_path(p).is_err() {
                return Err(invalid(format!(
                    "`{p}` is not a path inside the tree: give a folder or file relative to the tree's root, \
                     without `..` or wildcards (for example `Artist/Album/`)"
                )));
            }
        }
        if let Some(to) = &self.to
            && drp_core::config::resolve_relative(&policy.base_dir, Path::new(to)) == tree
        {
            return Err(invalid(format!(
                "`to: {to}` is the tree itself, which would be replaced by these paths alone: \
                 leave `to:` out (they go to a folder beside the tree) or name another folder"
            )));
        }
        Ok(())
    }

    /// `from_host:` names another host; the point lands in `into:`, an
    /// export of this policy whose targets (or `from:`) hold the other
    /// host's points. A whole PostgreSQL cluster of another host is a
    /// warm standby's job (`standby:` and `promote`).
    fn validate_from_host(&self, policy: &Policy, host: &str) -> Result<(), Invalid> {
        let Some(into) = &self.into else {
            return Err(Invalid::FromHostInto(host.to_string()));
        };
        let Some(dest) = policy.exports.get(into) else {
            return Err(Invalid::unknown_export(into, policy));
        };
        if dest.source.kind() == drp_core::source::SourceKind::PostgresCluster {
            return Err(Invalid::FromHostCluster(host.to_string()));
        }
        if let Some(t) = &self.from
            && !policy.targets.contains_key(t)
        {
            return Err(Invalid::NotOnTarget {
                export: into.clone(),
                target: t.clone(),
            });
        }
        Ok(())
    }
}
