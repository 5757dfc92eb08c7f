//! SQL text split into tokens the way the MariaDB client splits it before
//! sending statements: quotes, comments, executable comments (`/*!50003 …*/`,
//! code to the server), the statement delimiter and the `DELIMITER` command,
//! and the client's own backslash commands.
//!
//! Where the client's reading depends on what it cannot see here (the
//! session's `sql_mode`), or where a construct is read differently by the
//! client and the server (a comment inside an executable comment), the
//! scanner refuses instead of guessing: [`Scanner::next`] then returns
//! [`Scan::Refused`].
//!
//! One file, over 600 lines with its tests: the scanner is one state machine
//! (quotes, comments, executable comments, delimiters), read as a whole.

use std::io::Read;

/// Longest identifier or word kept whole (MariaDB's own limit is 64
/// characters, at most 256 bytes).
const NAME_CAP: usize = 1024;

/// Longest string literal whose text is kept (longer ones are cut, marked).
const TEXT_CAP: usize = 4096;

/// An executable comment from this version on is never run by any server
/// (`/*M!999999\- enable the sandbox mode */` is a client marker).
const NEVER_RUN: u32 = 999_999;

/// Where the bytes a scanner consumes go.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
    /// How many bytes were put so far.
    fn pos(&self) -> u64;
}

/// A sink keeping nothing.
pub(super) struct Discard(pub u64);

impl Sink for Discard {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len() as u64;
    }

    fn pos(&self) -> u64 {
        self.0
    }
}

/// Text read from a token, cut at a cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Text {
    pub bytes: Vec<u8>,
    pub cut: bool,
}

impl Text {
    fn push(&mut self, b: u8, cap: usize) {
        if self.bytes.len() < cap {
            self.bytes.push(b);
        } else {
            self.cut = true;
        }
    }

    /// The text when it was kept whole and is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        if self.cut {
            return None;
        }
        std::str::from_utf8(&self.bytes).ok()
    }

    pub fn is(&self, s: &str) -> bool {
        !self.cut && self.bytes == s.as_bytes()
    }

    pub fn is_word(&self, s: &str) -> bool {
        !self.cut && self.bytes.eq_ignore_ascii_case(s.as_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A bare word: keyword or unquoted name.
    Word(Text),
    /// `` `quoted` ``: a name, `` `` `` read as one backtick.
    Ident(Text),
    /// `"quoted"`: a string, or a name under `ANSI_QUOTES`.
    DQuote(Text),
    /// `'quoted'`: a string.
    SQuote(Text),
    Number,
    /// `@name`, `@@name`, `@@session.name` (lowercase).
    Var(Text),
    Punct(u8),
    /// The statement delimiter.
    End,
    /// `DELIMITER x` where a statement starts: the new delimiter.
    Delimiter(Vec<u8>),
    Eof,
}

impl Tok {
    /// A token that can be a name, and its text.
    pub fn name(&self) -> Option<&Text> {
        match self {
            Tok::Word(t) | Tok::Ident(t) | Tok::DQuote(t) => Some(t),
            _ => None,
        }
    }

    pub fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(t) if t.is_word(w))
    }
}

/// One token and where it stands.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    /// Its first byte, in the sink's count.
    pub start: u64,
    pub end: u64,
    /// Inside an executable comment: its version (`/*!50003` → 50003).
    pub version: Option<u32>,
    /// Inside an executable comment no server runs: text for the client only.
    pub inert: bool,
}

pub(super) enum Scan {
    Token(Token),
    /// The text cannot be read safely; why.
    Refused(String),
}

/// What the session's `sql_mode` makes of backslashes in quotes; `None`
/// while the mode is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Quoting {
    pub ansi_quotes: Option<bool>,
    pub no_backslash_escapes: Option<bool>,
}

impl Quoting {
    /// Modes as `sql_mode` lists them (combination modes included).
    pub fn of_mode(mode: &str) -> Quoting {
        let mut q = Quoting {
            ansi_quotes: Some(false),
            no_backslash_escapes: Some(false),
        };
        for m in mode.split(',').map(|m| m.trim().to_ascii_uppercase()) {
            match m.as_str() {
                "ANSI_QUOTES" | "ANSI" | "DB2" | "MAXDB" | "MSSQL" | "ORACLE" | "POSTGRESQL" => {
                    q.ansi_quotes = Some(true)
                }
                "NO_BACKSLASH_ESCAPES" => q.no_backslash_escapes = Some(true),
                _ => {}
            }
        }
        q
    }

    /// Whether a backslash inside `quote` is read as an escape by the client
    /// and the server alike.
    fn escapes(&self, quote: u8) -> bool {
        self.no_backslash_escapes == Some(false)
            && (quote == b'\'' || self.ansi_quotes == Some(false))
    }
}

pub(super) struct Scanner<R> {
    src: R,
    buf: Vec<u8>,
    at: usize,
    len: usize,
    eof: bool,
    delimiter: Vec<u8>,
    /// Inside an executable comment, its version.
    version: Option<u32>,
    /// Nothing but blanks and comments since the statement started.
    fresh: bool,
    pub quoting: Quoting,
    /// Keep the text of single-quoted strings (values are not needed to
    /// check rows of data).
    pub keep_strings: bool,
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

type Step<T> = Result<T, ScanStop>;

/// Why scanning stopped.
pub(super) enum ScanStop {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for ScanStop {
    fn from(e: std::io::Error) -> Self {
        ScanStop::Io(e)
    }
}

fn refuse<T>(why: impl Into<String>) -> Step<T> {
    Err(ScanStop::Refused(why.into()))
}

impl<R: Read> Scanner<R> {
    pub fn new(src: R) -> Self {
        Scanner {
            src,
            buf: vec![0; 256 * 1024],
            at: 0,
            len: 0,
            eof: false,
            delimiter: b";".to_vec(),
            version: None,
            fresh: true,
            quoting: Quoting::default(),
            keep_strings: true,
        }
    }

    /// Whether the text read so far ends inside an executable comment.
    pub fn in_executable_comment(&self) -> bool {
        self.version.is_some()
    }

    /// The byte `i` ahead, reading more when needed.
    fn peek(&mut self, i: usize) -> Step<Option<u8>> {
        while self.at + i >= self.len {
            if self.eof {
                return Ok(None);
            }
            if self.at > 0 {
                self.buf.copy_within(self.at..self.len, 0);
                self.len -= self.at;
                self.at = 0;
            }
            if self.len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(self.buf[self.at + i]))
    }

    fn starts_with(&mut self, s: &[u8], fold: bool) -> Step<bool> {
        for (i, want) in s.iter().enumerate() {
            match self.peek(i)? {
                Some(b) if b == *want || fold && b.eq_ignore_ascii_case(want) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Moves `n` bytes to `out`.
    fn take(&mut self, n: usize, out: &mut dyn Sink) -> Step<()> {
        let mut left = n;
        while left > 0 {
            if self.peek(0)?.is_none() {
                return Ok(());
            }
            let k = left.min(self.len - self.at);
            out.put(&self.buf[self.at..self.at + k]);
            self.at += k;
            left -= k;
        }
        Ok(())
    }

    /// The next token, after the blanks and comments before it (which go to
    /// `out` as they are).
    pub fn next(&mut self, out: &mut dyn Sink) -> Result<Scan, std::io::Error> {
        match self.next_token(out) {
            Ok(t) => Ok(Scan::Token(t)),
            Err(ScanStop::Refused(why)) => Ok(Scan::Refused(why)),
            Err(ScanStop::Io(e)) => Err(e),
        }
    }

    fn next_token(&mut self, out: &mut dyn Sink) -> Step<Token> {
        self.skip_trivia(out)?;
        let start = out.pos();
        let version = self.version;
        let inert = version.is_some_and(|v| v >= NEVER_RUN);
        let tok = self.token(out)?;
        match &tok {
            Tok::End | Tok::Delimiter(_) => self.fresh = true,
            Tok::Eof => {}
            _ => self.fresh = false,
        }
        Ok(Token {
            tok,
            start,
            end: out.pos(),
            version,
            inert,
        })
    }

    /// Blanks, comments and the markers of executable comments.
    fn skip_trivia(&mut self, out: &mut dyn Sink) -> Step<()> {
        loop {
            let Some(b) = self.peek(0)? else {
                return Ok(());
            };
            if self.at_delimiter()? {
                return Ok(());
            }
            if blank(b) {
                self.take(1, out)?;
                continue;
            }
            let next = self.peek(1)?;
            let mut dashes = false;
            if b == b'-' && next == Some(b'-') {
                let third = self.peek(2)?;
                dashes = self.fresh || third.is_none_or(blank);
                if !dashes && third.is_some_and(|c| c < 0x20 || c == 0x7f) {
                    // A comment to the server, not to the client.
                    return refuse("`--` followed by a control character");
                }
            }
            if b == b'#' || dashes {
                self.line_comment(out)?;
                continue;
            }
            if b == b'/' && next == Some(b'*') {
                let bang = self.peek(2)? == Some(b'!')
                    || self.peek(2)? == Some(b'M') && self.peek(3)? == Some(b'!');
                if self.version.is_some() {
                    return refuse("a comment inside an executable comment (`/*!… /* …`)");
                }
                if bang {
                    self.fresh = false;
                    let skip = if self.peek(2)? == Some(b'M') { 4 } else { 3 };
                    self.take(skip, out)?;
                    let mut v = 0u32;
                    let mut digits = 0;
                    while digits < 6 {
                        match self.peek(0)? {
                            Some(d) if d.is_ascii_digit() => {
                                v = v * 10 + u32::from(d - b'0');
                                digits += 1;
                                self.take(1, out)?;
                            }
                            _ => break,
                        }
                    }
                    self.version = Some(if digits == 0 { 0 } else { v });
                } else {
                    self.block_comment(out)?;
                }
                continue;
            }
            if self.version.is_some() && b == b'*' && next == Some(b'/') {
                self.take(2, out)?;
                self.version = None;
                continue;
            }
            return Ok(());
        }
    }

    fn at_delimiter(&mut self) -> Step<bool> {
        if self.peek(0)? != Some(self.delimiter[0]) {
            return Ok(false);
        }
        let d = std::mem::take(&mut self.delimiter);
        let at = self.starts_with(&d, false);
        self.delimiter = d;
        at
    }

    fn line_comment(&mut self, out: &mut dyn Sink) -> Step<()> {
        while let Some(b) = self.peek(0)? {
            self.take(1, out)?;
            if b == b'\n' {
                break;
            }
        }
        Ok(())
    }

    fn block_comment(&mut self, out: &mut dyn Sink) -> Step<()> {
        self.take(2, out)?;
        loop {
            match self.peek(0)? {
                None => return Ok(()),
                Some(b'*') if self.peek(1)? == Some(b'/') => {
                    self.take(2, out)?;
                    return Ok(());
                }
                Some(b'/')
                    if self.peek(1)? == Some(b'*')
                        && (self.peek(2)? == Some(b'!')
                            || self.peek(2)? == Some(b'M') && self.peek(3)? == Some(b'!')) =>
                {
                    return refuse("an executable comment inside a comment (`/* … /*!`)");
                }
                Some(_) => self.take(1, out)?,
            }
        }
    }

    fn token(&mut self, out: &mut dyn Sink) -> Step<Tok> {
        let Some(b) = self.peek(0)? else {
            return Ok(Tok::Eof);
        };
        if self.at_delimiter()? {
            let n = self.delimiter.len();
            self.take(n, out)?;
            return Ok(Tok::End);
        }
        if self.fresh && self.starts_with(b"delimiter ", true)? {
            return self.delimiter_command(out);
        }
        self.no_delimiter_command()?;
        match b {
            b'\'' | b'"' | b'`' => self.quoted(b, out),
            b'\\' => {
                let c = self.peek(1)?;
                if c == Some(b'-') {
                    // The client's sandbox marker: sandbox mode, already on.
                    self.take(2, out)?;
                    return self.token_after_marker(out);
                }
                refuse(format!(
                    "a client command (`\\{}`) outside any quote",
                    c.map(char::from).unwrap_or(' ')
                ))
            }
            b'@' => self.variable(out),
            b'0'..=b'9' => self.number(out),
            _ if word_byte(b) => self.word(Text::default(), out),
            _ => {
                self.take(1, out)?;
                Ok(Tok::Punct(b))
            }
        }
    }

    /// The client reads `delimiter ` as its command wherever it stands
    /// outside quotes and comments.
    fn no_delimiter_command(&mut self) -> Step<()> {
        if matches!(self.peek(0)?, Some(b'd' | b'D')) && self.starts_with(b"delimiter ", true)? {
            return refuse(
                "`delimiter` inside a statement (the client would end the statement there)",
            );
        }
        Ok(())
    }

    /// After `\-`: the rest, as if the marker were not there.
    fn token_after_marker(&mut self, out: &mut dyn Sink) -> Step<Tok> {
        self.skip_trivia(out)?;
        self.token(out)
    }

    /// `DELIMITER x`: the rest of the line names the new delimiter.
    fn delimiter_command(&mut self, out: &mut dyn Sink) -> Step<Tok> {
        let mut line = Vec::new();
        while let Some(b) = self.peek(0)? {
            if b == b'\n' {
                break;
            }
            line.push(b);
            self.take(1, out)?;
        }
        let rest = &line[b"delimiter ".len()..];
        let new: Vec<u8> = rest
            .iter()
            .copied()
            .skip_while(|b| blank(*b))
            .take_while(|b| !blank(*b))
            .collect();
        if new.is_empty()
            || new.len() > 16
            || !new.iter().all(|b| matches!(b, b';' | b'$' | b'/' | b'|'))
        {
            return refuse("a `DELIMITER` command drp does not read");
        }
        self.delimiter = new.clone();
        Ok(Tok::Delimiter(new))
    }

    fn quoted(&mut self, quote: u8, out: &mut dyn Sink) -> Step<Tok> {
        self.take(1, out)?;
        let cap = match quote {
            b'`' => NAME_CAP,
            b'\'' if !self.keep_strings => 0,
            _ => TEXT_CAP,
        };
        let mut text = Text::default();
        let escapes = quote != b'`';
        let versioned = self.version.is_some();
        loop {
            // Runs of plain bytes at once.
            if self.peek(0)?.is_none() {
                return refuse("a quote that is never closed");
            }
            let run = &self.buf[self.at..self.len];
            let n = run
                .iter()
                .position(|&b| b == quote || escapes && b == b'\\' || versioned && b == b'*')
                .unwrap_or(run.len());
            let keep = n.min(cap.saturating_sub(text.bytes.len()));
            text.bytes.extend_from_slice(&run[..keep]);
            text.cut |= keep < n;
            self.take(n, out)?;
            match self.peek(0)? {
                None => return refuse("a quote that is never closed"),
                Some(b'\\') if escapes => {
                    if !self.quoting.escapes(quote) {
                        return refuse(
                            "a backslash inside quotes while the session's sql_mode is unknown or reads it differently (ANSI_QUOTES, NO_BACKSLASH_ESCAPES)",
                        );
                    }
                    let Some(c) = self.peek(1)? else {
                        return refuse("a quote that is never closed");
                    };
                    text.push(unescape(c), cap);
                    self.take(2, out)?;
                }
                Some(q) if q == quote => {
                    if self.peek(1)? == Some(quote) {
                        text.push(quote, cap);
                        self.take(2, out)?;
                    } else {
                        self.take(1, out)?;
                        break;
                    }
                }
                Some(b'*') if versioned => {
                    if self.peek(1)? == Some(b'/') {
                        // A server skipping the executable comment ends it here.
                        return refuse("a quote inside an executable comment holding `*/`");
                    }
                    text.push(b'*', cap);
                    self.take(1, out)?;
                }
                Some(_) => {}
            }
        }
        if quote == b'`' && text.cut {
            return refuse("a name longer than MariaDB allows");
        }
        Ok(match quote {
            b'`' => Tok::Ident(text),
            b'"' => Tok::DQuote(text),
            _ => Tok::SQuote(text),
        })
    }

    fn variable(&mut self, out: &mut dyn Sink) -> Step<Tok> {
        let system = self.peek(1)? == Some(b'@');
        let first = if system { self.peek(2)? } else { self.peek(1)? };
        if !first.is_some_and(|c| word_byte(c) || c.is_ascii_digit()) {
            // `'user'@'host'`: the at sign alone.
            self.take(1, out)?;
            return Ok(Tok::Punct(b'@'));
        }
        let mut text = Text::default();
        let skip = if system { 2 } else { 1 };
        for _ in 0..skip {
            text.push(b'@', NAME_CAP);
        }
        self.take(skip, out)?;
        loop {
            if self.at_delimiter()? {
                break;
            }
            self.no_delimiter_command()?;
            match self.peek(0)? {
                Some(b) if word_byte(b) || b == b'.' => {
                    text.push(b.to_ascii_lowercase(), NAME_CAP);
                    self.take(1, out)?;
                }
                _ => break,
            }
        }
        if text.cut {
            return refuse("a variable name longer than MariaDB allows");
        }
        Ok(Tok::Var(text))
    }

    fn number(&mut self, out: &mut dyn Sink) -> Step<Tok> {
        let mut text = Text::default();
        let hex = self.peek(0)? == Some(b'0') && matches!(self.peek(1)?, Some(b'x' | b'b'));
        if hex {
            text.push(b'0', NAME_CAP);
            self.take(2, out)?;
            loop {
                if self.at_delimiter()? {
                    return Ok(Tok::Number);
                }
                self.no_delimiter_command()?;
                match self.peek(0)? {
                    Some(b) if b.is_ascii_hexdigit() => self.take(1, out)?,
                    Some(b) if word_byte(b) => return self.word(text, out),
                    _ => return Ok(Tok::Number),
                }
            }
        }
        let mut seen_dot = false;
        let mut seen_exp = false;
        loop {
            if self.at_delimiter()? {
                return Ok(Tok::Number);
            }
            self.no_delimiter_command()?;
            let Some(b) = self.peek(0)? else {
                return Ok(Tok::Number);
            };
            if b.is_ascii_digit() {
                text.push(b, NAME_CAP);
                self.take(1, out)?;
            } else if b == b'.' && !seen_dot && !seen_exp {
                if !self.peek(1)?.is_some_and(|c| c.is_ascii_digit()) {
                    // `1.` ends the number; the dot stands alone.
                    return Ok(Tok::Number);
                }
                seen_dot = true;
                text.push(b, NAME_CAP);
                self.take(1, out)?;
            } else if (b == b'e' || b == b'E') && !seen_exp && {
                let sign = matches!(self.peek(1)?, Some(b'+' | b'-'));
                let d = self.peek(if sign { 2 } else { 1 })?;
                d.is_some_and(|c| c.is_ascii_digit())
            } {
                seen_exp = true;
                let sign = matches!(self.peek(1)?, Some(b'+' | b'-'));
                self.take(if sign { 2 } else { 1 }, out)?;
            } else if word_byte(b) && !seen_dot && !seen_exp {
                // `1abc` is a name.
                return self.word(text, out);
            } else {
                return Ok(Tok::Number);
            }
        }
    }

    fn word(&mut self, mut text: Text, out: &mut dyn Sink) -> Step<Tok> {
        loop {
            if self.at_delimiter()? {
                break;
            }
            self.no_delimiter_command()?;
            match self.peek(0)? {
                Some(b) if word_byte(b) => {
                    text.push(b, NAME_CAP);
                    self.take(1, out)?;
                }
                _ => break,
            }
        }
        if text.cut {
            return refuse("a word longer than MariaDB allows");
        }
        Ok(Tok::Word(text))
    }
}

/// The byte a backslash sequence inside quotes stands for.
fn unescape(c: u8) -> u8 {
    match c {
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'0' => 0,
        b'b' => 8,
        b'Z' => 26,
        other => other,
    }
}

/// Every token of `text` (small texts: account statements), or why it
/// cannot be read.
pub(super) fn tokens(text: &str, quoting: Quoting) -> Result<Vec<Token>, String> {
    let mut scanner = Scanner::new(text.as_bytes());
    scanner.quoting = quoting;
    let mut sink = Discard(0);
    let mut all = Vec::new();
    loop {
        match scanner.next(&mut sink).map_err(|e| e.to_string())? {
            Scan::Refused(why) => return Err(why),
            Scan::Token(t) => {
                if t.tok == Tok::Eof {
                    return Ok(all);
                }
                all.push(t);
            }
        }
    }
}

/// `name` quoted as a MariaDB name.
pub(super) fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `text` quoted as a MariaDB string (read the same in any `sql_mode`
/// drp's own statements run in: no backslash in it is needed).
pub(super) fn quote_text(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        let q = Quoting::of_mode("");
        tokens(s, q).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn word(s: &str) -> Tok {
        Tok::Word(Text {
            bytes: s.as_bytes().to_vec(),
            cut: false,
        })
    }

    #[test]
    fn quotes_comments_and_numbers_split_as_the_client_splits_them() {
        assert_eq!(
            toks("select 'a;b', `x``y`, 1.5e-7, 0x1F -- c;\n# d;\n/* e; */ ;"),
            vec![
                word("select"),
                Tok::SQuote(Text {
                    bytes: b"a;b".to_vec(),
                    cut: false
                }),
                Tok::Punct(b','),
                Tok::Ident(Text {
                    bytes: b"x`y".to_vec(),
                    cut: false
                }),
                Tok::Punct(b','),
                Tok::Number,
                Tok::Punct(b','),
                Tok::Number,
                Tok::End,
            ]
        );
    }

    #[test]
    fn a_delimiter_command_changes_where_statements_end() {
        let t = toks(
            "DELIMITER ;;\ncreate trigger t before insert on x for each row set new.a = 1; ;;\nDELIMITER ;\nselect 1;",
        );
        assert_eq!(t[0], Tok::Delimiter(b";;".to_vec()));
        let ends: Vec<usize> = t
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == Tok::End)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ends.len(), 2);
        assert!(t.contains(&Tok::Punct(b';')));
    }

    #[test]
    fn executable_comments_are_code_and_the_sandbox_marker_is_inert() {
        let all = tokens(
            "/*M!999999\\- enable the sandbox mode */ \n/*!40101 SET NAMES utf8mb4 */;",
            Quoting::default(),
        )
        .unwrap();
        assert!(all[0].inert && all[0].tok == word("enable"));
        let set = all.iter().find(|t| t.tok.is_word("set")).unwrap();
        assert_eq!((set.version, set.inert), (Some(40101), false));
    }

    #[test]
    fn what_the_client_and_the_server_could_read_differently_is_refused() {
        let q = Quoting::of_mode("");
        for bad in [
            "select 1 \\u other",
            "select 1 delimiter ;;",
            "select xdelimiter x",
            "/*!50003 select /* x */ 1 */",
            "/* x /*! y */ 1 */",
            "select 'never closed",
            "delimiter \\x",
        ] {
            assert!(tokens(bad, q).is_err(), "{bad}");
        }
        // A backslash inside quotes needs a known sql_mode without ANSI_QUOTES
        // (for double quotes) or NO_BACKSLASH_ESCAPES.
        assert!(tokens("select 'a\\'b'", Quoting::default()).is_err());
        assert!(tokens("select 'a\\'b'", q).is_ok());
        assert!(tokens("select \"a\\\"b\"", Quoting::of_mode("ANSI")).is_err());
        assert!(tokens("select 'a\\'b'", Quoting::of_mode("NO_BACKSLASH_ESCAPES")).is_err());
        // `--` right where a statement starts is a comment to the client.
        assert_eq!(
            toks("--x 'y\nselect 1;"),
            vec![word("select"), Tok::Number, Tok::End]
        );
    }
}
