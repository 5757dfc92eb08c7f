//! AWS S3 or any S3-compatible store (Garage, MinIO, Ceph RGW).
//!
//! Large objects go up as multipart uploads; credentials come from the
//! policy's secret references or, when absent, the AWS credential chain.

use std::path::Path;

use opendal::{Operator, services::S3};
use serde::Deserialize;

use super::{Backend, BackendError, WriteTuning};
use crate::secret::SecretRef;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Folder inside the bucket for the repository.
    pub prefix: Option<String>,
    /// For S3-compatible stores, e.g. `https://s3.gra.io.cloud.ovh.net`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<SecretRef>,
    pub secret_access_key: Option<SecretRef>,
    /// `bucket.endpoint` addressing instead of `endpoint/bucket`.
    #[serde(default)]
    pub virtual_host_style: bool,
    /// S3 Object Lock retention set on every object of a recovery point
    /// when it is written (the bucket must have Object Lock enabled).
    pub lock: Option<LockConfig>,
}

/// How long, and how strictly, written objects are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    pub mode: LockMode,
    /// Days each object is locked for from when it is written: at least as
    /// long as retention keeps a point (`drp check` compares).
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Deletable before its time only with `s3:BypassGovernanceRetention`.
    Governance,
    /// Deletable before its time by nobody, the account's root included.
    Compliance,
}

/// Multipart part size: large enough for few requests, small enough for bounded memory.
const PART_SIZE: usize = 8 << 20;

impl Backend for S3Config {
    fn operator(&self, base_dir: &Path) -> Result<Operator, BackendError> {
        let mut b = S3::default()
            .bucket(&self.bucket)
            .root(&format!(
                "/{}",
                self.prefix.as_deref().unwrap_or("").trim_matches('/')
            ))
            .region(self.region.as_deref().unwrap_or("us-east-1"));
        if let Some(e) = &self.endpoint {
            b = b.endpoint(e);
        }
        if let Some(k) = &self.access_key_id {
            b = b.access_key_id(
                k.resolve(base_dir)
                    .map_err(|e| BackendError::Settings(format!("access_key_id: {e}")))?
                    .expose(),
            );
        }
        if let Some(k) = &self.secret_access_key {
            b = b.secret_access_key(
                k.resolve(base_dir)
                    .map_err(|e| BackendError::Settings(format!("secret_access_key: {e}")))?
                    .expose(),
            );
        }
        if self.virtual_host_style {
            b = b.enable_virtual_host_style();
        }
        if self.lock.is_some() {
            // S3 refuses uploads to locked buckets without a checksum.
            b = b.checksum_algorithm("crc32c");
        }
        Ok(Operator::new(b)?)
    }

    fn location(&self) -> String {
        let prefix = self
            .prefix
            .as_deref()
            .map(|p| format!("/{}", p.trim_matches('/')))
            .unwrap_or_default();
        match &self.endpoint {
            Some(e) => format!("s3://{}{prefix} at {e}", self.bucket),
            None => format!("s3://{}{prefix}", self.bucket),
        }
    }

    fn tuning(&self) -> WriteTuning {
        WriteTuning {
            chunk: Some(PART_SIZE),
            concurrent: 2,
        }
    }
}

/// What a bucket's settings let a holder of a writing key do to history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    pub versioning: bool,
    pub lock_enabled: bool,
    /// The bucket's default retention: mode and days.
    pub default_retention: Option<(String, u32)>,
}

impl Posture {
    /// Whether a stolen agent key could destroy recovery points, in words,
    /// given the policy's own lock (if any); `true` when it could.
    pub fn verdict(&self, policy_lock: Option<&LockConfig>) -> (bool, String) {
        let mode = policy_lock
            .map(|l| match l.mode {
                LockMode::Governance => "GOVERNANCE".to_string(),
                LockMode::Compliance => "COMPLIANCE".to_string(),
            })
            .or_else(|| self.default_retention.as_ref().map(|(m, _)| m.clone()));
        match (self.lock_enabled, mode.as_deref()) {
            (true, Some("COMPLIANCE")) => (
                false,
                "Object Lock in compliance mode: no key, the account's root included, deletes a locked version before its retention ends".into(),
            ),
            (true, Some(_)) => (
                false,
                "Object Lock in governance mode: locked versions are deleted early only with s3:BypassGovernanceRetention — keep that permission off the agents' keys".into(),
            ),
            (true, None) => (
                true,
                "Object Lock is enabled but nothing is locked: set `lock: {mode: governance, days: N}` on the target, or a default retention on the bucket".into(),
            ),
            (false, _) if self.versioning => (
                true,
                "versioning without Object Lock: a deleted object stays as an older version, but a key allowed s3:DeleteObjectVersion destroys it".into(),
            ),
            (false, _) => (
                true,
                "no versioning, no Object Lock: a stolen key that may write can delete every point".into(),
            ),
        }
    }
}
