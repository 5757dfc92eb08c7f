//! The checks of a restored copy: the engine answers and its tables hold
//! rows (a tree holds files), then the policy's own checks.

use std::path::Path;
use std::sync::Arc;

use super::instance::Checked;
use crate::config::{Check, SourceConfig};
use crate::records::CheckResult;
use crate::source::Source;
use crate::{Error, Result};

/// The checks of a restored copy, on a blocking thread (they run tools).
pub(super) async fn check(
    source: Arc<dyn Source>,
    instance: Checked,
    checks: &[Check],
) -> Result<Vec<CheckResult>> {
    let checks = checks.to_vec();
    tokio::task::spawn_blocking(move || validate(source.as_ref(), &instance, &checks))
        .await
        .map_err(|e| Error::Failed(format!("the checks stopped: {e}")))
}

/// The engine answers, tables hold rows, and the policy's checks pass.
fn validate(source: &dyn Source, instance: &Checked, checks: &[Check]) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let database = match &instance.kind {
        SourceConfig::Sqlite(_) => instance.to.clone(),
        _ => None,
    };
    match &instance.kind {
        SourceConfig::Directory(c) => {
            let files = count_files(&c.path);
            out.push(CheckResult {
                check: "the tree holds files".into(),
                passed: files > 0,
                detail: format!("{files} files"),
            });
            for check in checks {
                if let Check::Files { min_files } = check {
                    out.push(CheckResult {
                        check: format!("at least {min_files} files"),
                        passed: files >= *min_files,
                        detail: format!("{files} files"),
                    });
                }
            }
        }
        kind => {
            let tables = match kind {
                SourceConfig::Sqlite(_) => {
                    "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by 1"
                }
                SourceConfig::Mysql(_) => {
                    "select concat('`', replace(table_name, '`', '``'), '`') from information_schema.tables \
                     where table_schema = database() and table_type = 'BASE TABLE' order by 1"
                }
                _ => {
                    "select quote_ident(schemaname) || '.' || quote_ident(tablename) from pg_tables \
                     where schemaname not in ('pg_catalog', 'information_schema') order by 1"
                }
            };
            match source.sql(database.as_deref(), tables) {
                Ok(rows) => {
                    let names: Vec<String> = rows
                        .into_iter()
                        .filter_map(|r| r.into_iter().next())
                        .collect();
                    let mut empty = Vec::new();
                    for t in &names {
                        let q = format!("select count(*) from (select 1 from {t} limit 1) x");
                        match source.sql(database.as_deref(), &q) {
                            Ok(r)
                                if r.first().and_then(|r| r.first()).is_some_and(|v| v == "1") => {}
                            _ => empty.push(t.clone()),
                        }
                    }
                    out.push(CheckResult {
                        check: "the engine answers and its tables hold rows".into(),
                        passed: !names.is_empty() && empty.len() < names.len(),
                        detail: if empty.is_empty() {
                            format!("{} tables, none empty", names.len())
                        } else {
                            format!("{} tables; empty: {}", names.len(), empty.join(", "))
                        },
                    });
                }
                Err(e) => out.push(CheckResult {
                    check: "the engine answers".into(),
                    passed: false,
                    detail: e.to_string(),
                }),
            }
            for check in checks {
                if let Check::Sql { sql, expect } = check {
                    let got = source.sql(database.as_deref(), sql).map(|r| {
                        r.first()
                            .and_then(|r| r.first())
                            .cloned()
                            .unwrap_or_default()
                    });
                    out.push(match got {
                        Ok(v) => CheckResult {
                            check: sql.clone(),
                            passed: &v == expect,
                            detail: format!("{v:?} (expected {expect:?})"),
                        },
                        Err(e) => CheckResult {
                            check: sql.clone(),
                            passed: false,
                            detail: e.to_string(),
                        },
                    });
                }
            }
        }
    }
    out
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}
