//! A shell command: as a check (exit code, output) or as a change.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, Context, Poll};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAction {
    /// Run with `sh -c`.
    pub run: String,
    #[serde(default)]
    pub expect_exit: i32,
    pub output_contains: Option<String>,
    /// Whether the command changes something (asked for before it runs).
    #[serde(default)]
    pub destructive: bool,
    #[serde(flatten)]
    pub poll: Poll,
}

/// Runs `sh -c run`; the process is killed if the step times out.
pub async fn shell(run: &str, ctx: &Context) -> Result<(i32, String), String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(run)
        .env("DRP_T_FAIL", ctx.t_fail.to_rfc3339())
        .env("DRP_RUNBOOK", &ctx.runbook)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run `{run}`: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

impl CommandAction {
    async fn once(&self, ctx: &Context) -> Result<String, String> {
        let (code, output) = shell(&self.run, ctx).await?;
        let tail: String = output
            .trim()
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if code != self.expect_exit {
            return Err(format!(
                "`{}` exited {code}, expected {}: {tail}",
                self.run, self.expect_exit
            ));
        }
        if let Some(want) = &self.output_contains
            && !output.contains(want.as_str())
        {
            return Err(format!(
                "`{}`: output does not contain `{want}`: {tail}",
                self.run
            ));
        }
        Ok(format!("`{}` exited {code}", self.run))
    }
}

impl Action for CommandAction {
    fn describe(&self) -> String {
        format!("run `{}`", self.run)
    }

    fn destructive(&self) -> bool {
        self.destructive
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(super::poll(self.poll, move || self.once(ctx)))
    }
}
