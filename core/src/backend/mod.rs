//! Targets: where recovery points are stored. Each kind builds an OpenDAL
//! operator (one file per kind); retries with backoff and timeouts wrap every
//! kind the same way here, not inside the implementations. What a policy
//! adds to a target wraps it where the policy opens it, one file each:
//! [`paced`] (its bandwidth limit) and [`locked`] (S3 Object Lock).

pub mod local;
pub mod locked;
#[cfg(feature = "aws")]
pub mod object_lock;
pub mod paced;
pub mod s3;
pub mod sftp;

use std::path::Path;
use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};

use crate::{Error, Result};

/// How a kind of target likes to be written to.
#[derive(Debug, Clone, Copy)]
pub struct WriteTuning {
    /// Size of each part sent (multipart upload on S3).
    pub chunk: Option<usize>,
    /// Parts in flight at once.
    pub concurrent: usize,
}

/// Why a target could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Its settings cannot be used as written (a path, a credential reference).
    #[error("{0}")]
    Settings(String),
    /// The storage driver refused them.
    #[error(transparent)]
    Driver(#[from] opendal::Error),
}

/// One kind of target.
pub trait Backend {
    /// Builds the operator rooted at the repository.
    fn operator(&self, base_dir: &Path) -> std::result::Result<Operator, BackendError>;
    /// Where the repository is, for people (never includes a secret).
    fn location(&self) -> String;
    /// Whether `object` exists, when this kind can tell without touching
    /// the target (opening a local path creates its folder, so a share that
    /// is not mounted must be noticed first).
    fn has_object(&self, base_dir: &Path, object: &str) -> Option<bool> {
        let _ = (base_dir, object);
        None
    }
    fn tuning(&self) -> WriteTuning {
        WriteTuning {
            chunk: None,
            concurrent: 1,
        }
    }
    /// Whether a write is seen whole or not at all by readers (a process
    /// killed mid-write leaves no partial file under the key).
    fn atomic_writes(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
/// Where a repository is: one variant per kind of target, one file per kind
/// (the registry: a new kind is a variant here and an arm in [`TargetConfig::backend`]).
pub enum TargetConfig {
    /// A mounted path: local disk, NFS or SMB share of a NAS.
    Local(local::LocalConfig),
    /// A NAS reached over SFTP.
    Sftp(sftp::SftpConfig),
    /// AWS S3 or any S3-compatible store.
    S3(s3::S3Config),
}

impl TargetConfig {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            TargetConfig::Local(c) => c,
            TargetConfig::Sftp(c) => c,
            TargetConfig::S3(c) => c,
        }
    }

    /// The address a bare machine reaches this target by (what
    /// [`TargetConfig::from_address`] reads back); credentials are never in
    /// it: S3 ones come from the AWS environment, an SFTP key is a path.
    pub fn address(&self, base_dir: &Path) -> String {
        match self {
            TargetConfig::Local(c) => {
                let path = crate::paths::resolve_relative(base_dir, &c.path);
                std::path::absolute(&path)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            }
            TargetConfig::S3(c) => {
                let mut query = Vec::new();
                if let Some(e) = &c.endpoint {
                    query.push(format!("endpoint={e}"));
                }
                query.push(format!(
                    "region={}",
                    c.region.as_deref().unwrap_or("us-east-1")
                ));
                if c.virtual_host_style {
                    query.push("virtual_host_style=true".into());
                }
                let prefix = c.prefix.as_deref().unwrap_or("").trim_matches('/');
                format!("s3://{}/{prefix}?{}", c.bucket, query.join("&"))
            }
            TargetConfig::Sftp(c) => {
                let user = c
                    .user
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                let port = c.port.map(|p| format!(":{p}")).unwrap_or_default();
                let mut query = vec![format!(
                    "known_hosts={}",
                    match c.known_hosts {
                        sftp::KnownHosts::Strict => "strict",
                        sftp::KnownHosts::Add => "add",
                        sftp::KnownHosts::Accept => "accept",
                    }
                )];
                if let Some(k) = &c.key {
                    query.push(format!(
                        "key={}",
                        crate::paths::resolve_relative(base_dir, k).display()
                    ));
                }
                format!(
                    "sftp://{user}{}{port}{}?{}",
                    c.host,
                    c.path,
                    query.join("&")
                )
            }
        }
    }

    /// Reads a target from its address, for use without a policy:
    /// `/mnt/nas/drp`, `file:///mnt/nas/drp`,
    /// `s3://bucket/prefix?endpoint=https://…&region=…` (credentials from the
    /// AWS environment), `sftp://user@host:port/path?key=/path/to/key`.
    pub fn from_address(address: &str) -> Result<TargetConfig> {
        if !address.contains("://") {
            return Ok(TargetConfig::Local(local::LocalConfig {
                path: address.into(),
            }));
        }
        let url = url::Url::parse(address)
            .map_err(|e| Error::Usage(format!("invalid target address `{address}`: {e}")))?;
        let query = |k: &str| {
            url.query_pairs()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.into_owned())
        };
        match url.scheme() {
            "file" => Ok(TargetConfig::Local(local::LocalConfig {
                path: url.path().into(),
            })),
            "s3" => Ok(TargetConfig::S3(s3::S3Config {
                bucket: url.host_str().unwrap_or_default().to_string(),
                prefix: Some(url.path().trim_start_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
                endpoint: query("endpoint"),
                region: query("region"),
                access_key_id: None,
                secret_access_key: None,
                virtual_host_style: query("virtual_host_style").as_deref() == Some("true"),
                lock: None,
            })),
            "sftp" => Ok(TargetConfig::Sftp(sftp::SftpConfig {
                host: url.host_str().unwrap_or_default().to_string(),
                port: url.port(),
                user: Some(url.username().to_string()).filter(|u| !u.is_empty()),
                key: query("key").map(Into::into),
                path: url.path().to_string(),
                known_hosts: match query("known_hosts") {
                    Some(mode) => mode.parse()?,
                    None => sftp::KnownHosts::Strict,
                },
            })),
            other => Err(Error::Usage(format!(
                "unsupported target scheme `{other}` in `{address}`: use a path, file://, s3:// or sftp://"
            ))),
        }
    }
}

/// Reads an S3 bucket's versioning and Object Lock settings.
pub async fn lock_posture(
    config: &s3::S3Config,
    base_dir: &Path,
) -> std::result::Result<s3::Posture, String> {
    #[cfg(feature = "aws")]
    {
        object_lock::ObjectLock::new(config, base_dir)
            .await?
            .posture()
            .await
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = (config, base_dir);
        Err("this drp was built without the `aws` feature that reads S3 Object Lock".into())
    }
}

/// An opened target: its name in the policy, its operator and how to write to it.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub location: String,
    pub op: Operator,
    pub tuning: WriteTuning,
    /// Whom recovery points written here are encrypted to (none: plain zstd).
    pub recipients: std::sync::Arc<[crate::keys::Recipient]>,
    /// See [`Backend::atomic_writes`].
    pub atomic_writes: bool,
    /// The limit a backup uploads at (never archiving): [`paced::Paced`].
    paced: Option<paced::Paced>,
    /// Its S3 Object Lock: [`locked::Locked`].
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    locked: Option<locked::Locked>,
}

impl Target {
    pub fn open(name: &str, config: &TargetConfig, base_dir: &Path) -> Result<Target> {
        let backend = config.backend();
        let op = backend
            .operator(base_dir)
            .map_err(|e| Error::target(name, format!("{e} (at {})", backend.location())))?
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(60))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(5)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10)),
            );
        Ok(Target {
            name: name.to_string(),
            location: backend.location(),
            op,
            tuning: backend.tuning(),
            recipients: std::sync::Arc::new([]),
            atomic_writes: backend.atomic_writes(),
            paced: None,
            locked: None,
        })
    }

    /// An error on this target, with what to check.
    pub fn error(&self, action: &str, err: opendal::Error) -> Error {
        let hint = match err.kind() {
            opendal::ErrorKind::PermissionDenied => {
                " (check the target's credentials and permissions)"
            }
            opendal::ErrorKind::NotFound => " (check the bucket or path exists)",
            opendal::ErrorKind::ConfigInvalid => " (check the target's settings in the policy)",
            _ => "",
        };
        Error::Target {
            target: self.name.clone(),
            message: format!("{action} at {}: {err}{hint}", self.location),
        }
    }
}
