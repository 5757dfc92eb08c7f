//! What a host lets a coordinator run: the agent's side of the trust rules,
//! applied to every `validate` and `run` before anything happens.
//!
//! A step is read again from its JSON by the agent (unknown settings are
//! refused), checked against the host's own policy like a local runbook
//! step (declared exports, targets, snapshots), and then against its
//! `serve:` section: commands only by the names it declares, restarts only
//! of the units it lists, and nothing that changes data or services unless
//! it says `allow_destructive: true`. The exceptions are standing down
//! when fenced and promoting a standby: a host that declares `fencing:`,
//! or the standby under `standby:`, consents to that.

use drp_core::config::Policy;

use crate::action::{ActionConfig, restart::Restart};

/// A step the host accepts: how it describes it, and whether it counts as
/// a change.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub action: ActionConfig,
    pub describe: String,
    pub destructive: bool,
}

/// Reads `action` (the step's action as the coordinator sent it) and
/// decides; the error is the refusal, in words naming the host.
pub fn admit(policy: &Policy, action: &serde_json::Value) -> Result<Admitted, String> {
    let host = &policy.host;
    let mut action: ActionConfig = serde_path_to_error::deserialize(action)
        .map_err(|e| format!("host `{host}` cannot read the step's action: {e}"))?;
    let destructive = destructive(policy, &action)?;
    read_only_checks(&mut action, destructive);
    if let Err(invalid) = action.validate(policy) {
        return Err(format!("host `{host}` refuses the step: {invalid}"));
    }
    let consented = matches!(
        action,
        ActionConfig::StandDown(_) | ActionConfig::Promote(_)
    );
    if destructive && !consented && !policy.serve.allow_destructive {
        return Err(format!(
            "host `{host}` refuses `{}`: it changes data or services, and the host's policy does not set `serve: {{allow_destructive: true}}`",
            action.action().describe()
        ));
    }
    Ok(Admitted {
        describe: action.action().describe(),
        destructive,
        action,
    })
}

/// Whether the host counts `action` as a change; an error for what it never
/// runs for another host at all.
fn destructive(policy: &Policy, action: &ActionConfig) -> Result<bool, String> {
    let host = &policy.host;
    match action {
        ActionConfig::Command(c) => match (&c.run, &c.named) {
            (_, Some(name)) => policy
                .serve
                .commands
                .get(name)
                .map(|d| d.destructive)
                .ok_or_else(|| {
                    format!(
                        "host `{host}` refuses the step: {}",
                        crate::action::Invalid::unknown_command(name, policy)
                    )
                }),
            _ => Err(format!(
                "host `{host}` runs no command given by a coordinator: name one its policy declares (`kind: command, named: …`, from `serve.commands`)"
            )),
        },
        ActionConfig::Restart(r) => restart(policy, r),
        ActionConfig::Fence(_) | ActionConfig::Unfence(_) => Err(format!(
            "host `{host}` runs no `{}` step: a coordinator fences and lifts fences, with its own inventory",
            if matches!(action, ActionConfig::Fence(_)) {
                "fence"
            } else {
                "unfence"
            }
        )),
        other => Ok(other.action().destructive()),
    }
}

/// SQL that is not declared a change runs in a session that cannot write,
/// here and in a restart's check: a coordinator's "check" cannot alter data.
fn read_only_checks(action: &mut ActionConfig, destructive: bool) {
    match action {
        ActionConfig::Sql(q) if !destructive => q.read_only = true,
        ActionConfig::Restart(r) => {
            if let Some(check) = r.until.as_deref_mut() {
                read_only_checks(check, false);
            }
        }
        _ => {}
    }
}

/// A restart of a unit the host lists, whose check it would run too.
fn restart(policy: &Policy, r: &Restart) -> Result<bool, String> {
    let host = &policy.host;
    let Some(unit) = &r.unit else {
        return Err(format!(
            "host `{host}` restarts only the units its policy lists (`serve.units`), not a command"
        ));
    };
    if !policy.serve.units.iter().any(|u| u == unit.as_str()) {
        return Err(format!(
            "host `{host}` refuses to restart `{}`: its policy lists {} under `serve.units`",
            unit.as_str(),
            if policy.serve.units.is_empty() {
                "no unit".to_string()
            } else {
                policy.serve.units.join(", ")
            }
        ));
    }
    if let Some(check) = &r.until
        && destructive(policy, check)?
    {
        return Err(format!(
            "host `{host}` refuses the restart's check: `{}` is not a check",
            check.action().describe()
        ));
    }
    Ok(true)
}
