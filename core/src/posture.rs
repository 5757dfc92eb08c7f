//! The static posture: what RPO each export's schedule can guarantee, against
//! the policy's objective, said before any disaster. A twice-daily export
//! leaves up to 12 hours of writes unprotected; it cannot meet 30 minutes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Policy;
use crate::config::units::format_duration;
use crate::source::SourceConfig;
use crate::source::postgres::cluster::{Cluster, ClusterConfig};
use crate::state::{ExportState, Kept};

#[derive(Debug, Clone, Serialize)]
pub struct ExportPosture {
    pub export: String,
    pub schedule: String,
    /// Longest gap between two scheduled runs plus the last run's duration.
    pub worst_case_rpo_seconds: u64,
    pub rpo_objective_seconds: Option<u64>,
    /// `None` when the policy sets no RPO objective.
    pub meets_rpo: Option<bool>,
    pub advice: Vec<String>,
}

pub fn assess(policy: &Policy, now: DateTime<Utc>) -> Vec<ExportPosture> {
    policy
        .exports
        .values()
        .map(|e| {
            let rpo = e.objectives(&policy.objectives).rpo.map(|d| d.as_duration());
            if let SourceConfig::PostgresCluster(c) = &e.source {
                return archive_posture(policy, &e.name, c, rpo);
            }
            if let SourceConfig::Mysql(c) = &e.source
                && let Some(b) = &c.binlog
            {
                return binlog_posture(policy, &e.name, c, b.rotate_every.0, rpo);
            }
            let gap = e.schedule.longest_gap(now).unwrap_or(Duration::MAX);
            let run_time = ExportState::load(policy, &e.name)
                .last_duration_seconds
                .map(Duration::from_secs_f64)
                .unwrap_or_default();
            let worst = gap.saturating_add(run_time);
            let meets = rpo.map(|r| worst <= r);
            let mut advice = Vec::new();
            if let (Some(false), Some(r)) = (meets, rpo) {
                let budget = r.saturating_sub(run_time);
                match every(budget) {
                    Some((expr, label)) => advice.push(format!(
                        "export every {label} (`schedule: \"{expr}\"`) to bound the loss to {}",
                        format_duration(r)
                    )),
                    None => advice.push("the objective is shorter than one export takes: exports alone cannot meet it".into()),
                }
                advice.push("take a snapshot before every planned change, so changes never widen the loss".into());
                let continuous = e.source.kind().continuous_archiving();
                advice.push(format!("for seconds of loss, use {continuous}"));
            }
            ExportPosture {
                export: e.name.clone(),
                schedule: e.schedule.expression.clone(),
                worst_case_rpo_seconds: worst.as_secs(),
                rpo_objective_seconds: rpo.map(|r| r.as_secs()),
                meets_rpo: meets,
                advice,
            }
        })
        .collect()
}

/// What a push is allowed on top of `archive_timeout` when no push was
/// measured yet.
const PUSH_ALLOWANCE: Duration = Duration::from_secs(10);

/// The settings to paste into `postgresql.conf`.
fn settings_to_paste(policy: &Policy, export: &str) -> String {
    let path = std::path::absolute(&policy.path).unwrap_or_else(|_| policy.path.clone());
    format!(
        "archive_mode = on; archive_command = 'drp-agent wal push --policy {} --export {export} %p'; archive_timeout = 60s",
        path.display()
    )
}

/// A `postgres-cluster` export: its loss is bounded by WAL archiving, at
/// worst `archive_timeout` plus the time a push takes (the slowest measured
/// lately, or an allowance before any).
fn archive_posture(
    policy: &Policy,
    export: &str,
    config: &ClusterConfig,
    rpo: Option<Duration>,
) -> ExportPosture {
    let mut advice = Vec::new();
    let cluster = Cluster::new(config.clone(), &policy.base_dir);
    let push = push_time(policy, export);
    let (schedule, worst) = match cluster.archive_settings() {
        Err(e) => {
            advice.push(format!(
                "connect to the server to read its archiving settings ({e})"
            ));
            ("WAL archive (settings unknown)".to_string(), Duration::MAX)
        }
        Ok(s) if !s.archiving => {
            advice.push(format!(
                "the server does not archive its WAL with drp (its archive_command is not `drp-agent wal push`): set {} and restart it",
                settings_to_paste(policy, export)
            ));
            ("WAL archive (off)".to_string(), Duration::MAX)
        }
        Ok(s) if s.archive_timeout.is_zero() => {
            advice.push(
                "set archive_timeout = 60s: without it, a quiet server keeps its last transactions in an \
                 unfinished segment for as long as it takes to fill 16 MB"
                    .into(),
            );
            ("WAL archive (archive_timeout 0)".to_string(), Duration::MAX)
        }
        Ok(s) => (
            format!(
                "WAL archive (archive_timeout {})",
                format_duration(s.archive_timeout)
            ),
            s.archive_timeout + push,
        ),
    };
    let meets = rpo.map(|r| worst <= r);
    if let (Some(false), Some(r), true) = (meets, rpo, worst != Duration::MAX) {
        advice.push(format!(
            "lower archive_timeout to {} or less (pushes take up to {})",
            format_duration(r.saturating_sub(push)),
            format_duration(push)
        ));
    }
    ExportPosture {
        export: export.to_string(),
        schedule,
        worst_case_rpo_seconds: worst.as_secs(),
        rpo_objective_seconds: rpo.map(|r| r.as_secs()),
        meets_rpo: meets,
        advice,
    }
}

/// The slowest recent shipment of an export, or the allowance before any.
fn push_time(policy: &Policy, export: &str) -> Duration {
    crate::archiving::spool::Spool::open(policy, export)
        .ok()
        .and_then(|s| {
            let secs: Vec<f64> = s.markers().iter().map(|(_, m)| m.seconds).collect();
            crate::archiving::spool::percentile(&secs, 99.0)
        })
        .map_or(PUSH_ALLOWANCE, Duration::from_secs_f64)
}

/// A MariaDB export whose binary logs the agent ships: at worst the
/// rotation interval plus a shipment (with the daemon running).
fn binlog_posture(
    policy: &Policy,
    export: &str,
    config: &crate::source::mysql::MysqlConfig,
    every: Duration,
    rpo: Option<Duration>,
) -> ExportPosture {
    let mut advice = Vec::new();
    let server = crate::source::mysql::Mysql::new(config.clone(), &policy.base_dir);
    let push = push_time(policy, export);
    let worst = match server.binlog_settings() {
        Ok((true, format)) => {
            if format != "ROW" {
                advice.push(
                    "set binlog_format = ROW: a replay of statement-based logs into a renamed copy can miss \
                     statements that name their database"
                        .into(),
                );
            }
            every + push
        }
        Ok(_) => {
            advice.push(
                "the server does not write binary logs: start mariadbd with --log-bin --binlog-format=ROW \
                 --server-id=1"
                    .into(),
            );
            Duration::MAX
        }
        Err(e) => {
            advice.push(format!(
                "connect to the server to read its binary-log settings ({e})"
            ));
            Duration::MAX
        }
    };
    let meets = rpo.map(|r| worst <= r);
    if let (Some(false), Some(r), true) = (meets, rpo, worst != Duration::MAX) {
        advice.push(format!(
            "rotate more often: `binlog: {{rotate_every: {}}}` (shipments take up to {})",
            format_duration(r.saturating_sub(push)),
            format_duration(push)
        ));
    }
    ExportPosture {
        export: export.to_string(),
        schedule: format!(
            "binary logs, closed every {} (by drp-agent run)",
            format_duration(every)
        ),
        worst_case_rpo_seconds: worst.as_secs(),
        rpo_objective_seconds: rpo.map(|r| r.as_secs()),
        meets_rpo: meets,
        advice,
    }
}

/// The cron expression for the widest regular schedule that fits `budget`.
fn every(budget: Duration) -> Option<(String, String)> {
    let minutes = budget.as_secs() / 60;
    const STEPS: [u64; 10] = [720, 360, 240, 180, 120, 60, 30, 20, 15, 10];
    for step in STEPS {
        if step <= minutes {
            return Some(if step >= 60 {
                (
                    format!("0 */{} * * *", step / 60),
                    format!("{} hours", step / 60).replace("1 hours", "hour"),
                )
            } else {
                (format!("*/{step} * * * *"), format!("{step} minutes"))
            });
        }
    }
    for step in [5u64, 2, 1] {
        if step <= minutes {
            return Some((
                format!("*/{step} * * * *"),
                format!("{step} minutes").replace("1 minutes", "minute"),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_schedule_inside_the_budget() {
        assert_eq!(
            every(Duration::from_secs(30 * 60)).unwrap().0,
            "*/30 * * * *"
        );
        assert_eq!(
            every(Duration::from_secs(29 * 60)).unwrap().0,
            "*/20 * * * *"
        );
        assert_eq!(
            every(Duration::from_secs(3 * 3600)).unwrap().0,
            "0 */3 * * *"
        );
        assert_eq!(every(Duration::from_secs(90)).unwrap().0, "*/1 * * * *");
        assert!(every(Duration::from_secs(30)).is_none());
    }
}
