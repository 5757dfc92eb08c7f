//! The catalogue's index: a backup over many points reads no manifest, a
//! listing reads only the manifests the index lacks, a lost or stale index
//! gives the right list, `index rebuild` re-derives it, prune updates it,
//! and a forged entry never makes a restore trust a point. On a local path
//! and on Garage S3; manifest reads counted from drp's own debug log.

use crate::harness::{Run, Scratch, scratch};

const POINTS: usize = 300;

fn policy(s: &Scratch, target: &str, extra: &str) -> String {
    std::fs::create_dir_all(s.path("site")).unwrap();
    s.write("site/index.html", "<h1>catalogue</h1>\n");
    s.write(
        "policy.yaml",
        &format!(
            "host: web-1\n{extra}{}exports:\n  site:\n    source: {{kind: directory, path: site}}\n    targets: [{target}]\n    retention: {{keep_last: 5}}\n",
            s.targets_yaml()
        ),
    );
    "policy.yaml".into()
}

/// Runs drp-agent with the catalogue's debug log on.
fn traced(s: &Scratch, args: &[&str]) -> Run {
    let mut c = s.agent_cmd(args);
    c.env("RUST_LOG", "warn,drp::catalogue=debug");
    Run::from(c.output().expect("drp-agent runs"))
}

fn manifests_read(r: &Run) -> usize {
    r.stderr.matches("manifest read").count()
}

/// The `key=value` of the last catalogue read in a debug log.
fn read_field(r: &Run, key: &str) -> usize {
    let line = r
        .stderr
        .lines()
        .rfind(|l| l.contains("catalogue read"))
        .unwrap_or_else(|| panic!("no catalogue read logged: {}", r.stderr));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

fn listed_ids(s: &Scratch, p: &str) -> Vec<String> {
    let run = s.agent(&["--json", "list", "--policy", p]);
    run.ok();
    run.json()["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manifest"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backs up, fills the repository with POINTS more points, and checks
/// that a backup then reads no manifest and a listing reads none either.
fn a_backup_over_many_points_reads_no_manifest(target: &str) {
    let s = scratch("catalogue");
    let p = policy(&s, target, "");
    s.agent(&["backup", "--policy", &p]).ok();
    s.agent(&[
        "index",
        "fill",
        "--policy",
        &p,
        "-e",
        "site",
        "--count",
        &POINTS.to_string(),
    ])
    .ok();
    let backup = traced(&s, &["backup", "--policy", &p]);
    backup.ok();
    assert_eq!(
        manifests_read(&backup),
        0,
        "a backup over {POINTS} points read manifests: {}",
        backup.stderr
    );
    // The host's state counts every point from the index.
    let status = s.agent(&["--json", "status", "--policy", &p]);
    assert!(
        status.stdout.contains(&format!("{}", POINTS + 2)),
        "{}",
        status.stdout
    );

    let list = traced(&s, &["list", "--policy", &p]);
    list.ok();
    assert_eq!(read_field(&list, "listed"), POINTS + 2, "{}", list.stderr);
    assert_eq!(read_field(&list, "from_index"), POINTS + 2);
    assert_eq!(manifests_read(&list), 0, "{}", list.stderr);
    assert_eq!(listed_ids(&s, &p).len(), POINTS + 2);

    // Prune updates it: what remains is listed from the index alone.
    s.agent(&["verify", "--policy", &p, "--latest"]).ok();
    s.agent(&["prune", "--policy", &p]).ok();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(read_field(&list, "listed"), 5, "{}", list.stderr);
    assert_eq!(read_field(&list, "from_index"), 5);
    assert_eq!(read_field(&list, "dropped"), 0);
    assert_eq!(manifests_read(&list), 0, "{}", list.stderr);

    // The rebuild command re-derives it from the manifests.
    let rebuilt = s.agent(&["--json", "index", "rebuild", "--policy", &p]);
    rebuilt.ok();
    assert_eq!(
        rebuilt.json()["rebuilt"][0]["points"],
        5,
        "{}",
        rebuilt.stdout
    );
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(read_field(&list, "from_index"), 5, "{}", list.stderr);
    // verify --sample reads the sample's data, never every manifest.
    let verify = traced(&s, &["verify", "--policy", &p, "--sample", "3"]);
    verify.ok();
    assert_eq!(manifests_read(&verify), 0, "{}", verify.stderr);
}

#[test]
fn a_backup_over_many_points_reads_no_manifest_on_a_local_path() {
    a_backup_over_many_points_reads_no_manifest("nas");
}

#[test]
fn a_backup_over_many_points_reads_no_manifest_on_s3() {
    a_backup_over_many_points_reads_no_manifest("s3");
}

#[test]
fn a_lost_or_stale_index_still_gives_the_right_list() {
    let s = scratch("catastale");
    let p = policy(&s, "nas", "");
    for _ in 0..3 {
        s.agent(&["backup", "--policy", &p]).ok();
    }
    let head = s.path("nas/web-1/site/index/head.json");
    let old_head = std::fs::read(&head).unwrap();

    // Another writer's commit the index lost (its head written over by a
    // writer that had not seen it): listed from its manifest.
    s.agent(&["backup", "--policy", &p]).ok();
    let all = listed_ids(&s, &p);
    std::fs::write(&head, &old_head).unwrap();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(read_field(&list, "from_index"), 3, "{}", list.stderr);
    assert_eq!(read_field(&list, "manifests_read"), 1);
    assert_eq!(listed_ids(&s, &p), all);

    // A point removed while the index still holds it is not listed.
    let gone = &all[0];
    std::fs::remove_file(s.path(&format!("nas/web-1/site/manifests/{gone}.json"))).unwrap();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(read_field(&list, "dropped"), 1, "{}", list.stderr);
    assert_eq!(listed_ids(&s, &p), all[1..].to_vec());
    let restore = s.agent(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "site",
        "--point",
        gone,
        "--to",
        s.path("out").to_str().unwrap(),
        "--yes",
    ]);
    assert_ne!(
        restore.code, 0,
        "a point whose manifest is gone was restored"
    );

    // A deleted index: the list reads every manifest, the next backup
    // writes a whole index again, and the command does too.
    std::fs::remove_file(&head).unwrap();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(read_field(&list, "from_index"), 0, "{}", list.stderr);
    assert_eq!(listed_ids(&s, &p), all[1..].to_vec());
    s.agent(&["backup", "--policy", &p]).ok();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(
        read_field(&list, "from_index"),
        all.len(),
        "{}",
        list.stderr
    );
    assert_eq!(manifests_read(&list), 0);
    std::fs::remove_file(&head).unwrap();
    s.agent(&["index", "rebuild", "--policy", &p]).ok();
    let list = traced(&s, &["list", "--policy", &p]);
    assert_eq!(
        read_field(&list, "from_index"),
        all.len(),
        "{}",
        list.stderr
    );
}

/// An index entry altered to describe other data than its manifest: the
/// signed head refuses it (the index is ignored and every manifest read),
/// and a restore takes the point's digests from its own manifest.
#[test]
fn a_forged_index_entry_does_not_make_a_restore_trust_a_point() {
    let s = scratch("cataforge");
    let (signing, public) = s.keypair("web-1.signing", true);
    let keys = format!(
        "keys:\n  signing: {{file: {}}}\n  trusted:\n    web-1: \"{public}\"\n",
        signing.display()
    );
    let p = policy(&s, "nas", &keys);
    s.agent(&["backup", "--policy", &p]).ok();
    s.write("site/index.html", "<h1>the second point</h1>\n");
    s.agent(&["backup", "--policy", &p]).ok();
    let ids = listed_ids(&s, &p);
    let index = s.path("nas/web-1/site/index");
    let head_path = index.join("head.json");

    // Forge: rewrite the segments so the newest entry names the older
    // point's data and digests, and the head's digests to match.
    let mut head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&head_path).unwrap()).unwrap();
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for seg in head["segments"].as_array().unwrap() {
        let stored =
            std::fs::read(s.path(&format!("nas/{}", seg["key"].as_str().unwrap()))).unwrap();
        let json = zstd::decode_all(stored.as_slice()).unwrap();
        entries.extend(serde_json::from_slice::<Vec<serde_json::Value>>(&json).unwrap());
    }
    let older = entries
        .iter()
        .find(|e| e["manifest"]["id"] == ids[0].as_str())
        .unwrap()["manifest"]
        .clone();
    for e in entries
        .iter_mut()
        .filter(|e| e["manifest"]["id"] == ids[1].as_str())
    {
        let m = &mut e["manifest"];
        m["raw"] = older["raw"].clone();
        m["stored"]["sha256"] = older["stored"]["sha256"].clone();
        m["stored"]["size"] = older["stored"]["size"].clone();
    }
    let stored = zstd::encode_all(serde_json::to_vec(&entries).unwrap().as_slice(), 3).unwrap();
    let key = "web-1/site/index/20200101T000000Z-forged.zst";
    let forged = s.path(&format!("nas/{key}"));
    std::fs::write(&forged, &stored).unwrap();
    let sum = std::process::Command::new("sha256sum")
        .arg(&forged)
        .output()
        .unwrap();
    let sha256 = String::from_utf8(sum.stdout).unwrap()[..64].to_string();
    head["segments"] = serde_json::json!([{
        "key": key, "sha256": sha256, "count": entries.len(),
    }]);
    std::fs::write(&head_path, serde_json::to_vec_pretty(&head).unwrap()).unwrap();

    // Its signature no longer matches: the index is ignored, with a warning.
    let list = traced(&s, &["list", "--policy", &p]);
    list.ok();
    assert!(list.stderr.contains("is ignored"), "{}", list.stderr);
    assert_eq!(read_field(&list, "from_index"), 0);
    assert_eq!(manifests_read(&list), 2);

    // The newest point restores as its own manifest describes it.
    let out = s.path("restored");
    s.agent(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "site",
        "--to",
        out.to_str().unwrap(),
        "--yes",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        "<h1>the second point</h1>\n"
    );
}
