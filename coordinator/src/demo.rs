//! The embedded default: no server needed. A demo SQLite application (orders
//! and a heartbeat) is protected by a policy exporting it to a local folder
//! acting as the NAS; a drill then backs it up, injects a failure (a bad
//! deploy deletes the orders), restores, verifies, and measures RTO and RPO
//! against 5 minutes and 30 minutes, with an HTML report.

use std::path::Path;

use rusqlite::Connection;

use drp_cli::Output;
use drp_coordinator::report::Kind;
use drp_core::{Error, ExitCode, Result};

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
    retention:
      keep_last: 10
      keep_daily: 7
"#;

const RUNBOOK: &str = r#"# drp demo runbook: the app's orders are lost; restore and check them.
name: demo-app
policy: policy.yaml
heartbeat:
  export: app
  interval: 1s
drill:
  backup_first: true
  settle: 2s
  inject:
    - name: a bad deploy deletes every order
      action: {kind: sql, export: app, destructive: true, query: "delete from orders"}
steps:
  - name: orders are missing
    phase: detect
    action: {kind: sql, export: app, query: "select count(*) from orders", expect: {min: 1}, until: fails, interval: 500ms}
    timeout: 30s
  - name: restore the newest export before the failure
    phase: restore
    action: {kind: restore_backup, export: app}
    timeout: 2m
  - name: the database is sound
    phase: restart
    action: {kind: sql, export: app, query: "pragma quick_check", expect: {value: ok}}
    timeout: 30s
  - name: all 5000 orders are back
    phase: verify
    action: {kind: sql, export: app, query: "select count(*) from orders", expect: {value: "5000"}}
    timeout: 30s
"#;

pub async fn run(dir: &Path, out: &Output) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
    let policy_path = dir.join("policy.yaml");
    let runbook_path = dir.join("runbook.yaml");
    std::fs::write(&policy_path, POLICY)
        .map_err(|e| Error::io_path("cannot write", &policy_path, e))?;
    std::fs::write(&runbook_path, RUNBOOK)
        .map_err(|e| Error::io_path("cannot write", &runbook_path, e))?;
    let db = dir.join("app.db");
    let rows = seed(&db)?;
    say(
        out,
        &format!(
            "demo application {} holds {rows} orders; policy {}, runbook {}",
            db.display(),
            policy_path.display(),
            runbook_path.display()
        ),
    );

    // What `drp-agent init --policy policy.yaml` does: repositories are only
    // ever created on purpose.
    let policy = drp_core::config::Policy::load(&policy_path)?;
    for (name, config) in &policy.targets {
        drp_core::repository::Repository::create(name, config, &policy.base_dir).await?;
        say(
            out,
            &format!(
                "repository ready on target `{name}` ({}), as `drp-agent init --policy {}` makes it",
                config.backend().location(),
                policy_path.display()
            ),
        );
    }

    let runbook = drp_coordinator::runbook::Runbook::load(&runbook_path)?;
    let options = drp_coordinator::drill::Options {
        kind: Kind::Drill,
        failed_at: None,
        confirm: Box::new(|_| true),
        workdir: None,
        force: false,
    };
    let quiet = out.json || out.quiet;
    let observe = move |e: drp_coordinator::engine::Event| {
        if let (false, drp_coordinator::engine::Event::Finished(r)) = (quiet, e) {
            println!("  {}", drp_coordinator::drill::summary_line(r));
        }
    };
    let (report, not_stored) = drp_coordinator::drill::execute(&runbook, options, &observe).await?;
    let html = drp_coordinator::report::write_local(&report, &dir.join("reports"))?;
    let f = drp_coordinator::report::markdown::fmt_secs;
    if out.json {
        let mut v = serde_json::to_value(&report).expect("serialises");
        v["html"] = serde_json::json!(html);
        out.print_json(&v);
    } else {
        println!(
            "drill {}: {}",
            report.runbook,
            report.shown_status().to_uppercase()
        );
        if let (Some(rto), Some(rpo)) = (&report.rto, &report.rpo) {
            println!(
                "RTO {} against {} ({}); RPO {} against {} ({}); RPO from the heartbeat {}",
                rto.measured_seconds
                    .map(f)
                    .unwrap_or_else(|| "not recovered".into()),
                f(report.objectives.rto_seconds),
                if rto.met { "met" } else { "MISSED" },
                rpo.measured_seconds.map(f).unwrap_or_else(|| "-".into()),
                f(report.objectives.rpo_seconds),
                if rpo.met { "met" } else { "MISSED" },
                rpo.heartbeat_seconds.map(f).unwrap_or_else(|| "-".into()),
            );
        }
        if let Some(why) = &report.failure {
            println!("why: {why}");
        }
        println!("HTML report: {}", html.display());
        println!(
            "next: `drp-agent list --policy {}`, `drp report --policy {}`",
            policy_path.display(),
            policy_path.display()
        );
    }
    for n in &not_stored {
        eprintln!("report not stored on {n}");
    }
    let after = count_orders(&db)?;
    if report.passed() && after != rows {
        return Err(Error::Failed(format!(
            "restored {after} orders, expected {rows}"
        )));
    }
    Ok(if report.passed() {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

fn say(out: &Output, line: &str) {
    if !out.json {
        println!("{line}");
    }
}

fn db_err(db: &Path, e: rusqlite::Error) -> Error {
    Error::Failed(format!("demo database {}: {e}", db.display()))
}

/// Creates the demo application's database afresh.
fn seed(db: &Path) -> Result<i64> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
    conn.execute_batch(
        "pragma journal_mode = wal;
         create table orders (id integer primary key, customer text not null, total_cents integer not null, placed_at text not null);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 5000)
         insert into orders (customer, total_cents, placed_at)
           select 'customer-' || (i % 97), (i * 7919) % 100000, datetime('now', '-' || i || ' minutes') from n;",
    )
    .map_err(|e| db_err(db, e))?;
    count_orders(db)
}

fn count_orders(db: &Path) -> Result<i64> {
    let conn = Connection::open(db).map_err(|e| db_err(db, e))?;
    conn.query_row("select count(*) from orders", [], |r| r.get(0))
        .map_err(|e| db_err(db, e))
}
