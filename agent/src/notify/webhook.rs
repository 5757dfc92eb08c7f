//! A webhook: the message as JSON, or in Slack's incoming-webhook shape.

use std::time::Duration;

use serde::Deserialize;

use super::{Message, Notifier};
use crate::config::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// `json` (the message as is) or `slack` (`{"text": …}`).
    #[serde(default)]
    pub format: WebhookFormat,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

pub struct Webhook {
    config: WebhookConfig,
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Self {
        Webhook { config }
    }
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let client = reqwest::Client::builder()
                .timeout(self.config.timeout.as_duration())
                .build()
                .map_err(|e| e.to_string())?;
            let body = match self.config.format {
                WebhookFormat::Json => serde_json::to_value(message).map_err(|e| e.to_string())?,
                WebhookFormat::Slack => serde_json::json!({ "text": message.text() }),
            };
            let response = client
                .post(&self.config.url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("POST to the webhook failed: {}", without_url(&e)))?;
            if !response.status().is_success() {
                return Err(format!("the webhook answered {}", response.status()));
            }
            Ok(())
        })
    }
}

/// reqwest errors include the URL, which may carry a token (Slack's do).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request error"
    };
    kind.to_string()
}
