//! Why a notification was not delivered. No message ever includes a secret:
//! not a webhook URL (it carries a token), not a password.

/// A channel's failure to deliver a message.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A secret the channel needs could not be read; the message says where
    /// it was looked for.
    #[error("{what}: {message}")]
    Secret { what: &'static str, message: String },

    /// Credentials would cross the network in clear.
    #[error("refusing to send the SMTP password without TLS: set `security: starttls` or `tls`")]
    PlaintextAuth,

    /// An email address in the settings does not parse.
    #[error("invalid address `{address}`: {source}")]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },

    /// The email could not be put together.
    #[error(transparent)]
    Mail(#[from] lettre::error::Error),

    /// The SMTP transport could not be set up (a TLS setting, a server name).
    #[error(transparent)]
    SmtpSetup(lettre::transport::smtp::Error),

    /// The SMTP server refused the message, or could not be reached.
    #[error("SMTP to {server}:{port} failed: {source}")]
    Smtp {
        server: String,
        port: u16,
        #[source]
        source: lettre::transport::smtp::Error,
    },

    /// The SMTP exchange took longer than twice the timeout.
    #[error("SMTP to {server}:{port} timed out")]
    SmtpTimedOut { server: String, port: u16 },

    /// The webhook URL, once read, does not parse (it is not repeated).
    #[error("the webhook URL does not parse: {0}")]
    WebhookUrl(#[source] url::ParseError),

    /// The HTTP client could not be built; `kind` never includes the URL.
    #[error("{kind}")]
    Client { kind: &'static str },

    /// The POST did not complete; `kind` never includes the URL.
    #[error("POST to the webhook failed: {kind}")]
    Post { kind: &'static str },

    /// The message could not be encoded as JSON.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),

    /// The webhook answered with something other than success.
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
}
