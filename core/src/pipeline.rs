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

use std::io::{self, Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backend::Target;
use crate::chunk::{ChannelReader, ChunkWriter, HashThread, Sum};
use crate::config::Compression;
use crate::keys::{Identities, Recipient};
use crate::manifest::{Digest, Manifest};
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
    let mut pace = target.limit.map(Pace::new);
    loop {
        match rx.recv().await {
            Some(Msg::Data(chunk)) => {
                if let Some(p) = &mut pace {
                    p.take(chunk.len()).await;
                }
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

/// A target's bandwidth limit: bytes are handed to the upload no faster
/// than `rate` per second on average since the upload started.
struct Pace {
    rate: f64,
    start: tokio::time::Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate: rate.max(1) as f64,
            start: tokio::time::Instant::now(),
            sent: 0,
        }
    }

    async fn take(&mut self, n: usize) {
        let due = self.start + std::time::Duration::from_secs_f64(self.sent as f64 / self.rate);
        self.sent += n as u64;
        tokio::time::sleep_until(due).await;
    }
}

/// Reads a recovery point, hands the raw stream to `consume` (on a blocking
/// thread) and checks sizes and digests of both the stored and raw streams.
/// On a mismatch the result of `consume` is dropped (so staged work is
/// discarded) and an integrity error names the object and both digests.
pub async fn read_verified<T, F>(
    target: &Target,
    manifest: &Manifest,
    identities: &Identities,
    progress: Reporter,
    consume: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> std::result::Result<T, Error> + Send + 'static,
{
    let unseal = unsealing(manifest, identities)?;
    let mut stream = Box::pin(stream_object(target, &manifest.stored.object).await?);
    let (tx, rx) = mpsc::channel(QUEUE);
    let fetch = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    // Decompression, the consumer and each digest run on threads of their
    // own, so the slowest of them sets the pace, not their sum.
    let (raw_tx, raw_rx) = mpsc::channel(QUEUE);
    let decoder = tokio::task::spawn_blocking(move || decode(rx, raw_tx, unseal, progress));
    let consumer = tokio::task::spawn_blocking(move || consume(&mut ChannelReader::new(raw_rx)));
    let consumed = consumer
        .await
        .map_err(|e| Error::Failed(format!("loading stopped: {e}")));
    let decoded = decoder
        .await
        .map_err(|e| Error::Failed(format!("reading stopped: {e}")))?;
    fetch.abort();
    let consumed = consumed?;
    if let Some(e) = decoded.failed {
        return Err(Error::target(
            &target.name,
            format!("reading {} failed: {e}", manifest.stored.object),
        ));
    }
    let integrity = |what, expected, actual| integrity(target, manifest, what, expected, actual);
    let raw = decoded.raw;
    stored_matches(target, manifest, decoded.stored)?;
    if let Some(e) = decoded.error {
        return Err(match &manifest.encryption {
            None => integrity(
                "zstd frame",
                "a complete frame with a matching checksum".into(),
                e.to_string(),
            ),
            Some(_) => integrity(
                "encrypted stream",
                "authenticated age chunks to the last one, holding a complete zstd frame".into(),
                e.to_string(),
            ),
        });
    }
    let value = consumed?;
    digests_match(
        target,
        manifest,
        ("raw size", "raw SHA-256"),
        (manifest.raw.size, &manifest.raw.sha256),
        raw,
    )?;
    Ok(value)
}

/// The identities to decrypt `manifest`'s object with: `None` when it is
/// not encrypted; an error, before anything is read, when none of
/// `identities` is one of its recipients.
pub(crate) fn unsealing(
    manifest: &Manifest,
    identities: &Identities,
) -> Result<Option<Identities>> {
    let Some(sealed) = &manifest.encryption else {
        return Ok(None);
    };
    let ours = identities.fingerprints();
    if sealed
        .recipients
        .iter()
        .any(|r| ours.contains(&r.fingerprint))
    {
        return Ok(Some(identities.clone()));
    }
    let given = if ours.is_empty() {
        "no identity was given".to_string()
    } else {
        format!("the identities given are {}", ours.join(", "))
    };
    Err(Error::Usage(format!(
        "recovery point {} is encrypted to {}, and {given}: give `--identity FILE` holding one of those (hosts that only back up hold public keys alone, by design)",
        manifest.id,
        sealed.describe()
    )))
}

/// Reads the stored object of `manifest` to its end and checks its size and
/// SHA-256, without decrypting or decompressing it: what a host holding
/// only public keys can check of an encrypted point.
pub async fn check_stored(target: &Target, manifest: &Manifest, progress: Reporter) -> Result<()> {
    let object = &manifest.stored.object;
    let mut stream = std::pin::pin!(stream_object(target, object).await?);
    let mut sum = Sum::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::target(&target.name, format!("reading {object} failed: {e}")))?;
        sum.update(&chunk);
        progress.event(Event::Advanced {
            bytes: chunk.len() as u64,
        });
    }
    stored_matches(target, manifest, sum.digest())
}

/// Whether what was read of `manifest`'s object is what its manifest says
/// is stored: the size first, then the SHA-256.
fn stored_matches(target: &Target, manifest: &Manifest, stored: Digest) -> Result<()> {
    digests_match(
        target,
        manifest,
        ("size", "SHA-256"),
        (manifest.stored.size, &manifest.stored.sha256),
        stored,
    )
}

/// `actual` against the size and SHA-256 expected, as an integrity error
/// naming the object (`what`: how each is called in the error).
fn digests_match(
    target: &Target,
    manifest: &Manifest,
    what: (&'static str, &'static str),
    expected: (u64, &str),
    actual: Digest,
) -> Result<()> {
    let integrity = |what, expected, actual| integrity(target, manifest, what, expected, actual);
    if actual.size != expected.0 {
        return Err(integrity(
            what.0,
            expected.0.to_string(),
            actual.size.to_string(),
        ));
    }
    if actual.sha256 != expected.1 {
        return Err(integrity(what.1, expected.1.to_string(), actual.sha256));
    }
    Ok(())
}

/// The point's object failed a check: `what`, expected and found.
fn integrity(
    target: &Target,
    manifest: &Manifest,
    what: &'static str,
    expected: String,
    actual: String,
) -> Error {
    Error::Integrity {
        target: target.name.clone(),
        object: manifest.stored.object.clone(),
        what,
        expected,
        actual,
    }
}

/// The bytes of `object` on `target`, as a stream of chunks.
async fn stream_object(
    target: &Target,
    object: &str,
) -> Result<impl futures::Stream<Item = io::Result<Bytes>> + use<>> {
    let reader = target
        .op
        .reader_with(object)
        .chunk(4 << 20)
        .await
        .map_err(|e| target.error(&format!("cannot read {object}"), e))?;
    reader
        .into_bytes_stream(..)
        .await
        .map_err(|e| target.error(&format!("cannot read {object}"), e))
}

/// What the decoding thread found.
struct Decoded {
    stored: Digest,
    raw: Digest,
    /// The target failed mid-read.
    failed: Option<String>,
    /// The stored stream is not valid zstd.
    error: Option<io::Error>,
}

/// Size of the raw pieces handed from the decompressor to the consumer.
const RAW_CHUNK: usize = 1 << 20;

/// Decompresses the stored stream to `out` while both digests are computed,
/// and always reads both streams to their end, so that the digests cover
/// everything, whether or not the consumer wanted all of it.
fn decode(
    rx: mpsc::Receiver<io::Result<Bytes>>,
    out: mpsc::Sender<io::Result<Bytes>>,
    unseal: Option<Identities>,
    progress: Reporter,
) -> Decoded {
    let raw = HashThread::spawn();
    let mut error = None;
    // An encrypted stream is decrypted on a thread of its own, so that
    // decryption and decompression overlap.
    let (mut stored, mut decrypting) = match unseal {
        None => (Some(ChannelReader::hashed(rx)), None),
        Some(ids) => {
            let (tx, plain) = mpsc::channel(QUEUE);
            let stored = ChannelReader::hashed(rx);
            let progress = progress.clone();
            let thread = std::thread::Builder::new()
                .name("drp-decrypt".into())
                .spawn(move || decrypt(stored, &ids, tx, &progress));
            match thread {
                Ok(t) => (None, Some((t, ChannelReader::new(plain)))),
                Err(e) => {
                    return Decoded {
                        stored: Digest::default(),
                        raw: raw.finish(),
                        failed: Some(format!("cannot start decrypting: {e}")),
                        error: None,
                    };
                }
            }
        }
    };
    {
        let input: Box<dyn Read + '_> = match (&mut stored, &mut decrypting) {
            (Some(s), _) => Box::new(Counting {
                inner: s,
                progress: &progress,
            }),
            (None, Some((_, plain))) => Box::new(plain),
            (None, None) => unreachable!("a stream is either plain or decrypted"),
        };
        match zstd::stream::read::Decoder::new(input) {
            Ok(mut dec) => {
                let mut consumer = Some(out);
                let mut buf = bytes::BytesMut::new();
                loop {
                    if buf.len() < RAW_CHUNK / 4 {
                        buf.clear();
                        buf.reserve(RAW_CHUNK);
                        buf.resize(RAW_CHUNK, 0);
                    }
                    let n = match dec.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            if let Some(tx) = consumer.take() {
                                let _ =
                                    tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
                            }
                            error = Some(e);
                            break;
                        }
                    };
                    let chunk = buf.split_to(n).freeze();
                    raw.update(chunk.clone());
                    // A consumer that stopped early no longer gets chunks.
                    if let Some(tx) = &consumer
                        && tx.blocking_send(Ok(chunk)).is_err()
                    {
                        consumer = None;
                    }
                }
            }
            Err(e) => {
                let _ = out.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
                error = Some(e)
            }
        }
    }
    let (stored, failed) = match (stored, decrypting) {
        (Some(stored), _) => read_to_end(stored),
        (None, Some((thread, plain))) => {
            // Stops the decrypting thread if decompression stopped first.
            drop(plain);
            thread.join().unwrap_or_else(|_| {
                (
                    Digest::default(),
                    Some("the decrypting thread panicked".into()),
                )
            })
        }
        (None, None) => unreachable!("a stream is either plain or decrypted"),
    };
    Decoded {
        stored,
        raw: raw.finish(),
        failed,
        error,
    }
}

/// Reads `stored` to its end, so that its digest covers everything; its
/// digest, and why the target failed mid-read if it did.
fn read_to_end(mut stored: ChannelReader) -> (Digest, Option<String>) {
    let _ = io::copy(&mut stored, &mut io::sink());
    let failed = stored.failed.take();
    let digest = stored.tap.take().map(HashThread::finish);
    (digest.unwrap_or_default(), failed)
}

/// Decrypts the age stream `stored` into `tx` (a failure to decrypt is
/// the stream's last item), then reads `stored` to its end.
fn decrypt(
    mut stored: ChannelReader,
    ids: &Identities,
    tx: mpsc::Sender<io::Result<Bytes>>,
    progress: &Reporter,
) -> (Digest, Option<String>) {
    {
        let counting = Counting {
            inner: &mut stored,
            progress,
        };
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let result = age::Decryptor::new(counting)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|d| d.decrypt(ids.as_age()).map_err(|e| invalid(e.to_string())))
            .and_then(|mut plain| {
                // Straight into the chunks handed on: one copy, in large reads.
                let mut w = ChunkWriter::new(tx.clone());
                while w.read_from(&mut plain, u64::MAX)? > 0 {}
                w.flush()
            });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }
    drop(tx);
    read_to_end(stored)
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
