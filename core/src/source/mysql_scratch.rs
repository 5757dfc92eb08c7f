//! A throwaway MariaDB server for restore tests: `mariadb-install-db` in a
//! private folder, no TCP (a Unix socket in that folder), its root user
//! reachable without a password on that socket only; stopped and removed
//! when dropped. Its lifecycle is the one of every private server
//! (`private_server.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::SourceError;
use super::mysql::MysqlConfig;
use super::private_server::{PrivateServer, Spec};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the server writes its pid, inside its data folder (what a later
/// test reads to stop a server a killed one left running).
pub const PID_FILE: &str = "mariadb.pid";

/// A restore test's throwaway MariaDB server; killed when dropped.
pub struct ScratchMariadb {
    sock: PathBuf,
    live: MysqlConfig,
    _server: PrivateServer,
}

impl ScratchMariadb {
    pub fn start(live: &MysqlConfig, dir: &Path) -> Result<Self, SourceError> {
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| SourceError::io("creating the server's folder", e))?;
        let root = unsafe { libc::geteuid() } == 0;
        let tool = |name: &str| match &live.bin_dir {
            Some(b) => b.join(name),
            None => PathBuf::from(name),
        };
        let mut install = Command::new(tool("mariadb-install-db"));
        install
            .args([
                "--no-defaults",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()));
        if root {
            install.arg("--user=root");
        }
        let out = install
            .output()
            .map_err(|e| SourceError::io("running mariadb-install-db", e))?;
        if !out.status.success() {
            return Err(SourceError::Invalid(format!(
                "mariadb-install-db of the restore test's server failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let sock = dir.join("sock");
        let mut mariadbd = Command::new(tool("mariadbd"));
        mariadbd
            .args(["--no-defaults", "--skip-networking", "--skip-log-bin"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", data.join(PID_FILE).display()))
            .arg(format!("--log-error={}", dir.join("server.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            mariadbd.arg("--user=root");
        }
        let mut server = PrivateServer::start(
            &mut mariadbd,
            Spec {
                what: "the restore test's server",
                log: dir.join("server.log"),
                on_drop: None,
                cannot_start: "starting the restore test's server".into(),
            },
        )?;
        let admin = tool("mariadb-admin");
        server.wait_ready(READY_TIMEOUT, || {
            Command::new(&admin)
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", sock.display()))
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })?;
        Ok(ScratchMariadb {
            sock,
            live: live.clone(),
            _server: server,
        })
    }

    /// The source's settings pointed at this server.
    pub fn config(&self) -> MysqlConfig {
        MysqlConfig {
            host: None,
            port: None,
            socket: Some(self.sock.clone()),
            user: Some("root".into()),
            password: None,
            database: self.live.database.clone(),
            bin_dir: self.live.bin_dir.clone(),
            binlog: None,
            include_account_passwords: false,
            throwaway: true,
        }
    }
}
