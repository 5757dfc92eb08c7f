//! A directory tree, as a tar stream that keeps permissions, symlinks and
//! modification times. Restore extracts next to the destination and swaps
//! it in; entries that would land outside the destination are refused.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use chrono::Utc;
use serde::Deserialize;

use super::{Destination, ExportInfo, ExportStream, Source, SourceError, Staged};
use crate::config::resolve_relative;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The tree to archive; relative to the policy's folder.
    pub path: PathBuf,
    /// Restore symbolic links that point outside the tree (absolute or
    /// climbing out with `..`), as trees like `/etc` have. Refused otherwise.
    #[serde(default)]
    pub allow_external_symlinks: bool,
}

pub struct Directory {
    path: PathBuf,
    allow_external_symlinks: bool,
}

impl Directory {
    pub fn new(config: DirectoryConfig, base_dir: &Path) -> Self {
        Directory {
            path: resolve_relative(base_dir, &config.path),
            allow_external_symlinks: config.allow_external_symlinks,
        }
    }
}

struct TarExport {
    reader: std::io::PipeReader,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    info: ExportInfo,
    root: PathBuf,
}

impl Read for TarExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl ExportStream for TarExport {
    fn finish(mut self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let handle = self.writer.take().expect("finish runs once");
        match handle.join() {
            Ok(Ok(())) => Ok(std::mem::take(&mut self.info)),
            Ok(Err(e)) => Err(SourceError::io(
                format!("archiving {}", self.root.display()),
                e,
            )),
            Err(_) => Err(SourceError::Invalid(format!(
                "archiving {} panicked",
                self.root.display()
            ))),
        }
    }
}

impl Source for Directory {
    fn describe(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("path".to_string(), self.path.display().to_string()),
            ("format".to_string(), "tar".to_string()),
        ])
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        if !self.path.is_dir() {
            return Err(SourceError::Invalid(format!(
                "{} is not a directory",
                self.path.display()
            )));
        }
        let (reader, writer) =
            std::io::pipe().map_err(|e| SourceError::io("cannot create a pipe", e))?;
        let root = self.path.clone();
        let consistency_time = Utc::now();
        let handle = std::thread::spawn(move || {
            let mut tar = tar::Builder::new(writer);
            tar.follow_symlinks(false);
            tar.mode(tar::HeaderMode::Complete);
            tar.append_dir_all(".", &root)?;
            tar.into_inner()?;
            Ok(())
        });
        Ok(Box::new(TarExport {
            reader,
            writer: Some(handle),
            info: ExportInfo {
                consistency_time,
                tools: BTreeMap::from([(
                    "archiver".to_string(),
                    format!("drp tar {}", env!("CARGO_PKG_VERSION")),
                )]),
            },
            root: self.path.clone(),
        }))
    }

    fn default_destination(&self) -> Destination {
        Destination::Path(self.path.clone())
    }

    fn destination(&self, text: &str) -> Destination {
        Destination::Path(PathBuf::from(text))
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        let Destination::Path(p) = dest else {
            return Err(SourceError::Invalid(
                "a directory export restores into a directory".into(),
            ));
        };
        match std::fs::read_dir(p) {
            Ok(entries) => Ok(Some(format!(
                "directory {} ({} entries at its top)",
                p.display(),
                entries.count()
            ))),
            Err(_) if !p.exists() => Ok(None),
            Err(e) => Err(SourceError::io(format!("cannot read {}", p.display()), e)),
        }
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        _workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let Destination::Path(path) = dest.clone() else {
            return Err(SourceError::Invalid(
                "a directory export restores into a directory".into(),
            ));
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| SourceError::io(format!("cannot create {}", parent.display()), e))?;
        let staging = tempfile::Builder::new()
            .prefix(".drp-restore-")
            .tempdir_in(parent)
            .map_err(|e| {
                SourceError::io(
                    format!("cannot create a staging folder in {}", parent.display()),
                    e,
                )
            })?;
        extract(raw, staging.path(), self.allow_external_symlinks)?;
        Ok(Box::new(StagedTree { staging, path }))
    }
}

/// Whether a link target, placed at `entry`, resolves outside the tree.
fn escapes(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = entry
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as i64
        - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Extracts a tar stream into `into`, refusing any entry that would escape it.
pub fn extract(
    raw: &mut dyn Read,
    into: &Path,
    allow_external_symlinks: bool,
) -> Result<(), SourceError> {
    let mut archive = tar::Archive::new(raw);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| SourceError::io("reading the archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| SourceError::io("reading the archive", e))?;
        let name = entry
            .path()
            .map_err(|e| SourceError::io("reading an entry name", e))?
            .into_owned();
        let outside = name.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        });
        if outside {
            return Err(SourceError::Invalid(format!(
                "archive entry `{}` would be written outside the destination; the restore was refused",
                name.display()
            )));
        }
        if let Some(target) = entry.link_name().ok().flatten()
            && entry.header().entry_type().is_symlink()
            && !allow_external_symlinks
            && escapes(&name, &target)
        {
            return Err(SourceError::Invalid(format!(
                "archive entry `{}` is a symbolic link to `{}`, outside the destination; the restore was refused \
                 (set `allow_external_symlinks: true` on the source if the tree really has such links)",
                name.display(),
                target.display()
            )));
        }
        if let Some(target) = entry.link_name().ok().flatten()
            && entry.header().entry_type().is_hard_link()
            && target
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(SourceError::Invalid(format!(
                "archive entry `{}` is a hard link to `{}` outside the destination; the restore was refused",
                name.display(),
                target.display()
            )));
        }
        let inside = entry
            .unpack_in(into)
            .map_err(|e| SourceError::io(format!("extracting `{}`", name.display()), e))?;
        if !inside {
            return Err(SourceError::Invalid(format!(
                "archive entry `{}` would be written outside the destination; the restore was refused",
                name.display()
            )));
        }
    }
    Ok(())
}

struct StagedTree {
    staging: tempfile::TempDir,
    path: PathBuf,
}

impl Staged for StagedTree {
    fn commit(self: Box<Self>) -> Result<(), SourceError> {
        let staged = self.staging.keep();
        // Keep the restored tree's root permissions as archived ("." entry).
        if !self.path.exists() {
            return std::fs::rename(&staged, &self.path).map_err(|e| {
                SourceError::io(
                    format!("cannot move the restored tree to {}", self.path.display()),
                    e,
                )
            });
        }
        let aside = sibling(&self.path, ".drp-replaced-");
        std::fs::rename(&self.path, &aside).map_err(|e| {
            SourceError::io(format!("cannot move {} aside", self.path.display()), e)
        })?;
        if let Err(e) = std::fs::rename(&staged, &self.path) {
            // Put the original back: the destination must never be left missing.
            let _ = std::fs::rename(&aside, &self.path);
            let _ = std::fs::remove_dir_all(&staged);
            return Err(SourceError::io(
                format!("cannot move the restored tree to {}", self.path.display()),
                e,
            ));
        }
        std::fs::remove_dir_all(&aside).map_err(|e| {
            SourceError::io(
                format!(
                    "restored, but cannot remove the replaced tree at {}",
                    aside.display()
                ),
                e,
            )
        })
    }
}

fn sibling(path: &Path, prefix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.f");
    path.with_file_name(format!("{prefix}{name}-{stamp}"))
}
