//! The fleet: one coordinator driving steps on many hosts, over SSH, the
//! way Ansible reaches them, with no new daemon or port.
//!
//! `protocol` is what travels; `remote` is the coordinator's end of a
//! session (the `ssh` process, requests and replies); `allow` is the
//! host's end of the trust rules, applied by `drp-agent serve` to every
//! request; `inventory` says where the hosts are; `status` is the fleet's
//! table. A runbook step with `host:` runs through [`Fleet::run`].

pub mod allow;
pub mod inventory;
pub mod protocol;
pub mod remote;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;

use inventory::Inventory;
use protocol::{Op, Reply, StepRequest};
use remote::{Remote, RemoteError};

use crate::action::{ActionError, Context};
use crate::runbook::Step;

/// The hosts of an inventory, each connected when first needed and again
/// after a connection is lost.
pub struct Fleet {
    pub inventory: Inventory,
    /// Each host's session, behind a lock of its own: hosts connect at once.
    links: std::sync::Mutex<HashMap<String, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Remote>>>>;

impl Fleet {
    pub fn new(inventory: Inventory) -> Fleet {
        Fleet {
            inventory,
            links: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The open session with `host`, opened if there is none (or the last one ended).
    pub async fn link(&self, host: &str) -> Result<Arc<Remote>, RemoteError> {
        let entry = self.inventory.host(host).ok_or_else(|| {
            RemoteError::Lost(format!(
                "host `{host}` is not in the inventory {}",
                self.inventory.path.display()
            ))
        })?;
        let slot = self
            .links
            .lock()
            .expect("links")
            .entry(host.to_string())
            .or_default()
            .clone();
        let mut link = slot.lock().await;
        if let Some(r) = link.as_ref().filter(|r| !r.closed()) {
            return Ok(r.clone());
        }
        let r = Arc::new(Remote::connect(entry).await?);
        *link = Some(r.clone());
        Ok(r)
    }

    /// Connects to every host in `hosts` at once; each one's session or why not.
    pub async fn link_all(
        &self,
        hosts: &[String],
    ) -> Vec<(String, Result<Arc<Remote>, RemoteError>)> {
        let opened = futures::future::join_all(hosts.iter().map(|h| self.link(h))).await;
        hosts.iter().cloned().zip(opened).collect()
    }

    /// Asks `host` whether it would run `step`: the host's description of
    /// it, or its refusal.
    pub async fn validate(&self, host: &str, step: &Step) -> Result<String, RemoteError> {
        let remote = self.link(host).await?;
        match remote
            .call(Op::Validate {
                step: request(step),
            })
            .await?
        {
            Reply::Allowed { describe, .. } => Ok(describe),
            other => Err(RemoteError::Lost(format!(
                "host `{host}` answered validate with {other:?}"
            ))),
        }
    }

    /// Runs a step on `host`; what it restored is added to `ctx`.
    pub async fn run(
        &self,
        host: &str,
        step: StepRequest,
        ctx: &Context,
    ) -> Result<String, ActionError> {
        let remote = self
            .link(host)
            .await
            .map_err(|e| ActionError::failed(e.to_string()))?;
        match remote.run(step, ctx.t_fail, &ctx.runbook).await {
            Ok(ran) => {
                ctx.restored
                    .lock()
                    .expect("restored lock")
                    .extend(ran.restored);
                // The host's own time beside the step's: the rest is the link.
                Ok(format!("{} ({:.1}s on the host)", ran.message, ran.seconds))
            }
            Err(e) => Err(ActionError::failed(e.to_string())),
        }
    }
}

/// A runbook step as a host receives it.
pub fn request(step: &Step) -> StepRequest {
    StepRequest {
        name: step.name.clone(),
        action: step.action_value.clone(),
    }
}
