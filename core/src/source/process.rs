//! Running the external tools that sources wrap: finding them, capturing
//! their stderr, streaming their stdout, and turning failures into errors
//! that say what to do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

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
    run_inner(cmd, Input::Bytes(input.unwrap_or_default()), None)
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
    run_inner(cmd, input, Some(cancel))
}

/// Runs a tool; with a `cancel` flag, in its own process group, polled so
/// that the group can be killed; without, simply waited for.
fn run_inner(
    cmd: &mut Command,
    input: Input<'_>,
    cancel: Option<&Cancel>,
) -> Result<String, SourceError> {
    use std::os::unix::process::CommandExt;
    let tool = tool_name(cmd);
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
        })
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
        let status = child
            .wait()
            .map_err(|e| SourceError::io(format!("waiting for `{}`", self.tool), e))?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
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
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
