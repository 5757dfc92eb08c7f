//! S3 Object Lock, through the S3 SDK (the storage driver does not send its
//! headers): retention set on each object of a recovery point as it is
//! written, read back before prune deletes, and the bucket's lock and
//! versioning settings for `drp check`.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::DateTime as SdkTime;
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockRetention, ObjectLockRetentionMode};
use chrono::{DateTime, Utc};

use crate::error::error_chain;

use super::s3::{LockConfig, LockMode, Posture, S3Config};

/// An S3 target's Object Lock: the client and where the repository is.
#[derive(Clone, Debug)]
pub struct ObjectLock {
    client: Client,
    bucket: String,
    prefix: String,
    pub config: Option<LockConfig>,
}

impl ObjectLock {
    /// The client for `config`'s bucket, its credentials read now.
    pub async fn new(config: &S3Config, base_dir: &Path) -> Result<ObjectLock, String> {
        let region = config.region.as_deref().unwrap_or("us-east-1");
        let sdk = crate::snapshot::aws::sdk_config(region, config.endpoint.as_deref()).await;
        let mut b =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(!config.virtual_host_style);
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            let id = id
                .resolve(base_dir)
                .map_err(|e| format!("access_key_id: {e}"))?;
            let secret = secret
                .resolve(base_dir)
                .map_err(|e| format!("secret_access_key: {e}"))?;
            b = b.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "drp policy",
            ));
        }
        Ok(ObjectLock {
            client: Client::from_conf(b.build()),
            bucket: config.bucket.clone(),
            prefix: config
                .prefix
                .as_deref()
                .map(|p| format!("{}/", p.trim_matches('/')))
                .unwrap_or_default(),
            config: config.lock,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Locks the object at `key` (relative to the repository) for the
    /// policy's days from now; returns until when.
    pub async fn protect(&self, key: &str) -> Result<Option<DateTime<Utc>>, String> {
        let Some(lock) = self.config else {
            return Ok(None);
        };
        let until = Utc::now() + chrono::Duration::days(i64::from(lock.days));
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.key(key))
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(SdkTime::from_secs(until.timestamp()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("cannot lock {key}: {}", error_chain(&e)))?;
        Ok(Some(until))
    }

    /// Until when the current version of `key` is locked (`None`: it is not).
    pub async fn locked_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, String> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| format!("cannot read the lock of {key}: {}", error_chain(&e)))?;
        Ok(head
            .object_lock_retain_until_date()
            .and_then(|t| DateTime::from_timestamp(t.secs(), 0)))
    }

    /// The bucket's versioning and Object Lock settings.
    pub async fn posture(&self) -> Result<Posture, String> {
        let lock = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        let (lock_enabled, default_retention) = match lock {
            Ok(out) => {
                let conf = out.object_lock_configuration();
                let enabled = conf
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| e.as_str() == "Enabled");
                let default = conf
                    .and_then(|c| c.rule())
                    .and_then(|r| r.default_retention())
                    .and_then(|d| {
                        let days = d
                            .days()
                            .map(|d| d as u32)
                            .or(d.years().map(|y| y as u32 * 365))?;
                        Some((d.mode()?.as_str().to_string(), days))
                    });
                (enabled, default)
            }
            // What buckets without Object Lock answer.
            Err(e) if error_chain(&e).contains("ObjectLockConfigurationNotFound") => (false, None),
            Err(e) => {
                return Err(format!(
                    "cannot read the bucket's Object Lock: {}",
                    error_chain(&e)
                ));
            }
        };
        // Object Lock requires versioning, which can then never be suspended.
        let versioning = lock_enabled
            || self
                .client
                .get_bucket_versioning()
                .bucket(&self.bucket)
                .send()
                .await
                .map_err(|e| format!("cannot read the bucket's versioning: {}", error_chain(&e)))?
                .status()
                == Some(&BucketVersioningStatus::Enabled);
        Ok(Posture {
            versioning,
            lock_enabled,
            default_retention,
        })
    }
}
