//! Hostile values where a policy or runbook takes them: a restart unit or a
//! command argument that tries to be a shell command, environment values
//! that try to be YAML, a webhook URL's token that must never be written
//! anywhere, SMTP credentials that must never cross a connection without TLS.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::harness::{Scratch, files_containing, mariadb, psql, scratch};
use crate::receivers;

/// A SQLite application database with a few orders.
fn app_db(s: &Scratch) {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch(
        "create table orders (id integer primary key, item text); insert into orders (item) values ('a'), ('b'), ('c');",
    )
    .unwrap();
}

fn policy(s: &Scratch, notify: &str) {
    s.write(
        "policy.yaml",
        &format!(
            "host: i\nobjectives: {{rto: 5m, rpo: 30m}}\n{notify}targets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    schedule: \"*/15 * * * *\"\n    targets: [nas]\n"
        ),
    );
}

#[test]
fn a_restart_unit_or_a_command_argument_never_reaches_a_shell() {
    let mut s = scratch("inject_cmd");
    app_db(&s);
    policy(&s, "");
    // A unit name from the environment that would be two commands for `sh -c`.
    s.set_env("DRP_TEST_UNIT", "shop.service; touch pwned-by-unit");
    let rb = s.write(
        "unit.yaml",
        "name: unit\npolicy: policy.yaml\nsteps:\n  - name: restart the shop\n    phase: restart\n    action: {kind: restart, unit: \"${DRP_TEST_UNIT}\"}\n  - name: up\n    phase: verify\n    action: {kind: command, run: [true]}\n",
    );
    let run = s.drp(&["run", rb.to_str().unwrap(), "--yes"]);
    run.code(2);
    let file = rb.display().to_string();
    assert!(
        run.stderr
            .contains(&format!("{file}:6:5: `steps[0].action`"))
            && run
                .stderr
                .contains("invalid unit `shop.service; touch pwned-by-unit`"),
        "{}",
        run.stderr
    );
    assert!(!s.path("pwned-by-unit").exists(), "the unit ran a command");

    // A string command is words, not a script: shell syntax is refused.
    s.set_env("DRP_TEST_NAME", "x'; touch pwned-by-string; '");
    let rb = s.write(
        "string.yaml",
        "name: string\npolicy: policy.yaml\nsteps:\n  - name: make a file\n    phase: restart\n    action: {kind: command, destructive: true, run: \"touch '${DRP_TEST_NAME}'\"}\n  - name: up\n    phase: verify\n    action: {kind: command, run: [true]}\n",
    );
    let run = s.drp(&["run", rb.to_str().unwrap(), "--yes"]);
    run.code(2);
    assert!(
        run.stderr.contains("commands run without a shell"),
        "{}",
        run.stderr
    );
    assert!(
        !s.path("pwned-by-string").exists(),
        "a shell ran the string"
    );

    // In a list, a value is one argument whatever it holds.
    s.set_env("DRP_TEST_NAME", "a; touch pwned-by-list");
    let rb = s.write(
        "list.yaml",
        "name: list\npolicy: policy.yaml\nsteps:\n  - name: make a file\n    phase: restart\n    action: {kind: command, destructive: true, run: [touch, \"${DRP_TEST_NAME}\"]}\n  - name: up\n    phase: verify\n    action: {kind: command, run: [test, -e, \"${DRP_TEST_NAME}\"]}\n",
    );
    // (The run itself reads as failed: it restores nothing, so no RPO.)
    let run = s.drp(&["run", rb.to_str().unwrap(), "--yes"]);
    assert!(s.path("a; touch pwned-by-list").is_file(), "{}", run.all());
    assert!(
        !s.path("pwned-by-list").exists(),
        "a shell ran the argument"
    );
}

#[test]
fn sql_in_a_step_is_sent_to_the_server_never_run_as_a_client_command() {
    let s = scratch("inject_sql");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    mariadb(None, &format!("create database {db}"));
    s.write(
        "policy.yaml",
        &format!(
            "host: i\nobjectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  pg:\n    source: {}\n    targets: [nas]\n  my:\n    source: {}\n    targets: [nas]\n",
            s.pg_source_yaml(&db),
            s.my_source_yaml(&db)
        ),
    );
    let (pg_marker, my_marker) = (s.path("pwned-by-psql"), s.path("pwned-by-mariadb"));
    let step = |name: &str, export: &str, query: String| {
        format!(
            "  - name: {name}\n    phase: verify\n    on_failure: continue\n    action: {{kind: sql, export: {export}, query: {}}}\n",
            serde_json::to_string(&query).unwrap()
        )
    };
    s.write(
        "runbook.yaml",
        &format!(
            "name: sql\npolicy: policy.yaml\nsteps:\n{}{}{}",
            step(
                "psql",
                "pg",
                format!("select 1\n\\! touch {}\n", pg_marker.display())
            ),
            step(
                "mariadb",
                "my",
                format!("select 1;\n\\! touch {}\n", my_marker.display())
            ),
            step(
                "mariadb system",
                "my",
                format!("system touch {}\n", my_marker.display())
            ),
        ),
    );
    let r = s.drp(&["--json", "run", "runbook.yaml", "--yes"]);
    let report = r.json();
    for step in report["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "failed", "{report:#}");
    }
    assert!(!pg_marker.exists(), "psql ran a shell command from a query");
    assert!(
        !my_marker.exists(),
        "mariadb ran a shell command from a query"
    );
    psql("postgres", &format!("drop database {db} with (force)"));
    mariadb(None, &format!("drop database {db}"));
}

#[test]
fn environment_values_are_values_never_yaml() {
    let mut s = scratch("inject_env");
    app_db(&s);
    // Quotes, `: `, `#`, a newline and a secret reference: all one folder name.
    let nas = "nas \" x: y #z\n{env: X}";
    s.set_env("DRP_TEST_NAS", nas);
    s.write(
        "policy.yaml",
        "host: i\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas:\n    kind: local\n    path: ${DRP_TEST_NAS}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
    );
    s.agent(&["backup", "--policy", "policy.yaml"]).ok();
    assert!(
        s.path(nas).join("drp-repository.json").is_file(),
        "the repository is in the folder named by the whole value"
    );

    // In a runbook, a value cannot add a step.
    s.set_env(
        "DRP_TEST_STEP",
        "up\"}\n  - name: injected\n    phase: verify\n    action: {kind: command, run: [touch, pwned]",
    );
    let rb = s.write(
        "runbook.yaml",
        "name: env\npolicy: policy.yaml\nsteps:\n  - name: \"${DRP_TEST_STEP}\"\n    phase: verify\n    action: {kind: command, run: [true]}\n",
    );
    let check = s.drp(&["--json", "check", rb.to_str().unwrap()]);
    check.ok();
    assert_eq!(check.json()["policies"][0]["steps"], 1, "{}", check.stdout);

    // An unset variable is located at the key that holds it.
    let rb = s.write(
        "unset.yaml",
        "name: env\npolicy: policy.yaml\nsteps:\n  - name: up\n    phase: verify\n    action: {kind: command, run: [test, -e, \"${DRP_TEST_SURELY_UNSET}\"]}\n",
    );
    let run = s.drp(&["check", rb.to_str().unwrap()]);
    run.code(2);
    assert!(
        run.stderr.contains(&format!(
            "{}:6:45: `steps[0].action.run[2]`: environment variable `DRP_TEST_SURELY_UNSET` is not set",
            rb.display()
        )),
        "{}",
        run.stderr
    );
}

const TOKEN: &str = "T0KEN-4f1c9a7e";

/// A runbook that restores the app and tells the team.
fn notify_runbook(s: &Scratch) -> String {
    s.write(
        "runbook.yaml",
        "name: tell\npolicy: policy.yaml\nsteps:\n  - name: restore\n    phase: restore\n    action: {kind: restore_backup, export: app, point: latest}\n  - name: orders are back\n    phase: verify\n    action: {kind: sql, export: app, query: \"select count(*) from orders\", expect: {min: 1}}\ncleanup:\n  - name: tell the team\n    action: {kind: notify, message: \"shop restored\"}\n",
    )
    .display()
    .to_string()
}

#[test]
fn a_webhook_url_is_a_secret_and_never_written_anywhere() {
    let mut s = scratch("inject_hook");
    app_db(&s);
    let hook = receivers::http_sink(false);
    s.set_env(
        "DRP_TEST_HOOK",
        &format!("{}/{TOKEN}?token={TOKEN}", hook.url),
    );
    policy(
        &s,
        "notify:\n  on: [failure, success]\n  webhook: {url: {env: DRP_TEST_HOOK}}\n",
    );
    let rb = notify_runbook(&s);
    let mut outputs = vec![s.agent(&["backup", "--policy", "policy.yaml"])];
    outputs[0].ok();
    let run = s.drp(&["--json", "run", &rb, "--yes", "--out", "reports"]);
    run.ok();
    let report = run.json();
    let notified = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "tell the team")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(notified["status"], "passed", "{report:#}");
    outputs.push(run);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "the backup and the runbook: {bodies:?}");
    assert!(bodies[1].contains("shop restored"), "{bodies:?}");

    // The webhook goes away: the errors say so, without the URL.
    s.set_env("DRP_TEST_HOOK", &format!("http://127.0.0.1:1/{TOKEN}"));
    let run = s.drp(&["--json", "run", &rb, "--yes", "--out", "reports"]);
    let report = run.json();
    let notified = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "tell the team")
        .unwrap();
    assert_ne!(notified["status"], "passed", "{report:#}");
    assert!(
        notified.to_string().contains("could not connect"),
        "{notified}"
    );
    outputs.push(run);
    outputs.push(s.agent(&["backup", "--policy", "policy.yaml"]));
    outputs.push(s.agent(&["--json", "status", "--policy", "policy.yaml"]));
    outputs.push(s.agent(&["status", "--policy", "policy.yaml"]));
    outputs.push(s.drp(&["check", "policy.yaml", &rb]));
    for o in &outputs {
        assert!(!o.all().contains(TOKEN), "{}", o.all());
    }
    assert!(
        s.path("reports").read_dir().unwrap().next().is_some(),
        "reports were written"
    );
    let leaked = files_containing(s.dir.path(), TOKEN);
    assert!(leaked.is_empty(), "the token is in {leaked:?}");
}

#[test]
fn a_webhook_url_written_in_the_policy_is_warned_about_and_kept_out_of_outputs() {
    let s = scratch("inject_hook_inline");
    app_db(&s);
    policy(
        &s,
        &format!("notify:\n  webhook: {{url: \"http://127.0.0.1:1/hook/{TOKEN}\"}}\n"),
    );
    let rb = notify_runbook(&s);
    let backup = s.agent(&["backup", "--policy", "policy.yaml"]);
    backup.ok();
    let check = s.drp(&["check", "policy.yaml"]);
    check.ok();
    assert!(
        check
            .stderr
            .contains("policy.yaml:4:13: `notify.webhook.url`")
            && check.stderr.contains("reference it instead"),
        "{}",
        check.stderr
    );
    let run = s.drp(&["--json", "run", &rb, "--yes", "--out", "reports"]);
    for o in [&backup, &check, &run] {
        assert!(!o.all().contains(TOKEN), "{}", o.all());
    }
    let leaked: Vec<String> = files_containing(s.dir.path(), TOKEN)
        .into_iter()
        .filter(|p| !p.ends_with("/policy.yaml"))
        .collect();
    assert!(leaked.is_empty(), "the token is in {leaked:?}");
}

/// An SMTP server on loopback that offers AUTH but not STARTTLS, and records
/// every command line it receives.
fn smtp_offering_auth_in_clear() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let store = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let store = store.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut out = stream.try_clone()?;
                let mut reader = BufReader::new(stream);
                out.write_all(b"220 plain.local ESMTP\r\n")?;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    store.lock().unwrap().push(line.clone());
                    let cmd = line.trim_end().to_ascii_uppercase();
                    if in_data {
                        if cmd == "." {
                            in_data = false;
                            out.write_all(b"250 OK\r\n")?;
                        }
                    } else if cmd.starts_with("EHLO") {
                        out.write_all(b"250-plain.local\r\n250 AUTH PLAIN LOGIN\r\n")?;
                    } else if cmd.starts_with("AUTH") {
                        out.write_all(b"235 accepted\r\n")?;
                    } else if cmd == "DATA" {
                        in_data = true;
                        out.write_all(b"354 go ahead\r\n")?;
                    } else if cmd == "QUIT" {
                        out.write_all(b"221 bye\r\n")?;
                        return Ok(());
                    } else {
                        out.write_all(b"250 OK\r\n")?;
                    }
                }
            });
        }
    });
    (port, lines)
}

#[test]
fn smtp_credentials_never_cross_a_connection_without_tls() {
    let mut s = scratch("inject_smtp");
    app_db(&s);
    let (port, lines) = smtp_offering_auth_in_clear();
    let password = "smtp-hunter2";
    s.set_env("DRP_TEST_SMTP_PW", password);
    let email = |extra: &str| {
        format!(
            "notify:\n  on: [success]\n  email: {{server: 127.0.0.1, port: {port}, from: drp@i.example, to: [ops@example.com], username: drp, password: {{env: DRP_TEST_SMTP_PW}}{extra}}}\n"
        )
    };
    // `security` left out: STARTTLS is required, the server does not offer it.
    policy(&s, &email(""));
    let run = s.agent(&["backup", "--policy", "policy.yaml"]);
    run.ok();
    assert!(
        run.all().contains("email notification failed"),
        "{}",
        run.all()
    );
    let seen = lines.lock().unwrap().join("");
    assert!(!seen.to_ascii_uppercase().contains("AUTH"), "{seen}");
    assert!(
        !seen.contains("MAIL FROM"),
        "nothing is sent without TLS: {seen}"
    );

    // `security: none` with credentials is refused before anything runs.
    policy(&s, &email(", security: none"));
    let run = s.agent(&["backup", "--policy", "policy.yaml"]);
    run.code(2);
    assert!(
        run.stderr.contains("`notify.email.security`")
            && run.stderr.contains("allow_plaintext_auth: true"),
        "{}",
        run.stderr
    );
    // Said in as many words, it is allowed (a relay on a trusted network).
    policy(&s, &email(", security: none, allow_plaintext_auth: true"));
    s.agent(&["backup", "--policy", "policy.yaml"]).ok();
    let seen = lines.lock().unwrap().join("");
    assert!(seen.contains("AUTH"), "{seen}");
}
