//! AWS S3 or any S3-compatible store (Garage, MinIO, Ceph RGW).
//!
//! Large objects go up as multipart uploads; credentials come from the
//! policy's secret references or, when absent, the AWS credential chain.

use std::path::Path;

use opendal::{Operator, services::S3};
use serde::Deserialize;

use super::{Backend, BackendError, WriteTuning};
use crate::config::SecretRef;

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
