//! Encrypted and signed recovery points: a host that backs up holds only
//! public keys and cannot read what it wrote; any one identity restores;
//! altered, truncated, swapped or planted objects and records are refused
//! with the reason, and nothing is replaced.

use std::path::{Path, PathBuf};

use crate::harness::{Run, Scratch, pg_table_digest, psql, scratch, tree_digest};

/// A line no compressor hides: if it is in a stored object, the object is
/// not encrypted.
const MARKER: &str = "payroll-2026-IBAN-FR7630006000011234567890189";

fn site(s: &Scratch) -> PathBuf {
    let root = s.path("site");
    std::fs::create_dir_all(root.join("docs/été")).unwrap();
    std::fs::write(
        root.join("docs/payroll.csv"),
        format!("name,iban\nZoé,{MARKER}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("docs/été/notes-日本語.txt"),
        "ünïcödé\n".repeat(500),
    )
    .unwrap();
    // Incompressible and larger than many 64 KiB age chunks.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(root.join("blob.bin"), noise).unwrap();
    root
}

struct Keys {
    ops: (PathBuf, String),
    escrow: (PathBuf, String),
    signing: (PathBuf, String),
}

fn keys(s: &Scratch) -> Keys {
    Keys {
        ops: s.keypair("ops.age", false),
        escrow: s.keypair("escrow.age", false),
        signing: s.keypair("db-1.signing", true),
    }
}

/// A policy of host `host` encrypting to ops and escrow and signing with
/// `signing`; `extra` goes under `keys:`.
fn policy(s: &Scratch, file: &str, host: &str, k: &Keys, signing: &Path, extra: &str) -> String {
    s.write(
        file,
        &format!(
            "host: {host}\nkeys:\n  recipients:\n    ops: {}\n    escrow: {}\n  signing: {{file: {}}}\n{extra}{}exports:\n  site:\n    source: {{kind: directory, path: site}}\n    targets: [nas, s3]\n",
            k.ops.1,
            k.escrow.1,
            signing.display(),
            s.targets_yaml()
        ),
    )
    .display()
    .to_string()
}

fn restore(s: &Scratch, p: &str, to: &Path, more: &[&str]) -> Run {
    let mut args = vec![
        "restore",
        "--policy",
        p,
        "--export",
        "site",
        "--to",
        to.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    s.drp(&args)
}

fn stored_object(s: &Scratch, manifest: &serde_json::Value) -> PathBuf {
    s.path("nas")
        .join(manifest["stored"]["object"].as_str().unwrap())
}

#[test]
fn two_recipients_each_identity_restores_and_the_host_that_backs_up_cannot() {
    let s = scratch("sealed");
    let before = tree_digest(&site(&s));
    let k = keys(&s);
    let p = policy(&s, "policy.yaml", "db-1", &k, &k.signing.0, "");
    let backup = s.agent(&["--json", "backup", "--policy", &p]);
    backup.ok();
    let targets = backup.json()["backups"][0]["targets"].clone();
    let manifest = targets[0]["manifest"].clone();
    let enc = &manifest["encryption"];
    assert_eq!(enc["format"], "age", "{manifest}");
    let names: Vec<&str> = enc["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["escrow", "ops"]);
    assert!(manifest["signed_by"].is_string(), "{manifest}");
    // Both targets encrypt to the same keys: one encryption serves both.
    assert_eq!(
        targets[1]["manifest"]["stored"]["sha256"],
        manifest["stored"]["sha256"]
    );

    // What lies on the NAS is age, not zstd, and hides even short strings.
    let object = std::fs::read(stored_object(&s, &manifest)).unwrap();
    assert!(object.starts_with(b"age-encryption.org/v1\n"));
    assert!(!object.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));

    // The host holds public keys only: it can check what it stored, not read it.
    let verify = s.agent(&["verify", "--policy", &p]);
    verify.ok();
    let to = s.path("restored");
    let refused = restore(&s, &p, &to, &[]);
    refused.code(2);
    assert!(
        refused.stderr.contains("encrypted to escrow (") && refused.stderr.contains("--identity"),
        "{}",
        refused.stderr
    );
    assert!(!to.exists(), "a refused restore created its destination");

    // Either identity restores, from either target.
    for (identity, from) in [(&k.ops.0, "nas"), (&k.escrow.0, "s3")] {
        let to = s.path(&format!("restored-{from}"));
        restore(
            &s,
            &p,
            &to,
            &["--identity", identity.to_str().unwrap(), "--from", from],
        )
        .ok();
        assert_eq!(
            tree_digest(&to),
            before,
            "restored with {}",
            identity.display()
        );
    }
    s.agent(&[
        "verify",
        "--policy",
        &p,
        "--identity",
        k.ops.0.to_str().unwrap(),
    ])
    .ok();

    // Which keys the points need: both keys, one point on each target.
    let listed = s.agent(&["--json", "keys", "list", "--policy", &p]);
    listed.ok();
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k["points"] == 2 && k["current"] == true),
        "{keys:?}"
    );
}

#[test]
fn a_drill_restores_with_the_escrow_identity_alone() {
    let s = scratch("escrow");
    let before = tree_digest(&site(&s));
    let k = keys(&s);
    let extra = format!("  identity: {{file: {}}}\n", k.escrow.0.display());
    policy(&s, "policy.yaml", "db-1", &k, &k.signing.0, &extra);
    std::fs::remove_file(&k.ops.0).unwrap();
    s.write(
        "runbook.yaml",
        "name: site-lost\npolicy: policy.yaml\nobjectives: {rto: 5m, rpo: 30m}\ndrill:\n  backup_first: true\n  settle: 0s\n  inject:\n    - name: the site is deleted\n      action: {kind: command, destructive: true, run: [rm, -rf, site]}\nsteps:\n  - name: restore\n    phase: restore\n    action: {kind: restore_backup, export: site}\n  - name: the files are back\n    phase: verify\n    action: {kind: command, run: [test, -s, site/docs/payroll.csv]}\n",
    );
    let drill = s.drp(&["--json", "drill", "runbook.yaml", "--yes"]);
    drill.ok();
    assert_eq!(drill.json()["status"], "passed", "{}", drill.stdout);
    assert_eq!(tree_digest(&s.path("site")), before);

    // The report is signed: read back as it was, counted; its copy altered
    // on the NAS is refused, and the intact copy on S3 still counts.
    let passed = |s: &Scratch| {
        let r = s.drp(&["--json", "report", "--policy", "policy.yaml"]);
        (r.json()["runbooks"][0]["passed"].clone(), r.stderr)
    };
    assert_eq!(passed(&s).0, 1);
    // Per export, the report names the drill that restored it.
    let report = s
        .drp(&["--json", "report", "--policy", "policy.yaml"])
        .json();
    let site = &report["exposure"][0];
    assert_eq!(site["export"], "site");
    assert_eq!(site["last_drill"]["passed"], true, "{site:#}");
    assert!(
        site["last_drill"]["rto_seconds"].as_f64().is_some(),
        "{site:#}"
    );
    let dir = s.path("nas/reports/site-lost");
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replacen("\"passed\"", "\"failed\"", 1)).unwrap();
        }
    }
    let (count, stderr) = passed(&s);
    assert!(
        stderr.contains("target `nas`: record reports/site-lost/")
            && stderr.contains("was altered"),
        "{stderr}"
    );
    assert_eq!(count, 1);
}

/// Restores the latest point and says whether it was refused (exit 4)
/// naming `reason`, with the destination untouched.
fn refused(s: &Scratch, p: &str, id: Option<&str>, identity: &Path, reason: &str) {
    let to = s.path("untouched");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("keep.txt"), "live data").unwrap();
    let mut args = vec![
        "--identity",
        identity.to_str().unwrap(),
        "--yes",
        "--from",
        "nas",
    ];
    if let Some(id) = id {
        args.extend_from_slice(&["--point", id]);
    }
    let run = restore(s, p, &to, &args);
    run.code(4);
    assert!(
        run.stderr.contains(reason),
        "expected `{reason}` in: {}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keep.txt"], "the destination was touched");
    assert_eq!(
        std::fs::read_to_string(to.join("keep.txt")).unwrap(),
        "live data"
    );
}

#[test]
fn altered_truncated_swapped_or_planted_points_are_refused_and_nothing_is_replaced() {
    let s = scratch("tamper");
    site(&s);
    let k = keys(&s);
    let (db2_key, db2_public) = s.keypair("db-2.signing", true);
    let (stranger, _) = s.keypair("stranger.signing", true);
    // The reader trusts db-1's key and db-2's (for db-2's own records).
    let trusted = format!(
        "  trusted:\n    db-1: {}\n    db-2: {db2_public}\n",
        k.signing.1
    );
    let p = policy(&s, "policy.yaml", "db-1", &k, &k.signing.0, &trusted);
    let ops = k.ops.0.clone();
    let point = |run: &Run| run.json()["backups"][0]["targets"][0]["manifest"].clone();
    let first = point(s.agent(&["--json", "backup", "--policy", &p]).ok());
    std::fs::write(s.path("site/docs/new.txt"), "second").unwrap();
    let second = point(s.agent(&["--json", "backup", "--policy", &p]).ok());
    let id = |m: &serde_json::Value| m["id"].as_str().unwrap().to_string();
    let (a, b) = (stored_object(&s, &first), stored_object(&s, &second));
    let original = std::fs::read(&b).unwrap();

    // A flipped byte in the ciphertext.
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    std::fs::write(&b, &flipped).unwrap();
    refused(&s, &p, Some(&id(&second)), &ops, "SHA-256");
    // The final chunk dropped.
    std::fs::write(&b, &original[..original.len() - 1000]).unwrap();
    refused(&s, &p, Some(&id(&second)), &ops, "size");
    // The first point's object put in the place of the second's.
    std::fs::copy(&a, &b).unwrap();
    refused(&s, &p, Some(&id(&second)), &ops, "integrity check failed");
    std::fs::write(&b, &original).unwrap();
    restore(
        &s,
        &p,
        &s.path("whole"),
        &[
            "--identity",
            ops.to_str().unwrap(),
            "--from",
            "nas",
            "--point",
            &id(&second),
        ],
    )
    .ok();

    // Points planted in db-1's tree by writers the reader does not trust for it.
    let plant = |file: &str, key: &Path| {
        let planted = policy(&s, file, "db-1", &k, key, "");
        id(&point(
            s.agent(&["--json", "backup", "--policy", &planted]).ok(),
        ))
    };
    let unknown = plant("stranger.yaml", &stranger);
    refused(&s, &p, Some(&unknown), &ops, "which is not trusted here");
    let foreign = plant("db-2.yaml", &db2_key);
    refused(
        &s,
        &p,
        Some(&foreign),
        &ops,
        "signed by db-2's key, but it is a record of db-1",
    );
    // An unsigned manifest.
    let unsigned = id(&point(
        s.agent(&["--json", "backup", "--policy", &planted_unsigned(&s, &k)])
            .ok(),
    ));
    refused(&s, &p, Some(&unsigned), &ops, "not signed");
    // The newest point is a planted one: `latest` skips it, says why, and
    // restores the newest trusted point.
    let latest = restore(
        &s,
        &p,
        &s.path("latest"),
        &["--identity", ops.to_str().unwrap(), "--from", "nas"],
    );
    latest.ok();
    assert!(latest.all().contains(&id(&second)), "{}", latest.all());
    assert!(latest.all().contains("not signed"), "{}", latest.all());
    // `list` names them as damaged.
    let listed = s.agent(&["list", "--policy", &p, "--from", "nas"]);
    listed.code(4);
    assert!(
        listed.stderr.contains("not trusted here"),
        "{}",
        listed.stderr
    );
}

fn planted_unsigned(s: &Scratch, k: &Keys) -> String {
    s.write(
        "unsigned.yaml",
        &format!(
            "host: db-1\nkeys:\n  recipients: {{ops: {}}}\n{}exports:\n  site:\n    source: {{kind: directory, path: site}}\n    targets: [nas]\n",
            k.ops.1,
            s.targets_yaml()
        ),
    )
    .display()
    .to_string()
}

/// A bucket with Object Lock on the AWS API emulator (Garage has no
/// Object Lock); prints what `script` prints.
fn moto(script: &str) -> String {
    let endpoint = crate::harness::services().get("DRP_TEST_AWS_ENDPOINT");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import boto3, json\nfrom botocore.config import Config\ns3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='agent', aws_secret_access_key='agent', config=Config(retries={{'max_attempts': 1}}))\n{script}"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The example off-site policy, pointed at this test's folders, keys and a
/// fresh locked bucket.
fn offsite(s: &mut Scratch, k: &Keys) -> String {
    let bucket = s.id.replace('_', "-");
    moto(&format!(
        "s3.create_bucket(Bucket='{bucket}', ObjectLockEnabledForBucket=True)"
    ));
    let svc = crate::harness::services();
    for (key, value) in [
        ("DRP_RECIPIENT_OPS", k.ops.1.clone()),
        ("DRP_RECIPIENT_ESCROW", k.escrow.1.clone()),
        ("DRP_SIGNING_KEY", k.signing.0.display().to_string()),
        ("DRP_NAS", s.path("nas").display().to_string()),
        ("DRP_S3_BUCKET", bucket.clone()),
        (
            "DRP_S3_ENDPOINT",
            svc.get("DRP_TEST_AWS_ENDPOINT").to_string(),
        ),
        ("DRP_S3_REGION", "us-east-1".into()),
        ("DRP_S3_ACCESS_KEY_ID", "agent".into()),
        ("DRP_S3_SECRET_ACCESS_KEY", "agent".into()),
        ("FILES_ROOT", s.path("site").display().to_string()),
    ] {
        s.set_env(key, &value);
    }
    bucket
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

#[test]
fn the_recommended_offsite_target_is_encrypted_and_locked_and_prune_keeps_what_the_lock_holds() {
    let mut s = scratch("vault");
    let before = tree_digest(&site(&s));
    let k = keys(&s);
    let bucket = offsite(&mut s, &k);
    let example = example("offsite.yaml");
    let ex = example.to_str().unwrap();

    // drp check reads the bucket: versioned, locked in governance mode.
    let check = s.drp(&["--json", "check", ex]);
    check.ok();
    let targets = check.json()["policies"][0]["targets"].clone();
    assert_eq!(targets[0]["target"], "vault", "{targets}");
    assert_eq!(targets[0]["history_deletable"], false, "{targets}");
    assert!(
        targets[0]["why"].as_str().unwrap().contains("governance"),
        "{targets}"
    );

    // Retention that keeps one point, so that prune wants the first gone.
    let text = std::fs::read_to_string(&example).unwrap();
    let one = text.replace(
        "retention: {keep_last: 6, keep_daily: 30}",
        "retention: {keep_last: 1}",
    );
    assert_ne!(one, text);
    let p = s.write("offsite-keep-one.yaml", &one).display().to_string();
    let point = |run: &Run| run.json()["backups"][0]["targets"][1]["manifest"].clone();
    let first = point(s.agent(&["--json", "backup", "--policy", &p]).ok());
    assert_eq!(first["encryption"]["format"], "age");
    std::fs::write(s.path("site/docs/new.txt"), "second").unwrap();
    s.agent(&["backup", "--policy", &p]).ok();

    // Every object of the point is locked for the policy's 35 days.
    let key = format!("files-1/{}", first["stored"]["object"].as_str().unwrap());
    let head = moto(&format!(
        "h = s3.head_object(Bucket='{bucket}', Key='{key}')\nprint(h['ObjectLockMode'], (h['ObjectLockRetainUntilDate'] - h['LastModified']).days)"
    ));
    assert_eq!(head.trim(), "GOVERNANCE 35", "{head}");

    // The host checks what it stored (it cannot decrypt it): what
    // retention's min_verified counts.
    s.agent(&["verify", "--policy", &p]).ok();
    let pruned = s.agent(&["--json", "prune", "--policy", &p, "--export", "files"]);
    pruned.ok();
    let vault = pruned.json()["prune"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "vault")
        .expect("a verdict for the vault")
        .clone();
    let verdict = vault["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == first["id"])
        .unwrap()
        .clone();
    assert_eq!(verdict["deleted"], false, "{vault}");
    assert!(
        verdict["reasons"].to_string().contains("object lock until"),
        "{vault}"
    );

    // The agent's own key cannot destroy a locked version either.
    let attempts = moto(&format!(
        "vs = s3.list_object_versions(Bucket='{bucket}', Prefix='{key}')['Versions']\nfor v in vs:\n    try:\n        s3.delete_object(Bucket='{bucket}', Key='{key}', VersionId=v['VersionId'])\n        print('deleted')\n    except Exception as e:\n        print(e.response['Error']['Code'])"
    ));
    assert_eq!(attempts.trim(), "AccessDenied", "{attempts}");

    // And the vault restores, with the ops identity.
    let to = s.path("from-vault");
    s.drp(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "files",
        "--from",
        "vault",
        "--point",
        first["id"].as_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--identity",
        k.ops.0.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(tree_digest(&to), before);
}

#[test]
fn a_target_limit_holds_uploads_to_its_rate() {
    let s = scratch("limit");
    site(&s);
    let p = s.write(
        "policy.yaml",
        "host: h\ntargets:\n  nas: {kind: local, path: nas, limit: 1MiB/s}\nexports:\n  site:\n    source: {kind: directory, path: site}\n    targets: [nas]\n    compression: {level: 1}\n",
    );
    let started = std::time::Instant::now();
    let run = s.agent(&["--json", "backup", "--policy", p.to_str().unwrap()]);
    run.ok();
    let elapsed = started.elapsed().as_secs_f64();
    let stored = run.json()["backups"][0]["targets"][0]["manifest"]["stored"]["size"]
        .as_u64()
        .unwrap() as f64;
    // The first 1 MiB chunk goes out at once; the rest at the limit. A busy
    // machine makes it slower, never faster: the rest's rate stays between
    // half the limit and the limit.
    let floor = (stored - 1_048_576.0) / 1_048_576.0;
    assert!(
        stored > 2.5 * 1_048_576.0,
        "the site is {stored} bytes stored"
    );
    assert!(
        elapsed >= floor,
        "{stored} bytes at 1 MiB/s took {elapsed:.2}s"
    );
    assert!(
        elapsed <= 2.0 * floor,
        "{stored} bytes at 1 MiB/s took {elapsed:.2}s: under half the limit"
    );
}

#[test]
fn over_a_live_database_an_encrypted_point_shows_its_plan_and_a_load_failing_halfway_changes_nothing()
 {
    let s = scratch("sealedpg");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    // An index over a function reading a table by its unqualified name: it
    // works live and fails in pg_restore (empty search_path), halfway
    // through the load.
    psql(
        &db,
        "create table buckets (n int); insert into buckets values (1), (2), (3);
         create function bucket(i int) returns int language sql immutable
           as 'select i % (select count(*)::int from buckets)';
         create table items (id int primary key, name text);
         insert into items select i, 'item ' || i from generate_series(1, 1001) i;
         create index items_bucket on items (bucket(id));",
    );
    let k = keys(&s);
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\nkeys:\n  recipients: {{ops: {}}}\n{}exports:\n  shop:\n    source: {}\n    targets: [nas]\n",
            k.ops.1,
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    psql(
        &db,
        "insert into items values (5000, 'written after the point')",
    );
    let before = pg_table_digest(&db, "items");
    let id = ["--identity", k.ops.0.to_str().unwrap()];

    // Without --yes: the plan says what would be replaced and where it
    // would be kept, and nothing is done.
    let mut asked = vec!["restore", "--policy", p, "--export", "shop"];
    asked.extend_from_slice(&id);
    let plan = s.drp(&asked);
    plan.code(5);
    let shown = plan.all();
    assert!(
        shown.contains("Restore plan")
            && shown.contains(&format!("replaces         PostgreSQL database `{db}`"))
            && shown.contains(&format!("renamed to `{db}_drp_replaced_")),
        "{shown}"
    );
    assert_eq!(pg_table_digest(&db, "items"), before);

    // With --yes: the point decrypts and verifies, its load fails halfway,
    // and the live database is exactly as it was.
    asked.push("--yes");
    let r = s.drp(&asked);
    r.code(1);
    assert!(
        r.stderr
            .contains(&format!("database `{db}` was not touched")),
        "{}",
        r.stderr
    );
    assert_eq!(
        pg_table_digest(&db, "items"),
        before,
        "the live data changed"
    );
    let copies = psql(
        "postgres",
        &format!("select count(*) from pg_database where datname like '{db}_drp_%'"),
    );
    assert_eq!(copies, "0", "the partial copy was left behind");
    psql("postgres", &format!("drop database {db} with (force)"));
}
