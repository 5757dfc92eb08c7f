//! Moves a DNS name from one address to another: a compare-and-swap at the
//! zone's provider (the record must hold exactly `from`; it then holds
//! `to`), read back from the provider, then awaited on every server that
//! answers for the zone.
//!
//! A record already holding `to` is left alone (a retry of a switch that
//! went through). Every refusal says what the record holds and why.
//!
//! In a drill with `drill.records`, the runbook hands the switch its drill
//! record in place of the production name ([`DnsSwitch::stands_in_for`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use drp_core::config::HumanDuration;
use drp_core::config::units::format_duration;
use futures::future::BoxFuture;
use hickory_proto::rr::Name;
use serde::Deserialize;

use super::dns::{self, Family, ProviderConfig, Record, Server, Swap, cloudflare, rfc2136, shown};
use super::{Action, ActionError, Context};
use drp_core::config::SecretRef;

/// `kind: dns_switch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDnsSwitch")]
pub struct DnsSwitch {
    pub provider: Box<ProviderConfig>,
    pub record: Record,
    pub from: IpAddr,
    pub to: IpAddr,
    pub ttl: u32,
    /// `None`: the zone's name servers.
    pub verify_servers: Option<Vec<Server>>,
    pub verify_timeout: Duration,
    /// In a drill: the production name whose drill record `record` is
    /// (the production name itself is left alone). Never written in a
    /// runbook.
    pub stands_in_for: Option<Name>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ProviderKind {
    Rfc2136,
    Route53,
    Cloudflare,
}

/// The step as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsSwitch {
    provider: ProviderKind,
    zone: String,
    name: String,
    #[serde(rename = "type", default)]
    family: Family,
    from: IpAddr,
    to: IpAddr,
    ttl: Option<HumanDuration>,
    verify: Option<RawVerify>,
    /// `rfc2136`: the zone's primary server.
    server: Option<String>,
    /// `rfc2136`: the key that signs the update.
    tsig: Option<rfc2136::Tsig>,
    /// `route53`: the hosted zone's id (found by the zone's name otherwise).
    hosted_zone_id: Option<String>,
    /// `route53`: the API's region.
    region: Option<String>,
    /// `route53`: another API endpoint.
    endpoint: Option<String>,
    /// `cloudflare`: the zone's id (found by the zone's name otherwise).
    zone_id: Option<String>,
    /// `cloudflare`: the API's base URL.
    api: Option<String>,
    /// `cloudflare`: the API token.
    token: Option<SecretRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    servers: Option<Vec<String>>,
    timeout: Option<HumanDuration>,
}

impl TryFrom<RawDnsSwitch> for DnsSwitch {
    type Error = String;

    fn try_from(raw: RawDnsSwitch) -> Result<Self, String> {
        let zone = Name::from_ascii(raw.zone.trim_end_matches('.').to_string() + ".")
            .map_err(|e| format!("`zone`: `{}` is not a domain name: {e}", raw.zone))?;
        let name = absolute_name(&raw.name, &zone)?;
        if !zone.zone_of(&name) {
            return Err(format!("`name`: {name} is not within zone {zone}"));
        }
        for (key, ip) in [("from", raw.from), ("to", raw.to)] {
            if !raw.family.fits(ip) {
                return Err(format!(
                    "`{key}`: {ip} is not an address for a {} record{}",
                    raw.family,
                    if raw.family == Family::A {
                        " (write `type: AAAA` for IPv6)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if raw.from == raw.to {
            return Err(format!("`from` and `to` are both {}", raw.from));
        }
        let ttl = raw
            .ttl
            .map(|t| t.as_duration())
            .unwrap_or(Duration::from_secs(60));
        if ttl.subsec_nanos() != 0 || ttl.as_secs() > i32::MAX as u64 {
            return Err("`ttl` is a whole number of seconds".into());
        }
        // Each provider's own keys, refused under the other.
        let (provider_name, foreign) = match raw.provider {
            ProviderKind::Rfc2136 => (
                "rfc2136",
                [
                    ("hosted_zone_id", raw.hosted_zone_id.is_some()),
                    ("region", raw.region.is_some()),
                    ("endpoint", raw.endpoint.is_some()),
                    ("zone_id", raw.zone_id.is_some()),
                    ("api", raw.api.is_some()),
                    ("token", raw.token.is_some()),
                ]
                .to_vec(),
            ),
            ProviderKind::Route53 => (
                "route53",
                [
                    ("server", raw.server.is_some()),
                    ("tsig", raw.tsig.is_some()),
                    ("zone_id", raw.zone_id.is_some()),
                    ("api", raw.api.is_some()),
                    ("token", raw.token.is_some()),
                ]
                .to_vec(),
            ),
            ProviderKind::Cloudflare => (
                "cloudflare",
                [
                    ("server", raw.server.is_some()),
                    ("tsig", raw.tsig.is_some()),
                    ("hosted_zone_id", raw.hosted_zone_id.is_some()),
                    ("region", raw.region.is_some()),
                    ("endpoint", raw.endpoint.is_some()),
                ]
                .to_vec(),
            ),
        };
        if let Some((key, _)) = foreign.iter().find(|(_, given)| *given) {
            return Err(format!(
                "`{key}` is not a setting of provider {provider_name}"
            ));
        }
        let provider = match raw.provider {
            ProviderKind::Rfc2136 => {
                let server = raw.server.ok_or(
                    "`server`: provider rfc2136 needs the zone's primary server, `ip:port`",
                )?;
                let tsig = raw.tsig.ok_or(
                    "`tsig`: provider rfc2136 signs its updates: give `{name: …, secret: {file: …}}`",
                )?;
                Name::from_ascii(&tsig.name)
                    .map_err(|e| format!("`tsig.name`: `{}` is not a key name: {e}", tsig.name))?;
                ProviderConfig::Rfc2136(rfc2136::Config {
                    server: Server::parse(&server).map_err(|e| format!("`server`: {e}"))?,
                    tsig,
                })
            }
            ProviderKind::Route53 => route53(&raw)?,
            ProviderKind::Cloudflare => {
                let token = raw.token.clone().ok_or(
                    "`token`: provider cloudflare needs an API token with DNS Write on the zone: give `{env: CF_API_TOKEN}` or `{file: …}`",
                )?;
                let api = raw
                    .api
                    .clone()
                    .unwrap_or_else(|| cloudflare::DEFAULT_API.to_string());
                match reqwest::Url::parse(&api) {
                    Ok(url) if matches!(url.scheme(), "https" | "http") => {}
                    _ => return Err(format!("`api`: `{api}` is not an http(s) URL")),
                }
                ProviderConfig::Cloudflare(cloudflare::Config {
                    zone_id: raw.zone_id.clone(),
                    api,
                    token,
                })
            }
        };
        let verify = raw.verify.unwrap_or(RawVerify {
            servers: None,
            timeout: None,
        });
        let verify_servers = match verify.servers {
            None => None,
            Some(list) if list.is_empty() => {
                return Err("`verify.servers`: list at least one server, or leave it out to check the zone's name servers".into());
            }
            Some(list) => Some(
                list.iter()
                    .map(|s| Server::parse(s).map_err(|e| format!("`verify.servers`: {e}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(DnsSwitch {
            provider: Box::new(provider),
            record: Record {
                zone,
                name,
                family: raw.family,
            },
            from: raw.from,
            to: raw.to,
            ttl: ttl.as_secs() as u32,
            verify_servers,
            verify_timeout: verify
                .timeout
                .map(|t| t.as_duration())
                // Within a step's default timeout (60 s).
                .unwrap_or(Duration::from_secs(45)),
            stands_in_for: None,
        })
    }
}

/// `provider: route53`, when drp is built with AWS support.
#[cfg(feature = "aws")]
fn route53(raw: &RawDnsSwitch) -> Result<ProviderConfig, String> {
    Ok(ProviderConfig::Route53(super::dns::route53::Config {
        hosted_zone_id: raw.hosted_zone_id.clone(),
        region: raw.region.clone(),
        endpoint: raw.endpoint.clone(),
    }))
}

#[cfg(not(feature = "aws"))]
fn route53(_: &RawDnsSwitch) -> Result<ProviderConfig, String> {
    Err("provider route53: this drp was built without AWS support (the `aws` feature)".into())
}

/// `name` made absolute: `@` is the zone itself; a name ending in a dot, or
/// in the zone's name, is taken as written; any other is relative to the
/// zone (`www`).
fn absolute_name(name: &str, zone: &Name) -> Result<Name, String> {
    let bad = |e: &dyn std::fmt::Display| format!("`name`: `{name}` is not a domain name: {e}");
    if name == "@" {
        return Ok(zone.clone());
    }
    let zone_text = zone.to_ascii();
    let zone_text = zone_text.trim_end_matches('.').to_ascii_lowercase();
    let lower = name.to_ascii_lowercase();
    if name.ends_with('.') {
        Name::from_ascii(name).map_err(|e| bad(&e))
    } else if lower == zone_text || lower.ends_with(&format!(".{zone_text}")) {
        Name::from_ascii(format!("{name}.")).map_err(|e| bad(&e))
    } else {
        Name::from_ascii(name)
            .and_then(|n| n.append_domain(zone))
            .map_err(|e| bad(&e))
    }
}

impl DnsSwitch {
    async fn switch(&self, ctx: &Context) -> Result<String, ActionError> {
        let provider = self
            .provider
            .open(&ctx.policy.base_dir, &self.record.zone)
            .await?;
        let record = &self.record;
        let (from, to) = (self.from, self.to);
        let now = provider.current(record).await?;
        let already = now == [to];
        if !already {
            match provider.swap(record, from, to, self.ttl).await? {
                Swap::Done => {}
                Swap::Mismatch(how) => {
                    let held = provider.current(record).await?;
                    return Err(ActionError::failed(format!(
                        "{record} holds {} on {}, not {from}: the switch to {to} was refused ({how}); nothing was changed",
                        shown(&held),
                        provider.describe()
                    )));
                }
            }
            let after = provider.current(record).await?;
            if after != [to] {
                return Err(ActionError::failed(format!(
                    "{} accepted the update of {record} from {from} to {to}, yet answers {} rather than {to} alone",
                    provider.describe(),
                    shown(&after)
                )));
            }
        }
        let changed = if already {
            format!("{record} already points at {to} (from {from}: nothing to change)")
        } else {
            format!("{record} {from} → {to} (ttl {}s)", self.ttl)
        };
        if let (None, Some(settled)) = (&self.verify_servers, provider.settled()) {
            return Ok(format!("{changed}, {settled}"));
        }
        let servers = match &self.verify_servers {
            Some(list) => {
                let mut out = Vec::new();
                for s in list {
                    let addr = s.resolve().await?;
                    if !out.contains(&addr) {
                        out.push(addr);
                    }
                }
                out
            }
            None => provider.name_servers(record).await?,
        };
        self.wait_until_answered(&servers, &changed).await?;
        Ok(format!("{changed}, seen on {} server(s)", servers.len()))
    }

    /// Polls every server until each answers exactly `to`, within
    /// `verify.timeout`. `changed` says what was done, for the error.
    async fn wait_until_answered(
        &self,
        servers: &[SocketAddr],
        changed: &str,
    ) -> Result<(), ActionError> {
        let deadline = Instant::now() + self.verify_timeout;
        loop {
            let answers = futures::future::join_all(
                servers
                    .iter()
                    .map(|s| dns::query(*s, &self.record.name, self.record.family)),
            )
            .await;
            let pending: Vec<String> = servers
                .iter()
                .zip(answers)
                .filter_map(|(server, answer)| match answer {
                    Ok(held) if held == [self.to] => None,
                    Ok(held) => Some(format!("{server} answers {}", shown(&held))),
                    Err(e) => Some(e.to_string()),
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ActionError::failed(format!(
                    "{changed}, but after {} not every server answers {}: {}",
                    format_duration(self.verify_timeout),
                    self.to,
                    pending.join("; ")
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
    }
}

impl Action for DnsSwitch {
    fn describe(&self) -> String {
        let drill = self
            .stands_in_for
            .as_ref()
            .map(|p| format!(" (drill record of {p})"))
            .unwrap_or_default();
        format!(
            "switch {}{drill} from {} to {} on {}",
            self.record,
            self.from,
            self.to,
            self.provider.describe()
        )
    }

    fn waits(&self) -> Option<Duration> {
        Some(self.verify_timeout)
    }

    fn destructive(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(self.switch(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DnsSwitch, String> {
        serde_yaml_ng::from_str::<DnsSwitch>(yaml).map_err(|e| e.to_string())
    }

    const BASE: &str = "provider: rfc2136\nserver: 127.0.0.1:5353\nzone: shop.example.\nfrom: 10.0.0.1\nto: 10.0.0.2\ntsig: {name: drp, secret: {file: key}}\n";

    #[test]
    fn names_are_made_absolute_within_the_zone() {
        for (written, full) in [
            ("www", "www.shop.example."),
            ("www.shop.example.", "www.shop.example."),
            ("www.shop.example", "www.shop.example."),
            ("\"@\"", "shop.example."),
            ("a.b", "a.b.shop.example."),
        ] {
            let s = parse(&format!("{BASE}name: {written}\n")).unwrap();
            assert_eq!(s.record.name.to_ascii(), full, "{written}");
            assert_eq!(s.ttl, 60);
            assert_eq!(s.record.family, Family::A);
        }
        let e = parse(&format!("{BASE}name: www.other.example.\n")).unwrap_err();
        assert!(e.contains("not within zone shop.example."), "{e}");
    }

    #[test]
    fn addresses_fit_the_type_and_differ() {
        let e = parse(&format!("{BASE}name: www\ntype: AAAA\n")).unwrap_err();
        assert!(
            e.contains("`from`: 10.0.0.1 is not an address for a AAAA record"),
            "{e}"
        );
        let e = parse(
            &BASE
                .replace("10.0.0.2", "10.0.0.1")
                .replace("zone:", "name: www\nzone:"),
        )
        .unwrap_err();
        assert!(e.contains("both 10.0.0.1"), "{e}");
        let e = parse(
            &BASE
                .replace("10.0.0.2", "10.0.0.256")
                .replace("zone:", "name: www\nzone:"),
        )
        .unwrap_err();
        assert!(e.contains("invalid IP address"), "{e}");
    }

    #[test]
    fn rfc2136_needs_its_server_and_key_and_nothing_unknown() {
        let e = parse("provider: rfc2136\nzone: z.\nname: www\nfrom: 10.0.0.1\nto: 10.0.0.2\ntsig: {name: k, secret: {env: K}}\n").unwrap_err();
        assert!(e.contains("`server`"), "{e}");
        let e = parse("provider: rfc2136\nserver: 127.0.0.1\nzone: z.\nname: www\nfrom: 10.0.0.1\nto: 10.0.0.2\n").unwrap_err();
        assert!(e.contains("`tsig`"), "{e}");
        let e = parse(&format!(
            "{BASE}name: www\nttl: 1m\nverify: {{server: [127.0.0.1]}}\n"
        ))
        .unwrap_err();
        assert!(e.contains("unknown field `server`"), "{e}");
        let e = parse(
            &BASE
                .replace("{file: key}", "hunter2")
                .replace("zone:", "name: www\nzone:"),
        )
        .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let s = parse(&format!("{BASE}name: www\nttl: 5m\nverify: {{servers: [\"127.0.0.1\", \"[::1]:5353\"], timeout: 10s}}\n")).unwrap();
        assert_eq!(s.ttl, 300);
        assert_eq!(
            s.verify_servers.unwrap(),
            vec![
                Server::Addr("127.0.0.1:53".parse().unwrap()),
                Server::Addr("[::1]:5353".parse().unwrap())
            ]
        );
        assert_eq!(s.verify_timeout, Duration::from_secs(10));
    }

    const CLOUDFLARE: &str =
        "provider: cloudflare\nzone: shop.example.\nname: www\nfrom: 10.0.0.1\nto: 10.0.0.2\n";

    #[test]
    fn cloudflare_needs_its_token_and_takes_no_key_of_another_provider() {
        let s = parse(&format!("{CLOUDFLARE}token: {{env: CF_API_TOKEN}}\n")).unwrap();
        assert_eq!(
            *s.provider,
            ProviderConfig::Cloudflare(cloudflare::Config {
                zone_id: None,
                api: "https://api.cloudflare.com/client/v4".into(),
                token: SecretRef::Env("CF_API_TOKEN".into()),
            })
        );
        assert_eq!(s.provider.describe(), "Cloudflare");
        let s = parse(&format!(
            "{CLOUDFLARE}token: {{file: cf}}\nzone_id: 023e105f4ecef8ad9ca31a8372d0c353\napi: http://127.0.0.1:8080/client/v4\n"
        ))
        .unwrap();
        assert_eq!(
            s.provider.describe(),
            "Cloudflare zone 023e105f4ecef8ad9ca31a8372d0c353"
        );
        let e = parse(CLOUDFLARE).unwrap_err();
        assert!(
            e.contains("`token`: provider cloudflare needs an API token"),
            "{e}"
        );
        let e = parse(&format!("{CLOUDFLARE}token: s3cr3t-value\n")).unwrap_err();
        assert!(!e.contains("s3cr3t-value"), "{e}");
        let e = parse(&format!(
            "{CLOUDFLARE}token: {{env: T}}\napi: api.cloudflare.com\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("`api`: `api.cloudflare.com` is not an http(s) URL"),
            "{e}"
        );
        for key in [
            "server: 127.0.0.1",
            "tsig: {name: k, secret: {env: K}}",
            "hosted_zone_id: Z1",
            "region: eu-west-1",
            "endpoint: http://127.0.0.1:5000",
        ] {
            let e = parse(&format!("{CLOUDFLARE}token: {{env: T}}\n{key}\n")).unwrap_err();
            let name = key.split(':').next().unwrap();
            assert!(
                e.contains(&format!("`{name}` is not a setting of provider cloudflare")),
                "{e}"
            );
        }
        for key in ["zone_id: z1", "api: http://127.0.0.1:1", "token: {env: T}"] {
            let e = parse(&format!("{BASE}name: www\n{key}\n")).unwrap_err();
            let name = key.split(':').next().unwrap();
            assert!(
                e.contains(&format!("`{name}` is not a setting of provider rfc2136")),
                "{e}"
            );
        }
    }
}
