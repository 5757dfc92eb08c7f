//! A throwaway Redis server for restore tests: `redis-server` on a Unix
//! socket in a private folder (no TCP), loading the RDB a restore wrote
//! there, never saving, no append-only file; stopped when dropped. Its
//! lifecycle is the one of every private server (`private_server.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::SourceError;
use super::private_server::{PrivateServer, Shutdown, Spec};
use super::process;
use super::redis::RedisConfig;

const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Where the server writes its pid, in its folder (what a later test reads
/// to stop a server a killed one left running).
pub const PID_FILE: &str = "redis.pid";
/// The RDB file the server loads, in its folder.
pub const DUMP: &str = "dump.rdb";

const HINT: &str = "install redis-server (Debian: redis-server) or set `bin_dir`";

/// A restore test's throwaway Redis server; stopped when dropped.
pub struct ScratchRedis {
    config: RedisConfig,
    _server: PrivateServer,
}

impl ScratchRedis {
    /// Starts `redis-server` on the RDB `dir/dump.rdb` (`dir` is private).
    pub fn start(live: &RedisConfig, base_dir: &Path, dir: &Path) -> Result<Self, SourceError> {
        let bin = live
            .bin_dir
            .as_ref()
            .map(|d| crate::config::resolve_relative(base_dir, d));
        let server = process::find_tool(bin.as_deref(), &["redis-server"], HINT)?;
        let sock = dir.join("redis.sock");
        let log = dir.join("server.log");
        let mut cmd = Command::new(server);
        cmd.args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--unixsocket")
        .arg(&sock)
        .args(["--unixsocketperm", "700"])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", DUMP])
        .arg("--pidfile")
        .arg(dir.join(PID_FILE))
        .arg("--logfile")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut server = PrivateServer::start(
            &mut cmd,
            Spec {
                what: "the restore test's Redis server",
                log,
                on_drop: Some(Shutdown {
                    signal: libc::SIGTERM,
                    whole_group: false,
                    wait: Duration::from_secs(10),
                }),
                cannot_start: "starting the restore test's Redis server".into(),
            },
        )?;
        let config = RedisConfig {
            socket: Some(sock),
            host: None,
            port: None,
            user: None,
            password: None,
            stop: None,
            start: None,
            unit: None,
            dir: Some(dir.to_path_buf()),
            dbfilename: Some(DUMP.into()),
            bin_dir: bin,
            timeout: None,
        };
        let probe = super::redis::Redis::new(config.clone(), base_dir);
        server.wait_ready(READY_TIMEOUT, || probe.keyspace().is_ok())?;
        Ok(ScratchRedis {
            config,
            _server: server,
        })
    }

    /// The source's settings pointed at this server.
    pub fn config(&self) -> RedisConfig {
        self.config.clone()
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.config.socket.clone().expect("a socket")
    }
}
