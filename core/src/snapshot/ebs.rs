//! EBS volumes through the EC2 API: CreateSnapshot tagged with the host,
//! change and reason, waited until completed. Rollback creates a volume from
//! the snapshot in the volume's zone and, when the volume is attached, swaps
//! it in at the same device. A root volume can only be swapped while its
//! instance is stopped: drp refuses otherwise and says so.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, SnapshotState, Tag, TagSpecification, VolumeState};
use futures::future::BoxFuture;

use super::aws::{
    Progress, api_error, delete_snapshot, sdk_config, snapshot_tags, wait_for_snapshot, wait_until,
};
use super::{Created, EbsConfig, Member, SnapContext, SnapshotError, SnapshotProvider};

pub struct Ebs {
    config: EbsConfig,
}

impl Ebs {
    pub fn new(config: EbsConfig) -> Self {
        Ebs { config }
    }

    async fn client(&self) -> Client {
        Client::new(&sdk_config(&self.config.region, self.config.endpoint.as_deref()).await)
    }

    async fn wait_volume(
        &self,
        client: &Client,
        id: &str,
        want: VolumeState,
    ) -> Result<aws_sdk_ec2::types::Volume, SnapshotError> {
        let what = format!("volume {id} is not {}", want.as_str());
        wait_until(
            &what,
            self.config.wait_timeout.as_duration(),
            Duration::from_secs(2),
            || async {
                let out = client
                    .describe_volumes()
                    .volume_ids(id)
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeVolumes", &e))?;
                Ok(out
                    .volumes()
                    .first()
                    .filter(|v| v.state() == Some(&want))
                    .cloned())
            },
        )
        .await
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

impl SnapshotProvider for Ebs {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            let client = self.client().await;
            let volume = &self.config.volume_id;
            let tags = snapshot_tags(ctx)
                .into_iter()
                .chain([("drp:set", ctx.set_id)])
                .fold(
                    TagSpecification::builder().resource_type(ResourceType::Snapshot),
                    |b, (k, v)| b.tags(tag(k, v)),
                )
                .build();
            let out = client
                .create_snapshot()
                .volume_id(volume)
                .description(format!(
                    "drp {} before change {}: {}",
                    ctx.policy.host, ctx.change, ctx.reason
                ))
                .tag_specifications(tags)
                .send()
                .await
                .map_err(|e| api_error("CreateSnapshot", &e))?;
            let id = out
                .snapshot_id()
                .ok_or(SnapshotError::NoId {
                    op: "CreateSnapshot",
                })?
                .to_string();
            wait_for_snapshot(
                &format!("snapshot {id} of {volume}"),
                "completed",
                self.config.wait_timeout.as_duration(),
                Duration::from_secs(2),
                || async {
                    let d = client
                        .describe_snapshots()
                        .snapshot_ids(&id)
                        .send()
                        .await
                        .map_err(|e| api_error("DescribeSnapshots", &e))?;
                    Ok(match d.snapshots().first().and_then(|s| s.state()) {
                        Some(SnapshotState::Completed) => Progress::Done,
                        Some(SnapshotState::Error) => Progress::Failed,
                        _ => Progress::Pending,
                    })
                },
            )
            .await?;
            Ok((
                id,
                BTreeMap::from([("volume_id".to_string(), volume.clone())]),
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let snapshot = member.snapshot_ref()?;
            let client = self.client().await;
            let old_id = &self.config.volume_id;
            let old = client
                .describe_volumes()
                .volume_ids(old_id)
                .send()
                .await
                .map_err(|e| api_error("DescribeVolumes", &e))?;
            let old = old
                .volumes()
                .first()
                .ok_or_else(|| SnapshotError::NotFound(format!("volume {old_id} not found")))?
                .clone();
            let zone = old.availability_zone().unwrap_or_default().to_string();
            let attachment = old.attachments().first().cloned();
            // Refuse a running instance's root volume before changing anything.
            if let Some(a) = &attachment {
                let instance = a.instance_id().unwrap_or_default();
                let d = client
                    .describe_instances()
                    .instance_ids(instance)
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeInstances", &e))?;
                if let Some(i) = d.reservations().first().and_then(|r| r.instances().first()) {
                    let root = i.root_device_name() == a.device();
                    let running = i
                        .state()
                        .and_then(|s| s.name())
                        .is_some_and(|n| n.as_str() != "stopped");
                    if root && running {
                        return Err(SnapshotError::Refused(format!(
                            "{old_id} is the root volume of running instance {instance}: stop the instance, roll back again, then start it"
                        )));
                    }
                }
            }
            let created = client
                .create_volume()
                .snapshot_id(snapshot)
                .availability_zone(&zone)
                .set_volume_type(old.volume_type().cloned())
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Volume)
                        .tags(tag("drp:restored-from", snapshot))
                        .tags(tag("drp:replaces", old_id))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| api_error("CreateVolume", &e))?;
            let new_id = created
                .volume_id()
                .ok_or(SnapshotError::NoId { op: "CreateVolume" })?
                .to_string();
            self.wait_volume(&client, &new_id, VolumeState::Available)
                .await?;
            let Some(a) = attachment else {
                return Ok(format!(
                    "volume {new_id} created from {snapshot} in {zone}; {old_id} was not attached and is kept"
                ));
            };
            let instance = a.instance_id().unwrap_or_default().to_string();
            let device = a.device().unwrap_or_default().to_string();
            client
                .detach_volume()
                .volume_id(old_id)
                .instance_id(&instance)
                .send()
                .await
                .map_err(|e| api_error("DetachVolume", &e))?;
            self.wait_volume(&client, old_id, VolumeState::Available)
                .await?;
            client
                .attach_volume()
                .volume_id(&new_id)
                .instance_id(&instance)
                .device(&device)
                .send()
                .await
                .map_err(|e| api_error("AttachVolume", &e))?;
            self.wait_volume(&client, &new_id, VolumeState::InUse)
                .await?;
            Ok(format!(
                "volume {new_id} (from {snapshot}) attached to {instance} at {device} in place of {old_id}, which is kept detached; \
                 update `volume_id` in the policy to {new_id}"
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
            "DeleteSnapshot",
            move |id| async move {
                let client = self.client().await;
                client.delete_snapshot().snapshot_id(id).send().await
            },
        ))
    }

    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let volume = &self.config.volume_id;
            let d = self
                .client()
                .await
                .describe_snapshots()
                .snapshot_ids(reference)
                .send()
                .await
                .map_err(|e| api_error("DescribeSnapshots", &e))?;
            let Some(snap) = d.snapshots().first() else {
                return Err(SnapshotError::NotFound("no such snapshot".into()));
            };
            let tagged = |k: &str, v: &str| {
                snap.tags()
                    .iter()
                    .any(|t| t.key() == Some(k) && t.value() == Some(v))
            };
            if snap.volume_id() == Some(volume.as_str())
                && tagged("drp:set", ctx.set_id)
                && tagged("drp:host", &ctx.policy.host)
            {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned(format!(
                    "it is not a snapshot of {volume} tagged with this set and host"
                )))
            }
        })
    }
}
