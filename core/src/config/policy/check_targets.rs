//! The second stage for `targets:`: each target's name, its own options
//! (whom it encrypts to, how fast it is written) and its kind's settings.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::TargetOptions;
use super::raw::{RawTargets, report};
use crate::backend::TargetConfig;
use crate::config::{Diagnostic, Diagnostics, did_you_mean, is_safe_name};
use crate::keys::KeysConfig;

/// The targets read, by name, and each one's options.
pub(super) struct Targets {
    pub configs: BTreeMap<String, TargetConfig>,
    pub options: BTreeMap<String, TargetOptions>,
}

/// Checks every target, warns of an off-site one stored unencrypted, and
/// refuses a policy without any.
pub(super) fn check_targets(
    d: &mut Diagnostics,
    raw: RawTargets,
    keys: &KeysConfig,
    warnings: &mut Vec<Diagnostic>,
) -> Targets {
    let mut out = Targets {
        configs: BTreeMap::new(),
        options: BTreeMap::new(),
    };
    for target in raw.each {
        let name = target.name;
        let key = format!("targets.{name}");
        if !is_safe_name(&name) {
            d.push(
                &key,
                format!("target name `{name}` must be letters, digits, `-`, `_` or `.`"),
                None,
            );
        }
        let options = check_target_options(d, &key, target.limit, target.encryption, keys);
        if let Some(t) = report(d, target.config) {
            if options.recipients.is_empty() && !matches!(t, TargetConfig::Local(_)) {
                warnings.push(d.at(
                    &key,
                    format!("target `{name}` is off-site and not encrypted: anyone holding its credentials reads every point"),
                    Some("add public keys under `keys.recipients` (`drp-agent keys generate`); targets then encrypt to them".into()),
                ));
            }
            out.options.insert(name.clone(), options);
            out.configs.insert(name, t);
        }
    }
    if out.configs.is_empty() && !d.items.iter().any(|p| p.key.starts_with("targets")) {
        d.push(
            "targets",
            "no target defined",
            Some("add a target, e.g. `nas: {kind: local, path: /mnt/nas/drp}`".into()),
        );
    }
    out
}

/// A target's own options (`limit`, `encryption`), at `key`. By default a
/// target encrypts to every key in `keys.recipients`; `encryption: none`
/// opts out, a list names some of them.
fn check_target_options(
    d: &mut Diagnostics,
    key: &str,
    limit: Option<Value>,
    encryption: Option<Value>,
    keys: &KeysConfig,
) -> TargetOptions {
    let mut options = TargetOptions {
        recipients: keys.recipients.keys().cloned().collect(),
        limit: None,
    };
    if let Some(v) = limit {
        match v.as_str().map(crate::config::units::parse_rate) {
            Some(Ok(rate)) => options.limit = Some(rate),
            Some(Err(e)) => d.push(&format!("{key}.limit"), e, None),
            None => d.push(
                &format!("{key}.limit"),
                "`limit` is a rate such as `20MiB/s`",
                None,
            ),
        }
    }
    if let Some(v) = encryption {
        let ekey = format!("{key}.encryption");
        match v {
            Value::String(s) if s == "none" => options.recipients.clear(),
            Value::Sequence(names) => {
                options.recipients.clear();
                for (i, n) in names.iter().enumerate() {
                    let name = n.as_str().unwrap_or_default();
                    if keys.recipients.contains_key(name) {
                        options.recipients.push(name.to_string());
                    } else {
                        let known: Vec<&str> = keys.recipients.keys().map(String::as_str).collect();
                        d.push(
                            &format!("{ekey}[{i}]"),
                            format!("no recipient `{name}` in `keys.recipients`"),
                            did_you_mean(name, &known).or_else(|| {
                                Some("add its public key under `keys.recipients`".into())
                            }),
                        );
                    }
                }
                if options.recipients.is_empty()
                    && d.items.iter().all(|p| !p.key.starts_with(&ekey))
                {
                    d.push(
                        &ekey,
                        "an empty recipient list encrypts to nobody",
                        Some("write `encryption: none` to store this target unencrypted".into()),
                    );
                }
            }
            _ => d.push(
                &ekey,
                "`encryption` is `none` or a list of names from `keys.recipients`",
                None,
            ),
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, problems};
    use crate::backend::TargetConfig;

    #[test]
    fn a_targets_encryption_and_limit_are_read_and_their_mistakes_located() {
        let base = "host: h\nkeys:\n  recipients:\n    ops: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n";
        let ok = format!(
            "{base}targets:\n  nas: {{kind: local, path: /n, limit: 20MiB/s}}\n  s3: {{kind: s3, bucket: b, encryption: none}}\nexports:\n  e:\n    source: {{kind: directory, path: /d}}\n    targets: [nas, s3]\n"
        );
        let p = parse(&ok).unwrap();
        assert_eq!(p.recipients("nas").len(), 1);
        assert!(p.recipients("s3").is_empty());
        assert_eq!(p.target_options["nas"].limit, Some(20 << 20));
        // An off-site target without encryption is said.
        assert!(
            p.warnings
                .iter()
                .any(|w| w.to_string().contains("`s3` is off-site and not encrypted"))
        );

        let bad = format!(
            "{base}targets:\n  nas: {{kind: local, path: /n, limit: fast, encryption: [opz]}}\nexports:\n  e:\n    source: {{kind: directory, path: /d}}\n    targets: [nas]\n"
        );
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("6:32: `targets.nas.limit`: invalid rate `fast`"),
            "{err}"
        );
        assert!(
            err.contains("6:58: `targets.nas.encryption[0]`: no recipient `opz`")
                && err.contains("did you mean `ops`"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_host_key_mode_is_refused_when_the_policy_is_read() {
        let text = "host: a\ntargets:\n  nas:\n    kind: sftp\n    host: nas.lan\n    path: /drp\n    known_hosts: stric\nexports:\n  db:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("7:5: targets.nas.known_hosts: unknown variant `stric`"),
            "{found:?}"
        );
        let hint = parse(text).unwrap_err().diagnostics[0].hint.clone();
        assert_eq!(hint.as_deref(), Some("did you mean `strict`?"));
        let text = text.replace("stric\n", "add\n");
        let TargetConfig::Sftp(sftp) = &parse(&text).unwrap().targets["nas"] else {
            panic!()
        };
        assert_eq!(sftp.known_hosts, crate::backend::sftp::KnownHosts::Add);
    }
}
