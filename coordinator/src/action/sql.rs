//! SQL check on an export's database (PostgreSQL, MariaDB, SQLite), with an
//! expectation on the result; also runs plain statements (drill injections).

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid, Poll};
use drp_core::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// The export whose connection settings are used.
    pub export: String,
    /// Another database on the same server (or another SQLite file).
    pub database: Option<String>,
    pub query: String,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub destructive: bool,
    #[serde(flatten)]
    pub poll: Poll,
    /// Run in a session that cannot write: set by a host for the checks it
    /// runs for a coordinator, never read from a runbook.
    #[serde(skip)]
    pub read_only: bool,
}

/// What the result must be; every condition given must hold. The value is
/// the first column of the first row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub rows: Option<usize>,
    pub value: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl SqlCheck {
    async fn once(&self, ctx: &Context) -> Result<String, ActionError> {
        let export = ctx.policy.export(&self.export)?;
        let source = drp_core::source::build(&export.source, &ctx.policy.base_dir);
        let (db, query) = (self.database.clone(), self.query.clone());
        let read_only = self.read_only;
        let rows =
            tokio::task::spawn_blocking(move || source.run_sql(db.as_deref(), &query, read_only))
                .await?
                .map_err(|e| match read_only {
                    true => ActionError::failed(format!(
                        "{e} (this host runs a coordinator's SQL as one statement that only reads, unless the step is declared a change on a host that allows changes)"
                    )),
                    false => e.into(),
                })?;
        let first = rows.first().and_then(|r| r.first()).cloned();
        let e = &self.expect;
        if let Some(n) = e.rows
            && rows.len() != n
        {
            return Err(ActionError::failed(format!(
                "{} rows, expected {n}",
                rows.len()
            )));
        }
        if let Some(v) = &e.value
            && first.as_deref() != Some(v.as_str())
        {
            return Err(ActionError::failed(format!(
                "value {:?}, expected `{v}`",
                first.unwrap_or_default()
            )));
        }
        if e.min.is_some() || e.max.is_some() {
            let n: f64 = first
                .as_deref()
                .and_then(|f| f.trim().parse().ok())
                .ok_or_else(|| {
                    ActionError::failed(format!(
                        "value {:?} is not a number",
                        first.clone().unwrap_or_default()
                    ))
                })?;
            if let Some(min) = e.min.filter(|m| n < *m) {
                return Err(ActionError::failed(format!(
                    "value {n} is below the minimum {min}"
                )));
            }
            if let Some(max) = e.max.filter(|m| n > *m) {
                return Err(ActionError::failed(format!(
                    "value {n} is above the maximum {max}"
                )));
            }
        }
        Ok(match first {
            Some(v) => format!("{} row(s), value {v}", rows.len()),
            None => format!("{} row(s)", rows.len()),
        })
    }
}

impl Action for SqlCheck {
    fn describe(&self) -> String {
        format!("SQL on `{}`: {}", self.export, self.query.trim())
    }

    fn destructive(&self) -> bool {
        self.destructive
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        match policy.exports.get(&self.export) {
            None => Err(Invalid::unknown_export(&self.export, policy)),
            Some(e) if !e.source.kind().is_database() => Err(Invalid::NoSql(self.export.clone())),
            Some(_) => Ok(()),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(super::poll(self.poll, move || self.once(ctx)))
    }
}
