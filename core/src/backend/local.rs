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

/// The files directly in folder `dir` (a key ending in `/`) of `op`, as
/// `(key, size)`, when `op` is a local path; `None` for any other kind.
///
/// The whole folder is read in one blocking task. OpenDAL's own local
/// listing stats each entry in a blocking task of its own, and over a
/// folder of 10,000 manifests those hand-offs between threads cost more
/// than the stats themselves. With `sizes` false no entry is statted where
/// the folder records each entry's type (the size is then 0).
pub(crate) async fn list_files(
    op: &Operator,
    dir: &str,
    sizes: bool,
) -> Option<opendal::Result<Vec<(String, u64)>>> {
    let info = op.info();
    if info.scheme() != "fs" {
        return None;
    }
    let folder = PathBuf::from(info.root()).join(dir.trim_start_matches('/'));
    let prefix = dir.to_string();
    let read = tokio::task::spawn_blocking(move || read_folder(&folder, &prefix, sizes)).await;
    Some(match read {
        Ok(r) => r.map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => opendal::ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => opendal::ErrorKind::PermissionDenied,
                _ => opendal::ErrorKind::Unexpected,
            };
            opendal::Error::new(kind, format!("cannot read folder {dir}")).set_source(e)
        }),
        Err(e) => Err(opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            format!("the listing of {dir} stopped: {e}"),
        )),
    })
}

fn read_folder(folder: &Path, dir: &str, sizes: bool) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        // Removed between the folder's read and here: not listed, as
        // OpenDAL's listing does.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_file() {
            continue;
        }
        let size = if sizes {
            match entry.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        } else {
            0
        };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        out.push((format!("{dir}{name}"), size));
    }
    Ok(out)
}
