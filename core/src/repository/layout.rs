//! Every key of a repository, in one place: nothing outside this module
//! builds a path into a repository.
//!
//! ```text
//! drp-repository.json                          format marker, written once
//! <host>/<export>/data/<id>.zst                data object (zstd stream)
//! <host>/<export>/manifests/<id>.json          manifest, written last = commit
//! <host>/<export>/verified/<id>.json           a full read-back matched both digests
//! <host>/<export>/index/head.json              the catalogue's index: its segments and
//!                                              their digests (a cache of the manifests)
//! <host>/<export>/index/<time>-<rand>.zst      an index segment: manifests (zstd JSON)
//! <host>/<export>/wal/cluster.json             the cluster the archive belongs to
//! <host>/<export>/wal/<TTTTTTTTXXXXXXXX>/<file>-<sha256>-<end>.zst
//!                                              an archived WAL file (zstd), named by
//!                                              the digest of its content and the Unix
//!                                              time its last byte was written
//! <host>/<export>/wal/history/<TTTTTTTT>.history-<sha256>-<end>.zst
//! <host>/<export>/binlog/<file>-<sha256>-<closed>.zst
//!                                              a shipped MariaDB binary log (zstd), named by
//!                                              the digest of its content and the Unix time
//!                                              the server closed it
//! <host>/<export>/binlog/<file>-<sha256>.json  its times and GTIDs
//! <host>/snapshot-sets/<set>.json              a snapshot set taken before a change
//! reports/<runbook>/<id>.json, .html           a drill's or an incident's report
//! fencing/<host>/<time>-<fenced|lifted>.json   a host fenced after a failover, or lifted
//! incidents/<host>/<time>-<service>.json       what the host's watchdog did about a service
//! .drp-tmp/                                    partial writes (local targets)
//! ```

use crate::archiving::WalFile;

/// The format marker, written by `init`.
pub const MARKER: &str = "drp-repository.json";

/// Where local targets stage partial writes before renaming them in place.
pub(crate) const TMP_DIR: &str = ".drp-tmp/";

pub(crate) const REPORTS_DIR: &str = "reports/";

pub fn data(host: &str, export: &str, id: &str) -> String {
    format!("{host}/{export}/data/{id}.zst")
}

pub fn manifest(host: &str, export: &str, id: &str) -> String {
    format!("{host}/{export}/manifests/{id}.json")
}

/// The handover page of a host (`md` or `html`).
pub(crate) fn handover(host: &str, ext: &str) -> String {
    format!("handover/{host}.{ext}")
}

/// The newest restore test of a point.
pub(crate) fn restore_test(host: &str, export: &str, id: &str) -> String {
    format!("{host}/{export}/tested/{id}.json")
}

pub(crate) fn restore_tests_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/tested/")
}

/// A fence record of `host` (`records::Fence::id`).
pub(crate) fn fence(host: &str, id: &str) -> String {
    format!("fencing/{host}/{id}.json")
}

pub(crate) fn fences_dir(host: &str) -> String {
    format!("fencing/{host}/")
}

/// An incident record of `host` (`records::Incident::id`).
pub(crate) fn incident(host: &str, id: &str) -> String {
    format!("incidents/{host}/{id}.json")
}

pub(crate) fn incidents_dir(host: &str) -> String {
    format!("incidents/{host}/")
}

/// The detached signature of the record at `key`.
pub fn signature(key: &str) -> String {
    format!("{key}.sig")
}

pub(crate) fn verified(host: &str, export: &str, id: &str) -> String {
    format!("{host}/{export}/verified/{id}.json")
}

/// The head of an export's catalogue index (`repository::index`).
pub fn index_head(host: &str, export: &str) -> String {
    format!("{host}/{export}/index/head.json")
}

pub(crate) fn index_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/index/")
}

/// A segment of the index, named by the time it was written.
pub(crate) fn index_segment(host: &str, export: &str, name: &str) -> String {
    format!("{host}/{export}/index/{name}.zst")
}

/// The id of a manifest's file name (`<id>.json`).
pub(crate) fn manifest_id(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".json")
}

pub(crate) fn verified_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/verified/")
}

pub(crate) fn data_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/data/")
}

pub(crate) fn manifests_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/manifests/")
}

pub(crate) fn host_dir(host: &str) -> String {
    format!("{host}/")
}

pub(crate) fn snapshot_set(host: &str, id: &str) -> String {
    format!("{host}/snapshot-sets/{id}.json")
}

pub(crate) fn snapshot_sets_dir(host: &str) -> String {
    format!("{host}/snapshot-sets/")
}

pub(crate) fn wal_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/wal/")
}

pub(crate) fn wal_cluster(host: &str, export: &str) -> String {
    format!("{host}/{export}/wal/cluster.json")
}

pub(crate) fn wal_folder(host: &str, export: &str, file: &WalFile) -> String {
    format!("{host}/{export}/wal/{}/", file.folder())
}

/// An archived WAL file's object: its content's digest and the time its
/// last byte was written are in the key, so a listing is the inventory.
pub(crate) fn wal_object(
    host: &str,
    export: &str,
    file: &WalFile,
    sha256: &str,
    ended: i64,
) -> String {
    format!(
        "{}{file}-{sha256}-{ended}.zst",
        wal_folder(host, export, file)
    )
}

/// The file, digest and end time a WAL object's name (`<file>-<sha>-<end>.zst`) gives.
pub(crate) fn wal_object_parts(file_name: &str) -> Option<(WalFile, &str, i64)> {
    let stem = file_name.strip_suffix(".zst")?;
    let mut parts = stem.rsplitn(3, '-');
    let ended = parts.next()?.parse().ok()?;
    let sha = parts.next()?;
    let file = WalFile::parse(parts.next()?)?;
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some((file, sha, ended))
}

pub(crate) fn binlog_dir(host: &str, export: &str) -> String {
    format!("{host}/{export}/binlog/")
}

pub(crate) fn binlog_object(
    host: &str,
    export: &str,
    name: &str,
    sha256: &str,
    closed: i64,
) -> String {
    format!("{}{name}-{sha256}-{closed}.zst", binlog_dir(host, export))
}

pub(crate) fn binlog_record(host: &str, export: &str, name: &str, sha256: &str) -> String {
    format!("{}{name}-{sha256}.json", binlog_dir(host, export))
}

/// The file name, digest and close time a binary log object's name gives.
pub(crate) fn binlog_object_parts(file_name: &str) -> Option<(&str, &str, i64)> {
    let stem = file_name.strip_suffix(".zst")?;
    let mut parts = stem.rsplitn(3, '-');
    let closed = parts.next()?.parse().ok()?;
    let sha = parts.next()?;
    let name = parts.next()?;
    (crate::archiving::binlog::valid_name(name)
        && sha.len() == 64
        && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some((name, sha, closed))
}

/// A report's object; `ext` is `json` or `html`.
pub(crate) fn report(runbook: &str, id: &str, ext: &str) -> String {
    format!("{REPORTS_DIR}{runbook}/{id}.{ext}")
}

/// The id of a data object's file name (`<id>.zst`).
pub(crate) fn data_id(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".zst")
}
