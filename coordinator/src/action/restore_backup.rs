//! Restore an export's recovery point through `drp_core`: the same
//! path as `drp restore`, digests verified before anything is replaced.
//!
//! With `from_host:`, the point is another host's (a primary's export, read
//! from this policy's targets), restored into this policy's `into:` export:
//! how a standby is rebuilt from the primary's off-site repository.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid, RestoredPoint};
use drp_core::config::Policy;
use drp_core::restore::{Restore, Selector};

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
        format!("restore {of}`{}` ({}){into}{to}", self.export, self.point)
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
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
            let source: Arc<dyn drp_core::source::Source> = Arc::from(drp_core::source::build(
                &destination.source,
                &policy.base_dir,
            ));
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
            Ok(format!(
                "restored {} (consistent at {}{replayed}) from `{}` into {} in {:.1}s{replaced}",
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
