//! Restore tests ("rehearsals"): a recovery point restored into a
//! throwaway instance that drp starts and removes itself — a scratch SQLite
//! file, a scratch folder, a private PostgreSQL or MariaDB server
//! (`instance.rs`) — never the live service; then checked (`checks.rs`: the
//! engine answers, tables hold rows, the policy's own checks) and recorded
//! in every repository as "restore-tested", with its timings, from which
//! [`predict`] tells how long the next restore would take. The scheduled
//! ones run from [`run_due`].

mod checks;
mod instance;
mod predict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

pub use predict::{Prediction, predict, predict_at};

use checks::check;
use instance::{Checked, Instance, Scratch};

use crate::config::{Export, Policy, RestoreTestConfig, SourceConfig};
use crate::manifest::Manifest;
use crate::progress::Reporter;
use crate::records::Tested;
use crate::repository::Repository;
use crate::restore::{self, Restore, Selector};
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
    let keys = Arc::new(policy.read_keys()?.with_cli(identities, &[])?);
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
            SourceConfig::Redis(c) => self.restore_redis(c, m, &mut tested).await,
            SourceConfig::Command(c) => self.verify_command(c, m, &mut tested).await,
            _ => self.restore_and_check(m, &mut tested).await,
        };
        match result {
            Ok(()) => tested.passed = tested.checks.iter().all(|c| c.passed),
            Err(e) => tested.error = Some(e.to_string()),
        }
        tested
    }

    /// A restore of this export's points into the throwaway instance
    /// `source` (at `to`), staged in `scratch`.
    fn restore<'s>(
        &'s self,
        source: Arc<dyn Source>,
        to: Option<String>,
        scratch: &Scratch,
    ) -> Restore<'s> {
        Restore::new(self.repos, &self.policy.host, &self.export.name, source)
            .to(to)
            .policy(Some(self.policy))
            .identities(self.identities)
            .workdir(Some(scratch.path().to_path_buf()))
            .throwaway()
            .progress(self.progress.clone())
    }

    async fn restore_and_check(&self, m: &Manifest, tested: &mut Tested) -> Result<()> {
        let started = Instant::now();
        let scratch = Scratch::new()?;
        let instance = Instance::start(&self.export.source, &scratch, &self.policy.base_dir)?;
        tested.start_seconds = started.elapsed().as_secs_f64();
        let kind = &instance.checked.kind;
        let source: Arc<dyn Source> = Arc::from(source::build(kind, &self.policy.base_dir));
        let restore = self.restore(source.clone(), instance.checked.to.clone(), &scratch);
        // Nothing is at the instance to confirm replacing.
        let report = restore
            .plan(&Selector::Id(m.id.clone()))
            .await?
            .execute(false)
            .await?;
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
        use crate::source::postgres::scratch::ScratchPostgres;
        let policy = self.policy;
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
        let restore = self.restore(source, Some(to), &scratch);
        let mut planned = restore.plan(&Selector::Id(m.id.clone())).await?;
        if pitr
            && let (Some(w), Some(until)) =
                (&m.wal, planned.plan().replay.as_ref().and_then(|r| r.until))
            && until > w.consistent_after
        {
            let span = (until - w.consistent_after).num_milliseconds().max(1);
            let at =
                w.consistent_after + chrono::Duration::milliseconds(rand::random_range(0..span));
            planned = restore.plan(&Selector::At(at)).await?;
            let picked = &planned.plan().manifest.id;
            if picked != &m.id {
                return Err(Error::Failed(format!(
                    "a point-in-time restore to {at} picks point {picked}, not {}",
                    m.id
                )));
            }
            tested.to_time = Some(at);
        }
        // Nothing is at the scratch data directory to confirm replacing.
        let report = planned.execute(false).await?;
        tested.timed(&report);
        let validating = Instant::now();
        let bin = ScratchPostgres::bin_dir(cluster.bin_dir.as_deref(), &policy.base_dir)?;
        let server = ScratchPostgres::adopt(bin, &data, scratch.path())?;
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

    /// An RDB restored into a private folder as a file, then loaded by a
    /// throwaway `redis-server` on a private socket, whose keys are checked
    /// against those the point's manifest records.
    async fn restore_redis(
        &self,
        live: &crate::source::redis::RedisConfig,
        m: &Manifest,
        tested: &mut Tested,
    ) -> Result<()> {
        use crate::records::CheckResult;
        use crate::source::redis::{Redis, keys_match, recorded_keys};
        use crate::source::redis_scratch::{DUMP, ScratchRedis};
        let base_dir = &self.policy.base_dir;
        let scratch = Scratch::new()?;
        // `data`, as every scratch server's: a test killed midway leaves
        // the server a later sweep stops.
        let data = scratch.path().join("data");
        std::fs::create_dir(&data).map_err(|e| Error::io_path("cannot create", &data, e))?;
        let source: Arc<dyn Source> =
            Arc::from(source::build(&SourceConfig::Redis(live.clone()), base_dir));
        let to = data.join(DUMP).display().to_string();
        let report = self
            .restore(source, Some(to), &scratch)
            .plan(&Selector::Id(m.id.clone()))
            .await?
            .execute(false)
            .await?;
        tested.timed(&report);
        let validating = Instant::now();
        let (live, base, dir) = (live.clone(), base_dir.clone(), data.clone());
        let recorded = recorded_keys(&m.tools);
        tested.checks = tokio::task::spawn_blocking(move || -> Result<Vec<CheckResult>> {
            let server = ScratchRedis::start(&live, &base, &dir)?;
            let found = Redis::new(server.config(), &base).keyspace();
            let check = "the RDB loads in a throwaway redis-server with the point's keys";
            Ok(vec![match (found, recorded) {
                (Err(e), _) => CheckResult {
                    check: check.into(),
                    passed: false,
                    detail: e.to_string(),
                },
                (Ok(found), Some(expected)) => match keys_match(&expected, &found) {
                    Ok(detail) => CheckResult {
                        check: check.into(),
                        passed: true,
                        detail,
                    },
                    Err(detail) => CheckResult {
                        check: check.into(),
                        passed: false,
                        detail,
                    },
                },
                (Ok(found), None) => CheckResult {
                    check: check.into(),
                    passed: true,
                    detail: format!(
                        "{} keys (the manifest records no key count to compare)",
                        found.keys()
                    ),
                },
            }])
        })
        .await
        .map_err(|e| Error::Failed(format!("the checks stopped: {e}")))??;
        tested.validate_seconds = validating.elapsed().as_secs_f64();
        Ok(())
    }

    /// A command source's point, received whole with both digests checked,
    /// read by its `verify` command: nothing is restored anywhere.
    async fn verify_command(
        &self,
        c: &crate::source::command::CommandConfig,
        m: &Manifest,
        tested: &mut Tested,
    ) -> Result<()> {
        use crate::records::CheckResult;
        use crate::source::command::{CommandSource, shown};
        let Some(verify) = &c.verify else {
            return Err(Error::Usage(format!(
                "export `{}` is a command source without a `verify` command: its restore test has nothing to run",
                self.export.name
            )));
        };
        let started = Instant::now();
        let scratch = Scratch::new()?;
        let (repo, _, _) =
            restore::find(self.repos, &m.host, &m.export, &Selector::Id(m.id.clone())).await?;
        let workdir = scratch.path().to_path_buf();
        let staged = crate::pipeline::read_verified(
            &repo.target,
            m,
            &repo.keys.identities,
            self.progress.clone(),
            move |raw| source::stage_to_file(raw, &workdir).map_err(Error::from),
        )
        .await?;
        tested.target = repo.name().to_string();
        tested.receive_seconds = started.elapsed().as_secs_f64();
        if tested.receive_seconds > 0.0 {
            tested.restore_bytes_per_second = m.raw.size as f64 / tested.receive_seconds;
        }
        let validating = Instant::now();
        let src = CommandSource::new(c.clone(), &self.policy.base_dir);
        let check = format!("`{}` accepts the point", shown(verify));
        let result = tokio::task::spawn_blocking(move || {
            src.verify_file(staged.path(), &source::Cancel::default())
        })
        .await
        .map_err(|e| Error::Failed(format!("the verify command stopped: {e}")))?;
        tested.checks = vec![match result {
            Ok(()) => CheckResult {
                check,
                passed: true,
                detail: "exit code 0".into(),
            },
            Err(e) => CheckResult {
                check,
                passed: false,
                detail: e.to_string(),
            },
        }];
        tested.validate_seconds = validating.elapsed().as_secs_f64();
        drop(scratch);
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn point(days_ago: i64, raw: u64) -> Manifest {
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
