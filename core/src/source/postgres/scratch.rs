//! A throwaway PostgreSQL server for restore tests: `initdb` in a private
//! folder, no TCP (a Unix socket in that folder), trust authentication for
//! its own socket only, stopped and removed when dropped. Run as the
//! `postgres` user when drp runs as root (PostgreSQL refuses root). Its
//! lifecycle is the one of every private server (`private_server.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::PostgresConfig;
use crate::source::SourceError;
use crate::source::private_server::{PrivateServer, Shutdown, Spec};

/// The port in the socket's name (nothing listens on TCP).
const PORT: u16 = 5432;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Dropped, the server gets an immediate shutdown of its whole process
/// group (the server and its backends), then a kill if it has not ended
/// within 10 seconds.
const ON_DROP: Shutdown = Shutdown {
    signal: libc::SIGQUIT,
    whole_group: true,
    wait: Duration::from_secs(10),
};

/// A restore test's throwaway PostgreSQL server.
pub struct ScratchPostgres {
    sock: PathBuf,
    bin: PathBuf,
    database: Option<String>,
    restore_jobs: Option<u32>,
    _server: PrivateServer,
}

impl ScratchPostgres {
    /// Starts a new empty server in `dir` with the binaries of `live`
    /// (its `bin_dir`, else the newest `/usr/lib/postgresql/*/bin`).
    pub fn start(live: &PostgresConfig, dir: &Path, base_dir: &Path) -> Result<Self, SourceError> {
        let bin = Self::bin_dir(live.bin_dir.as_deref(), base_dir)?;
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock)
            .map_err(|e| SourceError::io("creating the socket folder", e))?;
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            for p in [dir, sock.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| {
                    SourceError::io("handing the restore test's folder to postgres", e)
                })?;
            }
        }
        let out = as_server_user(&bin.join("initdb"), owner.is_some())
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| SourceError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(SourceError::Invalid(format!(
                "initdb of the restore test's server failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Self::spawn(
            bin,
            &data,
            dir,
            &[],
            live.database.clone(),
            live.restore_jobs,
            owner,
        )
    }

    /// Starts a server on `data`, a cluster a restore test just restored
    /// (stopped), with its own `pg_hba.conf` (trust on its socket only) and
    /// archiving off, so it answers the checks and never archives anywhere.
    pub fn adopt(bin: PathBuf, data: &Path, dir: &Path) -> Result<Self, SourceError> {
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock)
            .map_err(|e| SourceError::io("creating the socket folder", e))?;
        let hba = dir.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\n")
            .map_err(|e| SourceError::io("writing the restore test's pg_hba.conf", e))?;
        let hba_setting = format!("hba_file={}", hba.display());
        Self::spawn(
            bin,
            data,
            dir,
            &["-c", &hba_setting, "-c", "archive_mode=off"],
            Some("postgres".into()),
            None,
            server_user(),
        )
    }

    fn spawn(
        bin: PathBuf,
        data: &Path,
        dir: &Path,
        extra: &[&str],
        database: Option<String>,
        restore_jobs: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<Self, SourceError> {
        let sock = dir.join("sock");
        let log = std::fs::File::create(dir.join("server.log"))
            .map_err(|e| SourceError::io("creating the server's log", e))?;
        if let Some((uid, gid)) = owner {
            let _ = std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid));
        }
        let mut cmd = as_server_user(&bin.join("postgres"), owner.is_some());
        cmd.arg("-D")
            .arg(data)
            .arg("-k")
            .arg(&sock)
            .args(["-p", &PORT.to_string()])
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .args([
                "-c",
                "logging_collector=off",
                "-c",
                "shared_preload_libraries=",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        let mut server = PrivateServer::start(
            &mut cmd,
            Spec {
                what: "the restore test's server",
                log: dir.join("server.log"),
                on_drop: Some(ON_DROP),
                cannot_start: "starting the restore test's server".into(),
            },
        )?;
        let pg_isready = bin.join("pg_isready");
        server.wait_ready(READY_TIMEOUT, || {
            Command::new(&pg_isready)
                .arg("-q")
                .arg("-h")
                .arg(&sock)
                .args(["-p", &PORT.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })?;
        Ok(ScratchPostgres {
            sock,
            bin,
            database,
            restore_jobs,
            _server: server,
        })
    }

    /// The binaries of `live` (its `bin_dir`, else the newest installed).
    pub fn bin_dir(live: Option<&Path>, base_dir: &Path) -> Result<PathBuf, SourceError> {
        match live {
            Some(b) => Ok(crate::config::resolve_relative(base_dir, b)),
            None => newest_bin_dir().ok_or_else(|| {
                SourceError::Invalid(
                    "no PostgreSQL server binaries for the restore test: set the export's `bin_dir`"
                        .into(),
                )
            }),
        }
    }

    /// The folder of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    pub fn port(&self) -> u16 {
        PORT
    }

    /// The source's settings pointed at this server.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: None,
            host: Some(self.sock.display().to_string()),
            port: Some(PORT),
            user: Some("postgres".into()),
            database: self.database.clone(),
            password: None,
            bin_dir: Some(self.bin.clone()),
            restore_jobs: self.restore_jobs,
            no_owner: false,
            include_role_passwords: false,
        }
    }
}

/// The `postgres` user's ids when drp runs as root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns null or a pointer to a static record, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is not null.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_server_user(program: &Path, switch: bool) -> Command {
    if switch {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn newest_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}
