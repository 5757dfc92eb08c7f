//! A source around any dump tool: the `backup` command's stdout is the
//! point; a restore streams the point into the `restore` command's stdin;
//! an optional `verify` command reads it during restore tests.
//!
//! Commands are argv lists, run without a shell, each in a process group of
//! its own that is killed whole at the source's timeout. Secrets reach them
//! through their environment (`env:`), never their arguments. drp does not
//! know what the restore command changes: it receives the whole point and
//! checks both digests before the command starts, but it cannot load the
//! point beside the live data, swap it in, or keep what it replaces; the
//! plan says so before it asks.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::process::{self, ChildExport, Input};
use super::{
    Cancel, CommitOptions, Committed, Destination, ExportInfo, ExportStream, Source, SourceError,
    Staged, StagedFile,
};
use crate::config::{HumanDuration, SecretRef};

/// How long a command may run when the source sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// How many of a failed command's last stderr lines its error shows.
const STDERR_LINES: usize = 10;

/// The environment variable a restore command finds `--to` in.
pub const RESTORE_TO_VAR: &str = "DRP_RESTORE_TO";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Writes the point on its stdout.
    pub backup: Vec<String>,
    /// Reads a point on its stdin and applies it.
    pub restore: Vec<String>,
    /// Reads a point on its stdin and exits 0 when it is sound (restore tests).
    #[serde(default)]
    pub verify: Option<Vec<String>>,
    /// Variables set for every command: a plain value, or a secret reference.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// How long each command may run (default 1h).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// A variable of a command's environment.
#[derive(Debug, Clone)]
pub enum EnvValue {
    Plain(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_yaml_ng::Value::deserialize(d)?;
        match value {
            serde_yaml_ng::Value::String(s) => Ok(EnvValue::Plain(s)),
            serde_yaml_ng::Value::Number(n) => Ok(EnvValue::Plain(n.to_string())),
            serde_yaml_ng::Value::Bool(b) => Ok(EnvValue::Plain(b.to_string())),
            v => SecretRef::deserialize(v)
                .map(EnvValue::Secret)
                .map_err(D::Error::custom),
        }
    }
}

impl CommandConfig {
    /// Problems with the commands and variables, each as (key under the
    /// source, message): what `drp check` reports in place.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut argv = |key: &str, argv: &[String]| match argv.first() {
            None => out.push((
                key.to_string(),
                "an empty command: give the program and its arguments as a list".into(),
            )),
            Some(p) if p.is_empty() => {
                out.push((key.to_string(), "the program's name is empty".into()))
            }
            Some(_) => {}
        };
        argv("backup", &self.backup);
        argv("restore", &self.restore);
        if let Some(v) = &self.verify {
            argv("verify", v);
        }
        for name in self.env.keys() {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                out.push((
                    format!("env.{name}"),
                    format!("`{name}` is not a variable name: letters, digits and `_`, not starting with a digit"),
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            out.push((
                "timeout".into(),
                "a timeout of zero stops every command at once".into(),
            ));
        }
        out
    }

    fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0)
    }
}

/// How a command is shown in plans and errors: its argv, space-separated
/// (secrets never are in it: they travel in the environment).
pub fn shown(argv: &[String]) -> String {
    argv.join(" ")
}

pub struct CommandSource {
    config: CommandConfig,
    base_dir: PathBuf,
}

impl CommandSource {
    pub fn new(config: CommandConfig, base_dir: &Path) -> Self {
        CommandSource {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// `argv` ready to run: no shell, relative to the policy's folder, its
    /// environment the policy's `env` (secrets read now).
    fn command(&self, argv: &[String]) -> Result<Command, SourceError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(SourceError::Invalid("an empty command".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.base_dir);
        for (name, value) in &self.config.env {
            match value {
                EnvValue::Plain(v) => {
                    cmd.env(name, v);
                }
                EnvValue::Secret(secret) => {
                    let v = secret.resolve(&self.base_dir).map_err(|e| {
                        SourceError::Invalid(format!("the command's variable `{name}`: {e}"))
                    })?;
                    cmd.env(name, v.expose());
                }
            }
        }
        Ok(cmd)
    }

    /// The verify command, if the source has one.
    pub fn has_verify(&self) -> bool {
        self.config.verify.is_some()
    }

    /// Runs the verify command with the point in `file` on its stdin.
    pub fn verify_file(&self, file: &Path, cancel: &Cancel) -> Result<(), SourceError> {
        let Some(argv) = &self.config.verify else {
            return Err(SourceError::Invalid(
                "this source has no `verify` command".into(),
            ));
        };
        let mut cmd = self.command(argv)?;
        process::run_limited(
            &mut cmd,
            Input::File(file),
            cancel,
            Some(self.config.timeout()),
        )
        .map(|_| ())
        .map_err(|e| named(argv, e))
    }
}

/// A failed tool's error with the whole command and the last lines of its
/// stderr.
fn named(argv: &[String], err: SourceError) -> SourceError {
    match err {
        SourceError::ToolFailed { status, stderr, .. } => SourceError::ToolFailed {
            tool: shown(argv),
            status,
            stderr: last_lines(&stderr, STDERR_LINES),
        },
        SourceError::ToolMissing { .. } => SourceError::ToolMissing {
            tool: shown(argv),
            hint: "install it, or give its full path in the policy".into(),
        },
        e => e,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The backup command's output: fails when the command fails, and when it
/// wrote nothing at all (a tool that exits 0 without output protects
/// nothing).
struct CommandExport {
    argv: Vec<String>,
    inner: Box<ChildExport>,
    bytes: u64,
}

impl Read for CommandExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl ExportStream for CommandExport {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let CommandExport { argv, inner, bytes } = *self;
        let info = inner.finish().map_err(|e| named(&argv, e))?;
        if bytes == 0 {
            return Err(SourceError::Invalid(format!(
                "`{}` exited 0 but wrote nothing on its stdout: nothing was committed (a backup command writes the point on its stdout)",
                shown(&argv)
            )));
        }
        Ok(info)
    }
}

impl Source for CommandSource {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([
            ("backup".to_string(), shown(&self.config.backup)),
            ("restore".to_string(), shown(&self.config.restore)),
        ]);
        if let Some(v) = &self.config.verify {
            d.insert("verify".into(), shown(v));
        }
        d
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        let argv = &self.config.backup;
        let mut cmd = self.command(argv)?;
        // The tool starts after this instant: whatever it reads is at
        // least this recent.
        let info = ExportInfo {
            consistency_time: Utc::now(),
            tools: BTreeMap::from([("command".to_string(), shown(argv))]),
            ..ExportInfo::default()
        };
        let inner =
            ChildExport::start_limited(&mut cmd, shown(argv), info, Some(self.config.timeout()))
                .map_err(|e| named(argv, e))?;
        Ok(Box::new(CommandExport {
            argv: argv.clone(),
            inner: Box::new(inner),
            bytes: 0,
        }))
    }

    /// What the restore command writes to: drp knows only its name.
    fn default_destination(&self) -> Destination {
        Destination::Database(format!("whatever `{}` writes", shown(&self.config.restore)))
    }

    /// `--to`: passed to the restore command as `DRP_RESTORE_TO`; without
    /// a policy (no restore command), the file the point is written to.
    fn destination(&self, text: &str) -> Destination {
        if self.config.restore.is_empty() {
            Destination::Path(PathBuf::from(text))
        } else {
            Destination::Database(text.to_string())
        }
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        if let (Destination::Path(p), true) = (dest, self.config.restore.is_empty()) {
            return Ok(std::fs::metadata(p).ok().map(|m| {
                format!(
                    "file {} ({})",
                    p.display(),
                    crate::config::units::format_bytes(m.len())
                )
            }));
        }
        Ok(Some(format!(
            "whatever `{}` replaces (drp cannot see it)",
            shown(&self.config.restore)
        )))
    }

    fn kept_as(&self, dest: &Destination) -> String {
        if let (Destination::Path(p), true) = (dest, self.config.restore.is_empty()) {
            return format!(
                "the replaced file is kept as `{}`",
                super::replaced_pattern(p)
            );
        }
        format!(
            "nothing: drp cannot stage or keep what a command source's restore replaces. The point is received \
             whole and both digests checked before `{}` starts; then it reads the point on its stdin and applies \
             it as it goes. Take a backup of the destination first if you may need it",
            shown(&self.config.restore)
        )
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        let mut found = Vec::new();
        let mut argvs = vec![&self.config.backup, &self.config.restore];
        argvs.extend(self.config.verify.as_ref());
        for argv in argvs {
            let program = argv.first().map(String::as_str).unwrap_or_default();
            let path = if program.contains('/') {
                let p = crate::config::resolve_relative(&self.base_dir, Path::new(program));
                p.is_file().then_some(p)
            } else {
                process::find_tool(None, &[program], "").ok()
            };
            match path {
                Some(p) => found.push(p.display().to_string()),
                None => {
                    return Err(SourceError::ToolMissing {
                        tool: program.to_string(),
                        hint: format!(
                            "`{}` cannot run: install it, or give its full path in the policy",
                            shown(argv)
                        ),
                    });
                }
            }
        }
        Ok(found)
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        if let (Destination::Path(p), true) = (dest, self.config.restore.is_empty()) {
            return stage_as_file(raw, p);
        }
        // The whole point lands in a private file first: the restore
        // command starts only once both digests have been checked.
        let file = super::stage_to_file(raw, workdir)?;
        let this = CommandSource::new(self.config.clone(), &self.base_dir);
        let to = match dest {
            Destination::Database(name) if *dest != self.default_destination() => {
                Some(name.clone())
            }
            Destination::Path(p) => Some(p.display().to_string()),
            _ => None,
        };
        Ok(Box::new(StagedFile {
            file,
            load: move |path: &Path, options: &CommitOptions| {
                let argv = &this.config.restore;
                let mut cmd = this.command(argv)?;
                if let Some(to) = &to {
                    cmd.env(RESTORE_TO_VAR, to);
                }
                process::run_limited(
                    &mut cmd,
                    Input::File(path),
                    &options.cancel,
                    Some(this.config.timeout()),
                )
                .map_err(|e| named(argv, e))?;
                Ok(Committed::default())
            },
        }))
    }
}

/// Without a policy there is no restore command: the point is written to
/// the file `path`, for its tool to load by hand (what it replaces kept).
fn stage_as_file(raw: &mut dyn Read, path: &Path) -> Result<Box<dyn Staged>, SourceError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| SourceError::io(format!("cannot create {}", dir.display()), e))?;
    let file = super::stage_to_file(raw, dir)?;
    Ok(Box::new(PointFile {
        file,
        path: path.to_path_buf(),
    }))
}

/// A point staged beside the file it becomes.
struct PointFile {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Staged for PointFile {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        options.cancel.check()?;
        let PointFile { file, path } = *self;
        let kept = path.exists().then(|| super::replaced_path(&path));
        if let Some(k) = &kept {
            std::fs::rename(&path, k)
                .map_err(|e| SourceError::io(format!("cannot move {} aside", path.display()), e))?;
        }
        file.persist(&path)
            .map_err(|e| SourceError::io(format!("cannot write {}", path.display()), e.error))?;
        Ok(match kept {
            None => Committed::default(),
            Some(k) if options.drop_replaced => {
                let what = k.display().to_string();
                std::fs::remove_file(&k).map_err(|e| {
                    SourceError::io(format!("restored, but cannot remove {what}"), e)
                })?;
                Committed::dropped(what)
            }
            Some(k) => Committed::kept(k.display().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> CommandConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn an_env_value_is_plain_text_or_a_secret_reference_and_never_echoed() {
        let c = config(
            "backup: [dump]\nrestore: [load]\nenv: {A: plain, B: {env: X}, C: {file: /s}, D: 5}",
        );
        assert!(matches!(&c.env["A"], EnvValue::Plain(v) if v == "plain"));
        assert!(matches!(&c.env["B"], EnvValue::Secret(SecretRef::Env(v)) if v == "X"));
        assert!(matches!(&c.env["C"], EnvValue::Secret(SecretRef::File(_))));
        assert!(matches!(&c.env["D"], EnvValue::Plain(v) if v == "5"));
        let err = serde_yaml_ng::from_str::<CommandConfig>(
            "backup: [dump]\nrestore: [load]\nenv: {B: {value: hunter2}}",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("{env: VARIABLE}"), "{err}");
    }

    #[test]
    fn empty_commands_and_bad_variable_names_are_problems_at_their_keys() {
        let c = config(
            "backup: []\nrestore: [load]\nverify: ['']\nenv: {1A: x, 'A-B': y, OK_1: z}\ntimeout: 0s",
        );
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["backup", "verify", "env.1A", "env.A-B", "timeout"]);
        assert!(config("backup: [a]\nrestore: [b]").problems().is_empty());
    }

    #[test]
    fn a_failed_commands_error_shows_its_argv_and_the_last_lines_of_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let script = "for i in $(seq 1 30); do echo line $i >&2; done; printf partial; exit 3";
        let c = CommandConfig {
            backup: vec!["sh".into(), "-c".into(), script.into()],
            restore: vec!["cat".into()],
            verify: None,
            env: BTreeMap::new(),
            timeout: None,
        };
        let src = CommandSource::new(c, dir.path());
        let mut stream = src.export().unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"partial");
        let err = stream.finish().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("`sh -c {script}` failed (exit code 3)")),
            "{err}"
        );
        assert!(
            err.contains("line 21\n") && err.ends_with("line 30"),
            "{err}"
        );
        assert!(!err.contains("line 20\n"), "{err}");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        // A child of the command holds stdout open: only a kill of the
        // whole group ends the stream.
        let c = CommandConfig {
            backup: vec![
                "sh".into(),
                "-c".into(),
                "echo $$ > pid; sleep 300 & echo $! > child; printf x; wait".into(),
            ],
            restore: vec!["cat".into()],
            verify: None,
            env: BTreeMap::new(),
            timeout: Some(HumanDuration(Duration::from_secs(1))),
        };
        let src = CommandSource::new(c, dir.path());
        let started = std::time::Instant::now();
        let mut stream = src.export().unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        let err = stream.finish().unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(err.contains("stopped after 1s, its timeout"), "{err}");
        let child: i32 = std::fs::read_to_string(dir.path().join("child"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed: gone, or a zombie, once the signal has landed.
        let gone = || {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            state.is_empty() || state.contains(") Z ")
        };
        let waited = std::time::Instant::now();
        while !gone() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the command's child outlived it");
    }

    #[test]
    fn a_backup_command_that_writes_nothing_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = CommandConfig {
            backup: vec!["true".into()],
            restore: vec!["cat".into()],
            verify: None,
            env: BTreeMap::new(),
            timeout: None,
        };
        let mut stream = CommandSource::new(c, dir.path()).export().unwrap();
        std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
        let err = stream.finish().unwrap_err().to_string();
        assert!(err.contains("wrote nothing on its stdout"), "{err}");
    }
}
