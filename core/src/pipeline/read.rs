//! The data path backwards: target → SHA-256 (stored) → age → zstd →
//! SHA-256 (raw) → consumer. Decompression runs on one thread, each digest
//! on a thread of its own, the consumer on another; both digests and sizes
//! are checked against the manifest before the consumer's work is kept.

use std::io::{self, Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::QUEUE;
use crate::backend::Target;
use crate::chunk::{ChannelReader, ChunkWriter, HashThread, Sum};
use crate::keys::Identities;
use crate::manifest::{Digest, Manifest};
use crate::progress::{Event, Reporter};
use crate::{Error, Result};

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
