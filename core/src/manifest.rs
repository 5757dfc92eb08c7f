//! The manifest: the description of one recovery point, and its commit point.
//! A recovery point exists exactly when its manifest does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the manifest and repository layout this build writes.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub host: String,
    pub export: String,
    /// Source kind: `postgres`, `mysql`, `sqlite`, `directory`.
    pub kind: String,
    /// Non-secret facts about the source (database name, path, dump format).
    pub source: BTreeMap<String, String>,
    /// The data is consistent as of this moment (never later than the truth).
    pub consistency_time: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The stream the source produced.
    pub raw: Digest,
    /// What is stored on the target.
    pub stored: StoredObject,
    pub compression: CompressionInfo,
    /// Versions of the tools and server involved.
    pub tools: BTreeMap<String, String>,
    /// The agent that wrote the point.
    pub agent: String,
    /// A physical base backup's WAL range: it is restorable once every
    /// segment of the range is archived, and replays on from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::archiving::WalRange>,
    /// A MariaDB export's binary-log coordinates: a replay of the shipped
    /// binary logs starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<crate::archiving::binlog::BinlogStart>,
    /// How the stored object is encrypted; absent, it is plain zstd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The fingerprint of the key that signed this manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// An incremental tree export's snapshot in the target's restic
    /// repository: the data object is then only the point's descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
}

/// Where an incremental point's tree is: a snapshot of the restic repository
/// beside the target's drp repository, and what the run stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    /// `restic`.
    pub engine: String,
    /// The repository, for people (no credential): `restic` under the target.
    pub repository: String,
    /// The snapshot's full id (64 hex digits).
    pub snapshot: String,
    /// Files read, and how many were new, changed or unchanged since the
    /// previous snapshot of the tree.
    pub files: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes of the tree read.
    pub bytes_scanned: u64,
    /// Bytes of data this run added to the repository (before compression):
    /// what the previous points did not hold already.
    pub bytes_added: u64,
    /// The `exclude:` patterns the tree was read with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
}

/// The stored object is zstd encrypted in the age format to these recipients:
/// any one of their identities opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `age` (X25519 recipients, ChaCha20-Poly1305 in 64 KiB chunks).
    pub format: String,
    pub recipients: Vec<KeyRef>,
}

/// A public key by its name in the policy and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub name: String,
    pub fingerprint: String,
}

impl Encryption {
    pub fn to(recipients: &[crate::keys::Recipient]) -> Option<Encryption> {
        (!recipients.is_empty()).then(|| Encryption {
            format: "age".into(),
            recipients: recipients
                .iter()
                .map(|r| KeyRef {
                    name: r.name.clone(),
                    fingerprint: r.fingerprint(),
                })
                .collect(),
        })
    }

    /// The recipients, for people: `ops (1a2b…), escrow (…)`.
    pub fn describe(&self) -> String {
        self.recipients
            .iter()
            .map(|k| format!("{} ({})", k.name, k.fingerprint))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Path of the data object, relative to the repository root.
    pub object: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionInfo {
    pub algorithm: String,
    pub level: i32,
}

impl Manifest {
    /// Compression ratio raw/stored, for display.
    pub fn ratio(&self) -> f64 {
        if self.stored.size == 0 {
            1.0
        } else {
            self.raw.size as f64 / self.stored.size as f64
        }
    }
}

/// A new recovery point id: sortable by time, unique across hosts.
pub fn new_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:08x}",
        at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}
