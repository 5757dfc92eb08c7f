//! DNS records a runbook moves: the [`DnsProvider`] trait, one file per
//! provider (`rfc2136.rs`: a primary server updated by RFC 2136 with TSIG;
//! `route53.rs`: an Amazon Route 53 hosted zone through its API;
//! `cloudflare.rs`: a Cloudflare zone through its API), and the plain DNS
//! queries (over TCP, recursion off, authoritative answers only) that read
//! a record back from any server.

pub mod cloudflare;
pub mod rfc2136;
#[cfg(feature = "aws")]
pub mod route53;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ActionError;

/// How long one exchange with one server may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The address record types a switch moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Family {
    #[default]
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
}

impl Family {
    pub fn record_type(self) -> RecordType {
        match self {
            Family::A => RecordType::A,
            Family::AAAA => RecordType::AAAA,
        }
    }

    /// Whether `ip` is an address of this type.
    pub fn fits(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::A, IpAddr::V4(_)) | (Family::AAAA, IpAddr::V6(_))
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::A => "A",
            Family::AAAA => "AAAA",
        })
    }
}

/// One RRset: a fully qualified name within its zone, and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub zone: Name,
    pub name: Name,
    pub family: Family,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.family)
    }
}

/// A server to talk to: an address, or a host name resolved when used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Server {
    Addr(SocketAddr),
    Host(String, u16),
}

impl Server {
    /// `ip`, `ip:port`, `[ipv6]:port`, `host` or `host:port` (port 53 when
    /// not given).
    pub fn parse(text: &str) -> Result<Server, String> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Server::Addr(addr));
        }
        if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Server::Addr(SocketAddr::new(ip, 53)));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("`{text}`: the port is not a number"))?,
            ),
            None => (text, 53),
        };
        let valid = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "`{text}` is not an address: write `ip`, `ip:port` or `host:port`"
            ));
        }
        Ok(Server::Host(host.to_string(), port))
    }

    /// The socket address to send to.
    pub async fn resolve(&self) -> Result<SocketAddr, DnsError> {
        match self {
            Server::Addr(a) => Ok(*a),
            Server::Host(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| DnsError::Answer {
                    server: self.to_string(),
                    what: "the name does not resolve to an address".into(),
                }),
        }
    }
}

impl TryFrom<String> for Server {
    type Error = String;

    fn try_from(text: String) -> Result<Server, String> {
        Server::parse(&text)
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Addr(a) => write!(f, "{a}"),
            Server::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The provider accepted the change.
    Done,
    /// The record did not hold exactly the expected value; nothing changed.
    /// The words say how the provider told so.
    Mismatch(String),
}

/// Where DNS records live and how they change. One implementation per
/// provider; the action only compares, swaps and reads back.
pub trait DnsProvider: Send + Sync {
    /// Where changes go, for messages (`127.0.0.1:53 (RFC 2136)`).
    fn describe(&self) -> String;

    /// The addresses `record` holds now at the provider's authoritative
    /// source (empty: no such RRset).
    fn current<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;

    /// Replaces `from` by `to` (with `ttl` seconds) only if `record` holds
    /// exactly `{from}`, in one step the provider checks itself.
    fn swap<'a>(
        &'a self,
        record: &'a Record,
        from: IpAddr,
        to: IpAddr,
        ttl: u32,
    ) -> BoxFuture<'a, Result<Swap, DnsError>>;

    /// The servers that answer for `record`'s zone, to wait for when the
    /// runbook names none.
    fn name_servers<'a>(
        &'a self,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Vec<SocketAddr>, DnsError>>;

    /// When the provider itself confirms that every one of its servers
    /// answers the change (`swap` waited for it), in words; the switch then
    /// waits on no server the runbook does not list.
    fn settled(&self) -> Option<String> {
        None
    }
}

/// A step's provider and its own settings, chosen by `provider:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    Rfc2136(rfc2136::Config),
    #[cfg(feature = "aws")]
    Route53(route53::Config),
    Cloudflare(cloudflare::Config),
}

impl ProviderConfig {
    /// The provider of `zone`, its secrets read (relative to `base`, the
    /// policy's folder).
    pub async fn open(&self, base: &Path, zone: &Name) -> Result<Box<dyn DnsProvider>, DnsError> {
        match self {
            ProviderConfig::Rfc2136(c) => Ok(Box::new(rfc2136::Rfc2136::open(c, base).await?)),
            #[cfg(feature = "aws")]
            ProviderConfig::Route53(c) => Ok(Box::new(route53::Route53::open(c, zone).await?)),
            ProviderConfig::Cloudflare(c) => {
                Ok(Box::new(cloudflare::Cloudflare::open(c, base, zone).await?))
            }
        }
    }

    /// One line for the plan.
    pub fn describe(&self) -> String {
        match self {
            ProviderConfig::Rfc2136(c) => format!("{} (RFC 2136)", c.server),
            #[cfg(feature = "aws")]
            ProviderConfig::Route53(c) => match &c.hosted_zone_id {
                Some(id) => format!("Route 53 hosted zone {id}"),
                None => "Route 53".into(),
            },
            ProviderConfig::Cloudflare(c) => match &c.zone_id {
                Some(id) => format!("Cloudflare zone {id}"),
                None => "Cloudflare".into(),
            },
        }
    }
}

/// Why talking to a DNS server or provider failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("TSIG secret ({at}): {why}")]
    Secret { at: String, why: String },

    #[error("Cloudflare API token ({at}): {why}")]
    ApiToken { at: String, why: String },

    #[error("{server}: {source}")]
    Io {
        server: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{server}: no answer within {}s", EXCHANGE_TIMEOUT.as_secs())]
    TimedOut { server: String },

    /// The server answered, and the answer says no, or makes no sense.
    #[error("{server}: {what}")]
    Answer { server: String, what: String },

    #[error("cannot build the DNS message: {0}")]
    Build(String),
}

impl From<DnsError> for ActionError {
    fn from(e: DnsError) -> ActionError {
        ActionError::failed(e.to_string())
    }
}

/// Addresses as a person reads them: `10.0.0.1`, `10.0.0.1, 10.0.0.2`, or
/// `nothing`.
pub fn shown(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return "nothing".into();
    }
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends one message over TCP (two-byte length, then the message) and reads
/// one back, within [`EXCHANGE_TIMEOUT`].
pub async fn exchange(server: SocketAddr, request: &[u8]) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io {
        server: server.to_string(),
        source,
    };
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.map_err(io)?;
        let len = u16::try_from(request.len())
            .map_err(|_| DnsError::Build("the message is longer than 65535 bytes".into()))?;
        let mut out = Vec::with_capacity(request.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(request);
        stream.write_all(&out).await.map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(io)?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await.map_err(io)?;
        Ok(answer)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, talk)
        .await
        .map_err(|_| DnsError::TimedOut {
            server: server.to_string(),
        })?
}

/// Reads `answer` as the response to `request` (same id, a response).
pub fn response_to(
    server: SocketAddr,
    request: &Message,
    answer: &[u8],
) -> Result<Message, DnsError> {
    let bad = |what: String| DnsError::Answer {
        server: server.to_string(),
        what,
    };
    let message = Message::from_vec(answer).map_err(|e| bad(format!("unreadable answer: {e}")))?;
    if message.id != request.id || message.message_type != MessageType::Response {
        return Err(bad(
            "the answer is not a response to the request sent".into()
        ));
    }
    Ok(message)
}

/// The addresses of `name`/`family` as `server` answers with authority:
/// recursion off; an answer without the AA bit, or any code but NOERROR
/// or NXDOMAIN, is an error.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    family: Family,
) -> Result<Vec<IpAddr>, DnsError> {
    let answer = ask(server, name, family.record_type()).await?;
    Ok(answer
        .answers
        .iter()
        .filter(|r| &r.name == name)
        .filter_map(|r| match &r.data {
            RData::A(a) if family == Family::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if family == Family::AAAA => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// One authoritative question to `server`.
async fn ask(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Message, DnsError> {
    let mut request = Message::query();
    request.metadata.op_code = OpCode::Query;
    request.metadata.recursion_desired = false;
    request.add_query(Query::query(name.clone(), rtype));
    let bytes = request
        .to_vec()
        .map_err(|e| DnsError::Build(e.to_string()))?;
    let answer = response_to(server, &request, &exchange(server, &bytes).await?)?;
    let code = answer.response_code;
    let said = |what: String| DnsError::Answer {
        server: server.to_string(),
        what,
    };
    match code {
        ResponseCode::NoError | ResponseCode::NXDomain if answer.authoritative => Ok(answer),
        ResponseCode::NoError | ResponseCode::NXDomain => Err(said(format!(
            "answers {name} {rtype} without authority: it does not serve the zone"
        ))),
        ResponseCode::Refused => Err(said(format!(
            "refused the query for {name} {rtype} (REFUSED): it does not serve the zone"
        ))),
        other => Err(said(format!(
            "answered the query for {name} {rtype} with {}",
            rcode_name(other)
        ))),
    }
}

/// The servers `primary` names for `zone` (its NS RRset), each name's
/// addresses as the primary answers them, or as the system resolves them
/// for a name outside the zone; on port 53, except an address of the
/// primary itself, which is the primary. The primary comes first, always.
pub async fn name_servers(primary: SocketAddr, zone: &Name) -> Result<Vec<SocketAddr>, DnsError> {
    let answer = ask(primary, zone, RecordType::NS).await?;
    let names: Vec<Name> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.clone()),
            _ => None,
        })
        .collect();
    let mut out = vec![primary];
    for ns in names {
        let mut ips = Vec::new();
        if zone.zone_of(&ns) {
            for family in [Family::A, Family::AAAA] {
                ips.extend(query(primary, &ns, family).await?);
            }
        } else if let Ok(found) = tokio::net::lookup_host((ns.to_ascii().as_str(), 53)).await {
            ips.extend(found.map(|a| a.ip()));
        }
        if ips.is_empty() {
            return Err(DnsError::Answer {
                server: primary.to_string(),
                what: format!(
                    "name server {ns} of {zone} has no address; list the servers to check under `verify.servers`"
                ),
            });
        }
        for ip in ips {
            let addr = if ip == primary.ip() {
                primary
            } else {
                SocketAddr::new(ip, 53)
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

/// A response code as DNS tools print it (`NXRRSET`, `NOTAUTH`).
pub fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}
