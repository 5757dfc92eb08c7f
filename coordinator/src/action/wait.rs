//! Wait a fixed time (e.g. for caches to warm up).

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context};
use drp_core::config::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    pub duration: HumanDuration,
}

impl Action for Wait {
    fn describe(&self) -> String {
        format!("wait {}", self.duration)
    }

    fn run<'a>(&'a self, _: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            tokio::time::sleep(self.duration.as_duration()).await;
            Ok(format!("waited {}", self.duration))
        })
    }
}
