//! `drp handover`: one page a newcomer can follow with no other knowledge —
//! every host, export and target, where the keys and secrets are (never
//! their values), the exact commands that restore each export from a bare
//! machine, the runbooks, the last drill, restore test and RPO exposure, and
//! what is not protected. Stored in the repositories too, so it survives
//! the loss of every host.

use std::fmt::Write;
use std::path::Path;

use chrono::Utc;
use drp_core::config::units::format_duration;
use drp_core::config::{Policy, SecretRef, SourceConfig, TargetConfig};
use drp_core::{Error, Result};

/// The page in Markdown, for `policies` (and the runbooks in `runbooks`).
pub async fn markdown(policies: &[Policy], runbooks: &[crate::runbook::Runbook]) -> String {
    let mut s = String::new();
    let hosts: Vec<&str> = policies.iter().map(|p| p.host.as_str()).collect();
    let _ = writeln!(s, "# Disaster recovery handover: {}\n", hosts.join(", "));
    let _ = writeln!(
        s,
        "Written {} by drp {}. Everything needed to bring each export back from a bare machine is here; \
         secrets are named by where they are kept, never written down.\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        env!("CARGO_PKG_VERSION")
    );
    s += "## Installing drp on a bare machine\n\n";
    s += "On Debian with a Rust toolchain (`rustup`), from a copy of drp's source: `cargo install --path coordinator` \
          (it installs `drp`), and the database's client tools: `postgresql-client` for PostgreSQL, `mariadb-client` \
          for MariaDB, `openssh-client` for SFTP targets.\n\n";
    let mut unprotected = Vec::new();
    for policy in policies {
        host_section(&mut s, policy, &mut unprotected).await;
    }
    if !runbooks.is_empty() {
        s += "## Runbooks\n\n";
        for rb in runbooks {
            let _ = writeln!(
                s,
                "### `{}` ({}; host {})\n\n{}\n\nObjectives: RTO {}, RPO {}.\n",
                rb.name,
                rb.path.display(),
                rb.policy.host,
                rb.description.as_deref().unwrap_or(""),
                format_duration(rb.rto),
                format_duration(rb.rpo)
            );
            for (i, step) in rb.steps.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{}. **{}**{}: {} (timeout {})",
                    i + 1,
                    step.name,
                    step.phase.map(|p| format!(" [{p:?}]")).unwrap_or_default(),
                    step.action.action().describe(),
                    format_duration(step.timeout)
                );
            }
            s += &format!(
                "\nRun it in an incident with `drp run {}`, rehearse it with `drp drill {}`.\n\n",
                rb.path.display(),
                rb.path.display()
            );
        }
    }
    s += "## What is not protected\n\n";
    if unprotected.is_empty() {
        s += "Nothing found: every export is encrypted off site and restore-tested.\n";
    }
    for u in unprotected {
        let _ = writeln!(s, "- {u}");
    }
    s
}

fn secret(r: &SecretRef) -> (String, String) {
    match r {
        SecretRef::Env(v) => (format!("\"${v}\""), format!("environment variable `{v}`")),
        SecretRef::File(p) => (
            format!("\"$(cat '{}')\"", p.display()),
            format!("file `{}`", p.display()),
        ),
    }
}

async fn host_section(s: &mut String, policy: &Policy, unprotected: &mut Vec<String>) {
    let host = &policy.host;
    let _ = writeln!(s, "## Host `{host}` (policy `{}`)\n", policy.path.display());
    let objective = |d: Option<drp_core::config::HumanDuration>| {
        d.map(|d| format_duration(d.as_duration()))
            .unwrap_or_else(|| "none".into())
    };
    let _ = writeln!(
        s,
        "Objectives: RTO {}, RPO {}.\n",
        objective(policy.objectives.rto),
        objective(policy.objectives.rpo)
    );
    *s += "### Targets\n\n| target | where (the address a bare machine uses) | encryption | Object Lock | credentials |\n| --- | --- | --- | --- | --- |\n";
    for (name, config) in &policy.targets {
        let recipients = policy.recipients(name);
        let enc = if recipients.is_empty() {
            if !matches!(config, TargetConfig::Local(_)) {
                unprotected.push(format!(
                    "target `{name}` of `{host}` is off site and not encrypted"
                ));
            }
            "none".to_string()
        } else {
            recipients
                .iter()
                .map(|r| format!("{} ({})", r.name, r.fingerprint()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (lock, creds) = match config {
            TargetConfig::S3(c) => (
                c.lock
                    .map(|l| format!("{:?}, {} days", l.mode, l.days))
                    .unwrap_or_else(|| "none".into()),
                match (&c.access_key_id, &c.secret_access_key) {
                    (Some(k), Some(sk)) => {
                        format!("key id in {}, secret in {}", secret(k).1, secret(sk).1)
                    }
                    _ => "the AWS credential chain of the host".into(),
                },
            ),
            TargetConfig::Sftp(c) => (
                "-".into(),
                c.key
                    .as_ref()
                    .map(|k| format!("SSH key `{}`", k.display()))
                    .unwrap_or_else(|| "the SSH agent or default keys".into()),
            ),
            TargetConfig::Local(_) => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "| {name} | `{}` | {enc} | {lock} | {creds} |",
            config.address(&policy.base_dir)
        );
    }
    s.push('\n');
    *s += "### Keys\n\n";
    if policy.keys.recipients.is_empty() {
        *s += "- No encryption keys: points are stored as plain zstd.\n";
    } else {
        let _ = writeln!(
            s,
            "- Points are encrypted to: {}. A restore needs the identity file of one of them \
             (`--identity FILE`); the hosts hold none. Losing every one of them loses the data.",
            policy
                .keys
                .recipients
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(r) = &policy.keys.signing {
        let _ = writeln!(
            s,
            "- `{host}` signs its records with the key in {}.",
            secret(r).1
        );
    }
    for (h, key) in &policy.keys.trusted {
        let _ = writeln!(
            s,
            "- Records of `{h}` are trusted when signed by `{key}` (pass `--trust {h}={key}` from a bare machine)."
        );
    }
    if let Some(r) = &policy.keys.identity {
        let _ = writeln!(
            s,
            "- Drills and restores from this policy decrypt with the identity in {}.",
            secret(r).1
        );
    }
    s.push('\n');
    *s += "### Exports\n\n| export | source | schedule | newest point | RPO exposure | last drill | last restore test | predicted restore |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let now = Utc::now();
    // What `drp report` says of the last twelve months, per export.
    let year = crate::compliance::build(
        policy,
        None,
        now - chrono::Duration::days(366),
        now,
        "the last 12 months".into(),
    )
    .await
    .ok();
    let mut restores = String::new();
    for e in policy.exports.values() {
        let row = year
            .as_ref()
            .and_then(|c| c.exposure.iter().find(|x| x.export == e.name));
        let day = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d").to_string());
        let newest = row.and_then(|r| r.newest_point.as_ref().map(|n| n.consistency_time));
        if row.and_then(|r| r.last_restore_test.as_ref()).is_none() {
            unprotected.push(format!(
                "export `{}` of `{host}` has never been restore-tested",
                e.name
            ));
        }
        if newest.is_none() {
            unprotected.push(format!(
                "export `{}` of `{host}` has no recovery point",
                e.name
            ));
        }
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} |",
            e.name,
            describe_source(&e.source),
            e.schedule.expression,
            newest
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "none".into()),
            row.and_then(|r| r.rpo_exposure_seconds)
                .map(|x| format_duration(std::time::Duration::from_secs_f64(x.max(0.0))))
                .unwrap_or_else(|| "-".into()),
            row.and_then(|r| r.last_drill.as_ref())
                .map(|d| format!(
                    "{} {}",
                    if d.passed { "passed" } else { "failed" },
                    day(Some(d.at)).unwrap_or_default()
                ))
                .unwrap_or_else(|| "none this year".into()),
            row.and_then(|r| r.last_restore_test.as_ref())
                .map(|t| format!(
                    "{} {}",
                    if t.passed { "passed" } else { "FAILED" },
                    day(Some(t.at)).unwrap_or_default()
                ))
                .unwrap_or_else(|| "never".into()),
            row.and_then(|r| r.predicted_restore.as_ref())
                .map(|p| format_duration(std::time::Duration::from_secs_f64(p.seconds)))
                .unwrap_or_else(|| "-".into()),
        );
        restore_commands(&mut restores, policy, e);
    }
    s.push('\n');
    *s += &restores;
}

fn describe_source(source: &SourceConfig) -> String {
    match source {
        SourceConfig::Postgres(c) => format!(
            "PostgreSQL database `{}`",
            c.database.as_deref().unwrap_or("?")
        ),
        SourceConfig::PostgresCluster(c) => {
            format!("PostgreSQL cluster `{}`", c.data_directory.display())
        }
        SourceConfig::Mysql(c) => format!("MariaDB database `{}`", c.database),
        SourceConfig::Sqlite(c) => format!("SQLite file `{}`", c.path.display()),
        SourceConfig::Directory(c) => format!("folder `{}`", c.path.display()),
        SourceConfig::Command(c) => format!("the output of `{}`", c.backup.join(" ")),
        SourceConfig::Redis(c) => match (&c.socket, &c.host) {
            (Some(s), _) => format!("Redis server at `{}`", s.display()),
            (None, h) => format!(
                "Redis server at `{}:{}`",
                h.as_deref().unwrap_or("127.0.0.1"),
                c.port.unwrap_or(6379)
            ),
        },
    }
}

/// The commands that restore `e` from a bare machine, from each of its targets.
fn restore_commands(s: &mut String, policy: &Policy, e: &drp_core::config::Export) {
    for target in &e.targets {
        if let Some(config) = policy.targets.get(target) {
            restore_from(s, policy, e, target, config);
        }
    }
}

fn restore_from(
    s: &mut String,
    policy: &Policy,
    e: &drp_core::config::Export,
    target: &str,
    config: &TargetConfig,
) {
    let _ = writeln!(
        s,
        "### Restoring `{}` of `{}` from `{target}`\n",
        e.name, policy.host
    );
    let _ = write!(
        s,
        "From a bare machine; each line below is run as it is, in a shell, on the machine that restores."
    );
    let mut cmds = Vec::new();
    if let TargetConfig::S3(c) = config
        && let (Some(k), Some(sk)) = (&c.access_key_id, &c.secret_access_key)
    {
        cmds.push(format!("export AWS_ACCESS_KEY_ID={}", secret(k).0));
        cmds.push(format!("export AWS_SECRET_ACCESS_KEY={}", secret(sk).0));
    }
    let to = match &e.source {
        SourceConfig::Postgres(c) => {
            let mut env = Vec::new();
            if let Some(h) = &c.host {
                env.push(format!("PGHOST={h}"));
            }
            if let Some(p) = c.port {
                env.push(format!("PGPORT={p}"));
            }
            if let Some(u) = &c.user {
                env.push(format!("PGUSER={u}"));
            }
            if !env.is_empty() {
                cmds.push(format!("export {}", env.join(" ")));
            }
            if let Some(p) = &c.password {
                cmds.push(format!("export PGPASSWORD={}", secret(p).0));
            }
            c.database.clone().unwrap_or_default()
        }
        SourceConfig::Mysql(c) => c.database.clone(),
        SourceConfig::PostgresCluster(c) => c.data_directory.display().to_string(),
        SourceConfig::Sqlite(c) => drp_core::config::resolve_relative(&policy.base_dir, &c.path)
            .display()
            .to_string(),
        SourceConfig::Directory(c) => drp_core::config::resolve_relative(&policy.base_dir, &c.path)
            .display()
            .to_string(),
        // Without the policy: the point as a file, for its tool to load.
        SourceConfig::Command(_) => format!("{}.point", e.name),
        SourceConfig::Redis(_) => format!("{}.rdb", e.name),
    };
    let address = config.address(&policy.base_dir);
    let identity = if policy.recipients(target).is_empty() {
        String::new()
    } else {
        " --identity ops.age".to_string()
    };
    let incremental = match &e.source {
        SourceConfig::Directory(c) if c.mode == drp_core::source::directory::Mode::Incremental => {
            Some(c)
        }
        _ => None,
    };
    if let Some(c) = incremental {
        // Its tree is in the target's restic repository, which the restic
        // CLI reads without drp (the repository key is the export's).
        let (repo, options) =
            match drp_core::source::directory::restic::Repo::location(config, &policy.base_dir) {
                Ok(l) => l,
                Err(err) => {
                    let _ = writeln!(s, " Its restic repository cannot be named: {err}.\n");
                    return;
                }
            };
        if let TargetConfig::S3(c) = config {
            cmds.push(format!(
                "export AWS_DEFAULT_REGION={}",
                c.region.as_deref().unwrap_or("us-east-1")
            ));
        }
        if let Some(k) = &c.key {
            cmds.push(format!("export RESTIC_PASSWORD={}", secret(k).0));
        }
        let restic = std::iter::once(format!("restic -r '{repo}'"))
            .chain(options.iter().map(|o| format!("-o '{o}'")))
            .collect::<Vec<_>>()
            .join(" ");
        let tags = format!("drp-host={},drp-export={}", policy.host, e.name);
        cmds.push(format!("{restic} snapshots --tag {tags}"));
        cmds.push(format!(
            "{restic} restore latest --tag {tags} --target '{to}.restored'"
        ));
    } else {
        cmds.push(format!(
            "drp list --target '{address}' --host {} --export {}",
            policy.host, e.name
        ));
        cmds.push(format!(
            "drp restore --target '{address}' --host {} --export {} --to '{to}'{identity} --yes",
            policy.host, e.name
        ));
    }
    let needed: Vec<String> = secrets_of(e, config)
        .into_iter()
        .map(|r| secret(&r).1)
        .collect();
    if !needed.is_empty() {
        let _ = writeln!(
            s,
            " The commands read the secrets from where the host keeps them: {}; set or copy them first.",
            needed.join(", ")
        );
    }
    s.push_str("\n```sh\n");
    for c in cmds {
        s.push_str(&c);
        s.push('\n');
    }
    s.push_str("```\n\n");
    if !identity.is_empty() {
        s.push_str("`ops.age` stands for the identity file of any of the recipients above.\n\n");
    }
    if incremental.is_some() {
        s.push_str("The tree comes back beside the old one (`.restored`), as it was at the newest point; `restic snapshots` lists the others, each tagged with its drp point (`drp-point=`).\n\n");
    } else {
        s.push_str("`restore` shows what it will replace and keeps it aside; without `--yes` it asks first.\n\n");
    }
}

/// Writes the page (`handover.md`, `handover.html`) into `out` and stores
/// it in every reachable repository of each policy.
pub async fn write(
    policies: &[Policy],
    runbooks: &[crate::runbook::Runbook],
    out: &Path,
) -> Result<Vec<String>> {
    let md = markdown(policies, runbooks).await;
    let html = crate::compliance::page("drp disaster recovery handover", &md, "drp handover");
    std::fs::create_dir_all(out).map_err(|e| Error::io_path("cannot create", out, e))?;
    for (name, body) in [
        ("handover.md", md.as_bytes()),
        ("handover.html", html.as_bytes()),
    ] {
        std::fs::write(out.join(name), body)
            .map_err(|e| Error::io_path("cannot write", &out.join(name), e))?;
    }
    let mut failed = Vec::new();
    for policy in policies {
        let names: Vec<String> = policy.targets.keys().cloned().collect();
        for (name, repo) in drp_core::repository::open_targets(policy, &names).await {
            let stored = match repo {
                Ok(repo) => {
                    repo.save_handover(&policy.host, md.clone().into_bytes(), html.clone())
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    Ok(failed)
}

/// The secrets a bare-machine restore of `e` from `target` reads.
fn secrets_of(e: &drp_core::config::Export, target: &TargetConfig) -> Vec<SecretRef> {
    let mut out = Vec::new();
    if let TargetConfig::S3(c) = target
        && let (Some(k), Some(sk)) = (&c.access_key_id, &c.secret_access_key)
    {
        out.extend([k.clone(), sk.clone()]);
    }
    match &e.source {
        SourceConfig::Postgres(c) => out.extend(c.password.clone()),
        SourceConfig::Mysql(c) => out.extend(c.password.clone()),
        SourceConfig::Redis(c) => out.extend(c.password.clone()),
        SourceConfig::Directory(c) => out.extend(c.key.clone()),
        _ => {}
    }
    out
}
