//! TCP check: a connection to an address is accepted.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Poll};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// `host:port`.
    pub address: String,
    #[serde(flatten)]
    pub poll: Poll,
}

impl TcpCheck {
    async fn once(&self) -> Result<String, ActionError> {
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        {
            Ok(Ok(_)) => Ok(format!("{} accepts connections", self.address)),
            Ok(Err(source)) => Err(ActionError::Connect {
                address: self.address.clone(),
                source,
            }),
            Err(_) => Err(ActionError::failed(format!(
                "{}: connection timed out",
                self.address
            ))),
        }
    }
}

impl Action for TcpCheck {
    fn describe(&self) -> String {
        format!("connect to {}", self.address)
    }

    fn run<'a>(&'a self, _: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(super::poll(self.poll, move || self.once()))
    }
}
