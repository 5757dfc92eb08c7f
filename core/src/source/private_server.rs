//! The lifecycle of a database server drp starts for itself: a restore
//! test's throwaway PostgreSQL or MariaDB server (`postgres/scratch.rs`,
//! `mysql_scratch.rs`) and the server a physical restore replays WAL in
//! (`postgres/cluster/replay.rs`).
//!
//! Each runs in a process group of its own; it is polled until it is ready,
//! within a deadline, and one that never becomes ready is reported with the
//! last lines of its log; it is stopped with a signal and a time to end; and
//! dropped still running, it is killed with everything it forked. What
//! differs between engines stays with each engine: creating the data folder
//! (`initdb`, `mariadb-install-db`), the settings and where the log goes,
//! the readiness probe, and the signal that shuts it down.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::SourceError;

/// What a private server is, for its lifecycle.
pub struct Spec<'a> {
    /// Its name in messages (`the restore test's server`).
    pub what: &'a str,
    /// Its log: whatever its command writes it (a file its stderr goes to,
    /// or the server's own log setting).
    pub log: PathBuf,
    /// How a drop asks it to end before killing it (`None`: killed at once).
    pub on_drop: Option<Shutdown>,
    /// The context of the error when it cannot be started.
    pub cannot_start: String,
}

/// How a server is asked to end, and how long it is given.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// PostgreSQL: `SIGINT` for a fast shutdown, `SIGQUIT` for an immediate one.
    pub signal: libc::c_int,
    /// To its whole process group (the server and everything it forked),
    /// or to the server alone.
    pub whole_group: bool,
    /// How long it is given to end.
    pub wait: Duration,
}

/// How a stop ended.
#[derive(Debug)]
pub enum Stopped {
    /// It had ended already (an earlier stop or `exited` saw it end).
    Before,
    /// It ended with this status.
    Exited(ExitStatus),
    /// Still running once the wait was over: it is killed when dropped.
    StillRunning,
}

/// A running private server; dropped before it ended, it is killed.
pub struct PrivateServer {
    what: String,
    child: Option<Child>,
    log: PathBuf,
    on_drop: Option<Shutdown>,
}

/// How often readiness is polled: every 100 ms at first, every 500 ms once
/// the server has taken this long.
const FAST_POLLING: Duration = Duration::from_secs(5);

impl PrivateServer {
    /// Starts `cmd` (its settings, stdout and stderr chosen by the engine)
    /// with no stdin, in a process group of its own.
    pub fn start(cmd: &mut Command, spec: Spec<'_>) -> Result<Self, SourceError> {
        use std::os::unix::process::CommandExt as _;
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| SourceError::io(spec.cannot_start, e))?;
        Ok(PrivateServer {
            what: spec.what.to_string(),
            child: Some(child),
            log: spec.log,
            on_drop: spec.on_drop,
        })
    }

    /// Polls `ready` until it says yes, for at most `timeout`; then fails
    /// with the last lines of the server's log.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), SourceError> {
        self.wait_until(Some(timeout), |_| Ok(ready().then_some(())))
    }

    /// Polls `poll` until it gives an answer or an error, for at most
    /// `deadline` (`None`: as long as it takes, for a wait that `poll` bounds
    /// itself, by a cancel flag or by the server's end); past the deadline,
    /// fails with the last lines of the server's log.
    pub fn wait_until<T>(
        &mut self,
        deadline: Option<Duration>,
        mut poll: impl FnMut(&mut Self) -> Result<Option<T>, SourceError>,
    ) -> Result<T, SourceError> {
        let started = Instant::now();
        loop {
            if let Some(answer) = poll(self)? {
                return Ok(answer);
            }
            let waited = started.elapsed();
            if let Some(limit) = deadline
                && waited > limit
            {
                return Err(SourceError::Invalid(format!(
                    "{} did not start within {}s: {}",
                    self.what,
                    limit.as_secs(),
                    self.last_lines(5)
                )));
            }
            std::thread::sleep(if waited < FAST_POLLING {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(500)
            });
        }
    }

    /// The server's exit status, once it has ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Asks the server to end (`how`) and waits for it, at most `how.wait`.
    pub fn stop(&mut self, how: Shutdown) -> Stopped {
        let Some(child) = self.child.as_mut() else {
            return Stopped::Before;
        };
        let pid = child.id() as libc::pid_t;
        let target = if how.whole_group { -pid } else { pid };
        // SAFETY: signals the server this lifecycle started (or its process
        // group), by its id; nothing else.
        unsafe { libc::kill(target, how.signal) };
        let deadline = Instant::now() + how.wait;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Stopped::Exited(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return Stopped::StillRunning,
            }
        }
    }

    /// Where the server's log is.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The server's log as it stands (empty when it cannot be read).
    pub fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, on one line.
    fn last_lines(&self, n: usize) -> String {
        let text = self.read_log();
        let tail: Vec<&str> = text.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for PrivateServer {
    /// Its shutdown for a drop, if it has one, then a kill of the whole
    /// process group if it is still there.
    fn drop(&mut self) {
        if let Some(how) = self.on_drop
            && !matches!(self.stop(how), Stopped::StillRunning)
        {
            return;
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kills the process group of the server we started.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "server" that logs two lines and then runs until it is signalled,
    /// with a child of its own in its process group.
    fn start(dir: &Path, on_drop: Option<Shutdown>) -> PrivateServer {
        let log = dir.join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo one >&2; echo 'two: listening nowhere' >&2; sleep 300 & echo $! > child.pid; wait",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(file);
        PrivateServer::start(
            &mut cmd,
            Spec {
                what: "the test's server",
                log,
                on_drop,
                cannot_start: "starting the test's server".into(),
            },
        )
        .unwrap()
    }

    fn child_pid(dir: &Path) -> libc::pid_t {
        let file = dir.join("child.pid");
        let started = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only asks whether the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn a_server_never_ready_is_reported_with_its_logs_last_lines_and_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), None);
        let child = child_pid(dir.path());
        let err = server
            .wait_ready(Duration::from_secs(1), || false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the test's server did not start within 1s: one | two: listening nowhere"
        );
        assert!(alive(child));
        drop(server);
        // Killed, and reaped by nobody but init: gone or a zombie shortly.
        let started = Instant::now();
        while alive(child) && started.elapsed() < Duration::from_secs(5) {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            if state.contains(") Z ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(
            !alive(child) || state.contains(") Z "),
            "the server's child outlived it: {state}"
        );
    }

    #[test]
    fn a_ready_server_stops_with_its_signal_and_says_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), None);
        let mut polls = 0;
        server
            .wait_ready(Duration::from_secs(10), || {
                polls += 1;
                polls == 3
            })
            .unwrap();
        assert!(server.exited().is_none());
        assert!(server.read_log().contains("two: listening nowhere"));
        let stopped = server.stop(Shutdown {
            signal: libc::SIGTERM,
            whole_group: true,
            wait: Duration::from_secs(10),
        });
        let Stopped::Exited(status) = stopped else {
            panic!("{stopped:?}");
        };
        assert!(!status.success());
        assert!(matches!(
            server.stop(Shutdown {
                signal: libc::SIGTERM,
                whole_group: true,
                wait: Duration::from_secs(1),
            }),
            Stopped::Before
        ));
    }

    #[test]
    fn a_server_that_ignores_its_shutdown_is_still_running_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), None);
        // Signal 0 asks nothing of it: it is still there after the wait.
        let stopped = server.stop(Shutdown {
            signal: 0,
            whole_group: false,
            wait: Duration::from_millis(200),
        });
        assert!(matches!(stopped, Stopped::StillRunning), "{stopped:?}");
    }

    /// Under `source/`, a process group is made and killed only by this
    /// lifecycle and by `process.rs` (the tools a source runs).
    #[test]
    fn servers_are_started_and_killed_only_through_this_lifecycle() {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    walk(&p, found);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    found.push(p);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/source");
        let mut files = Vec::new();
        walk(&root, &mut files);
        assert!(files.len() > 10, "{files:?}");
        let mut bypassing = Vec::new();
        for file in files {
            let name = file.strip_prefix(&root).unwrap().display().to_string();
            if name == "private_server.rs" || name == "process.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            if ["process_group(", "killpg", "SIGKILL"]
                .iter()
                .any(|s| text.contains(s))
            {
                bypassing.push(name);
            }
        }
        assert!(
            bypassing.is_empty(),
            "start, stop and kill servers through `PrivateServer`: {bypassing:?}"
        );
    }
}
