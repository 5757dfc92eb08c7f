//! Signed records. Each record (`K`) is written with a detached signature
//! beside it (`K.sig`) over its exact bytes and its key, so a record cannot
//! be moved to another key nor altered. The signature names the key that
//! made it; a reader that trusts keys accepts a record only when that key
//! is the one trusted for the host the record belongs to.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::fingerprint;

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "DRP-SIGNING-KEY-ED25519:";
/// Domain separation: these signatures mean nothing outside drp records.
const CONTEXT: &[u8] = b"drp record v1\0";

/// The detached signature stored beside a record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detached {
    /// The signing key's fingerprint.
    pub key: String,
    pub signature: String,
}

/// This host's signing key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.key_id())
    }
}

impl Signer {
    /// A fresh key.
    pub fn generate() -> Signer {
        Signer {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// Reads a key file's text (`DRP-SIGNING-KEY-ED25519:…`). The error
    /// never repeats the text.
    pub fn parse(text: &str) -> std::result::Result<Signer, String> {
        let bad = || format!("not a drp signing key (a line `{SECRET_PREFIX}…`)");
        let body = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.strip_prefix(SECRET_PREFIX))
            .ok_or_else(bad)?;
        let bytes: [u8; 32] = STANDARD
            .decode(body)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Signer {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The key file's text.
    pub fn secret_text(&self) -> String {
        format!(
            "# drp signing key {}; public key: {}\n{SECRET_PREFIX}{}\n",
            self.key_id(),
            self.public(),
            STANDARD.encode(self.key.to_bytes())
        )
    }

    /// The public key as written in policies (`ed25519:…`).
    pub fn public(&self) -> String {
        public_text(&self.key.verifying_key())
    }

    pub fn key_id(&self) -> String {
        fingerprint(&self.public())
    }

    /// The detached signature of `bytes` stored at `key`.
    pub fn sign(&self, key: &str, bytes: &[u8]) -> Detached {
        Detached {
            key: self.key_id(),
            signature: STANDARD.encode(self.key.sign(&message(key, bytes)).to_bytes()),
        }
    }
}

fn public_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", STANDARD.encode(key.to_bytes()))
}

fn message(key: &str, bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + key.len() + 1 + bytes.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m.extend_from_slice(bytes);
    m
}

/// Parses a public key as written in policies.
pub fn public_key(text: &str) -> std::result::Result<VerifyingKey, String> {
    let bad = || format!("not an Ed25519 public key (`{PUBLIC_PREFIX}` and 32 bytes in base64)");
    let bytes: [u8; 32] = text
        .trim()
        .strip_prefix(PUBLIC_PREFIX)
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Whose records a reader accepts: public keys by the host that signs with them.
#[derive(Clone, Default, Debug)]
pub struct Trust {
    keys: BTreeMap<String, (String, VerifyingKey)>,
}

/// Whose record is being read.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// A record of this host (its manifests, its snapshot sets).
    Host(&'a str),
    /// A record any trusted key may sign (a runbook's report).
    Anyone,
}

impl Trust {
    pub fn add(&mut self, host: &str, public: &str) -> std::result::Result<(), String> {
        let key = public_key(public)?;
        self.keys
            .insert(host.to_string(), (fingerprint(&public_text(&key)), key));
        Ok(())
    }

    /// Whether signatures are required: a reader that trusts no key reads
    /// records as they are (repositories written before signing existed).
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks the signature of the record at `key` whose bytes are `bytes`.
    /// The error says why in words a person can act on.
    pub fn check(
        &self,
        owner: Owner<'_>,
        key: &str,
        bytes: &[u8],
        sig: Option<&[u8]>,
    ) -> std::result::Result<(), String> {
        if !self.required() {
            return Ok(());
        }
        let sig = sig.ok_or("it is not signed, and this reader accepts only signed records")?;
        let sig: Detached = serde_json::from_slice(sig)
            .map_err(|_| "its signature file is not a drp signature".to_string())?;
        let signer = self.keys.iter().find(|(_, (id, _))| *id == sig.key);
        let (host, public) = match (signer, owner) {
            (None, _) => {
                return Err(format!(
                    "it is signed by key {}, which is not trusted here",
                    sig.key
                ));
            }
            (Some((host, _)), Owner::Host(owner)) if host != owner => {
                return Err(format!(
                    "it is signed by {host}'s key, but it is a record of {owner}: a host signs only its own records"
                ));
            }
            (Some((host, (_, public))), _) => (host, public),
        };
        let signature = STANDARD
            .decode(&sig.signature)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or("its signature is malformed")?;
        public
            .verify_strict(&message(key, bytes), &signature)
            .map_err(|_| {
                format!(
                    "its signature does not match its content (key {}, {host}): it was altered",
                    sig.key
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(host: &str, s: &Signer) -> Trust {
        let mut t = Trust::default();
        t.add(host, &s.public()).unwrap();
        t
    }

    #[test]
    fn a_signed_record_reads_back_only_unaltered_at_its_key_and_for_its_host() {
        let s = Signer::parse(&Signer::generate().secret_text()).unwrap();
        let t = trust("db-1", &s);
        let sig = serde_json::to_vec(&s.sign("db-1/x.json", b"{}")).unwrap();
        let check = |owner, key, bytes: &[u8]| t.check(owner, key, bytes, Some(&sig));
        assert!(check(Owner::Host("db-1"), "db-1/x.json", b"{}").is_ok());
        assert!(check(Owner::Anyone, "db-1/x.json", b"{}").is_ok());
        let altered = check(Owner::Host("db-1"), "db-1/x.json", b"{ }").unwrap_err();
        assert!(altered.contains("altered"), "{altered}");
        assert!(check(Owner::Host("db-1"), "db-1/y.json", b"{}").is_err());
        let foreign = check(Owner::Host("db-2"), "db-1/x.json", b"{}").unwrap_err();
        assert!(foreign.contains("record of db-2"), "{foreign}");
        let unsigned = t.check(Owner::Host("db-1"), "db-1/x.json", b"{}", None);
        assert!(unsigned.unwrap_err().contains("not signed"));
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let t = trust("db-1", &Signer::generate());
        let other = Signer::generate();
        let sig = serde_json::to_vec(&other.sign("k", b"x")).unwrap();
        let err = t.check(Owner::Anyone, "k", b"x", Some(&sig)).unwrap_err();
        assert!(
            err.contains(&other.key_id()) && err.contains("not trusted"),
            "{err}"
        );
    }

    #[test]
    fn a_reader_trusting_nothing_reads_unsigned_records() {
        assert!(
            Trust::default()
                .check(Owner::Anyone, "k", b"x", None)
                .is_ok()
        );
    }
}
