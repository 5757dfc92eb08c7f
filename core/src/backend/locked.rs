//! S3 Object Lock (an S3 target's `lock` in the policy), wrapped around the
//! target where a policy opens it: the objects of a point (data, manifest,
//! its signature) and of the archive are locked once written
//! (`Target::protect`), and prune reads how long a lock holds
//! (`Target::locked_until`). On any other target both do nothing. The
//! retention goes through the S3 SDK (`lock.rs`, behind the `aws`
//! feature); a drp built without it refuses a target that sets `lock`.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Target, TargetConfig};
use crate::{Error, Result};

/// The Object Lock of a target that sets one.
#[derive(Clone)]
pub struct Locked {
    #[cfg(feature = "aws")]
    lock: std::sync::Arc<super::object_lock::ObjectLock>,
}

impl Locked {
    /// `target`, its objects locked as `config` says (as it was when
    /// `config` sets no lock); the S3 client's credentials are read now.
    pub async fn wrap(target: Target, config: &TargetConfig, base_dir: &Path) -> Result<Target> {
        let TargetConfig::S3(s3) = config else {
            return Ok(target);
        };
        if s3.lock.is_none() {
            return Ok(target);
        }
        #[cfg(feature = "aws")]
        {
            let mut target = target;
            let lock = super::object_lock::ObjectLock::new(s3, base_dir)
                .await
                .map_err(|e| Error::target(&target.name, e))?;
            target.locked = Some(Locked {
                lock: std::sync::Arc::new(lock),
            });
            Ok(target)
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = base_dir;
            Err(Error::Usage(format!(
                "target `{}` sets `lock`, and this drp was built without the `aws` feature that sets S3 Object Lock",
                target.name
            )))
        }
    }
}

impl Target {
    /// Locks the object at `key` as the target's Object Lock says; until
    /// when (`None`: the target locks nothing).
    pub(crate) async fn protect(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        #[cfg(feature = "aws")]
        if let Some(locked) = &self.locked {
            return locked
                .lock
                .protect(key)
                .await
                .map_err(|e| Error::target(&self.name, e));
        }
        let _ = key;
        Ok(None)
    }

    /// Until when the object at `key` is locked, on an Object Lock target.
    pub(crate) async fn locked_until(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        #[cfg(feature = "aws")]
        if let Some(locked) = &self.locked {
            return locked
                .lock
                .locked_until(key)
                .await
                .map_err(|e| Error::target(&self.name, e));
        }
        let _ = key;
        Ok(None)
    }
}
