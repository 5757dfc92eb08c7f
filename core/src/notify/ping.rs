//! A dead man's switch per export, healthchecks.io-style: the run pings
//! `<url>/start` as it begins, then `<url>` when every target committed or
//! `<url>/fail` when not, with a line saying what happened as the body. The
//! monitoring service raises the alarm when a ping is late or a failure
//! arrives, so a host that stopped running its backups (its timer gone,
//! the machine dead) is noticed too.
//!
//! The URL carries the check's token: it is a secret reference, and no
//! error or log line shows it. A ping never changes the run's outcome: it
//! is bounded by its timeout and a failure is reported beside the run's.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::NotifyError;
use super::webhook::WebhookUrl;
use crate::config::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingConfig {
    /// The check's URL (`{file: /etc/drp/secrets/hc-shop}`); `/start` and
    /// `/fail` are appended for those pings.
    pub url: WebhookUrl,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

impl PingConfig {
    /// Sends one ping with `body` (a line about the run, no secret).
    pub async fn send(&self, base: &Path, ping: Ping, body: String) -> Result<(), NotifyError> {
        let url = self.url.resolve(base)?;
        let mut url = reqwest::Url::parse(url.expose()).map_err(NotifyError::WebhookUrl)?;
        let suffix = match ping {
            Ping::Start => "start",
            Ping::Fail => "fail",
            Ping::Success => "",
        };
        if !suffix.is_empty() {
            let path = format!("{}/{suffix}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout.as_duration())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Client {
                kind: super::webhook::without_url(&e),
            })?;
        let response = client
            .post(url)
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Post {
                kind: super::webhook::without_url(&e),
            })?;
        if !response.status().is_success() {
            return Err(NotifyError::Status(response.status()));
        }
        Ok(())
    }
}
