//! LVM: a snapshot LV of a logical volume, named for its set
//! (`<vg>/<lv>-drp-<set id>`). A thin volume's snapshot takes no space up
//! front; a classic (thick) volume's needs its copy-on-write space
//! (`size`), and is invalidated by LVM when that fills.
//!
//! Rollback first keeps the state it replaces as a snapshot of its own
//! (`<lv>-drp-replaced-<time>`, thin or with the same `size`), then merges
//! the set's snapshot into the volume (`lvconvert --merge`). LVM merges at
//! once when the volume is not open; when it is (mounted, or held by a VM),
//! the merge waits for the volume's next activation, and the result says
//! so. A merged snapshot is gone: LVM folds it into the volume.
//!
//! The host's own LVM configuration applies (`lvm.conf`, or the folder
//! `LVM_SYSTEM_DIR` names).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::process::run;
use super::{Created, Member, SnapContext, SnapshotError, SnapshotProvider};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvmConfig {
    /// The logical volume, as `<volume group>/<logical volume>`.
    #[serde(deserialize_with = "volume")]
    pub volume: String,
    /// A classic volume's copy-on-write space per snapshot: a size
    /// (`2GiB`) or a share of the volume (`20%ORIGIN`). A thin volume
    /// takes none.
    pub size: Option<SnapshotSize>,
}

/// `<vg>/<lv>`, each a name LVM accepts.
fn volume<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with('-')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
    };
    match text.split_once('/') {
        Some((vg, lv)) if name_ok(vg) && name_ok(lv) => Ok(text),
        _ => Err(serde::de::Error::custom(format!(
            "`{text}` is not a logical volume: write it as `<volume group>/<logical volume>`, e.g. `vg0/data`"
        ))),
    }
}

/// The space of a classic snapshot, as `lvcreate` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSize {
    /// `-L <bytes>b`.
    Bytes(u64),
    /// `-l <n>%ORIGIN`.
    PercentOfOrigin(u32),
}

impl SnapshotSize {
    fn parse(text: &str) -> Result<SnapshotSize, String> {
        let bad =
            || format!("invalid snapshot size `{text}`: write it like 2GiB, 512MiB or 20%ORIGIN");
        let t = text.trim();
        if let Some(p) = t.strip_suffix("%ORIGIN") {
            return match p.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(SnapshotSize::PercentOfOrigin(n)),
                _ => Err(bad()),
            };
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = t.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.trim() {
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            _ => return Err(bad()),
        };
        match number.checked_mul(factor) {
            Some(0) | None => Err(bad()),
            Some(n) => Ok(SnapshotSize::Bytes(n)),
        }
    }

    /// The `lvcreate` arguments giving this size.
    fn args(&self) -> [String; 2] {
        match self {
            SnapshotSize::Bytes(n) => ["-L".into(), format!("{n}b")],
            SnapshotSize::PercentOfOrigin(p) => ["-l".into(), format!("{p}%ORIGIN")],
        }
    }
}

impl<'de> Deserialize<'de> for SnapshotSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SnapshotSize::parse(&text).map_err(serde::de::Error::custom)
    }
}

pub struct Lvm {
    vg: String,
    lv: String,
    size: Option<SnapshotSize>,
}

/// What `lvs` says of one logical volume.
#[derive(Debug, Deserialize)]
struct LvInfo {
    lv_name: String,
    segtype: String,
    origin: String,
    lv_device_open: String,
}

impl Lvm {
    pub fn new(c: &LvmConfig) -> Self {
        let (vg, lv) = c.volume.split_once('/').unwrap_or(("", &c.volume));
        Lvm {
            vg: vg.to_string(),
            lv: lv.to_string(),
            size: c.size.clone(),
        }
    }

    fn volume(&self) -> String {
        format!("{}/{}", self.vg, self.lv)
    }

    /// A set's snapshot of this volume.
    fn snapshot_name(&self, ctx: &SnapContext<'_>) -> String {
        format!("{}-drp-{}", self.lv, ctx.set_id)
    }

    /// What `lvs` reports of `vg/name`.
    async fn info(&self, name: &str) -> Result<LvInfo, SnapshotError> {
        let lv = format!("{}/{name}", self.vg);
        let out = run(
            "lvs",
            &[
                "--reportformat",
                "json",
                "-o",
                "lv_name,segtype,origin,lv_device_open",
                &lv,
            ],
        )
        .await?;
        parse_lvs(&out)?
            .into_iter()
            .find(|i| i.lv_name == name)
            .ok_or_else(|| SnapshotError::NotFound(format!("lvs does not list {lv}")))
    }

    /// Takes a snapshot of the volume named `name`: thin, or classic with
    /// the configured size.
    async fn snapshot(&self, origin: &LvInfo, name: &str) -> Result<(), SnapshotError> {
        let volume = self.volume();
        let mut args: Vec<String> = vec!["--snapshot".into(), "--name".into(), name.into()];
        if origin.segtype != "thin" {
            let Some(size) = &self.size else {
                return Err(SnapshotError::Refused(format!(
                    "{volume} is a classic (thick) logical volume: its snapshots need copy-on-write space; \
                     give the snapshot a `size` (e.g. `size: 20%ORIGIN`, or `size: 2GiB`); nothing was changed"
                )));
            };
            args.extend(size.args());
        }
        args.push(volume);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("lvcreate", &args).await.map(|_| ())
    }
}

/// The volumes of an `lvs --reportformat json` report.
fn parse_lvs(out: &str) -> Result<Vec<LvInfo>, SnapshotError> {
    #[derive(Deserialize)]
    struct Report {
        report: Vec<Part>,
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        lv: Vec<LvInfo>,
    }
    let r: Report = serde_json::from_str(out)
        .map_err(|e| SnapshotError::failed(format!("cannot read what lvs reported: {e}")))?;
    Ok(r.report.into_iter().flat_map(|p| p.lv).collect())
}

/// The kind recorded with a snapshot.
fn kind(info: &LvInfo) -> &'static str {
    if info.segtype == "thin" {
        "thin"
    } else {
        "classic"
    }
}

impl SnapshotProvider for Lvm {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            let origin = self.info(&self.lv).await.map_err(|e| {
                SnapshotError::NotFound(format!(
                    "logical volume {} cannot be read ({e}); check `volume` (as `<vg>/<lv>`)",
                    self.volume()
                ))
            })?;
            let name = self.snapshot_name(ctx);
            self.snapshot(&origin, &name).await?;
            Ok((
                format!("{}/{name}", self.vg),
                BTreeMap::from([
                    ("volume".to_string(), self.volume()),
                    ("type".to_string(), kind(&origin).to_string()),
                ]),
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let reference = member.snapshot_ref()?;
            let name = reference.rsplit('/').next().unwrap_or(reference);
            let snap = self.info(name).await.map_err(|e| SnapshotError::Gone {
                snapshot: reference.to_string(),
                source: Box::new(e),
            })?;
            if snap.origin != self.lv {
                return Err(SnapshotError::Refused(format!(
                    "{reference} is not a snapshot of {} (its origin is `{}`); nothing was changed",
                    self.volume(),
                    snap.origin
                )));
            }
            let origin = self.info(&self.lv).await?;
            // The state about to be replaced, kept as a snapshot of its own.
            let kept = format!(
                "{}-drp-replaced-{}",
                self.lv,
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            );
            self.snapshot(&origin, &kept).await.map_err(|e| {
                SnapshotError::failed(format!(
                    "the current state of {} could not be kept ({e}); nothing was rolled back",
                    self.volume()
                ))
            })?;
            let said = run("lvconvert", &["--merge", "--yes", reference]).await?;
            let deferred = said.contains("next activation") || origin.lv_device_open == "open";
            let kept = format!("{}/{kept}", self.vg);
            Ok(if deferred {
                format!(
                    "{} is in use: LVM merges {reference} into it at its next activation \
                     (stop what holds it, then `lvchange -an {v}` and `lvchange -ay {v}`, or reboot); \
                     the replaced state is kept as {kept}",
                    self.volume(),
                    v = self.volume()
                )
            } else {
                format!(
                    "{} restored from {reference} (merged); the replaced state is kept as {kept}",
                    self.volume()
                )
            })
        })
    }

    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let reference = member.snapshot_ref()?;
            let name = reference.rsplit('/').next().unwrap_or(reference);
            match self.info(name).await {
                // Merged by a rollback, or removed by hand: nothing to delete.
                Err(SnapshotError::NotFound(_)) => Ok(()),
                Err(SnapshotError::Tool { stderr, .. }) if stderr.contains("not found") => Ok(()),
                Err(e) => Err(e),
                Ok(_) => run("lvremove", &["--yes", reference]).await.map(|_| ()),
            }
        })
    }

    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let expected = format!("{}/{}", self.vg, self.snapshot_name(ctx));
            if reference == expected {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned(format!(
                    "this set's snapshot of {} is {expected}",
                    self.volume()
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_lvcreate_takes_them() {
        assert_eq!(
            SnapshotSize::parse("2GiB").unwrap().args(),
            ["-L".to_string(), format!("{}b", 2u64 << 30)]
        );
        assert_eq!(
            SnapshotSize::parse("20%ORIGIN").unwrap().args(),
            ["-l".to_string(), "20%ORIGIN".to_string()]
        );
        for bad in ["", "0GiB", "2", "2 GB", "101%ORIGIN", "x%ORIGIN", "-1GiB"] {
            assert!(SnapshotSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_lvs_report_is_read() {
        // `lvs --reportformat json -o lv_name,segtype,origin,lv_device_open`
        // as LVM 2.03 writes it.
        let out = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"data", "segtype":"thin", "origin":"", "lv_device_open":"open"},
                  {"lv_name":"data-drp-20260101T000000Z-c1", "segtype":"thin", "origin":"data", "lv_device_open":""}
              ]
          }
      ]
  }
"#;
        let lvs = parse_lvs(out).unwrap();
        assert_eq!(lvs.len(), 2);
        assert_eq!(lvs[1].origin, "data");
        assert_eq!(kind(&lvs[0]), "thin");
        assert_eq!(lvs[0].lv_device_open, "open");
    }

    #[tokio::test]
    async fn a_reference_is_owned_only_when_it_names_this_sets_snapshot() {
        let policy = crate::config::Policy::parse(
            std::path::Path::new("p.yaml"),
            "host: h\ntargets:\n  nas: {kind: local, path: nas}\nexports: {}\nsnapshots:\n  data: {kind: lvm, volume: vg0/data, size: 1GiB}\n",
        )
        .unwrap();
        let lvm = Lvm::new(&LvmConfig {
            volume: "vg0/data".into(),
            size: None,
        });
        let ctx = SnapContext {
            policy: &policy,
            name: "data",
            set_id: "20260101T000000Z-c1",
            change: "c1",
            reason: "r",
        };
        assert!(
            lvm.owns(&ctx, "vg0/data-drp-20260101T000000Z-c1")
                .await
                .is_ok()
        );
        for other in [
            "vg0/data",
            "vg1/data-drp-20260101T000000Z-c1",
            "vg0/data-drp-20260101T000000Z-c2",
            "vg0/root",
        ] {
            assert!(lvm.owns(&ctx, other).await.is_err(), "{other}");
        }
    }
}
