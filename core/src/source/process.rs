//! Running the external tools that sources wrap: finding them, capturing
//! their stderr, streaming their stdout, and turning failures into errors
//! that say what to do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Cancel, ExportInfo, ExportStream, SourceError};

/// Keeps the last part of a tool's stderr: enough to explain a failure.
const STDERR_TAIL: usize = 4096;

/// Resolves the first of `names` found in `bin_dir` (when given) or on PATH.
pub fn find_tool(
    bin_dir: Option<&Path>,
    names: &[&str],
    hint: &str,
) -> Result<PathBuf, SourceError> {
    for name in names {
        if let Some(dir) = bin_dir {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
            continue;
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let p = dir.join(name);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    Err(SourceError::ToolMissing {
        tool: names.join("` or `"),
        hint: hint.to_string(),
    })
}

fn tool_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn spawn(cmd: &mut Command) -> Result<Child, SourceError> {
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::ToolMissing {
            tool: tool_name(cmd),
            hint: "install it or set `bin_dir` in the source".into(),
        },
        _ => SourceError::io(format!("cannot start `{}`", tool_name(cmd)), e),
    })
}

fn capture_stderr(child: &mut Child) -> JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 4 * STDERR_TAIL {
                buf.drain(..buf.len() - STDERR_TAIL);
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let tail = if text.len() > STDERR_TAIL {
            &text[text.ceil_char_boundary(text.len() - STDERR_TAIL)..]
        } else {
            &text
        };
        tail.trim().to_string()
    })
}

fn failure(tool: String, status: std::process::ExitStatus, stderr: String) -> SourceError {
    use std::os::unix::process::ExitStatusExt;
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    };
    let stderr = if stderr.is_empty() {
        "no error output".to_string()
    } else {
        stderr
    };
    SourceError::ToolFailed {
        tool,
        status,
        stderr,
    }
}

/// Runs a command to completion, feeding `input` on stdin; returns stdout.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Result<String, SourceError> {
    run_inner(cmd, Input::Bytes(input.unwrap_or_default()), None, None)
}

/// Runs a command with a file on stdin (loading a dump).
pub fn run_with_stdin_file(
    cmd: &mut Command,
    file: &Path,
    cancel: &Cancel,
) -> Result<(), SourceError> {
    run_cancellable(cmd, Input::File(file), cancel).map(|_| ())
}

/// What a tool reads on stdin.
pub enum Input<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Runs a command to completion; returns stdout. The tool runs in a process
/// group of its own, and the whole group is killed when `cancel` is set
/// (`pg_restore -j` forks workers).
pub fn run_cancellable(
    cmd: &mut Command,
    input: Input<'_>,
    cancel: &Cancel,
) -> Result<String, SourceError> {
    run_inner(cmd, input, Some(cancel), None)
}

/// [`run_cancellable`], and past `timeout` the tool's whole process group
/// is killed and the run fails saying so.
pub fn run_limited(
    cmd: &mut Command,
    input: Input<'_>,
    cancel: &Cancel,
    timeout: Option<Duration>,
) -> Result<String, SourceError> {
    run_inner(cmd, input, Some(cancel), timeout)
}

/// The status of a tool stopped at its timeout.
fn timed_out(timeout: Duration) -> String {
    format!(
        "stopped after {}, its timeout; its whole process group was killed",
        crate::config::units::format_duration(timeout)
    )
}

/// Runs a tool; with a `cancel` flag, in its own process group, polled so
/// that the group can be killed; without, simply waited for.
fn run_inner(
    cmd: &mut Command,
    input: Input<'_>,
    cancel: Option<&Cancel>,
    timeout: Option<Duration>,
) -> Result<String, SourceError> {
    use std::os::unix::process::CommandExt;
    let tool = tool_name(cmd);
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    match input {
        Input::Bytes([]) => cmd.stdin(Stdio::null()),
        Input::Bytes(_) => cmd.stdin(Stdio::piped()),
        Input::File(path) => cmd.stdin(
            std::fs::File::open(path)
                .map_err(|e| SourceError::io(format!("opening {}", path.display()), e))?,
        ),
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(cancel) = cancel {
        cmd.process_group(0);
        cancel.check()?;
    }
    let mut child = spawn(cmd)?;
    let err = capture_stderr(&mut child);
    let feeder = match (input, child.stdin.take()) {
        (Input::Bytes(b), Some(mut stdin)) => {
            let bytes = b.to_vec();
            // A tool that exits early closes its stdin; its status tells why.
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = loop {
        let Some(cancel) = cancel else {
            break child.wait();
        };
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if cancel.is_cancelled() => {
                kill_group(&mut child);
                let _ = child.wait();
                let _ = reader.join();
                return Err(SourceError::Cancelled);
            }
            Ok(None) if deadline.is_some_and(|(at, _)| Instant::now() > at) => {
                kill_group(&mut child);
                let _ = child.wait();
                let _ = reader.join();
                let stderr = err.join().unwrap_or_default();
                return Err(SourceError::ToolFailed {
                    tool,
                    status: timed_out(deadline.expect("checked").1),
                    stderr: if stderr.is_empty() {
                        "no error output".into()
                    } else {
                        stderr
                    },
                });
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => break Err(e),
        }
    }
    .map_err(|e| SourceError::io(format!("waiting for `{tool}`"), e))?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let out = reader.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(failure(tool, status, stderr))
    }
}

/// Kills a tool started in its own process group, with everything it forked.
fn kill_group(child: &mut Child) {
    // SAFETY: signals the process group this child leads; nothing else.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.kill();
}

/// First line of `tool --version`.
pub fn version(tool: &Path) -> Result<String, SourceError> {
    let out = run(Command::new(tool).arg("--version"), None)?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// A running dump tool whose stdout is the export stream.
pub struct ChildExport {
    tool: String,
    child: Option<Child>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
    info: ExportInfo,
    /// Kept alive while the tool runs (e.g. a credentials file).
    _guard: Option<Box<dyn Send>>,
    /// For a tool in a process group of its own: what kills the group at
    /// its timeout, and on drop.
    group: Option<GroupWatch>,
}

/// The watch over a tool run in a process group of its own: past its
/// timeout the group is killed, never once the tool has been reaped (its id
/// could then be another's).
struct GroupWatch {
    reaped: Arc<Mutex<bool>>,
    fired: Arc<AtomicBool>,
    timeout: Option<Duration>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupWatch {
    fn start(pid: u32, timeout: Option<Duration>) -> GroupWatch {
        let reaped = Arc::new(Mutex::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = timeout.map(|t| {
            let (reaped, fired) = (reaped.clone(), fired.clone());
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(t) {
                    let reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                    if !*reaped {
                        fired.store(true, Ordering::SeqCst);
                        signal_group(pid);
                    }
                }
            })
        });
        GroupWatch {
            reaped,
            fired,
            timeout,
            stop: Some(stop),
            thread,
        }
    }

    /// Waits for the tool to end, polling so that the watch can still
    /// kill it; stops the watch.
    fn wait(&mut self, child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
        let status = loop {
            let mut reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
            match child.try_wait()? {
                Some(status) => {
                    *reaped = true;
                    break status;
                }
                None => {
                    drop(reaped);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(status)
    }

    /// Kills the group unless the tool has been reaped, and reaps it.
    fn kill(&mut self, child: &mut Child) {
        let mut reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            signal_group(child.id());
            let _ = child.wait();
            *reaped = true;
        }
        drop(reaped);
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SIGKILL to the process group `pid` leads.
fn signal_group(pid: u32) {
    // SAFETY: signals the process group of a tool this file started, not
    // yet reaped; nothing else.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

impl ChildExport {
    pub fn start(
        cmd: &mut Command,
        info: ExportInfo,
        guard: Option<Box<dyn Send>>,
    ) -> Result<Self, SourceError> {
        let tool = tool_name(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(cmd)?;
        let stderr = Some(capture_stderr(&mut child));
        let stdout = child.stdout.take().expect("stdout is piped");
        widen_pipe(&stdout);
        Ok(ChildExport {
            tool,
            child: Some(child),
            stdout,
            stderr,
            info,
            _guard: guard,
            group: None,
        })
    }

    /// [`ChildExport::start`] in a process group of its own, killed whole
    /// past `timeout` (the export then fails saying so) and when dropped;
    /// `tool` names it in errors.
    pub fn start_limited(
        cmd: &mut Command,
        tool: String,
        info: ExportInfo,
        timeout: Option<Duration>,
    ) -> Result<Self, SourceError> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut export = ChildExport::start(cmd, info, None)?;
        export.tool = tool;
        let pid = export.child.as_ref().expect("just started").id();
        export.group = Some(GroupWatch::start(pid, timeout));
        Ok(export)
    }
}

/// Pipe capacity asked for a dump tool's output: the default 64 KiB makes
/// the tool and the compressor take turns every few kilobytes.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Enlarges a pipe's buffer; the system's limit (`fs.pipe-max-size`) may
/// refuse, and the default size then stays: slower, not wrong.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ only resizes the kernel buffer of a pipe we own.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

impl Read for ChildExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl ExportStream for ChildExport {
    fn finish(mut self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let mut child = self.child.take().expect("finish runs once");
        let status = match self.group.as_mut() {
            Some(group) => group.wait(&mut child),
            None => child.wait(),
        }
        .map_err(|e| SourceError::io(format!("waiting for `{}`", self.tool), e))?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if let Some(group) = &self.group
            && group.fired.load(Ordering::SeqCst)
        {
            return Err(SourceError::ToolFailed {
                tool: self.tool.clone(),
                status: timed_out(group.timeout.unwrap_or_default()),
                stderr: if stderr.is_empty() {
                    "no error output".into()
                } else {
                    stderr
                },
            });
        }
        if status.success() {
            Ok(std::mem::take(&mut self.info))
        } else {
            Err(failure(self.tool.clone(), status, stderr))
        }
    }
}

impl Drop for ChildExport {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            match self.group.as_mut() {
                Some(group) => group.kill(&mut child),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

/// Runs a tool to completion in a process group of its own, handing each
/// line of its stdout to `line` as it comes; the group is killed when
/// `cancel` is set, and the tool when this process dies (so an agent killed
/// mid-run leaves no tool writing on). Returns the exit status's error, if
/// any, with the tail of stderr.
pub fn run_lines(
    cmd: &mut Command,
    cancel: &Cancel,
    line: &mut dyn FnMut(&str),
) -> Result<(), SourceError> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let tool = tool_name(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the new process;
    // it allocates nothing and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cancel.check()?;
    let mut child = spawn(cmd)?;
    let err = capture_stderr(&mut child);
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let status = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(l) => {
                line(&l);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                kill_group(&mut child);
                let _ = child.wait();
                let _ = reader.join();
                return Err(SourceError::Cancelled);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        }
        // stdout closed: the tool is ending.
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if cancel.is_cancelled() => {
                    kill_group(&mut child);
                    let _ = child.wait();
                    return Err(SourceError::Cancelled);
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Err(SourceError::io(format!("waiting for `{tool}`"), e)),
            }
        }
        break child
            .wait()
            .map_err(|e| SourceError::io(format!("waiting for `{tool}`"), e))?;
    };
    let _ = reader.join();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(failure(tool, status, stderr))
    }
}
