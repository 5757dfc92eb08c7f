//! The second stage for the top-level sections: each checked on its own, in
//! the order written, so that problems are reported in that order. Targets
//! and exports come out still raw: their checks need the keys and the time
//! zone, wherever those are written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::check_exports::check_retention;
use super::raw::{RawExport, RawTargets, Read, Section, report};
use super::{
    Metrics, Notify, Objectives, PruneSettings, RestoreSettings, Retention, ServeSettings,
    TOP_LEVEL_KEYS,
};
use crate::config::{Diagnostic, Diagnostics, did_you_mean, is_safe_name};
use crate::keys::KeysConfig;
use crate::snapshot::SnapshotConfig;

/// The top-level sections, checked; a section not written, or refused,
/// keeps its default.
pub(super) struct Sections {
    /// Empty when not written or refused.
    pub host: String,
    pub objectives: Objectives,
    pub targets: RawTargets,
    pub exports: Vec<RawExport>,
    pub timezone: chrono_tz::Tz,
    pub state_dir: Option<PathBuf>,
    pub metrics: Metrics,
    pub notify: Notify,
    pub prune: PruneSettings,
    pub snapshots: BTreeMap<String, SnapshotConfig>,
    pub snapshot_retention: Retention,
    pub snapshot_hooks: Option<crate::config::hooks::Hooks>,
    pub restore: RestoreSettings,
    pub serve: ServeSettings,
    pub fencing: Option<crate::config::fencing::Fencing>,
    pub standby: BTreeMap<String, crate::config::standby::Standby>,
    pub watch: BTreeMap<String, crate::config::watch::WatchedService>,
    pub keys: KeysConfig,
}

/// Checks every top-level section in the order written, then what must be
/// written at all (`host`) and the snapshots' retention.
pub(super) fn check_sections(
    d: &mut Diagnostics,
    written: Vec<Section>,
    warnings: &mut Vec<Diagnostic>,
) -> Sections {
    let mut s = Sections {
        host: String::new(),
        objectives: Objectives::default(),
        targets: RawTargets::default(),
        exports: Vec::new(),
        timezone: chrono_tz::UTC,
        state_dir: None,
        metrics: Metrics::default(),
        notify: Notify::default(),
        prune: PruneSettings::default(),
        snapshots: BTreeMap::new(),
        snapshot_retention: Retention::default(),
        snapshot_hooks: None,
        restore: RestoreSettings::default(),
        serve: ServeSettings::default(),
        fencing: None,
        standby: BTreeMap::new(),
        watch: BTreeMap::new(),
        keys: KeysConfig::default(),
    };
    for section in written {
        match section {
            Section::Host(v) => {
                if let Some(h) = check_host(d, &v) {
                    s.host = h;
                }
            }
            Section::Timezone(v) => {
                if let Some(tz) = check_timezone(d, &v) {
                    s.timezone = tz;
                }
            }
            Section::Objectives(r) => {
                if let Some(o) = report(d, r) {
                    s.objectives = o;
                }
            }
            Section::Targets(r) => {
                if let Some(t) = report(d, r) {
                    s.targets = t;
                }
            }
            Section::Exports(r) => {
                if let Some(e) = report(d, r) {
                    s.exports = e;
                }
            }
            Section::StateDir(r) => {
                if let Some(p) = report(d, r) {
                    s.state_dir = Some(p);
                }
            }
            Section::Metrics(r) => {
                if let Some(m) = report(d, r) {
                    s.metrics = m;
                }
            }
            Section::Notify(r) => {
                if let Some(n) = report(d, r) {
                    check_notify(d, &n, warnings);
                    s.notify = n;
                }
            }
            Section::Restore(r) => {
                if let Some(r) = report(d, r) {
                    s.restore = r;
                }
            }
            Section::Serve(r) => {
                if let Some(serve) = report(d, r) {
                    check_serve(d, &serve);
                    s.serve = serve;
                }
            }
            Section::Fencing(r) => s.fencing = report(d, r),
            Section::Standby(r) => s.standby = report(d, r).unwrap_or_default(),
            Section::Watch(r) => s.watch = report(d, r).unwrap_or_default(),
            Section::Keys(r) => {
                if let Some(k) = report(d, r) {
                    check_keys(d, &k);
                    s.keys = k;
                }
            }
            Section::Prune(r) => {
                if let Some(p) = report(d, r) {
                    s.prune = p;
                }
            }
            Section::SnapshotRetention(r) => {
                if let Some(r) = report(d, r) {
                    s.snapshot_retention = r;
                }
            }
            Section::SnapshotHooks(r) => {
                if let Some(h) = report(d, r) {
                    crate::config::hooks::check(d, "snapshot_hooks", &h);
                    s.snapshot_hooks = Some(h);
                }
            }
            Section::Snapshots(r) => {
                if let Some(each) = report(d, r) {
                    s.snapshots.extend(check_snapshots(d, each));
                }
            }
            Section::Unknown(key) => {
                let hint = did_you_mean(&key, &TOP_LEVEL_KEYS);
                d.push(&key, format!("unknown key `{key}`"), hint);
            }
        }
    }
    check_retention(d, &mut s.snapshot_retention, "snapshot_retention");
    if !d.items.iter().any(|p| p.key == "host") && s.host.is_empty() {
        d.push(
            "host",
            "missing `host`",
            Some("add `host: <name of this machine>`".into()),
        );
    }
    s
}

/// `host`: one segment of a repository path.
fn check_host(d: &mut Diagnostics, value: &Value) -> Option<String> {
    match value.as_str() {
        Some(h) if is_safe_name(h) => Some(h.to_string()),
        _ => {
            d.push(
                "host",
                "`host` must be a name made of letters, digits, `-`, `_` and `.`",
                Some("use the host's short name, e.g. `db-1`".into()),
            );
            None
        }
    }
}

/// `timezone`: an IANA name.
fn check_timezone(d: &mut Diagnostics, value: &Value) -> Option<chrono_tz::Tz> {
    match value.as_str().map(str::parse::<chrono_tz::Tz>) {
        Some(Ok(tz)) => Some(tz),
        _ => {
            d.push(
                "timezone",
                format!("unknown time zone `{}`", value.as_str().unwrap_or("?")),
                Some("use an IANA name such as `Europe/Paris` or `UTC`".into()),
            );
            None
        }
    }
}

/// `notify`: records what cannot work (refused) and what is unwise
/// (warned). Never repeats a webhook URL: it carries a token.
fn check_notify(d: &mut Diagnostics, notify: &Notify, warnings: &mut Vec<Diagnostic>) {
    use crate::notify::webhook::WebhookUrl;
    if let Some(w) = &notify.webhook {
        if let Err(msg) = w.url.check_inline() {
            d.push(
                "notify.webhook.url",
                msg,
                Some("e.g. `url: {env: SLACK_WEBHOOK_URL}`".into()),
            );
        } else if matches!(w.url, WebhookUrl::Inline(_)) {
            let w = d.at(
                "notify.webhook.url",
                "the webhook URL is written in the policy: its token is readable by anyone who reads the file",
                Some("reference it instead: `url: {env: SLACK_WEBHOOK_URL}` or `url: {file: /etc/drp/webhook-url}`".into()),
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    if let Some(e) = &notify.email {
        for p in e.problems() {
            d.push(&format!("notify.email.{}", p.key), p.message, p.hint);
        }
    }
}

/// `serve`: each named command has a safe name and something to run.
fn check_serve(d: &mut Diagnostics, serve: &ServeSettings) {
    for (name, c) in &serve.commands {
        if !is_safe_name(name) || c.run.first().is_none_or(|p| p.is_empty()) {
            d.push(
                &format!("serve.commands.{name}"),
                "a named command has a safe name (letters, digits, `-`, `_`, `.`) and a non-empty `run` list",
                Some("e.g. `stop-db: {run: [systemctl, stop, postgresql], destructive: true}`".into()),
            );
        }
    }
}

/// `keys`: every key parses.
fn check_keys(d: &mut Diagnostics, keys: &KeysConfig) {
    for (key, message) in keys.problems() {
        d.push(&key, message, None);
    }
}

/// `snapshots`: each one's name is safe and its settings read.
fn check_snapshots(
    d: &mut Diagnostics,
    each: Vec<(String, Read<SnapshotConfig>)>,
) -> Vec<(String, SnapshotConfig)> {
    let mut out = Vec::new();
    for (name, config) in each {
        if !is_safe_name(&name) {
            d.push(
                &format!("snapshots.{name}"),
                format!("snapshot name `{name}` must be letters, digits, `-`, `_` or `.`"),
                None,
            );
        }
        if let Some(c) = report(d, config) {
            out.push((name, c));
        }
    }
    out
}

/// The watched services: safe names, and ladders whose rungs name what the
/// policy declares (the shape is serde's).
pub(super) fn check_watch(
    d: &mut Diagnostics,
    watch: &BTreeMap<String, crate::config::watch::WatchedService>,
    exports: &BTreeMap<String, crate::config::Export>,
) {
    let names: Vec<&str> = exports.keys().map(String::as_str).collect();
    for (name, service) in watch {
        let key = format!("watch.{name}");
        if !is_safe_name(name) {
            d.push(
                &key,
                format!("service name `{name}` must be letters, digits, `-`, `_` or `.`"),
                None,
            );
        }
        for problem in crate::config::watch::problems(service, &names) {
            d.push(&key, problem, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, problems, with_export};

    #[test]
    fn smtp_credentials_need_tls_unless_said_otherwise() {
        let email = |extra: &str| {
            format!(
                "{}notify:\n  email: {{server: mx, from: a@b.c, to: [d@e.f], username: u, password: {{env: PW}}{extra}}}\n",
                with_export("")
            )
        };
        let p = parse(&email("")).unwrap();
        let e = p.notify.email.unwrap();
        assert_eq!(e.security, crate::notify::email::Security::Starttls);
        let got = problems(&email(", security: none"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("9:83: notify.email.security: `security: none` would send the SMTP password in clear"),
            "{got:?}"
        );
        assert!(parse(&email(", security: none, allow_plaintext_auth: true")).is_ok());
        let got = problems(&email(", allow_plaintext_auth: true"));
        assert!(
            got[0].contains("notify.email.allow_plaintext_auth"),
            "{got:?}"
        );
        // A local relay without credentials needs nothing more.
        let relay = format!(
            "{}notify:\n  email: {{server: 127.0.0.1, security: none, from: a@b.c, to: [d@e.f]}}\n",
            with_export("")
        );
        assert!(parse(&relay).is_ok());
    }

    #[test]
    fn a_webhook_url_in_the_policy_is_warned_about_and_never_repeated() {
        let token = "T0KEN-9f2e";
        let inline = format!(
            "{}notify:\n  webhook: {{url: \"https://hooks.example.com/services/{token}\"}}\n",
            with_export("")
        );
        let p = parse(&inline).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].key, "notify.webhook.url");
        assert!(!format!("{p:?}").contains(token));
        assert!(!p.warnings[0].to_string().contains(token));
        let referenced = format!(
            "{}notify:\n  webhook: {{url: {{env: HOOK}}}}\n",
            with_export("")
        );
        assert!(parse(&referenced).unwrap().warnings.is_empty());
        let bad = format!(
            "{}notify:\n  webhook: {{url: \"ftp:{token}\"}}\n",
            with_export("")
        );
        let got = problems(&bad);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("notify.webhook.url") && !got[0].contains(token),
            "{got:?}"
        );
    }

    #[test]
    fn the_restore_section_keeps_replaced_data_by_default() {
        assert!(!parse(&with_export("")).unwrap().restore.drop_replaced);
        let p = parse(&format!(
            "{}restore: {{drop_replaced: true}}\n",
            with_export("")
        ))
        .unwrap();
        assert!(p.restore.drop_replaced);
        let got = problems(&format!(
            "{}restore: {{drop_replace: true}}\n",
            with_export("")
        ));
        assert!(got[0].contains("restore.drop_replace"), "{got:?}");
    }

    #[test]
    fn problems_of_the_top_level_sections_come_in_the_order_written() {
        // A check's problem (`host`, `timezone`, a named command) and a
        // deserialisation's (`objectives`, `prune`) keep the file's order,
        // and the unknown key its place among them.
        let text = format!(
            "{}timezone: Mars/Olympus\nobjectives: {{rto: soon}}\nhost: \"a b\"\nprune: {{grace: never}}\nserve:\n  commands: {{x: {{run: []}}}}\nhots: a\n",
            with_export("")
        )
        .replacen("host: a\n", "", 1);
        let keys: Vec<String> = problems(&text)
            .iter()
            .map(|p| p.split(' ').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "timezone:",
                "objectives.rto:",
                "host:",
                "prune.grace:",
                "serve.commands.x:",
                "hots:"
            ]
        );
    }
}
