//! Policies: the example files parse, and every mistake is reported at once
//! with file, line, column, key and a hint.

use drp_core::config::Policy;

use crate::harness::scratch;

#[test]
fn every_example_policy_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if path.ends_with("offsite.yaml") {
                // Its recipients are placeholders until set: a copy used as
                // it is must not encrypt to keys nobody holds.
                let err = Policy::load(&path).unwrap_err().to_string();
                assert!(
                    err.contains("`keys.recipients.ops`: not an age X25519 public key"),
                    "{err}"
                );
                let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
                // SAFETY: nextest runs each test in a process of its own.
                unsafe {
                    std::env::set_var("DRP_RECIPIENT_OPS", key);
                    std::env::set_var("DRP_RECIPIENT_ESCROW", key);
                }
            }
            let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !policy.exports.is_empty(),
                "{} has no export",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example policies in {}", dir.display());
}

#[test]
fn every_problem_is_reported_at_once_with_location_and_hint() {
    let s = scratch("policy");
    let path = s.write(
        "bad.yaml",
        r#"host: web-1
objectives:
  rto: soon
targets:
  nas:
    kind: local
    path: /srv/nas
    compresion: 3
exports:
  db:
    source: {kind: sqlite, path: app.db}
    targets: [nas, offsite]
    schedule: "0 6,18 * *"
    retention:
      kep_last: 3
  files:
    source: {kind: directory, path: /etc}
    targets: [nas]
    compression: {level: "high"}
"#,
    );
    let run = s.agent(&["backup", "--policy", path.to_str().unwrap()]);
    run.code(2);
    let err = run.stderr.clone();
    let file = path.display().to_string();
    // The bad duration, located at its key.
    assert!(
        err.contains(&format!("{file}:3:3: `objectives.rto`")),
        "{err}"
    );
    assert!(err.contains("invalid duration `soon`"), "{err}");
    // A typo'd key inside a target, with the suggestion.
    assert!(
        err.contains(&format!("{file}:8:5: `targets.nas.compresion`")),
        "{err}"
    );
    // A reference to a target that does not exist.
    assert!(
        err.contains(&format!(
            "{file}:12:20: `exports.db.targets[1]`: unknown target `offsite`"
        )),
        "{err}"
    );
    // An invalid schedule and a typo'd retention key.
    assert!(
        err.contains("`exports.db.schedule`: invalid schedule"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:15:7: `exports.db.retention.kep_last`")),
        "{err}"
    );
    assert!(err.contains("did you mean `keep_last`?"), "{err}");
    // A wrong type.
    assert!(
        err.contains("`exports.files.compression.level`: invalid type"),
        "{err}"
    );
    assert!(err.contains("6 problems found"), "{err}");
    assert!(
        !s.path("nas").exists(),
        "nothing may be written for an invalid policy"
    );
}

#[test]
fn unknown_kinds_and_missing_keys_are_named() {
    let s = scratch("policy");
    let path = s.write(
        "bad.yaml",
        "hots: web-1\ntargets:\n  nas: {kind: nfs, path: /x}\nexports:\n  db:\n    targets: [nas]\n",
    );
    let run = s.agent(&["backup", "--policy", path.to_str().unwrap()]);
    run.code(2);
    assert!(
        run.stderr.contains(":1:1: `hots`: unknown key `hots`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `host`?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unknown variant `nfs`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`exports.db`: missing field `source`"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_yaml_is_located() {
    let s = scratch("policy");
    let path = s.write(
        "bad.yaml",
        "host: a\ntargets:\n  nas: {kind: local, path: /x\n",
    );
    let run = s.agent(&["backup", "--policy", path.to_str().unwrap()]);
    run.code(2);
    assert!(run.stderr.contains("not valid YAML"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{}:", path.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn secrets_are_references_never_values() {
    let s = scratch("policy");
    let path = s.write(
        "p.yaml",
        "host: a\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  db:\n    source: {kind: postgres, database: x, password: hunter2}\n    targets: [nas]\n",
    );
    let run = s.agent(&["backup", "--policy", path.to_str().unwrap()]);
    run.code(2);
    assert!(
        run.stderr
            .contains("`exports.db.source`: a secret is never written in a policy"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("hunter2"),
        "a secret must never be echoed: {}",
        run.stderr
    );
}
