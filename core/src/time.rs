//! Times people give: an instant with its offset, or a wall-clock time read
//! in a policy's time zone, refusing times a daylight-saving change skips or
//! repeats.

use crate::Error;

/// An instant as people read it in reports and tables:
/// `2026-11-22 10:57:37 UTC` (to the second; measures keep their precision).
pub fn shown(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// [`shown`] in a time zone: `2026-11-22 11:57:37 CET`.
pub fn shown_in(t: chrono::DateTime<chrono::Utc>, zone: chrono_tz::Tz) -> String {
    if zone == chrono_tz::UTC {
        return shown(t);
    }
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// A time someone gave, as the instant it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GivenTime {
    pub instant: chrono::DateTime<chrono::Utc>,
    /// Written as a wall-clock time (read in a time zone), not with an offset.
    pub local: bool,
}

impl GivenTime {
    /// The instant as given, with its UTC form when it was read as a local time.
    pub fn describe(&self, text: &str) -> String {
        if self.local {
            format!("{text} = {}", self.instant.format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            text.to_string()
        }
    }
}

/// Parses a time someone gave: RFC 3339 with its offset
/// (`2026-11-21T10:00:00Z`, `2026-11-21T15:30:00+05:30`), or
/// `YYYY-MM-DD HH:MM[:SS]` on the wall clock of `zone` (the policy's
/// `timezone`; without a policy, the machine's time zone). A wall-clock time
/// the clock skips (spring) or shows twice (autumn) is refused: it names no
/// single instant.
pub fn parse_time_in(text: &str, zone: Option<chrono_tz::Tz>) -> Result<GivenTime, Error> {
    match zone {
        Some(tz) => parse_in(text, &tz, tz.name()),
        None => parse_in(text, &chrono::Local, "the local time zone"),
    }
}

/// [`parse_time_in`] on the machine's time zone, for commands without a policy.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    parse_time_in(text, None).map(|t| t.instant)
}

fn parse_in<Z: chrono::TimeZone>(
    text: &str,
    zone: &Z,
    zone_name: &str,
) -> Result<GivenTime, Error> {
    use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, Utc};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(GivenTime {
            instant: t.with_timezone(&Utc),
            local: false,
        });
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
    .ok_or_else(|| {
        Error::Usage(format!(
            "invalid time `{text}`: use RFC 3339 (2026-11-21T10:00:00Z) or `2026-11-21 10:00` (in {zone_name})"
        ))
    })?;
    let with_offset =
        |offset: chrono::FixedOffset| format!("{}{}", naive.format("%Y-%m-%dT%H:%M:%S"), offset);
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(GivenTime {
            instant: t.with_timezone(&Utc),
            local: true,
        }),
        LocalResult::Ambiguous(first, second) => Err(Error::Usage(format!(
            "`{text}` happens twice in {zone_name} (the clock is set back that night): \
             give its offset, {} for the first time or {} for the second",
            with_offset(first.offset().fix()),
            with_offset(second.offset().fix())
        ))),
        LocalResult::None => {
            // The first wall-clock minute after the gap, and the offset before it.
            let resumes = (1..=48 * 60)
                .map(|m| naive + chrono::Duration::minutes(m))
                .find_map(|n| zone.from_local_datetime(&n).earliest());
            let what = match resumes {
                Some(after) => {
                    let change = after.with_timezone(&Utc);
                    let before = zone
                        .offset_from_utc_datetime(
                            &(change - chrono::Duration::seconds(1)).naive_utc(),
                        )
                        .fix();
                    format!(
                        "the clock jumps from {} to {} that day",
                        (change.naive_utc() + before).format("%H:%M"),
                        after.naive_local().format("%H:%M")
                    )
                }
                None => "the clock skips it".to_string(),
            };
            Err(Error::Usage(format!(
                "`{text}` does not exist in {zone_name}: {what}; give a time outside the gap, or an RFC 3339 time with its offset"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> Option<chrono_tz::Tz> {
        Some(name.parse().unwrap())
    }

    #[test]
    fn an_offset_given_is_kept_whatever_the_zone() {
        for (text, expected) in [
            ("2026-11-21T15:30:00+05:30", "2026-11-21T10:00:00Z"),
            ("2026-11-21T02:00:00-08:00", "2026-11-21T10:00:00Z"),
            ("2026-11-21T10:00:00Z", "2026-11-21T10:00:00Z"),
        ] {
            let t = parse_time_in(text, zone("Europe/Paris")).unwrap();
            assert_eq!(t.instant, utc(expected), "{text}");
            assert!(!t.local);
            assert_eq!(t.describe(text), text);
        }
    }

    #[test]
    fn a_wall_clock_time_is_read_in_the_policy_zone() {
        for (tz, expected) in [
            ("Europe/Paris", "2026-11-21T08:55:00Z"),
            ("Asia/Kolkata", "2026-11-21T04:25:00Z"),
            ("America/Los_Angeles", "2026-11-21T17:55:00Z"),
            ("UTC", "2026-11-21T09:55:00Z"),
        ] {
            let t = parse_time_in("2026-11-21 09:55", zone(tz)).unwrap();
            assert_eq!(t.instant, utc(expected), "{tz}");
            assert!(t.local);
        }
        // Summer time in Paris is two hours ahead of UTC.
        let t = parse_time_in("2027-07-01T09:55:30", zone("Europe/Paris")).unwrap();
        assert_eq!(t.instant, utc("2027-07-01T07:55:30Z"));
        assert_eq!(
            t.describe("2027-07-01T09:55:30"),
            "2027-07-01T09:55:30 = 2027-07-01T07:55:30Z"
        );
    }

    #[test]
    fn a_time_the_clock_skips_is_refused_naming_the_gap() {
        let err = parse_time_in("2027-03-28 02:30", zone("Europe/Paris"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`2027-03-28 02:30` does not exist in Europe/Paris")
                && err.contains("the clock jumps from 02:00 to 03:00"),
            "{err}"
        );
        // Either side of the gap is fine.
        assert_eq!(
            parse_time_in("2027-03-28 03:00", zone("Europe/Paris"))
                .unwrap()
                .instant,
            utc("2027-03-28T01:00:00Z")
        );
    }

    #[test]
    fn a_time_shown_twice_asks_for_the_offset() {
        let err = parse_time_in("2027-10-31 02:30", zone("Europe/Paris"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("happens twice in Europe/Paris")
                && err.contains("2027-10-31T02:30:00+02:00")
                && err.contains("2027-10-31T02:30:00+01:00"),
            "{err}"
        );
        assert_eq!(
            parse_time_in("2027-10-31T02:30:00+01:00", zone("Europe/Paris"))
                .unwrap()
                .instant,
            utc("2027-10-31T01:30:00Z")
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_forms_accepted() {
        let err = parse_time_in("yesterday", zone("Europe/Paris"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in Europe/Paris"), "{err}");
    }

    #[test]
    fn without_a_policy_the_machine_zone_reads_the_wall_clock() {
        // nextest runs each test in a process of its own, so TZ is ours.
        // SAFETY: no other thread of this test process reads the environment.
        unsafe { std::env::set_var("TZ", "Europe/Paris") };
        assert_eq!(
            parse_time("2026-11-21 09:55").unwrap(),
            utc("2026-11-21T08:55:00Z")
        );
        let err = parse_time("2027-03-28 02:30").unwrap_err().to_string();
        assert!(
            err.contains("does not exist in the local time zone"),
            "{err}"
        );
    }
}
