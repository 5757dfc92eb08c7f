//! `keys`: make key pairs, and say which keys the recovery points need
//! (both binaries).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use drp_core::keys::{Signer, generate_identity};
use drp_core::scope::Scope;
use drp_core::{Error, ExitCode, Result};

use crate::repo::RepoArgs;
use crate::{Output, Table};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key pair: an age identity for encryption (default), or this
    /// host's Ed25519 signing key (--signing). The private half goes to
    /// FILE (created, never overwritten, readable by its owner only); the
    /// public half is printed, for the policy.
    Generate {
        /// Where the private key is written.
        #[arg(long)]
        out: PathBuf,
        /// A signing key instead of an encryption identity.
        #[arg(long)]
        signing: bool,
    },
    /// Which keys the recovery points need: per key, how many points are
    /// encrypted to it, the oldest and newest, and whether the policy still
    /// encrypts to it (an identity is needed until the last point
    /// encrypted to it has expired).
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
    },
}

pub async fn run(cmd: &KeysCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out: path, signing } => generate(path, *signing, out),
        KeysCommand::List { repo, export } => list(repo, export.as_deref(), out).await,
    }
}

fn generate(path: &Path, signing: bool, out: &Output) -> Result<ExitCode> {
    let (secret, public) = if signing {
        let s = Signer::generate();
        (s.secret_text(), s.public())
    } else {
        generate_identity()
    };
    write_private(path, &secret)?;
    let fingerprint = drp_core::keys::fingerprint(&public);
    if out.json {
        out.print_json(&serde_json::json!({
            "file": path, "public": public, "fingerprint": fingerprint,
            "kind": if signing { "signing" } else { "encryption" },
        }));
    } else if signing {
        println!(
            "signing key written to {} (key {fingerprint})",
            path.display()
        );
        println!(
            "on this host's policy:   keys: {{signing: {{file: {}}}}}",
            path.display()
        );
        println!("on every reader's policy, under keys.trusted:   <this host>: {public}");
    } else {
        println!("identity written to {} (key {fingerprint})", path.display());
        println!("public key, for keys.recipients in the policies that encrypt to it:");
        println!("  {public}");
        println!(
            "Losing this file loses every recovery point encrypted only to it: nothing can decrypt them.\n\
             Keep it off the hosts that back up, and keep a second identity as escrow (offline, e.g. printed\n\
             in a safe) among every policy's recipients."
        );
    }
    Ok(ExitCode::Ok)
}

/// Creates `path` readable by its owner only; an existing file is never replaced.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io_path("cannot create the key file", path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io_path("cannot write the key file", path, e))
}

#[derive(Default)]
struct PerKey {
    name: String,
    points: usize,
    oldest: Option<DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

async fn list(args: &RepoArgs, export: Option<&str>, out: &Output) -> Result<ExitCode> {
    let scope = Scope::open(&args.selection(), export).await?;
    let current: Vec<String> = scope
        .policy
        .as_ref()
        .map(|p| {
            p.keys
                .recipients
                .values()
                .map(|k| drp_core::keys::fingerprint(k.trim()))
                .collect()
        })
        .unwrap_or_default();
    let mut keys: BTreeMap<String, PerKey> = BTreeMap::new();
    let mut plain = 0usize;
    let (listings, failed) = crate::repo::listings(&scope, export).await;
    for (_, listing) in &listings {
        for m in &listing.points {
            let Some(enc) = &m.encryption else {
                plain += 1;
                continue;
            };
            for k in &enc.recipients {
                let e = keys.entry(k.fingerprint.clone()).or_default();
                e.name = k.name.clone();
                e.points += 1;
                let t = m.consistency_time;
                e.oldest = Some(e.oldest.map_or(t, |o| o.min(t)));
                e.newest = Some(e.newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    let day = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d %H:%M").to_string());
    if out.json {
        let rows: Vec<_> = keys
            .iter()
            .map(|(fp, k)| {
                serde_json::json!({
                    "fingerprint": fp, "name": k.name, "points": k.points,
                    "oldest": k.oldest, "newest": k.newest,
                    "current": scope.policy.as_ref().map(|_| current.contains(fp)),
                })
            })
            .collect();
        out.print_json(
            &serde_json::json!({"keys": rows, "unencrypted_points": plain, "unreachable": failed}),
        );
    } else {
        let mut table = Table::new(&["KEY", "FINGERPRINT", "POINTS", "OLDEST", "NEWEST", "POLICY"]);
        for (fp, k) in &keys {
            let status = match (&scope.policy, current.contains(fp)) {
                (None, _) => "-",
                (Some(_), true) => "encrypts to it",
                (Some(_), false) => "retired: keep its identity until these points expire",
            };
            table.row(vec![
                k.name.clone(),
                fp.clone(),
                k.points.to_string(),
                day(k.oldest).unwrap_or_default(),
                day(k.newest).unwrap_or_default(),
                status.to_string(),
            ]);
        }
        if table.is_empty() {
            println!("no encrypted recovery points");
        } else {
            println!("{}", table.render());
        }
        if plain > 0 {
            println!("{plain} point(s) stored unencrypted (copies counted once per target)");
        }
        for f in &failed {
            eprintln!("not listed: {f}");
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}
