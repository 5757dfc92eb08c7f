//! A received MariaDB point loaded back: its stream read into a private
//! file with every statement of its dump checked on the way (`dump.rs`),
//! refused as a whole or loaded, with the accounts it carries that the
//! server lacks created first (`accounts.rs`).

use std::io::Read;
use std::path::Path;

use super::{Mysql, accounts, dump, unhex};
use crate::source::{CommitOptions, Committed, SourceError};

/// A point received for a restore: what its stream said ahead of the dump,
/// and why its dump is refused, if it is.
pub(super) struct Received {
    head: dump::Head,
    refusal: Option<String>,
}

impl Mysql {
    /// Loads a received point as `live`: refused (nothing changed) when its
    /// dump or its accounts are not what drp writes; otherwise the accounts
    /// the server lacks are created first (so that the definers of views,
    /// routines and triggers exist), the dump is loaded and swapped in, and
    /// the grants on its tables and routines follow.
    pub(super) fn load(
        &self,
        dump: &Path,
        live: &str,
        options: &CommitOptions,
        point: &Received,
    ) -> Result<Committed, SourceError> {
        if let Some(why) = &point.refusal {
            return Err(SourceError::Invalid(format!(
                "the point was not loaded, so database `{live}` was not touched: {why} (loaded, it could act outside the staged copy)"
            )));
        }
        let source = point.head.database.as_deref().unwrap_or(live);
        let carried = match &point.head.accounts {
            Some(text) => Some(accounts::read(text, source).map_err(SourceError::Invalid)?),
            None => None,
        };
        let after = match &carried {
            Some(all) => self.create_accounts(all, source, live)?,
            None => {
                self.say(format_args!(
                    "this point carries no accounts (it was taken before points carried them): create the accounts the application uses by hand if this server lacks them"
                ));
                Vec::new()
            }
        };
        let committed = self.load_dump(dump, live, options)?;
        if !after.is_empty()
            && let Err(e) = self.query(None, &accounts::write(&after, live))
        {
            tracing::warn!(
                "the grants on tables and routines of the accounts created were not all given: {e}"
            );
        }
        Ok(committed)
    }

    /// A note on accounts for whoever restores (logged only on a restore
    /// test's private server).
    fn say(&self, args: std::fmt::Arguments) {
        if self.config.throwaway {
            tracing::info!("{args}");
        } else {
            tracing::warn!("{args}");
        }
    }

    /// The accounts and roles the server has (a role has no host).
    fn server_accounts(
        &self,
    ) -> Result<std::collections::BTreeSet<accounts::Account>, SourceError> {
        let out = self.query(
            None,
            "select hex(user), hex(host), is_role from mysql.user;",
        )?;
        Ok(crate::source::postgres::rows(&out)
            .iter()
            .filter(|r| r.len() == 3)
            .map(|r| accounts::Account {
                user: unhex(&r[0]).unwrap_or_default(),
                host: (r[2] != "Y").then(|| unhex(&r[1]).unwrap_or_default()),
            })
            .collect())
    }

    /// Creates the point's accounts this server lacks, with their grants on
    /// the database (`live`) and their roles; returns the grants on tables
    /// and routines, to give once those exist. Existing accounts are left
    /// exactly as they are.
    fn create_accounts(
        &self,
        all: &[accounts::Statement],
        source: &str,
        live: &str,
    ) -> Result<Vec<accounts::Statement>, SourceError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let existing = match self.server_accounts() {
            Ok(e) => e,
            Err(e) => {
                self.say(format_args!(
                    "the point's accounts were not created: this login cannot list the server's accounts ({e})"
                ));
                return Ok(Vec::new());
            }
        };
        let plan = accounts::plan(all, &existing);
        let names = |list: &[accounts::Account]| {
            list.iter()
                .map(accounts::Account::shown)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut created = Vec::new();
        for s in &plan.create {
            if let Err(e) = self.query(None, &format!("{};", s.sql(live))) {
                // The client's message may quote the statement, hash and all.
                let code = error_code(&e);
                return Err(SourceError::Invalid(format!(
                    "cannot create the accounts the point carries ({code}); created before the error: {}; the database was not changed",
                    if created.is_empty() {
                        "none".to_string()
                    } else {
                        names(&created)
                    }
                )));
            }
            created.extend(s.creates());
        }
        if !plan.before.is_empty() {
            self.query(None, &accounts::write(&plan.before, live))
                .map_err(|e| {
                    SourceError::Invalid(format!(
                        "created the accounts {}, but their grants on `{live}` failed: {e}; the database was not changed",
                        names(&created)
                    ))
                })?;
        }
        if !created.is_empty() {
            self.say(format_args!(
                "created the accounts the point carries that this server lacked: {}",
                names(&created)
            ));
            if source != live {
                self.say(format_args!(
                    "their grants on `{source}` were given on `{live}`, the name it is restored as"
                ));
            }
        }
        if !plan.need_password.is_empty() {
            self.say(format_args!(
                "these accounts were created locked and need a password (the point carries none: `include_account_passwords` is off on its source): {} — set one with ALTER USER … IDENTIFIED BY '…' ACCOUNT UNLOCK",
                names(&plan.need_password)
            ));
        }
        for (role, to) in &plan.roles_not_granted {
            self.say(format_args!(
                "role `{role}` was not granted to {}: this server has its own role of that name, and drp grants only the roles it creates",
                to.shown()
            ));
        }
        if !plan.existing.is_empty() {
            tracing::info!(
                "accounts the point carries that this server has, left as they are: {}",
                names(&plan.existing)
            );
        }
        Ok(plan.after)
    }
}

/// Receives a point's stream into a private file in `workdir`: the header
/// read, the dump checked and rewritten on its way (see `dump`). A point
/// that is refused is still read to its end, so that its digests are
/// checked before anything is said about its content.
pub(super) fn receive(
    raw: &mut dyn Read,
    dest: &str,
    workdir: &Path,
) -> Result<(tempfile::NamedTempFile, Received), SourceError> {
    let mut file = crate::source::staging_file(workdir)?;
    let drain = |rest: &mut dyn Read| {
        std::io::copy(rest, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| SourceError::io("cannot receive the recovery point", e))
    };
    let (head, first) = match dump::read_head(raw) {
        Ok(h) => h,
        Err(why) => {
            drain(raw)?;
            let refusal = Some(format!(
                "the recovery point is not a MariaDB export drp can read: {why}"
            ));
            let head = dump::Head::default();
            return Ok((file, Received { head, refusal }));
        }
    };
    let mut rest = std::io::Cursor::new(first).chain(raw);
    let out = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
    let refusal = dump::Filter::new(head.database.as_deref(), Some(dest))
        .run(&mut rest, out)
        .map_err(|e| SourceError::io("cannot receive the recovery point", e))?
        .err();
    if refusal.is_some() {
        drain(&mut rest)?;
    }
    Ok((file, Received { head, refusal }))
}

/// The error code a failed client run reports (`ERROR 1396 (HY000)`),
/// without the message, which may quote the statement.
fn error_code(e: &SourceError) -> String {
    let text = e.to_string();
    text.find("ERROR ")
        .map(|at| {
            text[at..]
                .split(" at line")
                .next()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "the client failed".into())
}
