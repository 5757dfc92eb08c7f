//! A command: as a check (exit code, output) or as a change. Commands run
//! without a shell; see [`Argv`].

use std::fmt;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid, Poll};
use drp_core::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAction {
    /// The command line, run without a shell: a list (`[test, -s, /srv/index.html]`)
    /// or a string split into words (see [`Argv`]).
    pub run: Option<Argv>,
    /// Or a command the host's policy declares under `serve.commands`, by
    /// name: the only kind of command another host's coordinator may run.
    pub named: Option<String>,
    #[serde(default)]
    pub expect_exit: i32,
    pub output_contains: Option<String>,
    /// Whether the command changes something (asked for before it runs).
    #[serde(default)]
    pub destructive: bool,
    #[serde(flatten)]
    pub poll: Poll,
}

/// A command line, run without a shell.
///
/// Written as a YAML list, it is the argument vector as is:
/// `[pg_isready, -h, "${DB_HOST}"]`, each item one argument whatever it holds.
/// Written as a string, it is split into words and nothing else: spaces
/// separate words, single and double quotes group them, a backslash outside
/// single quotes takes the next character as is. Nothing is expanded (no
/// `$VAR`, `$(…)`, `~` or globs) and there are no pipes, redirections, `&&`
/// or `;`: such characters unquoted are refused rather than passed on as
/// arguments. A `${VAR}` of the runbook in a string is split like the rest,
/// so a value that is one argument belongs in the list form. When a shell is
/// really needed, write it out and pass values as its arguments:
/// `[sh, -c, 'echo BROKEN > "$1"', sh, "${PAGE}"]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    /// Splits `line` into words (see above).
    pub fn parse(line: &str) -> Result<Argv, String> {
        let words = split_words(line)?;
        if words.is_empty() {
            return Err("an empty command".into());
        }
        Ok(Argv(words))
    }

    pub fn new(words: Vec<String>) -> Result<Argv, String> {
        if words.first().is_none_or(|w| w.is_empty()) {
            return Err("an empty command: the first item is the program to run".into());
        }
        Ok(Argv(words))
    }

    pub fn program(&self) -> &str {
        &self.0[0]
    }

    pub fn args(&self) -> &[String] {
        &self.0[1..]
    }

    pub fn words(&self) -> &[String] {
        &self.0
    }
}

/// Characters a shell would act on; unquoted, they are refused.
const OPERATORS: &[char] = &['|', '&', ';', '<', '>', '(', ')', '`', '$', '*', '?'];

fn split_words(line: &str) -> Result<Vec<String>, String> {
    const HOW: &str = "commands run without a shell: quote it to pass it as is, or write the command as a list (`[sh, -c, \"…\"]` if a shell is really needed)";
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unterminated single quote in `{line}`")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{line}`")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("unterminated double quote in `{line}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("`{line}` ends with a lone backslash")),
            },
            c if OPERATORS.contains(&c) => {
                return Err(format!("`{c}` in `{line}`: {HOW}"));
            }
            c @ ('#' | '~') if word.is_none() => {
                return Err(format!("`{c}` at the start of a word in `{line}`: {HOW}"));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

impl fmt::Display for Argv {
    /// Words as they could be written back: quoted where needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let plain = !w.is_empty()
                && !w.starts_with(['#', '~'])
                && w.chars().all(|c| {
                    !c.is_whitespace() && !OPERATORS.contains(&c) && !matches!(c, '\'' | '"' | '\\')
                });
            if plain {
                f.write_str(w)?;
            } else {
                write!(f, "'{}'", w.replace('\'', r#"'"'"'"#))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Argv({self})")
    }
}

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_yaml_ng::Value;
        match Value::deserialize(d)? {
            Value::String(s) => Argv::parse(&s).map_err(D::Error::custom),
            Value::Sequence(items) => {
                let words = items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        Value::Number(n) => Ok(n.to_string()),
                        Value::Bool(b) => Ok(b.to_string()),
                        _ => Err(D::Error::custom(
                            "each item of a command is one argument: a string",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Argv::new(words).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(
                "a command is a list of arguments (`[systemctl, is-active, shop]`) or a string of words",
            )),
        }
    }
}

/// Runs `argv` (no shell). If the step times out or the run is cancelled
/// before it exits, its whole process group is killed: what a `sh -c` of a
/// declared command started goes with it.
pub async fn exec(argv: &Argv, ctx: &Context) -> Result<(i32, String), ActionError> {
    let spawned = tokio::process::Command::new(argv.program())
        .args(argv.args())
        .env("DRP_T_FAIL", ctx.t_fail.to_rfc3339())
        .env("DRP_RUNBOOK", &ctx.runbook)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = spawned.map_err(|source| ActionError::Spawn {
        argv: argv.clone(),
        source,
    })?;
    let mut group = Group(child.id());
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| ActionError::Spawn {
            argv: argv.clone(),
            source,
        })?;
    // It exited by itself: what it left running on purpose is not ours to stop.
    group.0 = None;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// The process group a running command leads, killed when dropped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: signals the group this command leads; a group's id is
            // not reused while any of its members lives.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

impl CommandAction {
    /// The argument vector: as written, or the host's declaration of `named`.
    fn argv(&self, policy: &Policy) -> Result<Argv, Invalid> {
        match (&self.run, &self.named) {
            (Some(run), None) => Ok(run.clone()),
            (None, Some(name)) => {
                let declared = policy
                    .serve
                    .commands
                    .get(name)
                    .ok_or_else(|| Invalid::unknown_command(name, policy))?;
                Argv::new(declared.run.clone()).map_err(|_| Invalid::unknown_command(name, policy))
            }
            _ => Err(Invalid::RunOrNamed),
        }
    }

    async fn once(&self, ctx: &Context) -> Result<String, ActionError> {
        let argv = self
            .argv(&ctx.policy)
            .map_err(|e| ActionError::failed(e.to_string()))?;
        let (code, output) = exec(&argv, ctx).await?;
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
            return Err(ActionError::failed(format!(
                "`{argv}` exited {code}, expected {}: {tail}",
                self.expect_exit
            )));
        }
        if let Some(want) = &self.output_contains
            && !output.contains(want.as_str())
        {
            return Err(ActionError::failed(format!(
                "`{argv}`: output does not contain `{want}`: {tail}"
            )));
        }
        Ok(format!("`{argv}` exited {code}"))
    }
}

impl Action for CommandAction {
    fn describe(&self) -> String {
        match (&self.run, &self.named) {
            (Some(run), _) => format!("run `{run}`"),
            (None, Some(name)) => format!("run the host's command `{name}`"),
            _ => "run".into(),
        }
    }

    /// A named command is taken as a change unless its host says otherwise
    /// (the agent serving it reads its own declaration).
    fn destructive(&self) -> bool {
        self.destructive || self.named.is_some()
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        self.argv(policy).map(|_| ())
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(super::poll(self.poll, move || self.once(ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        Argv::parse(line).unwrap().words().to_vec()
    }

    #[test]
    fn a_string_is_split_into_words_without_a_shell() {
        assert_eq!(words("touch restarted"), ["touch", "restarted"]);
        assert_eq!(
            words(r#"grep -q 'a b' "c \"d\"" e\ f"#),
            ["grep", "-q", "a b", r#"c "d""#, "e f"]
        );
        assert_eq!(words("test -d '$HOME/x'"), ["test", "-d", "$HOME/x"]);
        assert_eq!(words("[ -d /srv ]"), ["[", "-d", "/srv", "]"]);
    }

    #[test]
    fn shell_syntax_is_refused_not_passed_on() {
        for line in [
            "echo BROKEN > /srv/index.html",
            "grep -q x f | wc -l",
            "true && rm -rf /",
            "true; reboot",
            "echo $(id)",
            "echo `id`",
            "echo $HOME",
            "rm /tmp/x*",
            "ls ~/x",
            "echo 'unterminated",
            "",
        ] {
            assert!(Argv::parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn a_list_is_the_argv_as_is() {
        let a: Argv =
            serde_yaml_ng::from_str("[sh, -c, 'echo \"$1\" > x', sh, 'a; b', 5]").unwrap();
        assert_eq!(
            a.words(),
            ["sh", "-c", "echo \"$1\" > x", "sh", "a; b", "5"]
        );
        assert_eq!(a.to_string(), r#"sh -c 'echo "$1" > x' sh 'a; b' 5"#);
        assert!(serde_yaml_ng::from_str::<Argv>("[]").is_err());
        assert!(serde_yaml_ng::from_str::<Argv>("[[a]]").is_err());
    }
}
