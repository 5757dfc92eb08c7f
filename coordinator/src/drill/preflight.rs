//! The drill's checks before anything is touched: the targets a restore
//! reads from are reachable, the tools of the restored exports are
//! installed and, unless the drill takes a fresh backup, there is a
//! recovery point to restore.

use crate::fleet::Fleet;
use crate::report::{FailureKind, Report};
use crate::runbook::Runbook;

/// A check before anything is touched.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preflight {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

impl Preflight {
    fn new(check: String, result: Result<String, String>) -> Preflight {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        Preflight { check, ok, detail }
    }
}

/// Targets reachable, a recovery point to restore, tools installed; every
/// other host reachable (through `fleet`, whose sessions the run then
/// uses) and willing to run its steps.
pub async fn preflight(
    runbook: &Runbook,
    backup_first: bool,
    fleet: Option<&Fleet>,
) -> Vec<Preflight> {
    let mut out = targets_reachable(runbook).await;
    if let Some(fleet) = fleet {
        out.extend(hosts_ready(runbook, fleet).await);
    }
    for export in &runbook.restored_exports() {
        out.push(tools_installed(runbook, export).await);
        if !backup_first {
            out.push(recovery_point(runbook, export).await);
        }
    }
    out
}

/// Runs the preflight and notes each check in the report; when one failed,
/// ends the report as failed and says so.
pub(super) async fn passes(
    runbook: &Runbook,
    backup_first: bool,
    fleet: Option<&Fleet>,
    report: &mut Report,
) -> bool {
    let checks = preflight(runbook, backup_first, fleet).await;
    report.notes.extend(
        checks
            .iter()
            .map(|c| format!("preflight {}: {}", c.check, c.detail)),
    );
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    if failed.is_empty() {
        return true;
    }
    super::record::fail(
        report,
        FailureKind::Preflight,
        format!("preflight failed: {}", failed.join("; ")),
    );
    false
}

/// Only the targets a restore reads from must be reachable; the others
/// only keep copies of the report (a failure there is said at the end).
async fn targets_reachable(runbook: &Runbook) -> Vec<Preflight> {
    let policy = &runbook.policy;
    let mut needed: Vec<String> = runbook
        .restored_exports()
        .iter()
        .filter_map(|e| policy.exports.get(e).map(|e| e.targets.clone()))
        .flatten()
        .collect();
    needed.sort();
    needed.dedup();
    drp_core::repository::open_targets(policy, &needed)
        .await
        .into_iter()
        .map(|(name, opened)| {
            let result = match opened {
                Ok(_) => Ok("ok".into()),
                // Reachable, with nothing stored yet.
                Err(drp_core::Error::NotFound(m)) => Ok(m),
                Err(e) => Err(e.to_string()),
            };
            Preflight::new(format!("target `{name}` reachable"), result)
        })
        .collect()
}

/// Each host of the runbook answers, and accepts each of its steps.
pub async fn hosts_ready(runbook: &Runbook, fleet: &Fleet) -> Vec<Preflight> {
    let hosts = runbook.remote_hosts();
    let opened = fleet.link_all(&hosts).await;
    let checks = opened.into_iter().map(|(host, link)| async move {
        let mut out = vec![Preflight::new(
            format!("host `{host}` reachable"),
            link.as_ref()
                .map(|r| {
                    format!(
                        "agent {} serving {} (protocol {})",
                        r.hello.agent_version, r.hello.policy, r.hello.protocol
                    )
                })
                .map_err(|e| e.to_string()),
        )];
        if link.is_ok() {
            for step in runbook
                .all_steps()
                .filter(|s| s.host.as_ref() == Some(&host))
            {
                let result = fleet.validate(&host, step).await.map_err(|e| e.to_string());
                out.push(Preflight::new(
                    format!("step `{}` on `{host}`", step.name),
                    result,
                ));
            }
        }
        out
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The tools the export's source needs to restore.
async fn tools_installed(runbook: &Runbook, export: &str) -> Preflight {
    let policy = &runbook.policy;
    let e = policy.export(export).expect("validated");
    let source = drp_core::source::build(&e.source, &policy.base_dir);
    let result = match tokio::task::spawn_blocking(move || source.check_tools()).await {
        Ok(Ok(v)) if v.is_empty() => Ok("built in".into()),
        Ok(Ok(v)) => Ok(v.join("; ")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    Preflight::new(format!("tools for `{export}`"), result)
}

/// The newest recovery point of the export, on any of its targets.
async fn recovery_point(runbook: &Runbook, export: &str) -> Preflight {
    let policy = &runbook.policy;
    let e = policy.export(export).expect("validated");
    let repos: Vec<_> = drp_core::repository::open_targets(policy, &e.targets)
        .await
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .collect();
    let found = drp_core::restore::find(
        &repos,
        &policy.host,
        export,
        &drp_core::restore::Selector::Latest,
    )
    .await;
    let result = match found {
        Ok((repo, m, _)) => Ok(format!(
            "{} on `{}`, consistent at {}",
            m.id,
            repo.name(),
            m.consistency_time.to_rfc3339()
        )),
        Err(err) => Err(err.to_string()),
    };
    Preflight::new(format!("recovery point of `{export}`"), result)
}
