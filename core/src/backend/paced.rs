//! A target's bandwidth limit (its `limit` in the policy), wrapped around
//! the target where a policy opens it: a backup's upload of a point to it
//! is handed its bytes no faster than the limit, on average since the
//! upload started. Nothing else is paced: records, WAL and binary logs go
//! at the target's own speed.

use bytes::Bytes;

use super::Target;

/// The limit a target's uploads are held to, in bytes per second.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    rate: u64,
}

impl Paced {
    /// `target`, its uploads held to `limit` bytes per second (as it was
    /// without one).
    pub fn wrap(mut target: Target, limit: Option<u64>) -> Target {
        target.paced = limit.map(|rate| Paced { rate });
        target
    }
}

impl Target {
    /// Starts the upload of a point's data object at `path`, in the parts
    /// this kind of target likes, paced when the target is.
    pub(crate) async fn upload(&self, path: &str) -> opendal::Result<Upload> {
        let mut options = opendal::options::WriteOptions {
            concurrent: self.tuning.concurrent,
            ..Default::default()
        };
        options.chunk = self.tuning.chunk;
        let writer = self.op.writer_options(path, options).await?;
        Ok(Upload {
            writer,
            pace: self.paced.map(|p| Pace::new(p.rate)),
        })
    }
}

/// An upload of a point's data object: the storage driver's writer,
/// behind its target's limit.
pub(crate) struct Upload {
    writer: opendal::Writer,
    pace: Option<Pace>,
}

impl Upload {
    pub(crate) async fn write(&mut self, chunk: Bytes) -> opendal::Result<()> {
        if let Some(p) = &mut self.pace {
            p.take(chunk.len()).await;
        }
        self.writer.write(chunk).await
    }

    /// Completes the object.
    pub(crate) async fn close(&mut self) -> opendal::Result<()> {
        self.writer.close().await.map(|_| ())
    }

    /// Abandons the object.
    pub(crate) async fn abort(&mut self) -> opendal::Result<()> {
        self.writer.abort().await
    }
}

/// Bytes are handed to the upload no faster than `rate` per second on
/// average since the upload started.
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
