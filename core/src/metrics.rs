//! Prometheus metrics in the text exposition format: written as a
//! textfile-collector file after each one-shot run, served on `/metrics` by
//! the daemon. Built from the agent's state alone (which every backup,
//! archive push and `status` keeps), through the same assessment as
//! `status` ([`ExportStatus`]), so both say the same.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Result;
use crate::config::Policy;
use crate::export_status::ExportStatus;
use crate::state::{self, ArchiveState, ExportState, Kept, LastTest, StandbyState};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every export of `policy` as of `now`.
fn render(policy: &Policy, now: DateTime<Utc>) -> String {
    let states: Vec<(&str, ExportState)> = policy
        .exports
        .keys()
        .map(|name| (name.as_str(), ExportState::load(policy, name)))
        .collect();
    let assessed: Vec<ExportStatus> = policy
        .exports
        .values()
        .map(|e| ExportStatus::from_state(policy, e, now))
        .collect();
    let mut text = render_states(&policy.host, &states, &assessed);
    text += &render_archives(policy, now);
    text += &render_restore_tests(policy);
    text += &render_standbys(policy);
    text += &render_watch(policy, now);
    let newest = state::newest(policy);
    if !newest.failed.is_empty() {
        let host = escape(&policy.host);
        text += "# HELP drp_snapshot_last_failure_timestamp_seconds Unix time a declared snapshot last failed to be taken (the change it guarded was not run).\n";
        text += "# TYPE drp_snapshot_last_failure_timestamp_seconds gauge\n";
        for (name, at) in &newest.failed {
            text += &format!(
                "drp_snapshot_last_failure_timestamp_seconds{{host=\"{host}\",snapshot=\"{}\"}} {}\n",
                escape(name),
                at.timestamp_millis() as f64 / 1000.0
            );
        }
    }
    if !newest.by_name.is_empty() {
        let host = escape(&policy.host);
        text += "# HELP drp_snapshot_last_success_timestamp_seconds Unix time of the newest complete snapshot of each declared snapshot.\n";
        text += "# TYPE drp_snapshot_last_success_timestamp_seconds gauge\n";
        for (name, n) in &newest.by_name {
            text += &format!(
                "drp_snapshot_last_success_timestamp_seconds{{host=\"{host}\",snapshot=\"{}\",kind=\"{}\"}} {}\n",
                escape(name),
                escape(&n.kind),
                n.taken_at.timestamp_millis() as f64 / 1000.0
            );
        }
    }
    text
}

/// The last restore test of each export tested on this host.
fn render_restore_tests(policy: &Policy) -> String {
    let host = escape(&policy.host);
    let tests: Vec<(String, LastTest)> = policy
        .exports
        .values()
        .map(|e| {
            (
                format!("host=\"{host}\",export=\"{}\"", escape(&e.name)),
                LastTest::load(policy, &e.name),
            )
        })
        .filter(|(_, t)| t.at.is_some())
        .collect();
    gauges(
        &tests,
        &[
            (
                "drp_export_last_restore_test_timestamp_seconds",
                "Unix time of the export's last restore test.",
                |t| t.at.map_or(0.0, |a| a.timestamp_millis() as f64 / 1000.0),
            ),
            (
                "drp_export_last_restore_test_result",
                "1 when the last restore test passed, 0 when it failed.",
                |t| if t.passed { 1.0 } else { 0.0 },
            ),
            (
                "drp_export_restore_seconds",
                "Seconds the last restore test took to receive and load its point.",
                |t| t.restore_seconds,
            ),
        ],
    )
}

/// A gauge family's name, help and value of one row.
type Family<T> = (&'static str, &'static str, fn(&T) -> f64);

/// Each family over `rows` (labels, value), nothing when there is no row.
fn gauges<T>(rows: &[(String, T)], families: &[Family<T>]) -> String {
    let mut out = String::new();
    for (name, help, f) in families {
        if rows.is_empty() {
            break;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, t) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {}", f(t));
        }
    }
    out
}

/// The watched services, from the state the watchdog last saved.
pub fn render_watch(policy: &Policy, now: DateTime<Utc>) -> String {
    let host = escape(&policy.host);
    let rows: Vec<(String, state::WatchState)> = policy
        .watch
        .keys()
        .map(|name| {
            (
                format!("host=\"{host}\",service=\"{}\"", escape(name)),
                state::WatchState::load(policy, name),
            )
        })
        .collect();
    let mut out = gauges(
        &rows,
        &[
            (
                "drp_watch_check_up",
                "1 when the watched service's last check passed (0: it failed; -1: not checked yet).",
                |s| s.up.map_or(-1.0, |u| if u { 1.0 } else { 0.0 }),
            ),
            (
                "drp_watch_stopped",
                "1 when the watchdog stopped acting on the service (ladder exhausted or flap limit) until resumed.",
                |s| if s.stopped.is_some() { 1.0 } else { 0.0 },
            ),
        ],
    );
    if !rows.is_empty() {
        out += "# HELP drp_watch_paused 1 while the watchdog is paused for the service (watch pause).\n";
        out += "# TYPE drp_watch_paused gauge\n";
        for (labels, s) in &rows {
            let _ = writeln!(
                out,
                "drp_watch_paused{{{labels}}} {}",
                u8::from(s.paused(now))
            );
        }
        out +=
            "# HELP drp_watch_escalations_total Rungs of the ladder the watchdog tried, by rung.\n";
        out += "# TYPE drp_watch_escalations_total counter\n";
        for (labels, s) in &rows {
            for (rung, n) in &s.escalations_total {
                let _ = writeln!(
                    out,
                    "drp_watch_escalations_total{{{labels},rung=\"{}\"}} {n}",
                    escape(rung)
                );
            }
        }
    }
    out
}

/// The warm standbys, from the state the daemon (or `standby status`) last saved.
fn render_standbys(policy: &Policy) -> String {
    let host = escape(&policy.host);
    let rows: Vec<(String, StandbyState)> = policy
        .standby
        .iter()
        .map(|(name, s)| {
            (
                format!(
                    "host=\"{host}\",standby=\"{}\",primary=\"{}/{}\"",
                    escape(name),
                    escape(&s.of.host),
                    escape(&s.of.export)
                ),
                StandbyState::load(policy, name),
            )
        })
        .filter(|(_, s)| s.checked_at.is_some())
        .collect();
    gauges(
        &rows,
        &[
            (
                "drp_standby_replay_lag_seconds",
                "A warm standby: how old the oldest archived change it has not replayed is (0: it has replayed all the archive holds). A restored standby: how old the point it holds is. -1: unknown.",
                |s| s.lag_seconds.unwrap_or(-1.0),
            ),
            (
                "drp_standby_behind_segments",
                "Archived WAL segments the standby has not replayed yet.",
                |s| s.behind_segments as f64,
            ),
            (
                "drp_standby_in_recovery",
                "1 while a warm standby replays (0: promoted, a restored standby, or it did not answer).",
                |s| if s.in_recovery { 1.0 } else { 0.0 },
            ),
            (
                "drp_standby_up",
                "1 when the standby answered at its last check.",
                |s| if s.error.is_none() { 1.0 } else { 0.0 },
            ),
            (
                "drp_standby_checked_timestamp_seconds",
                "Unix time the standby was last checked.",
                |s| {
                    s.checked_at
                        .map_or(0.0, |a| a.timestamp_millis() as f64 / 1000.0)
                },
            ),
        ],
    )
}

/// The WAL archiving of `postgres-cluster` exports, from the state the
/// daemon's archiver (or `wal status`) last saved.
fn render_archives(policy: &Policy, now: DateTime<Utc>) -> String {
    let host = escape(&policy.host);
    let states: Vec<(String, ArchiveState)> = policy
        .exports
        .values()
        .filter(|e| e.source.archives_continuously())
        .map(|e| {
            (
                format!("host=\"{host}\",export=\"{}\"", escape(&e.name)),
                ArchiveState::load(policy, &e.name),
            )
        })
        .collect();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, f: &dyn Fn(&ArchiveState) -> Option<f64>| {
        let samples: Vec<String> = states
            .iter()
            .filter_map(|(labels, s)| f(s).map(|v| format!("{name}{{{labels}}} {v}\n")))
            .collect();
        if !samples.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            out.extend(samples);
        }
    };
    let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis() as f64 / 1000.0);
    family(
        "drp_export_recoverable_until_timestamp_seconds",
        "The newest instant a point-in-time restore reaches (base backup plus archived WAL).",
        &|s| ts(s.recoverable_until),
    );
    family(
        "drp_wal_archive_lag_seconds",
        "Now minus the newest instant a restore reaches: the live RPO exposure of an archived cluster.",
        &|s| {
            s.recoverable_until
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
        },
    );
    family(
        "drp_wal_backlog_files",
        "WAL files PostgreSQL marked ready that are not yet on every target.",
        &|s| Some(s.backlog_files as f64),
    );
    family(
        "drp_wal_pg_wal_free_bytes",
        "Free space on the filesystem of pg_wal.",
        &|s| s.pg_wal_free_bytes.map(|b| b as f64),
    );
    family(
        "drp_wal_push_seconds_p99",
        "99th percentile of the time a WAL push took, lately.",
        &|s| s.push_p99_seconds,
    );
    family(
        "drp_wal_push_seconds_p50",
        "Median time a WAL push took, lately.",
        &|s| s.push_p50_seconds,
    );
    family(
        "drp_wal_archive_ok",
        "1 when the archiver's last turn succeeded, 0 when it failed.",
        &|s| {
            s.checked_at
                .map(|_| if s.last_error.is_none() { 1.0 } else { 0.0 })
        },
    );
    out
}

fn render_states(host: &str, states: &[(&str, ExportState)], assessed: &[ExportStatus]) -> String {
    let mut out = String::new();
    let host = escape(host);
    let host = host.as_str();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per_export = |f: &dyn Fn(&ExportState) -> Option<f64>| -> Vec<(String, f64)> {
        states
            .iter()
            .filter_map(|(e, s)| {
                f(s).map(|v| (format!("host=\"{host}\",export=\"{}\"", escape(e)), v))
            })
            .collect()
    };
    let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis() as f64 / 1000.0);
    family(
        "drp_export_last_success_timestamp_seconds",
        "Unix time of the last backup committed to every target.",
        "gauge",
        per_export(&|s| ts(s.last_success)),
    );
    family(
        "drp_export_last_attempt_timestamp_seconds",
        "Unix time of the last backup attempt.",
        "gauge",
        per_export(&|s| ts(s.last_attempt)),
    );
    family(
        "drp_export_last_result",
        "Result of the last attempt: 1 committed everywhere, 0.5 partial, 0 failed.",
        "gauge",
        per_export(&|s| {
            s.last_result.map(|r| match r {
                state::RunResult::Ok => 1.0,
                state::RunResult::Partial => 0.5,
                state::RunResult::Failed => 0.0,
            })
        }),
    );
    family(
        "drp_export_last_duration_seconds",
        "Duration of the last attempt.",
        "gauge",
        per_export(&|s| s.last_duration_seconds),
    );
    family(
        "drp_export_last_raw_bytes",
        "Size of the last export as produced by the source.",
        "gauge",
        per_export(&|s| s.last_raw_bytes.map(|b| b as f64)),
    );
    family(
        "drp_export_last_stored_bytes",
        "Size of the last export as stored (compressed).",
        "gauge",
        per_export(&|s| s.last_stored_bytes.map(|b| b as f64)),
    );
    let counts: Vec<(String, f64)> = states
        .iter()
        .flat_map(|(e, s)| {
            s.points.iter().map(move |(t, n)| {
                (
                    format!(
                        "host=\"{host}\",export=\"{}\",target=\"{}\"",
                        escape(e),
                        escape(t)
                    ),
                    *n as f64,
                )
            })
        })
        .collect();
    family(
        "drp_export_recovery_points",
        "Committed recovery points per target.",
        "gauge",
        counts,
    );
    let assessed_export = |f: &dyn Fn(&ExportStatus) -> Option<f64>| -> Vec<(String, f64)> {
        assessed
            .iter()
            .filter_map(|s| {
                f(s).map(|v| {
                    (
                        format!("host=\"{host}\",export=\"{}\"", escape(&s.export)),
                        v,
                    )
                })
            })
            .collect()
    };
    family(
        "drp_export_rpo_exposure_seconds",
        "Live RPO exposure: now minus the newest instant a restore reaches (the newest point, or the archive's reach for an export archived continuously).",
        "gauge",
        assessed_export(&|s| s.rpo_exposure_seconds),
    );
    family(
        "drp_export_rpo_objective_seconds",
        "The export's recovery-point objective (its own, or the host's).",
        "gauge",
        assessed_export(&|s| s.rpo_objective_seconds),
    );
    out
}

/// Rewrites the textfile-collector file, if the policy names one.
pub fn write_textfile(policy: &Policy, now: DateTime<Utc>) -> Result<()> {
    if let Some(path) = &policy.metrics.textfile {
        let path = crate::config::resolve_relative(&policy.base_dir, path);
        state::write_atomically(&path, render(policy, now).as_bytes())?;
    }
    Ok(())
}

/// Serves `/metrics` on `listener` until the task is dropped. `policy` is
/// read at each request, so a reloaded policy shows at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    policy: Arc<tokio::sync::RwLock<Policy>>,
) -> std::io::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let policy = policy.clone();
        tokio::spawn(async move {
            // Read the request head (bounded in size and time).
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = if path == "/metrics" {
                let p = policy.read().await;
                ("200 OK", render(&p, Utc::now()))
            } else {
                ("404 Not Found", "not found: try /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}
