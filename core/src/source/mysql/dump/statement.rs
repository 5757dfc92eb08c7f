//! What the filter (`filter.rs`) knows of the statement it reads: its
//! class from its first words, and what it has seen of it so far.

use super::super::sql::{Quoting, Text, Tok, Token};

/// What a statement is, from its first words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Set,
    /// `CREATE TABLE`, `CREATE SEQUENCE`, `DROP … IF EXISTS`.
    Plain,
    /// `LOCK TABLES`, `UNLOCK TABLES`: left out (nothing else writes to the
    /// staged copy, and a table whose default reads a sequence cannot be
    /// loaded under a lock that does not name the sequence).
    Lock,
    /// `ALTER TABLE t DISABLE KEYS` (or `ENABLE`).
    AlterKeys,
    /// `INSERT INTO t VALUES (…)` of literals.
    Data,
    /// `DO SETVAL(s, …)`, `SELECT SETVAL(s, …)`.
    SetVal,
    /// A trigger, routine, event or view.
    Code(Code),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    Trigger,
    Other,
}

/// Words that may stand between `CREATE` and what it creates.
const CREATE_CLAUSE: [&str; 15] = [
    "or",
    "replace",
    "algorithm",
    "undefined",
    "merge",
    "temptable",
    "definer",
    "current_user",
    "sql",
    "security",
    "invoker",
    "aggregate",
    "if",
    "not",
    "exists",
];

/// The class of a statement starting with `head` (its first tokens), or
/// `None` while more tokens are needed.
pub(super) fn classify(head: &[Tok]) -> Option<Result<Class, &'static str>> {
    let word = |i: usize| -> Option<String> {
        match head.get(i)? {
            Tok::Word(t) => Some(String::from_utf8_lossy(&t.bytes).to_ascii_lowercase()),
            _ => Some(String::new()),
        }
    };
    let first = word(0)?;
    let unknown = Some(Err("a statement a dump does not hold"));
    match first.as_str() {
        "set" => Some(Ok(Class::Set)),
        "insert" => match word(1)?.as_str() {
            "into" => Some(Ok(Class::Data)),
            _ => unknown,
        },
        "lock" | "unlock" => match word(1)?.as_str() {
            "tables" | "table" => Some(Ok(Class::Lock)),
            _ => unknown,
        },
        "alter" => match word(1)?.as_str() {
            "table" => Some(Ok(Class::AlterKeys)),
            _ => unknown,
        },
        "drop" => match word(1)?.as_str() {
            "table" | "view" | "function" | "procedure" | "event" | "trigger" | "sequence" => {
                Some(Ok(Class::Plain))
            }
            _ => unknown,
        },
        "do" | "select" => match word(1)?.as_str() {
            "setval" => Some(Ok(Class::SetVal)),
            _ => unknown,
        },
        "create" => {
            let last = head.len() - 1;
            if last == 0 {
                return None;
            }
            match &head[last] {
                Tok::Word(t) => {
                    let w = String::from_utf8_lossy(&t.bytes).to_ascii_lowercase();
                    match w.as_str() {
                        "table" | "sequence" => Some(Ok(Class::Plain)),
                        "trigger" => Some(Ok(Class::Code(Code::Trigger))),
                        "view" | "procedure" | "function" | "event" => {
                            Some(Ok(Class::Code(Code::Other)))
                        }
                        _ if CREATE_CLAUSE.contains(&w.as_str()) && last < 24 => None,
                        _ => unknown,
                    }
                }
                Tok::Ident(_) | Tok::SQuote(_) | Tok::DQuote(_) if last < 24 => None,
                Tok::Punct(b'=' | b'@' | b'(' | b')') if last < 24 => None,
                _ => unknown,
            }
        }
        _ => unknown,
    }
}

/// Character sets whose multi-byte characters can hold a quote or a
/// backslash byte: a statement read in them ends elsewhere than the
/// client (and this filter) reads it.
const UNSAFE_CHARSETS: [&str; 9] = [
    "big5", "cp932", "gbk", "sjis", "gb18030", "utf16", "utf16le", "utf32", "ucs2",
];

/// What a user variable holds, as far as the filter follows it.
#[derive(Debug, Clone)]
pub(super) enum Held {
    Mode(Quoting),
    SafeCharset,
    Text(String),
}

/// Whether a name token is the first part of a qualified name.
#[derive(Debug, Clone)]
pub(super) enum Last {
    None,
    Name {
        text: Text,
        start: u64,
        end: u64,
        /// It is itself the second part (`db.t` in `db.t.c`).
        second: bool,
        /// The object a trigger, routine, event or view creates, or a
        /// trigger's table.
        target: bool,
        /// Just after the word `REFERENCES` (a foreign key's table).
        referenced: bool,
    },
    Dot {
        text: Text,
        start: u64,
        end: u64,
        dot: (u64, u64),
        second: bool,
        target: bool,
        referenced: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Insert {
    Table,
    Columns,
    Values,
}

pub(super) struct Statement {
    pub(super) start: u64,
    pub(super) class: Option<Class>,
    pub(super) head: Vec<Tok>,
    /// The first words, for messages (never a string's text).
    pub(super) shown: Vec<String>,
    pub(super) last: Last,
    /// The previous token was a `.`.
    pub(super) after_dot: bool,
    /// The previous token was the word `REFERENCES`.
    pub(super) after_references: bool,
    /// A `;` ended the statement the server would read.
    pub(super) closed: bool,
    pub(super) want_target: bool,
    pub(super) want_on: bool,
    pub(super) targets: u8,
    /// It creates a table, view, sequence or routine.
    pub(super) names_object: bool,
    /// The name of what it creates.
    pub(super) object: Option<Text>,
    pub(super) insert: Insert,
    pub(super) set: Vec<Token>,
    pub(super) empty: bool,
}

impl Statement {
    pub(super) fn new(start: u64) -> Self {
        Statement {
            start,
            class: None,
            head: Vec::new(),
            shown: Vec::new(),
            last: Last::None,
            after_dot: false,
            after_references: false,
            closed: false,
            want_target: false,
            want_on: false,
            targets: 0,
            names_object: false,
            object: None,
            insert: Insert::Table,
            set: Vec::new(),
            empty: true,
        }
    }
}

pub(super) enum Target {
    System(String),
    User(String),
}

pub(super) fn safe_charset(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n != "default" && !UNSAFE_CHARSETS.contains(&n.as_str())
}
