//! A webhook: the message as JSON, or in Slack's incoming-webhook shape.
//!
//! A webhook URL is a credential (Slack's and most others carry their token
//! in the path): it is read from a secret reference, and no error, log line,
//! report or `Debug` output ever shows it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Message, Notifier, NotifyError};
use crate::config::{HumanDuration, Secret, SecretRef};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `{env: SLACK_URL}` or `{file: /etc/drp/slack-url}`; a URL written in
    /// the policy is still accepted, with a warning.
    pub url: WebhookUrl,
    /// `json` (the message as is) or `slack` (`{"text": …}`).
    #[serde(default)]
    pub format: WebhookFormat,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// Where the webhook's URL comes from. Its `Debug` never shows a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    /// Read when a notification is sent.
    Secret(SecretRef),
    /// Written in the policy: works, but the token then lives in the file.
    Inline(String),
}

impl WebhookUrl {
    /// The URL, read from its reference if need be. Errors name where it was
    /// looked for, never the URL.
    pub fn resolve(&self, base: &Path) -> Result<Secret, NotifyError> {
        match self {
            WebhookUrl::Secret(r) => r.resolve(base).map_err(|message| NotifyError::Secret {
                what: "webhook URL",
                message,
            }),
            WebhookUrl::Inline(u) => Ok(Secret::new(u.clone())),
        }
    }

    /// Checks a URL written in the policy; the message never repeats it.
    pub fn check_inline(&self) -> Result<(), String> {
        match self {
            WebhookUrl::Inline(u) => match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
                Ok(_) => Err("the webhook URL must be http:// or https://".into()),
                Err(e) => Err(format!("the webhook URL does not parse: {e}")),
            },
            WebhookUrl::Secret(_) => Ok(()),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookUrl::Secret(r) => write!(f, "{r:?}"),
            WebhookUrl::Inline(_) => f.write_str("inline(***)"),
        }
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_yaml_ng::Value::deserialize(d)?;
        match value {
            serde_yaml_ng::Value::String(s) => Ok(WebhookUrl::Inline(s)),
            v if v.is_mapping() => serde_yaml_ng::from_value::<SecretRef>(v)
                .map(WebhookUrl::Secret)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "a webhook URL carries its token: reference it as `{env: VARIABLE}` or `{file: /path/to/file}`",
            )),
        }
    }
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
    base_dir: PathBuf,
}

impl Webhook {
    pub fn new(config: WebhookConfig, base_dir: &Path) -> Self {
        Webhook {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> futures::future::BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let url = self.config.url.resolve(&self.base_dir)?;
            // The URL does not parse: say so without repeating it.
            let url = reqwest::Url::parse(url.expose()).map_err(NotifyError::WebhookUrl)?;
            let client = reqwest::Client::builder()
                .timeout(self.config.timeout.as_duration())
                // A redirect would send the message (and maybe the token) elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| NotifyError::Client {
                    kind: without_url(&e),
                })?;
            let body = match self.config.format {
                WebhookFormat::Json => serde_json::to_value(message)?,
                WebhookFormat::Slack => serde_json::json!({ "text": message.text() }),
            };
            let response =
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| NotifyError::Post {
                        kind: without_url(&e),
                    })?;
            if !response.status().is_success() {
                return Err(NotifyError::Status(response.status()));
            }
            Ok(())
        })
    }
}

/// What went wrong, in words of our own: reqwest errors include the URL,
/// which may carry a token (Slack's do).
pub(crate) fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "T0KEN-b7e1c9";

    #[test]
    fn neither_form_of_url_shows_in_debug() {
        for yaml in [
            format!("url: https://hooks.example.com/services/{TOKEN}"),
            "url: {env: DRP_TEST_HOOK}".to_string(),
        ] {
            let c: WebhookConfig = serde_yaml_ng::from_str(&yaml).unwrap();
            let debug = format!("{c:?}");
            assert!(!debug.contains(TOKEN), "{debug}");
        }
        let c: WebhookConfig = serde_yaml_ng::from_str("url: {env: DRP_TEST_HOOK}").unwrap();
        assert_eq!(
            c.url,
            WebhookUrl::Secret(SecretRef::Env("DRP_TEST_HOOK".into()))
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let u = WebhookUrl::Inline(format!("hooks.example.com/{TOKEN}"));
        let e = u.check_inline().unwrap_err();
        assert!(!e.contains(TOKEN), "{e}");
        let e = serde_yaml_ng::from_str::<WebhookConfig>(&format!("url: [{TOKEN}]")).unwrap_err();
        assert!(!e.to_string().contains(TOKEN), "{e}");
    }
}
