//! RDS instances: CreateDBSnapshot, waited until available. Rollback restores
//! a new instance from the snapshot (RDS cannot restore in place) and reports
//! the endpoint to switch the application to.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_rds::Client;
use aws_sdk_rds::types::Tag;
use futures::future::BoxFuture;

use super::aws::{
    Progress, api_error, delete_snapshot, sdk_config, snapshot_tags, wait_for_snapshot, wait_until,
};
use super::{Created, Member, RdsConfig, SnapContext, SnapshotError, SnapshotProvider};

pub struct Rds {
    config: RdsConfig,
}

/// RDS identifiers: letters, digits and hyphens, starting with a letter.
fn identifier(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    id.trim_matches('-')
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

impl Rds {
    pub fn new(config: RdsConfig) -> Self {
        Rds { config }
    }

    async fn client(&self) -> Client {
        Client::new(&sdk_config(&self.config.region, self.config.endpoint.as_deref()).await)
    }
}

impl SnapshotProvider for Rds {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            let client = self.client().await;
            let instance = &self.config.instance;
            let id = identifier(&["drp", instance, ctx.set_id]);
            client
                .create_db_snapshot()
                .db_instance_identifier(instance)
                .db_snapshot_identifier(&id)
                .set_tags(Some(snapshot_tags(ctx).map(|(k, v)| tag(k, v)).to_vec()))
                .send()
                .await
                .map_err(|e| api_error("CreateDBSnapshot", &e))?;
            wait_for_snapshot(
                &format!("DB snapshot {id}"),
                "available",
                self.config.wait_timeout.as_duration(),
                Duration::from_secs(5),
                || async {
                    let d = client
                        .describe_db_snapshots()
                        .db_snapshot_identifier(&id)
                        .send()
                        .await
                        .map_err(|e| api_error("DescribeDBSnapshots", &e))?;
                    Ok(match d.db_snapshots().first().and_then(|s| s.status()) {
                        Some("available") => Progress::Done,
                        Some("failed") => Progress::Failed,
                        _ => Progress::Pending,
                    })
                },
            )
            .await?;
            Ok((
                id,
                BTreeMap::from([("instance".to_string(), instance.clone())]),
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let snapshot = member.snapshot_ref()?;
            let client = self.client().await;
            let instance = &self.config.instance;
            let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
            let new_id = identifier(&[instance, "rb", &stamp]);
            client
                .restore_db_instance_from_db_snapshot()
                .db_instance_identifier(&new_id)
                .db_snapshot_identifier(snapshot)
                .tags(tag("drp:change", ctx.change))
                .send()
                .await
                .map_err(|e| api_error("RestoreDBInstanceFromDBSnapshot", &e))?;
            let what = format!("instance {new_id} not available");
            let ep = wait_until(
                &what,
                self.config.wait_timeout.as_duration(),
                Duration::from_secs(5),
                || async {
                    let d = client
                        .describe_db_instances()
                        .db_instance_identifier(&new_id)
                        .send()
                        .await
                        .map_err(|e| api_error("DescribeDBInstances", &e))?;
                    Ok(d.db_instances()
                        .first()
                        .filter(|i| i.db_instance_status() == Some("available"))
                        .map(|i| {
                            i.endpoint()
                                .map(|e| {
                                    format!(
                                        "{}:{}",
                                        e.address().unwrap_or("?"),
                                        e.port().unwrap_or(0)
                                    )
                                })
                                .unwrap_or_else(|| "(no endpoint yet)".into())
                        }))
                },
            )
            .await?;
            Ok(format!(
                "instance {new_id} restored from {snapshot}: switch the application to {ep}; {instance} is left as it was"
            ))
        })
    }

    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(delete_snapshot(
            member,
            "DeleteDBSnapshot",
            move |id| async move {
                let client = self.client().await;
                client
                    .delete_db_snapshot()
                    .db_snapshot_identifier(id)
                    .send()
                    .await
            },
        ))
    }

    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let instance = &self.config.instance;
            let expected = identifier(&["drp", instance, ctx.set_id]);
            if reference == expected {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned(format!(
                    "this set's DB snapshot of {instance} is `{expected}`"
                )))
            }
        })
    }
}
