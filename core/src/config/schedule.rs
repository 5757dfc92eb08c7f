//! Schedules, read with crontab's meaning: the five fields of crontab(5)
//! (or six with seconds first, or seven with a year last), where day of week
//! 0 and 7 are Sunday and 1 is Monday, names work (`Mon-Fri`, `jan`), and
//! when both the day of month and the day of week are restricted the export
//! runs on a day matching either (`0 4 1,15 * 5`: the 1st, the 15th and every
//! Friday). `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly` are the
//! usual shorthands.
//!
//! A schedule is one or two [`Calendar`]s whose union is the schedule: the
//! scheduler, the systemd timer (one `OnCalendar=` per calendar) and the
//! crontab line all read the same meaning.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Weekday};
use cron::TimeUnitSpec;

/// A cron schedule evaluated in the policy's time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written in the policy.
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    calendars: Vec<Calendar>,
}

/// Instants matching every field (the day fields together): one part of a
/// schedule. Fields other than the weekdays keep cron syntax (`*/15`, `1-5`,
/// `6,18`).
#[derive(Debug, Clone)]
pub struct Calendar {
    pub seconds: String,
    pub minutes: String,
    pub hours: String,
    pub days: String,
    pub months: String,
    /// Only in the seven-field form.
    pub years: Option<String>,
    /// The days of the week it runs on, Monday first; `None` for any day.
    pub weekdays: Option<Vec<Weekday>>,
    cron: cron::Schedule,
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Twice a day, at 06:00 and 18:00.
    pub const DEFAULT: &'static str = "0 6,18 * * *";

    pub fn parse(expression: &str, timezone: chrono_tz::Tz) -> Result<Self, String> {
        let invalid = |why: String| format!("invalid schedule `{expression}`: {why}");
        let expanded = match expression.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(invalid(
                    "expected @hourly, @daily, @weekly, @monthly or @yearly".into(),
                ));
            }
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match f.len() {
            5 => ("0", &f[..]),
            6 | 7 => (f[0], &f[1..]),
            n => {
                return Err(invalid(format!(
                    "expected 5 fields (minute hour day month weekday) or 6-7 with seconds, found {n}"
                )));
            }
        };
        let (minutes, hours, days, months, weekdays) =
            (rest[0], rest[1], rest[2], rest[3], rest[4]);
        let years = rest.get(5).map(|y| y.to_string());
        let any = |field: &str| field.starts_with('*') || field == "?";
        let days = if days == "?" { "*" } else { days };
        let weekday_set = if any(weekdays) && !weekdays.contains('/') {
            None
        } else {
            Some(weekday_set(weekdays).map_err(invalid)?)
        };
        let calendar = |days: &str, weekdays: Option<Vec<Weekday>>| {
            Calendar::new(
                seconds,
                minutes,
                hours,
                days,
                months,
                years.clone(),
                weekdays,
            )
            .map_err(invalid)
        };
        // Both day fields restricted: crontab runs on either.
        let calendars = if !any(days) && !any(weekdays) {
            vec![calendar(days, None)?, calendar("*", weekday_set)?]
        } else {
            vec![calendar(days, weekday_set)?]
        };
        Ok(Schedule {
            expression: expression.to_string(),
            timezone,
            calendars,
        })
    }

    /// The calendars whose union is this schedule.
    pub fn calendars(&self) -> &[Calendar] {
        &self.calendars
    }

    /// Matching instants strictly after `t`, in order, each once.
    pub(crate) fn after(
        &self,
        t: DateTime<FixedOffset>,
    ) -> impl Iterator<Item = DateTime<FixedOffset>> + 'static {
        let mut parts: Vec<_> = self
            .calendars
            .iter()
            .map(|c| c.cron.after_owned(t).peekable())
            .collect();
        std::iter::from_fn(move || {
            let next = parts.iter_mut().filter_map(|p| p.peek().copied()).min()?;
            for p in &mut parts {
                if p.peek() == Some(&next) {
                    p.next();
                }
            }
            Some(next)
        })
    }

    /// Whether it runs in every hour of the day.
    pub(crate) fn every_hour(&self) -> bool {
        self.calendars.iter().all(|c| c.cron.hours().is_all())
    }
}

impl Calendar {
    fn new(
        seconds: &str,
        minutes: &str,
        hours: &str,
        days: &str,
        months: &str,
        years: Option<String>,
        weekdays: Option<Vec<Weekday>>,
    ) -> Result<Self, String> {
        let dow = match &weekdays {
            None => "*".to_string(),
            Some(days) => days
                .iter()
                .map(|d| DAY_NAMES[d.num_days_from_sunday() as usize].to_uppercase())
                .collect::<Vec<_>>()
                .join(","),
        };
        let mut text = format!("{seconds} {minutes} {hours} {days} {months} {dow}");
        if let Some(y) = &years {
            text += &format!(" {y}");
        }
        let cron = cron::Schedule::from_str(&text).map_err(|e| e.to_string())?;
        Ok(Calendar {
            seconds: seconds.into(),
            minutes: minutes.into(),
            hours: hours.into(),
            days: days.into(),
            months: months.into(),
            years,
            weekdays,
            cron,
        })
    }
}

/// The days a crontab weekday field names: numbers 0-7 (0 and 7 Sunday),
/// three-letter names, ranges, lists and steps. Monday first.
fn weekday_set(field: &str) -> Result<Vec<Weekday>, String> {
    let day = |t: &str| -> Result<u32, String> {
        if let Ok(n) = t.parse::<u32>() {
            return if n <= 7 {
                Ok(n)
            } else {
                Err(format!(
                    "day of week {n} is out of range: 0-7, 0 and 7 are Sunday"
                ))
            };
        }
        let lower = t.to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|n| lower.len() >= 3 && n.starts_with(&lower[..3]) && is_day_name(&lower))
            .map(|i| i as u32)
            .ok_or_else(|| format!("`{t}` is not a day of the week: 0-7 or sun-sat"))
    };
    let mut on = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a step"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" || range == "?" => (0, 7),
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!(
                        "the range `{range}` runs backwards: write it as two, e.g. `5-7,0-1`"
                    ));
                }
                (a, b)
            }
            None if step > 1 => {
                return Err(format!(
                    "`{part}`: a step needs a range, e.g. `1-5/2` or `*/2`"
                ));
            }
            None => {
                let d = day(range)?;
                (d, d)
            }
        };
        for d in (first..=last).step_by(step as usize) {
            on[(d % 7) as usize] = true;
        }
    }
    // Monday first, as chrono and systemd list them.
    Ok((1..=7)
        .map(|i| i % 7)
        .filter(|d| on[*d])
        .map(|d| Weekday::try_from(((d + 6) % 7) as u8).expect("0-6"))
        .collect())
}

fn is_day_name(lower: &str) -> bool {
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    lower.len() == 3 || FULL.contains(&lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Weekday::*;

    fn days(expr: &str) -> Vec<Option<Vec<Weekday>>> {
        Schedule::parse(expr, chrono_tz::UTC)
            .unwrap()
            .calendars()
            .iter()
            .map(|c| c.weekdays.clone())
            .collect()
    }

    #[test]
    fn weekday_numbers_have_crontab_s_meaning() {
        assert_eq!(days("0 2 * * 1-5"), [Some(vec![Mon, Tue, Wed, Thu, Fri])]);
        assert_eq!(days("0 2 * * 0"), [Some(vec![Sun])]);
        assert_eq!(days("0 2 * * 7"), [Some(vec![Sun])]);
        assert_eq!(days("0 2 * * 5-7"), [Some(vec![Fri, Sat, Sun])]);
        assert_eq!(
            days("0 2 * * 0-7"),
            [Some(vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun])]
        );
        assert_eq!(days("0 2 * * */2"), [Some(vec![Tue, Thu, Sat, Sun])]);
        assert_eq!(days("0 2 * * 1-5/2"), [Some(vec![Mon, Wed, Fri])]);
        assert_eq!(days("0 2 * * mon,WED,friday"), [Some(vec![Mon, Wed, Fri])]);
        assert_eq!(days("0 2 * * Mon-Fri"), days("0 2 * * 1-5"));
        assert_eq!(days("0 2 * * *"), [None]);
        assert_eq!(days("@weekly"), [Some(vec![Sun])]);
    }

    #[test]
    fn weekdays_1_to_5_run_monday_to_friday() {
        let s = Schedule::parse("0 2 * * 1-5", chrono_tz::UTC).unwrap();
        // Sunday 6 December 2026, noon.
        let mut t = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .to_utc();
        let mut days = Vec::new();
        for _ in 0..6 {
            t = s.next(t).unwrap();
            days.push(t.format("%a %d %H:%M").to_string());
        }
        assert_eq!(
            days,
            [
                "Mon 07 02:00",
                "Tue 08 02:00",
                "Wed 09 02:00",
                "Thu 10 02:00",
                "Fri 11 02:00",
                "Mon 14 02:00"
            ]
        );
    }

    #[test]
    fn both_day_fields_restricted_run_on_either() {
        assert_eq!(days("30 4 1,15 * 5"), [None, Some(vec![Fri])]);
        let s = Schedule::parse("30 4 1,15 * 5", chrono_tz::UTC).unwrap();
        assert_eq!(s.calendars()[0].days, "1,15");
        assert_eq!(s.calendars()[1].days, "*");
        // A step on `*` is not a restriction, as in crontab.
        assert_eq!(days("0 0 */2 * 1").len(), 1);
    }

    #[test]
    fn wrong_weekdays_say_why() {
        let err = |e: &str| Schedule::parse(e, chrono_tz::UTC).unwrap_err();
        assert!(
            err("0 2 * * 8").contains("0-7, 0 and 7 are Sunday"),
            "{}",
            err("0 2 * * 8")
        );
        assert!(err("0 2 * * 5-1").contains("runs backwards"));
        assert!(err("0 2 * * 1/3").contains("a step needs a range"));
        assert!(err("0 2 * * mo").contains("not a day of the week"));
        assert!(err("0 2 * *").contains("expected 5 fields"));
        assert!(err("@fortnightly").contains("@hourly"));
    }
}
