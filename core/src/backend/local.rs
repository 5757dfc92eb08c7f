//! A mounted path: a local disk, or the NFS/SMB share of a NAS.
//!
//! Objects are written to a temporary file and renamed into place after an
//! fsync, so a manifest is either whole or absent.

use std::path::{Path, PathBuf};

use opendal::{Operator, services::Fs};
use serde::Deserialize;

use super::{Backend, BackendError};
use crate::paths::resolve_relative;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The repository folder; relative to the policy's folder.
    pub path: PathBuf,
}

impl Backend for LocalConfig {
    fn operator(&self, base_dir: &Path) -> Result<Operator, BackendError> {
        let root = resolve_relative(base_dir, &self.path);
        let root = std::path::absolute(&root)
            .map_err(|e| BackendError::Settings(format!("invalid path {}: {e}", root.display())))?;
        let tmp = root.join(crate::repository::layout::TMP_DIR.trim_end_matches('/'));
        let builder = Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&tmp.to_string_lossy());
        Ok(Operator::new(builder)?)
    }

    fn has_object(&self, base_dir: &Path, object: &str) -> Option<bool> {
        Some(resolve_relative(base_dir, &self.path).join(object).exists())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
