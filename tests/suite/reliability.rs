//! Reliability: crashes at random moments, corrupted recovery points, full
//! disks, databases dying mid-dump, concurrent runs, hostile archives and
//! secrets — nothing is lost, nothing wrong is restored silently.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{Run, Scratch, psql, scratch, services, tree_digest};

/// A small, seeded random generator: the same seed kills at the same moments.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn seed() -> u64 {
    std::env::var("DRP_RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261121)
}

/// How many kills per target (CI: 34 × 3 targets = 102).
fn kills() -> usize {
    std::env::var("DRP_RELIABILITY_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(34)
}

fn media_tree(s: &Scratch, mib: usize) {
    let root = s.path("media");
    std::fs::create_dir_all(&root).unwrap();
    let mut r = Lcg(7);
    for f in 0..mib {
        let bytes: Vec<u8> = (0..1 << 20)
            .map(|i| {
                if i % 3 == 0 {
                    (r.next() & 0xff) as u8
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        std::fs::write(root.join(format!("f{f:03}.bin")), bytes).unwrap();
    }
}

fn kill_loop(target: &str) {
    let s = scratch(&format!("kill_{target}"));
    media_tree(&s, 6);
    let before = tree_digest(&s.path("media"));
    let p = s
        .write(
            "policy.yaml",
            &format!("host: k\nprune: {{grace: 1m}}\n{}exports:\n  media:\n    source: {{kind: directory, path: media}}\n    targets: [{target}]\n    compression: {{level: 3}}\n", s.targets_yaml()),
        )
        .display()
        .to_string();
    s.agent(&["init", "--policy", &p]).ok();
    // How long one backup takes here (the quickest of three, as other tests
    // share the cores), to kill inside that window.
    let window = (0..3)
        .map(|_| {
            let started = Instant::now();
            s.agent(&["-q", "backup", "--policy", &p]).ok();
            started.elapsed().as_millis() as u64
        })
        .min()
        .unwrap()
        + 50;
    let mut rng = Lcg(seed() ^ target.len() as u64);
    let mut killed_mid_run = 0;
    let mut listed_before: Vec<String> = Vec::new();
    for _ in 0..kills() {
        let delay = rng.next() % window;
        let mut child = s
            .agent_cmd(&["-q", "backup", "--policy", &p])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Never a damaged or half point in the listing.
        let listed = s.agent(&["--json", "list", "--policy", &p]);
        listed.ok();
        assert!(
            listed.json()["damaged"].as_array().unwrap().is_empty(),
            "{}",
            listed.stdout
        );
        // A kill never takes away a point that was there before it.
        let ids: Vec<String> = listed.json()["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["manifest"]["id"].as_str().unwrap().to_string())
            .collect();
        for id in &listed_before {
            assert!(ids.contains(id), "point {id} vanished after a kill");
        }
        listed_before = ids;
    }
    assert!(
        killed_mid_run >= kills() / 2,
        "only {killed_mid_run} kills landed mid-run: the window is off"
    );
    // Every listed point restores and verifies; the next backup succeeds.
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    // Prune removes what the kills left and a planted orphan (a data object
    // no manifest commits), so the check holds even if no kill left one.
    let op = target_op(&s, target);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let planted = "20200101T000000Z-0badf00d.zst";
    rt.block_on(op.write(&format!("k/media/data/{planted}"), vec![7u8; 4096]))
        .unwrap();
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let orphans = |args: &[&str]| -> (Vec<String>, Vec<String>) {
        let run = s.agent(args);
        run.ok();
        let json = run.json();
        let names = |key: &str| {
            json["prune"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t[key].as_array().unwrap().clone())
                .map(|o| o.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        (names("orphans"), names("young_orphans"))
    };
    let prune: [&str; 6] = ["--json", "prune", "--policy", &p, "--now", &later];
    let mut dry_run = prune.to_vec();
    dry_run.push("--dry-run");
    let (found, _) = orphans(&dry_run);
    assert!(
        found.iter().any(|o| o.ends_with(planted)),
        "the planted orphan is not found: {found:?}"
    );
    let (removed, _) = orphans(&prune);
    for o in &found {
        assert!(removed.contains(o), "prune left {o}: removed {removed:?}");
    }
    let (left, young) = orphans(&dry_run);
    assert!(
        left.is_empty() && young.is_empty(),
        "orphans after prune: {left:?}, {young:?}"
    );
    let verify = s.agent(&["verify", "--policy", &p]);
    verify.ok();
    let listed = s.agent(&["--json", "list", "--policy", &p]).json();
    let points = listed["points"].as_array().unwrap();
    assert!(points.len() >= 2);
    // What the target itself holds: a data object for each listed point and
    // nothing else, and no partial write.
    let ids: std::collections::BTreeSet<String> = points
        .iter()
        .map(|p| format!("{}.zst", p["manifest"]["id"].as_str().unwrap()))
        .collect();
    let stored: std::collections::BTreeSet<String> = rt
        .block_on(op.list("k/media/data/"))
        .unwrap()
        .iter()
        .filter(|e| e.metadata().is_file())
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(
        stored, ids,
        "data objects on {target} against the points listed"
    );
    let partial: Vec<String> = match rt.block_on(op.list(".drp-tmp/")) {
        Ok(entries) => entries
            .iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_string())
            .collect(),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list .drp-tmp/ on {target}: {e}"),
    };
    assert!(
        partial.is_empty(),
        "partial writes left on {target}: {partial:?}"
    );
    let newest = points.last().unwrap()["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = |id: &str, to: &str| {
        let to = s.path(to);
        s.drp(&[
            "restore",
            "--policy",
            &p,
            "--export",
            "media",
            "--point",
            id,
            "--to",
            to.to_str().unwrap(),
        ])
        .ok();
        tree_digest(&to)
    };
    assert_eq!(restored(&newest, "copy"), before);
    // And a point written during the kills, picked by the seed.
    let sample = points[(seed() as usize) % points.len()]["manifest"]["id"]
        .as_str()
        .unwrap();
    assert_eq!(restored(sample, "earlier"), before);
    eprintln!(
        "{target}: {} kills ({killed_mid_run} mid-run), {} orphans left by the kills and removed by prune, {} points listed, all verified",
        kills(),
        found.len() - 1,
        points.len()
    );
}

#[test]
fn killed_at_random_moments_to_the_local_nas() {
    kill_loop("nas");
}

#[test]
fn killed_at_random_moments_to_sftp() {
    kill_loop("sftp");
}

#[test]
fn killed_at_random_moments_to_s3() {
    kill_loop("s3");
}

fn target_op(s: &Scratch, target: &str) -> opendal::Operator {
    let svc = services();
    let config = match target {
        "nas" => {
            drp_core::config::TargetConfig::from_address(s.path("nas").to_str().unwrap()).unwrap()
        }
        "s3" => {
            let mut c = match drp_core::config::TargetConfig::from_address(&format!(
                "s3://{}/{}?endpoint={}&region=garage",
                svc.get("DRP_TEST_S3_BUCKET"),
                s.id,
                svc.get("DRP_TEST_S3_ENDPOINT")
            ))
            .unwrap()
            {
                drp_core::config::TargetConfig::S3(c) => c,
                _ => unreachable!(),
            };
            c.access_key_id = Some(drp_core::config::SecretRef::Env("TEST_OP_KEY".into()));
            c.secret_access_key = Some(drp_core::config::SecretRef::Env("TEST_OP_SECRET".into()));
            unsafe {
                std::env::set_var("TEST_OP_KEY", svc.get("DRP_TEST_S3_KEY_ID"));
                std::env::set_var("TEST_OP_SECRET", svc.get("DRP_TEST_S3_SECRET"));
            }
            drp_core::config::TargetConfig::S3(c)
        }
        "sftp" => drp_core::config::TargetConfig::from_address(&format!(
            "sftp://root@127.0.0.1:{}{}/{}?key={}&known_hosts=accept",
            svc.get("DRP_TEST_SFTP_PORT"),
            svc.get("DRP_TEST_SFTP_ROOT"),
            s.id,
            svc.get("DRP_TEST_SFTP_KEY")
        ))
        .unwrap(),
        other => panic!("{other}"),
    };
    drp_core::backend::Target::open(target, &config, std::path::Path::new("."))
        .unwrap()
        .op
}

fn corruption_matrix(target: &str) {
    let s = scratch(&format!("corrupt_{target}"));
    let db = s.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("create table t (id integer primary key, v text);")
        .unwrap();
    for i in 0..3000 {
        c.execute(
            "insert into t (v) values (?1)",
            [format!("value {i} {}", i * 7919 % 1000)],
        )
        .unwrap();
    }
    drop(c);
    let p = s
        .write(
            "policy.yaml",
            &format!("host: c\nprune: {{grace: 0s}}\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [{target}]\n", s.targets_yaml()),
        )
        .display()
        .to_string();
    let op = target_op(&s, target);
    let rt = tokio::runtime::Runtime::new().unwrap();
    type Damage = fn(&mut Vec<u8>, &mut serde_json::Value) -> (bool, bool);
    // (name, what it does to the data bytes and the manifest; returns (write data, write manifest))
    let cases: [(&str, Damage); 6] = [
        ("flip a byte", |d, _| {
            let i = d.len() / 3;
            d[i] ^= 0x40;
            (true, false)
        }),
        ("truncate", |d, _| {
            d.truncate(d.len() / 2);
            (true, false)
        }),
        ("delete the data object", |d, _| {
            d.clear();
            (true, false)
        }),
        ("alter the manifest's digest", |_, m| {
            m["stored"]["sha256"] = serde_json::json!("0".repeat(64));
            (false, true)
        }),
        ("alter the manifest's raw size", |_, m| {
            m["raw"]["size"] = serde_json::json!(m["raw"]["size"].as_u64().unwrap() + 1);
            (false, true)
        }),
        ("delete the manifest", |_, m| {
            *m = serde_json::Value::Null;
            (false, true)
        }),
    ];
    // A case counts as detected only when everything a user relies on held:
    // verify exits 4 naming the point, restore refuses, the live file is
    // unchanged. The count is what RELIABILITY.md reports.
    let total = cases.len();
    let mut detected = 0;
    let mut missed: Vec<String> = Vec::new();
    for (name, damage) in cases {
        let run = s.agent(&["--json", "backup", "--policy", &p]);
        run.ok();
        let manifest = run.json()["backups"][0]["targets"][0]["manifest"].clone();
        let id = manifest["id"].as_str().unwrap().to_string();
        let data_path = manifest["stored"]["object"].as_str().unwrap().to_string();
        let manifest_path = format!("c/app/manifests/{id}.json");
        let mut data = rt.block_on(op.read(&data_path)).unwrap().to_vec();
        let mut m = manifest.clone();
        let (write_data, write_manifest) = damage(&mut data, &mut m);
        rt.block_on(async {
            if write_data {
                if data.is_empty() {
                    op.delete(&data_path).await.unwrap();
                } else {
                    op.write(&data_path, data.clone()).await.unwrap();
                }
            }
            if write_manifest {
                if m.is_null() {
                    op.delete(&manifest_path).await.unwrap();
                } else {
                    op.write(&manifest_path, serde_json::to_vec(&m).unwrap())
                        .await
                        .unwrap();
                }
            }
        });
        let mut failures: Vec<String> = Vec::new();
        let verify = s.agent(&["verify", "--policy", &p]);
        if verify.code != 4 {
            failures.push(format!("verify exited {}, not 4", verify.code));
        }
        if !verify.stdout.contains(&id) {
            failures.push(format!("verify did not name point {id}"));
        }
        // Restore refuses and leaves the live database alone.
        let live = hex::encode(Sha256::digest(std::fs::read(&db).unwrap()));
        let restore = s.drp(&[
            "restore", "--policy", &p, "--export", "app", "--point", &id, "--yes",
        ]);
        if restore.code == 0 {
            failures.push("restore succeeded".into());
        }
        if hex::encode(Sha256::digest(std::fs::read(&db).unwrap())) != live {
            failures.push("the destination changed".into());
        }
        if failures.is_empty() {
            detected += 1;
        } else {
            missed.push(format!("{name}: {}\n{}", failures.join("; "), verify.all()));
        }
        // Clean the repository for the next case.
        rt.block_on(async {
            let _ = op.delete(&data_path).await;
            let _ = op.delete(&manifest_path).await;
        });
    }
    eprintln!("{target}: corruption detected {detected}/{total}");
    assert_eq!(
        detected,
        total,
        "{target}: corruption detected {detected}/{total}; missed:\n{}",
        missed.join("\n")
    );
    assert_eq!(total, 6, "RELIABILITY.md counts 6 cases per target");
}

#[test]
fn every_corruption_is_detected_on_the_local_nas() {
    corruption_matrix("nas");
}

#[test]
fn every_corruption_is_detected_on_sftp() {
    corruption_matrix("sftp");
}

#[test]
fn every_corruption_is_detected_on_s3() {
    corruption_matrix("s3");
}

#[test]
fn a_nas_that_fills_up_commits_nothing_and_keeps_older_points() {
    let s = scratch("full");
    let nas = s.path("nas");
    let img = s.path("nas.img");
    std::fs::create_dir_all(&nas).unwrap();
    let sh = |c: &str| {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&format!(
        "truncate -s 12M {0} && mkfs.ext4 -q -F {0} && mount -o loop {0} {1}",
        img.display(),
        nas.display()
    ));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(nas.clone());
    std::fs::create_dir_all(s.path("media")).unwrap();
    std::fs::write(s.path("media/small.txt"), "small").unwrap();
    let p = s
        .write("policy.yaml", "host: f\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  media:\n    source: {kind: directory, path: media}\n    targets: [nas]\n")
        .display()
        .to_string();
    s.agent(&["backup", "--policy", &p]).ok();
    // Now 20 MiB that do not compress: more than the NAS holds.
    let mut r = Lcg(3);
    let big: Vec<u8> = (0..20 << 20).map(|_| (r.next() & 0xff) as u8).collect();
    std::fs::write(s.path("media/big.bin"), big).unwrap();
    let run = s.agent(&["backup", "--policy", &p]);
    run.code(1);
    assert!(
        run.stderr.contains("target `nas` failed")
            && run.stderr.to_lowercase().contains("no space"),
        "{}",
        run.stderr
    );
    let listed = s.agent(&["--json", "list", "--policy", &p]);
    assert_eq!(
        listed.json()["points"].as_array().unwrap().len(),
        1,
        "only the earlier point"
    );
    s.agent(&["verify", "--policy", &p]).ok();
}

#[test]
fn a_database_going_down_mid_dump_fails_cleanly_with_metric_and_notification() {
    let s = scratch("dbdown");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t as select i, md5(i::text) as a, md5((i*3)::text) as b from generate_series(1, 400000) i",
    );
    let hook = crate::receivers::http_sink(false);
    let svc = services();
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: d\nmetrics: {{textfile: drp.prom}}\nnotify: {{webhook: {{url: \"{}\"}}}}\n{}exports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: {db}, password: {{env: TEST_PG_PASSWORD}}}}\n    targets: [nas]\n",
                hook.url,
                s.targets_yaml(),
                svc.get("DRP_TEST_PG_PORT")
            ),
        )
        .display()
        .to_string();
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    let mut killed = false;
    for _attempt in 0..5 {
        let child = s
            .agent_cmd(&["backup", "--policy", &p])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Terminate the dump's session as soon as it is copying data.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let n = psql(
                "postgres",
                &format!(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = '{db}' and query ilike 'copy %'"
                ),
            );
            if n != "0" {
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let run = Run::from(child.wait_with_output().unwrap());
        if killed && run.code != 0 {
            assert_eq!(run.code, 1);
            assert!(run.stderr.contains("`pg_dump` failed"), "{}", run.stderr);
            assert!(run.stderr.contains("nothing committed"), "{}", run.stderr);
            break;
        }
        killed = false;
    }
    assert!(killed, "the dump was never caught mid-run");
    let listed = s.agent(&["--json", "list", "--policy", &p]);
    assert_eq!(
        listed.json()["points"].as_array().unwrap().len(),
        1,
        "only the earlier point"
    );
    let prom = std::fs::read_to_string(s.path("drp.prom")).unwrap();
    assert!(
        prom.contains("drp_export_last_result{host=\"d\",export=\"db\"} 0"),
        "{prom}"
    );
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"result\":\"failed\"") && b.contains("pg_dump")),
        "{bodies:?}"
    );
    psql("postgres", &format!("drop database {db} with (force)"));
}

#[test]
fn a_restore_during_a_backup_gets_the_committed_point_whole() {
    let s = scratch("concurrent");
    media_tree(&s, 4);
    let before = tree_digest(&s.path("media"));
    let p = s
        .write("policy.yaml", &format!("host: x\n{}exports:\n  media:\n    source: {{kind: directory, path: media}}\n    targets: [s3]\n", s.targets_yaml()))
        .display()
        .to_string();
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    let first = s.agent(&["--json", "list", "--policy", &p]).json()["points"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The tree changes and a new backup runs while the first point is restored.
    std::fs::write(s.path("media/new.txt"), "after the first point").unwrap();
    let mut backup = s
        .agent_cmd(&["-q", "backup", "--policy", &p])
        .spawn()
        .unwrap();
    let copy = s.path("copy");
    s.drp(&[
        "-q",
        "restore",
        "--policy",
        &p,
        "--export",
        "media",
        "--point",
        &first,
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    assert!(backup.wait().unwrap().success());
    assert_eq!(
        tree_digest(&copy),
        before,
        "the restore got the first point, not a mix"
    );
    // And a prune racing a backup on this host waits for nothing: it is refused.
    // Whichever takes the export's lock first runs; the other says so.
    let slow = s
        .agent_cmd(&["-q", "backup", "--policy", &p])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prune = s.agent(&["prune", "--policy", &p]);
    let slow = Run::from(slow.wait_with_output().unwrap());
    assert!(
        prune.code == 0 || (prune.code == 7 && prune.stderr.contains("already running")),
        "{}",
        prune.all()
    );
    assert!(
        slow.code == 0 || (slow.code == 7 && slow.stderr.contains("already running")),
        "{}",
        slow.all()
    );
    let expected = if slow.code == 0 { 3 } else { 2 };
    assert_eq!(
        s.agent(&["--json", "list", "--policy", &p]).json()["points"]
            .as_array()
            .unwrap()
            .len(),
        expected
    );
    s.agent(&["verify", "--policy", &p]).ok();
}

fn crafted_archive(s: &Scratch, entries: &[(&str, tar::EntryType, Option<&str>)]) -> String {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                b"evil"
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            let raw = name.as_bytes();
            h.as_gnu_mut().unwrap().name[..raw.len()].copy_from_slice(raw);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.finish().unwrap();
    }
    let stored = zstd::encode_all(&tar_bytes[..], 3).unwrap();
    let id = format!("20260101T000000Z-{:08x}", crate::harness::rand_u32());
    let object = format!("a/site/data/{id}.zst");
    let manifest = serde_json::json!({
        "format": 1, "id": id, "host": "a", "export": "site", "kind": "directory", "source": {},
        "consistency_time": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "raw": {"size": tar_bytes.len(), "sha256": hex::encode(Sha256::digest(&tar_bytes))},
        "stored": {"object": object, "size": stored.len(), "sha256": hex::encode(Sha256::digest(&stored))},
        "compression": {"algorithm": "zstd", "level": 3}, "tools": {}, "agent": "crafted",
    });
    std::fs::create_dir_all(s.path("nas/a/site/data")).unwrap();
    std::fs::create_dir_all(s.path("nas/a/site/manifests")).unwrap();
    std::fs::write(
        s.path("nas/drp-repository.json"),
        r#"{"format":1,"created_at":"2026-01-01T00:00:00Z","created_by":"test"}"#,
    )
    .unwrap();
    std::fs::write(s.path(&format!("nas/{object}")), &stored).unwrap();
    std::fs::write(
        s.path(&format!("nas/a/site/manifests/{id}.json")),
        manifest.to_string(),
    )
    .unwrap();
    id
}

#[test]
fn hostile_archives_are_refused_whole() {
    use tar::EntryType::{Regular, Symlink};
    type Entries<'a> = Vec<(&'a str, tar::EntryType, Option<&'a str>)>;
    let cases: [(&str, Entries, &str); 4] = [
        (
            "climbs out",
            vec![("ok.txt", Regular, None), ("../escaped.txt", Regular, None)],
            "`../escaped.txt` would be written outside",
        ),
        (
            "absolute",
            vec![("/tmp/drp-absolute-escape.txt", Regular, None)],
            "would be written outside",
        ),
        (
            "absolute link",
            vec![("passwd", Symlink, Some("/etc/passwd"))],
            "symbolic link to `/etc/passwd`, outside",
        ),
        (
            "link climbing out",
            vec![("sub", Symlink, Some("../../outside"))],
            "symbolic link to `../../outside`, outside",
        ),
    ];
    for (name, entries, expected) in cases {
        let s = scratch("hostile");
        let id = crafted_archive(&s, &entries);
        std::fs::create_dir_all(s.path("www")).unwrap();
        let dest = s.path("www/site");
        let run = s.agent(&[
            "restore",
            "--target",
            s.path("nas").to_str().unwrap(),
            "--host",
            "a",
            "--export",
            "site",
            "--point",
            &id,
            "--to",
            dest.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 1, "{name}: {}", run.all());
        assert!(run.stderr.contains(expected), "{name}: {}", run.stderr);
        assert!(!dest.exists(), "{name}: a refused restore creates nothing");
        assert!(
            !s.path("www/escaped.txt").exists()
                && !std::path::Path::new("/tmp/drp-absolute-escape.txt").exists()
        );
        let leftovers: Vec<_> = std::fs::read_dir(s.path("www")).unwrap().collect();
        assert!(leftovers.is_empty(), "{name}: staging left behind");
    }
}

#[test]
fn secrets_never_appear_in_outputs_and_files_are_private() {
    let s = scratch("secrets");
    let hook = crate::receivers::http_sink(false);
    let db = s.path("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("create table t (v); insert into t values (1);")
        .unwrap();
    let svc = services();
    let pw_file = s.write(
        "pg-password",
        &format!("{}\n", svc.get("DRP_TEST_PG_PASSWORD")),
    );
    let dbname = s.id.clone();
    psql("postgres", &format!("create database {dbname}"));
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: s\nmetrics: {{textfile: out/drp.prom}}\nnotify: {{on: [success, failure], webhook: {{url: \"{}\"}}}}\n{}exports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: {dbname}, password: {{file: {}}}}}\n    targets: [nas, s3]\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n",
                hook.url,
                s.targets_yaml(),
                svc.get("DRP_TEST_PG_PORT"),
                pw_file.display()
            ),
        )
        .display()
        .to_string();
    let secrets = [
        svc.get("DRP_TEST_PG_PASSWORD"),
        svc.get("DRP_TEST_S3_SECRET"),
    ];
    let mut outputs: Vec<String> = Vec::new();
    for args in [
        vec!["-vv", "backup", "--policy", &p],
        vec!["-vv", "--json", "list", "--policy", &p],
        vec!["-vv", "verify", "--policy", &p],
        vec!["-vv", "--json", "status", "--policy", &p],
    ] {
        let r = s.agent(&args);
        r.ok();
        assert!(!r.all().is_empty(), "{args:?} printed nothing to scan");
        outputs.push(r.all());
    }
    let r = s.drp(&[
        "-vv",
        "restore",
        "--policy",
        &p,
        "--export",
        "db",
        "--to",
        &format!("{dbname}_copy"),
    ]);
    r.ok();
    outputs.push(r.all());
    let commands = outputs.len();
    // One notification per export's backup, each with a body.
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(
        bodies.len() >= 2 && bodies.iter().all(|b| !b.is_empty()),
        "expected a webhook body per export, got {bodies:?}"
    );
    outputs.extend(bodies.iter().cloned());
    let metrics = s.path("out/drp.prom");
    let metrics_text = std::fs::read_to_string(&metrics)
        .unwrap_or_else(|e| panic!("no metrics file at {}: {e}", metrics.display()));
    assert!(
        metrics_text.contains("drp_export_last_result"),
        "the metrics file holds no export's result:\n{metrics_text}"
    );
    let (mut points, mut raw_bytes, mut manifests, mut state_files) = (0, 0, 0, 0);
    for f in crate::harness::walk(s.path("nas"))
        .into_iter()
        .chain(crate::harness::walk(s.path("state")))
        .chain(crate::harness::walk(s.path("out")))
    {
        if let Ok(text) = std::fs::read_to_string(&f) {
            outputs.push(text);
        }
        if f.starts_with(s.path("state")) {
            state_files += 1;
        }
        if f.parent().is_some_and(|d| d.ends_with("manifests"))
            && f.extension().is_some_and(|e| e == "json")
        {
            manifests += 1;
        }
        // The stored points, decompressed: the dumps and the globals they
        // carry; and the catalogue's index segments (manifests, compressed).
        if f.extension().is_some_and(|e| e == "zst") {
            let raw = zstd::decode_all(&std::fs::read(&f).unwrap()[..]).unwrap();
            assert!(!raw.is_empty(), "{} holds an empty point", f.display());
            if !f.parent().is_some_and(|d| d.ends_with("index")) {
                points += 1;
                raw_bytes += raw.len();
            }
            outputs.push(String::from_utf8_lossy(&raw).into_owned());
        }
        // Nothing drp wrote is readable or writable by other users.
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o007,
            0,
            "{} is open to other users: {mode:o}",
            f.display()
        );
    }
    // Both exports' points and manifests on the NAS (the PostgreSQL one's
    // also on S3), the state and the metrics file were all scanned.
    assert_eq!(points, 2, "points scanned on the NAS");
    assert_eq!(manifests, 2, "manifests scanned on the NAS");
    assert!(state_files >= 1, "no state file scanned");
    eprintln!(
        "scanned: {commands} command outputs, {} webhook bodies, {points} points ({raw_bytes} bytes raw), {manifests} manifests, {state_files} state files, the metrics file ({} bytes)",
        bodies.len(),
        metrics_text.len()
    );
    for out in &outputs {
        for secret in secrets {
            assert!(!out.contains(secret), "a secret leaked into:\n{out}");
        }
    }
    psql("postgres", &format!("drop database {dbname}"));
    psql("postgres", &format!("drop database {dbname}_copy"));
}

#[test]
fn s3_over_tls_verifies_certificates_by_default() {
    let s = scratch("tls");
    // A TLS server on loopback with a self-signed certificate.
    let key = s.path("key.pem");
    let cert = s.path("cert.pem");
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "import http.server, ssl\nsrv = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain('{}', '{}')\nsrv.socket = ctx.wrap_socket(srv.socket, server_side=True)\nsrv.serve_forever()\n",
        cert.display(),
        key.display()
    );
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(s.path("a.txt"), "x").unwrap();
    let p = s
        .write(
            "policy.yaml",
            &format!("host: t\ntargets:\n  s3:\n    kind: s3\n    bucket: b\n    endpoint: https://127.0.0.1:{port}\n    region: x\n    access_key_id: {{env: TEST_S3_KEY_ID}}\n    secret_access_key: {{env: TEST_S3_SECRET}}\nexports:\n  f:\n    source: {{kind: directory, path: .}}\n    targets: [s3]\n"),
        )
        .display()
        .to_string();
    let run = s.agent(&["backup", "--policy", &p]);
    let _ = server.kill();
    let _ = server.wait();
    run.code(1);
    assert!(
        run.stderr.to_lowercase().contains("certificate")
            || run.stderr.contains("UnknownIssuer")
            || run.stderr.contains("invalid peer certificate"),
        "{}",
        run.stderr
    );
}

/// Starts (or restarts, on its data) a private Garage in `dir`.
fn private_garage(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/services/garage.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tests/services/garage.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Takes a first point of `media`, changes it, and starts a second backup
/// that is uploading by the time this returns.
fn second_backup_under_way(s: &Scratch, p: &str) -> std::process::Child {
    s.agent(&["-q", "backup", "--policy", p]).ok();
    std::fs::write(s.path("media/changed.txt"), "after the first point").unwrap();
    let child = s
        .agent_cmd(&["backup", "--policy", p])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    child
}

/// Once the target is back: the failed run left nothing visible, the first
/// point verifies, and a new backup succeeds.
fn only_the_first_point_then_a_new_one(s: &Scratch, p: &str) {
    let listed = s.agent(&["--json", "list", "--policy", p]);
    assert_eq!(
        listed.json()["points"].as_array().unwrap().len(),
        1,
        "{}",
        listed.stdout
    );
    s.agent(&["verify", "--policy", p]).ok();
    s.agent(&["-q", "backup", "--policy", p]).ok();
}

#[test]
fn an_s3_server_stopped_mid_upload_fails_cleanly_and_recovers() {
    let mut s = scratch("s3down");
    let garage = private_garage(&s.path("garage"));
    s.set_env("G_KEY", &garage["S3_KEY_ID"]);
    s.set_env("G_SECRET", &garage["S3_SECRET"]);
    let hook = crate::receivers::http_sink(false);
    media_tree(&s, 24);
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: o\nmetrics: {{textfile: drp.prom}}\nnotify: {{webhook: {{url: \"{}\"}}}}\ntargets:\n  s3:\n    kind: s3\n    bucket: drp-test\n    endpoint: http://127.0.0.1:{}\n    region: garage\n    access_key_id: {{env: G_KEY}}\n    secret_access_key: {{env: G_SECRET}}\nexports:\n  media:\n    source: {{kind: directory, path: media}}\n    targets: [s3]\n    compression: {{level: 12}}\n",
                hook.url, garage["S3_PORT"]
            ),
        )
        .display()
        .to_string();
    let child = second_backup_under_way(&s, &p);
    // The server dies mid-upload and stays down longer than the retries last.
    std::process::Command::new("kill")
        .args(["-9", &garage["GARAGE_PID"]])
        .status()
        .unwrap();
    let started = Instant::now();
    let run = Run::from(child.wait_with_output().unwrap());
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("target `s3` failed"), "{}", run.stderr);
    assert!(
        took < Duration::from_secs(120),
        "retries are bounded: {took:?}"
    );
    let prom = std::fs::read_to_string(s.path("drp.prom")).unwrap();
    assert!(
        prom.contains("drp_export_last_result{host=\"o\",export=\"media\"} 0"),
        "{prom}"
    );
    assert!(
        hook.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("\"result\":\"failed\""))
    );
    // Back up again: nothing of the failed run is visible, the first point is intact.
    private_garage(&s.path("garage"));
    only_the_first_point_then_a_new_one(&s, &p);
    let pid = std::fs::read_to_string(s.path("garage/pid")).unwrap();
    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
}

/// Kills a process and all its descendants (an sshd and its sessions).
fn kill_tree(pid: u32) {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !pids.contains(&child) {
                pids.push(child);
            }
        }
        i += 1;
    }
    for p in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
}

/// A private sshd on a free port, with the suite's keys.
fn private_sshd(s: &Scratch, port: u16) -> std::process::Child {
    let svc = services();
    let shared = std::path::Path::new(svc.get("DRP_TEST_SFTP_KEY"))
        .parent()
        .unwrap()
        .to_path_buf();
    let conf = std::fs::read_to_string(shared.join("sshd_config"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("Port ") && !l.starts_with("PidFile "))
        .collect::<Vec<_>>()
        .join("\n");
    let path = s.write(
        "sshd_config",
        &format!(
            "Port {port}\nPidFile {}\n{conf}\n",
            s.path("sshd.pid").display()
        ),
    );
    let child = std::process::Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(&path)
        .arg("-E")
        .arg(s.path("sshd.log"))
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the private sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn an_sftp_connection_cut_mid_upload_fails_cleanly_and_recovers() {
    let s = scratch("sftpcut");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sshd = private_sshd(&s, port);
    let svc = services();
    media_tree(&s, 24);
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: o\ntargets:\n  nas:\n    kind: sftp\n    host: 127.0.0.1\n    port: {port}\n    user: root\n    key: {}\n    path: {}/repo\n    known_hosts: accept\nexports:\n  media:\n    source: {{kind: directory, path: media}}\n    targets: [nas]\n    compression: {{level: 12}}\n",
                svc.get("DRP_TEST_SFTP_KEY"),
                s.path("sftp").display()
            ),
        )
        .display()
        .to_string();
    let child = second_backup_under_way(&s, &p);
    // The NAS's SSH server and every session it holds go away mid-upload.
    kill_tree(sshd.id());
    let _ = sshd.wait();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("target `nas` failed"), "{}", run.stderr);
    // The server comes back: the failed run left nothing visible, the first point is whole.
    sshd = private_sshd(&s, port);
    only_the_first_point_then_a_new_one(&s, &p);
    kill_tree(sshd.id());
    let _ = sshd.wait();
}
