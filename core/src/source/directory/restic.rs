//! The `restic` binary, driven as drp drives `pg_dump`: an argument vector
//! (never a shell), its `--json` lines parsed, the repository key handed over
//! in its environment (never argv, never logged), its process group killed
//! on cancel through [`crate::source::process`].
//!
//! One restic repository per target, `restic` beside the drp repository's
//! own keys (a local path's `restic/` folder, an SFTP folder's, an S3
//! prefix's), shared by every export and host writing to that target: what
//! two hosts hold in common is stored once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::backend::TargetConfig;
use crate::backend::sftp::KnownHosts;
use crate::secret::SecretRef;
use crate::source::process::{self, find_tool, run_lines};
use crate::source::{Cancel, SourceError};

/// Where restic finds one target's repository, and how it reaches it.
#[derive(Clone)]
pub struct Repo {
    /// The `-r` argument (no credential in it).
    pub arg: String,
    /// Extended options (`-o sftp.command=…`), no credential in them.
    pub options: Vec<String>,
    /// Variables for restic's environment: S3 credentials read from the
    /// target's secret references, its region.
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The environment holds credentials: never shown.
        write!(f, "restic repository {}", self.arg)
    }
}

impl Repo {
    /// The repository of `target` (as its policy writes it), with the
    /// target's credentials read for restic's environment.
    pub fn of(target: &TargetConfig, base_dir: &Path) -> Result<Repo, SourceError> {
        let (arg, options) = Repo::location(target, base_dir)?;
        let mut env = Vec::new();
        if let TargetConfig::S3(c) = target {
            env.push((
                "AWS_DEFAULT_REGION".to_string(),
                c.region.clone().unwrap_or_else(|| "us-east-1".into()),
            ));
            for (var, secret) in [
                ("AWS_ACCESS_KEY_ID", &c.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", &c.secret_access_key),
            ] {
                if let Some(r) = secret {
                    let value = r
                        .resolve(base_dir)
                        .map_err(|e| SourceError::Invalid(format!("the S3 target's {var}: {e}")))?;
                    env.push((var.to_string(), value.expose().to_string()));
                }
            }
        }
        Ok(Repo { arg, options, env })
    }

    /// Where `target`'s repository is for restic: its `-r` argument and its
    /// `-o` options, neither holding a credential (the handover page prints
    /// them).
    pub fn location(
        target: &TargetConfig,
        base_dir: &Path,
    ) -> Result<(String, Vec<String>), SourceError> {
        match target {
            TargetConfig::Local(c) => {
                let root = crate::paths::resolve_relative(base_dir, &c.path);
                let root = std::path::absolute(&root).unwrap_or(root);
                Ok((root.join("restic").display().to_string(), Vec::new()))
            }
            TargetConfig::Sftp(c) => {
                let mut ssh = vec!["ssh".to_string()];
                if let Some(p) = c.port {
                    ssh.extend(["-p".into(), p.to_string()]);
                }
                if let Some(u) = &c.user {
                    ssh.extend(["-l".into(), u.clone()]);
                }
                if let Some(k) = &c.key {
                    let key = crate::paths::resolve_relative(base_dir, k);
                    ssh.extend(["-i".into(), key.display().to_string()]);
                    ssh.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
                }
                ssh.extend(["-o".into(), "BatchMode=yes".into()]);
                match c.known_hosts {
                    KnownHosts::Strict => {
                        ssh.extend(["-o".into(), "StrictHostKeyChecking=yes".into()])
                    }
                    KnownHosts::Add => {
                        ssh.extend(["-o".into(), "StrictHostKeyChecking=accept-new".into()])
                    }
                    KnownHosts::Accept => ssh.extend([
                        "-o".into(),
                        "StrictHostKeyChecking=no".into(),
                        "-o".into(),
                        "UserKnownHostsFile=/dev/null".into(),
                        "-o".into(),
                        "LogLevel=ERROR".into(),
                    ]),
                }
                ssh.extend([c.host.clone(), "-s".into(), "sftp".into()]);
                // restic splits the command on spaces and quotes: a word that
                // needs quoting is refused rather than guessed at.
                if let Some(w) = ssh.iter().find(|w| {
                    w.is_empty()
                        || w.contains(|ch: char| ch.is_whitespace() || "'\"\\".contains(ch))
                }) {
                    return Err(SourceError::Invalid(format!(
                        "the SFTP setting `{w}` holds a space or a quote, which restic's sftp.command cannot carry; \
                         move the key to a path without one"
                    )));
                }
                let path = format!("{}/restic", c.path.trim_end_matches('/'));
                Ok((
                    format!("sftp:{}:{path}", c.host),
                    vec![format!("sftp.command={}", ssh.join(" "))],
                ))
            }
            TargetConfig::S3(c) => {
                let endpoint = c
                    .endpoint
                    .as_deref()
                    .unwrap_or("s3.amazonaws.com")
                    .trim_end_matches('/');
                let prefix = c.prefix.as_deref().unwrap_or("").trim_matches('/');
                let mut arg = format!("s3:{endpoint}/{}", c.bucket);
                if !prefix.is_empty() {
                    arg += &format!("/{prefix}");
                }
                arg += "/restic";
                Ok((arg, Vec::new()))
            }
        }
    }
}

/// How restic reads the repository key: a file it reads itself, or a value
/// put in its environment.
#[derive(Clone)]
pub enum Key {
    File(PathBuf),
    Value(String),
}

impl Key {
    pub fn of(key: &SecretRef, base_dir: &Path) -> Result<Key, SourceError> {
        match key {
            SecretRef::File(p) => {
                let path = crate::paths::resolve_relative(base_dir, p);
                if !path.is_file() {
                    return Err(SourceError::Invalid(format!(
                        "the repository key file {} does not exist; create it (for example `head -c 32 /dev/urandom | base64 > {}`, mode 0600) and keep a copy off this host",
                        path.display(),
                        path.display()
                    )));
                }
                Ok(Key::File(std::path::absolute(&path).unwrap_or(path)))
            }
            SecretRef::Env(_) => key
                .resolve(base_dir)
                .map(|s| Key::Value(s.expose().to_string()))
                .map_err(|e| SourceError::Invalid(format!("the repository key: {e}"))),
        }
    }
}

/// One repository opened with its key.
pub struct Restic {
    bin: PathBuf,
    repo: Repo,
    key: Key,
}

/// A line of `restic backup --json`.
#[derive(Debug, Deserialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum BackupLine {
    Status(Status),
    Summary(Summary),
    VerboseStatus {},
    Error {},
}

/// Where a backup stands.
#[derive(Debug, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub total_files: u64,
    #[serde(default)]
    pub files_done: u64,
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub bytes_done: u64,
}

/// What a backup did.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub data_added: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub snapshot_id: String,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub time: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Snapshot {
    /// The value of tag `name=…`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
    }
}

/// restic's words for a repository that is not there yet.
const NO_REPOSITORY: [&str; 3] = [
    "Is there a repository at the following location?",
    "does not exist",
    "unable to open config file",
];

impl Restic {
    pub fn new(repo: Repo, key: Key) -> Result<Restic, SourceError> {
        let bin = find_tool(
            None,
            &["restic"],
            "install restic (Debian: `apt install restic`): incremental tree exports are written in its repository format",
        )?;
        Ok(Restic { bin, repo, key })
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// `restic version`'s first line.
    pub fn version(&self) -> String {
        process::run(Command::new(&self.bin).arg("version"), None)
            .map(|v| v.lines().next().unwrap_or_default().trim().to_string())
            .unwrap_or_default()
    }

    /// A restic command on this repository, its key and credentials in its
    /// environment only.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        for var in [
            "RESTIC_REPOSITORY",
            "RESTIC_REPOSITORY_FILE",
            "RESTIC_PASSWORD",
            "RESTIC_PASSWORD_FILE",
            "RESTIC_PASSWORD_COMMAND",
        ] {
            cmd.env_remove(var);
        }
        match &self.key {
            Key::File(p) => cmd.env("RESTIC_PASSWORD_FILE", p),
            Key::Value(v) => cmd.env("RESTIC_PASSWORD", v),
        };
        for (k, v) in &self.repo.env {
            cmd.env(k, v);
        }
        cmd.env("RESTIC_PROGRESS_FPS", "2");
        cmd.arg("-r").arg(&self.repo.arg);
        for o in &self.repo.options {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args);
        cmd
    }

    fn run(&self, args: &[&str], cancel: &Cancel) -> Result<String, SourceError> {
        let mut out = String::new();
        run_lines(&mut self.command(args), cancel, &mut |l| {
            out.push_str(l);
            out.push('\n');
        })?;
        Ok(out)
    }

    /// Creates the repository when there is none yet (the first incremental
    /// backup to a target), compressed (repository format 2).
    pub fn ensure(&self, cancel: &Cancel) -> Result<(), SourceError> {
        match self.run(&["--no-lock", "cat", "config"], cancel) {
            Ok(_) => Ok(()),
            Err(SourceError::ToolFailed { stderr, .. })
                if NO_REPOSITORY.iter().any(|w| stderr.contains(w)) =>
            {
                match self.run(&["init", "--repository-version", "2"], cancel) {
                    Ok(_) => Ok(()),
                    // Another host created it meanwhile.
                    Err(SourceError::ToolFailed { stderr, .. })
                        if stderr.contains("already exists")
                            || stderr.contains("already initialized") =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Backs up the tree at `root` (read as `.`, so the snapshot holds the
    /// tree itself at its top) tagged with `tags`, reporting each status.
    #[allow(clippy::too_many_arguments)]
    pub fn backup(
        &self,
        root: &Path,
        host: &str,
        tags: &[String],
        excludes: &[String],
        one_file_system: bool,
        cancel: &Cancel,
        status: &mut dyn FnMut(&Status),
    ) -> Result<Summary, SourceError> {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--compression".into(),
            "auto".into(),
            "backup".into(),
            ".".into(),
            "--host".into(),
            host.into(),
        ];
        for t in tags {
            args.extend(["--tag".into(), t.clone()]);
        }
        for e in excludes {
            args.extend(["--exclude".into(), e.clone()]);
        }
        if one_file_system {
            args.push("--one-file-system".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(&argv);
        cmd.current_dir(root);
        let mut summary = None;
        run_lines(
            &mut cmd,
            cancel,
            &mut |l| match serde_json::from_str::<BackupLine>(l) {
                Ok(BackupLine::Status(s)) => status(&s),
                Ok(BackupLine::Summary(s)) => summary = Some(s),
                _ => {}
            },
        )?;
        summary
            .ok_or_else(|| SourceError::Invalid("restic backup ended without its summary".into()))
    }

    /// The snapshots carrying every one of `tags`.
    pub fn snapshots(
        &self,
        tags: &[String],
        cancel: &Cancel,
    ) -> Result<Vec<Snapshot>, SourceError> {
        let mut args = vec!["--no-lock", "--json", "snapshots"];
        let joined = tags.join(",");
        if !tags.is_empty() {
            args.extend(["--tag", joined.as_str()]);
        }
        let out = self.run(&args, cancel)?;
        serde_json::from_str::<Option<Vec<Snapshot>>>(out.trim())
            .map(Option::unwrap_or_default)
            .map_err(|e| SourceError::Invalid(format!("restic snapshots: unreadable output: {e}")))
    }

    /// The full id of the snapshot whose id starts with `short`.
    pub fn full_id(&self, short: &str, cancel: &Cancel) -> Result<String, SourceError> {
        let out = self.run(&["--no-lock", "--json", "snapshots", short], cancel)?;
        let found: Vec<Snapshot> = serde_json::from_str(out.trim()).map_err(|e| {
            SourceError::Invalid(format!("restic snapshots: unreadable output: {e}"))
        })?;
        found
            .into_iter()
            .find(|s| s.id.starts_with(short))
            .map(|s| s.id)
            .ok_or_else(|| SourceError::Invalid(format!("restic lists no snapshot {short}")))
    }

    /// Restores snapshot `id` into `into` (the snapshot's top becomes
    /// `into`'s), only `includes` when given, every file read back against
    /// the repository.
    pub fn restore(
        &self,
        id: &str,
        into: &Path,
        includes: &[String],
        cancel: &Cancel,
    ) -> Result<(), SourceError> {
        let target = into.display().to_string();
        let mut args = vec!["restore", id, "--target", target.as_str(), "--verify"];
        for i in includes {
            args.extend(["--include", i.as_str()]);
        }
        self.run(&args, cancel).map(|_| ())
    }

    /// `restic check`, reading back `subset` of the packs (`10%`, `1/5`).
    pub fn check(&self, subset: &str, cancel: &Cancel) -> Result<(), SourceError> {
        let arg = format!("--read-data-subset={subset}");
        self.run(&["check", arg.as_str()], cancel).map(|_| ())
    }

    /// Forgets snapshots (their data stays until [`Restic::prune`]).
    pub fn forget(&self, ids: &[String], cancel: &Cancel) -> Result<(), SourceError> {
        let mut args = vec!["forget"];
        args.extend(ids.iter().map(String::as_str));
        self.run(&args, cancel).map(|_| ())
    }

    /// Removes what no snapshot references, after clearing locks left by
    /// killed runs of this host.
    pub fn prune(&self, cancel: &Cancel) -> Result<(), SourceError> {
        self.run(&["unlock"], cancel)?;
        self.run(&["prune"], cancel).map(|_| ())
    }

    /// The repository's own statistics (`restic stats --mode raw-data`).
    pub fn stats(
        &self,
        cancel: &Cancel,
    ) -> Result<BTreeMap<String, serde_json::Value>, SourceError> {
        let out = self.run(
            &["--no-lock", "--json", "stats", "--mode", "raw-data"],
            cancel,
        )?;
        serde_json::from_str(out.trim())
            .map_err(|e| SourceError::Invalid(format!("restic stats: unreadable output: {e}")))
    }
}
