//! Incremental tree exports (`mode: incremental`): each run is a restic
//! snapshot in every target's restic repository (content-defined chunks,
//! deduplicated across runs and hosts, compressed, encrypted with the
//! repository key), and drp's own point is a small descriptor stored and
//! committed as every point is, its manifest naming the snapshot. So
//! `list`, `verify`, retention, restore tests and reports see an ordinary
//! point, and the restic CLI reads the repository without drp.
//!
//! A restore asks restic for the snapshot (or some of its paths) into a
//! folder staged beside the destination, checks what came back, and swaps it
//! in with [`super::swap_in`], keeping what it replaced.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::restic::{Key, Repo, Restic};
use super::{Directory, DirectoryConfig, Mode, StagedTree, escapes, staging_beside};
use crate::backend::TargetConfig;
use crate::manifest::Incremental;
use crate::progress::{Event, Reporter};
use crate::source::{Cancel, ExportInfo, ExportStream, SourceConfig, SourceError, Staged};

/// The first line of a point's descriptor.
const FORMAT: &str = "drp-restic/1";

/// What drp stores as an incremental point's data object: which point it
/// is, and the tree root's own metadata (restic keeps the entries below it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    pub format: String,
    pub point: String,
    pub host: String,
    pub export: String,
    pub root: RootMeta,
}

/// The tree root's mode, owner and modification time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// The snapshot a restore reads, in the repository of the target the point
/// was found on.
#[derive(Debug, Clone)]
pub struct At {
    pub repo: Repo,
    pub snapshot: String,
}

impl At {
    /// The snapshot `point` names, in the restic repository of `target`.
    pub fn of(
        point: &Incremental,
        target: &TargetConfig,
        base_dir: &Path,
    ) -> Result<At, SourceError> {
        if point.engine != "restic" {
            return Err(SourceError::Invalid(format!(
                "this point was written by `{}`, which this drp does not read",
                point.engine
            )));
        }
        // Read from a repository: only a snapshot id, never an argument.
        if point.snapshot.len() != 64 || !point.snapshot.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SourceError::Invalid(format!(
                "the manifest names `{}` as its restic snapshot, which is not a snapshot id; the point is damaged",
                point.snapshot
            )));
        }
        Ok(At {
            repo: Repo::of(target, base_dir)?,
            snapshot: point.snapshot.clone(),
        })
    }
}

/// The settings of an incremental export, when `source` is one.
pub fn settings(source: &SourceConfig) -> Option<&DirectoryConfig> {
    match source {
        SourceConfig::Directory(c) if c.mode == Mode::Incremental => Some(c),
        _ => None,
    }
}

/// The tags drp gives a point's snapshot: a restic user finds a point by
/// them, and prune finds the snapshots no point names any more.
pub fn tags(host: &str, export: &str, point: &str) -> Vec<String> {
    vec![
        "drp".into(),
        format!("drp-host={host}"),
        format!("drp-export={export}"),
        format!("drp-point={point}"),
    ]
}

/// restic's `--exclude` patterns for gitignore-style ones over the tree at
/// `root`: a pattern with a `/` other than a trailing one is anchored at
/// the tree's root; one without matches a name at any depth; a trailing `/`
/// is dropped (restic then matches files of that name too).
pub fn excludes(root: &Path, patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .map(|p| {
            let p = p.trim_end_matches('/');
            if p.contains('/') {
                format!(
                    "{}/{}",
                    root.display().to_string().trim_end_matches('/'),
                    p.trim_start_matches('/')
                )
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// What is wrong with an incremental export's settings: `(key under the
/// source, message, hint)` each. Empty for a tar export that uses none of
/// them.
pub fn problems(c: &DirectoryConfig) -> Vec<(&'static str, String, Option<String>)> {
    let mut out = Vec::new();
    if c.mode == Mode::Tar {
        for (key, set) in [
            ("exclude", !c.exclude.is_empty()),
            ("one_file_system", c.one_file_system),
            ("key", c.key.is_some()),
        ] {
            if set {
                out.push((
                    key,
                    format!("`{key}` applies to incremental exports only"),
                    Some("add `mode: incremental`, or remove the key".into()),
                ));
            }
        }
        return out;
    }
    if c.key.is_none() {
        out.push((
            "key",
            "an incremental export needs its repository key".into(),
            Some("add `key: {file: /etc/drp/secrets/restic-key}` (a long random secret, kept off this host too)".into()),
        ));
    }
    for p in &c.exclude {
        let why = if p.trim().is_empty() {
            Some("is empty")
        } else if p.starts_with('!') {
            Some("is a negation (`!`), which restic's patterns do not read as gitignore does")
        } else if p.contains('\n') {
            Some("holds a line break")
        } else {
            None
        };
        if let Some(why) = why {
            out.push((
                "exclude",
                format!("exclude pattern `{p}` {why}"),
                Some("write patterns as `*.tmp`, `cache/` or `/tracks/incoming/`".into()),
            ));
        }
    }
    out
}

/// Why an incremental export cannot write to `target`, if it cannot.
pub fn target_refused(target: &TargetConfig) -> Option<String> {
    match target {
        TargetConfig::S3(c) if c.lock.is_some() => Some(
            "an incremental export cannot write to an S3 target with Object Lock: restic rewrites and deletes \
             its packs and index as it prunes, and drp cannot lock what restic writes"
                .into(),
        ),
        _ => None,
    }
}

/// The folder a restore of some paths goes to by default: beside the tree.
pub fn paths_folder(tree: &Path) -> PathBuf {
    let name = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tree".into());
    tree.with_file_name(format!(
        "{name}.drp-paths-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

/// One path of the tree given to `--path` (or a runbook's `paths:`),
/// checked: relative, inside the tree, not a pattern.
pub fn restore_path(text: &str) -> Result<String, SourceError> {
    let trimmed = text.trim_start_matches("./").trim_matches('/');
    let bad = trimmed.is_empty()
        || Path::new(trimmed)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        || trimmed.contains(['*', '?', '[', '\\']);
    if bad {
        return Err(SourceError::Invalid(format!(
            "--path `{text}` is not a path inside the tree: give a folder or file relative to the tree's root, \
             without `..` or wildcards (for example `tracks/2024/`)"
        )));
    }
    Ok(trimmed.to_string())
}

/// The descriptor stream drp stores for the point, and what the run did.
struct DescriptorStream {
    bytes: std::io::Cursor<Vec<u8>>,
    info: ExportInfo,
}

impl Read for DescriptorStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.bytes.read(buf)
    }
}

impl ExportStream for DescriptorStream {
    fn finish(mut self: Box<Self>) -> Result<ExportInfo, SourceError> {
        Ok(std::mem::take(&mut self.info))
    }
}

/// Sets the flag when dropped: a backup abandoned (a timeout, a signal)
/// stops restic.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One incremental run: a snapshot of the tree in the restic repository of
/// each target named in `targets` (policy name and settings), then the
/// point's descriptor as the export's stream. A target whose snapshot
/// failed is named in the info's `incremental` with why; it commits
/// nothing.
pub async fn export(
    config: &DirectoryConfig,
    base_dir: &Path,
    host: &str,
    export: &str,
    point: &str,
    targets: Vec<(String, TargetConfig)>,
    progress: Reporter,
) -> Result<Box<dyn ExportStream>, SourceError> {
    let root = crate::config::resolve_relative(base_dir, &config.path);
    let meta = std::fs::metadata(&root)
        .map_err(|e| SourceError::io(format!("cannot read the tree {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(SourceError::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let key = Key::of(
        config.key.as_ref().ok_or_else(|| {
            SourceError::Invalid("an incremental export needs `key:` (its repository key)".into())
        })?,
        base_dir,
    )?;
    let descriptor = Descriptor {
        format: FORMAT.into(),
        point: point.into(),
        host: host.into(),
        export: export.into(),
        root: RootMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
        },
    };
    let tags = tags(host, export, point);
    let patterns = excludes(&root, &config.exclude);
    let consistency_time = Utc::now();
    let shown = root.display().to_string();
    let cancel = CancelOnDrop(Cancel::default());
    let flag = cancel.0.clone();
    let (host, one_fs, excluded) = (
        host.to_string(),
        config.one_file_system,
        config.exclude.clone(),
    );
    let base_dir = base_dir.to_path_buf();
    let export = export.to_string();
    let (incremental, version) = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        let mut version = String::new();
        for (name, target) in targets {
            let mut run = || -> Result<Incremental, SourceError> {
                let restic = Restic::new(Repo::of(&target, &base_dir)?, key.clone())?;
                if version.is_empty() {
                    version = restic.version();
                }
                restic.ensure(&flag)?;
                progress.event(Event::Started {
                    task: format!("{export}: snapshot of {} to `{name}`", root.display()),
                    total: None,
                });
                let mut done = 0u64;
                let mut started = false;
                let summary =
                    restic.backup(&root, &host, &tags, &patterns, one_fs, &flag, &mut |s| {
                        if !started && s.total_bytes > 0 {
                            started = true;
                            progress.event(Event::Started {
                                task: format!(
                                    "{export}: {} files scanned, {} done, to `{name}`",
                                    s.total_files, s.files_done
                                ),
                                total: Some(s.total_bytes),
                            });
                        }
                        if s.bytes_done > done {
                            progress.event(Event::Advanced {
                                bytes: s.bytes_done - done,
                            });
                            done = s.bytes_done;
                        }
                    });
                progress.event(Event::Finished);
                let summary = summary?;
                let snapshot = restic.full_id(&summary.snapshot_id, &flag)?;
                Ok(Incremental {
                    engine: "restic".into(),
                    repository: restic.repo().arg.clone(),
                    snapshot,
                    files: summary.total_files_processed,
                    files_new: summary.files_new,
                    files_changed: summary.files_changed,
                    files_unmodified: summary.files_unmodified,
                    bytes_scanned: summary.total_bytes_processed,
                    bytes_added: summary.data_added,
                    excluded: excluded.clone(),
                })
            };
            let result = run();
            if let Err(SourceError::Cancelled) = result {
                return Err(SourceError::Cancelled);
            }
            out.insert(name, result.map_err(|e| e.to_string()));
        }
        Ok((out, version))
    })
    .await
    .map_err(|e| SourceError::Invalid(format!("the incremental run stopped: {e}")))??;
    drop(cancel);
    if incremental.values().all(|r| r.is_err()) {
        let why: Vec<String> = incremental
            .iter()
            .map(|(t, r)| format!("`{t}`: {}", r.as_ref().err().map_or("", |e| e.as_str())))
            .collect();
        return Err(SourceError::Invalid(format!(
            "no target took the snapshot of {shown}: {}",
            why.join("; ")
        )));
    }
    let mut bytes = serde_json::to_vec_pretty(&descriptor).expect("a descriptor serialises");
    bytes.push(b'\n');
    Ok(Box::new(DescriptorStream {
        bytes: std::io::Cursor::new(bytes),
        info: ExportInfo {
            consistency_time,
            tools: BTreeMap::from([("restic".to_string(), version)]),
            incremental,
            ..ExportInfo::default()
        },
    }))
}

/// Receives an incremental point beside `path`: restic restores the
/// snapshot (or the paths asked for) into a private folder there, what came
/// back is checked, and the folder is swapped in on commit.
pub(super) fn stage(
    dir: &Directory,
    raw: &mut dyn Read,
    path: &Path,
    at: &At,
) -> Result<Box<dyn Staged>, SourceError> {
    let mut text = Vec::new();
    (&mut *raw)
        .take(1 << 20)
        .read_to_end(&mut text)
        .map_err(|e| SourceError::io("reading the point's descriptor", e))?;
    let descriptor: Descriptor = serde_json::from_slice(&text).map_err(|e| {
        SourceError::Invalid(format!(
            "the point's descriptor is not drp's ({e}); nothing was restored"
        ))
    })?;
    std::io::copy(raw, &mut std::io::sink())
        .map_err(|e| SourceError::io("reading the point's descriptor", e))?;
    if descriptor.format != FORMAT {
        return Err(SourceError::Invalid(format!(
            "the point's descriptor is `{}`, which this drp does not read",
            descriptor.format
        )));
    }
    let key = Key::of(
        dir.config.key.as_ref().ok_or_else(|| {
            SourceError::Invalid(
                "restoring an incremental point needs the repository key: set `key:` on the export's source".into(),
            )
        })?,
        &dir.base_dir,
    )?;
    let paths = dir
        .config
        .restore_paths
        .iter()
        .map(|p| restore_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let restic = Restic::new(at.repo.clone(), key)?;
    let staging = staging_beside(path)?;
    let includes: Vec<String> = paths.iter().map(|p| format!("/{p}")).collect();
    restic.restore(&at.snapshot, staging.path(), &includes, &Cancel::default())?;
    for p in &paths {
        if std::fs::symlink_metadata(staging.path().join(p)).is_err() {
            return Err(SourceError::Invalid(format!(
                "`{p}` is not in point {}: nothing was restored",
                descriptor.point
            )));
        }
    }
    if !dir.allow_external_symlinks {
        refuse_escaping_links(staging.path())?;
    }
    if paths.is_empty() {
        apply_root(staging.path(), &descriptor.root)?;
    }
    Ok(Box::new(StagedTree {
        staging,
        path: path.to_path_buf(),
    }))
}

/// Refuses a restored tree holding a symbolic link that leads outside it
/// (before anything is swapped in).
fn refuse_escaping_links(root: &Path) -> Result<(), SourceError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SourceError::io(format!("reading {}", dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SourceError::io(format!("reading {}", dir.display()), e))?;
            let name = rel.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| SourceError::io(format!("reading {}", name.display()), e))?;
            if kind.is_dir() {
                stack.push(name);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())
                    .map_err(|e| SourceError::io(format!("reading {}", name.display()), e))?;
                if escapes(&Path::new(".").join(&name), &target) {
                    return Err(SourceError::Invalid(format!(
                        "`{}` in the snapshot is a symbolic link to `{}`, outside the destination; the restore was \
                         refused (set `allow_external_symlinks: true` on the source if the tree really has such links)",
                        name.display(),
                        target.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Gives the restored root the tree root's mode, owner (as root) and time.
fn apply_root(root: &Path, meta: &RootMeta) -> Result<(), SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let context = |e| SourceError::io(format!("restoring the root of {}", root.display()), e);
    if super::can_restore_owners() {
        std::os::unix::fs::lchown(root, Some(meta.uid), Some(meta.gid)).map_err(context)?;
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(meta.mode & 0o1777))
        .map_err(context)?;
    let when = DateTime::from_timestamp(meta.mtime, 0).unwrap_or_default();
    std::fs::File::open(root)
        .and_then(|d| d.set_modified(when.into()))
        .map_err(context)
}

/// What retention left to do in one target's restic repository: forget the
/// snapshots of the points retention deleted, and those no point names (runs
/// killed before their commit) once taken before `older_than`, then prune
/// what no snapshot references. Returns what was (or, in a dry run, would be)
/// forgotten, and the errors met.
#[allow(clippy::too_many_arguments)]
pub async fn prune(
    config: &DirectoryConfig,
    target: &TargetConfig,
    base_dir: &Path,
    host: &str,
    export: &str,
    points: HashSet<String>,
    deleted: HashSet<String>,
    older_than: DateTime<Utc>,
    dry_run: bool,
) -> (Vec<String>, Vec<String>) {
    let Some(key_ref) = config.key.clone() else {
        return (
            Vec::new(),
            vec!["the export has no `key:`; its restic repository was not pruned".into()],
        );
    };
    let (target, base_dir) = (target.clone(), base_dir.to_path_buf());
    let tags = vec![
        "drp".to_string(),
        format!("drp-host={host}"),
        format!("drp-export={export}"),
    ];
    let run = move || -> Result<Vec<String>, SourceError> {
        let cancel = Cancel::default();
        let restic = Restic::new(Repo::of(&target, &base_dir)?, Key::of(&key_ref, &base_dir)?)?;
        let listed = match restic.snapshots(&tags, &cancel) {
            Ok(l) => l,
            // No incremental run reached this target yet.
            Err(SourceError::ToolFailed { stderr, .. })
                if stderr.contains("Is there a repository")
                    || stderr.contains("does not exist") =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let gone: Vec<(String, String)> = listed
            .iter()
            .filter(|s| match s.tag("drp-point") {
                Some(p) if deleted.contains(p) => true,
                Some(p) if points.contains(p) => false,
                _ => s.time < older_than,
            })
            .map(|s| (s.id.clone(), s.tag("drp-point").unwrap_or("?").to_string()))
            .collect();
        let names = gone
            .iter()
            .map(|(id, p)| format!("restic snapshot {} (point {p})", &id[..8.min(id.len())]))
            .collect();
        if !dry_run && !gone.is_empty() {
            let ids: Vec<String> = gone.into_iter().map(|(id, _)| id).collect();
            restic.forget(&ids, &cancel)?;
            restic.prune(&cancel)?;
        }
        Ok(names)
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(names)) => (names, Vec::new()),
        Ok(Err(e)) => (Vec::new(), vec![format!("restic repository: {e}")]),
        Err(e) => (
            Vec::new(),
            vec![format!("restic repository: the prune stopped: {e}")],
        ),
    }
}

/// Reads back part of the restic repository a point lives in: `restic
/// check --read-data-subset` (its index, every snapshot's trees, and
/// `subset` of the packs' data).
pub async fn check(
    config: &DirectoryConfig,
    target: &TargetConfig,
    base_dir: &Path,
    subset: &str,
) -> Result<(), SourceError> {
    let key_ref = config
        .key
        .clone()
        .ok_or_else(|| SourceError::Invalid("the export has no `key:`".into()))?;
    let (target, base_dir, subset) = (target.clone(), base_dir.to_path_buf(), subset.to_string());
    tokio::task::spawn_blocking(move || {
        let restic = Restic::new(Repo::of(&target, &base_dir)?, Key::of(&key_ref, &base_dir)?)?;
        restic.check(&subset, &Cancel::default())
    })
    .await
    .map_err(|e| SourceError::Invalid(format!("restic check stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_patterns_become_restic_ones_anchored_at_the_tree() {
        let got = excludes(
            Path::new("/srv/music"),
            &[
                "*.tmp".into(),
                "cache/".into(),
                "/incoming/".into(),
                "a/b".into(),
            ],
        );
        assert_eq!(
            got,
            ["*.tmp", "cache", "/srv/music/incoming", "/srv/music/a/b"]
        );
    }

    #[test]
    fn a_restore_path_is_a_relative_path_inside_the_tree() {
        assert_eq!(restore_path("tracks/2024/").unwrap(), "tracks/2024");
        assert_eq!(restore_path("./a").unwrap(), "a");
        for bad in ["", "/", "../etc", "a/../../b", "*.flac", "a/[x]"] {
            assert!(restore_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_snapshot_id_read_from_a_manifest_is_only_an_id() {
        let target = TargetConfig::Local(crate::backend::local::LocalConfig {
            path: "/nas".into(),
        });
        let mut point = Incremental {
            engine: "restic".into(),
            snapshot: "a".repeat(64),
            ..Incremental::default()
        };
        assert!(At::of(&point, &target, Path::new("/")).is_ok());
        point.snapshot = "--password-command=sh".into();
        assert!(At::of(&point, &target, Path::new("/")).is_err());
    }

    #[test]
    fn incremental_keys_are_refused_on_a_tar_export_and_the_key_is_required() {
        let mut c = DirectoryConfig {
            path: "/srv".into(),
            exclude: vec!["*.tmp".into()],
            ..DirectoryConfig::default()
        };
        assert_eq!(problems(&c)[0].0, "exclude");
        c.mode = Mode::Incremental;
        assert_eq!(problems(&c)[0].0, "key");
        c.key = Some(crate::secret::SecretRef::File("/k".into()));
        c.exclude.push("!keep".into());
        assert_eq!(problems(&c).len(), 1);
    }
}
