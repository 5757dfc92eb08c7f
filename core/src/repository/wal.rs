//! The WAL archive of a `postgres-cluster` export, on one target: every
//! read and write of its keys.

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use super::{Repository, layout};
use crate::archiving::{ClusterIdentity, WalFile};
use crate::{Error, Result};

/// One archived WAL file, as its key describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub file: WalFile,
    /// Digest of the file as PostgreSQL wrote it.
    pub sha256: String,
    /// When its last byte was written (the segment's modification time).
    pub ended: DateTime<Utc>,
    pub key: String,
}

impl WalObject {
    fn from_key(key: &str) -> Option<WalObject> {
        let name = key.rsplit('/').next()?;
        let (file, sha, ended) = layout::wal_object_parts(name)?;
        Some(WalObject {
            file,
            sha256: sha.to_string(),
            ended: DateTime::from_timestamp(ended, 0)?,
            key: key.to_string(),
        })
    }
}

/// The SHA-256 of `bytes`, in hex.
/// How every age file starts.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Repository {
    /// The cluster this archive belongs to, once a file was pushed.
    pub async fn wal_identity(&self, host: &str, export: &str) -> Result<Option<ClusterIdentity>> {
        let key = layout::wal_cluster(host, export);
        match self.target.op.read(&key).await {
            Ok(buf) => serde_json::from_slice(&buf.to_vec())
                .map(Some)
                .map_err(|e| Error::Manifest {
                    target: self.target.name.clone(),
                    object: key,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self
                .target
                .error("cannot read the archive's cluster record", e)),
        }
    }

    /// Records the cluster this archive belongs to.
    pub async fn set_wal_identity(
        &self,
        host: &str,
        export: &str,
        identity: &ClusterIdentity,
    ) -> Result<()> {
        let body = serde_json::to_vec_pretty(identity).expect("identity serialises");
        self.write(
            &layout::wal_cluster(host, export),
            body,
            "cannot record the archive's cluster",
        )
        .await
    }

    /// The archived copies of `file` (normally none or one).
    pub async fn wal_find(
        &self,
        host: &str,
        export: &str,
        file: &WalFile,
    ) -> Result<Vec<WalObject>> {
        let name = format!("{file}-");
        Ok(self
            .wal_list_in(&layout::wal_folder(host, export, file))
            .await?
            .into_iter()
            .filter(|o| {
                o.key
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(&name))
            })
            .collect())
    }

    /// Every archived WAL file of the export.
    pub async fn wal_list(&self, host: &str, export: &str) -> Result<Vec<WalObject>> {
        let dir = layout::wal_dir(host, export);
        let folders = match self.target.op.list(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.target.error("cannot list the WAL archive", e)),
        };
        let mut out = Vec::new();
        for f in folders
            .iter()
            .filter(|e| e.metadata().is_dir() && e.path() != dir)
        {
            out.extend(self.wal_list_in(f.path()).await?);
        }
        out.sort_by_key(|o| o.file);
        Ok(out)
    }

    async fn wal_list_in(&self, folder: &str) -> Result<Vec<WalObject>> {
        match self.target.op.list(folder).await {
            Ok(entries) => Ok(entries
                .iter()
                .filter(|e| e.metadata().is_file())
                .filter_map(|e| WalObject::from_key(e.path()))
                .collect()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.target.error("cannot list the WAL archive", e)),
        }
    }

    /// Stores `file` (already compressed as `stored`) under the key its
    /// digest and end time give, and checks the target holds every byte.
    pub async fn wal_store(
        &self,
        host: &str,
        export: &str,
        file: &WalFile,
        sha256: &str,
        ended: DateTime<Utc>,
        stored: Vec<u8>,
    ) -> Result<WalObject> {
        let key = layout::wal_object(host, export, file, sha256, ended.timestamp());
        self.store_checked(&key, stored, &file.to_string()).await?;
        Ok(WalObject::from_key(&key).expect("a key this module built parses"))
    }

    /// Reads an archived file back, decompressed, and checks it against the
    /// digest its key records.
    pub async fn wal_read(&self, object: &WalObject) -> Result<Vec<u8>> {
        self.read_checked(&object.key, &object.sha256, "SHA-256 of the WAL file")
            .await
    }

    /// Reads an archived file back as [`Repository::wal_read`] does, but
    /// accepts an encrypted one this reader has no identity for: a host
    /// that only archives cannot open it, and archived objects are written
    /// whole or not at all.
    pub async fn wal_intact(&self, object: &WalObject) -> Result<()> {
        if self.keys.identities.is_empty() && self.sealed(&object.key).await? {
            return Ok(());
        }
        self.wal_read(object).await.map(|_| ())
    }

    /// Whether the object at `key` is encrypted (an age file).
    async fn sealed(&self, key: &str) -> Result<bool> {
        let head = self
            .target
            .op
            .read_with(key)
            .range(0..AGE_MAGIC.len() as u64)
            .await
            .map_err(|e| self.target.error(&format!("cannot read {key}"), e))?;
        Ok(head.to_vec() == AGE_MAGIC)
    }

    /// Writes `stored` at `key`, whole (through a temporary object where
    /// the target's writes are not), encrypted to the target's recipients
    /// and locked as it says, and checks the target holds every byte.
    pub(super) async fn store_checked(&self, key: &str, stored: Vec<u8>, what: &str) -> Result<()> {
        let stored = crate::keys::seal(&self.target.recipients, stored)
            .map_err(|e| Error::Failed(format!("cannot encrypt {what}: {e}")))?;
        let size = stored.len() as u64;
        self.put_whole(key, stored)
            .await
            .map_err(|e| self.target.error(&format!("cannot archive {what}"), e))?;
        let meta = self.target.op.stat(key).await.map_err(|e| {
            self.target
                .error(&format!("{what} vanished once archived"), e)
        })?;
        if meta.content_length() != size {
            return Err(Error::target(
                &self.target.name,
                format!(
                    "{key} holds {} bytes, {size} were sent",
                    meta.content_length()
                ),
            ));
        }
        self.target.protect(key).await?;
        Ok(())
    }

    /// Reads the zstd object at `key` back, decompressed (on a blocking
    /// thread), and checks it against `sha256`.
    pub(super) async fn read_checked(
        &self,
        key: &str,
        sha256: &str,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        let buf = self
            .target
            .op
            .read(key)
            .await
            .map_err(|e| self.target.error(&format!("cannot read {key}"), e))?;
        let buf = buf.to_vec();
        if buf.starts_with(AGE_MAGIC) && self.keys.identities.is_empty() {
            return Err(Error::Usage(format!(
                "{key} on target `{}` is encrypted, and no identity was given: give `--identity FILE`",
                self.target.name
            )));
        }
        let identities = self.keys.identities.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let plain = crate::keys::unseal(&identities, buf)?;
            zstd::decode_all(&plain[..])
        })
        .await
        .map_err(|e| Error::Failed(format!("the decompression task stopped: {e}")))?;
        let corrupt = |actual: String| Error::Integrity {
            target: self.target.name.clone(),
            object: key.to_string(),
            what,
            expected: sha256.to_string(),
            actual,
        };
        let bytes = bytes.map_err(|e| corrupt(format!("an undecodable stream ({e})")))?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(corrupt(actual));
        }
        Ok(bytes)
    }

    /// Removes one archived file (prune).
    pub async fn wal_delete(&self, object: &WalObject) -> Result<()> {
        self.delete_object(&object.key).await
    }
}
