//! A zone's primary server changed by RFC 2136 dynamic update, signed with
//! a TSIG key (RFC 8945): BIND, Knot, PowerDNS and others.
//!
//! The swap is one update message: the prerequisite that the RRset is
//! exactly `{from}` (RFC 2136 §2.4.2), the deletion of `from` and the
//! addition of `to`. The server applies all of it or none.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use base64::Engine;
use drp_core::config::SecretRef;
use futures::future::BoxFuture;
use hickory_proto::op::{ResponseCode, update_message};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record as Rr, RecordSet, TSigner};
use serde::Deserialize;

use super::{DnsError, DnsProvider, Record, Server, Swap, exchange, rcode_name, response_to};

/// How far apart the clocks of drp and the server may be, in seconds.
const FUDGE: u16 = 300;

/// `provider: rfc2136`: where updates go and the key that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The zone's primary server.
    pub server: Server,
    pub tsig: Tsig,
}

/// `tsig:` — a key the server knows by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tsig {
    pub name: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The key's secret, base64 as `tsig-keygen` prints it (a BIND key
    /// file is read for its `secret "…";`).
    pub secret: SecretRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    fn tsig(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

/// The primary, its address resolved and its key read.
pub struct Rfc2136 {
    shown: String,
    server: SocketAddr,
    key_name: Name,
    signer: TSigner,
}

impl Rfc2136 {
    pub async fn open(config: &Config, base: &Path) -> Result<Rfc2136, DnsError> {
        let at = format!("{:?}", config.tsig.secret);
        let secret = config
            .tsig
            .secret
            .resolve(base)
            .map_err(|why| DnsError::Secret {
                at: at.clone(),
                why,
            })?;
        let key = decode_secret(secret.expose()).map_err(|why| DnsError::Secret { at, why })?;
        let key_name = Name::from_ascii(&config.tsig.name)
            .map_err(|e| DnsError::Build(format!("TSIG key name `{}`: {e}", config.tsig.name)))?;
        let signer = TSigner::new(key, config.tsig.algorithm.tsig(), key_name.clone(), FUDGE)
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Rfc2136 {
            shown: config.server.to_string(),
            server: config.server.resolve().await?,
            key_name,
            signer,
        })
    }

    fn answer(&self, what: String) -> DnsError {
        DnsError::Answer {
            server: self.shown.clone(),
            what,
        }
    }

    async fn send_swap(
        &self,
        record: &Record,
        from: IpAddr,
        to: IpAddr,
        ttl: u32,
    ) -> Result<Swap, DnsError> {
        let rrset = |ip: IpAddr, ttl: u32| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            RecordSet::from(Rr::from_rdata(record.name.clone(), ttl, data))
        };
        let mut request = update_message::compare_and_swap(
            rrset(from, 0),
            rrset(to, ttl),
            record.zone.clone(),
            false,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut verifier = request
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::Build(e.to_string()))?;
        let bytes = request
            .to_vec()
            .map_err(|e| DnsError::Build(e.to_string()))?;
        let answer = exchange(self.server, &bytes).await?;
        let response = response_to(self.server, &request, &answer)?;
        let code = response.response_code;
        let tsig_error = response.signature.as_ref().and_then(|s| s.data.error);
        let zone = &record.zone;
        let key = &self.key_name;
        match code {
            ResponseCode::NoError => {
                let signed = verifier.as_mut().map(|v| v.verify(&answer));
                match signed {
                    Some(Ok(_)) => Ok(Swap::Done),
                    Some(Err(e)) => Err(self.answer(format!(
                        "the answer to the update is not signed with key {key}: {e}"
                    ))),
                    None => Err(self.answer("the update was sent unsigned".into())),
                }
            }
            ResponseCode::NXRRSet | ResponseCode::YXRRSet => {
                Ok(Swap::Mismatch(format!("prerequisite failed: {}", rcode_name(code))))
            }
            ResponseCode::NotAuth if tsig_error.is_some() => Err(self.answer(format!(
                "rejected the update's TSIG key {key} (NOTAUTH, {}): {}",
                tsig_error_name(tsig_error.as_ref()),
                match tsig_error {
                    Some(TsigError::BadKey) => "the server knows no key of that name and algorithm",
                    Some(TsigError::BadTime) => "the clocks of this host and the server differ by more than 5 minutes",
                    _ => "wrong secret or algorithm",
                }
            ))),
            ResponseCode::NotAuth => Err(self.answer(format!(
                "is not authoritative for zone {zone} or does not accept key {key} for it (NOTAUTH)"
            ))),
            ResponseCode::Refused => Err(self.answer(format!(
                "refused the update of zone {zone} (REFUSED): the server is not configured to accept updates of this zone signed with key {key} (`allow-update` or `update-policy` in BIND)"
            ))),
            ResponseCode::NotZone => Err(self.answer(format!(
                "{} is not within zone {zone} (NOTZONE)",
                record.name
            ))),
            other => Err(self.answer(format!(
                "answered the update of {record} with {}",
                rcode_name(other)
            ))),
        }
    }
}

impl DnsProvider for Rfc2136 {
    fn describe(&self) -> String {
        format!("{} (RFC 2136)", self.shown)
    }

    fn current<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(super::query(self.server, &record.name, record.family))
    }

    fn swap<'a>(
        &'a self,
        record: &'a Record,
        from: IpAddr,
        to: IpAddr,
        ttl: u32,
    ) -> BoxFuture<'a, Result<Swap, DnsError>> {
        Box::pin(self.send_swap(record, from, to, ttl))
    }

    fn name_servers<'a>(
        &'a self,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Vec<SocketAddr>, DnsError>> {
        Box::pin(super::name_servers(self.server, &record.zone))
    }
}

fn tsig_error_name(e: Option<&TsigError>) -> String {
    match e {
        Some(TsigError::BadSig) => "BADSIG".into(),
        Some(TsigError::BadKey) => "BADKEY".into(),
        Some(TsigError::BadTime) => "BADTIME".into(),
        Some(TsigError::BadTrunc) => "BADTRUNC".into(),
        Some(TsigError::Unknown(n)) => format!("TSIG error {n}"),
        None => "no TSIG error".into(),
    }
}

/// The key's bytes from its base64 text, or from the `secret "…";` clause
/// of a BIND key file. The error never shows the text.
fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let b64 = if text.contains('"') {
        text.split(';')
            .map(str::trim)
            .find_map(|s| s.strip_prefix("secret"))
            .and_then(|s| s.split('"').nth(1))
            .ok_or("a BIND key file without a quoted `secret \"…\";`")?
    } else {
        text.trim()
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "not base64 (give the secret as `tsig-keygen` prints it)".to_string())?;
    if key.is_empty() {
        return Err("empty".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::decode_secret;

    #[test]
    fn a_secret_is_base64_or_a_bind_key_file() {
        assert_eq!(decode_secret("aGVsbG8=\n").unwrap(), b"hello");
        let file = "key \"drp\" {\n\talgorithm hmac-sha256;\n\tsecret \"aGVsbG8=\";\n};\n";
        assert_eq!(decode_secret(file).unwrap(), b"hello");
        let e = decode_secret("hunter2!").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(decode_secret("").is_err());
    }
}
