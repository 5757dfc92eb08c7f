//! Fleet: a coordinator in this namespace driving agents on hosts that are
//! network namespaces (tests/services/start.sh), each with its own sshd,
//! over SSH with pinned host keys and an authorized_keys line that allows
//! only `drp-agent serve --stdio`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::harness::{Scratch, eventually, psql_at, running, scratch, services};

/// Host `n` of the test fleet.
pub struct Host {
    pub n: u32,
    pub name: String,
    pub ns: String,
    pub addr: String,
    /// Its sshd's folder (authorized_keys).
    pub sshd_dir: PathBuf,
    /// Its policy and state, in the test's scratch folder.
    pub dir: PathBuf,
}

pub fn host(s: &Scratch, n: u32, name: &str) -> Host {
    let v = services();
    let dir = s.path(&format!("hosts/{name}"));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    Host {
        n,
        name: name.to_string(),
        ns: format!("{}{n}", v.get("DRP_TEST_FLEET_NS")),
        addr: format!("{}.{}", v.get("DRP_TEST_FLEET_NET"), 10 + n),
        sshd_dir: PathBuf::from(v.get("DRP_TEST_FLEET_DIR")).join(format!("h{n}")),
        dir,
    }
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drp")).with_file_name("drp-agent")
}

impl Host {
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Writes the host's policy (`host:` and `state_dir:` added) and the
    /// authorized_keys line that pins the coordinator's key to the agent.
    pub fn serve(&self, policy_body: &str) {
        self.serve_policy(&format!(
            "host: {}\nstate_dir: {}\n{policy_body}",
            self.name,
            self.dir.join("state").display()
        ));
    }

    /// Writes `policy` as the host's policy, and the authorized_keys line.
    pub fn serve_policy(&self, policy: &str) {
        std::fs::write(self.policy_path(), policy).unwrap();
        self.authorize();
        // The repositories, as an admin creates them once.
        let init = Command::new(agent_bin())
            .args(["init", "--policy", self.policy_path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    /// The authorized_keys line that pins the coordinator's key to the
    /// agent serving the host's policy.
    pub fn authorize(&self) {
        let key = std::fs::read_to_string(format!("{}.pub", services().get("DRP_TEST_FLEET_KEY")))
            .unwrap();
        std::fs::write(
            self.sshd_dir.join("authorized_keys"),
            format!(
                "command=\"{} serve --stdio --policy {}\",restrict {}",
                agent_bin().display(),
                self.policy_path().display(),
                key.trim()
            ),
        )
        .unwrap();
    }

    /// A secret in a 0600 file of the host's folder, for its policy to reference.
    pub fn secret(&self, name: &str, value: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Runs a program inside the host's namespace.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

/// An Ansible inventory of `hosts`, reached with the coordinator's key
/// (or `key`) and the known_hosts file `known_hosts` (default: the real one).
pub fn inventory(
    s: &Scratch,
    rel: &str,
    hosts: &[&Host],
    key: Option<&str>,
    known_hosts: Option<&Path>,
) -> PathBuf {
    let v = services();
    let mut text = format!(
        "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    drp_known_hosts: {}\n    drp_agent: {}\n  children:\n    fleet:\n      hosts:\n",
        key.unwrap_or(v.get("DRP_TEST_FLEET_KEY")),
        known_hosts
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| v.get("DRP_TEST_FLEET_KNOWN_HOSTS").to_string()),
        agent_bin().display(),
    );
    for h in hosts {
        text += &format!(
            "        {}:\n          ansible_host: {}\n          drp_policy: {}\n",
            h.name,
            h.addr,
            h.policy_path().display()
        );
    }
    s.write(rel, &text)
}

/// Forwards connections to 127.0.0.1:`port` inside `ns` to the same port
/// here, for as long as the test runs: the host reaches the S3 service at
/// the address every policy of the suite names, and nothing listens
/// outside loopback.
pub fn forward_into(ns: &str, port: u16) {
    use std::os::fd::AsRawFd;
    let here = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    let there = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // setns applies to this thread only: listen there, connect here.
        assert_eq!(
            unsafe { libc::setns(there.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(
            unsafe { libc::setns(here.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        tx.send(()).unwrap();
        for inbound in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let (mut a, mut b) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut b) = (outbound, inbound);
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    rx.recv().unwrap();
}

pub fn s3_port() -> u16 {
    services()
        .get("DRP_TEST_S3_ENDPOINT")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Cuts a host's link to the bridge until dropped.
pub struct LinkCut(String);

impl LinkCut {
    pub fn new(h: &Host) -> LinkCut {
        let link = format!("{}{}", services().get("DRP_TEST_FLEET_LINK"), h.n);
        assert!(
            Command::new("ip")
                .args(["link", "set", &link, "down"])
                .status()
                .unwrap()
                .success()
        );
        LinkCut(link)
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.0, "up"])
            .status();
    }
}

/// Talks to a host's agent directly over SSH, as a rogue coordinator
/// would: sends `requests` (JSON lines), returns the replies.
pub fn raw_session(
    h: &Host,
    key: &str,
    remote_command: &[&str],
    requests: &[serde_json::Value],
) -> (Vec<serde_json::Value>, String) {
    let v = services();
    let mut child = Command::new("ssh")
        .args([
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            v.get("DRP_TEST_FLEET_KNOWN_HOSTS")
        ))
        .args(["-i", key, "-l", "root", &h.addr])
        .args(remote_command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for r in requests {
            writeln!(stdin, "{r}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let replies = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (replies, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `text` with each `${NAME}` / `${NAME:-default}` replaced from `vars`
/// (or its default): an example policy as it reads on the host it is for.
pub fn render(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closed") + at;
        let inner = &rest[at + 2..end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| default.to_string());
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A coordinator policy: this host, a NAS folder for the reports, its
/// runbooks folder backed up.
pub fn coordinator_policy(s: &Scratch) -> PathBuf {
    s.write("runbooks/README", "the on-call runbooks\n");
    s.write(
        "coordinator.yaml",
        "host: coordinator\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  runbooks: {source: {kind: directory, path: runbooks}, targets: [nas]}\n",
    )
}

mod tests;
