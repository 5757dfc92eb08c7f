//! The second stage for `exports:`: each export's keys, read one by one,
//! checked against the rest of the policy (declared targets, the time zone
//! of its schedule) into an [`Export`].

use std::collections::BTreeMap;

use super::raw::{RawExport, Read, report};
use super::{Compression, EXPORT_KEYS, Export, Objectives, Retention};
use crate::config::{Diagnostic, Diagnostics, Schedule, did_you_mean, is_safe_name};
use crate::notify::ping::PingConfig;

/// Checks every export, and refuses a policy that protects nothing (no
/// export and no snapshot).
pub(super) fn check_exports(
    d: &mut Diagnostics,
    raw: Vec<RawExport>,
    declared: &[String],
    timezone: chrono_tz::Tz,
    has_snapshots: bool,
    warnings: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Export> {
    let mut exports = BTreeMap::new();
    for export in raw {
        if let Some(e) = check_export(d, export, declared, timezone, warnings) {
            exports.insert(e.name.clone(), e);
        }
    }
    if exports.is_empty() && !has_snapshots && !d.items.iter().any(|p| p.key.starts_with("exports"))
    {
        d.push(
            "exports",
            "no export defined",
            Some("add an export with a `source` and its `targets`".into()),
        );
    }
    exports
}

/// One export: every problem of each of its keys, then the export when
/// its source and schedule are usable.
fn check_export(
    d: &mut Diagnostics,
    raw: RawExport,
    declared: &[String],
    timezone: chrono_tz::Tz,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Export> {
    let name = raw.name;
    let key = format!("exports.{name}");
    if !is_safe_name(&name) {
        d.push(
            &key,
            format!("export name `{name}` must be letters, digits, `-`, `_` or `.`"),
            None,
        );
    }
    let f = report(d, raw.fields)?;
    for k in &f.unknown {
        d.push(
            &format!("{key}.{k}"),
            format!("unknown key `{k}`"),
            did_you_mean(k, &EXPORT_KEYS),
        );
    }
    let targets_written = f.targets.is_some();
    let source = field(d, f.source, &key, "source", true);
    if let Some(crate::source::SourceConfig::Directory(c)) = &source {
        for (k, message, hint) in crate::source::directory::incremental::problems(c) {
            d.push(&format!("{key}.source.{k}"), message, hint);
        }
    }
    let schedule_text = field(d, f.schedule, &key, "schedule", false);
    let targets = field(d, f.targets, &key, "targets", true);
    let compression = field(d, f.compression, &key, "compression", false);
    let restore_test = field(d, f.restore_test, &key, "restore_test", false);
    let ping = field(d, f.ping, &key, "ping", false);
    if let Some(s) = &source {
        for (at, message) in s.problems(restore_test.as_ref().map(|t| t.checks.len())) {
            d.push(&format!("{key}.{at}"), message, None);
        }
    }
    let hooks = field(d, f.hooks, &key, "hooks", false);
    if let Some(h) = &hooks {
        crate::config::hooks::check(d, &format!("{key}.hooks"), h);
    }
    let objectives: Objectives =
        field(d, f.objectives, &key, "objectives", false).unwrap_or_default();
    if let Some(p) = &ping {
        check_ping(d, &key, p, warnings);
    }
    let mut retention: Retention =
        field(d, f.retention, &key, "retention", false).unwrap_or_default();
    check_retention(d, &mut retention, &format!("{key}.retention"));
    let schedule = check_schedule(d, &key, schedule_text, timezone);
    let targets = targets.unwrap_or_default();
    check_export_targets(d, &key, &targets, targets_written, declared);
    let compression = compression.unwrap_or_default();
    check_compression(d, &key, &compression);
    Some(Export {
        name,
        source: source?,
        schedule: schedule?,
        targets,
        compression,
        retention,
        restore_test,
        ping,
        objectives,
        hooks,
    })
}

/// The value of one key of an export at `base`, its problem recorded, or
/// its absence when `required`.
fn field<T>(
    d: &mut Diagnostics,
    read: Option<Read<T>>,
    base: &str,
    key: &str,
    required: bool,
) -> Option<T> {
    match read {
        Some(r) => report(d, r),
        None => {
            if required {
                d.push(
                    base,
                    format!("missing field `{key}`"),
                    Some(format!("add `{key}`")),
                );
            }
            None
        }
    }
}

/// `ping.url`: a URL, better referenced than written.
fn check_ping(d: &mut Diagnostics, key: &str, ping: &PingConfig, warnings: &mut Vec<Diagnostic>) {
    use crate::notify::webhook::WebhookUrl;
    if let Err(msg) = ping.url.check_inline() {
        d.push(&format!("{key}.ping.url"), msg, None);
    } else if matches!(ping.url, WebhookUrl::Inline(_)) {
        warnings.push(d.at(
            &format!("{key}.ping.url"),
            "the ping URL is written in the policy: its token is readable by anyone who reads the file",
            Some("reference it instead: `url: {file: /etc/drp/secrets/ping-<export>}`".into()),
        ));
    }
}

/// `retention` (an export's, or `snapshot_retention` at the top level, as
/// `key`): fills in the default and records what would let prune delete
/// every point.
pub(super) fn check_retention(d: &mut Diagnostics, retention: &mut Retention, key: &str) {
    let rules = [
        ("keep_last", retention.keep_last),
        ("keep_hourly", retention.keep_hourly),
        ("keep_daily", retention.keep_daily),
        ("keep_weekly", retention.keep_weekly),
        ("keep_monthly", retention.keep_monthly),
        ("keep_yearly", retention.keep_yearly),
    ];
    let written: Vec<&str> = rules
        .iter()
        .filter(|(_, n)| n.is_some())
        .map(|(k, _)| *k)
        .collect();
    if !written.is_empty() && rules.iter().all(|(_, n)| n.unwrap_or(0) == 0) {
        d.push(
            &format!("{key}.{}", written[0]),
            format!(
                "these retention rules keep nothing: prune would delete every recovery point ({} = 0)",
                written.join(", ")
            ),
            Some(
                "keep at least one point, e.g. `keep_last: 1`; leave every `keep_*` out to keep all"
                    .into(),
            ),
        );
    }
    match retention.min_verified {
        Some(0) => d.push(
            &format!("{key}.min_verified"),
            "`min_verified: 0` lets prune delete the last verified recovery point",
            Some("use 1 or more, or leave it out (default 1)".into()),
        ),
        Some(_) => {}
        None => retention.min_verified = Some(1),
    }
}

/// `schedule`: crontab's syntax in the policy's time zone, the default
/// when not written.
fn check_schedule(
    d: &mut Diagnostics,
    key: &str,
    text: Option<String>,
    timezone: chrono_tz::Tz,
) -> Option<Schedule> {
    match Schedule::parse(text.as_deref().unwrap_or(Schedule::DEFAULT), timezone) {
        Ok(s) => Some(s),
        Err(msg) => {
            d.push(
                &format!("{key}.schedule"),
                msg,
                Some(
                    "e.g. `0 6,18 * * *` for 06:00 and 18:00, `*/15 * * * *` for every 15 minutes"
                        .into(),
                ),
            );
            None
        }
    }
}

/// `standby`: each name safe, its targets declared, and either a warm
/// PostgreSQL standby or an export a point is restored into.
pub(super) fn check_standby(
    d: &mut Diagnostics,
    standby: &BTreeMap<String, crate::config::standby::Standby>,
    declared: &[String],
    exports: &BTreeMap<String, Export>,
) {
    for (name, s) in standby {
        let key = format!("standby.{name}");
        if !is_safe_name(name) {
            d.push(
                &key,
                format!("standby name `{name}` must be letters, digits, `-`, `_` or `.`"),
                None,
            );
        }
        if let Some(targets) = &s.targets {
            check_export_targets(d, &key, targets, true, declared);
        } else if declared.is_empty() {
            d.push(
                &key,
                "a standby reads the primary's archive from this policy's targets, and it declares none",
                None,
            );
        }
        match (&s.data_directory, &s.into) {
            (Some(dir), None) => check_warm_standby(d, &key, s, dir, exports),
            (None, Some(into)) => {
                let fits = exports.get(into).map(|e| e.source.kind());
                if fits.is_none_or(|k| k == crate::source::SourceKind::PostgresCluster) {
                    d.push(
                        &format!("{key}.into"),
                        format!("`{into}` is not an export of this policy that a point can be restored into"),
                        Some("a whole PostgreSQL cluster is kept warm with `data_directory` instead".into()),
                    );
                }
            }
            _ => d.push(
                &key,
                "a standby is either a PostgreSQL cluster replaying the archive (`data_directory`) or an export \
                 the newest point is restored into (`into`): give exactly one",
                None,
            ),
        }
    }
}

/// A warm PostgreSQL standby: the export a promoted standby archives into
/// is a `postgres-cluster` export of the same data directory.
fn check_warm_standby(
    d: &mut Diagnostics,
    key: &str,
    s: &crate::config::standby::Standby,
    dir: &std::path::Path,
    exports: &BTreeMap<String, Export>,
) {
    let Some(into) = &s.archive_into else {
        return;
    };
    let same_cluster = exports.get(into).is_some_and(|e| {
        matches!(&e.source, crate::source::SourceConfig::PostgresCluster(c)
            if c.data_directory == dir)
    });
    if !same_cluster {
        d.push(
            &format!("{key}.archive_into"),
            format!(
                "`{into}` is not a postgres-cluster export of this policy whose data_directory is `{}`",
                dir.display()
            ),
            Some("a promoted standby archives into this host's own export of the same cluster".into()),
        );
    }
}

/// `targets`: at least one when written, each one declared.
fn check_export_targets(
    d: &mut Diagnostics,
    key: &str,
    targets: &[String],
    written: bool,
    declared: &[String],
) {
    if targets.is_empty() && written {
        d.push(
            &format!("{key}.targets"),
            "an export needs at least one target",
            None,
        );
    }
    for (i, t) in targets.iter().enumerate() {
        let known: Vec<&str> = declared.iter().map(String::as_str).collect();
        if !declared.contains(t) {
            d.push(
                &format!("{key}.targets[{i}]"),
                format!("unknown target `{t}`"),
                did_you_mean(t, &known).or(Some(format!("defined targets: {}", known.join(", ")))),
            );
        }
    }
}

/// `compression.level`: zstd's range.
fn check_compression(d: &mut Diagnostics, key: &str, compression: &Compression) {
    if !(1..=19).contains(&compression.level) {
        d.push(
            &format!("{key}.compression.level"),
            format!("zstd level {} is out of range", compression.level),
            Some("use 1 (fastest) to 19 (smallest); 3 is a good default".into()),
        );
    }
}

/// Incremental tree exports against their targets: refused on a target
/// whose S3 Object Lock drp could not apply to what restic writes, and a
/// warning that the host holds the repository key.
pub(super) fn check_incremental(
    d: &mut Diagnostics,
    exports: &BTreeMap<String, Export>,
    targets: &BTreeMap<String, crate::backend::TargetConfig>,
    warnings: &mut Vec<Diagnostic>,
) {
    for (name, export) in exports {
        if crate::source::directory::incremental::settings(&export.source).is_none() {
            continue;
        }
        for t in &export.targets {
            if let Some(why) = targets
                .get(t)
                .and_then(crate::source::directory::incremental::target_refused)
            {
                d.push(
                    &format!("exports.{name}.targets"),
                    format!("target `{t}`: {why}"),
                    Some("send this export to a target without `lock:` (a NAS path, SFTP, or a bucket without Object Lock)".into()),
                );
            }
        }
        warnings.push(d.at(
            &format!("exports.{name}.source.key"),
            format!(
                "export `{name}` is incremental: this host holds its restic repository key, which reads and deletes \
                 every point of the repository, so it cannot be a write-only agent"
            ),
            Some("keep the key file readable by root only, and a copy of it off this host (without it no point restores)".into()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, problems, with_export};

    #[test]
    fn retention_that_keeps_nothing_is_refused() {
        let got = problems(&with_export("    retention: {keep_last: 0}\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "8:17: exports.db.retention.keep_last: these retention rules keep nothing"
            ),
            "{got:?}"
        );
        let got = problems(&with_export(
            "    retention:\n      keep_daily: 0\n      keep_weekly: 0\n",
        ));
        assert!(
            got[0].starts_with("9:7: exports.db.retention.keep_daily:"),
            "{got:?}"
        );
        assert!(got[0].contains("keep_daily, keep_weekly = 0"), "{got:?}");
        let got = problems(&format!(
            "{}snapshot_retention: {{keep_last: 0}}\n",
            with_export("")
        ));
        assert!(
            got[0].starts_with("8:22: snapshot_retention.keep_last:"),
            "{got:?}"
        );
        // One rule that keeps something is enough.
        assert!(
            parse(&with_export(
                "    retention: {keep_last: 0, keep_daily: 3}\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn min_verified_defaults_to_one_and_zero_is_refused() {
        let p = parse(&with_export("    retention: {keep_last: 3}\n")).unwrap();
        assert_eq!(p.exports["db"].retention.min_verified, Some(1));
        let p = parse(&with_export("")).unwrap();
        assert_eq!(p.exports["db"].retention.min_verified, Some(1));
        let got = problems(&with_export(
            "    retention: {keep_last: 3, min_verified: 0}\n",
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("8:31: exports.db.retention.min_verified:"),
            "{got:?}"
        );
    }
}
