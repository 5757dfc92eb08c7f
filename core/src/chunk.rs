//! Chunk I/O: the blocking ends of the channels the data path moves chunks
//! through, and the digests computed beside them. Sources that produce a
//! stream themselves (the directory tar writer) use the same ends as the
//! pipeline, without depending on it.

use std::io::{self, Read, Write};
use std::sync::mpsc::{SyncSender, sync_channel};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::manifest::Digest;

/// Chunks queued for a hashing thread (it runs faster than zstd decompresses,
/// so this only absorbs scheduling delays).
const HASH_QUEUE: usize = 8;

/// SHA-256 and size of a stream.
#[derive(Default)]
pub(crate) struct Sum {
    hasher: Sha256,
    size: u64,
}

impl Sum {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    pub(crate) fn digest(self) -> Digest {
        Digest {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

/// A [`Sum`] computed on a thread of its own from the chunks handed to it.
/// Restores use it: decompression runs on one core and the digests beside
/// it. (Backups hash inline: there the cores are busy compressing and the
/// database server producing, and more threads only take turns with them.)
pub(crate) struct HashThread {
    tx: Option<SyncSender<Bytes>>,
    handle: std::thread::JoinHandle<Digest>,
}

impl HashThread {
    pub(crate) fn spawn() -> Self {
        let (tx, rx) = sync_channel::<Bytes>(HASH_QUEUE);
        let work = move || {
            let mut sum = Sum::default();
            for chunk in rx {
                sum.update(&chunk);
            }
            sum.digest()
        };
        let handle = std::thread::Builder::new()
            .name("drp-sha256".into())
            .spawn(work)
            .expect("cannot start a hashing thread");
        HashThread {
            tx: Some(tx),
            handle,
        }
    }

    pub(crate) fn update(&self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            // The thread only stops when the sender is dropped.
            let _ = tx.send(chunk);
        }
    }

    pub(crate) fn finish(mut self) -> Digest {
        self.tx = None;
        self.handle.join().unwrap_or_default()
    }
}

/// A blocking reader over chunks received from another task or thread.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    /// Hashes every chunk received, on its own thread.
    pub(crate) tap: Option<HashThread>,
    /// Set when the sender failed mid-read, to tell it apart from corruption.
    pub(crate) failed: Option<String>,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            tap: None,
            failed: None,
        }
    }

    pub(crate) fn hashed(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            tap: Some(HashThread::spawn()),
            ..ChannelReader::new(rx)
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    if let Some(tap) = &self.tap {
                        tap.update(b.clone());
                    }
                    self.current = b;
                }
                Some(Err(e)) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Size of the chunks a [`ChunkWriter`] hands over.
const SOURCE_CHUNK: usize = 1 << 20;

/// The writing end of a [`ChannelReader`]: collects what is written into
/// large chunks, and can fill a chunk straight from a file (one read per
/// chunk, no intermediate buffer).
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// Either empty or `SOURCE_CHUNK` long, of which `len` bytes are filled.
    buf: bytes::BytesMut,
    len: usize,
}

impl ChunkWriter {
    pub(crate) fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChunkWriter {
            tx,
            buf: bytes::BytesMut::new(),
            len: 0,
        }
    }

    fn room(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            // Reuses the memory of chunks the reader is done with.
            self.buf.reserve(SOURCE_CHUNK);
            self.buf.resize(SOURCE_CHUNK, 0);
        }
        &mut self.buf[self.len..]
    }

    fn filled(&mut self, n: usize) -> io::Result<()> {
        self.len += n;
        if self.len == SOURCE_CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let chunk = self.buf.split_to(self.len).freeze();
        self.buf.clear();
        self.len = 0;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the export was abandoned"))
    }

    /// Reads at most `limit` bytes of `src` into the stream; 0 at its end.
    pub(crate) fn read_from(&mut self, src: &mut impl Read, limit: u64) -> io::Result<usize> {
        let room = self.room();
        let want = room.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        let n = loop {
            match src.read(&mut room[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.filled(n)?;
        Ok(n)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.room();
        let n = room.len().min(data.len());
        room[..n].copy_from_slice(&data[..n]);
        self.filled(n)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
