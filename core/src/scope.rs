//! Which repositories a command looks at: the targets of a policy (all of
//! them, those of one export, or one named), or one target given by its
//! address from a bare machine.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Policy, TargetConfig};
use crate::keys::Keys;
use crate::repository::Repository;
use crate::{Error, Result};

/// What a person asked for, before anything is opened.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// A policy file: its targets.
    pub policy: Option<PathBuf>,
    /// Instead of a policy, a target address (see [`TargetConfig::from_address`]).
    pub target: Option<String>,
    /// Only this target of the policy.
    pub from: Option<String>,
    /// Whose recovery points (default: the policy's host).
    pub host: Option<String>,
    /// Identity files to decrypt with (`--identity`).
    pub identities: Vec<PathBuf>,
    /// Keys to trust beside the policy's (`--trust HOST=ed25519:…`).
    pub trust: Vec<String>,
}

/// The repositories a command looks at, opened.
pub struct Scope {
    pub policy: Option<Policy>,
    pub host: Option<String>,
    pub repos: Vec<Repository>,
    /// Targets that could not be opened.
    pub unreachable: Vec<Error>,
}

impl Scope {
    /// Opens the repositories `selection` names; those that cannot be opened
    /// are listed in `unreachable` (an error only when none could be).
    pub async fn open(args: &Selection, export: Option<&str>) -> Result<Scope> {
        if let Some(path) = &args.policy {
            let policy = Policy::load(path)?;
            let mut names: Vec<String> = match (&args.from, export) {
                (Some(t), _) => vec![t.clone()],
                (None, Some(e)) => policy.export(e)?.targets.clone(),
                (None, None) => policy
                    .exports
                    .values()
                    .flat_map(|e| e.targets.clone())
                    .collect(),
            };
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            let keys = Arc::new(
                policy
                    .read_keys()?
                    .with_cli(&args.identities, &args.trust)?,
            );
            let mut repos = Vec::new();
            let mut unreachable = Vec::new();
            for name in names {
                if !policy.targets.contains_key(&name) {
                    return Err(Error::NotFound(format!(
                        "no target `{name}` in {}",
                        policy.path.display()
                    )));
                }
                match Repository::for_policy(&policy, &name, &keys).await {
                    Ok(repo) => repos.push(repo),
                    Err(e) => unreachable.push(e),
                }
            }
            if repos.is_empty()
                && let Some(e) = unreachable.pop()
            {
                return Err(e);
            }
            Ok(Scope {
                host: Some(args.host.clone().unwrap_or_else(|| policy.host.clone())),
                policy: Some(policy),
                repos,
                unreachable,
            })
        } else {
            let address = args
                .target
                .as_deref()
                .ok_or_else(|| Error::Usage("give --policy or --target".into()))?;
            let config = TargetConfig::from_address(address)?;
            let keys = Keys::default().with_cli(&args.identities, &args.trust)?;
            let repo = Repository::open("target", &config, std::path::Path::new("."))
                .await?
                .with_keys(Arc::new(keys));
            Ok(Scope {
                policy: None,
                host: args.host.clone(),
                repos: vec![repo],
                unreachable: Vec::new(),
            })
        }
    }

    pub fn host_for_restore(&self) -> Result<String> {
        self.host.clone().ok_or_else(|| {
            Error::Usage("without --policy, say whose recovery points with --host".into())
        })
    }

    /// `(host, export)` pairs to look at in `repo`.
    pub async fn pairs(
        &self,
        repo: &Repository,
        export: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        match (&self.policy, &self.host) {
            (Some(policy), Some(host)) => Ok(policy
                .exports
                .values()
                .filter(|e| export.is_none_or(|x| x == e.name))
                .filter(|e| e.targets.iter().any(|t| t == repo.name()))
                .map(|e| (host.clone(), e.name.clone()))
                .collect()),
            _ => Ok(repo
                .exports()
                .await?
                .into_iter()
                .filter(|(h, e)| {
                    self.host.as_ref().is_none_or(|x| x == h) && export.is_none_or(|x| x == e)
                })
                .collect()),
        }
    }
}
