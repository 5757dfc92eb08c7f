//! Finds the line and column of a key path (`exports.db.source.kind`) in YAML
//! text, so that errors found after deserialisation still point at the file.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Line and column (both 1-based) of every key and sequence item, by path.
#[derive(Debug, Default)]
pub struct Locations {
    by_path: HashMap<String, (usize, usize)>,
    /// Paths of the values written as plain (unquoted) scalars: the only ones
    /// whose expansion may read as a number or a boolean.
    plain: HashSet<String>,
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

impl Locations {
    /// Indexes `text`. Invalid YAML yields an empty index: the YAML parser of
    /// the policy reports syntax errors with their own location.
    pub fn index(text: &str) -> Self {
        let mut out = Locations::default();
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<String> = Vec::new();
        while let Ok((event, mark)) = parser.next_token() {
            let at = (mark.line(), mark.col() + 1);
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            if is_node {
                // A scalar where a mapping expects a key is the key itself.
                if let (Event::Scalar(k, ..), Some(Frame::Map { key })) = (&event, stack.last_mut())
                    && key.is_none()
                {
                    path.push(k.clone());
                    out.by_path.entry(join(&path)).or_insert(at);
                    path.pop();
                    *key = Some(k.clone());
                    continue;
                }
                // Otherwise it is a value: enter its path.
                match stack.last_mut() {
                    Some(Frame::Map { key }) => path.push(key.clone().unwrap_or_default()),
                    Some(Frame::Seq { index }) => {
                        path.push(format!("[{index}]"));
                        out.by_path.entry(join(&path)).or_insert(at);
                    }
                    None => {}
                }
                if let Event::Scalar(_, TScalarStyle::Plain, ..) = event {
                    out.plain.insert(join(&path));
                }
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
                    _ => end_value(&mut stack, &mut path),
                }
            } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                end_value(&mut stack, &mut path);
            } else if matches!(event, Event::StreamEnd) {
                break;
            }
        }
        out
    }

    /// Whether the value at `path` is a plain (unquoted) scalar.
    pub fn is_plain(&self, path: &str) -> bool {
        self.plain.contains(path)
    }

    /// The location of `path`, or of its nearest located ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path.to_string();
        loop {
            if let Some(at) = self.by_path.get(&p) {
                return Some(*at);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

fn end_value(stack: &mut [Frame], path: &mut Vec<String>) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => {
            *key = None;
            path.pop();
        }
        Some(Frame::Seq { index }) => {
            *index += 1;
            path.pop();
        }
        None => {}
    }
}

fn join(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if !s.is_empty() && !seg.starts_with('[') {
            s.push('.');
        }
        s.push_str(seg);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_items() {
        let text =
            "host: a\nexports:\n  db:\n    targets: [nas, s3]\n    source:\n      kind: sqlite\n";
        let l = Locations::index(text);
        assert_eq!(l.find("host"), Some((1, 1)));
        assert_eq!(l.find("exports.db"), Some((3, 3)));
        assert_eq!(l.find("exports.db.targets[1]"), Some((4, 20)));
        assert_eq!(l.find("exports.db.source.kind"), Some((6, 7)));
        assert_eq!(l.find("exports.db.source.nope"), Some((5, 5)));
        assert!(l.is_plain("exports.db.source.kind") && l.is_plain("exports.db.targets[1]"));
        assert!(!l.is_plain("exports.db.source"));
        let quoted = Locations::index("port: \"5432\"\nhost: 'a'\nn: 5\n");
        assert!(!quoted.is_plain("port") && !quoted.is_plain("host") && quoted.is_plain("n"));
    }
}
