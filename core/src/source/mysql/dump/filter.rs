//! The filter every dump statement passes before it loads (see `dump.rs`):
//! it reads the dump token by token and checks and rewrites each statement.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};

use super::super::sql::{Quoting, Scan, Scanner, Sink, Text, Tok, Token};
use super::out::Out;
use super::statement::{
    Class, Code, Held, Insert, Last, Statement, Target, classify, safe_charset,
};

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
