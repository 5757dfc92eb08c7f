//! A warm standby in `drp-agent status`: the row its last look saved
//! (replaying and caught up, then down), the exit code a standby down or
//! lagging past its alert gives, and a look that is old or missing said so.
//! Real PostgreSQL 15 servers, as in `standby.rs`.

use std::time::Duration;

use crate::archiving::wait_for;
use crate::standby::{primary, standby_of};

#[test]
fn status_shows_the_standby_s_lag_from_its_last_look_and_exits_8_once_it_is_down() {
    let (site, pg) = primary("standbystatus");
    let (host, server) = standby_of(&site);

    // Never looked at: said so, and not counted against the host.
    let never = host.agent(&["status"]);
    never.ok();
    assert!(
        never
            .stdout
            .lines()
            .any(|l| l.starts_with("standby `main`: never checked")),
        "{}",
        never.stdout
    );

    // `standby status` looks and saves what it saw; `status` shows it.
    pg.event("after the base backup");
    pg.switch_wal();
    wait_for(
        "the standby to replay the archive",
        Duration::from_secs(60),
        || server.try_psql("select count(*) from events").as_deref() == Ok("2"),
    );
    wait_for("the standby to catch up", Duration::from_secs(60), || {
        host.caught_up()
    });
    let r = host.agent(&["--json", "status"]);
    r.ok();
    let standbys = r.json()["standbys"].clone();
    assert_eq!(standbys.as_array().map(Vec::len), Some(1), "{standbys:#}");
    let s = &standbys[0];
    assert_eq!(s["name"], "main", "{s:#}");
    assert_eq!(s["of_host"], "db1", "{s:#}");
    assert_eq!(s["of_export"], "main", "{s:#}");
    assert_eq!(s["condition"], "replaying", "{s:#}");
    assert_eq!(s["lag_seconds"], 0.0, "{s:#}");
    assert_eq!(s["behind_segments"], 0, "{s:#}");
    assert_eq!(s["lag_alert_seconds"], 60.0, "{s:#}");
    assert_eq!(s["stale"], false, "{s:#}");
    assert_eq!(s["alerting"], false, "{s:#}");
    assert!(s["replayed_commit_at"].is_string(), "{s:#}");
    let text = host.agent(&["status"]);
    text.ok();
    let row = text
        .stdout
        .lines()
        .find(|l| l.starts_with("main ") && l.contains("db1/main"))
        .unwrap_or_else(|| panic!("no standby row in:\n{}", text.stdout));
    assert!(
        row.contains("replaying") && row.contains("(alert 1m)") && row.contains("0 segment(s)"),
        "{row}"
    );

    // Its server stops: the next look finds it down, and `status` says so
    // and exits as for an export over its RPO.
    server.stop();
    let look = host.agent(&["standby", "status"]);
    assert_eq!(look.code, 3, "{}\n{}", look.stdout, look.stderr);
    let r = host.agent(&["--json", "status"]);
    r.code(8);
    let s = &r.json()["standbys"][0];
    assert_eq!(s["condition"], "down", "{s:#}");
    assert_eq!(s["alerting"], true, "{s:#}");
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("standby `main` does not answer")),
        "{s:#}"
    );
    let text = host.agent(&["status"]);
    text.code(8);
    assert!(
        text.stdout.contains(" DOWN ")
            && text
                .stdout
                .lines()
                .any(|l| l.starts_with("standby `main` is down: ")),
        "{}",
        text.stdout
    );

    // A look an hour old is shown as such.
    let state = site.s.path("state-db2").join("db2/standby/main.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("the saved look")).unwrap();
    saved["checked_at"] = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339()
        .into();
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();
    let r = host.agent(&["--json", "status"]);
    r.code(8);
    assert_eq!(r.json()["standbys"][0]["stale"], true);
    let text = host.agent(&["status"]);
    assert!(
        text.stdout.contains("— STALE")
            && text
                .stdout
                .lines()
                .any(|l| l.starts_with("standby `main`: last checked 1h")),
        "{}",
        text.stdout
    );
}
