//! Restore tests: a recovery point restored into a throwaway instance that
//! drp starts and removes itself — a scratch SQLite file, a scratch folder,
//! a private PostgreSQL or MariaDB server — never the live service; then checked
//! (the engine answers, tables hold rows, the policy's own checks) and
//! recorded in every repository as "restore-tested", with its timings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Check, Export, Policy, RestoreTestConfig, SourceConfig};
use crate::keys::Keys;
use crate::manifest::Manifest;
use crate::progress::Reporter;
use crate::records::{CheckResult, Tested};
use crate::repository::Repository;
use crate::restore::{self, Selector};
use crate::source::{self, Source};
use crate::state::{ExportState, Kept, LastTest};
use crate::{Error, Result};

impl Tested {
    /// What the restore of the point took: from whom, receiving and loading.
    fn timed(&mut self, report: &restore::Report) {
        self.target = report.target.clone();
        self.receive_seconds = report.received_seconds;
        self.load_seconds = report.seconds - report.received_seconds;
        if report.seconds > 0.0 {
            self.restore_bytes_per_second = report.raw_bytes as f64 / report.seconds;
        }
    }
}

impl LastTest {
    fn of(t: &Tested) -> LastTest {
        LastTest {
            at: Some(t.at),
            passed: t.passed,
            point: Some(t.id.clone()),
            restore_seconds: t.receive_seconds + t.load_seconds,
            raw_bytes: t.raw_bytes,
            restore_bytes_per_second: t.restore_bytes_per_second,
            error: t.error.clone(),
        }
    }
}

/// How long restoring the newest point would take at the throughput the
/// last restore test measured, and when growth makes it miss the RTO.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub seconds: f64,
    pub raw_bytes: u64,
    pub rto_seconds: Option<f64>,
    pub fits: Option<bool>,
    /// Growth of the raw size over the points of the last 90 days.
    pub growth_bytes_per_month: Option<f64>,
    /// Months until the prediction passes the RTO at that growth.
    pub months_left: Option<f64>,
}

const MONTH: f64 = 30.44 * 86_400.0;

/// Predicts from `last` (the throughput) for `points` (oldest first).
pub fn predict(
    last: &LastTest,
    points: &[Manifest],
    rto: Option<std::time::Duration>,
) -> Option<Prediction> {
    if last.restore_bytes_per_second <= 0.0 {
        return None;
    }
    let newest = points.last()?;
    Some(predict_at(
        last.restore_bytes_per_second,
        newest.raw.size,
        points,
        rto,
    ))
}

/// The restore time of `raw_bytes` at `rate` bytes per second, against
/// the RTO, with the growth seen over `history` (oldest first, the newest
/// point last).
pub fn predict_at(
    rate: f64,
    raw_bytes: u64,
    history: &[Manifest],
    rto: Option<std::time::Duration>,
) -> Prediction {
    let seconds = raw_bytes as f64 / rate;
    let rto_seconds = rto.map(|r| r.as_secs_f64());
    let window = chrono::Duration::days(90);
    let growth = history.last().and_then(|newest| {
        history
            .iter()
            .find(|m| newest.consistency_time - m.consistency_time <= window)
            .filter(|m| m.id != newest.id)
            .map(|first| {
                let span = (newest.consistency_time - first.consistency_time).num_seconds() as f64;
                (newest.raw.size as f64 - first.raw.size as f64) / span.max(1.0) * MONTH
            })
    });
    let months_left = match (rto_seconds, growth) {
        (Some(r), Some(g)) if g > 0.0 => Some(((r * rate - raw_bytes as f64) / g).max(0.0)),
        _ => None,
    };
    Prediction {
        seconds,
        raw_bytes,
        rto_seconds,
        fits: rto_seconds.map(|r| seconds <= r),
        growth_bytes_per_month: growth,
        months_left,
    }
}

/// Runs the restore tests the schedules say are due (exports with a
/// `restore_test:` section whose last test is `every` old), notifies the
/// failures: per export tested, its tests
/// or why none ran.
pub async fn run_due(policy: &Policy, now: DateTime<Utc>) -> Vec<(String, Result<Vec<Tested>>)> {
    let mut out = Vec::new();
    for e in policy.exports.values() {
        let Some(config) = &e.restore_test else {
            continue;
        };
        if !LastTest::load(policy, &e.name).due(config.every.as_duration(), now) {
            continue;
        }
        // A test waits for the export's first point (a new host's first
        // run tests before it backs up).
        if ExportState::load(policy, &e.name).last_success.is_none() {
            continue;
        }
        let result = run(policy, e, &[], crate::progress::silent()).await;
        if let Ok(tested) = &result {
            for t in tested.iter().filter(|t| !t.passed) {
                notify_failure(policy, t).await;
            }
        }
        out.push((e.name.clone(), result));
    }
    out
}

/// Tells the policy's channels that a restore test failed.
pub async fn notify_failure(policy: &Policy, t: &Tested) {
    let message = crate::notify::Message {
        host: t.host.clone(),
        export: t.export.clone(),
        result: crate::state::RunResult::Failed,
        point: Some(t.id.clone()),
        committed: Vec::new(),
        failed: vec![t.target.clone()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        errors: t
            .error
            .iter()
            .cloned()
            .chain(
                t.checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("check failed: {}: {}", c.check, c.detail)),
            )
            .collect(),
        seconds: t.receive_seconds + t.load_seconds + t.validate_seconds,
        at: t.at,
        title: Some(format!(
            "drp: restore test of {}/{} FAILED",
            t.host, t.export
        )),
    };
    for e in crate::notify::send(&policy.notify, &policy.base_dir, &message).await {
        tracing::warn!("{}: notification failed: {e}", t.export);
    }
}

/// The points a test takes: the newest, and one at random among the
/// others consistent within `window` of it.
pub fn pick(points: &[Manifest], window: std::time::Duration) -> Vec<Manifest> {
    use rand::seq::IndexedRandom;
    let Some(newest) = points.last() else {
        return Vec::new();
    };
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
    let older: Vec<&Manifest> = points[..points.len() - 1]
        .iter()
        .filter(|m| newest.consistency_time - m.consistency_time <= window)
        .collect();
    let mut out = vec![newest.clone()];
    if let Some(m) = older.choose(&mut rand::rng()) {
        out.push((*m).clone());
    }
    out
}

/// Tests the points `pick` chooses for `export`; the records, one per
/// point, are stored on every reachable target of the export.
pub async fn run(
    policy: &Policy,
    export: &Export,
    identities: &[PathBuf],
    progress: Reporter,
) -> Result<Vec<Tested>> {
    let keys = Arc::new(Keys::for_policy(policy)?.with_cli(identities, &[])?);
    let mut repos = Vec::new();
    for name in &export.targets {
        match Repository::for_policy(policy, name, &keys).await {
            Ok(r) => repos.push(r),
            Err(e) => tracing::warn!("restore test of {}: {e}", export.name),
        }
    }
    let Some(first) = repos.first() else {
        return Err(Error::Failed(format!(
            "no target of `{}` is reachable",
            export.name
        )));
    };
    let listing = first.list(&policy.host, &export.name).await?;
    let config = export.restore_test.clone().unwrap_or_default();
    let points = pick(&listing.points, config.random_within.as_duration());
    if points.is_empty() {
        return Err(Error::NotFound(format!(
            "no recovery point of `{}` to test",
            export.name
        )));
    }
    let tester = Tester {
        policy,
        export,
        config: &config,
        repos: &repos,
        identities,
        progress,
    };
    let mut out = Vec::new();
    for m in points {
        let tested = tester.test_point(&m, out.is_empty()).await;
        for repo in &repos {
            if let Err(e) = repo.save_restore_test(&tested).await {
                tracing::warn!("the restore test of {} is not recorded: {e}", m.id);
            }
        }
        out.push(tested);
    }
    // The rate is the most recent test's (as `drp report` reads it from the
    // records); the verdict is all of them.
    if let Some(last) = out.last() {
        let mut state = LastTest::of(last);
        state.passed = out.iter().all(|t| t.passed);
        state.error = out.iter().find_map(|t| t.error.clone());
        if let Err(e) = state.save(policy, &export.name) {
            tracing::warn!("the restore test's state is not saved: {e}");
        }
    }
    Ok(out)
}

/// What every point of one export's restore test shares.
struct Tester<'a> {
    policy: &'a Policy,
    export: &'a Export,
    config: &'a RestoreTestConfig,
    repos: &'a [Repository],
    identities: &'a [PathBuf],
    progress: Reporter,
}

impl Tester<'_> {
    /// Restores and checks `m`; `pitr`: a physical base backup is replayed
    /// to a random instant rather than to the end of its archive.
    async fn test_point(&self, m: &Manifest, pitr: bool) -> Tested {
        let mut tested = Tested {
            id: m.id.clone(),
            host: m.host.clone(),
            export: m.export.clone(),
            kind: m.kind.clone(),
            at: Utc::now(),
            passed: false,
            error: None,
            raw_sha256: m.raw.sha256.clone(),
            stored_sha256: m.stored.sha256.clone(),
            target: String::new(),
            tools: m.tools.clone(),
            start_seconds: 0.0,
            receive_seconds: 0.0,
            load_seconds: 0.0,
            validate_seconds: 0.0,
            raw_bytes: m.raw.size,
            restore_bytes_per_second: 0.0,
            checks: Vec::new(),
            to_time: None,
            agent: crate::repository::agent_id(),
        };
        let result = match &self.export.source {
            SourceConfig::PostgresCluster(c) => self.restore_cluster(c, m, pitr, &mut tested).await,
            _ => self.restore_and_check(m, &mut tested).await,
        };
        match result {
            Ok(()) => tested.passed = tested.checks.iter().all(|c| c.passed),
            Err(e) => tested.error = Some(e.to_string()),
        }
        tested
    }

    async fn plan(
        &self,
        selector: Selector,
        source: Arc<dyn Source>,
        to: Option<&str>,
    ) -> Result<restore::Plan> {
        restore::plan(
            self.repos,
            &self.policy.host,
            &self.export.name,
            &selector,
            source,
            to,
        )
        .await
    }

    async fn restore_and_check(&self, m: &Manifest, tested: &mut Tested) -> Result<()> {
        let started = Instant::now();
        let scratch = Scratch::new()?;
        let instance = Instance::start(&self.export.source, &scratch, &self.policy.base_dir)?;
        tested.start_seconds = started.elapsed().as_secs_f64();
        let kind = &instance.checked.kind;
        let source: Arc<dyn Source> = Arc::from(source::build(kind, &self.policy.base_dir));
        let plan = self
            .plan(
                Selector::Id(m.id.clone()),
                source.clone(),
                instance.checked.to.as_deref(),
            )
            .await?;
        let options = scratch.options(self.policy, None);
        let report =
            restore::execute(&plan, source.clone(), options, self.progress.clone()).await?;
        tested.timed(&report);
        let validating = Instant::now();
        tested.checks = check(source, instance.checked.clone(), &self.config.checks).await?;
        tested.validate_seconds = validating.elapsed().as_secs_f64();
        drop(instance);
        Ok(())
    }

    /// A physical base backup restored into a scratch data directory, its
    /// archive replayed (with `pitr`, to a random instant between the end
    /// of the backup and the newest instant the archive reaches), then
    /// started as a private server for the checks.
    async fn restore_cluster(
        &self,
        cluster: &crate::source::postgres::cluster::ClusterConfig,
        m: &Manifest,
        pitr: bool,
        tested: &mut Tested,
    ) -> Result<()> {
        use crate::source::postgres::scratch::ScratchServer;
        let (policy, export) = (self.policy, self.export);
        let scratch = Scratch::new()?;
        // `data`, as every scratch server's: a test killed midway leaves
        // the server a later sweep stops.
        let data = scratch.path().join("data");
        let mut restored = cluster.clone();
        restored.data_directory = data.clone();
        let source: Arc<dyn Source> = Arc::from(source::build(
            &SourceConfig::PostgresCluster(restored.clone()),
            &policy.base_dir,
        ));
        let to = data.display().to_string();
        let mut plan = self
            .plan(Selector::Id(m.id.clone()), source.clone(), Some(&to))
            .await?;
        if pitr
            && let (Some(w), Some(until)) = (&m.wal, plan.replay.as_ref().and_then(|r| r.until))
            && until > w.consistent_after
        {
            let span = (until - w.consistent_after).num_milliseconds().max(1);
            let at =
                w.consistent_after + chrono::Duration::milliseconds(rand::random_range(0..span));
            plan = self
                .plan(Selector::At(at), source.clone(), Some(&to))
                .await?;
            if plan.manifest.id != m.id {
                return Err(Error::Failed(format!(
                    "a point-in-time restore to {at} picks point {}, not {}",
                    plan.manifest.id, m.id
                )));
            }
            tested.to_time = Some(at);
        }
        let (restore_command, _) =
            crate::wal::run::replay_commands(policy, &export.name, false, self.identities)?;
        let options = scratch.options(policy, restore_command);
        let report = restore::execute(&plan, source, options, self.progress.clone()).await?;
        tested.timed(&report);
        let validating = Instant::now();
        let bin = ScratchServer::bin_dir(cluster.bin_dir.as_deref(), &policy.base_dir)?;
        let server = ScratchServer::adopt(bin, &data, scratch.path())?;
        let mut checked = restored;
        checked.url = None;
        checked.host = Some(server.socket_dir().display().to_string());
        checked.port = Some(server.port());
        checked.password = None;
        let kind = SourceConfig::PostgresCluster(checked);
        let src: Arc<dyn Source> = Arc::from(source::build(&kind, &policy.base_dir));
        tested.checks = check(src, Checked { kind, to: None }, &self.config.checks).await?;
        tested.validate_seconds = validating.elapsed().as_secs_f64();
        drop(server);
        Ok(())
    }
}

/// The checks of a restored copy, on a blocking thread (they run tools).
async fn check(
    source: Arc<dyn Source>,
    instance: Checked,
    checks: &[Check],
) -> Result<Vec<CheckResult>> {
    let checks = checks.to_vec();
    tokio::task::spawn_blocking(move || validate(source.as_ref(), &instance, &checks))
        .await
        .map_err(|e| Error::Failed(format!("the checks stopped: {e}")))
}

/// A private folder for the instance and the staged data, removed with it.
/// It names the process it belongs to, so that the next test removes it
/// (and stops its server) if that process was killed.
struct Scratch(tempfile::TempDir);

const SCRATCH_PREFIX: &str = "drp-restore-test-";
const OWNER_FILE: &str = "owner.pid";

impl Scratch {
    fn new() -> Result<Scratch> {
        sweep();
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir()
            .map_err(|e| Error::io("cannot create the restore test's folder", e))?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(|e| Error::io("cannot write the restore test's owner", e))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A restore into this folder's instance: staged here, nothing to
    /// confirm (nothing is there), nothing kept.
    fn options(&self, policy: &Policy, restore_command: Option<String>) -> restore::Options {
        restore::Options {
            confirmed: false,
            workdir: Some(self.path().to_path_buf()),
            drop_replaced: true,
            lock_dir: Some(policy.state_dir.clone()),
            restore_command,
            archive_command: None,
        }
    }
}

/// Removes the scratch folders of restore tests whose process is gone (a
/// test killed midway), stopping the private server left running in one.
fn sweep() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let dir = e.path();
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        match owner {
            Some(pid) if alive(pid) => continue,
            // Being created this very moment by another test.
            None if !dir.join("data").exists() => continue,
            _ => {}
        }
        stop_left_over(&dir.join("data"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::warn!("removed {} (a restore test killed midway)", dir.display()),
            Err(err) => tracing::warn!("cannot remove {}: {err}", dir.display()),
        }
    }
}

/// Stops the server a killed restore test left running on `data`: the
/// process its pid file names (PostgreSQL's postmaster gets an immediate
/// shutdown first), killed if still there after 10 seconds.
fn stop_left_over(data: &Path) {
    for (file, first) in [
        ("postmaster.pid", libc::SIGQUIT),
        (crate::source::mysql_scratch::PID_FILE, libc::SIGKILL),
    ] {
        let Some(pid) = std::fs::read_to_string(data.join(file))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        // SAFETY: signals the server that this data folder names.
        unsafe { libc::kill(pid, first) };
        let started = Instant::now();
        while alive(pid) {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                // SAFETY: the server, still running after its shutdown.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// The throwaway copy a point is restored into, and the private server
/// holding it (stopped when dropped).
struct Instance {
    checked: Checked,
    _server: Option<Box<dyn std::any::Any + Send>>,
}

/// What the restore and the checks need of an instance: the source's
/// settings pointed at it, and what a restore's `--to` is.
#[derive(Clone)]
struct Checked {
    kind: SourceConfig,
    to: Option<String>,
}

impl Instance {
    fn start(source: &SourceConfig, scratch: &Scratch, base_dir: &Path) -> Result<Instance> {
        let at =
            |kind, to: Option<&Path>, server: Option<Box<dyn std::any::Any + Send>>| Instance {
                checked: Checked {
                    kind,
                    to: to.map(|p| p.display().to_string()),
                },
                _server: server,
            };
        Ok(match source {
            SourceConfig::Sqlite(_) => {
                let file = scratch.path().join("restored.db");
                let kind =
                    SourceConfig::Sqlite(source::sqlite::SqliteConfig { path: file.clone() });
                at(kind, Some(&file), None)
            }
            SourceConfig::Directory(c) => {
                let mut c = c.clone();
                c.path = scratch.path().join("restored");
                let dir = c.path.clone();
                at(SourceConfig::Directory(c), Some(&dir), None)
            }
            SourceConfig::Postgres(c) => {
                let server = crate::source::postgres::scratch::ScratchServer::start(
                    c,
                    scratch.path(),
                    base_dir,
                )?;
                at(
                    SourceConfig::Postgres(server.config()),
                    None,
                    Some(Box::new(server)),
                )
            }
            SourceConfig::Mysql(c) => {
                let server =
                    crate::source::mysql_scratch::ScratchMariadb::start(c, scratch.path())?;
                at(
                    SourceConfig::Mysql(server.config()),
                    None,
                    Some(Box::new(server)),
                )
            }
            SourceConfig::PostgresCluster(_) => {
                unreachable!("physical base backups are restored by Tester::restore_cluster")
            }
        })
    }
}

/// The engine answers, tables hold rows, and the policy's checks pass.
fn validate(source: &dyn Source, instance: &Checked, checks: &[Check]) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let database = match &instance.kind {
        SourceConfig::Sqlite(_) => instance.to.clone(),
        _ => None,
    };
    match &instance.kind {
        SourceConfig::Directory(c) => {
            let files = count_files(&c.path);
            out.push(CheckResult {
                check: "the tree holds files".into(),
                passed: files > 0,
                detail: format!("{files} files"),
            });
            for check in checks {
                if let Check::Files { min_files } = check {
                    out.push(CheckResult {
                        check: format!("at least {min_files} files"),
                        passed: files >= *min_files,
                        detail: format!("{files} files"),
                    });
                }
            }
        }
        kind => {
            let tables = match kind {
                SourceConfig::Sqlite(_) => {
                    "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by 1"
                }
                SourceConfig::Mysql(_) => {
                    "select concat('`', replace(table_name, '`', '``'), '`') from information_schema.tables \
                     where table_schema = database() and table_type = 'BASE TABLE' order by 1"
                }
                _ => {
                    "select quote_ident(schemaname) || '.' || quote_ident(tablename) from pg_tables \
                     where schemaname not in ('pg_catalog', 'information_schema') order by 1"
                }
            };
            match source.sql(database.as_deref(), tables) {
                Ok(rows) => {
                    let names: Vec<String> = rows
                        .into_iter()
                        .filter_map(|r| r.into_iter().next())
                        .collect();
                    let mut empty = Vec::new();
                    for t in &names {
                        let q = format!("select count(*) from (select 1 from {t} limit 1) x");
                        match source.sql(database.as_deref(), &q) {
                            Ok(r)
                                if r.first().and_then(|r| r.first()).is_some_and(|v| v == "1") => {}
                            _ => empty.push(t.clone()),
                        }
                    }
                    out.push(CheckResult {
                        check: "the engine answers and its tables hold rows".into(),
                        passed: !names.is_empty() && empty.len() < names.len(),
                        detail: if empty.is_empty() {
                            format!("{} tables, none empty", names.len())
                        } else {
                            format!("{} tables; empty: {}", names.len(), empty.join(", "))
                        },
                    });
                }
                Err(e) => out.push(CheckResult {
                    check: "the engine answers".into(),
                    passed: false,
                    detail: e.to_string(),
                }),
            }
            for check in checks {
                if let Check::Sql { sql, expect } = check {
                    let got = source.sql(database.as_deref(), sql).map(|r| {
                        r.first()
                            .and_then(|r| r.first())
                            .cloned()
                            .unwrap_or_default()
                    });
                    out.push(match got {
                        Ok(v) => CheckResult {
                            check: sql.clone(),
                            passed: &v == expect,
                            detail: format!("{v:?} (expected {expect:?})"),
                        },
                        Err(e) => CheckResult {
                            check: sql.clone(),
                            passed: false,
                            detail: e.to_string(),
                        },
                    });
                }
            }
        }
    }
    out
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(days_ago: i64, raw: u64) -> Manifest {
        let at = Utc::now() - chrono::Duration::days(days_ago);
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "id": format!("p{days_ago}"), "host": "h", "export": "e", "kind": "sqlite",
            "source": {}, "consistency_time": at, "started_at": at, "finished_at": at,
            "raw": {"size": raw, "sha256": ""}, "stored": {"object": "", "size": 0, "sha256": ""},
            "compression": {"algorithm": "zstd", "level": 3}, "tools": {}, "agent": "drp"
        }))
        .unwrap();
        m.raw.size = raw;
        m
    }

    #[test]
    fn the_prediction_is_the_newest_size_at_the_tested_rate_and_growth_says_when_it_stops_fitting()
    {
        let last = LastTest {
            restore_bytes_per_second: 10e6,
            ..Default::default()
        };
        // From nothing to 2 GB in 61 days; 2 GB now: 200 s at 10 MB/s.
        let points = [
            point(61, 2_000_000_000 - 2_000_000_000),
            point(0, 2_000_000_000),
        ];
        let p = predict(&last, &points, Some(std::time::Duration::from_secs(300))).unwrap();
        assert!((p.seconds - 200.0).abs() < 1e-6);
        assert_eq!(p.fits, Some(true));
        let g = p.growth_bytes_per_month.unwrap();
        assert!((g - 2e9 / 61.0 * 30.44).abs() < 1e3, "{g}");
        // 300 s at 10 MB/s is 3 GB: 1 GB more, at the growth per month.
        let months = p.months_left.unwrap();
        assert!((months - 1e9 / g).abs() < 1e-6, "{months}");
    }

    #[test]
    fn the_newest_and_one_older_point_within_the_window_are_picked() {
        let points = [point(90, 1), point(10, 1), point(1, 1)];
        for _ in 0..20 {
            let picked = pick(&points, std::time::Duration::from_secs(30 * 86_400));
            assert_eq!(picked.len(), 2);
            assert_eq!(picked[0].id, "p1");
            assert_eq!(picked[1].id, "p10", "p90 is outside the window");
        }
        assert_eq!(pick(&points, std::time::Duration::ZERO).len(), 1);
    }
}
