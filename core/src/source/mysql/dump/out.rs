//! The filter's output (`filter.rs`): buffered, so that a qualification can
//! be taken out of bytes already scanned, and a statement held whole until
//! its end.

use std::io::Write;

use super::super::sql::Sink;

/// Bytes kept back from the file for a qualification to be taken out.
const KEEP: u64 = 64 * 1024;

/// Written to the file once this much is buffered beyond what is kept.
const FLUSH_AT: usize = 1 << 20;

/// The largest statement held whole (a trigger, routine, event or view).
const HELD_MAX: usize = 64 << 20;

/// The filter's output: buffered, so that a qualification can be taken out
/// of bytes already scanned, and a statement held whole until its end.
pub(super) struct Out<W: Write> {
    w: W,
    buf: Vec<u8>,
    /// The count of the first byte in `buf`.
    base: u64,
    /// Nothing from here on is written yet.
    pub(super) hold: Option<u64>,
    pub(super) err: Option<std::io::Error>,
}

impl<W: Write> Out<W> {
    pub(super) fn new(w: W) -> Self {
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

    pub(super) fn slice(&self, from: u64, to: u64) -> Option<&[u8]> {
        let a = from.checked_sub(self.base)? as usize;
        let b = to.checked_sub(self.base)? as usize;
        self.buf.get(a..b)
    }

    /// Replaces the bytes `from..to` (still buffered) with `with`.
    pub(super) fn replace(&mut self, from: u64, to: u64, with: &[u8]) -> bool {
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

    pub(super) fn held_too_long(&self) -> bool {
        self.buf.len() > HELD_MAX
    }

    pub(super) fn finish(mut self) -> std::io::Result<W> {
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
