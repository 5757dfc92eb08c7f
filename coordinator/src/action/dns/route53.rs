//! A hosted zone of Amazon Route 53, changed through its API.
//!
//! The swap is one `ChangeResourceRecordSets` batch: the deletion of the
//! record set exactly as it stands (`{from}` with its TTL), and the
//! creation of `{to}`. Route 53 applies a batch whole or not at all, and
//! refuses a deletion that does not match the record set exactly, so a
//! record changed between the read and the batch fails the batch and
//! changes nothing. The change is then awaited until Route 53 reports it
//! `INSYNC`: applied on every one of its name servers.
//!
//! Credentials come from the SDK's default chain (environment, profile,
//! instance role), as for the EBS and RDS snapshot providers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use futures::future::BoxFuture;
use hickory_proto::rr::Name;
use serde::Deserialize;

use super::{DnsError, DnsProvider, Family, Record, Swap};
use drp_core::error::error_chain;

/// How long a change may take to reach every Route 53 name server.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// `provider: route53`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The hosted zone's id (`Z…`); found by the zone's name when not given.
    pub hosted_zone_id: Option<String>,
    /// The API's region (Route 53 is global; `us-east-1` by default).
    pub region: Option<String>,
    /// Another API endpoint (a test emulator).
    pub endpoint: Option<String>,
}

pub struct Route53 {
    client: Client,
    zone_id: String,
    endpoint: String,
}

impl Route53 {
    /// The client, and the hosted zone's id (looked up by `zone` when the
    /// configuration does not give it).
    pub async fn open(config: &Config, zone: &Name) -> Result<Route53, DnsError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(
                config.region.clone().unwrap_or_else(|| "us-east-1".into()),
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if let Some(e) = &config.endpoint {
            loader = loader.endpoint_url(e);
        }
        let client = Client::new(&loader.load().await);
        let endpoint = config.endpoint.clone().unwrap_or_else(|| "Route 53".into());
        let zone_id = match &config.hosted_zone_id {
            Some(id) => id.trim_start_matches("/hostedzone/").to_string(),
            None => {
                let found = client
                    .list_hosted_zones_by_name()
                    .dns_name(zone.to_ascii())
                    .send()
                    .await
                    .map_err(|e| api(&endpoint, "ListHostedZonesByName", &e))?;
                let matching: Vec<&str> = found
                    .hosted_zones()
                    .iter()
                    .filter(|z| same_name(z.name(), &zone.to_ascii()))
                    .map(|z| z.id())
                    .collect();
                match matching.as_slice() {
                    [id] => id.trim_start_matches("/hostedzone/").to_string(),
                    [] => {
                        return Err(DnsError::Answer {
                            server: endpoint,
                            what: format!("no hosted zone named {zone}"),
                        });
                    }
                    _ => {
                        return Err(DnsError::Answer {
                            server: endpoint,
                            what: format!(
                                "{} hosted zones are named {zone}: give `hosted_zone_id`",
                                matching.len()
                            ),
                        });
                    }
                }
            }
        };
        Ok(Route53 {
            client,
            zone_id,
            endpoint,
        })
    }

    /// The record set as it stands: its addresses and TTL (`None`: absent).
    async fn read(&self, record: &Record) -> Result<Option<(Vec<IpAddr>, i64)>, DnsError> {
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .start_record_name(record.name.to_ascii())
            .start_record_type(rr_type(record.family))
            .max_items(1)
            .send()
            .await
            .map_err(|e| api(&self.endpoint, "ListResourceRecordSets", &e))?;
        let Some(set) = out.resource_record_sets().first().filter(|s| {
            same_name(s.name(), &record.name.to_ascii()) && *s.r#type() == rr_type(record.family)
        }) else {
            return Ok(None);
        };
        let mut addresses = Vec::new();
        for r in set.resource_records() {
            let ip = r.value().parse::<IpAddr>().map_err(|_| DnsError::Answer {
                server: self.endpoint.clone(),
                what: format!("{record} holds `{}`, not an address", r.value()),
            })?;
            addresses.push(ip);
        }
        addresses.sort();
        Ok(Some((addresses, set.ttl().unwrap_or(300))))
    }

    /// Waits until Route 53 says the change reached every name server.
    async fn in_sync(&self, change: &str) -> Result<(), DnsError> {
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            let out = self
                .client
                .get_change()
                .id(change)
                .send()
                .await
                .map_err(|e| api(&self.endpoint, "GetChange", &e))?;
            if out
                .change_info()
                .is_some_and(|c| *c.status() == ChangeStatus::Insync)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DnsError::Answer {
                    server: self.endpoint.clone(),
                    what: format!(
                        "change {change} is applied but not INSYNC after {}s",
                        SYNC_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

impl DnsProvider for Route53 {
    fn describe(&self) -> String {
        format!("hosted zone {} ({})", self.zone_id, self.endpoint)
    }

    fn current<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move { Ok(self.read(record).await?.map(|(a, _)| a).unwrap_or_default()) })
    }

    fn swap<'a>(
        &'a self,
        record: &'a Record,
        from: IpAddr,
        to: IpAddr,
        ttl: u32,
    ) -> BoxFuture<'a, Result<Swap, DnsError>> {
        Box::pin(async move {
            let (held, old_ttl) = match self.read(record).await? {
                Some(set) => set,
                None => return Ok(Swap::Mismatch("the record set does not exist".into())),
            };
            if held != [from] {
                return Ok(Swap::Mismatch(format!("it holds {}", super::shown(&held))));
            }
            let set = |ip: IpAddr, ttl: i64| {
                ResourceRecordSet::builder()
                    .name(record.name.to_ascii())
                    .r#type(rr_type(record.family))
                    .ttl(ttl)
                    .resource_records(
                        ResourceRecord::builder()
                            .value(ip.to_string())
                            .build()
                            .expect("a value is given"),
                    )
                    .build()
                    .expect("name and type are given")
            };
            let change = |action: ChangeAction, set: ResourceRecordSet| {
                Change::builder()
                    .action(action)
                    .resource_record_set(set)
                    .build()
                    .expect("action and set are given")
            };
            let batch = ChangeBatch::builder()
                .comment("drp dns_switch")
                .changes(change(ChangeAction::Delete, set(from, old_ttl)))
                .changes(change(ChangeAction::Create, set(to, i64::from(ttl))))
                .build()
                .expect("changes are given");
            let sent = self
                .client
                .change_resource_record_sets()
                .hosted_zone_id(&self.zone_id)
                .change_batch(batch)
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    let refused = e
                        .as_service_error()
                        .is_some_and(|s| s.is_invalid_change_batch());
                    if refused {
                        return Ok(Swap::Mismatch(format!(
                            "Route 53 refused the batch: {}",
                            error_chain(&e)
                        )));
                    }
                    return Err(api(&self.endpoint, "ChangeResourceRecordSets", &e));
                }
            };
            if let Some(info) = out.change_info() {
                self.in_sync(info.id()).await?;
            }
            Ok(Swap::Done)
        })
    }

    fn name_servers<'a>(
        &'a self,
        _record: &'a Record,
    ) -> BoxFuture<'a, Result<Vec<SocketAddr>, DnsError>> {
        // INSYNC is Route 53's word that every one of its servers answers
        // the change: nothing more to wait for unless `verify.servers` says.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn settled(&self) -> Option<String> {
        Some("INSYNC on every Route 53 name server".into())
    }
}

fn rr_type(family: Family) -> RrType {
    match family {
        Family::A => RrType::A,
        Family::AAAA => RrType::Aaaa,
    }
}

/// Route 53 names end with a dot and may differ in case.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// An API error with its chain of causes (never the request's credentials).
fn api(endpoint: &str, op: &str, e: &(dyn std::error::Error + 'static)) -> DnsError {
    DnsError::Answer {
        server: endpoint.to_string(),
        what: format!("{op}: {}", error_chain(e)),
    }
}
