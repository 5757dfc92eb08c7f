//! Keys. Recovery points are encrypted in the age format to recipients
//! (X25519 public keys): an agent holds only those, so it cannot read what
//! it writes, nor anyone else's points. Identities (the private halves) are
//! given only to restores, `verify --read-data` and drills.
//!
//! Records (manifests, snapshot-set records, reports) are signed with the
//! writing host's Ed25519 key ([`sign`]); a reader that trusts keys accepts
//! a record only when it is signed by the key trusted for the host whose
//! record it is.
//!
//! Losing every identity a point was encrypted to loses the point: nothing
//! in drp, nor anyone else, can decrypt it.

pub mod sign;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::secret::SecretRef;
use crate::{Error, Result};

pub use sign::{Signer, Trust};

/// The `keys:` section of a policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Public keys (`age1…`) the host encrypts to, by name. Targets encrypt
    /// to all of them unless they say otherwise.
    #[serde(default)]
    pub recipients: BTreeMap<String, String>,
    /// This host's Ed25519 signing key: a secret reference.
    pub signing: Option<SecretRef>,
    /// Public signing keys (`ed25519:…`) whose records are accepted, by the
    /// host that signs with them.
    #[serde(default)]
    pub trusted: BTreeMap<String, String>,
    /// An identity file (`AGE-SECRET-KEY-1…` lines) for restores and drills
    /// run from this policy: only where those run, never on an agent that
    /// only backs up.
    pub identity: Option<SecretRef>,
}

impl KeysConfig {
    /// What in the section cannot be used, as `(key, message)`: malformed
    /// public keys. Secrets are read only when used.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, key) in &self.recipients {
            if let Err(e) = age::x25519::Recipient::from_str(key) {
                out.push((
                    format!("keys.recipients.{name}"),
                    format!("not an age X25519 public key (`age1…`): {e}"),
                ));
            }
        }
        for (name, key) in &self.trusted {
            if let Err(e) = sign::public_key(key) {
                out.push((format!("keys.trusted.{name}"), e));
            }
        }
        out
    }
}

/// A public key a target encrypts to, by its name in the policy.
#[derive(Clone, Debug)]
pub struct Recipient {
    pub name: String,
    pub key: age::x25519::Recipient,
}

impl Recipient {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key.to_string())
    }
}

/// A short, stable name for a public key: 16 hex digits of the SHA-256 of
/// its text. The same for a recipient and for the identity it belongs to.
pub fn fingerprint(public: &str) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// Private keys a reader decrypts with.
#[derive(Clone, Default)]
pub struct Identities(Vec<age::x25519::Identity>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Identities {
    /// Reads an identity file: `AGE-SECRET-KEY-1…` lines, `#` comments.
    /// Errors name the file and line, never a key.
    pub fn parse(text: &str, origin: &str) -> Result<Identities> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = age::x25519::Identity::from_str(line).map_err(|_| {
                Error::Usage(format!(
                    "{origin}:{}: not an age X25519 identity (`AGE-SECRET-KEY-1…`)",
                    i + 1
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(Error::Usage(format!("{origin}: holds no age identity")));
        }
        Ok(Identities(keys))
    }

    pub fn from_file(path: &Path) -> Result<Identities> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read identity file {}", path.display()), e))?;
        Identities::parse(&text, &path.display().to_string())
    }

    pub fn extend(&mut self, other: Identities) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fingerprints of the recipients these identities open.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| fingerprint(&k.to_public().to_string()))
            .collect()
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.0.iter().map(|k| k as &dyn age::Identity)
    }
}

/// What a repository is read and written with: the host's signing key, the
/// keys its readers trust, and the identities given to this command.
#[derive(Clone, Default, Debug)]
pub struct Keys {
    pub signer: Option<Signer>,
    pub trust: Trust,
    pub identities: Identities,
}

impl Keys {
    /// The keys a policy of `host` names, its secrets read now (relative to
    /// `base`). The host's own signing key is trusted for its own records.
    pub fn from_config(config: &KeysConfig, host: &str, base: &Path) -> Result<Keys> {
        let signer = match &config.signing {
            Some(r) => {
                let secret = r
                    .resolve(base)
                    .map_err(|e| Error::Usage(format!("keys.signing: {e}")))?;
                Some(
                    Signer::parse(secret.expose())
                        .map_err(|e| Error::Usage(format!("keys.signing ({r:?}): {e}")))?,
                )
            }
            None => None,
        };
        let mut trust = Trust::default();
        for (host, key) in &config.trusted {
            trust
                .add(host, key)
                .map_err(|e| Error::Usage(format!("keys.trusted.{host}: {e}")))?;
        }
        if let Some(signer) = &signer {
            match config.trusted.get(host) {
                Some(key)
                    if sign::public_key(key).ok() != sign::public_key(&signer.public()).ok() =>
                {
                    return Err(Error::Usage(format!(
                        "keys.trusted.{host} is not the public half of keys.signing (key {}): a host's records would not verify",
                        signer.key_id()
                    )));
                }
                Some(_) => {}
                None => trust
                    .add(host, &signer.public())
                    .expect("a signer's own public key parses"),
            }
        }
        let identities = match &config.identity {
            Some(r) => {
                let secret = r
                    .resolve(base)
                    .map_err(|e| Error::Usage(format!("keys.identity: {e}")))?;
                Identities::parse(secret.expose(), &format!("keys.identity ({r:?})"))?
            }
            None => Identities::default(),
        };
        Ok(Keys {
            signer,
            trust,
            identities,
        })
    }

    /// Adds what a command line gives: identity files and trusted keys
    /// (`HOST=ed25519:…`).
    pub fn with_cli(mut self, identities: &[PathBuf], trusted: &[String]) -> Result<Keys> {
        for path in identities {
            self.identities.extend(Identities::from_file(path)?);
        }
        for t in trusted {
            let (host, key) = t.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "--trust `{t}`: give HOST=ed25519:… (the host whose records the key signs)"
                ))
            })?;
            self.trust
                .add(host, key)
                .map_err(|e| Error::Usage(format!("--trust {host}: {e}")))?;
        }
        Ok(self)
    }
}

/// `bytes` encrypted to `recipients` (unchanged when there are none): for
/// objects small enough to hold whole, such as WAL segments.
pub(crate) fn seal(recipients: &[Recipient], bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    if recipients.is_empty() {
        return Ok(bytes);
    }
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| &r.key as &dyn age::Recipient))
            .map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 1024);
    let mut w = encryptor.wrap_output(&mut out)?;
    w.write_all(&bytes)?;
    w.finish()?;
    Ok(out)
}

/// The plaintext of `bytes` when it is an age file, else `bytes` itself.
/// Failing to decrypt (no identity opens it, a chunk fails its tag) is an
/// `InvalidData` error.
pub(crate) fn unseal(identities: &Identities, bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if !bytes.starts_with(b"age-encryption.org/v1\n") {
        return Ok(bytes);
    }
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut out = Vec::with_capacity(bytes.len());
    age::Decryptor::new_buffered(&bytes[..])
        .map_err(|e| invalid(e.to_string()))?
        .decrypt(identities.as_age())
        .map_err(|e| invalid(e.to_string()))?
        .read_to_end(&mut out)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(out)
}

/// A new key pair for encryption: the identity file's text (with its
/// recipient as a comment) and the recipient.
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n# fingerprint: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        fingerprint(&recipient),
        identity.to_string().expose_secret()
    );
    (text, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_file_opens_the_recipient_it_was_made_with() {
        let (text, recipient) = generate_identity();
        let ids = Identities::parse(&text, "ops.age").unwrap();
        assert_eq!(ids.fingerprints(), vec![fingerprint(&recipient)]);
    }

    #[test]
    fn a_bad_identity_line_is_located_and_never_echoed() {
        let err = Identities::parse("# ok\nAGE-SECRET-KEY-1NOTAKEY\n", "ops.age")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ops.age:2:"), "{err}");
        assert!(!err.contains("NOTAKEY"), "{err}");
    }
}
