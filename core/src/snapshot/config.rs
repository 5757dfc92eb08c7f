//! What the policy declares under `snapshots:`: one variant, and one config
//! struct, per provider. This enum is the registry of providers: the
//! compiler checks every `match` on it, and [`SnapshotConfig::kind`] is the
//! one place a kind is written as text outside serde's tag.

use serde::Deserialize;

use super::{btrfs, directory, lvm, qcow2};
use crate::config::HumanDuration;

/// What the policy declares under `snapshots:`. One variant per provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SnapshotConfig {
    /// A btrfs subvolume: read-only snapshots in place.
    Btrfs(btrfs::BtrfsConfig),
    /// A qcow2 disk image: internal snapshots with `qemu-img`.
    Qcow2(qcow2::Qcow2Config),
    /// An LVM logical volume, thin or classic: a snapshot LV.
    Lvm(lvm::LvmConfig),
    /// A directory archived to the policy's targets (any filesystem).
    Directory(directory::DirectorySnapConfig),
    /// An EBS volume (EC2 API).
    Ebs(EbsConfig),
    /// An RDS instance (RDS API).
    Rds(RdsConfig),
}

impl SnapshotConfig {
    /// The provider's name, as written after `kind:` and recorded in sets.
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotConfig::Btrfs(_) => "btrfs",
            SnapshotConfig::Qcow2(_) => "qcow2",
            SnapshotConfig::Lvm(_) => "lvm",
            SnapshotConfig::Directory(_) => "directory",
            SnapshotConfig::Ebs(_) => "ebs",
            SnapshotConfig::Rds(_) => "rds",
        }
    }
}

// The AWS configs live here rather than in `ebs.rs` and `rds.rs`, which are
// compiled only with the `aws` feature: a policy declaring them must parse
// (and be refused at use, not at load) in a build without it.
//
// Their shared keys (`region`, `endpoint`, `wait_timeout`) are listed in
// each struct instead of being flattened from a common one: serde cannot
// deny unknown fields through `#[serde(flatten)]`, and a typo in a snapshot
// config must be an error, as everywhere else in a policy.

/// An EBS volume, reached as for AWS itself (region, credentials from the
/// environment or profile), with an optional endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsConfig {
    pub volume_id: String,
    pub region: String,
    /// An endpoint other than AWS's (a test emulator, a private endpoint).
    pub endpoint: Option<String>,
    /// How long to wait for the snapshot or restore to complete.
    #[serde(default = "default_wait")]
    pub wait_timeout: HumanDuration,
}

/// An RDS instance, reached as for AWS itself (region, credentials from the
/// environment or profile), with an optional endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsConfig {
    pub instance: String,
    pub region: String,
    /// An endpoint other than AWS's (a test emulator, a private endpoint).
    pub endpoint: Option<String>,
    /// How long to wait for the snapshot or restore to complete.
    #[serde(default = "default_wait")]
    pub wait_timeout: HumanDuration,
}

fn default_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 60))
}

#[cfg(test)]
mod tests {
    use super::SnapshotConfig;
    use crate::config::Policy;

    const HEAD: &str = "host: h\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  a:\n    source: {kind: sqlite, path: a.db}\n    targets: [nas]\nsnapshots:\n";

    /// Before the AWS configs listed their keys, `AwsConfig<EbsTarget>`
    /// flattened the volume into the shared settings: the flatten collected
    /// every key it did not know and dropped it, so this policy loaded with
    /// `wait_timout` ignored and the default 30-minute timeout in force.
    #[test]
    fn a_typo_in_an_ebs_snapshot_is_refused_with_its_key_and_position() {
        let text = format!(
            "{HEAD}  vol:\n    kind: ebs\n    volume_id: vol-1\n    region: eu-west-1\n    wait_timout: 5m\n"
        );
        let err = Policy::parse(std::path::Path::new("p.yaml"), &text)
            .expect_err("a typo'd key must be refused");
        let [d] = err.diagnostics.as_slice() else {
            panic!("one diagnostic expected: {err:?}");
        };
        assert_eq!(d.key, "snapshots.vol.wait_timout");
        assert_eq!((d.line, d.column), (13, 5));
        assert!(
            d.message.contains("unknown field `wait_timout`"),
            "{}",
            d.message
        );
        assert!(
            d.hint
                .as_deref()
                .is_some_and(|h| h.contains("wait_timeout")),
            "{:?}",
            d.hint
        );
    }

    #[test]
    fn a_typo_in_an_rds_snapshot_is_refused() {
        let text = format!(
            "{HEAD}  db:\n    kind: rds\n    instance: db-1\n    region: eu-west-1\n    endpont: http://127.0.0.1:4566\n"
        );
        let err = Policy::parse(std::path::Path::new("p.yaml"), &text).unwrap_err();
        assert_eq!(err.diagnostics[0].key, "snapshots.db.endpont");
    }

    #[test]
    fn every_kind_reads_back_as_the_name_it_is_declared_by() {
        for (kind, keys) in [
            ("btrfs", "subvolume: /srv/data"),
            ("qcow2", "image: /var/lib/vm.qcow2"),
            ("lvm", "volume: vg0/data"),
            ("directory", "path: /srv/www"),
            ("ebs", "volume_id: vol-1, region: eu-west-1"),
            ("rds", "instance: db-1, region: eu-west-1"),
        ] {
            let c: SnapshotConfig =
                serde_yaml_ng::from_str(&format!("{{kind: {kind}, {keys}}}")).unwrap();
            assert_eq!(c.kind(), kind);
        }
    }
}
