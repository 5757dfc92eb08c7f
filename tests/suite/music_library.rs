//! The music library's plan as shipped (policies/music-library.yaml,
//! runbooks/music-library-lost.yaml): a library of artist and album folders
//! backed up by drp-agent to the NAS twice, incrementally; then the drill
//! deletes the primary store and the runbook restores every track from the
//! NAS; then a single album, lost alone, comes back by path through a
//! runbook's `restore_backup` with `paths:`, and nothing else with it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::harness::{Scratch, scratch};

fn repo_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

/// Artists and their albums, names in several scripts.
const ARTISTS: [(&str, [&str; 5]); 6] = [
    (
        "Björk",
        ["Début", "Post", "Homogenic", "Vespertine", "Medúlla"],
    ),
    (
        "Sigur Rós",
        ["Ágætis byrjun", "( )", "Takk…", "Með suð", "Kveikur"],
    ),
    (
        "坂本龍一",
        ["音楽図鑑", "未来派野郎", "Beauty", "async", "12"],
    ),
    (
        "Кино",
        ["Группа крови", "Звезда", "Ночь", "45", "Начальник"],
    ),
    (
        "فيروز",
        ["وحدن", "معرفتي فيك", "كيفك إنت", "Ilā Āssī", "Eh Fī Amal"],
    ),
    (
        "Amadou & Mariam",
        [
            "Dimanche à Bamako",
            "Welcome",
            "Folila",
            "La Confusion",
            "Sabali",
        ],
    ),
];

/// A deterministic byte stream (xorshift), so a library is cheap to make.
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

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Writes `tracks/<artist>/<album>/NN - Track N.flac` (10 tracks an album,
/// 6 to 14 KiB each, 300 in all) with a cover each, modes and mtimes of
/// their own; and what the policy does not keep: an upload in progress
/// (`*.part`) and the transcoding cache.
fn make_library(root: &Path) {
    for (a, (artist, albums)) in ARTISTS.iter().enumerate() {
        for (b, album) in albums.iter().enumerate() {
            let dir = root.join(artist).join(album);
            std::fs::create_dir_all(&dir).unwrap();
            for t in 0..10 {
                let seed = (a * 1000 + b * 100 + t) as u64;
                let path = dir.join(format!("{:02} - Piste {t} · ♪.flac", t + 1));
                std::fs::write(&path, bytes(seed, 6144 + (seed as usize * 7919) % 8192)).unwrap();
                let mode = if t == 0 { 0o600 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                set_mtime(&path, 1_500_000_000 + seed * 3600);
            }
            let cover = dir.join("cover.jpg");
            std::fs::write(&cover, bytes(90_000 + (a * 10 + b) as u64, 3000)).unwrap();
            set_mtime(&cover, 1_400_000_000);
            set_mtime(&dir, 1_450_000_000 + (a * 10 + b) as u64);
        }
        set_mtime(&root.join(artist), 1_460_000_000 + a as u64);
    }
    std::fs::write(root.join("Björk/Post/11 - upload.flac.part"), b"half").unwrap();
    std::fs::create_dir_all(root.join(".transcode-cache/mp3")).unwrap();
    std::fs::write(root.join(".transcode-cache/mp3/a.mp3"), bytes(7, 2000)).unwrap();
}

/// Every entry below `root` that the policy keeps, with what a restore must
/// bring back: type, mode, mtime, and a file's size and content digest.
fn state(root: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.ends_with(".part") || rel == ".transcode-cache" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let line = if m.is_dir() {
                stack.push(p.clone());
                format!("dir mode={:o} mtime={}", m.mode() & 0o7777, m.mtime())
            } else {
                format!(
                    "file mode={:o} mtime={} size={} sha256={}",
                    m.mode() & 0o7777,
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

/// Compares two states, naming the first differences.
#[track_caller]
fn assert_same(got: &BTreeMap<String, String>, expected: &BTreeMap<String, String>, what: &str) {
    if got == expected {
        return;
    }
    let mut diff: Vec<String> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: got {:?}, expected `{v}`", got.get(k)))
        .collect();
    diff.extend(
        got.keys()
            .filter(|k| !expected.contains_key(*k))
            .map(|k| format!("extra {k}")),
    );
    let total = diff.len();
    diff.truncate(12);
    panic!("{what}: {total} differences\n{}", diff.join("\n"));
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// The example's environment pointed at this test's folders: the library,
/// the NAS, the repository key.
fn music_env(s: &mut Scratch) -> PathBuf {
    let tracks = s.path("library/tracks");
    let key = s.write(
        "secrets/restic-music",
        "q8M0c2Vjb25kIGxpYnJhcnkga2V5IGZvciB0ZXN0cw==\n",
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vars = [
        ("MUSIC_HOST", "music-test".to_string()),
        ("DRP_NAS", s.path("nas").display().to_string()),
        ("MUSIC_TRACKS", tracks.display().to_string()),
        ("MUSIC_KEY", key.display().to_string()),
        ("MUSIC_MIN_TRACKS", "310".to_string()),
    ];
    for (k, v) in vars {
        s.set_env(k, &v);
    }
    tracks
}

/// `drp-agent backup` of the library; the NAS target's manifest.
fn backup(s: &Scratch, policy: &str) -> serde_json::Value {
    let run = s.agent(&["--json", "backup", "--policy", policy]);
    run.ok();
    let report = run.json();
    let target = &report["backups"][0]["targets"][0];
    assert_eq!(target["target"], "nas", "{report:#}");
    target["manifest"].clone()
}

#[test]
fn the_music_library_plan_restores_the_tracks_from_the_nas_when_the_store_is_lost_then_one_album_by_path()
 {
    let mut s = scratch("music_library");
    let tracks = music_env(&mut s);
    make_library(&tracks);
    let policy = repo_file("policies/music-library.yaml");
    let runbook = repo_file("runbooks/music-library-lost.yaml");
    s.drp(&["check", &policy]).ok();
    s.drp(&["check", &runbook]).ok();

    // The hourly runs: the first stores the library, the second a new album
    // and a retagged track, not the rest again.
    let first = backup(&s, &policy);
    let added_first = first["incremental"]["bytes_added"].as_u64().unwrap();
    let new_album = tracks.join("Björk/Fossora");
    std::fs::create_dir_all(&new_album).unwrap();
    for t in 0..10u64 {
        std::fs::write(
            new_album.join(format!("{:02} - Atopos.flac", t + 1)),
            bytes(50_000 + t, 9000),
        )
        .unwrap();
    }
    let retagged = tracks.join("Кино/Звезда/03 - Piste 2 · ♪.flac");
    let mut data = std::fs::read(&retagged).unwrap();
    data[..16].copy_from_slice(b"TITLE=Zvezda    ");
    std::fs::write(&retagged, data).unwrap();
    let second = backup(&s, &policy);
    let inc = &second["incremental"];
    assert_eq!(inc["files_new"], 10, "{inc}");
    assert_eq!(inc["files_changed"], 1, "{inc}");
    let added_second = inc["bytes_added"].as_u64().unwrap();
    assert!(
        added_second * 10 < added_first,
        "the second run stored {added_second} bytes against the first's {added_first}: {inc}"
    );
    let expected = state(&tracks);
    let root_before = std::fs::metadata(&tracks).unwrap();
    assert_eq!(
        expected.keys().filter(|k| k.ends_with(".flac")).count(),
        310
    );

    // The drill: the primary store deleted, the tracks restored from the NAS.
    let drill = s.drp(&["--json", "drill", &runbook, "--yes", "--out", "reports"]);
    drill.ok();
    let report = drill.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_same(
        &state(&tracks),
        &expected,
        "the tracks restored by the drill",
    );
    let root = std::fs::metadata(&tracks).unwrap();
    assert_eq!(
        (root.mode(), root.mtime()),
        (root_before.mode(), root_before.mtime()),
        "the tree's root has its mode and time back"
    );
    let restored = &report["rpo"]["restored"][0];
    assert_eq!(restored["export"], "tracks", "{report:#}");
    assert_eq!(
        restored["id"], second["id"],
        "the newest point before the failure"
    );
    let t_fail = time(&report["t_fail"]);
    let rpo = report["rpo"]["measured_seconds"].as_f64().unwrap();
    let gap = (t_fail - time(&restored["consistency_time"])).num_milliseconds() as f64 / 1000.0;
    assert!(
        (rpo - gap).abs() < 1.0,
        "RPO {rpo} vs T_fail - consistency {gap}"
    );
    assert!(rpo <= report["objectives"]["rpo_seconds"].as_f64().unwrap());
    let rto = report["rto"]["measured_seconds"].as_f64().unwrap();
    let verified = crate::harness::step_named(&report, "the tracks are back");
    assert_eq!(verified["status"], "passed", "{verified:#}");
    let to_verify = (time(&verified["ended_at"]) - t_fail).num_milliseconds() as f64 / 1000.0;
    assert!((rto - to_verify).abs() < 0.01, "RTO {rto} vs {to_verify}");
    assert!(rto <= report["objectives"]["rto_seconds"].as_f64().unwrap());
    let id = report["id"].as_str().unwrap();
    let markdown =
        std::fs::read_to_string(s.path(&format!("reports/music-library-lost-{id}.md"))).unwrap();
    assert!(
        markdown.contains("RTO") && markdown.contains("RPO"),
        "{markdown}"
    );

    // One album lost alone: a runbook restores it by path, beside the tree.
    let album = "Sigur Rós/Takk…";
    std::fs::remove_dir_all(tracks.join(album)).unwrap();
    std::fs::write(tracks.join("Кино/Ночь/cover.jpg"), b"changed since").unwrap();
    let live = state(&tracks);
    let aside = s.path("album-restored");
    let album_runbook = s.write(
        "album-lost.yaml",
        &format!(
            "name: music-album-lost\npolicy: {policy}\nsteps:\n  - name: restore the album\n    phase: restore\n    \
             action: {{kind: restore_backup, export: tracks, point: latest, paths: [\"{album}/\"], to: \"{}\"}}\n    \
             timeout: 5m\n  - name: the album is back\n    phase: verify\n    \
             action: {{kind: command, run: [test, -s, \"{}/{album}/cover.jpg\"]}}\n    timeout: 30s\n",
            aside.display(),
            aside.display()
        ),
    );
    let run = s.drp(&["--json", "run", album_runbook.to_str().unwrap(), "--yes"]);
    run.ok();
    assert_eq!(run.json()["status"], "passed", "{}", run.all());
    let only_album: BTreeMap<String, String> = expected
        .iter()
        .filter(|(k, _)| k.starts_with("Sigur Rós"))
        .filter(|(k, _)| k.as_str() == "Sigur Rós" || k.starts_with(album))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(only_album.len(), 1 + 1 + 11, "{only_album:#?}");
    let mut got = state(&aside);
    // The artist folder is made to hold the album: only its name counts.
    assert!(got.remove("Sigur Rós").is_some(), "{got:#?}");
    let mut want = only_album;
    want.remove("Sigur Rós");
    assert_same(&got, &want, "the album restored by path");
    assert_same(
        &state(&tracks),
        &live,
        "the live tree after the album restore",
    );

    // `paths:` is refused where it cannot work, located in the runbook.
    let bad = s.write(
        "album-bad.yaml",
        &format!(
            "name: music-album-bad\npolicy: {policy}\nsteps:\n  - name: restore over the tree\n    phase: restore\n    \
             action: {{kind: restore_backup, export: tracks, paths: [\"{album}/\"], to: \"{}\"}}\n    timeout: 5m\n  \
             - name: restore outside the tree\n    phase: restore\n    \
             action: {{kind: restore_backup, export: tracks, paths: [\"../etc\"], to: \"{}\"}}\n    timeout: 5m\n  \
             - name: the album is back\n    phase: verify\n    action: {{kind: command, run: [test, -d, \"{}\"]}}\n    timeout: 5s\n",
            tracks.display(),
            aside.display(),
            aside.display()
        ),
    );
    let refused = s.drp(&["check", bad.to_str().unwrap()]);
    refused.code(2);
    let text = refused.all();
    assert!(text.contains("2 problems found"), "{text}");
    assert!(
        text.contains("album-bad.yaml:6:")
            && text.contains("steps[0].action")
            && text.contains("is the tree itself"),
        "{text}"
    );
    assert!(
        text.contains("steps[1].action") && text.contains("`../etc` is not a path inside the tree"),
        "{text}"
    );
}
