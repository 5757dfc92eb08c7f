//! The shipped binary logs of a MariaDB export, on one target: every read
//! and write of their keys.

use chrono::{DateTime, Utc};

use super::{Repository, layout};
use crate::Result;
use crate::archiving::binlog::BinlogFacts;

/// One shipped binary log, as its key describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogObject {
    pub name: String,
    pub sha256: String,
    /// When the server closed it.
    pub closed_at: DateTime<Utc>,
    pub key: String,
}

impl BinlogObject {
    fn from_key(key: &str) -> Option<BinlogObject> {
        let (name, sha, closed) = layout::binlog_object_parts(key.rsplit('/').next()?)?;
        Some(BinlogObject {
            name: name.to_string(),
            sha256: sha.to_string(),
            closed_at: DateTime::from_timestamp(closed, 0)?,
            key: key.to_string(),
        })
    }

    /// The file's sequence number.
    pub fn sequence(&self) -> u64 {
        crate::archiving::binlog::sequence(&self.name).unwrap_or(0)
    }
}

impl Repository {
    /// Every shipped binary log of the export, in sequence order.
    pub async fn binlog_list(&self, host: &str, export: &str) -> Result<Vec<BinlogObject>> {
        let mut out: Vec<BinlogObject> =
            match self.target.op.list(&layout::binlog_dir(host, export)).await {
                Ok(entries) => entries
                    .iter()
                    .filter(|e| e.metadata().is_file())
                    .filter_map(|e| BinlogObject::from_key(e.path()))
                    .collect(),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(self.target.error("cannot list the binary logs", e)),
            };
        out.sort_by_key(|o| (o.sequence(), o.name.clone()));
        Ok(out)
    }

    /// Stores a closed binary log (compressed as `stored`), then its record,
    /// and checks the target holds every byte.
    pub async fn binlog_store(
        &self,
        host: &str,
        export: &str,
        name: &str,
        sha256: &str,
        facts: &BinlogFacts,
        stored: Vec<u8>,
    ) -> Result<()> {
        let closed = facts.closed_at.map_or(0, |t| t.timestamp());
        let key = layout::binlog_object(host, export, name, sha256, closed);
        self.store_checked(&key, stored, name).await?;
        let record = serde_json::to_vec_pretty(facts).expect("facts serialise");
        self.write(
            &layout::binlog_record(host, export, name, sha256),
            record,
            "cannot record the binary log",
        )
        .await
    }

    /// A shipped binary log's times and GTIDs.
    pub async fn binlog_facts(
        &self,
        host: &str,
        export: &str,
        object: &BinlogObject,
    ) -> Option<BinlogFacts> {
        let key = layout::binlog_record(host, export, &object.name, &object.sha256);
        let bytes = self.target.op.read(&key).await.ok()?.to_vec();
        if let Err(why) = self
            .check_signature(crate::keys::sign::Owner::Host(host), &key, &bytes)
            .await
        {
            tracing::warn!("target `{}`: record {key} refused: {why}", self.target.name);
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// Reads a shipped binary log back, decompressed and checked against
    /// the digest its key records.
    pub async fn binlog_read(&self, object: &BinlogObject) -> Result<Vec<u8>> {
        self.read_checked(&object.key, &object.sha256, "SHA-256 of the binary log")
            .await
    }

    /// Removes a shipped binary log and its record (prune).
    pub async fn binlog_delete(
        &self,
        host: &str,
        export: &str,
        object: &BinlogObject,
    ) -> Result<()> {
        self.delete_object(&object.key).await?;
        let _ = self
            .target
            .op
            .delete(&layout::binlog_record(
                host,
                export,
                &object.name,
                &object.sha256,
            ))
            .await;
        Ok(())
    }
}
