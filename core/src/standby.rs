//! Standbys (`standby:` of a host's policy). A warm PostgreSQL standby is a
//! cluster kept a few seconds behind another host's `postgres-cluster`
//! export by replaying that export's WAL archive as it grows, so that a
//! failover is a promotion, not a restore. A restored standby is one of
//! this policy's exports brought to the primary's newest point (its logs
//! replayed to the newest) every `every`, through the restore sequence.
//!
//! `init` puts the primary's newest base backup in place through the one
//! restore sequence (received, both digests checked, `pg_verifybackup`,
//! swapped in, what it replaces kept), set to replay the archive with
//! `drp-agent wal get --standby` once its server starts. `observe` reads how
//! far it has replayed against what the archive holds (the replay lag);
//! `promote` waits until it has replayed everything the archive holds,
//! then ends its recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::archiving::archive::Inventory;
use crate::archiving::run::ExportArchive;
use crate::archiving::{Lsn, WalFile};
use crate::config::Policy;
use crate::config::standby::{Keeps, Standby};
use crate::source::Source;
use crate::source::postgres::cluster::Cluster;
use crate::state::{Kept, StandbyState};
use crate::{Error, Result};

/// How often a daemon looks at its standbys.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The policy's standby `name`.
pub fn declared<'p>(policy: &'p Policy, name: &str) -> Result<&'p Standby> {
    policy.standby.get(name).ok_or_else(|| {
        Error::NotFound(format!(
            "no standby `{name}` in {}; declared: {}",
            policy.path.display(),
            if policy.standby.is_empty() {
                "none".to_string()
            } else {
                policy
                    .standby
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    })
}

/// The standby `name` names, or the policy's only one.
pub fn named<'p>(policy: &'p Policy, name: Option<&str>) -> Result<(&'p str, &'p Standby)> {
    if let Some(n) = name {
        declared(policy, n)?;
        let (n, s) = policy.standby.get_key_value(n).expect("declared");
        return Ok((n.as_str(), s));
    }
    let mut all = policy.standby.iter();
    match (all.next(), all.next()) {
        (Some((n, s)), None) => Ok((n.as_str(), s)),
        (None, _) => Err(Error::Usage(format!(
            "{} declares no `standby:`",
            policy.path.display()
        ))),
        _ => Err(Error::Usage(format!(
            "{} declares several standbys: name one",
            policy.path.display()
        ))),
    }
}

/// The standby's server, as drp connects to it and restores into.
fn server(policy: &Policy, standby: &Standby) -> Cluster {
    Cluster::new(standby.cluster(), &policy.base_dir)
}

/// The warm PostgreSQL standby `name`; an error for a restored one.
fn warm<'p>(policy: &'p Policy, name: &str, what: &str) -> Result<&'p Standby> {
    let standby = declared(policy, name)?;
    match standby.keeps() {
        Keeps::Cluster(_) => Ok(standby),
        Keeps::Restored { into, .. } => Err(Error::Usage(format!(
            "standby `{name}` is restored into export `{into}`, not a PostgreSQL cluster replaying the archive: \
             {what}"
        ))),
    }
}

/// The commands the standby's server runs: its `restore_command` (this
/// agent's `wal get --standby`) and, once promoted, its `archive_command`
/// (`wal push` into `archive_into`, or none). Built here, never read from a
/// repository.
pub fn commands(policy: &Policy, name: &str) -> Result<(String, Option<String>)> {
    let standby = warm(policy, name, "it replays no WAL")?;
    let agent = crate::archiving::run::agent_path();
    let policy_path = std::path::absolute(&policy.path)
        .map_err(|e| Error::io_path("cannot resolve", &policy.path, e))?;
    let word = |t: &str| format!("'{}'", t.replace('\'', "'\\''"));
    let base = format!(
        "{} wal {{}} --policy {}",
        word(&agent.to_string_lossy()),
        word(&policy_path.to_string_lossy())
    );
    let restore = base.replace("{}", "get") + &format!(" --standby {} %f %p", word(name));
    let archive = standby
        .archive_into
        .as_ref()
        .map(|e| base.replace("{}", "push") + &format!(" --export {} %p", word(e)));
    Ok((restore, archive))
}

/// The archive the standby `name` replays: the primary's export, read
/// from the standby's targets (only `get` and the inventories apply to it).
pub async fn archive<'p>(policy: &'p Policy, name: &str) -> Result<ExportArchive<'p>> {
    let standby = declared(policy, name)?;
    let targets = standby
        .targets
        .clone()
        .unwrap_or_else(|| policy.targets.keys().cloned().collect());
    let (repos, unreachable) = crate::repository::open_reachable(policy, &targets).await;
    let archive = ExportArchive {
        policy,
        host: standby.of.host.clone(),
        export: standby.of.export.clone(),
        cluster: standby.cluster(),
        repos,
        unreachable,
        level: crate::config::Compression::default().level,
    };
    if archive.repos.is_empty() {
        let why: Vec<String> = archive.unreachable.iter().map(|e| e.to_string()).collect();
        return Err(Error::Failed(format!(
            "no target of standby `{name}` can be read: {}",
            why.join("; ")
        )));
    }
    Ok(archive)
}

/// Puts the primary's newest base backup in place as the standby's data
/// directory, set to replay the archive once started (see [`commands`]).
/// The plan is shown through `show` before anything changes (and is all a
/// `dry_run` does); an existing data directory is replaced only when
/// `confirmed`, and kept aside.
pub async fn init(
    policy: &Policy,
    name: &str,
    confirmed: bool,
    dry_run: bool,
    show: impl FnOnce(&crate::restore::Plan),
) -> Result<Option<crate::restore::Report>> {
    let standby = declared(policy, name)?;
    if let Keeps::Restored { into, .. } = standby.keeps() {
        return refresh(policy, name, into, confirmed, dry_run, show).await;
    }
    let archive = archive(policy, name).await?;
    let (restore_command, archive_command) = commands(policy, name)?;
    let source: Arc<dyn Source> = Arc::new(server(policy, standby));
    let restore =
        crate::restore::Restore::new(&archive.repos, &standby.of.host, &standby.of.export, source)
            .policy(Some(policy))
            .standby(restore_command, archive_command);
    let planned = restore.plan(&crate::restore::Selector::Latest).await?;
    show(planned.plan());
    if dry_run {
        return Ok(None);
    }
    planned.execute(confirmed).await.map(Some)
}

/// Brings the restored standby `name` to the primary's newest point, its
/// logs replayed to the newest (the newest consistent now), into the
/// export `into`: staged, verified, swapped in, what it replaces kept.
async fn refresh(
    policy: &Policy,
    name: &str,
    into: &str,
    confirmed: bool,
    dry_run: bool,
    show: impl FnOnce(&crate::restore::Plan),
) -> Result<Option<crate::restore::Report>> {
    let standby = declared(policy, name)?;
    let export = policy.export(into)?;
    let targets = standby
        .targets
        .clone()
        .unwrap_or_else(|| export.targets.clone());
    let (repos, unreachable) = crate::repository::open_reachable(policy, &targets).await;
    if repos.is_empty() {
        let why: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
        return Err(Error::Failed(format!(
            "no target of standby `{name}` can be read: {}",
            why.join("; ")
        )));
    }
    let source: Arc<dyn Source> = Arc::from(crate::source::build(&export.source, &policy.base_dir));
    let restore =
        crate::restore::Restore::new(&repos, &standby.of.host, &standby.of.export, source)
            .policy(Some(policy));
    let planned = restore
        .plan(&crate::restore::Selector::Before(Utc::now()))
        .await?;
    show(planned.plan());
    if dry_run {
        return Ok(None);
    }
    let consistent = planned.plan().reaches();
    let report = planned.execute(confirmed).await?;
    let mut state = StandbyState::load(policy, name);
    state.refreshed_at = Some(Utc::now());
    state.point = Some(report.id.clone());
    state.point_consistent_at = Some(
        report
            .replaced
            .replayed
            .as_ref()
            .and_then(|r| r.reached)
            .unwrap_or(consistent),
    );
    state.error = None;
    state.save(policy, name)?;
    Ok(Some(report))
}

/// Where a standby stands: a warm one against the archive it replays, a
/// restored one by the point it holds.
pub async fn observe(policy: &Policy, name: &str) -> Result<StandbyState> {
    let standby = declared(policy, name)?;
    if let Keeps::Restored { .. } = standby.keeps() {
        let mut state = StandbyState::load(policy, name);
        state.checked_at = Some(Utc::now());
        state.in_recovery = false;
        state.lag_seconds = state
            .point_consistent_at
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        return Ok(state);
    }
    let cluster = server(policy, standby);
    let rows = tokio::task::spawn_blocking(move || {
        cluster.run_sql(
            Some("postgres"),
            "select pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, ''), \
             coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), \
             (select timeline_id from pg_control_checkpoint())",
            true,
        )
    })
    .await
    .map_err(|e| Error::Failed(format!("reading the standby stopped: {e}")))?
    .map_err(|e| Error::Failed(format!("standby `{name}` does not answer: {e}")))?;
    let row = rows.first().cloned().unwrap_or_default();
    let field = |i: usize| row.get(i).map(String::as_str).unwrap_or_default();
    let mut state = StandbyState {
        checked_at: Some(Utc::now()),
        in_recovery: field(0) == "t",
        replay_lsn: Some(field(1).to_string()).filter(|s| !s.is_empty()),
        replayed_commit_at: DateTime::parse_from_rfc3339(field(2))
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        ..StandbyState::default()
    };
    let timeline: u32 = field(3).parse().unwrap_or(1);
    let archive = archive(policy, name).await?;
    let mut newest: Option<Inventory> = None;
    for (_, inv) in archive.inventories().await {
        let inv = inv?;
        if newest.as_ref().is_none_or(|n| inv.files > n.files) {
            newest = Some(inv);
        }
    }
    let Some(inv) = newest else {
        return Ok(state);
    };
    // The segment holding the last byte replayed: a replay that ended a
    // segment (a switch, or a full one) stands at the next one's start.
    let replayed = state
        .replay_lsn
        .as_deref()
        .and_then(Lsn::parse)
        .filter(|l| l.0 > 0)
        .map(|l| Lsn(l.0 - 1).segment(inv.segment_size));
    // Segments on the standby's timeline or a newer one, after the one its
    // replay stands in.
    let mut unreplayed: Vec<DateTime<Utc>> = Vec::new();
    for (&tli, segments) in inv.segments.range(timeline..) {
        for (&segno, &ended) in segments {
            state.newest_archived =
                Some(WalFile::segment(tli, segno, inv.segment_size).to_string());
            if replayed.is_none_or(|r| segno > r) {
                unreplayed.push(ended);
            }
        }
    }
    state.behind_segments = unreplayed.len();
    state.lag_seconds = Some(match unreplayed.iter().min() {
        Some(oldest) => (Utc::now() - *oldest).num_milliseconds().max(0) as f64 / 1000.0,
        None => 0.0,
    });
    Ok(state)
}

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The commit time of the last transaction replayed before it ended
    /// its recovery: what the new primary holds.
    pub reached: Option<DateTime<Utc>>,
    /// It was already promoted (a retried step).
    pub already: bool,
    pub seconds: f64,
}

/// Ends the standby's recovery, once it has replayed everything the
/// archive holds; refused (nothing changed) when it cannot catch up within
/// `catch_up`, unless `behind_ok` (what it had not replayed is then lost).
pub async fn promote(
    policy: &Policy,
    name: &str,
    catch_up: Duration,
    behind_ok: bool,
) -> Result<Promoted> {
    let started = Instant::now();
    let standby = warm(
        policy,
        name,
        "its database is live after each refresh, and there is nothing to promote",
    )?;
    let mut state = observe(policy, name).await?;
    if !state.in_recovery {
        return Ok(Promoted {
            reached: state.replayed_commit_at,
            already: true,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    while state.behind_segments > 0 && started.elapsed() < catch_up {
        tokio::time::sleep(Duration::from_millis(500)).await;
        state = observe(policy, name).await?;
    }
    if state.behind_segments > 0 && !behind_ok {
        return Err(Error::Failed(format!(
            "standby `{name}` has not replayed {} archived WAL segment(s) (the oldest {:.0}s old, the newest {}) \
             after waiting {}s: promoting it now would lose them; nothing was changed. Find why its replay is \
             stuck (its server log), or promote anyway with `behind_ok: true`",
            state.behind_segments,
            state.lag_seconds.unwrap_or_default(),
            state.newest_archived.as_deref().unwrap_or("-"),
            catch_up.as_secs()
        )));
    }
    let cluster = server(policy, standby);
    tokio::task::spawn_blocking(move || {
        cluster.run_sql(Some("postgres"), "select pg_promote(true, 60)", false)
    })
    .await
    .map_err(|e| Error::Failed(format!("the promotion stopped: {e}")))?
    .map_err(|e| Error::Failed(format!("standby `{name}` could not be promoted: {e}")))?;
    let after = observe(policy, name).await?;
    if after.in_recovery {
        return Err(Error::Failed(format!(
            "standby `{name}` is still in recovery 60s after its promotion was asked: see its server log"
        )));
    }
    after.save(policy, name)?;
    Ok(Promoted {
        reached: after.replayed_commit_at.or(state.replayed_commit_at),
        already: false,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A daemon's or `run --due`'s look at every standby: its state saved for
/// `status` and the metrics, and an alert when its lag first goes past
/// `lag_alert` or it stops answering.
pub async fn turn(policy: &Policy) {
    for (name, standby) in &policy.standby {
        let before = StandbyState::load(policy, name);
        if let Keeps::Restored { into, every } = standby.keeps() {
            refresh_turn(policy, name, into, every, &before).await;
            continue;
        }
        let mut now = match observe(policy, name).await {
            Ok(s) => s,
            // What was last seen of it stays, beside why it is down.
            Err(e) => StandbyState {
                checked_at: Some(Utc::now()),
                error: Some(e.to_string()),
                ..before.clone()
            },
        };
        let limit = standby.lag_alert().as_secs_f64();
        now.alerted = now.alerting(limit);
        if now.alerted && !before.alerted {
            let text = match &now.error {
                Some(e) => e.clone(),
                None => format!(
                    "standby `{name}` has not replayed {} archived WAL segment(s); the oldest is {:.0}s old \
                     (alert past {:.0}s): a failover now would wait for them or lose them",
                    now.behind_segments,
                    now.lag_seconds.unwrap_or_default(),
                    limit
                ),
            };
            let title = format!("drp: standby {name} lags on {}", policy.host);
            crate::notify::alert(policy, name, &[], title, &text).await;
        }
        if let Err(e) = now.save(policy, name) {
            tracing::warn!(standby = name, error = %e, "the standby's state is not saved");
        }
    }
}

/// A restored standby's turn: refreshed when `every` has gone by since its
/// last refresh (or attempt), alerting when it fails.
async fn refresh_turn(
    policy: &Policy,
    name: &str,
    into: &str,
    every: Duration,
    before: &StandbyState,
) {
    let now = Utc::now();
    let due = before.checked_at.max(before.refreshed_at).is_none_or(|t| {
        now - t >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
    });
    if !due {
        return;
    }
    let mut state = match refresh(policy, name, into, true, false, |_| {}).await {
        Ok(_) => StandbyState::load(policy, name),
        Err(e) => {
            let mut s = before.clone();
            s.error = Some(e.to_string());
            if !before.alerted {
                let title = format!("drp: standby {name} not refreshed on {}", policy.host);
                crate::notify::alert(policy, name, &[], title, &e.to_string()).await;
            }
            s
        }
    };
    state.checked_at = Some(now);
    state.alerted = state.error.is_some();
    if let Err(e) = state.save(policy, name) {
        tracing::warn!(standby = name, error = %e, "the standby's state is not saved");
    }
}
