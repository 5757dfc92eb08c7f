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
    /// Written without an offset (a wall-clock or relative time): its
    /// description adds the instant it was read as.
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

/// Parses a time someone gave, as people type it at 3 a.m.:
/// - RFC 3339 with its offset (`2026-11-21T10:00:00Z`, `2026-11-21T15:30:00+05:30`);
/// - `YYYY-MM-DD HH:MM[:SS]` on the wall clock of `zone` (the policy's
///   `timezone`; without a policy, the machine's time zone), optionally
///   followed by a zone: `UTC`, an offset (`+0100`, `-05:00`), a zone name
///   (`Europe/Paris`) or the abbreviation `zone` shows then (`CET`, `CEST`);
/// - what `date` prints: `Mon Dec  7 05:22:55 UTC 2026`;
/// - a time relative to now: `10 minutes ago`, `2h ago`, `now`.
///
/// A wall-clock time the clock skips (spring) or shows twice (autumn) is
/// refused: it names no single instant.
pub fn parse_time_in(text: &str, zone: Option<chrono_tz::Tz>) -> Result<GivenTime, Error> {
    parse_at(text, zone, chrono::Utc::now())
}

/// [`parse_time_in`] on the machine's time zone, for commands without a policy.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    parse_time_in(text, None).map(|t| t.instant)
}

const WALL_CLOCK: [&str; 5] = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%a %b %d %H:%M:%S %Y",
];

fn parse_at(
    text: &str,
    zone: Option<chrono_tz::Tz>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<GivenTime, Error> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(GivenTime {
            instant: t.with_timezone(&Utc),
            local: false,
        });
    }
    if let Some(ago) = relative(text)? {
        return Ok(GivenTime {
            instant: now - ago,
            local: true,
        });
    }
    let zone_name = zone.map_or("the local time zone", |z| z.name());
    let invalid = || {
        Error::Usage(format!(
            "invalid time `{text}`: use `2026-11-21 10:00` (in {zone_name}), `2026-11-21 10:00 UTC`, \
             RFC 3339 (2026-11-21T10:00:00Z), what `date` prints, or `10 minutes ago`"
        ))
    };
    // `date`'s own form names its zone between the time and the year.
    let words: Vec<&str> = text.split_whitespace().collect();
    let (clock, named) = match words.as_slice() {
        [day, month, date, time, named, year] if day.len() == 3 => {
            (format!("{day} {month} {date} {time} {year}"), Some(*named))
        }
        [date, time, named] => (format!("{date} {time}"), Some(*named)),
        _ => (words.join(" "), None),
    };
    let naive = WALL_CLOCK
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(&clock, fmt).ok())
        .ok_or_else(invalid)?;
    let Some(named) = named else {
        return match zone {
            Some(tz) => resolve(text, naive, &tz, tz.name()),
            None => resolve(text, naive, &chrono::Local, zone_name),
        };
    };
    if ["UTC", "GMT", "Z"]
        .iter()
        .any(|u| u.eq_ignore_ascii_case(named))
    {
        return resolve(text, naive, &Utc, "UTC").map(|t| GivenTime { local: false, ..t });
    }
    if let Some(offset) = offset(named) {
        return resolve(text, naive, &offset, named).map(|t| GivenTime { local: false, ..t });
    }
    // An abbreviation: only the one the policy's zone shows at that time,
    // which also tells the two copies of an autumn hour apart.
    if let Some(tz) = zone {
        use chrono::TimeZone;
        let shows = |t: &DateTime<chrono_tz::Tz>| t.format("%Z").to_string() == named;
        let found: Vec<_> = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => vec![t],
            chrono::LocalResult::Ambiguous(a, b) => vec![a, b],
            chrono::LocalResult::None => vec![],
        };
        if let [t] = found.iter().filter(|t| shows(t)).collect::<Vec<_>>()[..] {
            return Ok(GivenTime {
                instant: t.with_timezone(&Utc),
                local: true,
            });
        }
    }
    if let Ok(tz) = named.parse::<chrono_tz::Tz>() {
        return resolve(text, naive, &tz, tz.name());
    }
    Err(Error::Usage(format!(
        "invalid time `{text}`: `{named}` is not {zone_name}'s abbreviation at that time; \
         give an offset (+01:00), a zone name (Europe/Paris) or UTC"
    )))
}

/// `now`, or `<duration> ago` (`10 minutes ago`, `1h 30m ago`).
fn relative(text: &str) -> Result<Option<chrono::Duration>, Error> {
    if text.eq_ignore_ascii_case("now") {
        return Ok(Some(chrono::Duration::zero()));
    }
    let Some(span) = text.strip_suffix(" ago") else {
        return Ok(None);
    };
    humantime::parse_duration(span.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(Some)
        .ok_or_else(|| {
            Error::Usage(format!(
                "invalid time `{text}`: write how long ago as `10 minutes ago`, `2h ago` or `1h 30m ago`"
            ))
        })
}

/// `+0100`, `+01:00`, `-05`.
fn offset(word: &str) -> Option<chrono::FixedOffset> {
    let sign = match word.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = word[1..].chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// The instant a wall-clock time names in `zone`.
fn resolve<Z: chrono::TimeZone>(
    text: &str,
    naive: chrono::NaiveDateTime,
    zone: &Z,
    zone_name: &str,
) -> Result<GivenTime, Error> {
    use chrono::{LocalResult, Offset, Utc};
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
    fn what_date_prints_is_read_with_its_zone() {
        let now = utc("2026-12-07T12:00:00Z");
        let at = |text: &str| parse_at(text, zone("Europe/Paris"), now).unwrap().instant;
        assert_eq!(at("2026-12-07 05:22:55 UTC"), utc("2026-12-07T05:22:55Z"));
        assert_eq!(
            at("Mon Dec  7 05:22:55 UTC 2026"),
            utc("2026-12-07T05:22:55Z")
        );
        assert_eq!(
            at("Mon Dec  7 06:22:55 CET 2026"),
            utc("2026-12-07T05:22:55Z")
        );
        assert_eq!(at("2026-12-07 05:22:55 +0100"), utc("2026-12-07T04:22:55Z"));
        assert_eq!(
            at("2026-12-07 05:22:55 -05:00"),
            utc("2026-12-07T10:22:55Z")
        );
        assert_eq!(
            at("2026-12-07 05:22 Asia/Kolkata"),
            utc("2026-12-06T23:52:00Z")
        );
        // drp's own tables print times this way: they read back as the same instant.
        let shown = shown_in(utc("2026-07-01T10:00:00Z"), "Europe/Paris".parse().unwrap());
        assert_eq!(at(&shown), utc("2026-07-01T10:00:00Z"));
        // The abbreviation tells apart the two copies of the autumn hour.
        assert_eq!(at("2027-10-31 02:30 CEST"), utc("2027-10-31T00:30:00Z"));
        assert_eq!(at("2027-10-31 02:30 CET"), utc("2027-10-31T01:30:00Z"));
        // An abbreviation the zone does not show then is refused, not guessed.
        let err = parse_at("2026-12-07 05:22 CEST", zone("Europe/Paris"), now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`CEST` is not Europe/Paris's abbreviation"),
            "{err}"
        );
        let err = parse_at("2026-12-07 05:22 PST", None, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("give an offset"), "{err}");
    }

    #[test]
    fn a_time_can_be_given_as_how_long_ago() {
        let now = utc("2026-12-07T12:00:00Z");
        let at = |text: &str| parse_at(text, zone("Europe/Paris"), now).unwrap();
        assert_eq!(at("10 minutes ago").instant, utc("2026-12-07T11:50:00Z"));
        assert_eq!(at("2h ago").instant, utc("2026-12-07T10:00:00Z"));
        assert_eq!(at("1h 30m ago").instant, utc("2026-12-07T10:30:00Z"));
        assert_eq!(at("now").instant, now);
        assert_eq!(
            at("10 minutes ago").describe("10 minutes ago"),
            "10 minutes ago = 2026-12-07T11:50:00Z"
        );
        let err = parse_at("ten minutes ago", None, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`10 minutes ago`"), "{err}");
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
