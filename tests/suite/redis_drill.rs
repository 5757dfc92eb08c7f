//! The streaming platform's Redis drilled like its databases: the shipped
//! runbook `runbooks/redis-lost.yaml`, against a real `redis-server` on a
//! socket in the scratch folder and the shipped `policies/redis.yaml` with
//! only its systemd unit and its password file swapped for the test's. The
//! drill flushes the server, the restore brings back every key of the
//! point, the report measures RTO and RPO within the objectives, and
//! `drp report` lists the drill; a verify asking for more keys than the
//! point holds fails it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::harness::Scratch;
use crate::redis::{PASSWORD, TestRedis, fill, redis_scratch};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// `policies/redis.yaml` as shipped, but the server is stopped and started
/// by commands (no systemd here) and its password is in a scratch file.
fn shipped_policy(s: &Scratch, r: &TestRedis, password_file: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo_file("policies/redis.yaml")).unwrap();
    let stop = s.write(
        "stop-redis.sh",
        &format!(
            "#!/bin/sh\nREDISCLI_AUTH=\"$(cat {})\" exec redis-cli --no-auth-warning -s {} SHUTDOWN\n",
            password_file.display(),
            r.sock.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&stop, std::fs::Permissions::from_mode(0o755)).unwrap();
    let swaps = [
        (
            "unit: redis-server.service".to_string(),
            format!(
                "stop: [{}]\n      start: [redis-server, {}]",
                stop.display(),
                r.conf.display()
            ),
        ),
        (
            "password: {file: /etc/drp/secrets/redis}".to_string(),
            format!("password: {{file: {}}}", password_file.display()),
        ),
    ];
    let mut text = shipped;
    for (from, to) in swaps {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "`{from}` in policies/redis.yaml"
        );
        text = text.replace(&from, &to);
    }
    s.write("redis-policy.yaml", &text)
}

fn drill(s: &Scratch) -> crate::harness::Run {
    let runbook = repo_file("runbooks/redis-lost.yaml");
    s.drp(&[
        "--json",
        "drill",
        runbook.to_str().unwrap(),
        "--yes",
        "--out",
        "reports",
    ])
}

#[test]
fn the_redis_lost_drill_flushes_the_server_restores_every_key_and_meets_its_objectives() {
    let mut s = redis_scratch("redis_drill");
    let r = TestRedis::start(&s, true);
    let password_file = s.write("redis-password", PASSWORD);
    let policy = shipped_policy(&s, &r, &password_file);
    let p = policy.to_str().unwrap();
    for (k, v) in [
        ("REDIS_POLICY", p.to_string()),
        ("REDIS_SOCKET", r.sock.display().to_string()),
        ("REDIS_PASSWORD_FILE", password_file.display().to_string()),
        ("DRP_NAS", s.path("nas").display().to_string()),
    ] {
        s.set_env(k, &v);
    }

    // The scheduled point, then reservations made after it: the drill's
    // own point (backup_first) must hold them too.
    fill(&r, 3000);
    let run = s.agent(&[
        "--json",
        "backup",
        "--policy",
        p,
        "--export",
        "reservations",
    ]);
    run.ok();
    let scheduled = run.json()["backups"][0]["targets"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..40 {
        r.cli(&["SET", &format!("stock:sku-{i}"), &format!("{}", 100 - i)]);
    }
    r.cli(&["EXPIRE", "stock:sku-7", "600"]);
    let keys = r.dbsize();
    assert_eq!(keys, 3040);
    // Every key, value and expiry of the data set, in one digest.
    let digest = r.cli(&["DEBUG", "DIGEST"]);
    s.set_env("REDIS_MIN_KEYS", &keys.to_string());

    let run = drill(&s);
    run.ok();
    let report = run.json();
    assert_eq!(report["status"], "passed", "{report:#}");

    // The failure was injected (the detect step saw the keys gone), then
    // the drill's point came back whole: the same digest, the later
    // reservations with their expiry, the other database.
    let steps = report["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps
            .iter()
            .find(|st| st["name"] == name)
            .unwrap_or_else(|| panic!("no step `{name}`: {report:#}"))
    };
    assert_eq!(
        step("an operator flushes the reservations server")["status"],
        "passed"
    );
    assert!(
        step("the reservations are gone")["message"]
            .as_str()
            .unwrap()
            .contains("0 keys"),
        "{report:#}"
    );
    assert_eq!(r.dbsize(), keys);
    assert_eq!(r.cli(&["DEBUG", "DIGEST"]), digest);
    assert_eq!(r.cli(&["GET", "stock:sku-39"]), "61");
    let ttl: i64 = r.cli(&["TTL", "stock:sku-7"]).parse().unwrap();
    assert!((1..=600).contains(&ttl), "{ttl}");
    assert_eq!(r.cli(&["-n", "3", "GET", "other:db"]), "yes");
    // What the restore replaced is kept beside it.
    let names: Vec<String> = std::fs::read_dir(&r.data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("dump.rdb.drp-replaced-"))
            && names
                .iter()
                .any(|n| n.starts_with("appendonlydir.drp-replaced-")),
        "{names:?}"
    );

    // Measured against the objectives: the RTO from the failure to the
    // last verify step, the RPO from the failure back to the point.
    let t_fail = time(&report["t_fail"]);
    let rto = report["rto"]["measured_seconds"].as_f64().unwrap();
    assert_eq!(report["objectives"]["rto_seconds"].as_f64(), Some(900.0));
    assert_eq!(report["objectives"]["rpo_seconds"].as_f64(), Some(1800.0));
    assert!(rto > 0.0 && rto <= 900.0, "{report:#}");
    let verified = time(&step("the reservations are back")["ended_at"]);
    assert!(
        (rto - (verified - t_fail).num_milliseconds() as f64 / 1000.0).abs() < 0.01,
        "RTO {rto} vs the timestamps"
    );
    let restored = &report["rpo"]["restored"][0];
    assert_eq!(restored["export"], "reservations");
    assert_ne!(restored["id"], scheduled.as_str(), "the drill's own point");
    let id = restored["id"].as_str().unwrap();
    assert!(
        step("restore the reservations to just before the failure")["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("restored {id} ")),
        "{report:#}"
    );
    let rpo = report["rpo"]["measured_seconds"].as_f64().unwrap();
    let gap = (t_fail - time(&restored["consistency_time"])).num_milliseconds() as f64 / 1000.0;
    assert!(gap > 0.0 && (rpo - gap).abs() < 1.0, "RPO {rpo} vs {gap}");
    assert!(rpo <= 1800.0, "{report:#}");

    // Broken on purpose: a verify asking for one key more than the point
    // holds fails the drill.
    s.set_env("REDIS_MIN_KEYS", &(keys + 1).to_string());
    let run = drill(&s);
    run.code(1);
    let failed = run.json();
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let verify = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "the reservations are back")
        .unwrap();
    assert_eq!(verify["status"], "failed", "{failed:#}");
    assert!(
        verify["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("exited 1, expected 0: {keys} keys")),
        "{failed:#}"
    );
    assert_eq!(r.dbsize(), keys, "the restore still put the point back");

    // The compliance report lists both drills of the runbook.
    let c = s.drp(&["--json", "report", "--policy", p]).json();
    let rb = c["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rb| rb["runbook"] == "redis-lost")
        .unwrap_or_else(|| panic!("redis-lost not listed: {c:#}"))
        .clone();
    assert_eq!(rb["drills"], 2, "{c:#}");
    assert_eq!(rb["passed"], 1, "{c:#}");
    assert_eq!(rb["failed"], 1, "{c:#}");
}
