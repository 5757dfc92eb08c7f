//! drp's core: the domain both binaries (and, later, the fleet protocol)
//! call. Policies, sources, backends, repositories, the data path, backups,
//! restores, verification, retention and snapshots.
//!
//! The public API, by what a caller does:
//! - read a policy: [`config::Policy::load`]; pick repositories:
//!   [`scope::Scope`], [`repository::Repository`];
//! - back up: [`runner::run_export`] (lock, export, notify, upkeep) or
//!   [`backup::run`] (the export alone);
//! - restore: [`restore::find`], then [`restore::Restore`] (plan, then execute);
//!   verify: [`verify::verify`]; apply retention: [`prune`];
//! - snapshots before a change: [`snapshot::create`], [`snapshot::rollback`];
//! - judge objectives: [`posture`] (what the schedules can meet) and
//!   [`export_status`] (where each export stands now); keep the schedule:
//!   [`runner::daemon`].
//!
//! Not public, deliberately: the data path (`pipeline`: compression,
//! fan-out, digests), chunk I/O (`chunk`), the per-export locks (`export_lock`) and
//! the scheduler's DST handling (`scheduler`). Callers get their effects
//! through the functions above, so commit-last and verify-before-replace
//! cannot be bypassed; [`runner::run_export`] and [`prune`] hold the
//! export's lock ([`backup::run`] alone does not: it is the export itself).
//!
//! Library code never prints and takes no command line: the `drp-cli` crate
//! renders output. Long operations report through [`progress::Progress`].

pub mod archiving;
pub mod backend;
pub mod backup;
mod chunk;
pub mod config;
pub mod error;
mod export_lock;
pub mod export_status;
pub mod fence;
pub mod hooks;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod notify;
mod paths;
mod pipeline;
pub mod posture;
pub mod progress;
pub mod prune;
pub mod records;
pub mod rehearsal;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod runner;
mod scheduler;
pub mod scope;
mod secret;
pub mod snapshot;
pub mod source;
pub mod standby;
pub mod state;
pub mod time;
pub mod verify;
pub mod watch;

pub use error::{Error, ExitCode, Result};

/// The core's layers, read from its own `use` lines: the invariants
/// ARCHITECTURE.md states, checked on every build of the tests.
#[cfg(test)]
mod architecture {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each module (a file, `a::b` for `a/b.rs`) and the modules of the
    /// crate it names, tests left out.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path.strip_prefix(root).unwrap().with_extension("");
                    let name = rel
                        .to_str()
                        .unwrap()
                        .trim_end_matches("/mod")
                        .replace('/', "::");
                    if name != "lib" {
                        let text = std::fs::read_to_string(&path).unwrap();
                        let code = text.split("#[cfg(test)]").next().unwrap().to_string();
                        out.insert(name, code);
                    }
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sources = BTreeMap::new();
        walk(&root, &root, &mut sources);
        let known: BTreeSet<String> = sources.keys().cloned().collect();
        let mut graph = BTreeMap::new();
        for (module, code) in &sources {
            let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
            let mut named = BTreeSet::new();
            let mut paths: Vec<String> = Vec::new();
            for (prefix, base) in [("crate::", None), ("super::", parent.as_deref())] {
                for (i, _) in code.match_indices(prefix) {
                    let rest: String = code[i + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let full = match base {
                        Some(b) => format!("{b}::{rest}"),
                        None if prefix == "super::" => continue,
                        None => rest,
                    };
                    paths.push(full);
                }
            }
            for path in paths {
                let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                let found = (1..=parts.len())
                    .rev()
                    .map(|k| parts[..k].join("::"))
                    .find(|c| known.contains(c));
                if let Some(m) = found
                    && &m != module
                    && !module.starts_with(&format!("{m}::"))
                {
                    named.insert(m);
                }
            }
            graph.insert(module.clone(), named);
        }
        graph
    }

    /// The modules `from` reaches through imports.
    fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    }

    #[test]
    fn the_core_has_no_import_loop() {
        let graph = imports();
        let loops: BTreeSet<&String> = graph
            .keys()
            .filter(|m| reach(&graph, m).contains(*m))
            .collect();
        assert!(loops.is_empty(), "modules on an import loop: {loops:?}");
    }

    #[test]
    fn the_values_a_policy_shares_are_leaves() {
        let graph = imports();
        assert!(
            graph["paths"].is_empty(),
            "paths imports {:?}",
            graph["paths"]
        );
        let paths = BTreeSet::from(["paths".to_string()]);
        assert!(
            graph["secret"].is_subset(&paths),
            "secret imports {:?}",
            graph["secret"]
        );
    }

    #[test]
    fn lower_layers_import_no_operation() {
        let graph = imports();
        let operations = [
            "backup",
            "restore",
            "rehearsal",
            "export_status",
            "metrics",
            "runner",
            "prune",
            "verify",
            "snapshot",
        ];
        for (module, named) in &graph {
            let lower = ["repository", "records", "state", "manifest", "archiving"]
                .iter()
                .any(|l| module == l || module.starts_with(&format!("{l}::")));
            if !lower {
                continue;
            }
            for op in operations {
                assert!(
                    !named
                        .iter()
                        .any(|n| n == op || n.starts_with(&format!("{op}::"))),
                    "{module} imports the operation {op}"
                );
            }
        }
        assert!(
            graph["records"].is_empty(),
            "a record imports nothing: {:?}",
            graph["records"]
        );
        for m in ["repository", "backend"] {
            assert!(!graph["metrics"].contains(m), "metrics reads {m}");
        }
    }
}
