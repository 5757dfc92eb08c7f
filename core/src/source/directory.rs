//! A directory tree, as a tar stream that keeps permissions, symlinks and
//! modification times. Restore extracts next to the destination and swaps
//! it in; entries that would land outside the destination are refused.
//!
//! One file, over 600 lines with its tests: the tar written on export and
//! the guarded extraction on restore are one format read in both directions,
//! and `swap_in` is the extraction's last step.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use chrono::Utc;
use serde::Deserialize;

use super::{
    CommitOptions, Committed, Destination, ExportInfo, ExportStream, Source, SourceError, Staged,
    replaced_path, replaced_pattern,
};
use crate::chunk::{ChannelReader, ChunkWriter};
use crate::config::resolve_relative;

pub mod incremental;
pub mod restic;

/// Archive chunks queued between the archiver and the compressor.
const CHUNKS_QUEUED: usize = 4;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The tree to archive; relative to the policy's folder.
    pub path: PathBuf,
    /// Restore symbolic links that point outside the tree (absolute or
    /// climbing out with `..`), as trees like `/etc` have. Refused otherwise.
    #[serde(default)]
    pub allow_external_symlinks: bool,
    /// `tar` (a whole archive per point, the default) or `incremental`
    /// (deduplicated snapshots in a restic repository on each target).
    #[serde(default)]
    pub mode: Mode,
    /// Incremental mode: gitignore-style patterns of what is not read.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Incremental mode: stay on the tree's filesystem (mounts below it are
    /// not read).
    #[serde(default)]
    pub one_file_system: bool,
    /// Incremental mode: the restic repository's key (password), a secret
    /// reference. The host that backs up holds it.
    #[serde(default)]
    pub key: Option<crate::secret::SecretRef>,
    /// Incremental mode, for a restore: only these paths of the tree
    /// (`--path`), relative to its root. Never read from a policy.
    #[serde(skip)]
    pub restore_paths: Vec<String>,
}

/// How a directory export stores its points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A tar stream of the whole tree per point, through drp's pipeline.
    #[default]
    Tar,
    /// Content-defined chunks shared between points, in restic's format.
    Incremental,
}

pub struct Directory {
    path: PathBuf,
    allow_external_symlinks: bool,
    config: DirectoryConfig,
    base_dir: PathBuf,
}

impl Directory {
    pub fn new(config: DirectoryConfig, base_dir: &Path) -> Self {
        Directory {
            path: resolve_relative(base_dir, &config.path),
            allow_external_symlinks: config.allow_external_symlinks,
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }
}

struct TarExport {
    reader: ChannelReader,
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
        let format = match self.config.mode {
            Mode::Tar => "tar",
            Mode::Incremental => "restic",
        };
        BTreeMap::from([
            ("path".to_string(), self.path.display().to_string()),
            ("format".to_string(), format.to_string()),
        ])
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        if self.config.mode == Mode::Incremental {
            return Err(SourceError::Invalid(
                "an incremental export is written by each target's restic repository (drp-agent backup)".into(),
            ));
        }
        if !self.path.is_dir() {
            return Err(SourceError::Invalid(format!(
                "{} is not a directory",
                self.path.display()
            )));
        }
        // The archive is handed over in memory, in large chunks: no pipe,
        // and one read per chunk of each file.
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_QUEUED);
        let root = self.path.clone();
        let consistency_time = Utc::now();
        let handle = std::thread::Builder::new()
            .name("drp-tar".into())
            .spawn(move || {
                let mut out = ChunkWriter::new(tx);
                archive_tree(&root, &mut out)?;
                out.flush()
            })
            .map_err(|e| SourceError::io("cannot start the archiver", e))?;
        Ok(Box::new(TarExport {
            reader: ChannelReader::new(rx),
            writer: Some(handle),
            info: ExportInfo {
                consistency_time,
                tools: BTreeMap::from([(
                    "archiver".to_string(),
                    format!("drp tar {}", env!("CARGO_PKG_VERSION")),
                )]),
                ..ExportInfo::default()
            },
            root: self.path.clone(),
        }))
    }

    fn default_destination(&self) -> Destination {
        if !self.config.restore_paths.is_empty() {
            // Some paths of the tree go to a folder of their own beside it.
            return Destination::Path(incremental::paths_folder(&self.path));
        }
        Destination::Path(self.path.clone())
    }

    fn stage_incremental(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        at: &incremental::At,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let Destination::Path(path) = dest.clone() else {
            return Err(SourceError::Invalid(
                "a directory export restores into a directory".into(),
            ));
        };
        incremental::stage(self, raw, &path, at)
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

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Path(p) => format!(
                "the replaced tree is kept, moved to `{}`",
                replaced_pattern(p)
            ),
            Destination::Database(_) => String::new(),
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
        let staging = staging_beside(&path)?;
        extract(raw, staging.path(), self.allow_external_symlinks)?;
        Ok(Box::new(StagedTree { staging, path }))
    }
}

/// Writes the tree at `root` as a tar stream (the root as `./`, then every
/// entry by its path inside the tree), keeping modes, owners, times and
/// symbolic links (not followed). Entries are in name order, so the same
/// tree gives the same archive.
///
/// A file's data is exactly the size its header announces, even when the
/// file changes while it is read: one that grew is cut at that size, one
/// that shrank is padded with zeros (as GNU tar does), and both are logged.
/// Sockets cannot be archived and stop the export.
fn archive_tree(root: &Path, out: &mut ChunkWriter) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut stack = vec![(PathBuf::new(), true)];
    while let Some((rel, is_dir)) = stack.pop() {
        let src = root.join(&rel);
        let name = Path::new(".").join(&rel);
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", src.display()));
        if is_dir {
            let mut children = Vec::new();
            for entry in fs::read_dir(&src).map_err(context)? {
                let entry = entry.map_err(context)?;
                children.push((
                    entry.file_name(),
                    entry.file_type().map_err(context)?.is_dir(),
                ));
            }
            // Popped last first: push in reverse name order.
            children.sort_by(|a, b| b.0.cmp(&a.0));
            stack.extend(children.into_iter().map(|(n, d)| (rel.join(n), d)));
            tar.append_dir(&name, &src).map_err(context)?;
            continue;
        }
        let mut stat = fs::symlink_metadata(&src).map_err(context)?;
        let kind = stat.file_type();
        let mut file = None;
        if kind.is_file() {
            let opened = File::open(&src).map_err(context)?;
            // The size and times of the file as opened.
            stat = opened.metadata().map_err(context)?;
            file = Some(opened);
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&stat, tar::HeaderMode::Complete);
        if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(context)?;
            header.set_size(0);
            tar.append_link(&mut header, &name, &target)
                .map_err(context)?;
        } else if let Some(mut file) = file {
            tar.append_data(&mut header, &name, io::empty())
                .map_err(context)?;
            append_file_data(tar.get_mut(), &mut file, stat.len(), &src)?;
        } else {
            let entry_type = if kind.is_fifo() {
                tar::EntryType::Fifo
            } else if kind.is_char_device() {
                tar::EntryType::Char
            } else if kind.is_block_device() {
                tar::EntryType::Block
            } else if kind.is_socket() {
                return Err(io::Error::other(format!(
                    "{}: a socket cannot be archived",
                    src.display()
                )));
            } else {
                return Err(io::Error::other(format!(
                    "{}: became a directory while the tree was archived",
                    src.display()
                )));
            };
            let dev = stat.rdev();
            header.set_entry_type(entry_type);
            header.set_size(0);
            header.set_device_major(libc::major(dev))?;
            header.set_device_minor(libc::minor(dev))?;
            tar.append_data(&mut header, &name, io::empty())
                .map_err(context)?;
        }
    }
    tar.into_inner()?;
    Ok(())
}

/// Streams exactly `size` bytes of `file`, then the padding to a tar block.
fn append_file_data(
    out: &mut ChunkWriter,
    file: &mut File,
    size: u64,
    path: &Path,
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let n = out
            .read_from(file, left)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            tracing::warn!(
                "{} shrank from {size} to {} bytes while it was archived; the rest is zeros",
                path.display(),
                size - left
            );
            io::copy(&mut io::repeat(0).take(left), out)?;
            break;
        }
        left -= n as u64;
    }
    if left == 0 && file.metadata().is_ok_and(|m| m.len() > size) {
        tracing::warn!(
            "{} grew while it was archived; its first {size} bytes were kept",
            path.display()
        );
    }
    let pad = (512 - size % 512) % 512;
    io::copy(&mut io::repeat(0).take(pad), out)?;
    Ok(())
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

/// Whether this process can give files back their owners (as GNU tar does
/// when run as root).
fn can_restore_owners() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The mode an entry is given: as archived, without the setuid and setgid
/// bits when its owner and group are not restored too (a user's setuid tool
/// must not become the restoring user's, or root's, setuid tool).
fn safe_mode(header: &tar::Header, owners_restored: bool) -> Option<u32> {
    let mode = header.mode().ok()? & 0o7777;
    if owners_restored || mode & 0o6000 == 0 {
        return Some(mode);
    }
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let same_owner = header.uid().ok() == Some(uid as u64);
    let same_group = header.gid().ok() == Some(gid as u64);
    let mut mode = mode;
    if !same_owner {
        mode &= !0o4000;
    }
    if !same_group {
        mode &= !0o2000;
    }
    Some(mode)
}

/// Gives an extracted entry its archived owner and group (when `owners`
/// and the archive records them), then its mode without any setuid/setgid
/// bit whose owner was not restored. Run after the owner change, which
/// clears those bits.
fn restore_owner_and_mode(path: &Path, header: &tar::Header, owners: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let ids = match (header.uid(), header.gid()) {
        (Ok(uid), Ok(gid)) if owners => Some((uid as u32, gid as u32)),
        _ => None,
    };
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    let kind = header.entry_type();
    if kind.is_symlink() || kind.is_hard_link() {
        return Ok(());
    }
    match safe_mode(header, ids.is_some()) {
        Some(mode) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        None => Ok(()),
    }
}

/// Extracts a tar stream into `into`, refusing any entry that would escape
/// it. Owners and groups come back when running as root; modes always, the
/// tree's root included (`.` entry), and setuid/setgid bits only with their
/// owner.
pub fn extract(
    raw: &mut dyn Read,
    into: &Path,
    allow_external_symlinks: bool,
) -> Result<(), SourceError> {
    extract_as(raw, into, allow_external_symlinks, can_restore_owners())
}

fn extract_as(
    raw: &mut dyn Read,
    into: &Path,
    allow_external_symlinks: bool,
    owners: bool,
) -> Result<(), SourceError> {
    let mut archive = tar::Archive::new(raw);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut root: Option<tar::Header> = None;
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
        if name.components().all(|c| c == Component::CurDir) {
            // The tree's root: applied to the destination once it is filled.
            root = Some(entry.header().clone());
            continue;
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
        restore_owner_and_mode(&into.join(&name), entry.header(), owners).map_err(|e| {
            SourceError::io(format!("restoring the owner of `{}`", name.display()), e)
        })?;
    }
    if let Some(header) = root {
        let context = |e| SourceError::io(format!("restoring the root of {}", into.display()), e);
        restore_owner_and_mode(into, &header, owners).map_err(context)?;
        if let Ok(mtime) = header.mtime() {
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            File::open(into)
                .and_then(|d| d.set_modified(when))
                .map_err(context)?;
        }
    }
    Ok(())
}

struct StagedTree {
    staging: tempfile::TempDir,
    path: PathBuf,
}

impl Staged for StagedTree {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        options.cancel.check()?;
        swap_in(&self.staging.keep(), &self.path, options.drop_replaced)
    }
}

/// A new private folder beside `path` (on its filesystem, so that
/// [`swap_in`] is two renames), its parent created when missing.
pub(crate) fn staging_beside(path: &Path) -> Result<tempfile::TempDir, SourceError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| SourceError::io(format!("cannot create {}", parent.display()), e))?;
    tempfile::Builder::new()
        .prefix(".drp-restore-")
        .tempdir_in(parent)
        .map_err(|e| {
            SourceError::io(
                format!("cannot create a staging folder in {}", parent.display()),
                e,
            )
        })
}

/// Moves the tree at `staged` to `path`. What was at `path` is first moved
/// aside (see [`replaced_path`]) and kept unless `drop_replaced`; if the
/// move fails, it is put back. `staged` is removed on failure.
pub(crate) fn swap_in(
    staged: &Path,
    path: &Path,
    drop_replaced: bool,
) -> Result<Committed, SourceError> {
    if !path.exists() {
        return std::fs::rename(staged, path)
            .map(|_| Committed::default())
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(staged);
                SourceError::io(
                    format!("cannot move the restored tree to {}", path.display()),
                    e,
                )
            });
    }
    let aside = replaced_path(path);
    std::fs::rename(path, &aside).map_err(|e| {
        let _ = std::fs::remove_dir_all(staged);
        SourceError::io(format!("cannot move {} aside", path.display()), e)
    })?;
    if let Err(e) = std::fs::rename(staged, path) {
        // Put the original back: the destination must never be left missing.
        let _ = std::fs::rename(&aside, path);
        let _ = std::fs::remove_dir_all(staged);
        return Err(SourceError::io(
            format!("cannot move the restored tree to {}", path.display()),
            e,
        ));
    }
    let what = aside.display().to_string();
    if !drop_replaced {
        return Ok(Committed::kept(what));
    }
    std::fs::remove_dir_all(&aside).map_err(|e| {
        SourceError::io(
            format!("restored, but cannot remove the replaced tree at {what}"),
            e,
        )
    })?;
    Ok(Committed::dropped(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Archives `root` through the same path as an export, returning the bytes.
    fn archive(root: &Path) -> Vec<u8> {
        let config = DirectoryConfig {
            path: root.to_path_buf(),
            ..DirectoryConfig::default()
        };
        let mut export = Directory::new(config, Path::new("/")).export().unwrap();
        let mut bytes = Vec::new();
        export.read_to_end(&mut bytes).unwrap();
        export.finish().unwrap();
        bytes
    }

    /// `append_file_data` with a size announced in the header other than the
    /// file's: returns the stream and the file's entry data as extracted.
    fn entry_with_announced_size(actual: usize, announced: u64) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.log");
        let content: Vec<u8> = (0..actual).map(|i| (i % 251) as u8 + 1).collect();
        fs::write(&path, &content).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_QUEUED);
        let writer = std::thread::spawn(move || {
            let mut out = ChunkWriter::new(tx);
            let mut header = tar::Header::new_gnu();
            header.set_size(announced);
            header.set_mode(0o644);
            header.set_cksum();
            {
                let mut tar = tar::Builder::new(&mut out);
                tar.append_data(&mut header, "./live.log", io::empty())
                    .unwrap();
                let mut file = File::open(&path).unwrap();
                append_file_data(tar.get_mut(), &mut file, announced, &path).unwrap();
                tar.into_inner().unwrap();
            }
            out.flush().unwrap();
        });
        let mut stream = Vec::new();
        ChannelReader::new(rx).read_to_end(&mut stream).unwrap();
        writer.join().unwrap();
        let mut archive = tar::Archive::new(&stream[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        (stream, data)
    }

    /// An archive with one file of `uid`, `gid` and `mode`, and the root.
    fn archive_with_file(uid: u64, gid: u64, mode: u32) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut root = tar::Header::new_gnu();
        root.set_entry_type(tar::EntryType::Directory);
        root.set_mode(0o750);
        root.set_size(0);
        root.set_mtime(1_700_000_000);
        tar.append_data(&mut root, "./", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(4);
        tar.append_data(&mut h, "./tool", &b"tool"[..]).unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn setuid_is_dropped_when_the_owner_is_not_restored_and_the_root_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let bytes = archive_with_file(65534, 65534, 0o4755);
        let out = tempfile::tempdir().unwrap();
        extract_as(&mut &bytes[..], out.path(), false, false).unwrap();
        let mode = fs::metadata(out.path().join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o7777,
            0o755,
            "setuid kept on a file of another owner"
        );
        let root = fs::metadata(out.path()).unwrap();
        assert_eq!(root.permissions().mode() & 0o7777, 0o750);
        assert_eq!(root.mtime(), 1_700_000_000);
    }

    #[test]
    fn a_setuid_file_of_the_restoring_user_keeps_its_bit() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let bytes = archive_with_file(uid as u64, gid as u64, 0o6755);
        let out = tempfile::tempdir().unwrap();
        extract_as(&mut &bytes[..], out.path(), false, false).unwrap();
        let mode = fs::metadata(out.path().join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o6755);
    }

    #[test]
    fn a_file_that_grew_while_read_is_cut_at_its_announced_size() {
        let (stream, data) = entry_with_announced_size(3000, 1000);
        assert_eq!(data.len(), 1000);
        assert_eq!(data[999], (999 % 251) as u8 + 1);
        // Header, data padded to a block, and the two end-of-archive blocks.
        assert_eq!(stream.len(), 512 + 1024 + 1024);
    }

    #[test]
    fn a_file_that_shrank_while_read_is_padded_with_zeros() {
        let (stream, data) = entry_with_announced_size(1000, 3000);
        assert_eq!(data.len(), 3000);
        assert_eq!(data[999], (999 % 251) as u8 + 1);
        assert!(data[1000..].iter().all(|b| *b == 0));
        assert_eq!(stream.len(), 512 + 3072 + 1024);
    }

    #[test]
    fn the_same_tree_gives_the_same_archive_with_every_kind_of_entry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/deep")).unwrap();
        // Larger than a chunk, so that it spans several.
        let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 253) as u8).collect();
        fs::write(root.join("b/deep/big.bin"), &big).unwrap();
        fs::write(root.join("a.txt"), b"alpha").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let long = "n".repeat(150);
        fs::write(root.join("b").join(&long), b"long name").unwrap();
        let first = archive(root);
        assert_eq!(first, archive(root), "archiving twice gives other bytes");

        let out = tempfile::tempdir().unwrap();
        extract(&mut &first[..], out.path(), false).unwrap();
        assert_eq!(fs::read(out.path().join("b/deep/big.bin")).unwrap(), big);
        assert_eq!(fs::read(out.path().join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            fs::read_link(out.path().join("link")).unwrap(),
            Path::new("a.txt")
        );
        assert_eq!(
            fs::read(out.path().join("b").join(&long)).unwrap(),
            b"long name"
        );
        let names: Vec<String> = tar::Archive::new(&first[..])
            .entries()
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path().unwrap().into_owned();
                let normal = path.components().filter(|c| *c != Component::CurDir);
                normal.collect::<PathBuf>().display().to_string()
            })
            .collect();
        let long_path = format!("b/{long}");
        let expected = [
            "",
            "a.txt",
            "b",
            "b/deep",
            "b/deep/big.bin",
            &long_path,
            "link",
        ];
        assert_eq!(
            names, expected,
            "entries in name order, each directory before what it holds"
        );
    }
}
