//! MariaDB's binary logs, as drp ships them: closed files only (the server
//! is made to rotate with `FLUSH BINARY LOGS`), read event by event for the
//! times and GTIDs an inventory shows and a point-in-time restore needs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The four bytes every binary log starts with.
const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
const HEADER: usize = 19;

// Event types (MariaDB's `Log_event_type`).
const STOP_EVENT: u8 = 3;
const ROTATE_EVENT: u8 = 4;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const BINLOG_CHECKPOINT_EVENT: u8 = 161;
const GTID_EVENT: u8 = 162;
const GTID_LIST_EVENT: u8 = 163;

/// Whether `name` can be a binary log's file name (`<base>.<number>`): it
/// becomes part of an object key, so nothing else is accepted.
pub fn valid_name(name: &str) -> bool {
    let Some((base, number)) = name.rsplit_once('.') else {
        return false;
    };
    !base.is_empty()
        && base.len() <= 200
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !base.starts_with('.')
        && number.len() >= 6
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The sequence number of a binary log's file name.
pub fn sequence(name: &str) -> Option<u64> {
    name.rsplit_once('.')?.1.parse().ok()
}

/// What one closed binary log holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogFacts {
    /// The first and last transaction (data events' times, in seconds).
    pub first_event: Option<DateTime<Utc>>,
    pub last_event: Option<DateTime<Utc>>,
    /// When the server closed it (its rotate event): every transaction
    /// committed before this instant is in this file or an earlier one. A
    /// log cut short by a crash has no rotate event: its last event's time.
    pub closed_at: Option<DateTime<Utc>>,
    /// It ends with a rotate or stop event (not cut short by a crash).
    #[serde(default)]
    pub terminated: bool,
    pub first_gtid: Option<String>,
    pub last_gtid: Option<String>,
}

/// One event's header.
#[derive(Debug, Clone, Copy)]
struct Event {
    timestamp: u32,
    kind: u8,
    server_id: u32,
    /// Where it starts in the file.
    offset: usize,
    size: usize,
}

fn events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err("it does not start with a binary log's magic number".into());
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at + HEADER <= bytes.len() {
        let h = &bytes[at..at + HEADER];
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let size = u32_at(9) as usize;
        if size < HEADER || at + size > bytes.len() {
            return Err(format!(
                "an event at offset {at} runs past the end of the file"
            ));
        }
        out.push(Event {
            timestamp: u32_at(0),
            kind: h[4],
            server_id: u32_at(5),
            offset: at,
            size,
        });
        at += size;
    }
    if at != bytes.len() {
        return Err(format!(
            "{} stray bytes after the last event",
            bytes.len() - at
        ));
    }
    Ok(out)
}

fn time(ts: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts as i64, 0)
}

fn is_data(kind: u8) -> bool {
    !matches!(
        kind,
        STOP_EVENT
            | ROTATE_EVENT
            | FORMAT_DESCRIPTION_EVENT
            | BINLOG_CHECKPOINT_EVENT
            | GTID_LIST_EVENT
    )
}

/// A GTID event's `domain-server-sequence`.
fn gtid(bytes: &[u8], e: &Event) -> Option<String> {
    let body = bytes.get(e.offset + HEADER..e.offset + e.size)?;
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    Some(format!("{domain}-{}-{seq}", e.server_id))
}

/// Reads a closed binary log's events.
pub fn facts(bytes: &[u8]) -> Result<BinlogFacts, String> {
    let events = events(bytes)?;
    let data: Vec<&Event> = events.iter().filter(|e| is_data(e.kind)).collect();
    let gtids: Vec<String> = events
        .iter()
        .filter(|e| e.kind == GTID_EVENT)
        .filter_map(|e| gtid(bytes, e))
        .collect();
    Ok(BinlogFacts {
        first_event: data.first().and_then(|e| time(e.timestamp)),
        last_event: data.last().and_then(|e| time(e.timestamp)),
        closed_at: events
            .iter()
            .rev()
            .find(|e| e.kind == ROTATE_EVENT || e.kind == STOP_EVENT)
            .or(events.last())
            .and_then(|e| time(e.timestamp)),
        terminated: events
            .last()
            .is_some_and(|e| e.kind == ROTATE_EVENT || e.kind == STOP_EVENT),
        first_gtid: gtids.first().cloned(),
        last_gtid: gtids.last().cloned(),
    })
}

/// The time of the last data event at or after `from` (a byte position)
/// and strictly before `stop` (the replay's stop, whole seconds): where a
/// replay of these files ends.
pub fn last_event_before(
    files: &[(Vec<u8>, u64)],
    stop: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let mut last = None;
    for (bytes, from) in files {
        for e in events(bytes).ok()? {
            if (e.offset as u64) < *from || !is_data(e.kind) {
                continue;
            }
            let t = time(e.timestamp)?;
            if stop.is_some_and(|s| t >= s) {
                return last;
            }
            last = Some(t);
        }
    }
    last
}

/// Where a logical export's data stands in the binary log: a replay starts
/// here (`mariadb-dump --master-data=2 --gtid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogStart {
    pub file: String,
    pub position: u64,
    /// The server's GTID position then, when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
}

/// Finds the coordinates `mariadb-dump --master-data=2 --gtid` writes as
/// comments near the top of a dump.
pub fn start_in_dump(head: &str) -> Option<BinlogStart> {
    let mut start: Option<BinlogStart> = None;
    let mut gtid = None;
    for line in head.lines() {
        if let Some(rest) = line.split("MASTER_LOG_FILE='").nth(1) {
            let file = rest.split('\'').next()?.to_string();
            let position = rest
                .split("MASTER_LOG_POS=")
                .nth(1)?
                .trim_end_matches(';')
                .trim()
                .parse()
                .ok()?;
            if valid_name(&file) && start.is_none() {
                start = Some(BinlogStart {
                    file,
                    position,
                    gtid: None,
                });
            }
        }
        if let Some(rest) = line.split("gtid_slave_pos='").nth(1)
            && gtid.is_none()
        {
            gtid = rest.split('\'').next().map(str::to_string);
        }
        // The coordinates are comments at the top; table data follows.
        if line.starts_with("CREATE TABLE") || line.starts_with("INSERT INTO") {
            break;
        }
    }
    start.map(|s| BinlogStart {
        gtid: gtid.filter(|g| !g.is_empty()),
        ..s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: u32, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&ts.to_le_bytes());
        e.push(kind);
        e.extend_from_slice(&7u32.to_le_bytes());
        e.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    fn gtid_body(seq: u64, domain: u32) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&domain.to_le_bytes());
        b.push(0);
        b
    }

    #[test]
    fn a_closed_binlog_gives_its_times_and_gtids() {
        let mut f = MAGIC.to_vec();
        f.extend(event(100, FORMAT_DESCRIPTION_EVENT, &[0; 10]));
        f.extend(event(101, GTID_EVENT, &gtid_body(5, 0)));
        f.extend(event(101, 2, b"insert"));
        f.extend(event(105, GTID_EVENT, &gtid_body(6, 0)));
        f.extend(event(105, 2, b"insert"));
        f.extend(event(109, ROTATE_EVENT, b"next"));
        let facts = facts(&f).unwrap();
        assert_eq!(facts.first_event, DateTime::from_timestamp(101, 0));
        assert_eq!(facts.last_event, DateTime::from_timestamp(105, 0));
        assert_eq!(facts.closed_at, DateTime::from_timestamp(109, 0));
        assert_eq!(facts.first_gtid.as_deref(), Some("0-7-5"));
        assert_eq!(facts.last_gtid.as_deref(), Some("0-7-6"));
        assert_eq!(
            last_event_before(&[(f.clone(), 0)], DateTime::from_timestamp(105, 0)),
            DateTime::from_timestamp(101, 0)
        );
        let mut cut = f.clone();
        cut.truncate(cut.len() - 3);
        assert!(super::facts(&cut).is_err());
    }

    #[test]
    fn names_and_dump_coordinates() {
        assert!(valid_name("mysql-bin.000012"));
        assert!(!valid_name("../x.000001"));
        assert!(!valid_name("mysql-bin.12"));
        assert_eq!(sequence("mysql-bin.000012"), Some(12));
        let head = "-- MariaDB dump\n--\n-- Position to start replication or point-in-time recovery from\n--\n\n\
                    -- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=342;\n\n\
                    -- SET GLOBAL gtid_slave_pos='0-1-3';\n";
        assert_eq!(
            start_in_dump(head),
            Some(BinlogStart {
                file: "mysql-bin.000002".into(),
                position: 342,
                gtid: Some("0-1-3".into())
            })
        );
    }
}
