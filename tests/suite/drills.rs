//! Runbooks, drills and compliance reports against the real services: every
//! example runbook is drilled, RTO and RPO are checked against the recorded
//! timestamps, the HTML report is rendered by a real browser.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{
    Run, Scratch, chromium, eventually, mariadb, pg_table_digest, psql, rendered_dom, running,
    scratch,
};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn runbook(name: &str) -> String {
    repo_file(&format!("runbooks/{name}.yaml"))
        .display()
        .to_string()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// Checks what every passed drill must show: objectives met, RTO equal to the
/// recorded T_fail → last verify step, RPO equal to T_fail minus the restored
/// point's consistency time, the heartbeat RPO never below the true gap.
fn assert_measured(report: &serde_json::Value) {
    assert_eq!(report["status"], "passed", "{report:#}");
    let t_fail = time(&report["t_fail"]);
    let rto = report["rto"]["measured_seconds"].as_f64().unwrap();
    let last_verify = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["section"] == "main" && s["phase"] == "verify")
        .map(|s| time(&s["ended_at"]))
        .max()
        .unwrap();
    assert!(
        (rto - (last_verify - t_fail).num_milliseconds() as f64 / 1000.0).abs() < 0.01,
        "RTO {rto} vs timestamps"
    );
    let phases: f64 = report["rto"]["phases"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!(
        (phases - rto).abs() < 0.01,
        "phases add up to the RTO: {phases} vs {rto}"
    );
    assert!(rto <= report["objectives"]["rto_seconds"].as_f64().unwrap());
    let restored = &report["rpo"]["restored"][0];
    let rpo = report["rpo"]["measured_seconds"].as_f64().unwrap();
    let expected =
        (t_fail - time(&restored["consistency_time"])).num_milliseconds() as f64 / 1000.0;
    assert!(
        (rpo - expected).abs() < 1.0,
        "RPO {rpo} = T_fail - consistency time {expected}"
    );
    assert!(rpo <= report["objectives"]["rpo_seconds"].as_f64().unwrap());
    if let Some(hb) = report["rpo"]["heartbeat_seconds"].as_f64() {
        let written = time(&report["rpo"]["last_heartbeat_written"]);
        let true_gap_floor = (t_fail - written).num_milliseconds() as f64 / 1000.0;
        assert!(
            hb >= true_gap_floor - 0.001,
            "heartbeat RPO {hb} below the gap to the last heartbeat {true_gap_floor}"
        );
        assert!(
            hb + 0.01 >= rpo - 1.0,
            "heartbeat RPO {hb} is not smaller than the consistency RPO {rpo} by more than clock rounding"
        );
    }
}

fn drill(s: &Scratch, name: &str) -> Run {
    s.drp(&[
        "--json",
        "drill",
        &runbook(name),
        "--yes",
        "--out",
        "reports",
    ])
}

#[test]
fn every_example_runbook_parses_and_fits_its_objectives() {
    let mut s = scratch("rbcheck");
    s.shop_env();
    let mut args: Vec<String> = vec!["check".into()];
    for f in std::fs::read_dir(repo_file("runbooks")).unwrap() {
        let path = f.unwrap().path();
        let name = format!("runbooks/{}", path.file_name().unwrap().to_str().unwrap());
        // Checked by the test that gives them the cluster they read.
        if crate::examples::CHECKED_ELSEWHERE
            .iter()
            .any(|(file, _)| *file == name)
        {
            continue;
        }
        args.push(path.display().to_string());
    }
    assert!(args.len() >= 5, "{args:?}");
    args.push(repo_file("policies/shop.yaml").display().to_string());
    let r = s.drp(&args.iter().map(String::as_str).collect::<Vec<_>>());
    r.ok();
    assert_eq!(
        r.stdout.matches("runbook ").count(),
        args.len() - 2,
        "{}",
        r.stdout
    );
}

#[test]
fn drill_postgres_lost_against_nas_and_s3() {
    let mut s = scratch("drill_pg");
    s.shop_env();
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table orders (id serial primary key, item text, qty int); insert into orders (item, qty) select 'item ' || i, i % 9 from generate_series(1, 3000) i;",
    );
    let before = pg_table_digest(&db, "orders");
    let r = drill(&s, "postgres-lost");
    r.ok();
    let report = r.json();
    assert_measured(&report);
    assert_eq!(
        pg_table_digest(&db, "orders"),
        before,
        "the restored orders equal the originals"
    );
    assert!(
        report["rpo"]["heartbeat_seconds"].as_f64().is_some(),
        "{report:#}"
    );
    // The backup went to both targets; the report is stored on both.
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("(2 of 2 targets)")),
        "{report:#}"
    );
    let id = report["id"].as_str().unwrap();
    assert!(
        s.path(&format!("nas/reports/postgres-lost/{id}.json"))
            .is_file()
    );
    assert!(
        s.path(&format!("nas/reports/postgres-lost/{id}.html"))
            .is_file()
    );
    for ext in ["json", "md", "html", "junit.xml"] {
        assert!(
            s.path(&format!("reports/postgres-lost-{id}.{ext}"))
                .is_file(),
            "{ext}"
        );
    }
    let junit =
        std::fs::read_to_string(s.path(&format!("reports/postgres-lost-{id}.junit.xml"))).unwrap();
    assert!(
        junit.contains("failures=\"0\"") && junit.contains("RTO objective"),
        "{junit}"
    );
    psql(
        "postgres",
        &format!("drop database if exists {db} with (force)"),
    );
}

#[test]
fn drill_mariadb_lost() {
    let mut s = scratch("drill_my");
    s.shop_env();
    let db = s.id.clone();
    mariadb(None, &format!("create database {db}"));
    mariadb(
        Some(&db),
        "create table accounts (id int primary key auto_increment, name varchar(50)); insert into accounts (name) select concat('a', seq) from seq_1_to_2000;",
    );
    let r = drill(&s, "mariadb-lost");
    r.ok();
    assert_measured(&r.json());
    assert_eq!(mariadb(Some(&db), "select count(*) from accounts"), "2000");
    mariadb(None, &format!("drop database if exists {db}"));
}

fn sqlite_app(s: &Scratch) {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch(
        "pragma journal_mode = wal;
         create table orders (id integer primary key, item text);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) insert into orders (item) select 'o' || i from n;",
    )
    .unwrap();
}

#[test]
fn drill_sqlite_app_and_open_its_report_in_a_browser() {
    let mut s = scratch("drill_sqlite");
    s.shop_env();
    sqlite_app(&s);
    let r = drill(&s, "sqlite-app");
    r.ok();
    let report = r.json();
    assert_measured(&report);
    let n: i64 = rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1000);

    // The HTML page renders in a real headless browser with its timeline.
    let html = PathBuf::from(report["html"].as_str().unwrap());
    let html = if html.is_absolute() {
        html
    } else {
        s.path(html.to_str().unwrap())
    };
    let dom = rendered_dom(&html);
    assert!(
        dom.contains("id=\"timeline\""),
        "the timeline is in the rendered page"
    );
    assert!(
        dom.contains("data-phase=\"restore\"") && dom.contains("id=\"rto-objective\""),
        "{dom}"
    );
    assert!(dom.contains("PASSED"));
    // Recovered in far less than the objective: the phases are shown again
    // at the recovery's own scale.
    assert!(
        dom.contains("id=\"timeline-zoom\"")
            && dom.contains("class=\"phase-zoom\" data-phase=\"restore\""),
        "{dom}"
    );
    let artifacts =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("drill-report.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("file://{}", html.display());
    let out = chromium(&s.path("chromium-profile"))
        .args([
            "--window-size=1000,800",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
}

#[test]
fn drill_directory_tree() {
    let mut s = scratch("drill_dir");
    s.shop_env();
    std::fs::create_dir_all(s.path("uploads/img")).unwrap();
    std::fs::write(s.path("uploads/index.html"), "<h1>shop</h1>").unwrap();
    std::fs::write(s.path("uploads/img/logo.png"), vec![7u8; 5000]).unwrap();
    let r = drill(&s, "directory-tree");
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert!(report["rpo"]["measured_seconds"].as_f64().unwrap() < 60.0);
    assert_eq!(
        std::fs::read(s.path("uploads/img/logo.png")).unwrap(),
        vec![7u8; 5000]
    );
}

/// A small runbook over an SQLite app with a NAS, for the fault cases.
fn fault_setup(s: &Scratch, policy_extra: &str, steps: &str) -> String {
    sqlite_app(s);
    s.write(
        "policy.yaml",
        &format!(
            "host: f\nobjectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: nas}}\n{policy_extra}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n"
        ),
    );
    s.write(
        "runbook.yaml",
        &format!(
            "name: fault\npolicy: policy.yaml\ndrill:\n  backup_first: true\n  settle: 0s\n  inject:\n    - name: break\n      action: {{kind: sql, export: app, query: \"delete from orders\"}}\nsteps:\n  - name: restore\n    phase: restore\n    action: {{kind: restore_backup, export: app}}\n{steps}cleanup:\n  - name: cleanup ran\n    action: {{kind: command, run: \"touch cleanup-ran\"}}\n"
        ),
    )
    .display()
    .to_string()
}

#[test]
fn a_hanging_step_times_out_fails_the_drill_and_cleanup_still_runs() {
    let s = scratch("hangstep");
    let rb = fault_setup(
        &s,
        "",
        "  - name: app answers\n    phase: verify\n    action: {kind: command, run: \"sleep 60\"}\n    timeout: 1s\n",
    );
    let started = Instant::now();
    let r = s.drp(&["--json", "drill", &rb, "--yes"]);
    r.code(1);
    assert!(started.elapsed() < Duration::from_secs(30));
    let report = r.json();
    assert_eq!(report["status"], "failed");
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("step `app answers` timed out: no result within 1s"),
        "{report:#}"
    );
    assert!(s.path("cleanup-ran").exists());
    assert_eq!(report["rto"]["measured_seconds"], serde_json::Value::Null);
}

#[test]
fn a_verify_that_never_passes_fails_the_drill_with_the_reason() {
    let s = scratch("neverpass");
    let rb = fault_setup(
        &s,
        "",
        "  - name: orders are complete\n    phase: verify\n    action: {kind: sql, export: app, query: \"select count(*) from orders\", expect: {value: \"999999\"}}\n    timeout: 5s\n    retries: 2\n    backoff: 100ms\n",
    );
    let r = s.drp(&["--json", "drill", &rb, "--yes"]);
    r.code(1);
    let report = r.json();
    let why = report["failure"].as_str().unwrap();
    assert!(
        why.contains("step `orders are complete` failed") && why.contains("expected `999999`"),
        "{why}"
    );
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders are complete")
        .unwrap();
    assert_eq!(step["attempts"], 3);
    let md = s.drp(&["drill", &rb, "--yes", "--out", "out"]);
    md.code(1);
    assert!(
        md.stdout.contains("why: step `orders are complete` failed"),
        "{}",
        md.stdout
    );
}

#[test]
fn a_drill_killed_midway_is_reported_as_interrupted_not_passed() {
    let s = scratch("killed_drill");
    let rb = fault_setup(
        &s,
        "",
        "  - name: slow check\n    phase: verify\n    action: {kind: wait, duration: 60s}\n    timeout: 2m\n",
    );
    let mut child = s
        .drp_cmd(&["-q", "drill", &rb, "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let reports = s.path("nas/reports/fault");
    while std::fs::read_dir(&reports).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no running record was stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let r = s.drp(&["--json", "report", "--policy", "policy.yaml"]);
    r.code(8);
    let c = r.json();
    assert_eq!(c["runbooks"][0]["interrupted"], 1, "{c:#}");
    assert_eq!(c["runbooks"][0]["passed"], 0);
    let md = s.drp(&["report", "--policy", "policy.yaml"]);
    assert!(
        md.stdout.contains("| fault | interrupted |"),
        "{}",
        md.stdout
    );
}

#[test]
fn a_drill_stopped_with_ctrl_c_stops_what_its_step_started_and_reads_as_interrupted() {
    let s = scratch("ctrl_c_drill");
    let rb = fault_setup(
        &s,
        "",
        "  - name: slow check\n    phase: verify\n    action: {kind: command, run: [sh, -c, \"sleep 59; true\"]}\n    timeout: 2m\n",
    );
    let child = s
        .drp_cmd(&["drill", &rb, "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || running("sleep 59")),
        "the step's command started"
    );
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`fault` was interrupted"), "{stderr}");
    // Not only the shell: the `sleep` it started is gone too.
    assert!(
        eventually(Duration::from_secs(5), || !running("sleep 59")),
        "the step's command was left running"
    );
    let c = s
        .drp(&["--json", "report", "--policy", "policy.yaml"])
        .json();
    assert_eq!(c["runbooks"][0]["interrupted"], 1, "{c:#}");
}

#[test]
fn an_unreachable_report_store_keeps_the_report_locally_and_says_so() {
    let s = scratch("nostore");
    let rb = fault_setup(
        &s,
        "  gone:\n    kind: s3\n    bucket: b\n    endpoint: http://127.0.0.1:9\n    region: x\n    access_key_id: {env: TEST_S3_KEY_ID}\n    secret_access_key: {env: TEST_S3_SECRET}\n",
        "  - name: orders are back\n    phase: verify\n    action: {kind: sql, export: app, query: \"select count(*) from orders\", expect: {value: \"1000\"}}\n",
    );
    let r = s.drp(&["drill", &rb, "--yes"]);
    r.code(9);
    assert!(
        r.stderr.contains("report not stored on gone"),
        "{}",
        r.stderr
    );
    let local: Vec<_> = std::fs::read_dir(s.path("drp-reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        local.iter().any(|f| f.ends_with(".json")) && local.iter().any(|f| f.ends_with(".html")),
        "{local:?}"
    );
    assert!(
        std::fs::read_dir(s.path("nas/reports/fault"))
            .unwrap()
            .count()
            >= 1,
        "stored where it could be"
    );
}

#[test]
fn a_runbook_referencing_a_missing_export_is_refused_before_anything_runs() {
    let mut s = scratch("badrb");
    s.no_auto_init();
    sqlite_app(&s);
    s.write("policy.yaml", "host: f\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n");
    let rb = s.write(
        "runbook.yaml",
        "name: bad\npolicy: policy.yaml\nsteps:\n  - name: restore\n    phase: restore\n    action: {kind: restore_backup, export: ap}\n  - name: check\n    phase: detect\n    action: {kind: tcp, address: \"127.0.0.1:1\"}\n    on_failure: {fallback: [nope]}\n  - name: host\n    phase: verify\n    host: db-2\n    action: {kind: wait, duration: 1s}\n",
    );
    let r = s.drp(&["check", rb.to_str().unwrap()]);
    r.code(2);
    let e = &r.stderr;
    assert!(
        e.contains(
            "runbook.yaml:6:5: `steps[0].action`: unknown export `ap`; the policy defines: app"
        ),
        "{e}"
    );
    assert!(
        e.contains("`steps[1].phase`: phase `detect` comes after `restore`"),
        "{e}"
    );
    assert!(e.contains("no fallback step named `nope`"), "{e}");
    assert!(
        e.contains("`steps[2].host`: step on host `db-2`, and the runbook names no `inventory`"),
        "{e}"
    );
    let r = s.drp(&["drill", rb.to_str().unwrap(), "--yes"]);
    r.code(2);
    assert!(!s.path("nas").exists(), "nothing ran");
}

#[test]
fn compliance_report_counts_drills_and_shows_the_trend() {
    let mut s = scratch("compliance");
    s.shop_env();
    sqlite_app(&s);
    drill(&s, "sqlite-app").ok();
    drill(&s, "sqlite-app").ok();
    // A third drill whose restart check fails.
    s.set_env("SHOP_APP_CHECK", "false");
    drill(&s, "sqlite-app").code(1);
    let policy = repo_file("policies/shop.yaml").display().to_string();
    let runbooks = repo_file("runbooks").display().to_string();
    let html = s.path("compliance.html");
    let r = s.drp(&[
        "--json",
        "report",
        "--policy",
        &policy,
        "--since",
        "1d",
        "--runbooks",
        &runbooks,
        "--html",
        html.to_str().unwrap(),
    ]);
    r.code(8);
    let c = r.json();
    let rb = c["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runbook"] == "sqlite-app")
        .unwrap();
    assert_eq!(rb["drills"], 3);
    assert_eq!(rb["passed"], 2);
    assert_eq!(rb["failed"], 1);
    assert!(
        ["improving", "worsening", "stable"].contains(&rb["trend"].as_str().unwrap()),
        "{rb}"
    );
    let not_drilled: Vec<&str> = c["not_drilled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in ["postgres-lost", "mariadb-lost", "directory-tree"] {
        assert!(not_drilled.contains(&name), "{not_drilled:?}");
    }
    assert!(!not_drilled.contains(&"sqlite-app"));
    let app = c["exposure"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["export"] == "app-db")
        .unwrap();
    assert_eq!(app["within_rpo"], true, "{app}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("sqlite-app") && page.contains("<table>"));
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        !page.contains(&format!("{today}T")) && page.contains(&format!("{today} ")),
        "times are shown as `{today} HH:MM:SS UTC`, not RFC 3339"
    );

    // The page as Chromium renders it: per runbook, a bar per drill for the
    // RTO and the RPO against the objective's line, the failed drill in red.
    let dom = rendered_dom(&html);
    let chart = |measure: &str| {
        let at = dom
            .find(&format!(
                r#"data-runbook="sqlite-app" data-measure="{measure}""#
            ))
            .unwrap_or_else(|| panic!("no {measure} chart for sqlite-app:\n{dom}"));
        let end = dom[at..].find("</svg>").unwrap() + at;
        dom[at..end].to_string()
    };
    let rto = chart("rto");
    assert_eq!(rto.matches("drill-bar met").count(), 2, "{rto}");
    assert_eq!(
        rto.matches(r#"class="drill-bar none""#).count(),
        1,
        "the failed drill: {rto}"
    );
    assert_eq!(rto.matches(r#"class="objective""#).count(), 1);
    assert_eq!(chart("rpo").matches(r#"class="objective""#).count(), 1);
    assert!(
        dom.contains(r#"<td class="bad">FAILED</td>"#)
            || dom.contains(r#"<td class="bad">failed</td>"#),
        "verdicts are coloured"
    );
    let footer = regex_lite_footer(&dom);
    assert!(
        footer.starts_with("drp report last 1d for ") && footer.ends_with(" UTC"),
        "{footer}"
    );

    // And printed to PDF.
    let pdf = s.path("compliance.pdf");
    s.drp(&[
        "report",
        "--policy",
        &policy,
        "--since",
        "1d",
        "--pdf",
        pdf.to_str().unwrap(),
    ])
    .code(8);
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(
        bytes.starts_with(b"%PDF-") && bytes.len() > 10_000,
        "a PDF of {} bytes",
        bytes.len()
    );
    let q = s.drp(&[
        "--json",
        "report",
        "--policy",
        &policy,
        "--quarter",
        "2020Q1",
    ]);
    assert_eq!(
        q.json()["drills"].as_array().unwrap().len(),
        0,
        "no drill in 2020"
    );
}

/// The page's footer text.
fn regex_lite_footer(dom: &str) -> String {
    let at = dom.rfind("<p><small>").expect("a footer") + "<p><small>".len();
    let end = dom[at..].find("</small>").unwrap() + at;
    dom[at..end].to_string()
}

#[test]
fn an_incident_run_with_http_tcp_restart_and_notify_steps() {
    let s = scratch("incident");
    sqlite_app(&s);
    let hook = crate::receivers::http_sink(false);
    let addr = hook
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    s.write(
        "policy.yaml",
        &format!(
            "host: i\nobjectives: {{rto: 5m, rpo: 30m}}\nnotify: {{webhook: {{url: \"{}\"}}}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n",
            hook.url
        ),
    );
    let rb = s.write(
        "runbook.yaml",
        &format!(
            "name: incident\npolicy: policy.yaml\nsteps:\n  - name: the app port answers\n    phase: detect\n    action: {{kind: tcp, address: \"{addr}\"}}\n  - name: restore\n    phase: restore\n    action: {{kind: restore_backup, export: app, point: latest}}\n  - name: restart the app\n    phase: restart\n    action: {{kind: restart, command: \"touch restarted\", until: {{kind: http, url: \"{url}\", body_contains: ok}}}}\n    timeout: 20s\n  - name: health page\n    phase: verify\n    action: {{kind: http, url: \"{url}\", status: 200, body_contains: ok}}\ncleanup:\n  - name: tell the team\n    action: {{kind: notify, message: \"shop restored\"}}\n",
            url = hook.url
        ),
    );
    s.agent(&["backup", "--policy", "policy.yaml"]).ok();
    rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .execute("delete from orders", [])
        .unwrap();
    let failed_at = (chrono::Utc::now() - chrono::Duration::seconds(90)).to_rfc3339();
    // Without --yes and without a terminal, nothing is changed.
    let refused = s.drp(&["run", rb.to_str().unwrap(), "--failed-at", &failed_at]);
    refused.code(5);
    let n: i64 = rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "a refused run restores nothing");
    let r = s.drp(&[
        "--json",
        "run",
        rb.to_str().unwrap(),
        "--failed-at",
        &failed_at,
        "--yes",
    ]);
    r.ok();
    let report = r.json();
    assert_eq!(report["kind"], "incident");
    assert_eq!(report["status"], "passed", "{report:#}");
    // The RTO of an incident counts from the given failure time.
    assert!(report["rto"]["measured_seconds"].as_f64().unwrap() >= 90.0);
    assert!(s.path("restarted").exists());
    let n: i64 = rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1000);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(
        bodies.iter().any(|b| b.contains("shop restored")),
        "{bodies:?}"
    );
}

/// A standby rebuilt from the primary's repository: the standby host's
/// runbook restores the primary's export (`from_host:`) into its own, from
/// the targets they share; the primary's data is not touched, and a
/// `from_host:` without `into:` is refused before anything runs.
#[test]
fn a_runbook_restores_another_host_s_point_into_its_own_export_with_from_host() {
    let s = scratch("from_host");
    sqlite_app(&s);
    s.write(
        "primary.yaml",
        "host: shop-a\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
    );
    s.agent(&["init", "--policy", "primary.yaml"]).ok();
    s.agent(&["backup", "--policy", "primary.yaml"]).ok();
    s.write(
        "standby.yaml",
        "host: shop-b\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: standby.db}\n    targets: [nas]\n",
    );
    let step = |extra: &str| {
        format!(
            "name: rebuild-standby\npolicy: standby.yaml\nsteps:\n  - name: shop-a's newest point onto shop-b\n    phase: restore\n    \
             action: {{kind: restore_backup, export: app, from_host: shop-a, point: latest{extra}}}\n  \
             - name: the orders are there\n    phase: verify\n    \
             action: {{kind: sql, export: app, query: \"select count(*) from orders\", expect: {{value: \"1000\"}}}}\n"
        )
    };
    let bad = s.write("bad.yaml", &step(""));
    let refused = s.drp(&["check", bad.to_str().unwrap()]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stdout.contains("from_host: shop-a")
            || refused.stderr.contains("from_host: shop-a"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    let rb = s.write("rebuild.yaml", &step(", into: app"));
    let r = s.drp(&["--json", "run", rb.to_str().unwrap(), "--yes"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["rpo"]["restored"][0]["export"], "app");
    let n: i64 = rusqlite::Connection::open(s.path("standby.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1000);
}
