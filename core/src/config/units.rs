//! Durations as people write them (`30s`, `5m`, `12h`, `7d`), and
//! durations and sizes formatted for people.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `90s`, `5m`, `1h30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() || t.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "invalid duration `{text}`: give a number and a unit, like 30s, 5m, 12h or 7d"
            ));
        }
        humantime::parse_duration(t)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration `{text}` ({e}): write it like 30s, 5m, 1h30m, 12h or 7d")
            })
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Formats a duration compactly for people: `4m 12s`, `1h 5m`, `850ms`;
/// a century or more (what an unbounded loss is counted as) is `no bound`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 100 * 365 * 86_400 {
        return "no bound".into();
    }
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, mins, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (mins, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    parts.join(" ")
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A rate written like `20MiB/s`, `2.5MB/s` or `100Mbit/s`, in bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid rate `{text}`: write it like 20MiB/s, 500KiB/s, 2.5MB/s or 100Mbit/s");
    let t = text.trim();
    let t = t.strip_suffix("/s").ok_or_else(bad)?;
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => return Err(bad()),
    };
    let rate = number * factor;
    if rate < 1.0 || !rate.is_finite() {
        return Err(format!("rate `{text}` is below one byte per second"));
    }
    Ok(rate as u64)
}

/// Formats a byte count for people: `1.4 GiB`, `312 KiB`, `17 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(
            HumanDuration::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            HumanDuration::parse("1h30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            HumanDuration::parse("7d").unwrap().0,
            Duration::from_secs(7 * 86_400)
        );
        assert!(HumanDuration::parse("30").unwrap_err().contains("unit"));
        assert!(HumanDuration::parse("5 minuts").is_err());
    }

    #[test]
    fn rates_as_people_write_them() {
        assert_eq!(parse_rate("20MiB/s"), Ok(20 << 20));
        assert_eq!(parse_rate("2.5MB/s"), Ok(2_500_000));
        assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
        assert!(parse_rate("20MiB").unwrap_err().contains("20MiB/s"));
        assert!(parse_rate("fast/s").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(252)), "4m 12s");
        assert_eq!(format_duration(Duration::MAX), "no bound");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    }
}
