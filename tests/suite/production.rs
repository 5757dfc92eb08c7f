//! Agents in production: schedules and due runs, the overlap lock, retention
//! and prune, metrics, notifications, status, units and `drp check`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use drp_core::backend::Target;
use drp_core::config::TargetConfig;

use crate::harness::{Run, Scratch, scratch};
use crate::receivers;

fn sqlite_policy(s: &Scratch, extra: &str, export_extra: &str) -> String {
    let db = s.path("app.db");
    if !db.exists() {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("create table t (v text); insert into t values ('x');")
            .unwrap();
    }
    s.write(
        "policy.yaml",
        &format!(
            "host: a\nobjectives: {{rpo: 30m}}\n{extra}{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n{export_extra}",
            s.targets_yaml()
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

fn count_points(s: &Scratch, p: &str, from: &str) -> usize {
    let r = s.agent(&["--json", "list", "--policy", p, "--from", from]);
    r.ok();
    r.json()["points"].as_array().unwrap().len()
}

#[test]
fn due_runs_follow_the_schedule_and_collapse_missed_ones() {
    let s = scratch("due");
    let p = sqlite_policy(&s, "", "    schedule: \"0 6,18 * * *\"\n");
    let run = |now: &str| s.agent(&["run", "--due", "--policy", &p, "--now", now]);
    // Never run: due at once.
    let r = run("2026-11-21T07:00:00Z");
    r.ok();
    assert!(r.stdout.contains("app: due"), "{}", r.stdout);
    assert!(
        run("2026-11-21T07:30:00Z")
            .ok()
            .stdout
            .contains("nothing due")
    );
    assert!(
        run("2026-11-21T17:59:59Z")
            .ok()
            .stdout
            .contains("nothing due")
    );
    assert!(
        run("2026-11-21T18:00:00Z")
            .ok()
            .stdout
            .contains("app: due (slot 2026-11-21T18:00:00+00:00)")
    );
    assert!(
        run("2026-11-21T18:00:30Z")
            .ok()
            .stdout
            .contains("nothing due")
    );
    // Down for three days: six slots missed, one run.
    let r = run("2026-11-24T13:00:00Z");
    assert!(
        r.ok()
            .stdout
            .contains("app: due (slot 2026-11-24T06:00:00+00:00)"),
        "{}",
        r.stdout
    );
    assert!(
        run("2026-11-24T13:01:00Z")
            .ok()
            .stdout
            .contains("nothing due")
    );
    assert_eq!(count_points(&s, &p, "nas"), 3);
}

/// A policy whose PostgreSQL dump takes `delay` seconds before starting.
fn slow_pg_policy(s: &Scratch, delay: u32) -> String {
    let bin = s.path("pgbin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_dumpall"] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool))
            .unwrap();
    }
    let real = "/usr/lib/postgresql/15/bin/pg_dump";
    std::fs::write(bin.join("pg_dump"), format!("#!/bin/sh\n[ \"$1\" = --version ] && exec {real} --version\nsleep {delay}\nexec {real} \"$@\"\n")).unwrap();
    std::fs::set_permissions(bin.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let svc = crate::harness::services();
    s.write(
        "policy.yaml",
        &format!(
            "host: a\n{}exports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: postgres, password: {{env: TEST_PG_PASSWORD}}, bin_dir: {}}}\n    targets: [nas]\n",
            s.targets_yaml(),
            svc.get("DRP_TEST_PG_PORT"),
            bin.display()
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

#[test]
fn a_second_run_of_an_export_never_runs_alongside_and_a_killed_holder_frees_the_lock() {
    use std::os::unix::process::CommandExt;
    let s = scratch("lock");
    let p = slow_pg_policy(&s, 3);
    let mut first = s
        .agent_cmd(&["-q", "backup", "--policy", &p])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = s.path("state/a/locks/db.lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first run never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = s.agent(&["backup", "--policy", &p]);
    second.code(7);
    assert!(
        second
            .stderr
            .contains("export `db` is already running (pid"),
        "{}",
        second.stderr
    );

    // Kill the holder: the kernel releases its lock, the next run proceeds.
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{}", first.id())])
        .status();
    let third = s.agent(&["backup", "--policy", &p, "--wait", "30s"]);
    third.ok();
    assert_eq!(count_points(&s, &p, "nas"), 1);

    // With --wait, a second run waits for the first and then runs.
    let mut a = s
        .agent_cmd(&["-q", "backup", "--policy", &p])
        .spawn()
        .unwrap();
    let holder = format!("pid {} ", a.id());
    let started = Instant::now();
    while !std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .starts_with(&holder)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first run never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first run's dump sleeps 3 s after taking the lock, the second's
    // too: waiting, the second takes both; alongside, about one.
    let waited = Instant::now();
    let b = s.agent(&["--json", "backup", "--policy", &p, "--wait", "60s"]);
    let b_took = waited.elapsed();
    assert!(a.wait().unwrap().success());
    b.ok();
    assert!(
        b_took >= Duration::from_millis(4500),
        "the waiting run took {b_took:?}: it did not wait for the first"
    );
    assert_eq!(count_points(&s, &p, "nas"), 3);
    let time = |m: &serde_json::Value, key: &str| {
        chrono::DateTime::parse_from_rfc3339(m[key].as_str().unwrap()).unwrap()
    };
    let b_json = b.json();
    let b_point = &b_json["backups"][0]["targets"][0]["manifest"];
    let listed = s.agent(&["--json", "list", "--policy", &p]).json();
    let a_point = listed["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["manifest"])
        .filter(|m| m["id"] != b_point["id"])
        .max_by_key(|m| time(m, "started_at"))
        .unwrap()
        .clone();
    assert!(
        time(b_point, "started_at") >= time(&a_point, "finished_at"),
        "the waiting run started at {} before the first finished at {}",
        b_point["started_at"],
        a_point["finished_at"]
    );
}

fn repo_op(s: &Scratch, target: &str) -> opendal::Operator {
    let svc = crate::harness::services();
    let address = match target {
        "s3" => format!(
            "s3://{}/{}?endpoint={}&region=garage",
            svc.get("DRP_TEST_S3_BUCKET"),
            s.id,
            svc.get("DRP_TEST_S3_ENDPOINT")
        ),
        "sftp" => format!(
            "sftp://root@127.0.0.1:{}{}/{}?key={}&known_hosts=accept",
            svc.get("DRP_TEST_SFTP_PORT"),
            svc.get("DRP_TEST_SFTP_ROOT"),
            s.id,
            svc.get("DRP_TEST_SFTP_KEY")
        ),
        other => panic!("{other}"),
    };
    // SAFETY-free: the test process sets its own credentials for the S3 builder.
    let config = match TargetConfig::from_address(&address).unwrap() {
        TargetConfig::S3(mut c) => {
            c.access_key_id = Some(drp_core::config::SecretRef::Env(
                "DRP_TEST_S3_KEY_ID_FOR_TEST".into(),
            ));
            c.secret_access_key = Some(drp_core::config::SecretRef::Env(
                "DRP_TEST_S3_SECRET_FOR_TEST".into(),
            ));
            TargetConfig::S3(c)
        }
        c => c,
    };
    Target::open(target, &config, std::path::Path::new("."))
        .unwrap()
        .op
}

fn prune_on(target: &str) {
    let svc = crate::harness::services();
    // The operator below reads its S3 credentials from these variables.
    unsafe {
        std::env::set_var("DRP_TEST_S3_KEY_ID_FOR_TEST", svc.get("DRP_TEST_S3_KEY_ID"));
        std::env::set_var("DRP_TEST_S3_SECRET_FOR_TEST", svc.get("DRP_TEST_S3_SECRET"));
    }
    let s = scratch(&format!("prune_{target}"));
    let db = s.path("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("create table t (v text);")
        .unwrap();
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: a\nprune: {{grace: 1h}}\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [{target}]\n    retention: {{keep_last: 2, min_verified: 3}}\n",
                s.targets_yaml()
            ),
        )
        .to_str()
        .unwrap()
        .to_string();
    for _ in 0..5 {
        s.agent(&["backup", "--policy", &p]).ok();
    }
    // `min_verified` counts points whose digests were read back.
    s.agent(&["verify", "--policy", &p]).ok();
    let op = repo_op(&s, target);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // An orphan from long ago (a killed run), a young one (maybe a run in
    // progress elsewhere), and a point whose prune crashed after removing its
    // manifest: its data is now an orphan too.
    rt.block_on(async {
        op.write("a/app/data/20200101T000000Z-0badf00d.zst", vec![1u8; 100])
            .await
            .unwrap();
        let young_at = chrono::Utc::now() + chrono::Duration::minutes(110);
        let young = format!(
            "a/app/data/{}-00000001.zst",
            young_at.format("%Y%m%dT%H%M%SZ")
        );
        op.write(&young, vec![2u8; 100]).await.unwrap();
    });
    let listed = s.agent(&["--json", "list", "--policy", &p]);
    let oldest = listed.json()["points"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt.block_on(async {
        op.delete(&format!("a/app/manifests/{oldest}.json"))
            .await
            .unwrap()
    });

    let dry = s.agent(&["prune", "--policy", &p, "--dry-run"]);
    dry.ok();
    assert_eq!(
        dry.stdout.matches("would delete").count(),
        1,
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("min_verified 3"), "{}", dry.stdout);
    assert_eq!(count_points(&s, &p, target), 4, "a dry run deletes nothing");

    // Two hours on: past the grace period for everything but the young orphan.
    let later = (chrono::Utc::now() + chrono::Duration::minutes(120)).to_rfc3339();
    let run = s.agent(&["--json", "prune", "--policy", &p, "--now", &later]);
    run.ok();
    let report = run.json();
    let t = &report["prune"][0];
    let kept: Vec<_> = t["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["keep"] == true)
        .collect();
    assert_eq!(
        kept.len(),
        3,
        "keep_last 2 plus one for min_verified 3: {t}"
    );
    let orphans: Vec<String> = t["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    assert!(
        orphans.contains(&"a/app/data/20200101T000000Z-0badf00d.zst".to_string()),
        "{orphans:?}"
    );
    assert!(
        orphans.iter().any(|o| o.contains(&oldest)),
        "the half-pruned point's data: {orphans:?}"
    );
    assert_eq!(t["young_orphans"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(count_points(&s, &p, target), 3);
    // What is left restores and verifies.
    s.agent(&["verify", "--policy", &p]).ok();
    let remaining: Vec<String> = rt.block_on(async {
        op.list("a/app/data/")
            .await
            .unwrap()
            .iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.name().to_string())
            .collect()
    });
    assert_eq!(
        remaining.len(),
        4,
        "three points and the young orphan: {remaining:?}"
    );
}

#[test]
fn prune_keeps_by_rule_and_removes_orphans_on_s3() {
    prune_on("s3");
}

#[test]
fn prune_keeps_by_rule_and_removes_orphans_on_sftp() {
    prune_on("sftp");
}

#[test]
fn prune_reports_an_unreachable_target_and_deletes_nothing_there() {
    let s = scratch("prune_down");
    let p = sqlite_policy(&s, "", "    retention: {keep_last: 1}\n");
    s.agent(&["backup", "--policy", &p]).ok();
    s.agent(&["backup", "--policy", &p]).ok();
    // The NAS disappears (unmounted share): prune must fail loudly.
    std::fs::rename(s.path("nas"), s.path("nas-offline")).unwrap();
    std::fs::write(s.path("nas"), "not a directory").unwrap();
    let run = s.agent(&["prune", "--policy", &p]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nas"), "{}", run.stderr);
    std::fs::remove_file(s.path("nas")).unwrap();
    std::fs::rename(s.path("nas-offline"), s.path("nas")).unwrap();
    assert_eq!(count_points(&s, &p, "nas"), 2);
}

#[test]
fn metrics_textfile_parses_and_tells_the_rpo_exposure() {
    let s = scratch("metrics");
    let p = sqlite_policy(&s, "metrics: {textfile: metrics/drp.prom}\n", "");
    s.agent(&["backup", "--policy", &p]).ok();
    let text = std::fs::read_to_string(s.path("metrics/drp.prom")).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert_eq!(sample.labels.get("host"), Some("a"));
        match sample.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - value("drp_export_last_success_timestamp_seconds")).abs() < 60.0);
    assert_eq!(value("drp_export_last_result"), 1.0);
    assert_eq!(value("drp_export_recovery_points"), 1.0);
    assert_eq!(value("drp_export_rpo_objective_seconds"), 1800.0);
    let exposure = value("drp_export_rpo_exposure_seconds");
    assert!((0.0..60.0).contains(&exposure), "{exposure}");
    assert!(value("drp_export_last_raw_bytes") > 0.0);
    let points = scrape
        .samples
        .iter()
        .find(|x| x.metric == "drp_export_recovery_points")
        .unwrap();
    assert_eq!(points.labels.get("target"), Some("nas"));
}

#[test]
fn failures_are_notified_by_webhook_and_email_without_secrets() {
    let s = scratch("notify");
    let hook = receivers::http_sink(false);
    let smtp = receivers::smtp_sink();
    let svc = crate::harness::services();
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\nnotify:\n  webhook: {{url: \"{}\"}}\n  email: {{server: 127.0.0.1, port: {}, security: none, from: drp@db-1.example, to: [ops@example.com]}}\n{}exports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: postgres, password: {{env: BAD_PW}}}}\n    targets: [nas]\n",
            hook.url,
            smtp.port,
            s.targets_yaml(),
            svc.get("DRP_TEST_PG_PORT")
        ),
    );
    let secret = "hunter2-do-not-leak";
    let mut cmd = s.agent_cmd(&["backup", "--policy", p.to_str().unwrap()]);
    cmd.env("BAD_PW", secret);
    let run = Run::from(cmd.output().unwrap());
    run.code(1);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "one webhook call");
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["result"], "failed");
    assert_eq!(body["export"], "db");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("password authentication failed"),
        "{body}"
    );
    let mails = smtp.messages.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "one mail");
    assert!(
        mails[0].contains("RCPT TO:<ops@example.com>"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Subject: drp: backup of db-1/db FAILED"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("password authentication failed"),
        "{}",
        mails[0]
    );
    for text in bodies
        .iter()
        .chain(mails.iter())
        .chain([&run.stdout, &run.stderr])
    {
        assert!(!text.contains(secret), "the password leaked: {text}");
    }
    for entry in crate::harness::walk(s.path("state")) {
        assert!(
            !std::fs::read_to_string(&entry)
                .unwrap_or_default()
                .contains(secret)
        );
    }
}

#[test]
fn a_hanging_notification_endpoint_does_not_lose_the_backup() {
    let s = scratch("hang");
    let hook = receivers::http_sink(true);
    let p = sqlite_policy(
        &s,
        &format!(
            "notify:\n  on: [success, failure]\n  webhook: {{url: \"{}\", format: slack, timeout: 1s}}\n",
            hook.url
        ),
        "",
    );
    let started = Instant::now();
    let run = s.agent(&["backup", "--policy", &p]);
    run.ok();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        run.stderr
            .contains("webhook notification failed: POST to the webhook failed: timed out"),
        "{}",
        run.stderr
    );
    let bodies = hook.bodies.lock().unwrap().clone();
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert!(
        body["text"].as_str().unwrap().contains("succeeded"),
        "slack format: {body}"
    );
    assert_eq!(count_points(&s, &p, "nas"), 1);
    let status = s.agent(&["--json", "status", "--policy", &p]);
    status.ok();
    assert_eq!(status.json()["exports"][0]["last_result"], "ok");
}

#[test]
fn an_export_s_own_objectives_replace_the_host_s_in_check_status_and_metrics() {
    let s = scratch("ownrpo");
    // A weekly export under a host whose RPO is 30 minutes: only its own
    // objective makes the plan true.
    let weekly = "    schedule: \"0 3 * * sun\"\n";
    let p = sqlite_policy(&s, "metrics: {textfile: drp.prom}\n", weekly);
    s.drp(&["check", &p]).code(8);
    let p = sqlite_policy(
        &s,
        "metrics: {textfile: drp.prom}\n",
        &format!("{weekly}    objectives: {{rpo: 8d}}\n"),
    );
    let check = s.drp(&["--json", "check", &p]);
    check.ok();
    let posture = &check.json()["policies"][0]["exports"][0];
    assert_eq!(posture["rpo_objective_seconds"], 8 * 86_400, "{posture:#}");
    assert_eq!(posture["meets_rpo"], true, "{posture:#}");
    s.agent(&["backup", "--policy", &p]).ok();
    let status = s.agent(&["--json", "status", "--policy", &p]);
    status.ok();
    let e = &status.json()["exports"][0];
    assert_eq!(e["rpo_objective_seconds"], 8.0 * 86_400.0, "{e:#}");
    assert_eq!(e["within_rpo"], true, "{e:#}");
    let metrics = std::fs::read_to_string(s.path("drp.prom")).unwrap();
    assert!(
        metrics.contains("drp_export_rpo_objective_seconds{host=\"a\",export=\"app\"} 691200"),
        "{metrics}"
    );
    // A key the export does not know is located.
    let bad = sqlite_policy(&s, "", "    objectives: {rpo: 8d, rpp: 1h}\n");
    let r = s.drp(&["check", &bad]);
    r.code(2);
    assert!(r.stderr.contains("exports.app.objectives"), "{}", r.stderr);
}

#[test]
fn status_shows_exposure_against_the_objective() {
    let s = scratch("status");
    let p = sqlite_policy(&s, "", "");
    let before = s.agent(&["--json", "status", "--policy", &p]);
    before.code(8);
    assert_eq!(before.json()["exports"][0]["within_rpo"], false);
    s.agent(&["backup", "--policy", &p]).ok();
    let after = s.agent(&["--json", "status", "--policy", &p]);
    after.ok();
    let e = &after.json()["exports"][0];
    assert_eq!(e["within_rpo"], true);
    assert_eq!(e["points"]["nas"], 1);
    assert!(e["rpo_exposure_seconds"].as_f64().unwrap() < 60.0);
    assert!(e["next_run"].is_string());
    let table = s.agent(&["status", "--policy", &p]);
    assert!(
        table.stdout.contains("ok (objective 30m)"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("target `nas`: ok"),
        "{}",
        table.stdout
    );
}

#[test]
fn check_says_which_objectives_schedules_can_meet() {
    let s = scratch("check");
    let twice = sqlite_policy(&s, "", "    schedule: \"0 6,18 * * *\"\n");
    let r = s.drp(&["check", &twice]);
    r.code(8);
    assert!(
        r.stdout.contains("12h") && r.stdout.contains("CANNOT MEET"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("export every 30 minutes (`schedule: \"*/30 * * * *\"`)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("WAL replication"), "{}", r.stdout);
    let frequent = s.write(
        "frequent.yaml",
        &std::fs::read_to_string(&twice)
            .unwrap()
            .replace("0 6,18 * * *", "*/15 * * * *"),
    );
    let r = s.drp(&["--json", "check", frequent.to_str().unwrap()]);
    r.ok();
    assert_eq!(
        r.json()["policies"][0]["exports"][0]["worst_case_rpo_seconds"],
        900
    );
    let bad = s.write("bad.yaml", "host: a\ntimezone: Mars/Olympus\n");
    let r = s.drp(&["check", bad.to_str().unwrap()]);
    r.code(2);
    assert!(
        r.stderr
            .contains(":2:1: `timezone`: unknown time zone `Mars/Olympus`"),
        "{}",
        r.stderr
    );
    let cron_typo = s.write(
        "typo.yaml",
        &std::fs::read_to_string(&twice)
            .unwrap()
            .replace("0 6,18 * * *", "0 25 * * *"),
    );
    let r = s.drp(&["check", cron_typo.to_str().unwrap()]);
    r.code(2);
    assert!(
        r.stderr
            .contains("`exports.app.schedule`: invalid schedule `0 25 * * *`"),
        "{}",
        r.stderr
    );
}

#[test]
fn units_for_systemd_and_cron_come_from_the_policy() {
    let s = scratch("units");
    let p = sqlite_policy(
        &s,
        "timezone: Europe/Paris\n",
        "    schedule: \"0 6,18 * * *\"\n",
    );
    s.agent(&[
        "units",
        "--policy",
        &p,
        "--out",
        "units",
        "--bin",
        "/usr/local/bin/drp-agent",
    ])
    .ok();
    let service = std::fs::read_to_string(s.path("units/drp-agent-a.service")).unwrap();
    let timer = std::fs::read_to_string(s.path("units/drp-agent-a.timer")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart=/usr/local/bin/drp-agent run --due --quiet --policy {}",
            p
        )),
        "{service}"
    );
    assert!(
        timer.contains("OnCalendar=*-*-* 06,18:00:00 Europe/Paris"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true"), "{timer}");
    let printed = s.agent(&["units", "--policy", &p, "--bin", "/usr/local/bin/drp-agent"]);
    assert!(
        printed
            .stdout
            .contains("CRON_TZ=Europe/Paris\n0 6,18 * * * root /usr/local/bin/drp-agent run --due"),
        "{}",
        printed.stdout
    );
}

#[test]
fn the_daemon_keeps_its_schedule_reloads_on_sighup_and_stops_on_sigterm() {
    let s = scratch("daemon");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = sqlite_policy(
        &s,
        &format!("metrics: {{listen: \"127.0.0.1:{port}\"}}\n"),
        "    schedule: \"*/2 * * * * *\"\n    restore_test: {random_within: 0s}\n",
    );
    let mut daemon = KillOnDrop(
        s.agent_cmd(&["-q", "run", "--policy", &p])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !f() {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("two scheduled runs", &|| count_points(&s, &p, "nas") >= 2);
    // The daemon runs the export's restore test on its schedule too.
    wait_for("a scheduled restore test", &|| {
        http_get(port, "/metrics")
            .contains("drp_export_last_restore_test_result{host=\"a\",export=\"app\"} 1")
    });
    // A second daemon on the same policy refuses to start.
    let second = s.agent(&["run", "--policy", &p]);
    second.code(7);
    assert!(
        second
            .stderr
            .contains("a drp-agent daemon already keeps the schedule of a"),
        "{}",
        second.stderr
    );
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains("drp_export_last_success_timestamp_seconds{host=\"a\",export=\"app\"}"),
        "{metrics}"
    );

    // Reload with a second export.
    std::fs::copy(s.path("app.db"), s.path("other.db")).unwrap();
    let text = std::fs::read_to_string(&p).unwrap()
        + "  other:\n    source: {kind: sqlite, path: other.db}\n    targets: [nas]\n    schedule: \"*/2 * * * * *\"\n";
    std::fs::write(&p, text).unwrap();
    let pid = daemon.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    wait_for("the reloaded export", &|| {
        let r = s.agent(&["--json", "list", "--policy", &p, "--export", "other"]);
        r.code == 0 && !r.json()["points"].as_array().unwrap().is_empty()
    });
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
