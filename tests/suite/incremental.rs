//! Incremental tree exports (`mode: incremental`) against real targets: a
//! tree of about 20,000 files backed up twice, the second run storing only
//! what changed; each point restored equal to the tree as it was; a
//! sub-path restored alone; the repository read by the restic CLI itself;
//! an agent killed mid-run; retention forgetting a point's snapshot.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Scratch, scratch};

/// A deterministic byte stream (xorshift), so trees are cheap to make.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Folder names in several scripts.
const SCRIPTS: [&str; 6] = ["latin", "élan", "Ünïcode", "日本語", "кириллица", "العربية"];

/// Writes a tree of `dirs` folders of `per_dir` files (mixed sizes), three
/// large files, symbolic links, hard links, empty folders, and what the
/// policy excludes (`*.tmp` files, a `cache/` folder).
fn make_tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("{}-{d:03}", SCRIPTS[d % SCRIPTS.len()]));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let seed = (d * 100_000 + f) as u64;
            let len = 64 + (seed as usize * 7919) % 4000;
            let name = format!("{f:04}-{}.txt", SCRIPTS[f % SCRIPTS.len()]);
            std::fs::write(dir.join(name), bytes(seed, len)).unwrap();
        }
        std::fs::write(dir.join("scratch.tmp"), b"not kept").unwrap();
    }
    let large = root.join("large");
    std::fs::create_dir_all(&large).unwrap();
    for i in 0..3u64 {
        std::fs::write(
            large.join(format!("master-{i}.wav")),
            bytes(7_000_000 + i, 3 << 20),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("cache/thumbs")).unwrap();
    std::fs::write(root.join("cache/thumbs/a.jpg"), bytes(1, 5000)).unwrap();
    std::fs::create_dir_all(root.join("empty/inner-empty")).unwrap();
    std::os::unix::fs::symlink("large/master-0.wav", root.join("newest.wav")).unwrap();
    std::os::unix::fs::symlink("../latin-000", root.join("large/first-folder")).unwrap();
    std::fs::hard_link(
        root.join("large/master-1.wav"),
        root.join("large/master-1-again.wav"),
    )
    .unwrap();
    let private = root.join("latin-000/0000-latin.txt");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tool = root.join("latin-000/0001-élan.txt");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    set_mtime(&root.join("empty"), 1_600_000_000);
}

fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Every entry below `root` (but what the policy excludes) with what a
/// restore must bring back: type, mode, owner, mtime, content digest or link
/// target, and which files are hard links of one another.
fn state(root: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.ends_with(".tmp") || rel == "cache" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let common = format!(
                "mode={:o} uid={} gid={}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            let line = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {common} mtime={}", m.mtime())
            } else {
                let link = if m.nlink() > 1 {
                    let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                    format!(" hardlink-of={first}")
                } else {
                    String::new()
                };
                format!(
                    "file {common} mtime={} size={} sha256={}{link}",
                    m.mtime(),
                    m.len(),
                    hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
                )
            };
            out.insert(rel, line);
        }
    }
    out
}

/// Compares two tree states, naming the first few differences.
#[track_caller]
fn assert_same(
    restored: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
    what: &str,
) {
    if restored == expected {
        return;
    }
    let mut diff = Vec::new();
    for (k, v) in expected {
        match restored.get(k) {
            None => diff.push(format!("missing {k}")),
            Some(r) if r != v => diff.push(format!("{k}: restored `{r}`, expected `{v}`")),
            _ => {}
        }
    }
    for k in restored.keys().filter(|k| !expected.contains_key(*k)) {
        diff.push(format!("extra {k}"));
    }
    diff.truncate(12);
    panic!(
        "{what} differs from the tree as it was:\n{}",
        diff.join("\n")
    );
}

/// The policy of an incremental export `music` of `tree` to `targets`.
fn policy(s: &Scratch, targets: &str, extra: &str) -> PathBuf {
    s.write("restic.key", "correct horse battery staple, but longer\n");
    s.write(
        "policy.yaml",
        &format!(
            "host: studio-1\n{}exports:\n  music:\n    source:\n      kind: directory\n      path: tree\n      mode: incremental\n      \
             exclude: ['*.tmp', '/cache/']\n      one_file_system: true\n      key: {{file: restic.key}}\n    \
             targets: [{targets}]\n{extra}",
            s.targets_yaml()
        ),
    )
}

/// Runs `drp-agent backup --json` and returns the first target's manifest.
fn backup(s: &Scratch, p: &str) -> serde_json::Value {
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    let report = run.json();
    report["backups"][0]["targets"][0]["manifest"].clone()
}

/// The restic CLI on the repository drp wrote under `root`, with the key file.
fn restic(s: &Scratch, repo: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD_FILE", s.path("restic.key"))
        .output()
        .expect("restic is installed (tests/services/setup.sh installs it)");
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a restic process works on this test's repository.
fn restic_running(s: &Scratch) -> bool {
    Command::new("pgrep")
        .args([
            "-f",
            &format!("restic -r {}", s.path("nas/restic").display()),
        ])
        .status()
        .is_ok_and(|st| st.success())
}

/// Bytes under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    crate::harness::walk(dir.to_path_buf())
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn incremental_tree_on_the_nas_stores_only_what_changed_and_restores_each_point() {
    let s = scratch("incremental");
    let tree = s.path("tree");
    // 100 folders of 200 files: about 20,000 files and 10 MiB of large ones.
    make_tree(&tree, 100, 200);
    let p = policy(&s, "nas", "");
    let p = p.to_str().unwrap();

    let check = s.drp(&["check", p]);
    check.ok();
    assert!(
        check.all().contains("holds its restic repository key")
            && check.all().contains("write-only"),
        "drp check says the host holds the key: {}",
        check.all()
    );

    let first = backup(&s, p);
    let one = state(&tree);
    let inc1 = &first["incremental"];
    assert_eq!(inc1["engine"], "restic");
    assert!(inc1["files"].as_u64().unwrap() > 20_000, "{inc1}");
    let added1 = inc1["bytes_added"].as_u64().unwrap();
    let repo = s.path("nas/restic");
    let size1 = disk_usage(&repo);

    // One percent changes, in a few folders; some files added and deleted;
    // a large file moved to another folder.
    for d in 0..5 {
        let dir = tree.join(format!("{}-{d:03}", SCRIPTS[d % SCRIPTS.len()]));
        for f in 0..40 {
            let name = format!("{f:04}-{}.txt", SCRIPTS[f % SCRIPTS.len()]);
            std::fs::write(dir.join(name), bytes(900_000 + (d * 1000 + f) as u64, 1500)).unwrap();
        }
    }
    let added_dir = tree.join("latin-006");
    for f in 0..50 {
        std::fs::write(
            added_dir.join(format!("new-{f}.txt")),
            bytes(500_000 + f, 1200),
        )
        .unwrap();
    }
    let deleted_dir = tree.join("élan-007");
    for f in 0..50 {
        std::fs::remove_file(
            deleted_dir.join(format!("{f:04}-{}.txt", SCRIPTS[f % SCRIPTS.len()])),
        )
        .unwrap();
    }
    std::fs::create_dir_all(tree.join("archive/2024")).unwrap();
    std::fs::rename(
        tree.join("large/master-2.wav"),
        tree.join("archive/2024/master-2.wav"),
    )
    .unwrap();

    let second = backup(&s, p);
    let two = state(&tree);
    let inc2 = &second["incremental"];
    let added2 = inc2["bytes_added"].as_u64().unwrap();
    assert!(
        added2 * 50 <= added1,
        "the second run stored {added2} bytes, more than 2 % of the first run's {added1}: {inc2}"
    );
    assert!(
        added2 < 3 << 20,
        "the moved 3 MiB file was stored again: {inc2}"
    );
    assert_eq!(inc2["files_changed"].as_u64().unwrap(), 200, "{inc2}");
    let size2 = disk_usage(&repo);
    assert!(
        (size2 - size1) * 50 <= size1,
        "the repository grew by {} bytes, more than 2 % of its {size1}",
        size2 - size1
    );

    let listed = s.agent(&["--json", "list", "--policy", p]);
    listed.ok();
    assert_eq!(listed.json()["points"].as_array().unwrap().len(), 2);
    s.agent(&["verify", "--policy", p]).ok();

    // Each point restores equal to the tree as it was, excluded paths absent.
    let id1 = first["id"].as_str().unwrap();
    let r1 = s.path("restored-1");
    s.agent(&[
        "restore",
        "--policy",
        p,
        "--export",
        "music",
        "--point",
        id1,
        "--to",
        r1.to_str().unwrap(),
    ])
    .ok();
    assert_same(&state(&r1), &one, "point 1");
    assert!(!r1.join("cache").exists() && !r1.join("latin-000/scratch.tmp").exists());
    assert_eq!(
        std::fs::metadata(&r1).unwrap().mode() & 0o7777,
        std::fs::metadata(&tree).unwrap().mode() & 0o7777
    );

    // A sub-path alone: exactly that folder, into a folder of its own.
    let sub = s.path("one-folder");
    s.agent(&[
        "restore",
        "--policy",
        p,
        "--export",
        "music",
        "--path",
        "кириллица-004/",
        "--to",
        sub.to_str().unwrap(),
    ])
    .ok();
    let got: Vec<String> = std::fs::read_dir(&sub)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(got, ["кириллица-004"]);
    let expected: BTreeMap<String, String> = two
        .iter()
        .filter(|(k, _)| k.starts_with("кириллица-004"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_same(&state(&sub), &expected, "the sub-path restore");

    // The restic CLI reads what drp wrote, without drp.
    let snapshots: serde_json::Value =
        serde_json::from_str(&restic(&s, &repo, &["snapshots", "--json"])).unwrap();
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 2);
    let tagged = format!("drp-point={}", second["id"].as_str().unwrap());
    let newest = snapshots
        .iter()
        .find(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == tagged.as_str())
        })
        .expect("the second point's snapshot carries its id");
    assert_eq!(newest["id"], inc2["snapshot"]);
    let by_restic = s.path("by-restic");
    restic(
        &s,
        &repo,
        &[
            "restore",
            newest["id"].as_str().unwrap(),
            "--target",
            by_restic.to_str().unwrap(),
        ],
    );
    let mut two_below_root = two.clone();
    let mut restic_state = state(&by_restic);
    // restic alone does not know the root's own mode and time: drp keeps them.
    two_below_root.retain(|k, _| !k.is_empty());
    restic_state.retain(|k, _| !k.is_empty());
    assert_same(&restic_state, &two_below_root, "restic's own restore");

    // The tree changed since: a restore in place asks, keeps what it
    // replaces, and brings back the newest point.
    std::fs::write(tree.join("latin-000/0002-Ünïcode.txt"), b"damaged").unwrap();
    let refused = s.agent(&["restore", "--policy", p, "--export", "music"]);
    assert_ne!(refused.code, 0, "a restore over the tree needs --yes");
    s.agent(&["restore", "--policy", p, "--export", "music", "--yes"])
        .ok();
    assert_same(&state(&tree), &two, "the tree restored in place");
    let kept = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("tree.drp-replaced-"))
        .expect("the replaced tree is kept beside it");
    assert_eq!(
        std::fs::read(s.path(&kept).join("latin-000/0002-Ünïcode.txt")).unwrap(),
        b"damaged"
    );
}

#[test]
fn incremental_retention_forgets_the_pruned_points_snapshot_and_its_data() {
    let s = scratch("incremental_prune");
    let tree = s.path("tree");
    make_tree(&tree, 6, 50);
    let p = policy(
        &s,
        "nas",
        "    retention: {keep_last: 1, min_verified: 1}\nprune: {after_backup: false}\n",
    );
    let p = p.to_str().unwrap();
    let first = backup(&s, p);
    std::fs::write(tree.join("large/only-in-the-first.wav"), b"").unwrap();
    std::fs::remove_file(tree.join("large/only-in-the-first.wav")).unwrap();
    std::fs::remove_file(tree.join("large/master-0.wav")).unwrap();
    let second = backup(&s, p);
    s.agent(&["verify", "--policy", p, "--latest"]).ok();
    let repo = s.path("nas/restic");
    let before = disk_usage(&repo);
    let pruned = s.agent(&["--json", "prune", "--policy", p]);
    pruned.ok();
    let forgotten = &pruned.json()["prune"][0]["snapshots_forgotten"];
    assert_eq!(forgotten.as_array().unwrap().len(), 1, "{forgotten}");
    assert!(
        forgotten[0]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    let listed: serde_json::Value =
        serde_json::from_str(&restic(&s, &repo, &["snapshots", "--json"])).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["incremental"]["snapshot"].as_str().unwrap()]);
    // The 3 MiB only the first point held is gone from the repository.
    let after = disk_usage(&repo);
    assert!(
        before - after > 2 << 20,
        "prune freed {} bytes",
        before - after
    );
    restic(&s, &repo, &["check"]);
}

#[test]
fn an_agent_killed_during_an_incremental_run_leaves_the_earlier_point_and_the_next_run_succeeds() {
    let s = scratch("incremental_kill");
    let tree = s.path("tree");
    make_tree(&tree, 20, 200);
    let p = policy(&s, "nas", "");
    let p = p.to_str().unwrap();
    let first = backup(&s, p);
    let before = state(&tree);
    // A run with much to read, killed while restic writes.
    for i in 0..6u64 {
        std::fs::write(
            tree.join(format!("large/take-{i}.bin")),
            bytes(42 + i, 4 << 20),
        )
        .unwrap();
    }
    let mut child = s.agent_cmd(&["backup", "--policy", p]).spawn().unwrap();
    let locks = s.path("nas/restic/locks");
    let started = crate::harness::eventually(std::time::Duration::from_secs(60), || {
        std::fs::read_dir(&locks)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    assert!(started, "restic never took its lock");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        crate::harness::eventually(std::time::Duration::from_secs(10), || !restic_running(&s)),
        "restic outlived the agent"
    );

    let listed = s.agent(&["--json", "list", "--policy", p]);
    listed.ok();
    let points = listed.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "only the first point exists: {points:?}");
    let r = s.path("restored");
    s.agent(&[
        "restore",
        "--policy",
        p,
        "--export",
        "music",
        "--point",
        first["id"].as_str().unwrap(),
        "--to",
        r.to_str().unwrap(),
    ])
    .ok();
    assert_same(&state(&r), &before, "the earlier point after the kill");

    let third = backup(&s, p);
    assert!(third["incremental"]["snapshot"].as_str().unwrap().len() == 64);
    // The killed run left a stale lock (removed by prune's `unlock`) and
    // data no snapshot references; the repository itself is sound.
    restic(&s, &s.path("nas/restic"), &["unlock"]);
    restic(&s, &s.path("nas/restic"), &["check"]);
}

#[test]
fn incremental_tree_to_sftp_and_s3_restores_from_each() {
    let s = scratch("incremental_remote");
    let tree = s.path("tree");
    make_tree(&tree, 8, 60);
    let p = policy(&s, "sftp, s3", "");
    let p = p.to_str().unwrap();
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    let report = run.json();
    let targets = report["backups"][0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{report}");
    let expected = state(&tree);
    for t in targets {
        let name = t["target"].as_str().unwrap();
        let m = &t["manifest"];
        assert_eq!(
            m["incremental"]["snapshot"].as_str().unwrap().len(),
            64,
            "{t}"
        );
        let r = s.path(&format!("restored-{name}"));
        let restored = s.agent(&[
            "restore",
            "--policy",
            p,
            "--from",
            name,
            "--export",
            "music",
            "--to",
            r.to_str().unwrap(),
        ]);
        restored.ok();
        assert_same(&state(&r), &expected, &format!("the point on {name}"));
    }
    // An excluded pattern is absent from the point itself.
    let r = s.path("restored-s3");
    assert!(!r.join("cache").exists());
    assert!(
        crate::harness::walk(r)
            .iter()
            .all(|f| !f.display().to_string().ends_with(".tmp"))
    );
}
