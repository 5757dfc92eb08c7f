//! The data path. Backup: source → SHA-256 (raw) → zstd → SHA-256 (stored) →
//! every target at once. Restore and verify: target → SHA-256 (stored) →
//! zstd → SHA-256 (raw) → consumer, with both digests checked against the
//! manifest before the consumer's work is kept.
//!
//! Memory is bounded by a few chunks per target plus zstd's window, whatever
//! the size of the stream: nothing is buffered whole.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::config::Compression;
use crate::manifest::{Digest, Manifest};
use crate::progress::{Event, Reporter};
use crate::source::{ExportInfo, ExportStream, SourceError};
use crate::target::Target;
use crate::{Error, Result};

/// Size of the pieces handed from the compressor to the targets.
const CHUNK: usize = 512 << 10;
const ALL_TARGETS_FAILED: &str = "every target failed";

/// Size of each read from the source.
const READ: usize = 256 << 10;
/// zstd's job size in multi-threaded mode: small enough to keep memory
/// bounded (two workers hold a job in and a job out each), large enough that
/// compression ratio and speed do not suffer.
const JOB: u32 = 4 << 20;
/// Chunks queued per target before the compressor waits for it.
const QUEUE: usize = 4;

/// A reader or writer that hashes and counts what passes through it.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn digest(&self) -> Digest {
        Digest {
            size: self.bytes,
            sha256: hex::encode(self.hasher.clone().finalize()),
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

enum Msg {
    Data(Bytes),
    /// The source succeeded: complete the object.
    Commit,
}

/// Splits the compressed stream into chunks and hands each to every live target.
struct FanOut {
    senders: Vec<Option<mpsc::Sender<Msg>>>,
    /// Compressed bytes not yet handed out. Chunks are split off this one
    /// buffer, whose memory is reused once every target has written them:
    /// no fresh allocation (and page faults) per chunk.
    pending: bytes::BytesMut,
    hasher: Sha256,
    bytes: u64,
}

impl FanOut {
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
            return Err(io::Error::other(ALL_TARGETS_FAILED));
        }
        Ok(())
    }
}

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
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

/// The result of streaming one export to its targets.
pub struct Outcome {
    pub source: std::result::Result<ExportInfo, Error>,
    pub raw: Digest,
    pub stored: Digest,
    /// Per target, in the order given: whether its data object is complete.
    pub targets: Vec<Result<()>>,
}

/// Streams `stream` to one object on each target. Objects are completed only
/// if the source succeeds; otherwise they are aborted.
pub async fn export(
    stream: Box<dyn ExportStream>,
    compression: Compression,
    targets: Vec<(Target, String)>,
    progress: Reporter,
) -> Outcome {
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for (target, path) in targets {
        let (tx, rx) = mpsc::channel(QUEUE);
        senders.push(Some(tx));
        tasks.push(tokio::spawn(drain(target, path, rx)));
    }
    let compressor =
        tokio::task::spawn_blocking(move || compress(stream, compression, senders, progress));
    let (source, raw, stored, senders) = match compressor.await {
        Ok(r) => r,
        Err(e) => (
            Err(Error::Failed(format!("the compressor stopped: {e}"))),
            Digest {
                size: 0,
                sha256: String::new(),
            },
            Digest {
                size: 0,
                sha256: String::new(),
            },
            Vec::new(),
        ),
    };
    // Commit only when the source finished cleanly; dropping a sender aborts.
    if source.is_ok() {
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(Msg::Commit).await;
        }
    } else {
        drop(senders);
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(match t.await {
            Ok(r) => r,
            Err(e) => Err(Error::Failed(format!("target writer stopped: {e}"))),
        });
    }
    Outcome {
        source,
        raw,
        stored,
        targets: results,
    }
}

#[allow(clippy::type_complexity)]
fn compress(
    mut stream: Box<dyn ExportStream>,
    compression: Compression,
    senders: Vec<Option<mpsc::Sender<Msg>>>,
    progress: Reporter,
) -> (
    std::result::Result<ExportInfo, Error>,
    Digest,
    Digest,
    Vec<Option<mpsc::Sender<Msg>>>,
) {
    let fan = FanOut {
        senders,
        pending: bytes::BytesMut::with_capacity(CHUNK * 2),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut raw = Hashing::new(());
    let result = (|| -> io::Result<FanOut> {
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
            raw.hasher.update(&buf[..n]);
            raw.bytes += n as u64;
            enc.write_all(&buf[..n])?;
            progress.event(Event::Advanced { bytes: n as u64 });
        }
        let mut fan = enc.finish()?;
        fan.send()?;
        Ok(fan)
    })();
    let empty = Digest {
        size: 0,
        sha256: String::new(),
    };
    match result {
        Ok(fan) => {
            let stored = Digest {
                size: fan.bytes,
                sha256: hex::encode(fan.hasher.finalize()),
            };
            let source = stream.finish().map_err(Error::from);
            (source, raw.digest(), stored, fan.senders)
        }
        Err(e) if e.to_string() == ALL_TARGETS_FAILED => {
            // The targets say why; the source was only stopped.
            drop(stream);
            let why = Error::Failed("the export was stopped because every target failed".into());
            (Err(why), raw.digest(), empty, Vec::new())
        }
        Err(e) => {
            // Stop the tool first; its status then explains the failure better
            // than the broken pipe does.
            let source = match stream.finish() {
                Err(tool) => Err(Error::from(tool)),
                Ok(_) => Err(Error::Source(SourceError::io("streaming the export", e))),
            };
            (source, raw.digest(), empty, Vec::new())
        }
    }
}

async fn drain(target: Target, path: String, mut rx: mpsc::Receiver<Msg>) -> Result<()> {
    let mut options = opendal::options::WriteOptions {
        concurrent: target.tuning.concurrent,
        ..Default::default()
    };
    options.chunk = target.tuning.chunk;
    let mut w = target
        .op
        .writer_options(&path, options)
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
                    .map(|_| ())
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

/// A blocking reader over chunks received from an async task.
struct ChannelReader {
    rx: Receiver<io::Result<Bytes>>,
    current: Bytes,
    /// Set when the target failed mid-read, to tell it apart from corruption.
    failed: Option<String>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.current = b,
                Ok(Err(e)) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Reads a recovery point, hands the raw stream to `consume` (on a blocking
/// thread) and checks sizes and digests of both the stored and raw streams.
/// On a mismatch the result of `consume` is dropped (so staged work is
/// discarded) and an integrity error names the object and both digests.
pub async fn read_verified<T, F>(
    target: &Target,
    manifest: &Manifest,
    progress: Reporter,
    consume: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> std::result::Result<T, Error> + Send + 'static,
{
    let object = manifest.stored.object.clone();
    let reader = target
        .op
        .reader_with(&object)
        .chunk(4 << 20)
        .await
        .map_err(|e| target.error(&format!("cannot read {object}"), e))?;
    let mut stream = reader
        .into_bytes_stream(..)
        .await
        .map_err(|e| target.error(&format!("cannot read {object}"), e))?;
    let (tx, rx): (SyncSender<io::Result<Bytes>>, _) = sync_channel(QUEUE);
    let fetch = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let stop = item.is_err();
            if tx.send(item).is_err() || stop {
                break;
            }
        }
    });
    let manifest = manifest.clone();
    let target_name = target.name.clone();
    let work = tokio::task::spawn_blocking(move || {
        let mut stored = Hashing::new(ChannelReader {
            rx,
            current: Bytes::new(),
            failed: None,
        });
        let consumed = {
            let progress_reader = Counting {
                inner: &mut stored,
                progress: &progress,
            };
            match zstd::stream::read::Decoder::new(progress_reader) {
                Ok(dec) => {
                    let mut raw = Hashing::new(dec);
                    let consumed = consume(&mut raw);
                    // Read what the consumer left (e.g. tar padding) so the digest covers all.
                    let drained = io::copy(&mut raw, &mut io::sink());
                    let raw_digest = raw.digest();
                    consumed.and_then(|v| {
                        drained.map_err(|e| Error::io("reading the recovery point", e))?;
                        Ok((v, raw_digest))
                    })
                }
                Err(e) => Err(Error::io("starting decompression", e)),
            }
        };
        let _ = io::copy(&mut stored, &mut io::sink());
        let stored_digest = stored.digest();
        if let Some(e) = stored.get_mut().failed.take() {
            return Err(Error::target(
                &target_name,
                format!("reading {} failed: {e}", manifest.stored.object),
            ));
        }
        let integrity = |what: &'static str, expected: String, actual: String| Error::Integrity {
            target: target_name.clone(),
            object: manifest.stored.object.clone(),
            what,
            expected,
            actual,
        };
        if stored_digest.size != manifest.stored.size {
            return Err(integrity(
                "size",
                manifest.stored.size.to_string(),
                stored_digest.size.to_string(),
            ));
        }
        if stored_digest.sha256 != manifest.stored.sha256 {
            return Err(integrity(
                "SHA-256",
                manifest.stored.sha256.clone(),
                stored_digest.sha256,
            ));
        }
        let (value, raw_digest) = consumed?;
        if raw_digest.size != manifest.raw.size {
            return Err(integrity(
                "raw size",
                manifest.raw.size.to_string(),
                raw_digest.size.to_string(),
            ));
        }
        if raw_digest.sha256 != manifest.raw.sha256 {
            return Err(integrity(
                "raw SHA-256",
                manifest.raw.sha256.clone(),
                raw_digest.sha256,
            ));
        }
        Ok(value)
    });
    let result = work
        .await
        .map_err(|e| Error::Failed(format!("reading stopped: {e}")))?;
    fetch.abort();
    result
}

struct Counting<'a, R> {
    inner: &'a mut R,
    progress: &'a Reporter,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.event(Event::Advanced { bytes: n as u64 });
        Ok(n)
    }
}
