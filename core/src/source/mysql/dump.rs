//! The raw stream of a MariaDB point, and the dump read back from it.
//!
//! ```text
//! drp-my/1\n
//! database <the exported database>\n
//! accounts <byte length>\n
//! <the account statements (see `accounts`)>
//! <the mariadb-dump output, to the end of the stream>
//! ```
//!
//! Points taken before the framing existed are a bare dump: they carry no
//! accounts, and the exported database's name is read from the dump's own
//! header comment.
//!
//! A dump is data, never a command: before it is loaded into the staged
//! copy, every statement is checked to be one of the shapes `mariadb-dump`
//! writes, acting on the staged database only ([`Filter`]). Qualifications
//! with the exported database's name (`shop.orders` in a trigger written
//! as `create trigger shop.t … on shop.orders`) are taken out, so that the
//! objects are created in the staged copy and refer to their own database
//! wherever it is restored. A trigger, routine, event or view is sent to the
//! server as one prepared statement (`EXECUTE IMMEDIATE` of its text as a
//! hex literal), so that nothing after its body can run as a second
//! statement.

use std::collections::{BTreeSet, HashMap};
use std::io::{Cursor, Read, Write};

use super::super::{ExportInfo, ExportStream, SourceError};
use super::sql::{Quoting, Scan, Scanner, Sink, Text, Tok, Token};

pub const FRAMING_NAME: &str = "drp-my/1";

/// Account statements larger than this are not account statements.
const ACCOUNTS_MAX: usize = 16 << 20;

/// The export stream: the header and accounts, then the dump.
pub struct Framed {
    head: Cursor<Vec<u8>>,
    dump: Box<dyn ExportStream>,
}

impl Framed {
    pub fn new(database: &str, accounts: &str, dump: Box<dyn ExportStream>) -> Self {
        let mut head = format!(
            "{FRAMING_NAME}\ndatabase {database}\naccounts {}\n",
            accounts.len()
        )
        .into_bytes();
        head.extend_from_slice(accounts.as_bytes());
        Framed {
            head: Cursor::new(head),
            dump,
        }
    }
}

impl Read for Framed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.head.read(buf)? {
            0 => self.dump.read(buf),
            n => Ok(n),
        }
    }
}

impl ExportStream for Framed {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        self.dump.finish()
    }
}

/// What a point's stream says ahead of its dump.
#[derive(Debug, Default)]
pub struct Head {
    /// The exported database.
    pub database: Option<String>,
    /// The account statements; `None` for a point without framing.
    pub accounts: Option<String>,
}

/// Reads the header (if any) ahead of the dump; returns it and the bytes
/// of the dump already read (the rest follows in `raw`). An error says why
/// the stream is not a point drp can read.
pub fn read_head(raw: &mut dyn Read) -> Result<(Head, Vec<u8>), String> {
    let magic = format!("{FRAMING_NAME}\n");
    let mut first = Vec::new();
    (&mut *raw)
        .take(magic.len() as u64)
        .read_to_end(&mut first)
        .map_err(|e| format!("reading the recovery point: {e}"))?;
    if first != magic.as_bytes() {
        // A bare dump: its first lines name the database.
        (&mut *raw)
            .take(8192)
            .read_to_end(&mut first)
            .map_err(|e| format!("reading the recovery point: {e}"))?;
        let head = Head {
            database: dumped_database(&String::from_utf8_lossy(&first)),
            accounts: None,
        };
        return Ok((head, first));
    }
    let database = read_line(raw)?
        .strip_prefix("database ")
        .map(str::to_string)
        .filter(|d| super::check_name(d).is_ok())
        .ok_or("its header does not name a database drp could have exported")?;
    let len: usize = read_line(raw)?
        .strip_prefix("accounts ")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= ACCOUNTS_MAX)
        .ok_or("its accounts header is damaged")?;
    let mut accounts = vec![0u8; len];
    raw.read_exact(&mut accounts)
        .map_err(|e| format!("reading the point's accounts: {e}"))?;
    let accounts = String::from_utf8(accounts).map_err(|_| "its accounts are not text")?;
    Ok((
        Head {
            database: Some(database),
            accounts: Some(accounts),
        },
        Vec::new(),
    ))
}

/// One `\n`-terminated header line.
fn read_line(raw: &mut dyn Read) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= 256 {
        raw.read_exact(&mut byte)
            .map_err(|e| format!("reading the point's header: {e}"))?;
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(|_| "its header is not text".into());
        }
        line.push(byte[0]);
    }
    Err("a header line is too long".into())
}

/// The database a bare dump names in its header comment
/// (`-- Host: localhost    Database: shop`).
fn dumped_database(head: &str) -> Option<String> {
    head.lines()
        .take_while(|l| l.is_empty() || l.starts_with("--") || l.starts_with("/*"))
        .find_map(|l| l.strip_prefix("-- Host: "))
        .and_then(|l| l.split_once("Database: "))
        .map(|(_, db)| db.trim().to_string())
        .filter(|db| super::check_name(db).is_ok())
}

/// Bytes kept back from the file for a qualification to be taken out.
const KEEP: u64 = 64 * 1024;

/// Written to the file once this much is buffered beyond what is kept.
const FLUSH_AT: usize = 1 << 20;

/// The largest statement held whole (a trigger, routine, event or view).
const HELD_MAX: usize = 64 << 20;

/// The filter's output: buffered, so that a qualification can be taken out
/// of bytes already scanned, and a statement held whole until its end.
struct Out<W: Write> {
    w: W,
    buf: Vec<u8>,
    /// The count of the first byte in `buf`.
    base: u64,
    /// Nothing from here on is written yet.
    hold: Option<u64>,
    err: Option<std::io::Error>,
}

impl<W: Write> Out<W> {
    fn new(w: W) -> Self {
        Out {
            w,
            buf: Vec::with_capacity(FLUSH_AT * 2),
            base: 0,
            hold: None,
            err: None,
        }
    }

    fn flush_before(&mut self, at: u64) {
        let n = (at.saturating_sub(self.base) as usize).min(self.buf.len());
        if n == 0 || self.err.is_some() {
            return;
        }
        if let Err(e) = self.w.write_all(&self.buf[..n]) {
            self.err = Some(e);
        }
        self.buf.drain(..n);
        self.base += n as u64;
    }

    fn slice(&self, from: u64, to: u64) -> Option<&[u8]> {
        let a = from.checked_sub(self.base)? as usize;
        let b = to.checked_sub(self.base)? as usize;
        self.buf.get(a..b)
    }

    /// Replaces the bytes `from..to` (still buffered) with `with`.
    fn replace(&mut self, from: u64, to: u64, with: &[u8]) -> bool {
        let (Some(a), Some(b)) = (from.checked_sub(self.base), to.checked_sub(self.base)) else {
            return false;
        };
        let (a, b) = (a as usize, b as usize);
        if b > self.buf.len() || a > b {
            return false;
        }
        self.buf.splice(a..b, with.iter().copied());
        true
    }

    fn held_too_long(&self) -> bool {
        self.buf.len() > HELD_MAX
    }

    fn finish(mut self) -> std::io::Result<W> {
        let end = self.pos();
        self.flush_before(end);
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

impl<W: Write> Sink for Out<W> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > FLUSH_AT + KEEP as usize {
            let keep_from = self.pos().saturating_sub(KEEP);
            let at = self.hold.map_or(keep_from, |h| h.min(keep_from));
            if at.saturating_sub(self.base) as usize >= FLUSH_AT {
                self.flush_before(at);
            }
        }
    }

    fn pos(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

/// What a statement is, from its first words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
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
enum Code {
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
fn classify(head: &[Tok]) -> Option<Result<Class, &'static str>> {
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
enum Held {
    Mode(Quoting),
    SafeCharset,
    Text(String),
}

/// Whether a name token is the first part of a qualified name.
#[derive(Debug, Clone)]
enum Last {
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
enum Insert {
    Table,
    Columns,
    Values,
}

struct Statement {
    start: u64,
    class: Option<Class>,
    head: Vec<Tok>,
    /// The first words, for messages (never a string's text).
    shown: Vec<String>,
    last: Last,
    /// The previous token was a `.`.
    after_dot: bool,
    /// The previous token was the word `REFERENCES`.
    after_references: bool,
    /// A `;` ended the statement the server would read.
    closed: bool,
    want_target: bool,
    want_on: bool,
    targets: u8,
    /// It creates a table, view, sequence or routine.
    names_object: bool,
    /// The name of what it creates.
    object: Option<Text>,
    insert: Insert,
    set: Vec<Token>,
    empty: bool,
}

impl Statement {
    fn new(start: u64) -> Self {
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

/// Checks and rewrites a dump (see the module's documentation).
pub struct Filter<'a> {
    /// The exported database: qualifications with it are taken out.
    source: Option<&'a str>,
    /// The database the point is restored as: a statement naming it is
    /// refused (`None` for definitions read from the server itself).
    dest: Option<&'a str>,
    /// The database's tables, views, sequences and routines seen so far:
    /// in a view or routine, `shop`.`id` where `shop` is one of them (and
    /// `id` is not) is a table's column, not a database's object.
    objects: BTreeSet<Vec<u8>>,
    vars: HashMap<String, Held>,
}

/// Why a dump is not loaded, in a sentence.
fn refusal(why: &str, st: &Statement) -> String {
    let head = if st.shown.is_empty() {
        String::new()
    } else {
        format!(" (`{} …`)", st.shown.join(" "))
    };
    format!("the dump holds {why}{head}")
}

impl<'a> Filter<'a> {
    pub fn new(source: Option<&'a str>, dest: Option<&'a str>) -> Self {
        Filter {
            source,
            dest,
            objects: BTreeSet::new(),
            vars: HashMap::new(),
        }
    }

    /// The filter, knowing the database's tables and views beforehand.
    pub fn knowing(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.objects
            .extend(names.into_iter().map(String::into_bytes));
        self
    }

    /// Reads `dump`, writes what is loaded to `w`; `Ok(Err(why))` when the
    /// dump is refused (what was written is then to be thrown away).
    pub fn run<W: Write>(mut self, dump: impl Read, w: W) -> std::io::Result<Result<W, String>> {
        let mut scanner = Scanner::new(dump);
        let mut out = Out::new(w);
        let mut st = Statement::new(0);
        out.hold = Some(0);
        loop {
            // Values in rows are not read, only checked to be values.
            scanner.keep_strings = !matches!(st.class, Some(Class::Data));
            let t = match scanner.next(&mut out)? {
                Scan::Refused(why) => return Ok(Err(refusal(&why, &st))),
                Scan::Token(t) => t,
            };
            if let Some(e) = out.err.take() {
                return Err(e);
            }
            if out.held_too_long() {
                return Ok(Err(refusal("a statement too large to check", &st)));
            }
            let step = match &t.tok {
                Tok::Eof => {
                    let end = out.pos();
                    if let Err(why) = self.end(&mut st, (end, end), &mut out, &mut scanner.quoting)
                    {
                        return Ok(Err(why));
                    }
                    return out.finish().map(Ok);
                }
                Tok::End => self.end(&mut st, (t.start, t.end), &mut out, &mut scanner.quoting),
                Tok::Delimiter(_) => Ok(()),
                _ if t.inert => {
                    continue;
                }
                _ => self.token(&mut st, &t, &mut out),
            };
            if let Err(why) = step {
                return Ok(Err(why));
            }
            if matches!(t.tok, Tok::End | Tok::Delimiter(_)) {
                if let Some(object) = st.object.take() {
                    self.objects.insert(object.bytes);
                }
                if scanner.in_executable_comment() {
                    return Ok(Err(refusal(
                        "a statement ending inside an executable comment",
                        &st,
                    )));
                }
                st = Statement::new(out.pos());
                out.hold = Some(out.pos());
            }
        }
    }

    fn token<W: Write>(
        &mut self,
        st: &mut Statement,
        t: &Token,
        out: &mut Out<W>,
    ) -> Result<(), String> {
        st.empty = false;
        if st.closed {
            return Err(refusal("two statements in one", st));
        }
        if st.shown.len() < 4 {
            match &t.tok {
                Tok::Word(x) | Tok::Ident(x) => st
                    .shown
                    .push(String::from_utf8_lossy(&x.bytes).into_owned()),
                Tok::Punct(p) => st.shown.push(char::from(*p).to_string()),
                _ => st.shown.push("…".into()),
            }
        }
        if st.class.is_none() {
            st.head.push(t.tok.clone());
            match classify(&st.head) {
                None => {}
                Some(Err(why)) => return Err(refusal(why, st)),
                Some(Ok(class)) => {
                    st.class = Some(class);
                    let creates = st.head.first().is_some_and(|t| t.is_word("create"));
                    st.want_target = creates;
                    st.names_object = creates && class != Class::Code(Code::Trigger);
                    // Only triggers, routines, events and views are held whole.
                    if !matches!(class, Class::Code(_)) {
                        out.hold = None;
                    }
                    st.after_dot = false;
                    st.after_references = false;
                    if class == Class::Set {
                        st.set.push(t.clone());
                    }
                    return Ok(());
                }
            }
        }
        let class = st.class;
        if t.tok == Tok::Punct(b';') && !matches!(class, Some(Class::Code(_))) {
            st.closed = true;
        }
        self.qualified(st, t, out)?;
        match class {
            None | Some(Class::Code(_)) => {}
            Some(Class::Set) => {
                if st.set.len() >= 512 {
                    return Err(refusal("a SET statement too long to check", st));
                }
                match &t.tok {
                    Tok::Word(w)
                        if [
                            "global",
                            "select",
                            "load_file",
                            "password",
                            "role",
                            "statement",
                        ]
                        .iter()
                        .any(|x| w.is_word(x)) =>
                    {
                        return Err(refusal(
                            "a statement acting beyond the restored database",
                            st,
                        ));
                    }
                    Tok::Var(v) if v.bytes.starts_with(b"@@global.") => {
                        return Err(refusal("a statement acting on the whole server", st));
                    }
                    _ => {}
                }
                st.set.push(t.clone());
            }
            Some(Class::Plain | Class::Lock) => match &t.tok {
                Tok::Word(w)
                    if ["select", "load_file", "connection", "file_name"]
                        .iter()
                        .any(|x| w.is_word(x)) =>
                {
                    return Err(refusal("a table reading beyond the restored database", st));
                }
                Tok::Var(_) => return Err(refusal("a variable where a dump has none", st)),
                _ => {}
            },
            Some(Class::AlterKeys) => match &t.tok {
                Tok::Word(w)
                    if !["disable", "enable", "keys"].iter().any(|x| w.is_word(x))
                        && !st.after_dot =>
                {
                    return Err(refusal("an ALTER TABLE a dump does not hold", st));
                }
                Tok::Ident(_) | Tok::DQuote(_) | Tok::Word(_) | Tok::Punct(b'.') => {}
                _ => return Err(refusal("an ALTER TABLE a dump does not hold", st)),
            },
            Some(Class::SetVal) => match &t.tok {
                Tok::Word(w) if !(w.is_word("true") || w.is_word("false") || st.after_dot) => {
                    return Err(refusal("a SETVAL a dump does not hold", st));
                }
                Tok::Word(_)
                | Tok::Ident(_)
                | Tok::DQuote(_)
                | Tok::Number
                | Tok::Punct(b'(' | b')' | b',' | b'-' | b'+' | b'.' | b';') => {}
                _ => return Err(refusal("a SETVAL a dump does not hold", st)),
            },
            Some(Class::Data) => self.data(st, t)?,
        }
        if st.want_target || st.want_on {
            let trigger = class == Some(Class::Code(Code::Trigger));
            match &t.tok {
                Tok::Word(w)
                    if st.want_target && ["if", "not", "exists"].iter().any(|x| w.is_word(x)) => {}
                Tok::Word(w) if st.want_on && w.is_word("on") => {
                    st.want_on = false;
                    st.want_target = true;
                }
                tok if st.want_target && tok.name().is_some() => {
                    st.want_target = false;
                    st.targets += 1;
                    // A trigger's table follows `ON`.
                    st.want_on = trigger && st.targets == 1;
                    if st.names_object {
                        st.object = tok.name().cloned();
                    }
                    if let Last::Name { target, .. } = &mut st.last {
                        *target = true;
                    }
                }
                _ => {}
            }
        }
        st.after_dot = t.tok == Tok::Punct(b'.');
        st.after_references = t.tok.is_word("references");
        Ok(())
    }

    /// Follows qualified names (`a.b`): the exported database's name is
    /// taken out, the restored database's refused, another database's
    /// allowed only where it acts on nothing at load time.
    fn qualified<W: Write>(
        &mut self,
        st: &mut Statement,
        t: &Token,
        out: &mut Out<W>,
    ) -> Result<(), String> {
        let last = std::mem::replace(&mut st.last, Last::None);
        let referenced = st.after_references;
        let name_or_star = t.tok.name().is_some() || t.tok == Tok::Punct(b'*');
        match (last, &t.tok) {
            (
                Last::Name {
                    text,
                    start,
                    end,
                    second,
                    target,
                    referenced,
                },
                Tok::Punct(b'.'),
            ) => {
                st.last = Last::Dot {
                    text,
                    start,
                    end,
                    dot: (t.start, t.end),
                    second,
                    target,
                    referenced,
                };
            }
            (
                Last::Dot {
                    text,
                    start,
                    end,
                    dot,
                    second,
                    target,
                    referenced,
                },
                _,
            ) if name_or_star => {
                if !second {
                    self.qualifier(st, &text, (start, end), dot, t, target, referenced, out)?;
                }
                if target && st.names_object {
                    st.object = t.tok.name().cloned();
                }
                if let Some(n) = t.tok.name() {
                    st.last = Last::Name {
                        text: n.clone(),
                        start: t.start,
                        end: t.end,
                        second: true,
                        target: false,
                        referenced: false,
                    };
                }
            }
            (_, tok) => {
                if let Some(n) = tok.name() {
                    st.last = Last::Name {
                        text: n.clone(),
                        start: t.start,
                        end: t.end,
                        second: false,
                        target: false,
                        referenced,
                    };
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn qualifier<W: Write>(
        &mut self,
        st: &Statement,
        q: &Text,
        name: (u64, u64),
        dot: (u64, u64),
        next: &Token,
        target: bool,
        referenced: bool,
        out: &mut Out<W>,
    ) -> Result<(), String> {
        let column = matches!(st.class, Some(Class::Code(_)))
            && !target
            && self.objects.contains(&q.bytes)
            && next
                .tok
                .name()
                .is_some_and(|n| !self.objects.contains(&n.bytes));
        if column {
            return Ok(());
        }
        if self.source.is_some_and(|s| q.is(s)) {
            let blank = |a: u64, b: u64| {
                out.slice(a, b)
                    .is_some_and(|s| s.iter().all(|c| c.is_ascii_whitespace()))
            };
            if blank(name.1, dot.0)
                && blank(dot.1, next.start)
                && out.replace(name.0, next.start, b"")
            {
                return Ok(());
            }
            return Err(refusal(
                &format!(
                    "a name qualified with `{}` that drp cannot take out",
                    self.source.unwrap_or_default()
                ),
                st,
            ));
        }
        if let Some(dest) = self.dest
            && q.is(dest)
        {
            return Err(refusal(
                &format!("a statement naming database `{dest}` itself"),
                st,
            ));
        }
        let allowed = match st.class {
            Some(Class::Code(_)) => !target,
            Some(Class::Plain) => referenced,
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        Err(refusal("a statement acting on another database", st))
    }

    /// `INSERT INTO t [(columns)] VALUES (literals), …`.
    fn data(&self, st: &mut Statement, t: &Token) -> Result<(), String> {
        let after_dot = st.after_dot;
        let bad = || Err(refusal("rows that are not plain values", st));
        match st.insert {
            Insert::Table => {
                if t.tok.name().is_some() {
                    st.insert = Insert::Columns;
                    return Ok(());
                }
                bad()
            }
            Insert::Columns => match &t.tok {
                Tok::Word(w) if w.is_word("values") || w.is_word("value") => {
                    st.insert = Insert::Values;
                    Ok(())
                }
                Tok::Word(_) if after_dot => Ok(()),
                Tok::Ident(_) | Tok::DQuote(_) | Tok::Punct(b'(' | b')' | b',' | b'.') => Ok(()),
                _ => bad(),
            },
            Insert::Values => match &t.tok {
                Tok::SQuote(_) | Tok::DQuote(_) | Tok::Number => Ok(()),
                Tok::Punct(b'(' | b')' | b',' | b'-' | b'+' | b';') => Ok(()),
                Tok::Word(w)
                    if ["null", "true", "false", "default", "x", "b", "n"]
                        .iter()
                        .any(|x| w.is_word(x))
                        || w.bytes.first() == Some(&b'_') =>
                {
                    Ok(())
                }
                _ => bad(),
            },
        }
    }

    /// The end of a statement: a trigger, routine, event or view becomes
    /// one prepared statement; a SET changes what the session reads.
    fn end<W: Write>(
        &mut self,
        st: &mut Statement,
        (at, after): (u64, u64),
        out: &mut Out<W>,
        quoting: &mut Quoting,
    ) -> Result<(), String> {
        if st.empty {
            return Ok(());
        }
        match st.class {
            Some(Class::Lock) => {
                // With its delimiter: an empty statement is an error.
                out.replace(st.start, after, b"");
                Ok(())
            }
            None => Err(refusal("a statement a dump does not hold", st)),
            Some(Class::Code(_)) => {
                if st.want_target || st.want_on {
                    return Err(refusal("a definition drp cannot read", st));
                }
                let text = out
                    .slice(st.start, at)
                    .ok_or_else(|| refusal("a statement too large to check", st))?;
                let wrapped = format!(
                    "\nEXECUTE IMMEDIATE CONVERT(X'{}' USING utf8mb4)",
                    hex::encode(text)
                );
                if !out.replace(st.start, at, wrapped.as_bytes()) {
                    return Err(refusal("a statement too large to check", st));
                }
                Ok(())
            }
            Some(Class::Set) => self.apply_set(st, quoting),
            Some(Class::Data) if st.insert != Insert::Values => {
                Err(refusal("rows that are not plain values", st))
            }
            Some(_) => Ok(()),
        }
    }

    /// Follows what a SET does to how the rest is read: `sql_mode` (quotes
    /// and backslashes) and the client's character set.
    fn apply_set(&mut self, st: &Statement, quoting: &mut Quoting) -> Result<(), String> {
        let toks = &st.set[1..];
        let mut parts: Vec<&[Token]> = Vec::new();
        let (mut depth, mut from) = (0i32, 0usize);
        for (i, t) in toks.iter().enumerate() {
            match t.tok {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Punct(b',') if depth == 0 => {
                    parts.push(&toks[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&toks[from..]);
        for part in parts {
            self.assignment(st, part, quoting)?;
        }
        Ok(())
    }

    fn assignment(
        &mut self,
        st: &Statement,
        part: &[Token],
        quoting: &mut Quoting,
    ) -> Result<(), String> {
        // Parts of an executable comment only some servers run.
        let unsure = part.iter().any(|t| t.version.is_some_and(|v| v >= 50100));
        let mut p: Vec<&Tok> = part.iter().map(|t| &t.tok).collect();
        while p
            .first()
            .is_some_and(|t| t.is_word("session") || t.is_word("local"))
        {
            p.remove(0);
        }
        let Some(first) = p.first() else {
            return Ok(());
        };
        let charset_value = if first.is_word("names") || first.is_word("charset") {
            p.get(1).copied()
        } else if first.is_word("character") && p.get(1).is_some_and(|t| t.is_word("set")) {
            p.get(2).copied()
        } else {
            None
        };
        if first.is_word("names") || first.is_word("charset") || first.is_word("character") {
            return self.charset(st, charset_value);
        }
        let target = match first {
            Tok::Word(w) => Target::System(String::from_utf8_lossy(&w.bytes).to_ascii_lowercase()),
            Tok::Var(v) if v.bytes.starts_with(b"@@") => {
                let name = String::from_utf8_lossy(&v.bytes[2..]).into_owned();
                let name = name
                    .strip_prefix("session.")
                    .or_else(|| name.strip_prefix("local."))
                    .unwrap_or(&name)
                    .to_string();
                Target::System(name)
            }
            Tok::Var(v) => Target::User(String::from_utf8_lossy(&v.bytes[1..]).into_owned()),
            _ => return Err(refusal("a SET drp cannot read", st)),
        };
        let value: &[&Tok] = match p.get(1..) {
            Some([Tok::Punct(b'='), rest @ ..]) => rest,
            Some([Tok::Punct(b':'), Tok::Punct(b'='), rest @ ..]) => rest,
            _ => return Err(refusal("a SET drp cannot read", st)),
        };
        let system = |t: &Tok, name: &str| matches!(t, Tok::Var(v) if v.is(&format!("@@{name}")) || v.is(&format!("@@session.{name}")));
        match target {
            Target::System(name) if name == "sql_mode" => {
                *quoting = match value {
                    _ if unsure => Quoting::default(),
                    [Tok::SQuote(text)] => text.as_str().map(Quoting::of_mode).unwrap_or_default(),
                    [t] if system(t, "sql_mode") => *quoting,
                    [Tok::Var(v)] => match self
                        .vars
                        .get(&String::from_utf8_lossy(&v.bytes[1..]).into_owned())
                    {
                        Some(Held::Mode(q)) => *q,
                        Some(Held::Text(s)) => Quoting::of_mode(s),
                        _ => Quoting::default(),
                    },
                    _ => Quoting::default(),
                };
                Ok(())
            }
            Target::System(name) if name == "character_set_client" => match value {
                [t] if system(t, "character_set_client") => Ok(()),
                [Tok::Var(v)] => match self
                    .vars
                    .get(&String::from_utf8_lossy(&v.bytes[1..]).into_owned())
                {
                    Some(Held::SafeCharset) => Ok(()),
                    Some(Held::Text(s)) if safe_charset(s) => Ok(()),
                    _ => Err(refusal("a character set drp cannot follow", st)),
                },
                [t] => self.charset(st, Some(t)),
                _ => Err(refusal("a character set drp cannot follow", st)),
            },
            Target::System(_) => Ok(()),
            Target::User(name) => {
                let held = match value {
                    [t] if system(t, "sql_mode") => Some(Held::Mode(*quoting)),
                    [t] if system(t, "character_set_client") => Some(Held::SafeCharset),
                    [Tok::SQuote(text)] => text.as_str().map(|s| Held::Text(s.to_string())),
                    _ => None,
                };
                match held {
                    Some(h) if !unsure => self.vars.insert(name, h),
                    _ => self.vars.remove(&name),
                };
                Ok(())
            }
        }
    }

    fn charset(&self, st: &Statement, value: Option<&Tok>) -> Result<(), String> {
        let name = match value {
            Some(Tok::Word(t) | Tok::SQuote(t) | Tok::Ident(t) | Tok::DQuote(t)) => t.as_str(),
            _ => None,
        };
        match name {
            Some(n) if safe_charset(n) => Ok(()),
            _ => Err(refusal("a character set drp cannot follow", st)),
        }
    }
}

enum Target {
    System(String),
    User(String),
}

fn safe_charset(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n != "default" && !UNSAFE_CHARSETS.contains(&n.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dump: &str, source: Option<&str>, dest: &str) -> Result<String, String> {
        Filter::new(source, Some(dest))
            .run(dump.as_bytes(), Vec::new())
            .unwrap()
            .map(|w| String::from_utf8(w).unwrap())
    }

    /// Decodes the prepared statements back, to read what the server gets.
    fn shown(loaded: &str) -> String {
        let mut text = String::new();
        let mut rest = loaded;
        while let Some(at) = rest.find("EXECUTE IMMEDIATE CONVERT(X'") {
            text += &rest[..at];
            let hex_start = at + "EXECUTE IMMEDIATE CONVERT(X'".len();
            let hex_end = hex_start + rest[hex_start..].find('\'').unwrap();
            text += &String::from_utf8(hex::decode(&rest[hex_start..hex_end]).unwrap()).unwrap();
            rest = &rest[hex_end + " USING utf8mb4)".len() + 1..];
        }
        text + rest
    }

    /// The shapes mariadb-dump 10.11 writes, with qualified names as a user
    /// writes them in a trigger, routines and an event.
    const DUMP: &str = r#"/*M!999999\- enable the sandbox mode */ 
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: shop
-- ------------------------------------------------------
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
DROP SEQUENCE IF EXISTS `s`;
CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;
DO SETVAL(`s`, 1100, 0);
DROP TABLE IF EXISTS `orders`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `orders` (
  `id` int(11) NOT NULL DEFAULT nextval(`shop`.`s`),
  `名前` varchar(50) DEFAULT NULL,
  `j` longtext CHECK (json_valid(`j`)),
  PRIMARY KEY (`id`),
  CONSTRAINT `fk` FOREIGN KEY (`id`) REFERENCES `other`.`ref` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
/*!40101 SET character_set_client = @saved_cs_client */;
LOCK TABLES `orders` WRITE;
/*!40000 ALTER TABLE `orders` DISABLE KEYS */;
INSERT INTO `orders` VALUES
(1,'ünï shop.orders; drop database shop',NULL),(2,'{\"a\":\"x.y\"}',_binary 'x'),(3,0x62696E,-12.50);
/*!40000 ALTER TABLE `orders` ENABLE KEYS */;
UNLOCK TABLES;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION' */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 trigger shop.t after insert on shop.orders for each row insert into shop.audit(order_id, note) values (new.id, concat('shop.', new.`名前`)) 
*/;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`(in n varchar(50))
begin
  insert into `shop`.orders(`名前`) values (n);
  select count(*) from other.t, x.shop.c;
end ;;
DELIMITER ;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v2` AS select `shop`.`f`(1) AS `n`,`shop`.`id` AS `id` from `shop` */;
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
"#;

    #[test]
    fn the_exported_databases_qualifications_are_taken_out_and_code_is_one_statement_each() {
        let loaded = run(DUMP, Some("shop"), "shop").unwrap();
        let seen = shown(&loaded);
        assert!(
            seen.contains(
                "trigger t after insert on orders for each row insert into audit(order_id"
            ),
            "{seen}"
        );
        assert!(seen.contains("concat('shop.', new.`名前`)"), "{seen}");
        assert!(seen.contains("insert into orders(`名前`)"), "{seen}");
        assert!(seen.contains("from other.t, x.shop.c"), "{seen}");
        assert!(
            seen.contains("select `f`(1) AS `n`,`id` AS `id` from `shop`"),
            "{seen}"
        );
        assert!(seen.contains("DEFAULT nextval(`s`)"), "{seen}");
        assert!(seen.contains("REFERENCES `other`.`ref`"), "{seen}");
        // Data is left exactly as it was; the table locks are left out.
        assert!(loaded.contains("(1,'ünï shop.orders; drop database shop',NULL)"));
        assert!(
            !loaded.contains("LOCK TABLES")
                && loaded.contains("/*!40000 ALTER TABLE `orders` DISABLE KEYS */;")
        );
        assert_eq!(loaded.matches("EXECUTE IMMEDIATE").count(), 3);
        // Restored under another name, the same holds.
        assert!(
            shown(&run(DUMP, Some("shop"), "shop_copy").unwrap())
                .contains("trigger t after insert on orders")
        );
    }

    #[test]
    fn a_dump_naming_a_database_it_does_not_say_it_was_taken_from_is_refused() {
        let e = run(DUMP, None, "shop_copy").unwrap_err();
        assert!(e.contains("another database"), "{e}");
        let e = run(DUMP, Some("shop"), "shop").map(|_| ()).and(run(
            "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON `t` FOR EACH ROW INSERT INTO shop_copy.t VALUES (1);;\n",
            Some("shop"),
            "shop_copy",
        ));
        assert!(e.unwrap_err().contains("`shop_copy` itself"));
    }

    #[test]
    fn statements_acting_outside_the_restored_database_are_refused() {
        let head = "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n";
        for (bad, says) in [
            ("DROP DATABASE shop;", "does not hold"),
            ("drop table other.t;", "another database"),
            ("drop table shop_copy.t;", "`shop_copy` itself"),
            ("create user x;", "does not hold"),
            ("GRANT ALL ON *.* TO x;", "does not hold"),
            ("use other;", "does not hold"),
            ("SET GLOBAL event_scheduler = ON;", "beyond"),
            ("SET @@global.read_only = 1;", "whole server"),
            ("SET NAMES gbk;", "character set"),
            ("SET @x = (select 1);", "beyond"),
            (
                "INSERT INTO `t` VALUES (load_file('/etc/shadow'));",
                "plain values",
            ),
            ("INSERT INTO `t` SELECT * FROM mysql.user;", "plain values"),
            ("INSERT INTO `t` VALUES ((select 1));", "plain values"),
            ("INSERT INTO `t` VALUES (@@datadir);", "plain values"),
            (
                "CREATE TABLE `t` (a int) ENGINE=CONNECT TABLE_TYPE=DOS FILE_NAME='/etc/passwd';",
                "beyond",
            ),
            ("CREATE TABLE `t` AS SELECT 1;", "beyond"),
            (
                "DELIMITER ;;\nCREATE TRIGGER other.t BEFORE INSERT ON `t` FOR EACH ROW SET @a = 1;;",
                "another database",
            ),
            (
                "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON other.t FOR EACH ROW SET @a = 1;;",
                "another database",
            ),
            (
                "DELIMITER ;;\nSET @a = 1; DROP DATABASE x;;",
                "two statements",
            ),
            ("SET @a = 1; DROP DATABASE x;", "does not hold"),
            ("LOCK TABLES `t` WRITE\\u other\n;", "client command"),
            ("LOCK TABLES other.t WRITE;", "another database"),
            ("select 1;", "does not hold"),
        ] {
            let e = run(&format!("{head}{bad}\n"), Some("shop"), "shop_copy").unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn in_a_view_a_table_named_like_its_database_is_a_table() {
        let dump = "/*!40101 SET SQL_MODE='' */;\nCREATE TABLE `shop` (`id` int, `branch` text);\nCREATE TABLE `c` (`id` int);\n\
                    /*!50001 CREATE VIEW `v` AS select `shop`.`branch` AS `branch`, `shop`.`c`.`id` AS `id` \
                    from (`shop` join `shop`.`c` on(`c`.`id` = `shop`.`id`)) */;\n";
        let seen = shown(&run(dump, Some("shop"), "shop_copy").unwrap());
        assert!(
            seen.contains("select `shop`.`branch` AS `branch`, `c`.`id` AS `id` from (`shop` join `c` on(`c`.`id` = `shop`.`id`))"),
            "{seen}"
        );
        // Where it would act, a table's name is no database.
        let e = run(
            "CREATE TABLE `mysql` (`id` int);\nINSERT INTO mysql.user VALUES (1);\n",
            Some("shop"),
            "shop",
        );
        assert!(e.unwrap_err().contains("another database"));
    }

    #[test]
    fn code_with_a_statement_after_its_body_reaches_the_server_as_one_statement() {
        let dump = "DELIMITER ;;\nCREATE TRIGGER t BEFORE INSERT ON `t` FOR EACH ROW SET @a = 1; DROP DATABASE x;;\n";
        let loaded = run(dump, Some("shop"), "shop").unwrap();
        assert!(!loaded.contains("DROP"), "{loaded}");
        assert_eq!(loaded.matches("EXECUTE IMMEDIATE").count(), 1);
    }

    #[test]
    fn backslashes_in_quotes_need_a_known_sql_mode() {
        let row = "INSERT INTO `t` VALUES ('a\\'b');\n";
        assert!(run(row, Some("shop"), "shop").is_err());
        let known = format!("/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n{row}");
        assert!(run(&known, Some("shop"), "shop").is_ok());
        let ansi = format!(
            "/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\nSET sql_mode = 'NO_BACKSLASH_ESCAPES';\n{row}"
        );
        assert!(run(&ansi, Some("shop"), "shop").is_err());
        let saved = "/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n\
                     /*!50003 SET sql_mode = 'NO_BACKSLASH_ESCAPES' */ ;\n";
        assert!(run(&format!("{saved}{row}"), Some("shop"), "shop").is_err());
        let restored = format!("{saved}/*!50003 SET sql_mode = @saved_sql_mode */ ;\n{row}");
        assert!(run(&restored, Some("shop"), "shop").is_ok());
        // A mode saved before it was known stays unknown.
        let unknown = format!(
            "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n{row}"
        );
        assert!(run(&unknown, Some("shop"), "shop").is_err());
    }

    #[test]
    fn a_bare_dump_names_its_database_and_a_framed_point_its_accounts() {
        let mut bare = &b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n--\n-- Host: localhost    Database: shop_1\n-- ---\nSET x=1;"[..];
        let (head, first) = read_head(&mut bare).unwrap();
        assert_eq!(head.database.as_deref(), Some("shop_1"));
        assert!(head.accounts.is_none());
        let mut all = String::new();
        Cursor::new(first)
            .chain(bare)
            .read_to_string(&mut all)
            .unwrap();
        assert!(all.starts_with("/*M!999999") && all.ends_with("SET x=1;"));

        let accounts = "CREATE ROLE IF NOT EXISTS `r`;\n";
        let framed = format!(
            "{FRAMING_NAME}\ndatabase shop\naccounts {}\n{accounts}-- dump",
            accounts.len()
        );
        let mut input = framed.as_bytes();
        let (head, first) = read_head(&mut input).unwrap();
        assert_eq!(head.database.as_deref(), Some("shop"));
        assert_eq!(head.accounts.as_deref(), Some(accounts));
        let mut all = String::new();
        Cursor::new(first)
            .chain(input)
            .read_to_string(&mut all)
            .unwrap();
        assert_eq!(all, "-- dump");

        let mut damaged = &b"drp-my/1\ndatabase ../x\n"[..];
        assert!(read_head(&mut damaged).is_err());
    }
}
