//! The data path. Backup: source → SHA-256 (raw) → zstd → SHA-256 (stored) →
//! every target at once. Restore and verify: target → SHA-256 (stored) →
//! zstd → SHA-256 (raw) → consumer, with both digests checked against the
//! manifest before the consumer's work is kept.
//!
//! Threads: a backup reads, hashes and feeds zstd on one thread (named
//! `drp-compress`; zstd's workers take its name), and the targets write from
//! async tasks. A restore decompresses on one thread, computes each digest on
//! a thread of its own and hands the raw stream to the consumer on another.
//!
//! Memory is bounded by a few chunks per target plus zstd's window, whatever
//! the size of the stream: nothing is buffered whole.
//!
//! This file is the backup's direction; [`read`] is the restore's and
//! verify's.

mod read;

pub(crate) use read::unsealing;
pub use read::{check_stored, read_verified};

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::Target;
use crate::chunk::Sum;
use crate::config::Compression;
use crate::keys::Recipient;
use crate::manifest::Digest;
use crate::progress::{Event, Reporter};
use crate::source::{ExportInfo, ExportStream, SourceError};
use crate::{Error, Result};

/// Size of the pieces handed from the compressor to the targets.
const CHUNK: usize = 512 << 10;

/// Size of each read from the source.
const READ: usize = 256 << 10;
/// zstd's job size in multi-threaded mode: small enough to keep memory
/// bounded (two workers hold a job in and a job out each), large enough that
/// compression ratio and speed do not suffer.
const JOB: u32 = 4 << 20;
/// Chunks queued per target before the compressor waits for it.
const QUEUE: usize = 4;
enum Msg {
    Data(Bytes),
    /// The source succeeded: complete the object.
    Commit,
}

/// Why the compressor stopped when no target is left to write to.
#[derive(Debug, thiserror::Error)]
#[error("every target failed")]
struct AllTargetsFailed;

fn all_failed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<AllTargetsFailed>())
}

/// Splits one stored stream into chunks and hands each to every live
/// target of its lane.
struct Sink {
    senders: Vec<Option<mpsc::Sender<Msg>>>,
    /// Stored bytes not yet handed out. Chunks are split off this one
    /// buffer, whose memory is reused once every target has written them:
    /// no fresh allocation (and page faults) per chunk.
    pending: bytes::BytesMut,
    stored: Sum,
}

impl Sink {
    fn send(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        for slot in &mut self.senders {
            if let Some(tx) = slot
                && tx.blocking_send(Msg::Data(chunk.clone())).is_err()
            {
                *slot = None; // that target failed; the others go on
            }
        }
        if self.senders.iter().all(Option::is_none) {
            return Err(io::Error::other(AllTargetsFailed));
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stored.update(buf);
        if self.pending.capacity() - self.pending.len() < buf.len() {
            // Reclaims the space of chunks the targets have finished with.
            self.pending.reserve(CHUNK * 2);
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The targets that store the same bytes: those without encryption, or
/// those encrypting to the same recipients (one encryption for all of them).
enum Lane {
    Plain(Sink),
    Sealed(age::stream::StreamWriter<Sink>),
}

impl Lane {
    fn open(recipients: &[Recipient], sink: Sink) -> io::Result<Lane> {
        if recipients.is_empty() {
            return Ok(Lane::Plain(sink));
        }
        let encryptor = age::Encryptor::with_recipients(
            recipients.iter().map(|r| &r.key as &dyn age::Recipient),
        )
        .map_err(io::Error::other)?;
        Ok(Lane::Sealed(encryptor.wrap_output(sink)?))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Lane::Plain(s) => s.write_all(buf),
            Lane::Sealed(w) => w.write_all(buf),
        }
    }

    /// Completes the stored stream (the final authenticated chunk) and
    /// hands out what is pending.
    fn finish(self) -> io::Result<Sink> {
        let mut sink = match self {
            Lane::Plain(s) => s,
            Lane::Sealed(w) => w.finish()?,
        };
        sink.send()?;
        Ok(sink)
    }
}

/// The compressed stream, written to every live lane.
struct FanOut {
    lanes: Vec<Option<Lane>>,
}

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for slot in &mut self.lanes {
            if let Some(lane) = slot {
                match lane.write_all(buf) {
                    Ok(()) => {}
                    Err(e) if all_failed(&e) => *slot = None,
                    Err(e) => return Err(e),
                }
            }
        }
        if self.lanes.iter().all(Option::is_none) {
            return Err(io::Error::other(AllTargetsFailed));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A lane once its stream is complete: its targets' senders and the digest
/// of what they store.
type LaneEnd = (Vec<Option<mpsc::Sender<Msg>>>, Digest);

impl FanOut {
    /// Finishes every live lane (`None`: every target of the lane failed).
    fn finish(self) -> io::Result<Vec<Option<LaneEnd>>> {
        let mut out = Vec::new();
        for lane in self.lanes {
            out.push(match lane.map(Lane::finish) {
                None => None,
                Some(Ok(sink)) => Some((sink.senders, sink.stored.digest())),
                Some(Err(e)) if all_failed(&e) => None,
                Some(Err(e)) => return Err(e),
            });
        }
        if out.iter().all(Option::is_none) {
            return Err(io::Error::other(AllTargetsFailed));
        }
        Ok(out)
    }
}

/// The result of streaming one export to its targets.
pub struct Outcome {
    pub source: std::result::Result<ExportInfo, Error>,
    pub raw: Digest,
    /// Per target, in the order given: whether its data object is complete,
    /// and what it stores (targets encrypting to other recipients store
    /// other bytes).
    pub targets: Vec<Result<Digest>>,
}

/// Streams `stream` to one object on each target. Objects are completed only
/// if the source succeeds; otherwise they are aborted. Targets encrypting to
/// the same recipients share one encryption of the stream.
pub async fn export(
    stream: Box<dyn ExportStream>,
    compression: Compression,
    targets: Vec<(Target, String)>,
    progress: Reporter,
) -> Outcome {
    // Lanes: the targets storing the same bytes, by recipients; per
    // target, its lane and its place among the lane's senders.
    let mut recipients: Vec<Vec<Recipient>> = Vec::new();
    let mut senders: Vec<Vec<Option<mpsc::Sender<Msg>>>> = Vec::new();
    let mut lane_of = Vec::new();
    let mut tasks = Vec::new();
    for (target, path) in targets {
        let lane = match recipients
            .iter()
            .position(|r| same_recipients(r, &target.recipients))
        {
            Some(l) => l,
            None => {
                recipients.push(target.recipients.to_vec());
                senders.push(Vec::new());
                recipients.len() - 1
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        senders[lane].push(Some(tx));
        lane_of.push((lane, senders[lane].len() - 1));
        tasks.push(tokio::spawn(drain(target, path, rx)));
    }
    // A named thread (zstd's workers inherit the name): profiles then show
    // where the compressor's time goes.
    let (done, compressor) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("drp-compress".into())
        .spawn(move || {
            let _ = done.send(compress(stream, compression, recipients, senders, progress));
        });
    let outcome = match spawned {
        Ok(_) => compressor.await.map_err(|_| "it panicked".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (source, raw, lanes) = match outcome {
        Ok(r) => r,
        Err(e) => (
            Err(Error::Failed(format!("the compressor stopped: {e}"))),
            Digest::default(),
            Vec::new(),
        ),
    };
    // Commit only when the source finished cleanly; dropping a sender aborts.
    let mut stored = Vec::new();
    let mut commits = Vec::new();
    for (lane, slot) in &lane_of {
        let (digest, tx) = match lanes.get(*lane) {
            Some(Some((senders, digest))) => (Some(digest.clone()), senders[*slot].clone()),
            _ => (None, None),
        };
        stored.push(digest);
        commits.push(tx);
    }
    drop(lanes);
    if source.is_ok() {
        for tx in commits.into_iter().flatten() {
            let _ = tx.send(Msg::Commit).await;
        }
    } else {
        drop(commits);
    }
    let mut results = Vec::new();
    for (t, digest) in tasks.into_iter().zip(stored) {
        results.push(match t.await {
            Ok(Ok(())) => {
                digest.ok_or_else(|| Error::Failed("the target's stream was not completed".into()))
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Failed(format!("target writer stopped: {e}"))),
        });
    }
    Outcome {
        source,
        raw,
        targets: results,
    }
}

fn same_recipients(a: &[Recipient], b: &[Recipient]) -> bool {
    let fingerprints = |r: &[Recipient]| {
        let mut f: Vec<String> = r.iter().map(Recipient::fingerprint).collect();
        f.sort();
        f
    };
    fingerprints(a) == fingerprints(b)
}

/// What the compressor thread hands back: the source's result, the raw
/// digest and, per lane, its senders and stored digest (`None` when every
/// target of the lane failed).
type Compressed = (
    std::result::Result<ExportInfo, Error>,
    Digest,
    Vec<Option<LaneEnd>>,
);

fn compress(
    mut stream: Box<dyn ExportStream>,
    compression: Compression,
    recipients: Vec<Vec<Recipient>>,
    senders: Vec<Vec<Option<mpsc::Sender<Msg>>>>,
    progress: Reporter,
) -> Compressed {
    let mut raw = Sum::default();
    let result = (|| -> io::Result<_> {
        let mut lanes = Vec::new();
        for (r, senders) in recipients.iter().zip(senders) {
            let sink = Sink {
                senders,
                pending: bytes::BytesMut::with_capacity(CHUNK * 2),
                stored: Sum::default(),
            };
            lanes.push(Some(Lane::open(r, sink)?));
        }
        let fan = FanOut { lanes };
        let mut enc = zstd::stream::write::Encoder::new(fan, compression.level)?;
        let threads = match compression.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            n => n,
        };
        if threads > 1 {
            enc.multithread(threads)?;
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB))?;
        }
        enc.include_checksum(true)?;
        let mut buf = vec![0u8; READ];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            raw.update(&buf[..n]);
            enc.write_all(&buf[..n])?;
            progress.event(Event::Advanced { bytes: n as u64 });
        }
        enc.finish()?.finish()
    })();
    let raw = raw.digest();
    match result {
        Ok(lanes) => {
            let source = stream.finish().map_err(Error::from);
            (source, raw, lanes)
        }
        Err(e) if all_failed(&e) => {
            // The targets say why; the source was only stopped.
            drop(stream);
            let why = Error::Failed("the export was stopped because every target failed".into());
            (Err(why), raw, Vec::new())
        }
        Err(e) => {
            // Stop the tool first; its status then explains the failure better
            // than the broken pipe does.
            let source = match stream.finish() {
                Err(tool) => Err(Error::from(tool)),
                Ok(_) => Err(Error::Source(SourceError::io("streaming the export", e))),
            };
            (source, raw, Vec::new())
        }
    }
}

async fn drain(target: Target, path: String, mut rx: mpsc::Receiver<Msg>) -> Result<()> {
    // Paced when the target has a limit (`backend::paced`).
    let mut w = target
        .upload(&path)
        .await
        .map_err(|e| target.error("cannot start the upload", e))?;
    loop {
        match rx.recv().await {
            Some(Msg::Data(chunk)) => {
                if let Err(e) = w.write(chunk).await {
                    let _ = w.abort().await;
                    return Err(target.error(&format!("upload of {path} failed"), e));
                }
            }
            Some(Msg::Commit) => {
                return w
                    .close()
                    .await
                    .map_err(|e| target.error(&format!("completing {path} failed"), e));
            }
            None => {
                let _ = w.abort().await;
                return Err(Error::target(
                    &target.name,
                    "upload abandoned because the export failed",
                ));
            }
        }
    }
}
