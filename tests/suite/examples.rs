//! The examples drp ships, tested as documentation: every policy and runbook
//! in `policies/` and `runbooks/` passes `drp check` (or exits as a
//! `# drp check: exits N unless VAR and VAR are set` line in it says), and
//! the README's tour of the CLI runs, line by line, against the real
//! services. The examples' `${VAR:-default}` values point them at this
//! test's databases, folders and buckets.

use std::path::{Path, PathBuf};

use crate::harness::{Scratch, mariadb, psql, scratch, services};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Examples `drp check`ed by a test that gives them what they describe:
/// hosts in namespaces for the fleet's runbook, a running cluster whose
/// archiving settings the check reads.
pub(crate) const CHECKED_ELSEWHERE: [(&str, &str); 5] = [
    (
        "policies/erp/failover.yaml",
        "fencing::the_erp_failover_drill_fences_provider_a_moves_the_name_and_fails_back",
    ),
    (
        "policies/fleet/db-lost.yaml",
        "fleet::tests::a_runbook_restores_postgres_on_host_b_from_s3_and_checks_it_from_host_c",
    ),
    (
        "policies/db-cluster.yaml",
        "archiving::the_example_policy_meets_a_30_minute_rpo_with_archive_timeout_60s_and_says_what_to_set_without",
    ),
    (
        "policies/streaming.yaml",
        "streaming::the_streaming_plan_rolls_back_a_bad_update_then_restores_a_lost_database_on_its_own_and_reports_both",
    ),
    (
        "runbooks/streaming-db-lost.yaml",
        "streaming::the_streaming_plan_rolls_back_a_bad_update_then_restores_a_lost_database_on_its_own_and_reports_both",
    ),
];

/// Every policy and runbook in `policies/` and `runbooks/`, relative to the
/// repository (an inventory is neither).
fn example_files() -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["policies", "policies/fleet", "policies/erp", "runbooks"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if path.extension().is_some_and(|e| e == "yaml") && name != "inventory.yaml" {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    files
}

/// `# drp check: exits N unless A and B are set`: the exit as shipped, and
/// the variables that make it pass.
fn declared_exit(text: &str) -> Option<(i32, Vec<String>)> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# drp check: exits "))?;
    let (code, rest) = line.split_once(' ')?;
    let vars = rest
        .strip_prefix("unless ")?
        .split(" are set")
        .next()?
        .split(" and ")
        .map(|v| v.trim().to_string())
        .collect();
    Some((code.parse().ok()?, vars))
}

/// The environment every example reads, pointed at this test's services,
/// with the databases and files they name created.
fn example_env(s: &mut Scratch) {
    s.shop_env();
    let v = services();
    let id = s.id.clone();
    psql("postgres", &format!("create database {id}"));
    psql(
        &id,
        "create table orders (id serial primary key, item text); insert into orders (item) values ('café ☕'), ('thé');",
    );
    psql("postgres", &format!("create database {id}_brochure"));
    psql(
        &format!("{id}_brochure"),
        "create table pages (slug text primary key, body text); insert into pages values ('/', 'bienvenue');",
    );
    mariadb(None, &format!("create database {id}"));
    mariadb(
        Some(&id),
        "create table contacts (id int primary key, name varchar(80)); insert into contacts values (1, 'Zoé');",
    );
    std::fs::create_dir_all(s.path("uploads")).unwrap();
    std::fs::write(s.path("uploads/logo.svg"), "<svg/>").unwrap();
    std::fs::create_dir_all(s.path("secrets")).unwrap();
    for (file, value) in [
        ("s3-key-id", v.get("DRP_TEST_S3_KEY_ID")),
        ("s3-secret", v.get("DRP_TEST_S3_SECRET")),
        ("pg-password", v.get("DRP_TEST_PG_PASSWORD")),
    ] {
        std::fs::write(s.path("secrets").join(file), value).unwrap();
    }
    let ops = s.keypair("ops.age", false).1;
    let escrow = s.keypair("escrow.age", false).1;
    let signing = s.keypair("files-1.signing", true).0;
    let dir = s.path("");
    let vars = [
        ("CRM_MY_PORT", v.get("DRP_TEST_MY_PORT").to_string()),
        ("CRM_MY_USER", "drp".into()),
        ("CRM_MY_DB", id.clone()),
        ("CRM_MY_PASSWORD", v.get("DRP_TEST_MY_PASSWORD").into()),
        ("BROCHURE_PG_DB", format!("{id}_brochure")),
        ("DRP_RECIPIENT_OPS", ops),
        ("DRP_RECIPIENT_ESCROW", escrow),
        ("DRP_SIGNING_KEY", signing.display().to_string()),
        ("FILES_ROOT", dir.join("uploads").display().to_string()),
        ("DRP_CLUSTER_STATE", dir.join("state").display().to_string()),
        ("DRP_STATE_DIR", dir.join("state").display().to_string()),
        ("DRP_SECRETS", dir.join("secrets").display().to_string()),
        (
            "DRP_RUNBOOKS",
            repo().join("runbooks").display().to_string(),
        ),
        ("SITE_ROOT", dir.join("uploads").display().to_string()),
        ("NAS_HOST", "127.0.0.1".into()),
        ("NAS_PORT", v.get("DRP_TEST_SFTP_PORT").into()),
        ("NAS_USER", "root".into()),
        ("NAS_KEY", v.get("DRP_TEST_SFTP_KEY").into()),
        ("NAS_PATH", format!("{}/{id}", v.get("DRP_TEST_SFTP_ROOT"))),
        ("NAS_KNOWN_HOSTS", "accept".into()),
        ("WEB_UPLOADS", dir.join("uploads").display().to_string()),
        ("WEB_SITE_DB", dir.join("app.db").display().to_string()),
    ];
    for (k, val) in vars {
        s.set_env(k, &val);
    }
}

#[test]
fn every_example_policy_and_runbook_passes_drp_check() {
    let mut s = scratch("examples");
    example_env(&mut s);
    let files = example_files();
    assert!(files.len() >= 15, "the examples: {files:?}");
    let mut failures = Vec::new();
    for rel in &files {
        if CHECKED_ELSEWHERE.iter().any(|(f, _)| f == rel) {
            continue;
        }
        let path = repo().join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.to_str().unwrap();
        if let Some((code, vars)) = declared_exit(&text) {
            // As shipped: the exit it declares.
            let mut bare = s.drp_cmd(&["check", file]);
            for v in &vars {
                bare.env_remove(v);
            }
            let out = bare.output().unwrap();
            if out.status.code() != Some(code) {
                failures.push(format!(
                    "{rel} as shipped: exit {:?}, declared {code}\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let run = s.drp(&["check", file]);
        if run.code != 0 {
            failures.push(format!(
                "{rel}: exit {}\n{}{}",
                run.code, run.stdout, run.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A README tour line as the test runs it: optional `[...]` parts dropped,
/// `…` standing for the tour's policy, the example point id and time
/// replaced by a real point's, and names given to `--to` made this test's.
fn tour_line(line: &str, policy: &str, point: &str, id: &str) -> Vec<String> {
    let code = line.split(" # ").next().unwrap();
    let mut words = Vec::new();
    let mut rest = code;
    while let Some(open) = rest.find('[') {
        words.push(rest[..open].to_string());
        rest = &rest[rest[open..].find(']').unwrap() + open + 1..];
    }
    words.push(rest.to_string());
    let joined = words.concat();
    let mut args = Vec::new();
    let mut quoted: Option<String> = None;
    for w in joined.split_whitespace() {
        match &mut quoted {
            Some(q) => {
                q.push(' ');
                q.push_str(w.trim_end_matches('"'));
                if w.ends_with('"') {
                    args.push(quoted.take().unwrap());
                }
            }
            None if w.starts_with('"') && !w[1..].ends_with('"') => {
                quoted = Some(w[1..].to_string())
            }
            None => args.push(w.trim_matches('"').to_string()),
        }
    }
    let mut out = Vec::new();
    let mut prev = String::new();
    for a in args {
        let a = match (prev.as_str(), a.as_str()) {
            (_, "…") => policy.to_string(),
            ("--point", _) => point.to_string(),
            ("--before", _) => "now".to_string(),
            ("--to", name) => format!("{id}_{name}"),
            ("--out", name) => format!("tour-{name}"),
            (_, a) if a.starts_with("policies/") || a.starts_with("runbooks/") => {
                repo().join(a).display().to_string()
            }
            (_, a) => a.to_string(),
        };
        prev = a.clone();
        out.push(a);
    }
    out
}

#[test]
fn the_readme_s_tour_of_the_cli_runs_against_the_real_services() {
    let mut s = scratch("tour");
    example_env(&mut s);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tour = readme
        .split("## A tour of the CLI\n\n```sh\n")
        .nth(1)
        .expect("the README's tour")
        .split("\n\n")
        .next()
        .unwrap();
    let lines: Vec<&str> = tour.lines().filter(|l| l.starts_with("drp")).collect();
    assert!(lines.len() >= 15, "{tour}");
    let policy = repo().join("policies/db-server.yaml").display().to_string();
    let mut point = String::new();
    for line in lines {
        let args = tour_line(line, &policy, &point, &s.id);
        let (program, args) = args.split_first().unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = if program == "drp" {
            s.drp(&args)
        } else {
            s.agent(&args)
        };
        assert_eq!(
            run.code,
            0,
            "`{line}` ran as `{program} {}`:\n{}{}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
        if args.first() == Some(&"backup") {
            let list = s.agent(&["--json", "list", "--policy", &policy, "--export", "shop-db"]);
            list.ok();
            let listed = list.json();
            let newest = listed["points"].as_array().unwrap().last().unwrap();
            point = newest["manifest"]["id"].as_str().unwrap().to_string();
        }
    }
    // What the restores brought back, beside the live databases.
    let id = &s.id;
    assert_eq!(
        psql(&format!("{id}_shop_check"), "select count(*) from orders"),
        "2"
    );
    assert_eq!(
        mariadb(
            Some(&format!("{id}_crm_check")),
            "select name from contacts"
        ),
        "Zoé"
    );
}
