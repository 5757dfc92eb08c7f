//! The embedded default: no server needed. A demo SQLite application with a
//! heartbeat table is exported to a local folder acting as the NAS, then
//! listed, verified, damaged on purpose and restored, with the data checked.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use drp_agent::cli::Output;
use drp_agent::config::Policy;
use drp_agent::restore::{self, Selector};
use drp_agent::verify::{self, Which};
use drp_agent::{Error, ExitCode, Result, backup, source};

const POLICY: &str = r#"# drp demo policy: an SQLite application exported to a local folder (the "NAS").
host: demo
objectives:
  rto: 5m
  rpo: 30m
targets:
  nas:
    kind: local
    path: nas
exports:
  app:
    source:
      kind: sqlite
      path: app.db
    schedule: "*/15 * * * *"
    targets: [nas]
    compression:
      level: 3
    retention:
      keep_last: 10
      keep_daily: 7
"#;

pub async fn run(dir: &Path, out: &Output) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, POLICY)
        .map_err(|e| Error::io_path("cannot write", &policy_path, e))?;
    let db = dir.join("app.db");
    let rows = seed(&db)?;
    say(
        out,
        &format!("1. demo application {} holds {rows} orders", db.display()),
    );

    let policy = Policy::load(&policy_path)?;
    let report = backup::run(&policy, "app", out.progress()).await?;
    if let Some(e) = report.source_error {
        return Err(e);
    }
    let committed: Vec<_> = report.committed().cloned().collect();
    let Some(m) = committed.first() else {
        let why: Vec<String> = report
            .targets
            .iter()
            .filter_map(|t| t.result.as_ref().err().map(|e| e.to_string()))
            .collect();
        return Err(Error::Failed(format!("backup failed: {}", why.join("; "))));
    };
    say(
        out,
        &format!(
            "2. backed up to {}: point {} ({} bytes raw, {} stored, sha256 {}…)",
            dir.join("nas").display(),
            m.id,
            m.raw.size,
            m.stored.size,
            &m.stored.sha256[..16]
        ),
    );

    let repos: Vec<_> = backup::open_targets(&policy, &["nas".to_string()], false)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<_>>()?;
    let listing = repos[0].list(&policy.host, "app").await?;
    say(
        out,
        &format!(
            "3. the NAS lists {} recovery point(s) for demo/app",
            listing.points.len()
        ),
    );

    let checked = verify::verify(
        &repos[0],
        &policy.host,
        "app",
        Which::Latest,
        out.progress(),
    )
    .await;
    if let Some(bad) = checked.iter().find_map(|c| c.result.as_ref().err()) {
        return Err(Error::Failed(format!("verify failed: {bad}")));
    }
    say(
        out,
        "4. verify re-read the point: sizes and both SHA-256 digests match",
    );

    let deleted = delete_orders(&db)?;
    say(
        out,
        &format!("5. disaster: {deleted} orders deleted from the live database"),
    );

    let src: Arc<dyn source::Source> = Arc::from(source::build(
        &policy.export("app")?.source,
        &policy.base_dir,
    ));
    let plan = restore::plan(
        &repos,
        &policy.host,
        "app",
        &Selector::Latest,
        src.clone(),
        None,
    )
    .await?;
    let report = restore::execute(&plan, src, true, None, out.progress()).await?;
    let after = count_orders(&db)?;
    say(
        out,
        &format!(
            "6. restored {} into {} in {:.2}s: {after} orders back (expected {rows})",
            report.id, report.destination, report.seconds
        ),
    );
    if after != rows {
        return Err(Error::Failed(format!(
            "restored {after} orders, expected {rows}"
        )));
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "demo": "ok", "point": m.id, "orders": rows, "restored_orders": after,
            "policy": policy_path, "restore_seconds": report.seconds,
        }));
    } else {
        println!(
            "demo complete: the policy is {} — try `drp-agent list --policy {}`",
            policy_path.display(),
            policy_path.display()
        );
    }
    Ok(ExitCode::Ok)
}

fn say(out: &Output, line: &str) {
    if !out.json {
        println!("{line}");
    }
}

fn db_err(db: &Path, e: rusqlite::Error) -> Error {
    Error::Failed(format!("demo database {}: {e}", db.display()))
}

/// Creates the demo application's database afresh: orders and a heartbeat.
fn seed(db: &Path) -> Result<i64> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
    conn.execute_batch(
        "pragma journal_mode = wal;
         create table orders (id integer primary key, customer text not null, total_cents integer not null, placed_at text not null);
         create table heartbeat (id integer primary key, beat_at text not null);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000)
         insert into orders (customer, total_cents, placed_at)
           select 'customer-' || (i % 97), (i * 7919) % 100000, datetime('now', '-' || i || ' minutes') from n;
         insert into heartbeat (beat_at) values (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));",
    )
    .map_err(|e| db_err(db, e))?;
    count_orders(db)
}

fn count_orders(db: &Path) -> Result<i64> {
    let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
    conn.query_row("select count(*) from orders", [], |r| r.get(0))
        .map_err(|e| db_err(db, e))
}

fn delete_orders(db: &Path) -> Result<usize> {
    let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
    conn.execute("delete from orders", [])
        .map_err(|e| db_err(db, e))
}
