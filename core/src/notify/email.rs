//! Email over SMTP: STARTTLS by default, implicit TLS, or plain for a local
//! relay. Credentials never cross a connection without TLS unless the policy
//! says so in as many words (`security: none` and `allow_plaintext_auth: true`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use serde::Deserialize;

use super::{Message, Notifier, NotifyError};
use crate::config::{HumanDuration, SecretRef};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `starttls` (the default: the server must offer it, or nothing is
    /// sent), `tls` (implicit TLS, usually port 465) or `none` (plain, for a
    /// relay on this host or its network).
    #[serde(default)]
    pub security: Security,
    pub from: String,
    pub to: Vec<String>,
    /// With `password`: log in to the server.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Send `username` and `password` over a plain connection (`security:
    /// none`). Off by default: anyone on the path reads them.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// No TLS at all.
    None,
    /// Plain connection upgraded with STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
}

/// A problem with an email setting: the key under `notify.email`, what is
/// wrong, what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl EmailConfig {
    /// Combinations that cannot be right, found before anything is sent.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        match (&self.username, &self.password) {
            (Some(_), None) => out.push(Problem {
                key: "username",
                message: "`username` without `password`: nothing would log in".into(),
                hint: Some("add `password: {env: SMTP_PASSWORD}`, or drop `username`".into()),
            }),
            (None, Some(_)) => out.push(Problem {
                key: "password",
                message: "`password` without `username`: nothing would log in".into(),
                hint: Some("add `username`, or drop `password`".into()),
            }),
            _ => {}
        }
        let credentials = self.username.is_some() || self.password.is_some();
        if self.security == Security::None && credentials && !self.allow_plaintext_auth {
            out.push(Problem {
                key: "security",
                message: "`security: none` would send the SMTP password in clear".into(),
                hint: Some(
                    "use `security: starttls` or `tls`; for a trusted relay only, add `allow_plaintext_auth: true`"
                        .into(),
                ),
            });
        }
        if self.allow_plaintext_auth && self.security != Security::None {
            out.push(Problem {
                key: "allow_plaintext_auth",
                message: "`allow_plaintext_auth` only applies to `security: none`".into(),
                hint: Some("drop it: with STARTTLS or TLS the password is encrypted".into()),
            });
        }
        out
    }
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

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
        let c = &self.config;
        let mut b = match c.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.server),
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.server)
                .map_err(NotifyError::SmtpSetup)?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.server)
                .map_err(NotifyError::SmtpSetup)?,
        }
        .port(c.port)
        .timeout(Some(c.timeout.as_duration()));
        if let (Some(user), Some(secret)) = (&c.username, &c.password) {
            // Validation refuses this already; a config built in code is held to it too.
            if c.security == Security::None && !c.allow_plaintext_auth {
                return Err(NotifyError::PlaintextAuth);
            }
            let pw = secret
                .resolve(&self.base_dir)
                .map_err(|message| NotifyError::Secret {
                    what: "SMTP password",
                    message,
                })?;
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
    ) -> futures::future::BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let parse = |a: &str| {
                a.parse::<Mailbox>().map_err(|source| NotifyError::Address {
                    address: a.to_string(),
                    source,
                })
            };
            let mut mail = Mail::builder()
                .from(parse(&self.config.from)?)
                .subject(message.subject());
            for to in &self.config.to {
                mail = mail.to(parse(to)?);
            }
            let mail = mail.body(message.text())?;
            let transport = self.transport()?;
            // Bound the whole exchange too: a server that accepts and then stalls.
            match tokio::time::timeout(self.config.timeout.as_duration() * 2, transport.send(mail))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(NotifyError::Smtp {
                    server: self.config.server.clone(),
                    port: self.config.port,
                    source,
                }),
                Err(_) => Err(NotifyError::SmtpTimedOut {
                    server: self.config.server.clone(),
                    port: self.config.port,
                }),
            }
        })
    }
}
