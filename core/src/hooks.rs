//! Hooks around a backup or a snapshot set: `before` first (its failure
//! means the work is not done), then the work, then `on_error` when
//! anything failed, then `after` whatever happened.
//!
//! [`around`] is the one sequence: a backup calls it in `backup::run` and
//! a set in `snapshot::create`, the places every command reaching them
//! shares (`backup`, `run --due`, the
//! daemon, `snapshot create`, `guard`, a drill's steps). Each hook runs
//! through `source::process`, the one place tools run: in a process group
//! of its own, killed whole when its timeout passes.
//!
//! A hook learns what it runs around from its environment, never from its
//! arguments: `DRP_HOOK`, `DRP_HOST`, `DRP_EXPORT` or `DRP_SNAPSHOT_SET` and
//! `DRP_CHANGE`, and once the work is done `DRP_OUTCOME` (`ok` or `failed`)
//! with `DRP_ERROR` (what failed, as the report says it) when it failed.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::config::hooks::{HookEnv, Hooks};
use crate::source::{Cancel, SourceError, process};

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Before,
    After,
    OnError,
}

impl Hook {
    /// The key it is written under.
    pub fn key(self) -> &'static str {
        match self {
            Hook::Before => "before",
            Hook::After => "after",
            Hook::OnError => "on_error",
        }
    }
}

/// What the hooks run around.
#[derive(Debug, Clone, Copy)]
pub enum Around<'a> {
    /// One backup of an export.
    Export(&'a str),
    /// One snapshot set, taken for a change.
    SnapshotSet { id: &'a str, change: &'a str },
}

/// What the hooks will do around `work` ("the backup", "the snapshot
/// set"), in the order they run: what `drp check` shows.
pub fn plan(hooks: &Hooks, work: &str) -> String {
    let shown = |argv: &[String]| format!("`{}`", argv.join(" "));
    let mut steps = Vec::new();
    if let Some(b) = &hooks.before {
        steps.push(format!(
            "before {} (if it fails, {work} is not taken)",
            shown(b)
        ));
    }
    if let Some(e) = &hooks.on_error {
        steps.push(format!("on error {}", shown(e)));
    }
    if let Some(a) = &hooks.after {
        steps.push(format!("after {} (always)", shown(a)));
    }
    let secrets = hooks
        .env
        .iter()
        .filter(|(_, v)| matches!(v, HookEnv::Secret(_)))
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>();
    let mut text = format!(
        "{}; each killed with its process group after {}",
        steps.join(", "),
        crate::config::units::format_duration(hooks.timeout.0)
    );
    if !secrets.is_empty() {
        text.push_str(&format!(
            "; secrets in their environment: {}",
            secrets.join(", ")
        ));
    }
    text
}

/// One hook's run, as a backup's report and a set's record show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub hook: Hook,
    pub command: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    /// Why it failed (its exit, its stderr's last lines, or its timeout);
    /// `None` when it succeeded.
    pub error: Option<String>,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The work and the hooks that ran around it.
#[derive(Debug)]
pub struct Hooked<T> {
    /// `None` when `before` failed and the work was not done.
    pub outcome: Option<T>,
    /// Every hook run, in order.
    pub runs: Vec<HookRun>,
}

impl<T> Hooked<T> {
    /// The `before` hook's failure, when it kept the work from running.
    pub fn refused(&self) -> Option<&str> {
        match self.outcome {
            Some(_) => None,
            None => self
                .runs
                .iter()
                .find(|r| r.hook == Hook::Before)
                .and_then(|r| r.error.as_deref()),
        }
    }
}

/// Runs `work` between the hooks: `before` (when it fails, `work` is not
/// run), then `work`, then `on_error` when `before` or `work` failed
/// (`failure` says whether the work's outcome is a failure, and what), then
/// `after`. Without hooks, `work` alone.
pub(crate) async fn around<T>(
    policy: &Policy,
    hooks: Option<&Hooks>,
    subject: Around<'_>,
    work: impl Future<Output = T>,
    failure: impl FnOnce(&T) -> Option<String>,
) -> Hooked<T> {
    let Some(hooks) = hooks else {
        return Hooked {
            outcome: Some(work.await),
            runs: Vec::new(),
        };
    };
    let mut runs = Vec::new();
    let refused = match run(policy, hooks, Hook::Before, subject, None).await {
        Some(r) if !r.ok() => {
            let why = r.error.clone();
            runs.push(r);
            why
        }
        Some(r) => {
            runs.push(r);
            None
        }
        None => None,
    };
    let (outcome, failed) = match refused {
        Some(why) => (None, Some(why)),
        None => {
            let outcome = work.await;
            let failed = failure(&outcome);
            (Some(outcome), failed)
        }
    };
    if failed.is_some() {
        runs.extend(run(policy, hooks, Hook::OnError, subject, failed.as_deref()).await);
    }
    runs.extend(run(policy, hooks, Hook::After, subject, failed.as_deref()).await);
    Hooked { outcome, runs }
}

/// Runs one hook, when declared.
async fn run(
    policy: &Policy,
    hooks: &Hooks,
    hook: Hook,
    subject: Around<'_>,
    failure: Option<&str>,
) -> Option<HookRun> {
    let argv = match hook {
        Hook::Before => hooks.before.as_ref(),
        Hook::After => hooks.after.as_ref(),
        Hook::OnError => hooks.on_error.as_ref(),
    }?
    .clone();
    let started_at = Utc::now();
    let started = Instant::now();
    let mut cmd = Command::new(program(policy, &argv[0]));
    cmd.args(&argv[1..]).current_dir(&policy.base_dir);
    let mut problem = None;
    for (name, value) in &hooks.env {
        match value {
            HookEnv::Plain(v) => {
                cmd.env(name, v);
            }
            HookEnv::Secret(r) => match r.resolve(&policy.base_dir) {
                Ok(secret) => {
                    cmd.env(name, secret.expose());
                }
                Err(why) => problem = Some(format!("to start: its variable `{name}`: {why}")),
            },
        }
    }
    cmd.env("DRP_HOOK", hook.key())
        .env("DRP_HOST", &policy.host);
    match subject {
        Around::Export(name) => {
            cmd.env("DRP_EXPORT", name);
        }
        Around::SnapshotSet { id, change } => {
            cmd.env("DRP_SNAPSHOT_SET", id).env("DRP_CHANGE", change);
        }
    }
    if hook != Hook::Before {
        cmd.env(
            "DRP_OUTCOME",
            if failure.is_some() { "failed" } else { "ok" },
        );
        if let Some(why) = failure {
            cmd.env("DRP_ERROR", why);
        }
    }
    let timeout = hooks.timeout.0;
    let error = match problem {
        Some(why) => Some(why),
        None => tokio::task::spawn_blocking(move || within(&mut cmd, timeout))
            .await
            .unwrap_or_else(|e| Err(format!("to finish: its task stopped: {e}")))
            .err(),
    };
    let error = error.map(|why| {
        format!(
            "the `{}` hook `{}` failed {why}",
            hook.key(),
            argv.join(" ")
        )
    });
    match &error {
        Some(e) => tracing::warn!(hook = hook.key(), "{e}"),
        None => tracing::info!(hook = hook.key(), command = %argv.join(" "), "hook ran"),
    }
    Some(HookRun {
        hook,
        command: argv,
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        error,
    })
}

/// A program named by a path is the policy's, relative to its folder; a
/// bare name is looked up on `PATH`.
fn program(policy: &Policy, name: &str) -> std::path::PathBuf {
    if name.contains('/') {
        crate::config::resolve_relative(&policy.base_dir, std::path::Path::new(name))
    } else {
        std::path::PathBuf::from(name)
    }
}

/// Runs `cmd` in a process group of its own; past `timeout`, kills the
/// group. A hook's stdout goes to the log; its stderr's last lines explain
/// a failure.
fn within(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let cancel = Cancel::default();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let timer = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                cancel.cancel();
            }
        })
    };
    let result = process::run_cancellable(cmd, process::Input::Bytes(&[]), &cancel);
    drop(done);
    let _ = timer.join();
    match result {
        Ok(out) => {
            let out = out.trim();
            if !out.is_empty() {
                tracing::info!("hook output: {out}");
            }
            Ok(())
        }
        Err(SourceError::Cancelled) => Err(format!(
            "(timed out): it did not finish within {}, and its process group was killed",
            crate::config::units::format_duration(timeout)
        )),
        Err(SourceError::ToolFailed { status, stderr, .. }) => Err(format!("({status}): {stderr}")),
        Err(e) => Err(format!("to start: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &std::path::Path, hooks: &str) -> Policy {
        let text = format!(
            "host: h\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  db:\n    source: {{kind: sqlite, path: a.db}}\n    targets: [nas]\n    hooks:\n{hooks}"
        );
        let path = dir.join("p.yaml");
        std::fs::write(&path, &text).unwrap();
        Policy::load(&path).unwrap()
    }

    fn hooks(p: &Policy) -> &Hooks {
        p.exports["db"].hooks.as_ref().unwrap()
    }

    #[tokio::test]
    async fn a_failing_before_keeps_the_work_from_running_and_the_others_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(
            dir.path(),
            "      before: [sh, -c, 'echo cannot quiesce >&2; exit 3']\n      on_error: [sh, -c, 'echo \"$DRP_OUTCOME $DRP_ERROR\" > on_error.txt']\n      after: [sh, -c, 'echo \"$DRP_HOOK $DRP_EXPORT $DRP_OUTCOME\" > after.txt']\n",
        );
        let mut ran = false;
        let hooked = around(
            &p,
            Some(hooks(&p)),
            Around::Export("db"),
            async { ran = true },
            |_| None,
        )
        .await;
        assert!(!ran, "the work must not run after a failed `before`");
        let refused = hooked.refused().expect("refused");
        assert!(refused.contains("exit code 3"), "{refused}");
        assert!(refused.contains("cannot quiesce"), "{refused}");
        let hooks_run: Vec<Hook> = hooked.runs.iter().map(|r| r.hook).collect();
        assert_eq!(hooks_run, [Hook::Before, Hook::OnError, Hook::After]);
        let on_error = std::fs::read_to_string(dir.path().join("on_error.txt")).unwrap();
        assert!(
            on_error.starts_with("failed the `before` hook"),
            "{on_error}"
        );
        let after = std::fs::read_to_string(dir.path().join("after.txt")).unwrap();
        assert_eq!(after, "after db failed\n");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        // The hook's child writes its pid, then sleeps: both must be gone.
        let p = policy(
            dir.path(),
            "      before: [sh, -c, 'sleep 30 & echo $! > child.pid; wait']\n      timeout: 1s\n",
        );
        let started = Instant::now();
        let hooked = around(&p, Some(hooks(&p)), Around::Export("db"), async {}, |_| {
            None
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        let refused = hooked.refused().expect("refused");
        assert!(refused.contains("did not finish within 1s"), "{refused}");
        let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, it may linger as a zombie until its new parent reaps it.
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        // A signal is delivered when the process next runs: give it a moment.
        let gone_by = Instant::now() + Duration::from_secs(5);
        while running() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(), "the hook's child {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn a_secret_reaches_the_hook_through_its_environment_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cr3t-value\n").unwrap();
        let p = policy(
            dir.path(),
            "      after: [sh, -c, 'printf %s \"$APP_TOKEN\" > seen.txt']\n      env: {APP_TOKEN: {file: token}}\n",
        );
        let hooked = around(&p, Some(hooks(&p)), Around::Export("db"), async {}, |_| {
            None
        })
        .await;
        assert!(hooked.runs.iter().all(HookRun::ok), "{:?}", hooked.runs);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("seen.txt")).unwrap(),
            "s3cr3t-value"
        );
        let recorded = serde_json::to_string(&hooked.runs).unwrap();
        assert!(!recorded.contains("s3cr3t"), "{recorded}");
    }
}
