//! Email over SMTP, with STARTTLS or implicit TLS when asked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use serde::Deserialize;

use super::{Message, Notifier};
use crate::config::{HumanDuration, SecretRef};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `none` (plain, for a local relay), `starttls` or `tls`.
    #[serde(default)]
    pub security: Security,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    None,
    Starttls,
    Tls,
}

fn default_port() -> u16 {
    25
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

pub struct Email {
    config: EmailConfig,
    base_dir: PathBuf,
}

impl Email {
    pub fn new(config: EmailConfig, base_dir: &Path) -> Self {
        Email {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let c = &self.config;
        let mut b = match c.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.server),
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.server)
                .map_err(|e| e.to_string())?,
            Security::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&c.server).map_err(|e| e.to_string())?
            }
        }
        .port(c.port)
        .timeout(Some(c.timeout.as_duration()));
        if let (Some(user), Some(secret)) = (&c.username, &c.password) {
            let pw = secret
                .resolve(&self.base_dir)
                .map_err(|e| format!("SMTP password: {e}"))?;
            b = b.credentials(Credentials::new(user.clone(), pw.expose().to_string()));
        }
        Ok(b.build())
    }
}

impl Notifier for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let parse = |a: &str| {
                a.parse::<Mailbox>()
                    .map_err(|e| format!("invalid address `{a}`: {e}"))
            };
            let mut mail = Mail::builder()
                .from(parse(&self.config.from)?)
                .subject(message.subject());
            for to in &self.config.to {
                mail = mail.to(parse(to)?);
            }
            let mail = mail.body(message.text()).map_err(|e| e.to_string())?;
            let transport = self.transport()?;
            // Bound the whole exchange too: a server that accepts and then stalls.
            match tokio::time::timeout(self.config.timeout.as_duration() * 2, transport.send(mail))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "SMTP to {}:{} failed: {e}",
                    self.config.server, self.config.port
                )),
                Err(_) => Err(format!(
                    "SMTP to {}:{} timed out",
                    self.config.server, self.config.port
                )),
            }
        })
    }
}
