//! HTTP check: a status code and, optionally, text in the body.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Poll};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
    pub body_contains: Option<String>,
    #[serde(flatten)]
    pub poll: Poll,
}

fn default_status() -> u16 {
    200
}

impl HttpCheck {
    async fn once(&self) -> Result<String, ActionError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(ActionError::Http)?;
        let r = client
            .get(&self.url)
            .send()
            .await
            .map_err(|source| ActionError::Request {
                url: self.url.clone(),
                source,
            })?;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        if status != self.status {
            return Err(ActionError::failed(format!(
                "GET {} answered {status}, expected {}",
                self.url, self.status
            )));
        }
        if let Some(want) = &self.body_contains
            && !body.contains(want.as_str())
        {
            return Err(ActionError::failed(format!(
                "GET {}: the body does not contain `{want}`",
                self.url
            )));
        }
        Ok(format!("GET {} answered {status}", self.url))
    }
}

impl Action for HttpCheck {
    fn describe(&self) -> String {
        format!("GET {} expecting {}", self.url, self.status)
    }

    fn run<'a>(&'a self, _: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(super::poll(self.poll, move || self.once()))
    }
}
