//! The coordinator's end of a session with one host: `ssh` started with
//! host keys checked and no prompt, `drp-agent serve --stdio` at the other
//! end, requests written as lines and replies routed to whoever waits for
//! them by `id`.
//!
//! A step that is given up (its timeout, the run's end) sends `cancel` as it
//! is dropped, so the host stops it too. When the connection ends, every
//! request still waiting learns it, with what `ssh` said and the step's last
//! known state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::inventory::HostEntry;
use super::protocol::{ErrorKind, Hello, Op, PROTOCOL, Reply, Request, Response, StepRequest};
use crate::action::RestoredPoint;

/// How long the SSH connection and the agent's hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request got no answer: the session ended, or the host said no.
#[derive(Debug, Clone)]
pub enum RemoteError {
    /// The connection could not be made or ended; `ssh`'s last words.
    Lost(String),
    /// The agent answered with an error.
    Answered { kind: ErrorKind, message: String },
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Lost(why) => write!(f, "{why}"),
            RemoteError::Answered { message, .. } => write!(f, "{message}"),
        }
    }
}

/// A finished remote step.
#[derive(Debug, Clone)]
pub struct Ran {
    pub message: String,
    pub restored: Vec<RestoredPoint>,
    /// The step's own time, as the host measured it.
    pub seconds: f64,
}

type Pending = Arc<Mutex<Option<HashMap<u64, mpsc::UnboundedSender<Reply>>>>>;

/// An open session with one host.
pub struct Remote {
    pub host: HostEntry,
    pub hello: Hello,
    next_id: AtomicU64,
    lines: mpsc::UnboundedSender<String>,
    /// `None` once the connection ended.
    pending: Pending,
    /// Why it ended, once it did.
    ended: Arc<Mutex<Option<String>>>,
    _child: Mutex<Child>,
}

impl Remote {
    /// Connects, says hello and checks the host is the one the inventory names.
    pub async fn connect(host: &HostEntry) -> Result<Remote, RemoteError> {
        let mut cmd = ssh_command(host);
        let mut child = cmd.spawn().map_err(|e| {
            RemoteError::Lost(format!("cannot start ssh for host `{}`: {e}", host.name))
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let ended = Arc::new(Mutex::new(None));
        let stderr_tail = Arc::new(Mutex::new(Vec::<String>::new()));

        let (lines, mut to_write) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = to_write.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let tail = stderr_tail.clone();
        let name = host.name.clone();
        let stderr_done = tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                tracing::debug!(host = name, "{line}");
                let mut t = tail.lock().expect("tail");
                t.push(line);
                if t.len() > 5 {
                    t.remove(0);
                }
            }
        });
        let (p, e, name) = (pending.clone(), ended.clone(), host.name.clone());
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                match serde_json::from_str::<Response>(&line) {
                    Ok(resp) => {
                        if let Some(map) = p.lock().expect("pending").as_ref()
                            && let Some(tx) = map.get(&resp.id)
                        {
                            let _ = tx.send(resp.reply);
                        }
                    }
                    Err(err) => tracing::warn!(host = name, %err, "unreadable reply"),
                }
            }
            // Give ssh's last words a moment to arrive.
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr_done).await;
            let said = stderr_tail.lock().expect("tail").join(" / ");
            *e.lock().expect("ended") = Some(if said.is_empty() {
                "the connection closed".to_string()
            } else {
                format!("the connection closed: {said}")
            });
            // Dropping the senders tells every waiting request.
            p.lock().expect("pending").take();
        });

        // Keeps the agent sure the coordinator is there (see `Op::Ping`).
        let pinger = lines.clone();
        tokio::spawn(async move {
            let ping = Request {
                id: 0,
                op: Op::Ping,
            }
            .line();
            let mut every = tokio::time::interval(super::protocol::PING_EVERY);
            loop {
                every.tick().await;
                if pinger.send(ping.clone()).is_err() {
                    break;
                }
            }
        });
        let mut remote = Remote {
            host: host.clone(),
            // Until the agent's own, just below.
            hello: Hello::default(),
            next_id: AtomicU64::new(1),
            lines,
            pending,
            ended,
            _child: Mutex::new(child),
        };
        let reply = tokio::time::timeout(
            CONNECT_TIMEOUT,
            remote.call(Op::Hello { protocol: PROTOCOL }),
        )
        .await
        .map_err(|_| {
            RemoteError::Lost(format!(
                "host `{}` did not answer within {}s",
                host.name,
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| match e {
            RemoteError::Lost(why) => RemoteError::Lost(format!(
                "cannot reach host `{}` over SSH ({}@{}:{}): {why}",
                host.name, host.user, host.address, host.port
            )),
            other => other,
        })?;
        let Reply::Hello(hello) = reply else {
            return Err(RemoteError::Lost(format!(
                "host `{}` answered hello with {reply:?}",
                host.name
            )));
        };
        if hello.policy != host.policy {
            return Err(RemoteError::Lost(format!(
                "host `{}` serves the policy {}, the inventory names {}: its authorized_keys line and the inventory disagree",
                host.name, hello.policy, host.policy
            )));
        }
        remote.hello = hello;
        Ok(remote)
    }

    /// Whether the connection has ended.
    pub fn closed(&self) -> bool {
        self.pending.lock().expect("pending").is_none()
    }

    fn lost(&self) -> RemoteError {
        RemoteError::Lost(
            self.ended
                .lock()
                .expect("ended")
                .clone()
                .unwrap_or_else(|| "the connection closed".into()),
        )
    }

    /// Sends `op` and returns the channel its replies arrive on.
    fn send(&self, op: Op) -> Result<(u64, mpsc::UnboundedReceiver<Reply>), RemoteError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        match self.pending.lock().expect("pending").as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(self.lost()),
        };
        self.lines
            .send(Request { id, op }.line())
            .map_err(|_| self.lost())?;
        Ok((id, rx))
    }

    fn forget(&self, id: u64) {
        if let Some(map) = self.pending.lock().expect("pending").as_mut() {
            map.remove(&id);
        }
    }

    /// One request, one reply; an `error` reply is the error.
    pub async fn call(&self, op: Op) -> Result<Reply, RemoteError> {
        let (id, mut rx) = self.send(op)?;
        let reply = rx.recv().await;
        self.forget(id);
        match reply {
            Some(Reply::Error { kind, message }) => Err(RemoteError::Answered { kind, message }),
            Some(r) => Ok(r),
            None => Err(self.lost()),
        }
    }

    /// Runs a step there. Dropped before it ends, it cancels the step on
    /// the host. A lost connection is said with the step's last known state.
    pub async fn run(
        &self,
        step: StepRequest,
        t_fail: chrono::DateTime<chrono::Utc>,
        runbook: &str,
    ) -> Result<Ran, RemoteError> {
        let started = Instant::now();
        let (id, mut rx) = self.send(Op::Run {
            step,
            t_fail,
            runbook: runbook.to_string(),
        })?;
        let mut guard = CancelOnDrop {
            remote: self,
            id,
            armed: true,
        };
        let mut state = "sent, not yet acknowledged".to_string();
        let result = loop {
            match rx.recv().await {
                Some(Reply::Running { seconds }) => {
                    state = format!(
                        "running on the host for {seconds:.1}s, last heard {:.1}s after the step was sent",
                        started.elapsed().as_secs_f64()
                    );
                }
                Some(Reply::Done {
                    message,
                    restored,
                    seconds,
                }) => {
                    break Ok(Ran {
                        message,
                        restored,
                        seconds,
                    });
                }
                Some(Reply::Error { kind, message }) => {
                    break Err(RemoteError::Answered { kind, message });
                }
                Some(other) => {
                    break Err(RemoteError::Lost(format!("unexpected reply {other:?}")));
                }
                None => {
                    break Err(RemoteError::Lost(format!(
                        "connection to host `{}` lost during the step after {:.1}s ({}); last known state: {state}",
                        self.host.name,
                        started.elapsed().as_secs_f64(),
                        self.lost()
                    )));
                }
            }
        };
        // Ended here: nothing to cancel on the host.
        guard.armed = false;
        self.forget(id);
        result
    }
}

/// Sends `cancel` for a step whose future is dropped before it ended.
struct CancelOnDrop<'a> {
    remote: &'a Remote,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                host = self.remote.host.name,
                id = self.id,
                "cancelling the step on the host"
            );
            let _ = self.remote.lines.send(
                Request {
                    id: self.id,
                    op: Op::Cancel,
                }
                .line(),
            );
            self.remote.forget(self.id);
        }
    }
}

/// `ssh` for `host`: no prompt (a missing key or an unknown host key fails
/// at once), host keys checked strictly, keep-alives so a cut link is
/// noticed within seconds, and the agent's serve command as the remote
/// command (an `authorized_keys` entry pinning it makes that the only one).
pub fn ssh_command(host: &HostEntry) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"])
    .args(["-o", "ConnectTimeout=10"])
    .args(["-p", &host.port.to_string(), "-l", &host.user]);
    if let Some(id) = &host.identity {
        cmd.arg("-i").arg(id).args(["-o", "IdentitiesOnly=yes"]);
    }
    if let Some(k) = &host.known_hosts {
        cmd.arg("-o")
            .arg(format!("UserKnownHostsFile={}", k.display()));
    }
    cmd.arg("--")
        .arg(&host.address)
        .args([&host.agent, "serve", "--stdio", "--policy", &host.policy])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}
