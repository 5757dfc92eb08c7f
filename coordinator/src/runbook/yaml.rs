//! Reading a runbook's YAML: the root mapping with `<<` merge keys applied
//! and `${VAR}` expanded, its keys checked, and typed fields taken from it
//! with located diagnostics.

use std::path::Path;

use drp_core::config::{Diagnostic, Diagnostics, PolicyError};
use serde_yaml_ng::{Mapping, Value};

/// The root mapping of `text`, and the diagnostics to collect the file's
/// problems into. YAML that does not parse, a variable that is not set or
/// a root that is not a mapping stop here: nothing else can be checked.
pub(super) fn read_root(
    path: &Path,
    text: &str,
) -> Result<(Diagnostics, Mapping), drp_core::Error> {
    let mut root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        unlocated(path, line, format!("not valid YAML: {e}"))
    })?;
    // `<<: *anchor` merges a mapping written once (a switch and its way back).
    root.apply_merge()
        .map_err(|e| unlocated(path, 1, format!("a `<<` merge key cannot be applied: {e}")))?;
    let mut d = Diagnostics::new(path, text);
    // `${VAR}` on parsed values: a variable's content is one value, never YAML.
    d.expand_env(&mut root);
    if !d.items.is_empty() {
        return Err(drp_core::Error::Policy(PolicyError {
            diagnostics: d.items,
        }));
    }
    let Value::Mapping(root) = root else {
        return Err(unlocated(
            path,
            1,
            "a runbook must be a mapping with `name`, `policy` and `steps`".into(),
        ));
    };
    Ok((d, root))
}

/// One problem at a line of the file, for when there are no keys to locate.
fn unlocated(path: &Path, line: usize, message: String) -> drp_core::Error {
    drp_core::Error::Policy(PolicyError {
        diagnostics: vec![Diagnostic {
            file: path.to_path_buf(),
            line,
            column: 1,
            key: String::new(),
            message,
            hint: None,
        }],
    })
}

/// Records every key of `root` that is not one of `known`, with the
/// nearest known key as a hint.
pub(super) fn unknown_keys(d: &mut Diagnostics, root: &Mapping, known: &[&str]) {
    for k in root.keys().filter_map(Value::as_str) {
        if !known.contains(&k) {
            d.push(
                k,
                format!("unknown key `{k}`"),
                drp_core::config::did_you_mean(k, known),
            );
        }
    }
}

/// The value at `key` of `map` (at path `base` in the file), deserialised;
/// `None` with a diagnostic when it does not fit, or is missing and `required`.
pub(super) fn field<T: serde::de::DeserializeOwned>(
    d: &mut Diagnostics,
    map: &Mapping,
    base: &str,
    key: &str,
    required: bool,
) -> Option<T> {
    let path = if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    };
    match map.get(key) {
        Some(node) => match serde_path_to_error::deserialize(node.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                d.push_serde(&path, e);
                None
            }
        },
        None => {
            if required {
                d.push(
                    base,
                    format!("missing `{key}`"),
                    Some(format!("add `{key}`")),
                );
            }
            None
        }
    }
}
