//! Repository selection on the command line, and `list` (both binaries).

use std::io::Write;
use std::path::PathBuf;

use chrono::Utc;
use drp_core::config::units::{format_bytes, format_duration};
use drp_core::repository::Listing;
use drp_core::scope::{Scope, Selection};
use drp_core::{ExitCode, Result};

use crate::{Output, Table};

/// Where recovery points are looked up: a policy's targets, or one target
/// given by address (from a bare machine). See [`Selection`].
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Policy file.
    #[arg(long, short, required_unless_present = "target")]
    pub policy: Option<PathBuf>,
    /// Target address, without a policy: a path, file://, s3://bucket/prefix?endpoint=…&region=…, sftp://user@host/path?key=…
    #[arg(long, conflicts_with = "policy")]
    pub target: Option<String>,
    /// Only this target of the policy.
    #[arg(long = "from", requires = "policy")]
    pub from: Option<String>,
    /// Host whose recovery points to use (default: the policy's host).
    #[arg(long)]
    pub host: Option<String>,
    /// An age identity file (`AGE-SECRET-KEY-1…` lines) to decrypt encrypted
    /// points with; may be repeated.
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Accept records signed by this key for this host (`HOST=ed25519:…`);
    /// once any key is trusted, unsigned records are refused.
    #[arg(long = "trust", value_name = "HOST=KEY")]
    pub trust: Vec<String>,
}

impl RepoArgs {
    pub fn selection(&self) -> Selection {
        Selection {
            policy: self.policy.clone(),
            target: self.target.clone(),
            from: self.from.clone(),
            host: self.host.clone(),
            identities: self.identities.clone(),
            trust: self.trust.clone(),
        }
    }
}

/// `list`: the committed recovery points, newest last per export.
pub async fn list(args: &RepoArgs, export: Option<&str>, out: &Output) -> Result<ExitCode> {
    let scope = Scope::open(&args.selection(), export).await?;
    let now = Utc::now();
    let mut table = Table::new(&[
        "EXPORT",
        "ID",
        "CONSISTENT AT (UTC)",
        "AGE",
        "RAW",
        "STORED",
        "TARGET",
        "ENCRYPTED TO",
    ]);
    let mut damaged = Vec::new();
    let (listings, failed) = listings(&scope, export).await;
    for (repo, listing) in &listings {
        damaged.extend(
            listing
                .damaged
                .iter()
                .map(|d| format!("target `{repo}`: {}: {}", d.object, d.message)),
        );
    }
    if out.json {
        // One JSON value per point, made only for --json (the table never
        // needs them), and written through a buffer rather than one string.
        let points: Vec<_> = listings
            .iter()
            .flat_map(|(repo, listing)| {
                listing
                    .points
                    .iter()
                    .map(move |m| serde_json::json!({"target": repo, "manifest": m}))
            })
            .collect();
        let listed =
            serde_json::json!({"points": points, "damaged": damaged, "unreachable": failed});
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        // A closed stdout (the listing piped into `head`) ends it quietly.
        let _ = serde_json::to_writer_pretty(&mut stdout, &listed)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(stdout))
            .and_then(|_| stdout.flush());
    } else {
        for (repo, listing) in &listings {
            for m in &listing.points {
                let keys = m.encryption.as_ref().map_or("-".to_string(), |e| {
                    e.recipients
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                table.row(vec![
                    if scope.policy.is_some() {
                        m.export.clone()
                    } else {
                        format!("{}/{}", m.host, m.export)
                    },
                    m.id.clone(),
                    m.consistency_time.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format_duration((now - m.consistency_time).to_std().unwrap_or_default()),
                    format_bytes(m.raw.size),
                    format_bytes(m.stored.size),
                    repo.clone(),
                    keys,
                ]);
            }
        }
        if table.is_empty() {
            println!("no recovery points");
        } else {
            println!("{}", table.render());
        }
        for d in &damaged {
            eprintln!("damaged manifest, ignored: {d}");
        }
        for f in &failed {
            eprintln!("not listed: {f}");
        }
    }
    Ok(if !failed.is_empty() {
        ExitCode::Failed
    } else if !damaged.is_empty() {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}

/// What every repository of `scope` holds for each of its exports (`export`
/// alone, if given), by target name; and what could not be listed.
pub async fn listings(
    scope: &Scope,
    export: Option<&str>,
) -> (Vec<(String, Listing)>, Vec<String>) {
    let mut out = Vec::new();
    let mut failed: Vec<String> = scope.unreachable.iter().map(|e| e.to_string()).collect();
    for repo in &scope.repos {
        let pairs = match scope.pairs(repo, export).await {
            Ok(p) => p,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        for (host, name) in pairs {
            match repo.list(&host, &name).await {
                Ok(l) => out.push((repo.name().to_string(), l)),
                Err(e) => failed.push(e.to_string()),
            }
        }
    }
    (out, failed)
}
