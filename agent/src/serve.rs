//! `serve --stdio`: the host's end of a coordinator's session, started by
//! sshd (an `authorized_keys` entry pins this command, so the
//! coordinator's key can do nothing else). Requests arrive as JSON lines on
//! stdin, replies leave as JSON lines on stdout, the log goes to stderr.
//!
//! Every step is read again and admitted by this host's own policy
//! (`drp_coordinator::fleet::allow`) before anything runs. A step runs once
//! per request (the coordinator owns timeouts and retries); a `cancel`, or
//! the session ending, stops it and kills what it started.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drp_coordinator::action::Context;
use drp_coordinator::fleet::allow;
use drp_coordinator::fleet::protocol::{
    ErrorKind, Hello, Op, PROTOCOL, Reply, Request, Response, SILENCE, StepRequest,
};
use drp_core::config::Policy;
use drp_core::{ExitCode, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How often a running step says it still runs.
const BEAT: Duration = Duration::from_secs(1);

type Running = Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

pub async fn run(policy_path: &Path) -> Result<ExitCode> {
    let policy = Arc::new(Policy::load(policy_path)?);
    let served = policy_path.display().to_string();
    tracing::info!(
        policy = served,
        from = std::env::var("SSH_CONNECTION").unwrap_or_else(|_| "a local process".into()),
        "serving a coordinator"
    );
    let (tx, mut replies) = mpsc::unbounded_channel::<Response>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(r) = replies.recv().await {
            if stdout.write_all(r.line().as_bytes()).await.is_err() || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let mut greeted = false;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match tokio::time::timeout(SILENCE, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => break,
            Err(_) => {
                tracing::warn!(
                    "no word from the coordinator for {}s: taking it for gone",
                    SILENCE.as_secs()
                );
                break;
            }
        };
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["id"].as_u64())
                    .unwrap_or(0);
                let _ = tx.send(error(
                    id,
                    ErrorKind::BadRequest,
                    format!("request not understood: {e}"),
                ));
                continue;
            }
        };
        let id = request.id;
        match request.op {
            Op::Hello { protocol } if protocol != PROTOCOL => {
                let _ = tx.send(error(
                    id,
                    ErrorKind::Protocol,
                    format!(
                        "host `{}` speaks drp protocol {PROTOCOL} (agent {}), the coordinator {protocol}: install the same drp version on both",
                        policy.host,
                        env!("CARGO_PKG_VERSION")
                    ),
                ));
                break;
            }
            Op::Hello { .. } => {
                greeted = true;
                let _ = tx.send(Response {
                    id,
                    reply: Reply::Hello(hello(&policy, &served)),
                });
            }
            Op::Ping => {}
            _ if !greeted => {
                let _ = tx.send(error(id, ErrorKind::BadRequest, "say hello first".into()));
            }
            Op::Validate { step } => {
                let reply = match admit(&policy, &step.action) {
                    Ok(a) => Reply::Allowed {
                        describe: a.describe,
                        destructive: a.destructive,
                    },
                    Err(why) => refused(&step, why),
                };
                let _ = tx.send(Response { id, reply });
            }
            Op::Run {
                step,
                t_fail,
                runbook,
            } => match admit(&policy, &step.action) {
                Err(why) => {
                    let _ = tx.send(Response {
                        id,
                        reply: refused(&step, why),
                    });
                }
                Ok(admitted) => {
                    tracing::info!(
                        step = step.name,
                        action = admitted.describe,
                        runbook,
                        "running a step for the coordinator"
                    );
                    let ctx = Context {
                        policy: (*policy).clone(),
                        runbook,
                        t_fail,
                        restored: Mutex::new(Vec::new()),
                        workdir: None,
                        fleet: None,
                        force: false,
                    };
                    let task = tokio::spawn(run_step(
                        id,
                        step.name,
                        admitted.action,
                        ctx,
                        tx.clone(),
                        running.clone(),
                    ));
                    running
                        .lock()
                        .expect("running")
                        .insert(id, task.abort_handle());
                }
            },
            Op::Cancel => {
                if let Some(task) = running.lock().expect("running").remove(&id) {
                    tracing::warn!(id, "the coordinator cancelled a step: stopping it");
                    task.abort();
                    let _ = tx.send(error(
                        id,
                        ErrorKind::Cancelled,
                        format!("cancelled on host `{}`", policy.host),
                    ));
                }
            }
            Op::Status => {
                let (tx, policy) = (tx.clone(), policy.clone());
                tokio::spawn(async move {
                    let status = Box::new(crate::status::gather(&policy).await);
                    let _ = tx.send(Response {
                        id,
                        reply: Reply::Status { status },
                    });
                });
            }
        }
    }
    // The session ended: nothing keeps running for a coordinator that is gone.
    let left: Vec<_> = running.lock().expect("running").drain().collect();
    if !left.is_empty() {
        tracing::warn!(
            steps = left.len(),
            "the coordinator went away: stopping its running steps"
        );
    }
    for (_, task) in left {
        task.abort();
    }
    // Let aborted steps drop (killing their processes) and the last replies out.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(ExitCode::Ok)
}

/// Runs one admitted step, saying it still runs every [`BEAT`], then its outcome.
async fn run_step(
    id: u64,
    name: String,
    action: drp_coordinator::action::ActionConfig,
    ctx: Context,
    tx: mpsc::UnboundedSender<Response>,
    running: Running,
) {
    let started = Instant::now();
    let run = action.action().run(&ctx);
    tokio::pin!(run);
    let mut beat = tokio::time::interval(BEAT);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = beat.tick() => {
                let _ = tx.send(Response { id, reply: Reply::Running { seconds: started.elapsed().as_secs_f64() } });
            }
        }
    };
    running.lock().expect("running").remove(&id);
    let seconds = started.elapsed().as_secs_f64();
    let reply = match result {
        Ok(message) => Reply::Done {
            message,
            restored: ctx.restored.lock().expect("restored").clone(),
            seconds,
        },
        Err(e) => Reply::Error {
            kind: ErrorKind::Failed,
            message: e.to_string(),
        },
    };
    tracing::info!(
        step = name,
        seconds,
        ok = matches!(reply, Reply::Done { .. }),
        "step ended"
    );
    let _ = tx.send(Response { id, reply });
}

fn hello(policy: &Policy, served: &str) -> Hello {
    Hello {
        protocol: PROTOCOL,
        host: policy.host.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        policy: served.to_string(),
        exports: policy.exports.keys().cloned().collect(),
        allow_destructive: policy.serve.allow_destructive,
        units: policy.serve.units.clone(),
        commands: policy.serve.commands.keys().cloned().collect(),
    }
}

/// The policy's admission, and while this host is fenced, no restart: a
/// fenced host's services stay down until the fence is lifted.
fn admit(
    policy: &Policy,
    action: &serde_json::Value,
) -> std::result::Result<allow::Admitted, String> {
    let admitted = allow::admit(policy, action)?;
    if let drp_coordinator::action::ActionConfig::Restart(_) = &admitted.action
        && let Some(fence) = drp_core::state::load_fence(policy).filter(|f| f.fenced)
    {
        return Err(format!(
            "host `{}` is fenced since {} by {} ({}): it restarts nothing until the fence is lifted",
            policy.host,
            fence.at.format("%Y-%m-%d %H:%M:%S UTC"),
            fence.by,
            fence.reason
        ));
    }
    Ok(admitted)
}

fn refused(step: &StepRequest, why: String) -> Reply {
    tracing::warn!(step = step.name, "{why}");
    Reply::Error {
        kind: ErrorKind::Refused,
        message: why,
    }
}

fn error(id: u64, kind: ErrorKind, message: String) -> Response {
    Response {
        id,
        reply: Reply::Error { kind, message },
    }
}
