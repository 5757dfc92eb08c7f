//! The repository: how recovery points and the records beside them are
//! laid out on a target. [`layout`] names every key; this module is the only
//! reader and writer of them.
//!
//! Everything needed to list and restore is in the repository itself, so a
//! bare machine with the target's address and credentials can restore.

pub mod binlog;
mod index;
pub mod layout;
mod records;
pub mod wal;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::manifest::{FORMAT, Manifest};
use std::path::Path;

use std::sync::Arc;

use crate::backend::Target;
use crate::backend::locked::Locked;
use crate::backend::paced::Paced;
use crate::config::{Policy, TargetConfig};
use crate::keys::Keys;
use crate::keys::sign::Owner;
use crate::{Error, Result};

pub use index::Summary;
pub use layout::MARKER;
pub use records::Record;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
    created_at: chrono::DateTime<Utc>,
    created_by: String,
}

/// A record that a point's digests were checked by reading it back in full
/// (by `verify` or a restore). Retention's `min_verified` counts these,
/// never a size. It only ever makes prune keep more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    pub id: String,
    pub at: chrono::DateTime<Utc>,
    /// `verify` or `restore`.
    pub by: String,
    pub raw_sha256: String,
    pub stored_sha256: String,
    pub agent: String,
}

/// What `init` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialised {
    Created,
    Existing,
}

/// A manifest that exists but cannot be trusted: reported, never loaded.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub object: String,
    pub message: String,
}

/// What a listing found for one export on one target.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Committed points, oldest first.
    pub points: Vec<Manifest>,
    pub damaged: Vec<Damaged>,
}

#[derive(Clone)]
pub struct Repository {
    pub(crate) target: Target,
    /// The signing key records are written with, the keys records are
    /// checked against, the identities points are decrypted with.
    pub(crate) keys: Arc<Keys>,
}

impl Repository {
    pub fn new(target: Target) -> Self {
        Repository {
            target,
            keys: Arc::default(),
        }
    }

    /// Until when the object at `key` is locked, on an Object Lock target.
    pub(crate) async fn locked_until(&self, key: &str) -> Result<Option<chrono::DateTime<Utc>>> {
        self.target.locked_until(key).await
    }

    /// The same repository read and written with `keys`.
    pub fn with_keys(mut self, keys: Arc<Keys>) -> Self {
        self.keys = keys;
        self
    }

    /// Opens target `name` of `policy` as the policy says to write to it:
    /// its recipients, its bandwidth limit ([`Paced`]), its Object Lock
    /// ([`Locked`]), and `keys`.
    pub async fn for_policy(policy: &Policy, name: &str, keys: &Arc<Keys>) -> Result<Repository> {
        let config = policy.targets.get(name).ok_or_else(|| {
            Error::NotFound(format!("no target `{name}` in {}", policy.path.display()))
        })?;
        let mut repo = Repository::open(name, config, &policy.base_dir).await?;
        repo.target.recipients = policy.recipients(name).into();
        let limit = policy.target_options.get(name).and_then(|o| o.limit);
        let target = Paced::wrap(repo.target, limit);
        repo.target = Locked::wrap(target, config, &policy.base_dir).await?;
        Ok(repo.with_keys(keys.clone()))
    }

    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Opens the repository on a target and checks it is reachable and of a
    /// format this build reads. A target without one is an error, never a
    /// reason to start one: a share that is not mounted looks exactly like
    /// that.
    pub async fn open(name: &str, config: &TargetConfig, base_dir: &Path) -> Result<Repository> {
        let backend = config.backend();
        if backend.has_object(base_dir, MARKER) == Some(false) {
            return Err(missing(name, &backend.location()));
        }
        let repo = Repository::new(Target::open(name, config, base_dir)?);
        repo.check().await?;
        Ok(repo)
    }

    /// Opens a target to create its repository there (`init`).
    pub async fn create(
        name: &str,
        config: &TargetConfig,
        base_dir: &Path,
    ) -> Result<(Repository, Initialised)> {
        let repo = Repository::new(Target::open(name, config, base_dir)?);
        let done = repo.init().await?;
        Ok((repo, done))
    }

    /// Checks the repository is reachable and of a format this build reads.
    pub async fn check(&self) -> Result<()> {
        match self.read_marker().await? {
            Some(_) => Ok(()),
            None => Err(missing(&self.target.name, &self.target.location)),
        }
    }

    /// Creates the repository (its marker) unless there is one already;
    /// tells which.
    async fn init(&self) -> Result<Initialised> {
        if self.read_marker().await?.is_some() {
            return Ok(Initialised::Existing);
        }
        let marker = Marker {
            format: FORMAT,
            created_at: Utc::now(),
            created_by: agent_id(),
        };
        let body = serde_json::to_vec_pretty(&marker).expect("marker serialises");
        self.target
            .op
            .write(MARKER, body)
            .await
            .map_err(|e| self.target.error("cannot create the repository", e))?;
        Ok(Initialised::Created)
    }

    async fn read_marker(&self) -> Result<Option<Marker>> {
        match self.target.op.read(MARKER).await {
            Ok(buf) => {
                let marker: Marker =
                    serde_json::from_slice(&buf.to_vec()).map_err(|e| Error::Manifest {
                        target: self.target.name.clone(),
                        object: MARKER.into(),
                        message: e.to_string(),
                    })?;
                if marker.format > FORMAT {
                    return Err(Error::target(
                        &self.target.name,
                        format!(
                            "repository format {} is newer than this drp reads ({FORMAT}); upgrade drp",
                            marker.format
                        ),
                    ));
                }
                Ok(Some(marker))
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.target.error("cannot reach the repository", e)),
        }
    }

    /// Every `(host, export)` pair in the repository (for use without a policy).
    pub async fn exports(&self) -> Result<Vec<(String, String)>> {
        let op = &self.target.op;
        let mut out = Vec::new();
        let hosts = op
            .list("")
            .await
            .map_err(|e| self.target.error("cannot list the repository", e))?;
        for h in hosts.iter().filter(|e| e.metadata().is_dir()) {
            let host = h.name().trim_end_matches('/');
            if host.is_empty() || host.starts_with('.') {
                continue;
            }
            let exports = op
                .list(&layout::host_dir(host))
                .await
                .map_err(|e| self.target.error("cannot list the repository", e))?;
            for x in exports.iter().filter(|e| e.metadata().is_dir()) {
                let export = x.name().trim_end_matches('/');
                if !export.is_empty() {
                    out.push((host.to_string(), export.to_string()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub async fn read_manifest(&self, path: &str) -> Result<Manifest> {
        tracing::debug!(target: "drp::catalogue", repository = self.name(), object = path, "manifest read");
        let buf = self
            .target
            .op
            .read(path)
            .await
            .map_err(|e| self.target.error(&format!("cannot read {path}"), e))?;
        let damaged = |message: String| Error::Manifest {
            target: self.target.name.clone(),
            object: path.to_string(),
            message,
        };
        let m: Manifest =
            serde_json::from_slice(&buf.to_vec()).map_err(|e| damaged(e.to_string()))?;
        if m.format > FORMAT {
            return Err(damaged(format!(
                "format {} is newer than this drp reads",
                m.format
            )));
        }
        let expected = layout::manifest(&m.host, &m.export, &m.id);
        if expected != path {
            return Err(damaged(format!("it describes {expected}, not this path")));
        }
        self.check_signature(Owner::Host(&m.host), path, &buf.to_vec())
            .await
            .map_err(damaged)?;
        if m.stored.object != layout::data(&m.host, &m.export, &m.id) {
            return Err(damaged(format!(
                "its data object `{}` is outside its recovery point",
                m.stored.object
            )));
        }
        Ok(m)
    }

    /// Records that `manifest`'s point was read back and both digests matched.
    pub async fn record_verified(&self, manifest: &Manifest, by: &str) -> Result<()> {
        let record = Verified {
            id: manifest.id.clone(),
            at: Utc::now(),
            by: by.to_string(),
            raw_sha256: manifest.raw.sha256.clone(),
            stored_sha256: manifest.stored.sha256.clone(),
            agent: agent_id(),
        };
        let body = serde_json::to_vec_pretty(&record).expect("record serialises");
        self.target
            .op
            .write(
                &layout::verified(&manifest.host, &manifest.export, &manifest.id),
                body,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.target.error("cannot record the verification", e))
    }

    /// The points of `points` with a verification record matching their
    /// manifest's digests.
    pub async fn verified(&self, points: &[Manifest]) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        for m in points {
            let path = layout::verified(&m.host, &m.export, &m.id);
            let Ok(buf) = self.target.op.read(&path).await else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<Verified>(&buf.to_vec())
                && v.id == m.id
                && v.raw_sha256 == m.raw.sha256
                && v.stored_sha256 == m.stored.sha256
            {
                out.insert(m.id.clone());
            }
        }
        out
    }

    /// Commits a recovery point by writing its manifest, after checking that
    /// the data object is complete.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let op = &self.target.op;
        let meta = op.stat(&manifest.stored.object).await.map_err(|e| {
            self.target
                .error("the data object vanished before commit", e)
        })?;
        if meta.content_length() != manifest.stored.size {
            return Err(Error::target(
                &self.target.name,
                format!(
                    "data object {} holds {} bytes, {} were sent; not committed",
                    manifest.stored.object,
                    meta.content_length(),
                    manifest.stored.size
                ),
            ));
        }
        // On an Object Lock target, the data is locked before the point
        // exists, and its records as soon as they do.
        self.target.protect(&manifest.stored.object).await?;
        let body = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        let path = layout::manifest(&manifest.host, &manifest.export, &manifest.id);
        self.write(&path, body, "cannot write the manifest").await?;
        self.target.protect(&path).await?;
        if self.keys.signer.is_some() {
            self.target.protect(&layout::signature(&path)).await?;
        }
        // The point exists from here; the index follows it.
        if let Err(e) = self.index_commit(manifest).await {
            tracing::warn!(
                repository = self.name(),
                "the catalogue index of {}/{} is behind: {e}",
                manifest.host,
                manifest.export
            );
        }
        Ok(())
    }

    /// Checks the detached signature of the record at `key` (when this
    /// reader requires signatures): the reason it is refused, otherwise.
    pub(super) async fn check_signature(
        &self,
        owner: Owner<'_>,
        key: &str,
        bytes: &[u8],
    ) -> std::result::Result<(), String> {
        if !self.keys.trust.required() {
            return Ok(());
        }
        let sig = match self.target.op.read(&layout::signature(key)).await {
            Ok(b) => Some(b.to_vec()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("its signature cannot be read: {e}")),
        };
        self.keys.trust.check(owner, key, bytes, sig.as_deref())
    }
}

impl Repository {
    /// Removes a point from the repository's committed set: its manifest
    /// first (from then on it is not listed or restored), then its
    /// verification record. Its data object is removed with
    /// [`Repository::delete_object`], or by the next prune as an orphan.
    pub async fn uncommit(&self, host: &str, export: &str, id: &str) -> Result<()> {
        let manifest = layout::manifest(host, export, id);
        self.target
            .op
            .delete(&manifest)
            .await
            .map_err(|e| self.target.error(&format!("cannot delete {manifest}"), e))?;
        for key in [
            layout::signature(&manifest),
            layout::verified(host, export, id),
        ] {
            let _ = self.target.op.delete(&key).await;
        }
        Ok(())
    }

    /// Deletes one object (a data object, an orphan, a temporary file).
    pub async fn delete_object(&self, key: &str) -> Result<()> {
        self.target
            .op
            .delete(key)
            .await
            .map_err(|e| self.target.error(&format!("cannot delete {key}"), e))
    }

    /// The data objects of one export, as `(id, key)`, committed or not.
    pub async fn data_objects(&self, host: &str, export: &str) -> Result<Vec<(String, String)>> {
        let dir = layout::data_dir(host, export);
        let listed = match crate::backend::local::list_files(&self.target.op, &dir, false).await {
            Some(files) => files.map(|f| f.into_iter().map(|(key, _)| key).collect()),
            None => self.target.op.list(&dir).await.map(|entries| {
                entries
                    .into_iter()
                    .filter(|e| e.metadata().is_file())
                    .map(|e| e.path().to_string())
                    .collect::<Vec<_>>()
            }),
        };
        let keys = match listed {
            Ok(keys) => keys,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.target.error("cannot list data objects", e)),
        };
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                let name = key.rsplit('/').next().unwrap_or_default();
                Some((layout::data_id(name)?.to_string(), key))
            })
            .collect())
    }

    /// Partial writes left by interrupted runs (local targets), with when
    /// each was last written to.
    pub async fn temporary_files(&self) -> Vec<(String, Option<chrono::DateTime<Utc>>)> {
        let Ok(entries) = self.target.op.list(layout::TMP_DIR).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.into_iter().filter(|e| e.metadata().is_file()) {
            let path = entry.path().to_string();
            let modified = self
                .target
                .op
                .stat(&path)
                .await
                .ok()
                .and_then(|m| m.last_modified())
                .and_then(|t| {
                    chrono::DateTime::from_timestamp_millis(t.into_inner().as_millisecond())
                });
            out.push((path, modified));
        }
        out
    }

    /// Writes a record, after its signature when this host signs: a
    /// record is never visible unsigned to readers that require signatures.
    async fn write(&self, key: &str, body: Vec<u8>, what: &str) -> Result<()> {
        if let Some(signer) = &self.keys.signer {
            let sig = serde_json::to_vec(&signer.sign(key, &body)).expect("signature serialises");
            self.put_whole(&layout::signature(key), sig)
                .await
                .map_err(|e| self.target.error(what, e))?;
        }
        self.put_whole(key, body)
            .await
            .map_err(|e| self.target.error(what, e))
    }

    /// Writes `body` at `key` so that no reader, nor a kill midway, ever
    /// leaves a partial record there: on targets whose writes are not seen
    /// whole, through a temporary file renamed into place.
    pub(crate) async fn put_whole(&self, key: &str, body: Vec<u8>) -> opendal::Result<()> {
        let op = &self.target.op;
        if self.target.atomic_writes {
            return op.write(key, body).await.map(|_| ());
        }
        let tmp = format!("{}{:016x}.part", layout::TMP_DIR, rand::random::<u64>());
        op.write(&tmp, body).await?;
        if let Err(e) = op.rename(&tmp, key).await {
            // SFTP's rename refuses to replace: a record rewritten in place.
            let replaced = async {
                op.delete(key).await?;
                op.rename(&tmp, key).await
            };
            if replaced.await.is_err() {
                let _ = op.delete(&tmp).await;
                return Err(e);
            }
        }
        Ok(())
    }
}

fn missing(name: &str, location: &str) -> Error {
    Error::NotFound(format!(
        "no drp repository at {location} (target `{name}`): if it is a mounted share, it may not be mounted; \
         to start a new repository there, run `drp-agent init --policy FILE --target {name}`"
    ))
}

pub fn agent_id() -> String {
    format!("drp {}", env!("CARGO_PKG_VERSION"))
}

/// Opens the targets of an export; unreachable ones are reported, not fatal.
pub async fn open_targets(
    policy: &crate::config::Policy,
    names: &[String],
) -> Vec<(String, crate::Result<Repository>)> {
    let keys = policy.read_keys().map(std::sync::Arc::new);
    let mut out = Vec::new();
    for name in names {
        let opened = match &keys {
            Ok(keys) => Repository::for_policy(policy, name, keys).await,
            Err(e) => Err(crate::Error::Usage(e.to_string())),
        };
        out.push((name.clone(), opened));
    }
    out
}

/// Opens the targets of an export: the reachable repositories, and the
/// errors of the others.
pub async fn open_reachable(
    policy: &crate::config::Policy,
    names: &[String],
) -> (Vec<Repository>, Vec<crate::Error>) {
    let mut repos = Vec::new();
    let mut unreachable = Vec::new();
    for (_, opened) in open_targets(policy, names).await {
        match opened {
            Ok(r) => repos.push(r),
            Err(e) => unreachable.push(e),
        }
    }
    (repos, unreachable)
}
