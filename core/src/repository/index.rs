//! The catalogue's index: one per export and target, so that listing the
//! points of an export costs a few reads whatever their number.
//!
//! The manifests remain the truth; the index is a cache of them that may be
//! behind, ahead (a point deleted by a prune it raced) or lost. It is a
//! small head (`index/head.json`, signed like a manifest when this host
//! signs) naming immutable segments, each a zstd JSON array of manifests
//! with its digest in the head. A commit appends a segment holding the new
//! manifest and merges the newest segments while the one before is no
//! larger (a binary counter: at most log2(points) + 1 segments, and a
//! commit rewrites few entries on average).
//!
//! A reader lists the manifest prefix (one request per 1,000 keys on S3),
//! reads the head and its segments at once, takes from the index every
//! listed manifest it holds, reads only the others, and drops the entries
//! whose manifest is gone. A head that is missing, unreadable or, for a
//! reader that requires signatures, not signed by the host's trusted key
//! is ignored: every manifest is read, as before there was an index.
//! Prune and `index rebuild` rewrite it whole from what they read.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Error, Listing, Repository, Result, layout};
use crate::keys::sign::Owner;
use crate::manifest::{FORMAT, Manifest};

/// Reads issued at once when manifests are read one by one.
const CONCURRENT_READS: usize = 32;
const HEAD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    format: u32,
    host: String,
    export: String,
    updated_at: DateTime<Utc>,
    segments: Vec<SegmentRef>,
}

/// A segment's entry: a manifest, and the size of its object as written
/// (a listed manifest of another size is read, not taken from the index).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    size: u64,
    manifest: Manifest,
}

impl Entry {
    fn of(m: &Manifest) -> Entry {
        Entry {
            size: serde_json::to_vec_pretty(m).map_or(0, |b| b.len() as u64),
            manifest: m.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentRef {
    key: String,
    /// SHA-256 of the stored (compressed) segment.
    sha256: String,
    count: usize,
    /// The greatest point id in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest: Option<DateTime<Utc>>,
}

/// What the index says of an export without reading its segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub points: usize,
    /// The newest consistency time.
    pub newest: Option<DateTime<Utc>>,
}

/// What reading the catalogue cost, for `--debug` and the tests.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    listed: usize,
    from_index: usize,
    read: usize,
    dropped: usize,
}

impl Head {
    fn max_id(&self) -> Option<&str> {
        self.segments
            .iter()
            .filter_map(|s| s.max_id.as_deref())
            .max()
    }
}

impl Repository {
    /// Lists the committed points of one export: the index where it holds
    /// a listed manifest, the manifest itself otherwise.
    pub async fn list(&self, host: &str, export: &str) -> Result<Listing> {
        let (keys, indexed) = tokio::join!(self.manifest_keys(host, export), async {
            match self.read_head(host, export).await {
                Some(head) => self.read_segments(host, export, &head).await.0,
                None => HashMap::new(),
            }
        });
        let keys = keys?;
        let mut cost = Cost {
            listed: keys.len(),
            ..Cost::default()
        };
        let mut listing = Listing::default();
        let mut to_read = Vec::new();
        let mut indexed = indexed;
        for (key, size) in keys {
            match layout::manifest_id(key.rsplit('/').next().unwrap_or_default())
                .and_then(|id| indexed.remove(id))
            {
                Some(e) if e.size == size => listing.points.push(e.manifest),
                _ => to_read.push(key),
            }
        }
        cost.from_index = listing.points.len();
        cost.dropped = indexed.len();
        cost.read = to_read.len();
        for (_, read) in self.read_manifests(to_read).await {
            match read {
                Ok(m) => listing.points.push(m),
                Err(Error::Manifest {
                    object, message, ..
                }) => listing.damaged.push(super::Damaged { object, message }),
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(
            target: "drp::catalogue",
            repository = self.name(),
            host,
            export,
            listed = cost.listed,
            from_index = cost.from_index,
            manifests_read = cost.read,
            dropped = cost.dropped,
            "catalogue read"
        );
        listing.points.sort_by(|a, b| {
            a.consistency_time
                .cmp(&b.consistency_time)
                .then(a.id.cmp(&b.id))
        });
        Ok(listing)
    }

    /// The number of points and the newest, from the index's head (and the
    /// manifests newer than it knows, where the target lists from a key):
    /// what a backup records in the host's state. Without an index, the
    /// listing's.
    pub async fn summary(&self, host: &str, export: &str) -> Result<Summary> {
        let Some(head) = self.read_head(host, export).await else {
            let listing = self.list(host, export).await?;
            return Ok(Summary {
                points: listing.points.len(),
                newest: listing.points.last().map(|m| m.consistency_time),
            });
        };
        let mut summary = Summary {
            points: head.segments.iter().map(|s| s.count).sum(),
            newest: head.segments.iter().filter_map(|s| s.newest).max(),
        };
        for (_, read) in self.newer_manifests(host, export, &head, None).await {
            if let Ok(m) = read {
                summary.points += 1;
                summary.newest = summary.newest.max(Some(m.consistency_time));
            }
        }
        Ok(summary)
    }

    /// Re-derives the index of one export from its manifests (`index
    /// rebuild`, and a commit that finds none).
    pub async fn rebuild_index(&self, host: &str, export: &str) -> Result<Listing> {
        let keys = self.manifest_keys(host, export).await?;
        let keys = keys.into_iter().map(|(k, _)| k).collect();
        let mut listing = Listing::default();
        for (_, read) in self.read_manifests(keys).await {
            match read {
                Ok(m) => listing.points.push(m),
                Err(Error::Manifest {
                    object, message, ..
                }) => listing.damaged.push(super::Damaged { object, message }),
                Err(e) => return Err(e),
            }
        }
        listing.points.sort_by(|a, b| {
            a.consistency_time
                .cmp(&b.consistency_time)
                .then(a.id.cmp(&b.id))
        });
        self.replace_index(host, export, &listing.points).await?;
        Ok(listing)
    }

    /// Writes the index of one export as exactly `points` (prune, after
    /// deleting; a rebuild), with the manifests committed meanwhile that a
    /// listing from a key finds.
    pub(crate) async fn replace_index(
        &self,
        host: &str,
        export: &str,
        points: &[Manifest],
    ) -> Result<()> {
        let mut all = points.to_vec();
        if let Some(max) = points.iter().map(|m| m.id.clone()).max() {
            let head = Head {
                format: HEAD_FORMAT,
                host: host.into(),
                export: export.into(),
                updated_at: Utc::now(),
                segments: vec![SegmentRef {
                    key: String::new(),
                    sha256: String::new(),
                    count: 0,
                    max_id: Some(max),
                    newest: None,
                }],
            };
            let known: HashSet<&str> = points.iter().map(|m| m.id.as_str()).collect();
            let newer: Vec<Manifest> = self
                .newer_manifests(host, export, &head, None)
                .await
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .filter(|m| !known.contains(m.id.as_str()))
                .collect();
            all.extend(newer);
        }
        let segment = self.write_segment(host, export, &all).await?;
        self.write_head(host, export, vec![segment]).await
    }

    /// Adds a committed manifest to its export's index, with the manifests
    /// another writer committed since (where the target lists from a key);
    /// rebuilds the index when there is none or a segment is gone. A
    /// failure leaves the index behind, never the point uncommitted.
    pub(crate) async fn index_commit(&self, manifest: &Manifest) -> Result<()> {
        let (host, export) = (manifest.host.as_str(), manifest.export.as_str());
        let Some(head) = self.read_head(host, export).await else {
            return self.rebuild_index(host, export).await.map(|_| ());
        };
        let mut new = vec![manifest.clone()];
        let own = layout::manifest(host, export, &manifest.id);
        for (_, read) in self.newer_manifests(host, export, &head, Some(&own)).await {
            if let Ok(m) = read {
                new.push(m);
            }
        }
        let mut segments = head.segments;
        segments.push(self.write_segment(host, export, &new).await?);
        while segments.len() >= 2
            && segments[segments.len() - 2].count <= segments[segments.len() - 1].count
        {
            let last = segments.pop().expect("two segments");
            let before = segments.pop().expect("two segments");
            let mut merged = Vec::with_capacity(before.count + last.count);
            for s in [&before, &last] {
                match self.read_segment(host, export, s).await {
                    Ok(entries) => merged.extend(entries),
                    Err(why) => {
                        tracing::warn!(
                            repository = self.name(),
                            "the index of {host}/{export} is rebuilt: {why}"
                        );
                        return self.rebuild_index(host, export).await.map(|_| ());
                    }
                }
            }
            let mut seen = HashSet::new();
            merged.retain(|e: &Entry| seen.insert(e.manifest.id.clone()));
            segments.push(self.write_entries(host, export, &merged).await?);
        }
        self.write_head(host, export, segments).await
    }

    /// The keys of every manifest of an export, with their sizes.
    async fn manifest_keys(&self, host: &str, export: &str) -> Result<Vec<(String, u64)>> {
        let dir = layout::manifests_dir(host, export);
        let listed = match crate::backend::local::list_files(&self.target.op, &dir, true).await {
            Some(files) => files,
            None => self.target.op.list(&dir).await.map(|entries| {
                entries
                    .into_iter()
                    .map(|e| (e.path().to_string(), e.metadata().content_length()))
                    .collect()
            }),
        };
        let entries = match listed {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.target.error("cannot list recovery points", e)),
        };
        Ok(entries
            .into_iter()
            .filter(|(key, _)| key.ends_with(".json"))
            .collect())
    }

    /// The manifests committed after the newest point the index holds,
    /// where the target lists from a key (S3); elsewhere none (readers list
    /// every key, and prune rewrites the index whole).
    async fn newer_manifests(
        &self,
        host: &str,
        export: &str,
        head: &Head,
        except: Option<&str>,
    ) -> Vec<(String, Result<Manifest>)> {
        let op = &self.target.op;
        if !op.info().capability().list_with_start_after {
            return Vec::new();
        }
        let dir = layout::manifests_dir(host, export);
        let lister = match head.max_id() {
            Some(id) => {
                op.list_with(&dir)
                    .start_after(&layout::manifest(host, export, id))
                    .await
            }
            None => op.list(&dir).await,
        };
        let keys = match lister {
            Ok(entries) => entries
                .into_iter()
                .map(|e| e.path().to_string())
                .filter(|p| p.ends_with(".json") && Some(p.as_str()) != except)
                .collect(),
            Err(_) => Vec::new(),
        };
        self.read_manifests(keys).await
    }

    /// Reads manifests, [`CONCURRENT_READS`] at once.
    async fn read_manifests(&self, keys: Vec<String>) -> Vec<(String, Result<Manifest>)> {
        futures::stream::iter(keys)
            .map(|key| async move {
                let read = self.read_manifest(&key).await;
                (key, read)
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await
    }

    /// The head of an export's index, when there is one this reader trusts.
    async fn read_head(&self, host: &str, export: &str) -> Option<Head> {
        let key = layout::index_head(host, export);
        let bytes = match self.target.op.read(&key).await {
            Ok(b) => b.to_vec(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    repository = self.name(),
                    "index of {host}/{export} not read: {e}"
                );
                return None;
            }
        };
        let ignored = |why: String| {
            tracing::warn!(
                repository = self.name(),
                "the index of {host}/{export} is ignored ({why}); every manifest is read instead, and `drp-agent index rebuild` writes a new one"
            );
        };
        if let Err(why) = self.check_signature(Owner::Host(host), &key, &bytes).await {
            ignored(why);
            return None;
        }
        match serde_json::from_slice::<Head>(&bytes) {
            Ok(h) if h.format <= HEAD_FORMAT && h.host == host && h.export == export => {
                let dir = layout::index_dir(host, export);
                if h.segments.iter().all(|s| s.key.starts_with(&dir)) {
                    Some(h)
                } else {
                    ignored("a segment outside the index".into());
                    None
                }
            }
            Ok(_) => {
                ignored("it describes another export or a newer format".into());
                None
            }
            Err(e) => {
                ignored(e.to_string());
                None
            }
        }
    }

    /// Every entry of the head's segments, by id, read at once; a segment
    /// that cannot be read or does not match its digest is left out (its
    /// manifests are read instead). The flag says whether all were read.
    async fn read_segments(
        &self,
        host: &str,
        export: &str,
        head: &Head,
    ) -> (HashMap<String, Entry>, bool) {
        let reads = futures::future::join_all(
            head.segments
                .iter()
                .map(|s| self.read_segment(host, export, s)),
        )
        .await;
        let mut out = HashMap::new();
        let mut whole = true;
        for read in reads {
            match read {
                Ok(entries) => out.extend(entries.into_iter().map(|e| (e.manifest.id.clone(), e))),
                Err(why) => {
                    whole = false;
                    tracing::warn!(repository = self.name(), "index of {host}/{export}: {why}");
                }
            }
        }
        (out, whole)
    }

    async fn read_segment(
        &self,
        host: &str,
        export: &str,
        s: &SegmentRef,
    ) -> std::result::Result<Vec<Entry>, String> {
        let stored = self
            .target
            .op
            .read(&s.key)
            .await
            .map_err(|e| format!("segment {} cannot be read: {e}", s.key))?
            .to_vec();
        if hex::encode(Sha256::digest(&stored)) != s.sha256 {
            return Err(format!("segment {} does not match its digest", s.key));
        }
        let json = zstd::decode_all(stored.as_slice())
            .map_err(|e| format!("segment {} is not zstd: {e}", s.key))?;
        let entries: Vec<Entry> = serde_json::from_slice(&json)
            .map_err(|e| format!("segment {} is not a list of manifests: {e}", s.key))?;
        // The checks a manifest read passes, but its signature (the head's
        // signature covers the segment's digest).
        let stray = entries.iter().map(|e| &e.manifest).find(|m| {
            m.format > FORMAT
                || m.host != host
                || m.export != export
                || m.stored.object != layout::data(host, export, &m.id)
        });
        match stray {
            Some(m) => Err(format!(
                "segment {} holds an entry outside its export ({})",
                s.key, m.id
            )),
            None => Ok(entries),
        }
    }

    async fn write_segment(
        &self,
        host: &str,
        export: &str,
        manifests: &[Manifest],
    ) -> Result<SegmentRef> {
        let entries: Vec<Entry> = manifests.iter().map(Entry::of).collect();
        self.write_entries(host, export, &entries).await
    }

    async fn write_entries(
        &self,
        host: &str,
        export: &str,
        entries: &[Entry],
    ) -> Result<SegmentRef> {
        let json = serde_json::to_vec(entries).expect("manifests serialise");
        let stored = zstd::encode_all(json.as_slice(), 3)
            .map_err(|e| Error::io("cannot compress the index", e))?;
        let now = Utc::now();
        let name = format!(
            "{}-{:016x}",
            now.format("%Y%m%dT%H%M%SZ"),
            rand::random::<u64>()
        );
        let key = layout::index_segment(host, export, &name);
        let sha256 = hex::encode(Sha256::digest(&stored));
        self.put_whole(&key, stored)
            .await
            .map_err(|e| self.target.error("cannot write the index", e))?;
        Ok(SegmentRef {
            key,
            sha256,
            count: entries.len(),
            max_id: entries.iter().map(|e| e.manifest.id.clone()).max(),
            newest: entries.iter().map(|e| e.manifest.consistency_time).max(),
        })
    }

    async fn write_head(&self, host: &str, export: &str, segments: Vec<SegmentRef>) -> Result<()> {
        let head = Head {
            format: HEAD_FORMAT,
            host: host.into(),
            export: export.into(),
            updated_at: Utc::now(),
            segments,
        };
        let body = serde_json::to_vec_pretty(&head).expect("index head serialises");
        self.write(
            &layout::index_head(host, export),
            body,
            "cannot write the index",
        )
        .await
    }

    /// Index segments that the head no longer names, written before
    /// `before` (younger ones may belong to a commit in progress): what
    /// prune removes.
    pub(crate) async fn stale_index_segments(
        &self,
        host: &str,
        export: &str,
        before: DateTime<Utc>,
    ) -> Vec<String> {
        let Some(head) = self.read_head(host, export).await else {
            return Vec::new();
        };
        let named: HashSet<&str> = head.segments.iter().map(|s| s.key.as_str()).collect();
        let Ok(entries) = self.target.op.list(&layout::index_dir(host, export)).await else {
            return Vec::new();
        };
        entries
            .into_iter()
            .map(|e| e.path().to_string())
            .filter(|k| k.ends_with(".zst") && !named.contains(k.as_str()))
            .filter(|k| {
                let name = k.rsplit('/').next().unwrap_or_default();
                written_at(name).is_some_and(|t| t < before)
            })
            .collect()
    }

    /// Reads `m`'s manifest again and returns it as stored: a point found
    /// through the index is trusted for a restore only once its own
    /// manifest is read (and its signature checked, where required).
    pub async fn confirm(&self, m: &Manifest) -> Result<Manifest> {
        self.read_manifest(&layout::manifest(&m.host, &m.export, &m.id))
            .await
    }
}

/// When a segment (`<time>-<rand>.zst`) was written.
fn written_at(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

impl Repository {
    /// Copies `template` into `count` points, each `every` before the
    /// last, starting before `from`: its data object copied to each
    /// point's own key and a manifest written (signed when this host signs)
    /// through the commit's write. For benchmarks of large catalogues; the
    /// index is left to the caller to rebuild.
    pub async fn fill(
        &self,
        template: &Manifest,
        count: usize,
        from: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<usize> {
        let (host, export) = (template.host.as_str(), template.export.as_str());
        let made: Vec<Result<()>> = futures::stream::iter(1..=count)
            .map(|i| async move {
                let at = from - every * i as i32;
                let mut m = template.clone();
                m.id = crate::manifest::new_id(at);
                m.consistency_time = at;
                m.started_at = at;
                m.finished_at = at;
                m.stored.object = layout::data(host, export, &m.id);
                self.target
                    .op
                    .copy(&template.stored.object, &m.stored.object)
                    .await
                    .map_err(|e| self.target.error("cannot copy a data object", e))?;
                let body = serde_json::to_vec_pretty(&m).expect("manifest serialises");
                self.write(
                    &layout::manifest(host, export, &m.id),
                    body,
                    "cannot write the manifest",
                )
                .await
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;
        let failed = made.iter().filter(|r| r.is_err()).count();
        match made.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(Error::Failed(format!(
                "{failed} of {count} points not made: {e}"
            ))),
            None => Ok(count),
        }
    }
}

impl Repository {
    /// The points of an export with a verification record, from one
    /// listing (the records themselves are read by [`Repository::verified`]).
    pub async fn verification_records(&self, host: &str, export: &str) -> HashSet<String> {
        let dir = layout::verified_dir(host, export);
        let Ok(entries) = self.target.op.list(&dir).await else {
            return HashSet::new();
        };
        entries
            .iter()
            .filter_map(|e| layout::manifest_id(e.name()).map(str::to_string))
            .collect()
    }
}
