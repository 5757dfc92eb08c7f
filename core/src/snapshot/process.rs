//! Running the tools the local providers drive (`btrfs`, `qemu-img`).
//!
//! Close to `crate::source::process::run`, but async (providers run on the
//! runtime, several at once) and with no input, no cancellation and no
//! stderr cap: these tools say little and finish quickly.

use super::SnapshotError;

/// Runs a command to completion; returns its stdout. Its stderr explains a
/// failure.
pub async fn run(program: &str, args: &[&str]) -> Result<String, SnapshotError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| SnapshotError::ToolMissing {
            program: program.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SnapshotError::Tool {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
