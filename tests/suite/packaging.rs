//! The Debian packages (`deploy/deb/build.sh`), installed into a clean root
//! with dpkg: files, the `drp` user and folders their postinst makes, and a
//! backup through the installed unit's own ExecStart line.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Run, scratch};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn run(c: &mut Command) -> Run {
    Run::from(c.output().expect("runs"))
}

/// A root with nothing but what dpkg and useradd need to work in it.
fn clean_root(root: &Path) {
    for d in [
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
}

fn id_of(root: &Path, file: &str, name: &str) -> u32 {
    std::fs::read_to_string(root.join("etc").join(file))
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {file}"))
}

#[test]
fn the_agent_package_installs_in_a_clean_root_and_its_unit_runs_a_backup() {
    let s = scratch("deb");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_drp"))
        .parent()
        .unwrap()
        .to_path_buf();
    let built = run(Command::new("bash")
        .arg(repo("deploy/deb/build.sh"))
        .arg(&bin_dir)
        .arg(s.path("debs")));
    built.ok();
    let debs: Vec<&str> = built.stdout.lines().collect();
    assert_eq!(debs.len(), 2, "{}", built.stdout);
    let root = s.path("root");
    clean_root(&root);
    for deb in &debs {
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
                "-i",
                deb,
            ]))
        .ok();
    }

    // Binaries, man pages, completions, units, the example policy.
    let agent = root.join("usr/bin/drp-agent");
    let v = run(Command::new(&agent).arg("--version"));
    v.ok();
    assert_eq!(
        v.stdout.trim(),
        format!("drp-agent {}", env!("CARGO_PKG_VERSION"))
    );
    run(Command::new(root.join("usr/bin/drp")).arg("--version")).ok();
    for f in [
        "usr/share/man/man1/drp-agent.1.gz",
        "usr/share/man/man1/drp-agent-backup.1.gz",
        "usr/share/man/man1/drp-drill.1.gz",
        "usr/share/zsh/vendor-completions/_drp-agent",
        "usr/share/fish/vendor_completions.d/drp.fish",
        "lib/systemd/system/drp-agent.timer",
        "etc/drp/policy.example.yaml",
        "usr/share/doc/drp-agent/examples/shop.yaml",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} | grep -c backup",
        root.join("usr/share/man/man1/drp-agent.1.gz").display()
    )));
    man.ok();
    run(Command::new("bash")
        .arg("-n")
        .arg(root.join("usr/share/bash-completion/completions/drp-agent")))
    .ok();
    let bash =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/drp-agent"))
            .unwrap();
    assert!(
        bash.contains("test-restore") && bash.contains("--policy"),
        "completions list the commands"
    );

    // The user and folders the postinst made.
    let (uid, gid) = (id_of(&root, "passwd", "drp"), id_of(&root, "group", "drp"));
    assert!(uid > 0 && uid < 1000, "a system user: {uid}");
    let state = std::fs::metadata(root.join("var/lib/drp")).unwrap();
    assert_eq!(
        (state.uid(), state.gid(), state.mode() & 0o7777),
        (uid, gid, 0o750)
    );
    let etc = std::fs::metadata(root.join("etc/drp")).unwrap();
    assert_eq!((etc.uid(), etc.gid(), etc.mode() & 0o7777), (0, gid, 0o750));

    // A backup through the installed unit: its ExecStart line, as its user.
    let site = s.path("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>shop</h1>").unwrap();
    for p in [s.dir.path(), site.as_path(), root.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        site.join("index.html"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let state_dir = root.join("var/lib/drp");
    let policy = root.join("etc/drp/policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "host: pkg-1\nstate_dir: {state}\ntargets:\n  nas: {{kind: local, path: {state}/nas}}\nexports:\n  site:\n    source: {{kind: directory, path: {site}}}\n    schedule: \"* * * * *\"\n    targets: [nas]\n",
            state = state_dir.display(),
            site = site.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/drp-agent.service")).unwrap();
    assert!(unit.contains("User=drp"), "{unit}");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("/usr/bin/drp-agent", agent.to_str().unwrap())
        .replace("/etc/drp/policy.yaml", policy.to_str().unwrap());
    let words: Vec<&str> = exec.split_whitespace().collect();
    run(Command::new(&agent)
        .args(["init", "--policy", policy.to_str().unwrap()])
        .env("HOME", &state_dir))
    .ok();
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(state_dir.join("nas")))
    .ok();
    let as_drp = run(Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ])
        .args(&words)
        .env("HOME", &state_dir));
    as_drp.ok();
    let list =
        run(Command::new(&agent).args(["--json", "list", "--policy", policy.to_str().unwrap()]));
    list.ok();
    assert!(
        list.stdout.contains("\"site\""),
        "the unit's run committed a point: {}",
        list.stdout
    );
}
