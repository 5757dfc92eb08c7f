//! drp coordinator: the runbook engine. Runbooks, their actions, drills and
//! incident runs, RTO/RPO reports and compliance over a period. Everything
//! that touches recovery points goes through `drp_core`'s public API, so the
//! agent and the coordinator behave the same.

pub mod action;
pub mod compliance;
pub mod drill;
pub mod engine;
pub mod fleet;
pub mod handover;
pub mod report;
pub mod runbook;

#[cfg(test)]
mod architecture {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// What `drp-agent` must not reach: the drill and report engine.
    const ENGINE: [&str; 6] = [
        "engine",
        "drill",
        "report",
        "compliance",
        "handover",
        "fleet::status",
    ];

    /// Each `.rs` file under `dir`, as a module path relative to `root`
    /// (`a::b` for `a/b.rs` and `a/b/mod.rs`), with its code before its
    /// tests.
    fn sources(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let name = rel.to_str().unwrap().trim_end_matches("/mod");
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_string();
                out.insert(name.replace('/', "::"), code);
            }
        }
    }

    /// The library's modules: the files under the modules `lib.rs` declares
    /// (the binary's own files left out).
    fn library() -> BTreeMap<String, String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let lib = lib.split("#[cfg(test)]").next().unwrap();
        let declared: BTreeSet<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect();
        let mut all = BTreeMap::new();
        sources(&src, &src, &mut all);
        all.into_iter()
            .filter(|(m, _)| declared.contains(m.split("::").next().unwrap()))
            .collect()
    }

    /// The paths a use tree or a path in code names, read from its start:
    /// `a::b` and `a::c::d` for `a::{b, c::{self, d}}`; a path ends where
    /// its name does (`a::b` for `a::b(x)`).
    fn paths(text: &str) -> Vec<String> {
        let path: String = text
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let base = path.trim_end_matches(':');
        let rest = &text[path.len()..];
        if !((path.is_empty() || path.ends_with("::")) && rest.starts_with('{')) {
            return vec![base.to_string()];
        }
        let (mut items, mut depth, mut start) = (Vec::new(), 0, 1);
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    items.push(&rest[start..i]);
                    start = i + 1;
                    if c == '}' {
                        break;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        items
            .into_iter()
            .flat_map(|item| paths(item.trim()))
            .filter(|p| !p.is_empty())
            .map(|p| match p.as_str() {
                "self" => base.to_string(),
                _ if base.is_empty() => p,
                _ => format!("{base}::{p}"),
            })
            .collect()
    }

    /// The library's modules that `code` names after `prefix`, each path
    /// joined to `base` (`super::x` in `a::b` is `a::x`).
    fn named(
        code: &str,
        prefix: &str,
        base: Option<&str>,
        known: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in paths(&code[i + prefix.len()..]) {
                let path = match base {
                    Some(b) => format!("{b}::{path}"),
                    None => path,
                };
                let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                if let Some(m) = (1..=parts.len())
                    .rev()
                    .map(|k| parts[..k].join("::"))
                    .find(|c| known.contains(c))
                {
                    out.insert(m);
                }
            }
        }
        out
    }

    /// Each library module and the library modules it names: through
    /// `crate::`, `super::`, `self::`, and a submodule's own name.
    fn graph(library: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
        let known: BTreeSet<String> = library.keys().cloned().collect();
        let mut graph = BTreeMap::new();
        for (module, code) in library {
            let parent = module.rsplit_once("::").map(|(p, _)| p);
            let mut to = named(code, "crate::", None, &known);
            // A top module's `super::` is the crate's root.
            to.extend(named(code, "super::", parent, &known));
            to.extend(named(code, "self::", Some(module), &known));
            for child in known
                .iter()
                .filter_map(|k| k.strip_prefix(&format!("{module}::")))
            {
                if !child.contains("::") {
                    to.extend(named(
                        code,
                        &format!("{child}::"),
                        Some(&format!("{module}::{child}")),
                        &known,
                    ));
                }
            }
            to.remove(module);
            graph.insert(module.clone(), to);
        }
        graph
    }

    /// The modules `from` reaches, each with the module that named it.
    fn reach(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &BTreeSet<String>,
    ) -> BTreeMap<String, String> {
        let mut seen: BTreeMap<String, String> = from
            .iter()
            .map(|m| (m.clone(), "drp-agent".to_string()))
            .collect();
        let mut todo: Vec<String> = from.iter().cloned().collect();
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if !seen.contains_key(n) {
                    seen.insert(n.clone(), m.clone());
                    todo.push(n.clone());
                }
            }
        }
        seen
    }

    #[test]
    fn the_agent_does_not_reach_the_drill_and_report_engine() {
        let library = library();
        let known: BTreeSet<String> = library.keys().cloned().collect();
        assert!(
            known.contains("drill::judge") && known.contains("fleet::allow"),
            "{known:?}"
        );
        let agent_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
        let mut agent = BTreeMap::new();
        sources(&agent_src, &agent_src, &mut agent);
        let used: BTreeSet<String> = agent
            .values()
            .flat_map(|code| named(code, "drp_coordinator::", None, &known))
            .collect();
        // `drp-agent serve`: the actions, the protocol, the allow rules.
        for m in ["action", "fleet::allow", "fleet::protocol"] {
            assert!(
                used.contains(m),
                "the agent's use of {m} not found in {used:?}"
            );
        }
        let reached = reach(&graph(&library), &used);
        let mut wrong = Vec::new();
        for (m, by) in &reached {
            if ENGINE
                .iter()
                .any(|e| m == e || m.starts_with(&format!("{e}::")))
            {
                wrong.push(format!("{m} (named by {by})"));
            }
        }
        assert!(
            wrong.is_empty(),
            "drp-agent reaches the drill and report engine: {}",
            wrong.join(", ")
        );
    }

    #[test]
    fn use_trees_are_read_whole() {
        assert_eq!(paths("a::b::C;"), ["a::b::C"]);
        assert_eq!(
            paths("a::{b, c::{self, D as _}};"),
            ["a::b", "a::c", "a::c::D"]
        );
        assert_eq!(paths("{a::B, c};"), ["a::B", "c"]);
        assert_eq!(paths("f(x)"), ["f"]);
    }

    #[test]
    fn the_library_does_not_render_tables() {
        let library = library();
        let rendering: Vec<&String> = library
            .iter()
            .filter(|(_, code)| code.contains("drp_cli::"))
            .map(|(m, _)| m)
            .collect();
        assert!(
            rendering.is_empty(),
            "the library names `drp_cli`: {rendering:?}"
        );
    }
}
