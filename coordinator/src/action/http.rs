//! HTTP check: a status code and, optionally, text in the body. With
//! `resolve_with`, the URL's host is looked up on a DNS server of its zone
//! rather than through the system's resolver, so the check lands where the
//! name points now, as a client without a cached answer would.
//!
//! In a drill with `drill.records`, a check of a production name finds its
//! address through the name's drill record instead ([`HttpCheck::resolve_as`]);
//! the request itself still names the production host (its `Host` header
//! and TLS name), as the web server answering for it expects.

use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use hickory_proto::rr::Name;
use serde::Deserialize;

use super::dns::{self, Family, Server};
use super::{Action, ActionError, Context, Poll};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
    pub body_contains: Option<String>,
    /// A server of the host name's zone (`ip`, `ip:port`), asked with
    /// recursion off, instead of the system's resolver.
    pub resolve_with: Option<Server>,
    #[serde(flatten)]
    pub poll: Poll,
    /// In a drill: the drill record whose address the URL's host is sent
    /// to (looked up on `resolve_with`, or the system's resolver). Never
    /// written in a runbook.
    #[serde(skip)]
    pub resolve_as: Option<Name>,
}

fn default_status() -> u16 {
    200
}

impl HttpCheck {
    async fn once(&self) -> Result<String, ActionError> {
        let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        let mut landed = String::new();
        if self.resolve_with.is_some() || self.resolve_as.is_some() {
            let (host, ip) = self.look_up().await?;
            // Port 0: the URL's own port, or its scheme's.
            client = client.resolve(&host, SocketAddr::new(ip, 0));
            landed = match (&self.resolve_as, &self.resolve_with) {
                (Some(drill), Some(server)) => {
                    format!(" (drill record {drill} of {host} is {ip} on {server})")
                }
                (Some(drill), None) => format!(" (drill record {drill} of {host} is {ip})"),
                (None, Some(server)) => format!(" ({host} is {ip} on {server})"),
                (None, None) => unreachable!("one of them is set"),
            };
        }
        let client = client.build().map_err(ActionError::Http)?;
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
        Ok(format!("GET {}{landed} answered {status}", self.url))
    }

    /// The URL's host, when it is a DNS name (not an address).
    pub fn host_name(&self) -> Option<Name> {
        let url = reqwest::Url::parse(&self.url).ok()?;
        let host = url.host_str()?;
        if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return None;
        }
        Name::from_ascii(format!("{}.", host.trim_end_matches('.'))).ok()
    }

    /// The URL's host and the address found for it: for its drill record
    /// when there is one, on `resolve_with` (A first, then AAAA) or else
    /// through the system's resolver.
    async fn look_up(&self) -> Result<(String, IpAddr), ActionError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ActionError::failed(format!("`{}` is not a URL: {e}", self.url)))?;
        let host = url
            .host_str()
            .ok_or_else(|| ActionError::failed(format!("`{}` names no host", self.url)))?
            .to_string();
        let name = match &self.resolve_as {
            Some(drill) => drill.clone(),
            None => Name::from_ascii(format!("{}.", host.trim_end_matches('.')))
                .map_err(|e| ActionError::failed(format!("`{host}` is not a DNS name: {e}")))?,
        };
        let Some(server) = &self.resolve_with else {
            let found = tokio::net::lookup_host((name.to_ascii(), 0))
                .await
                .map_err(|e| ActionError::failed(format!("{name} does not resolve: {e}")))?
                .next();
            return match found {
                Some(addr) => Ok((host, addr.ip())),
                None => Err(ActionError::failed(format!("{name} has no address"))),
            };
        };
        let addr = server.resolve().await?;
        for family in [Family::A, Family::AAAA] {
            if let Some(ip) = dns::query(addr, &name, family).await?.first() {
                return Ok((host, *ip));
            }
        }
        Err(ActionError::failed(format!(
            "{server} has no address for {name}"
        )))
    }
}

impl Action for HttpCheck {
    fn describe(&self) -> String {
        let via = match (&self.resolve_as, &self.resolve_with) {
            (Some(drill), Some(s)) => {
                format!(" (its host at drill record {drill}'s address, as {s} answers)")
            }
            (Some(drill), None) => format!(" (its host at drill record {drill}'s address)"),
            (None, Some(s)) => format!(" (its host as {s} answers)"),
            (None, None) => String::new(),
        };
        format!("GET {}{via} expecting {}", self.url, self.status)
    }

    fn run<'a>(&'a self, _: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(super::poll(self.poll, move || self.once()))
    }
}
