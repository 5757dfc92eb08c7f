//! Putting a base backup back: the staged copy checked with
//! `pg_verifybackup`, replayed with the WAL archive in a private server
//! (`replay.rs`), and only then swapped in for the data directory.

use std::path::PathBuf;
use std::process::Command;

use super::refuse_running;
use super::replay::{Recovery, Replayal, Stop, replay_in_private_server};
use crate::source::process;
use crate::source::{CommitOptions, Committed, Replay, ReplayFrom, SourceError, Staged};

pub(super) struct RestoreTools {
    pub(super) postgres: PathBuf,
    pub(super) verify: PathBuf,
}

pub(super) struct StagedCluster {
    pub(super) staging: tempfile::TempDir,
    pub(super) dest: PathBuf,
    pub(super) tools: RestoreTools,
    pub(super) user: Option<String>,
}

impl Staged for StagedCluster {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        let Some(Replay {
            target,
            inclusive,
            from,
        }) = &options.replay
        else {
            return Err(SourceError::Invalid(
                "a base backup is restored with its WAL archive; no replay was given".into(),
            ));
        };
        let dir = self.staging.path();
        let mut verify = Command::new(&self.tools.verify);
        verify.args(["--no-parse-wal", "--quiet"]).arg(dir);
        process::run_cancellable(&mut verify, process::Input::Bytes(&[]), &options.cancel)
            .map_err(|e| {
                SourceError::Invalid(format!(
                    "the base backup does not match its backup_manifest: {e}"
                ))
            })?;
        let (restore_command, archive_command, archive_ends_at, segment_size, timeline) = match from
        {
            ReplayFrom::Archive {
                restore_command,
                archive_command,
                archive_ends_at,
                segment_size,
                timeline,
            } => (
                restore_command,
                archive_command,
                archive_ends_at,
                segment_size,
                timeline,
            ),
            ReplayFrom::Standby {
                restore_command,
                archive_command,
            } => {
                standby_settings(dir, restore_command, archive_command.as_deref())?;
                options.cancel.check()?;
                refuse_running(&self.dest)?;
                return crate::source::directory::swap_in(
                    &self.staging.keep(),
                    &self.dest,
                    options.drop_replaced,
                );
            }
            ReplayFrom::Binlogs(_) => {
                return Err(SourceError::Invalid(
                    "a base backup replays WAL, not binary logs".into(),
                ));
            }
        };
        std::fs::write(dir.join("recovery.signal"), b"")
            .map_err(|e| SourceError::io("cannot write recovery.signal", e))?;
        let replay = |stop: &Stop| {
            replay_in_private_server(
                dir,
                &self.tools.postgres,
                self.user.as_deref(),
                Recovery {
                    stop,
                    timeline: *timeline,
                    restore_command,
                    archive_command: archive_command.as_deref(),
                },
                options,
            )
        };
        let first = match target {
            Some(t) => Stop::Time(*t, *inclusive),
            None => Stop::End,
        };
        let (replayed, to_the_end, ended_in) = match replay(&first)? {
            Replayal::Promoted(r, ended_in) => (r, target.is_none(), ended_in),
            // PostgreSQL stops short of a target time when no transaction
            // committed after it in the archived WAL: every change it
            // replayed is then before the target. The same server resumes and
            // stops exactly where that replay ended, never further (files
            // archived meanwhile may hold changes after the target).
            Replayal::TargetNotReached(Some(end)) => {
                tracing::info!(
                    "no transaction in the archived WAL committed after the target: stopping at {end}"
                );
                match replay(&Stop::Lsn(end))? {
                    Replayal::Promoted(r, ended_in) => (r, false, ended_in),
                    Replayal::TargetNotReached(_) => {
                        return Err(SourceError::Invalid(
                            "the replay could not stop where the archived WAL ends; the data directory was not \
                             touched: restore to an earlier time"
                                .into(),
                        ));
                    }
                }
            }
            Replayal::TargetNotReached(None) => {
                return Err(SourceError::Invalid(
                    "the replay ended before its target and the server did not say where; the data directory \
                     was not touched: restore to an earlier time"
                        .into(),
                ));
            }
        };
        if to_the_end {
            check_replayed_to_the_end(&ended_in, archive_ends_at.as_deref(), *segment_size)?;
        }
        options.cancel.check()?;
        refuse_running(&self.dest)?;
        let mut committed = crate::source::directory::swap_in(
            &self.staging.keep(),
            &self.dest,
            options.drop_replaced,
        )?;
        committed.replayed = Some(replayed);
        Ok(committed)
    }
}

/// Makes the staged data directory a standby of the archive: `standby.signal`,
/// and drp's settings appended to `postgresql.auto.conf` (read after
/// `postgresql.conf`, so they win over the primary's own): the archive
/// read by `restore_command`, the newest timeline followed, no streaming
/// from anywhere, and what a promoted server archives with.
fn standby_settings(
    dir: &std::path::Path,
    restore_command: &str,
    archive_command: Option<&str>,
) -> Result<(), SourceError> {
    use std::io::Write as _;
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut text =
        String::from("\n# Set by drp: a warm standby replaying the primary's WAL archive.\n");
    let mut set = |k: &str, v: &str| text += &format!("{k} = {}\n", quote(v));
    set("restore_command", restore_command);
    set("recovery_target_timeline", "latest");
    set("primary_conninfo", "");
    set("recovery_end_command", "");
    set("archive_cleanup_command", "");
    set("hot_standby", "on");
    match archive_command {
        Some(command) => {
            set("archive_mode", "on");
            set("archive_command", command);
        }
        None => set("archive_mode", "off"),
    }
    let auto = dir.join("postgresql.auto.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| SourceError::io("cannot write the standby's postgresql.auto.conf", e))?;
    std::fs::write(dir.join("standby.signal"), b"")
        .map_err(|e| SourceError::io("cannot write standby.signal", e))
}

/// A replay to the end of the archive must end in the last file of the
/// unbroken run the plan saw (or later): ending earlier means a file of it
/// went missing or could not be read after the plan, and the restore would
/// silently lose what follows.
fn check_replayed_to_the_end(
    ended_in: &str,
    archive_ends_at: Option<&str>,
    size: u64,
) -> Result<(), SourceError> {
    let size = if size == 0 {
        crate::archiving::DEFAULT_SEGMENT_SIZE
    } else {
        size
    };
    let segno = |name: &str| crate::archiving::WalFile::parse(name).and_then(|f| f.segno(size));
    if let (Some(ended), Some(end)) = (segno(ended_in), archive_ends_at.and_then(segno))
        && ended + 1 < end
    {
        return Err(SourceError::Invalid(format!(
            "the replay ended in {ended_in}, before the end of the archive the plan saw ({} is the first file \
             missing): a WAL file went missing or could not be read meanwhile; the data directory was not touched",
            archive_ends_at.unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_to_the_end_that_stops_before_the_planned_end_is_refused() {
        let end = Some("000000010000000000000009");
        let size = crate::archiving::DEFAULT_SEGMENT_SIZE;
        check_replayed_to_the_end("000000020000000000000008", end, size).unwrap();
        check_replayed_to_the_end("000000020000000000000009", end, size).unwrap();
        let early = check_replayed_to_the_end("000000020000000000000005", end, size).unwrap_err();
        assert!(early.to_string().contains("went missing"), "{early}");
        // 64 MiB segments: the last of log 0 is followed by the first of log 1.
        check_replayed_to_the_end(
            "00000001000000000000003F",
            Some("000000010000000100000000"),
            64 << 20,
        )
        .unwrap();
        assert!(early.to_string().contains("went missing"), "{early}");
    }
}
