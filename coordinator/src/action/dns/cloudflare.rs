//! A zone on Cloudflare, changed through its API (v4) with an API token.
//!
//! The swap reads the record's RRset (`GET /zones/{id}/dns_records`, by
//! exact name and type), refuses unless it holds exactly `{from}`, then
//! sends one batch (`POST /zones/{id}/dns_records/batch`): the deletion of
//! each record read, by its id, and the creation of `to` with the step's
//! TTL, DNS only (`proxied: false`). Cloudflare applies a batch in one
//! transaction: if any of its operations fails, none is applied.
//!
//! Cloudflare has no conditional write, so this compare-and-swap has a
//! window. A record *deleted* or *replaced* (deleted and created anew, so
//! under another id) between the read and the batch fails the batch's
//! delete-by-id, and nothing changes. A record *edited in place* (same id,
//! another address) in that window is not caught: the batch deletes it
//! and creates `to` all the same. The window is one API round trip.
//!
//! The token never leaves the `Authorization` header: it is scrubbed from
//! every error text, whatever the API answers.
//!
//! Over 600 lines for its tests: a loopback server that answers as the API
//! documents, and the requests it saw.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use drp_core::config::{Secret, SecretRef};
use drp_core::error::error_chain;
use futures::future::BoxFuture;
use hickory_proto::rr::Name;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DnsError, DnsProvider, Record, Swap, shown};

/// Cloudflare's API, unless `api:` says otherwise.
pub const DEFAULT_API: &str = "https://api.cloudflare.com/client/v4";

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `provider: cloudflare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The zone's id; found by the zone's name when not given.
    pub zone_id: Option<String>,
    /// The API's base URL (`DEFAULT_API`, or a test server).
    pub api: String,
    /// An API token with DNS Write on the zone (and Zone Read to find it
    /// by name).
    pub token: SecretRef,
}

/// One record of the RRset, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Listed {
    id: String,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    content: String,
}

pub struct Cloudflare {
    http: reqwest::Client,
    api: String,
    token: Secret,
    zone_id: String,
}

impl Cloudflare {
    /// The token read (relative to `base`), and the zone's id (looked up
    /// by `zone` when the configuration does not give it).
    pub async fn open(config: &Config, base: &Path, zone: &Name) -> Result<Cloudflare, DnsError> {
        let token = config
            .token
            .resolve(base)
            .map_err(|why| DnsError::ApiToken {
                at: format!("{:?}", config.token),
                why,
            })?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The token goes to the API's own address and nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DnsError::Build(format!("HTTP client: {e}")))?;
        let mut provider = Cloudflare {
            http,
            api: config.api.trim_end_matches('/').to_string(),
            token,
            zone_id: config.zone_id.clone().unwrap_or_default(),
        };
        if config.zone_id.is_none() {
            provider.zone_id = provider.find_zone(zone).await?;
        }
        Ok(provider)
    }

    /// `GET /zones?name=`: the one zone of that name the token sees.
    async fn find_zone(&self, zone: &Name) -> Result<String, DnsError> {
        let name = bare(zone);
        let found = self
            .call(Method::GET, "/zones", &[("name", name.as_str())], None)
            .await?;
        let ids: Vec<&str> = found
            .as_array()
            .into_iter()
            .flatten()
            .filter(|z| {
                z["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            })
            .filter_map(|z| z["id"].as_str())
            .collect();
        match ids.as_slice() {
            [id] => Ok(id.to_string()),
            [] => Err(self.answer(format!(
                "no zone named {name} is visible to this token (give `zone_id`, or a token with Zone Read)"
            ))),
            _ => Err(self.answer(format!(
                "{} zones are named {name}: give `zone_id`",
                ids.len()
            ))),
        }
    }

    /// The records of `record`'s RRset, by exact name and type.
    async fn read(&self, record: &Record) -> Result<Vec<Listed>, DnsError> {
        let name = bare(&record.name);
        let family = record.family.to_string();
        let result = self
            .call(
                Method::GET,
                &format!("/zones/{}/dns_records", self.zone_id),
                &[
                    ("name.exact", name.as_str()),
                    ("type", family.as_str()),
                    ("per_page", "100"),
                ],
                None,
            )
            .await?;
        let listed: Vec<Listed> = serde_json::from_value(result)
            .map_err(|e| self.answer(format!("unreadable list of DNS records: {e}")))?;
        Ok(listed
            .into_iter()
            .filter(|r| r.name.eq_ignore_ascii_case(&name) && r.rtype == family)
            .collect())
    }

    /// The addresses of `listed`, sorted.
    fn addresses(&self, record: &Record, listed: &[Listed]) -> Result<Vec<IpAddr>, DnsError> {
        let mut out = Vec::new();
        for r in listed {
            out.push(r.content.parse::<IpAddr>().map_err(|_| {
                self.answer(format!("{record} holds `{}`, not an address", r.content))
            })?);
        }
        out.sort();
        Ok(out)
    }

    /// One API request; the envelope's `result` when `success` is true,
    /// otherwise the HTTP status and each of `errors[]` in the error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let what = format!("{method} {path}");
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.api))
            .map_err(|e| self.answer(format!("{what}: not a URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.answer(format!("{what}: {}", transport(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.answer(format!("{what}: HTTP {status}: {}", transport(&e))))?;
        let envelope: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() && envelope["success"] == Value::Bool(true) {
            return Ok(envelope["result"].clone());
        }
        Err(self.answer(format!("{what}: {}", refusal(status, &envelope))))
    }

    /// An error of this provider, the token scrubbed from its words.
    fn answer(&self, what: String) -> DnsError {
        let token = self.token.expose();
        let what = if token.is_empty() {
            what
        } else {
            what.replace(token, "***")
        };
        DnsError::Answer {
            server: self.api.clone(),
            what,
        }
    }
}

impl DnsProvider for Cloudflare {
    fn describe(&self) -> String {
        format!("Cloudflare zone {} ({})", self.zone_id, self.api)
    }

    fn current<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let listed = self.read(record).await?;
            self.addresses(record, &listed)
        })
    }

    fn swap<'a>(
        &'a self,
        record: &'a Record,
        from: IpAddr,
        to: IpAddr,
        ttl: u32,
    ) -> BoxFuture<'a, Result<Swap, DnsError>> {
        Box::pin(async move {
            let listed = self.read(record).await?;
            if listed.is_empty() {
                return Ok(Swap::Mismatch("the record does not exist".into()));
            }
            let held = self.addresses(record, &listed)?;
            if held != [from] {
                return Ok(Swap::Mismatch(format!("it holds {}", shown(&held))));
            }
            let batch = json!({
                "deletes": listed.iter().map(|r| json!({"id": r.id})).collect::<Vec<_>>(),
                "posts": [{
                    "name": bare(&record.name),
                    "type": record.family.to_string(),
                    "content": to.to_string(),
                    "ttl": ttl,
                    "proxied": false,
                    "comment": "drp dns_switch",
                }],
            });
            let path = format!("/zones/{}/dns_records/batch", self.zone_id);
            match self.call(Method::POST, &path, &[], Some(batch)).await {
                Ok(_) => Ok(Swap::Done),
                // Nothing of a failed batch is applied. A record gone or
                // replaced since the read is the race the ids catch.
                Err(e) if self.read(record).await.is_ok_and(|now| now != listed) => {
                    Ok(Swap::Mismatch(format!("Cloudflare refused the batch: {e}")))
                }
                Err(e) => Err(e),
            }
        })
    }

    fn name_servers<'a>(
        &'a self,
        _record: &'a Record,
    ) -> BoxFuture<'a, Result<Vec<SocketAddr>, DnsError>> {
        Box::pin(async move {
            let zone = self
                .call(Method::GET, &format!("/zones/{}", self.zone_id), &[], None)
                .await?;
            let names: Vec<&str> = zone["name_servers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Vec::new();
            for ns in &names {
                if let Ok(found) = tokio::net::lookup_host((*ns, 53)).await {
                    out.extend(found.filter(|a| !out.contains(a)).collect::<Vec<_>>());
                }
            }
            if out.is_empty() {
                return Err(self.answer(format!(
                    "the zone's name servers ({}) have no address; list the servers to check under `verify.servers`",
                    if names.is_empty() {
                        "none listed".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            Ok(out)
        })
    }
}

/// A name as Cloudflare writes it: no final dot.
fn bare(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_string()
}

/// Why the API said no: the HTTP status, then each `errors[]` message with
/// its code (or the status alone when the body is not the API's envelope).
fn refusal(status: StatusCode, envelope: &Value) -> String {
    let errors: Vec<String> = envelope["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let message = e["message"].as_str().unwrap_or("(no message)");
            match e["code"].as_i64() {
                Some(code) => format!("{message} (code {code})"),
                None => message.to_string(),
            }
        })
        .collect();
    if errors.is_empty() {
        format!("HTTP {status}, success: false without errors")
    } else {
        format!("HTTP {status}: {}", errors.join("; "))
    }
}

/// A request that got no answer, in words (its URL holds no secret).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
    } else {
        error_chain(e)
    }
}

#[cfg(test)]
mod tests {
    //! Request shape only: a loopback server answers as Cloudflare's API
    //! documents (`{success, errors, result}`) and keeps every request.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::Family;
    use super::*;

    const TOKEN: &str = "cf-T0KEN-3f9a1c77";

    /// One request as the server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        target: String,
        authorization: Option<String>,
        body: Value,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A loopback HTTP server answering each request with `route`'s status
    /// and JSON; its base URL and what it saw.
    async fn server(
        route: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
    ) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let (seen, route) = (log.clone(), Arc::new(route));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, route) = (seen.clone(), route.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let n = stream.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let header = |name: &str| {
                        head.split("\r\n").skip(1).find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                    while buf.len() < end + len {
                        let n = stream.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let mut first = head.split(' ');
                    let request = Seen {
                        method: first.next().unwrap().to_string(),
                        target: first.next().unwrap().to_string(),
                        authorization: header("authorization"),
                        body: serde_json::from_slice(&buf[end..end + len]).unwrap_or(Value::Null),
                    };
                    let (status, answer) = route(&request);
                    seen.lock().unwrap().push(request);
                    let text = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    stream.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{addr}/client/v4"), log)
    }

    fn ok(result: Value) -> (u16, Value) {
        (
            200,
            json!({"success": true, "errors": [], "messages": [], "result": result}),
        )
    }

    fn a(id: &str, content: &str) -> Value {
        json!({"id": id, "name": "www.shop.example", "type": "A", "content": content,
               "ttl": 300, "proxied": false})
    }

    fn record() -> Record {
        Record {
            zone: Name::from_ascii("shop.example.").unwrap(),
            name: Name::from_ascii("www.shop.example.").unwrap(),
            family: Family::A,
        }
    }

    /// The provider against `api`, its token in a file.
    async fn open(
        api: &str,
        zone_id: Option<&str>,
    ) -> (Result<Cloudflare, DnsError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let config = Config {
            zone_id: zone_id.map(String::from),
            api: api.to_string(),
            token: SecretRef::File("token".into()),
        };
        let provider = Cloudflare::open(&config, dir.path(), &record().zone).await;
        (provider, dir)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const LIST: &str =
        "/client/v4/zones/z1/dns_records?name.exact=www.shop.example&type=A&per_page=100";

    #[tokio::test]
    async fn a_switch_reads_by_name_and_type_then_sends_one_batch_deleting_by_id() {
        let switched = Arc::new(AtomicBool::new(false));
        let done = switched.clone();
        let (api, log) = server(move |r| match (r.method.as_str(), r.target.as_str()) {
            ("GET", "/client/v4/zones?name=shop.example") => {
                ok(json!([{"id": "z1", "name": "shop.example"}]))
            }
            ("GET", LIST) if done.load(Ordering::SeqCst) => ok(json!([a("r2", "10.0.0.2")])),
            ("GET", LIST) => ok(json!([a("r1", "10.0.0.1")])),
            ("POST", "/client/v4/zones/z1/dns_records/batch") => {
                done.store(true, Ordering::SeqCst);
                ok(json!({"deletes": [a("r1", "10.0.0.1")], "posts": [a("r2", "10.0.0.2")]}))
            }
            _ => (
                404,
                json!({"success": false, "errors": [{"code": 7003, "message": "no route"}]}),
            ),
        })
        .await;
        let (cf, _dir) = open(&api, None).await;
        let cf = cf.unwrap();
        assert_eq!(cf.current(&record()).await.unwrap(), [ip("10.0.0.1")]);
        let swap = cf
            .swap(&record(), ip("10.0.0.1"), ip("10.0.0.2"), 120)
            .await;
        assert_eq!(swap.unwrap(), Swap::Done);
        assert!(switched.load(Ordering::SeqCst));
        assert_eq!(cf.current(&record()).await.unwrap(), [ip("10.0.0.2")]);

        let seen = log.lock().unwrap().clone();
        let calls: Vec<String> = seen
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect();
        assert_eq!(
            calls,
            [
                "GET /client/v4/zones?name=shop.example".to_string(),
                format!("GET {LIST}"),
                format!("GET {LIST}"),
                "POST /client/v4/zones/z1/dns_records/batch".into(),
                format!("GET {LIST}"),
            ]
        );
        for r in &seen {
            assert_eq!(
                r.authorization.as_deref(),
                Some(format!("Bearer {TOKEN}").as_str())
            );
        }
        assert_eq!(
            seen[3].body,
            json!({
                "deletes": [{"id": "r1"}],
                "posts": [{"name": "www.shop.example", "type": "A", "content": "10.0.0.2",
                           "ttl": 120, "proxied": false, "comment": "drp dns_switch"}],
            })
        );
    }

    #[tokio::test]
    async fn a_record_holding_anything_but_from_is_refused_and_no_batch_is_sent() {
        for (held, said) in [
            (json!([a("r1", "10.0.0.9")]), "it holds 10.0.0.9"),
            (
                json!([a("r1", "10.0.0.1"), a("r3", "10.0.0.3")]),
                "it holds 10.0.0.1, 10.0.0.3",
            ),
            (json!([]), "the record does not exist"),
        ] {
            let (api, log) = server(move |r| match r.method.as_str() {
                "GET" => ok(held.clone()),
                _ => ok(json!({})),
            })
            .await;
            let (cf, _dir) = open(&api, Some("z1")).await;
            let swap = cf
                .unwrap()
                .swap(&record(), ip("10.0.0.1"), ip("10.0.0.2"), 60)
                .await;
            assert_eq!(swap.unwrap(), Swap::Mismatch(said.into()));
            let seen = log.lock().unwrap().clone();
            assert!(seen.iter().all(|r| r.method == "GET"), "{seen:?}");
            assert_eq!(seen.len(), 1, "{seen:?}");
        }
    }

    #[tokio::test]
    async fn an_api_error_is_named_with_its_status_and_the_token_never_shows() {
        // The server echoes the Authorization header into its message.
        let (api, _log) = server(|r| {
            let echo = format!(
                "invalid request headers: {}",
                r.authorization.clone().unwrap_or_default()
            );
            match r.method.as_str() {
                "GET" if r.target.contains("/dns_records") => ok(json!([a("r1", "10.0.0.1")])),
                _ => (
                    400,
                    json!({"success": false, "result": null, "messages": [],
                                  "errors": [{"code": 9109, "message": echo}]}),
                ),
            }
        })
        .await;
        let (cf, _dir) = open(&api, None).await;
        let e = cf.err().expect("the zone lookup fails").to_string();
        assert!(
            e.contains("GET /zones: HTTP 400 Bad Request: invalid request headers"),
            "{e}"
        );
        assert!(e.contains("(code 9109)"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");

        let (cf, _dir) = open(&api, Some("z1")).await;
        let e = cf
            .unwrap()
            .swap(&record(), ip("10.0.0.1"), ip("10.0.0.2"), 60)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{api}: POST /zones/z1/dns_records/batch: HTTP 400 Bad Request: invalid request headers: Bearer ***")),
            "{e}"
        );
        assert!(!e.contains(TOKEN), "{e}");

        // A body that is not the API's envelope: the status alone.
        let (api, _log) = server(|_| (502, Value::Null)).await;
        let (cf, _dir) = open(&api, Some("z1")).await;
        let e = cf
            .unwrap()
            .current(&record())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HTTP 502 Bad Gateway, success: false without errors"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_batch_refused_because_the_record_was_replaced_is_a_mismatch() {
        // Read as r1 = from; by the batch, r1 was deleted and r4 created.
        let replaced = Arc::new(AtomicBool::new(false));
        let gone = replaced.clone();
        let (api, log) = server(move |r| match r.method.as_str() {
            "GET" if gone.load(Ordering::SeqCst) => ok(json!([a("r4", "10.0.0.9")])),
            "GET" => ok(json!([a("r1", "10.0.0.1")])),
            _ => {
                gone.store(true, Ordering::SeqCst);
                (400, json!({"success": false, "errors": [{"code": 81044, "message": "Record does not exist."}]}))
            }
        })
        .await;
        let (cf, _dir) = open(&api, Some("z1")).await;
        let swap = cf
            .unwrap()
            .swap(&record(), ip("10.0.0.1"), ip("10.0.0.2"), 60)
            .await
            .unwrap();
        let Swap::Mismatch(how) = swap else {
            panic!("{swap:?}")
        };
        assert!(how.starts_with("Cloudflare refused the batch: "), "{how}");
        assert!(how.contains("Record does not exist. (code 81044)"), "{how}");
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_read_is_named_by_its_reference() {
        let config = Config {
            zone_id: Some("z1".into()),
            api: DEFAULT_API.into(),
            token: SecretRef::File("absent-token".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        let e = Cloudflare::open(&config, dir.path(), &record().zone)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("Cloudflare API token (file:absent-token): cannot read secret file"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_zones_name_servers_come_from_the_zone() {
        let (api, log) = server(|r| match r.target.as_str() {
            "/client/v4/zones/z1" => ok(json!({"id": "z1", "name": "shop.example",
                                               "name_servers": ["localhost"]})),
            _ => (404, Value::Null),
        })
        .await;
        let (cf, _dir) = open(&api, Some("z1")).await;
        let servers = cf.unwrap().name_servers(&record()).await.unwrap();
        assert!(!servers.is_empty());
        assert!(
            servers
                .iter()
                .all(|s| s.port() == 53 && s.ip().is_loopback()),
            "{servers:?}"
        );
        assert_eq!(log.lock().unwrap()[0].method, "GET");
    }
}
