//! The documentation, held to the code: `docs/policy.md` and
//! `docs/runbook.md` document every key their parsers accept, each in its
//! own section, and only keys they accept — read from what `drp check`
//! answers to an unknown key, never from a list kept here; the complete
//! policies in the README and `docs/policy.md` pass `drp check`; every
//! relative link in the README and `docs/` leads to a file (and a heading)
//! that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::{Scratch, scratch};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The key (or kind) no section accepts.
const UNKNOWN: &str = "zz_unknown";

/// A file with `zz_unknown` in one place, and the section of the document
/// that documents that place.
struct Probe {
    section: &'static str,
    text: String,
}

/// A policy with `zz_unknown` in one of its parts (the others valid).
#[derive(Default, Clone, Copy)]
struct InPolicy {
    section: &'static str,
    top: &'static str,
    target: &'static str,
    source: &'static str,
    export: &'static str,
}

impl InPolicy {
    fn probe(self) -> Probe {
        let or = |part: &'static str, default: &'static str| {
            if part.is_empty() { default } else { part }
        };
        let export = match self.export {
            "" => String::new(),
            e => format!("    {e}\n"),
        };
        Probe {
            section: self.section,
            text: format!(
                "host: h\ntargets:\n  t: {}\nexports:\n  e:\n    source: {}\n    targets: [t]\n{export}{}\n",
                or(self.target, "{kind: local, path: repo}"),
                or(self.source, "{kind: directory, path: tree}"),
                self.top,
            ),
        }
    }
}

/// A runbook (of `policy.yaml`, whose export is `e`) with `zz_unknown` at
/// its top level or in its one step.
fn in_runbook(section: &'static str, top: &str, step: &str) -> Probe {
    let step = match step {
        "" => "{name: s, action: {kind: wait, duration: 1s}}",
        s => s,
    };
    Probe {
        section,
        text: format!("name: r\npolicy: policy.yaml\n{top}\nsteps:\n  - {step}\n"),
    }
}

/// One probe per place of a policy that takes keys (or kinds).
fn policy_probes() -> Vec<Probe> {
    let p = InPolicy::default();
    let target = |section, target| InPolicy {
        section,
        target,
        ..p
    };
    let source = |section, source| InPolicy {
        section,
        source,
        ..p
    };
    let export = |section, export| InPolicy {
        section,
        export,
        ..p
    };
    let top = |section, top| InPolicy { section, top, ..p };
    [
        target("### Every target", "{kind: zz_unknown}"),
        target(
            "### `local` target",
            "{kind: local, path: r, zz_unknown: 1}",
        ),
        target(
            "### `sftp` target",
            "{kind: sftp, host: h, path: /p, zz_unknown: 1}",
        ),
        target("### `s3` target", "{kind: s3, bucket: b, zz_unknown: 1}"),
        target(
            "### `lock` (of an `s3` target)",
            "{kind: s3, bucket: b, lock: {zz_unknown: 1}}",
        ),
        source("## Sources", "{kind: zz_unknown}"),
        source("### `postgres` source", "{kind: postgres, zz_unknown: 1}"),
        source(
            "### `postgres-cluster` source",
            "{kind: postgres-cluster, zz_unknown: 1}",
        ),
        source("### `mariadb` source", "{kind: mariadb, zz_unknown: 1}"),
        source("### `mariadb` source", "{kind: mysql, zz_unknown: 1}"),
        source(
            "### `binlog` (of a `mariadb` source)",
            "{kind: mariadb, database: d, binlog: {zz_unknown: 1}}",
        ),
        source("### `sqlite` source", "{kind: sqlite, zz_unknown: 1}"),
        source("### `directory` source", "{kind: directory, zz_unknown: 1}"),
        source("### `redis` source", "{kind: redis, zz_unknown: 1}"),
        source(
            "### `command` source",
            "{kind: command, backup: [a], restore: [b], zz_unknown: 1}",
        ),
        export(
            "### Compression (`compression`)",
            "compression: {zz_unknown: 1}",
        ),
        export(
            "### Retention (`retention`, `snapshot_retention`)",
            "retention: {zz_unknown: 1}",
        ),
        top(
            "### Retention (`retention`, `snapshot_retention`)",
            "snapshot_retention: {zz_unknown: 1}",
        ),
        export(
            "### Restore tests (`restore_test`)",
            "restore_test: {zz_unknown: 1}",
        ),
        export("### Dead man's switch (`ping`)", "ping: {zz_unknown: 1}"),
        export(
            "### Hooks (`hooks`, `snapshot_hooks`)",
            "hooks: {zz_unknown: 1}",
        ),
        top(
            "### Hooks (`hooks`, `snapshot_hooks`)",
            "snapshot_hooks: {zz_unknown: 1}",
        ),
        export(
            "## Objectives (`objectives`)",
            "objectives: {zz_unknown: 1}",
        ),
        top(
            "## Objectives (`objectives`)",
            "objectives: {zz_unknown: 1}",
        ),
        top(
            "## Snapshots (`snapshots`)",
            "snapshots: {s: {kind: zz_unknown}}",
        ),
        top(
            "### `btrfs` snapshot",
            "snapshots: {s: {kind: btrfs, zz_unknown: 1}}",
        ),
        top(
            "### `qcow2` snapshot",
            "snapshots: {s: {kind: qcow2, zz_unknown: 1}}",
        ),
        top(
            "### `lvm` snapshot",
            "snapshots: {s: {kind: lvm, zz_unknown: 1}}",
        ),
        top(
            "### `directory` snapshot",
            "snapshots: {s: {kind: directory, zz_unknown: 1}}",
        ),
        top(
            "### `ebs` snapshot",
            "snapshots: {s: {kind: ebs, zz_unknown: 1}}",
        ),
        top(
            "### `rds` snapshot",
            "snapshots: {s: {kind: rds, zz_unknown: 1}}",
        ),
        top("## Keys (`keys`)", "keys: {zz_unknown: 1}"),
        top("## Notifications (`notify`)", "notify: {zz_unknown: 1}"),
        top("### `webhook`", "notify: {webhook: {zz_unknown: 1}}"),
        top("### `email`", "notify: {email: {zz_unknown: 1}}"),
        top("## Metrics (`metrics`)", "metrics: {zz_unknown: 1}"),
        top("## Serve (`serve`)", "serve: {zz_unknown: 1}"),
        top(
            "### A named command (`serve.commands.<name>`)",
            "serve: {commands: {c: {zz_unknown: 1}}}",
        ),
        top("## Restore (`restore`)", "restore: {zz_unknown: 1}"),
        top("## Prune (`prune`)", "prune: {zz_unknown: 1}"),
    ]
    .into_iter()
    .map(InPolicy::probe)
    .collect()
}

/// One probe per place of a runbook whose parser lists what it accepts
/// (the checks' settings, flattened with their polling, do not).
fn runbook_probes() -> Vec<Probe> {
    let action =
        |section, action: &str| in_runbook(section, "", &format!("{{name: s, action: {action}}}"));
    vec![
        in_runbook(
            "### Objectives (`objectives`)",
            "objectives: {zz_unknown: 1}",
            "",
        ),
        in_runbook(
            "### Heartbeat (`heartbeat`)",
            "heartbeat: {zz_unknown: 1}",
            "",
        ),
        in_runbook("### Drill (`drill`)", "drill: {zz_unknown: 1}", ""),
        in_runbook(
            "### Phase settings (`phases`)",
            "phases: {verify: {zz_unknown: 1}}",
            "",
        ),
        in_runbook(
            "## A step",
            "",
            "{name: s, zz_unknown: 1, action: {kind: wait, duration: 1s}}",
        ),
        action("## Actions", "{kind: zz_unknown}"),
        action(
            "### `expect` (of an `sql` check)",
            "{kind: sql, export: e, query: q, expect: {zz_unknown: 1}}",
        ),
        action("### `backup`", "{kind: backup, zz_unknown: 1}"),
        action(
            "### `restore_backup`",
            "{kind: restore_backup, zz_unknown: 1}",
        ),
        action("### `snapshot`", "{kind: snapshot, zz_unknown: 1}"),
        action(
            "### `restore_snapshot`",
            "{kind: restore_snapshot, zz_unknown: 1}",
        ),
        action("### `restart`", "{kind: restart, zz_unknown: 1}"),
        action("### `dns_switch`", "{kind: dns_switch, zz_unknown: 1}"),
        action(
            "### `tsig` (of a `dns_switch`)",
            "{kind: dns_switch, tsig: {zz_unknown: 1}}",
        ),
        action(
            "### `verify` (of a `dns_switch`)",
            "{kind: dns_switch, verify: {zz_unknown: 1}}",
        ),
        action("### `wait`", "{kind: wait, zz_unknown: 1}"),
        action("### `notify`", "{kind: notify, zz_unknown: 1}"),
    ]
}

/// The names between backticks after "expected" in a diagnostic: serde's
/// "expected one of `a`, `b`", "expected `a` or `b`", "expected `a`".
fn expected_list(line: &str) -> Vec<String> {
    let Some(at) = line.find("expected") else {
        return Vec::new();
    };
    line[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// What `drp check` accepts where `probe` put `zz_unknown` (and whether
/// those are kinds), from the one diagnostic that names it.
fn accepted(s: &Scratch, probe: &Probe, n: usize) -> (bool, Vec<String>) {
    let file = format!("probe-{n}.yaml");
    s.write(&file, &probe.text);
    let run = s.drp(&["check", &file]);
    let all = run.all();
    assert_eq!(run.code, 2, "{}\n{all}", probe.text);
    let found: Vec<&str> = all
        .lines()
        .filter(|l| {
            l.contains(&format!("unknown field `{UNKNOWN}`"))
                || l.contains(&format!("unknown variant `{UNKNOWN}`"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one diagnostic names `{UNKNOWN}`:\n{}\n{all}",
        probe.text
    );
    let keys = expected_list(found[0]);
    assert!(
        !keys.is_empty(),
        "the diagnostic lists what is accepted: {}",
        found[0]
    );
    (found[0].contains("unknown variant"), keys)
}

/// The lines of a document under `heading`, up to the next heading (a `#`
/// in fenced code starts none).
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = doc.lines();
    assert!(
        lines.by_ref().any(|l| l == heading),
        "a section `{heading}`"
    );
    let mut out = Vec::new();
    let mut fenced = false;
    for l in lines {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && l.starts_with('#') {
            break;
        }
        out.push(l);
    }
    out
}

/// The keys of a section's tables: each row's first cell, `key`.
fn table_keys(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .collect()
}

/// A `const NAME: [&str; N] = [..];` of a parser: the keys it checks
/// itself (its diagnostic for an unknown one suggests the nearest from it).
fn parser_list(file: &str, name: &str) -> Vec<String> {
    let code = std::fs::read_to_string(repo().join(file)).unwrap();
    let start = code
        .find(&format!("const {name}: [&str;"))
        .unwrap_or_else(|| panic!("{name} in {file}"));
    let body = &code[start..];
    let body = &body[body.find("= [").unwrap()..body.find("];").unwrap()];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// What a document misses of what the probes find accepted, and what it
/// documents that they find refused. Returns the number of keys read.
fn compare(s: &Scratch, doc: &str, probes: &[Probe], problems: &mut Vec<String>) -> usize {
    let mut read = 0;
    for (n, probe) in probes.iter().enumerate() {
        let (kinds, keys) = accepted(s, probe, n);
        let lines = section(doc, probe.section);
        if kinds {
            let text = lines.join("\n");
            for k in keys.iter().filter(|k| !text.contains(&format!("`{k}`"))) {
                problems.push(format!("kind `{k}` missing from `{}`", probe.section));
            }
            continue;
        }
        read += keys.len();
        let documented = table_keys(&lines);
        for k in keys.iter().filter(|k| !documented.contains(*k)) {
            problems.push(format!("`{k}` missing from `{}`", probe.section));
        }
        for k in documented.iter().filter(|k| !keys.contains(*k)) {
            problems.push(format!(
                "`{k}` in `{}` is refused there (accepted: {keys:?})",
                probe.section
            ));
        }
    }
    read
}

/// A place whose parser checks its keys itself (`list`): each key of the
/// list documented under `heading`, and each documented key known there —
/// `alone(key)` is a file with that key given a value of no type it takes,
/// which gets another diagnostic than an unknown key, as `zz_unknown` does
/// not.
fn compare_own_list(
    s: &Scratch,
    doc: &str,
    heading: &str,
    list: Vec<String>,
    alone: impl Fn(&str) -> String,
    problems: &mut Vec<String>,
) {
    assert!(list.len() >= 8, "{heading}: {list:?}");
    let documented = table_keys(&section(doc, heading));
    for k in list.iter().filter(|k| !documented.contains(*k)) {
        problems.push(format!("`{k}` missing from `{heading}`"));
    }
    for k in documented.iter().chain([&UNKNOWN.to_string()]) {
        s.write("alone.yaml", &alone(k));
        let run = s.drp(&["check", "alone.yaml"]);
        run.code(2);
        let unknown = run.all().contains(&format!("unknown key `{k}`"));
        if k == UNKNOWN {
            assert!(unknown, "{}", run.all());
        } else if unknown {
            problems.push(format!("`{k}` in `{heading}` is refused: {}", run.all()));
        }
    }
}

#[test]
fn docs_policy_md_documents_every_key_the_parser_accepts_and_no_other() {
    let s = scratch("docs_policy");
    let doc = std::fs::read_to_string(repo().join("docs/policy.md")).unwrap();
    let mut problems = Vec::new();
    let read = compare(&s, &doc, &policy_probes(), &mut problems);
    assert!(read >= 100, "the probes read {read} keys");
    let policy_rs = "core/src/config/policy.rs";
    compare_own_list(
        &s,
        &doc,
        "## Top level",
        parser_list(policy_rs, "TOP_LEVEL_KEYS"),
        |k| format!("{k}: [[]]\n"),
        &mut problems,
    );
    compare_own_list(
        &s,
        &doc,
        "## Exports",
        parser_list(policy_rs, "EXPORT_KEYS"),
        |k| format!("exports:\n  e:\n    {k}: [[]]\n"),
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "docs/policy.md against the parser:\n{}",
        problems.join("\n")
    );
}

#[test]
fn docs_runbook_md_documents_every_key_the_runbook_parser_lists() {
    let s = scratch("docs_runbook");
    s.write(
        "policy.yaml",
        "host: h\ntargets:\n  t: {kind: local, path: repo}\nexports:\n  e:\n    source: {kind: sqlite, path: app.db}\n    targets: [t]\n",
    );
    let doc = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let mut problems = Vec::new();
    let read = compare(&s, &doc, &runbook_probes(), &mut problems);
    assert!(read >= 25, "the probes read {read} keys");
    compare_own_list(
        &s,
        &doc,
        "## Top level",
        parser_list("coordinator/src/runbook/mod.rs", "KEYS"),
        // `drp check` reads a file with a `steps:` line as a runbook.
        |k| match k {
            "steps" => "steps: [[]]\n".to_string(),
            _ => format!("{k}: [[]]\nsteps: []\n"),
        },
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "docs/runbook.md against the parser:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_complete_policies_in_the_readme_and_docs_policy_md_pass_drp_check() {
    let s = scratch("docs_examples");
    let mut examples = Vec::new();
    for file in ["README.md", "docs/policy.md"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        examples.extend(
            text.split("```yaml\n")
                .skip(1)
                .filter_map(|b| b.split("```").next())
                .filter(|b| {
                    b.lines()
                        .find(|l| !l.starts_with('#'))
                        .is_some_and(|l| l.starts_with("host:"))
                })
                .map(|b| (file, b.to_string())),
        );
    }
    assert!(examples.len() >= 5, "complete examples: {}", examples.len());
    for (n, (file, example)) in examples.iter().enumerate() {
        let name = format!("example-{n}.yaml");
        s.write(&name, example);
        let run = s.drp(&["check", &name]);
        // 8: docs/policy.md's first example cannot meet its 30-minute RPO twice a day, as drp check says.
        assert!(
            [0, 8].contains(&run.code) && !run.all().contains("problem"),
            "{file}:\n{example}\n{}",
            run.all()
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for l in markdown.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && l.starts_with('#') {
            out.insert(anchor(l));
        }
    }
    out
}

/// The targets of `[text](target)` links outside code.
fn links(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for l in markdown.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code never holds a link.
        let prose: String = l.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_leads_somewhere() {
    let mut files = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            files.push(p);
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            checked += 1;
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", file.display()));
            } else if !fragment.is_empty() {
                let body = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&body).contains(fragment) {
                    broken.push(format!("{}: {link}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(checked >= 20, "links checked: {checked}");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The `.rs` files under `dir`, relative to it.
fn rust_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

#[test]
fn architecture_md_maps_every_module_and_every_suite_module() {
    let map = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let mut unmapped = Vec::new();
    for krate in ["core", "cli", "agent", "coordinator"] {
        let src = repo().join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &src, &mut files);
        for file in files {
            let (dir, name) = file.rsplit_once('/').unwrap_or(("", &file));
            // A folder's `mod.rs` is named by the folder (`wal/`, `action/dns/`),
            // any other file by its name or a path ending with it
            // (`dump.rs`, `mysql/dump.rs`).
            let (path, end) = match name {
                "mod.rs" => (dir, "/"),
                _ => (file.as_str(), ""),
            };
            let parts: Vec<&str> = path.split('/').collect();
            let named =
                (0..parts.len()).any(|k| map.contains(&format!("`{}{end}`", parts[k..].join("/"))));
            if !named {
                unmapped.push(format!("{krate}/src/{file}"));
            }
        }
    }
    let main = std::fs::read_to_string(repo().join("tests/suite/main.rs")).unwrap();
    let tests = map
        .split("### `tests/`")
        .nth(1)
        .expect("ARCHITECTURE.md maps `tests/`");
    let tests = tests.split("\n### ").next().unwrap();
    let modules: Vec<&str> = main
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    assert!(modules.len() >= 20, "{modules:?}");
    for m in modules {
        if !tests.contains(&format!("`{m}`")) {
            unmapped.push(format!("tests/suite: mod {m}"));
        }
    }
    assert!(
        unmapped.is_empty(),
        "not in ARCHITECTURE.md's code map:\n{}",
        unmapped.join("\n")
    );
}
