//! Retention: which recovery points to keep, grandfather-father-son style,
//! evaluated on consistency times in the policy's time zone. For each rule
//! the newest point of each hour/day/week/month/year is kept, newest buckets
//! first, until the rule's count is reached; `keep_last` keeps the newest N.
//! A point kept by any rule is kept. No rule at all keeps everything.

use chrono::{DateTime, Datelike, Utc};

use crate::config::Retention;

/// The verdict on one point: kept (with every reason) or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub consistency_time: DateTime<Utc>,
    /// Empty when the point is to be deleted.
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

impl Retention {
    /// The longest the calendar rules keep a point, in days (`keep_last`
    /// alone depends on how often backups run: `None`).
    pub fn horizon_days(&self) -> Option<u32> {
        [
            self.keep_hourly.map(|n| n.div_ceil(24)),
            self.keep_daily,
            self.keep_weekly.map(|n| n * 7),
            self.keep_monthly.map(|n| n * 31),
            self.keep_yearly.map(|n| n * 366),
        ]
        .into_iter()
        .flatten()
        .max()
        .filter(|d| *d > 0)
    }

    pub fn is_empty(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .all(Option::is_none)
    }
}

/// Decides for `points` (`(id, consistency_time)`, any order); returns the
/// decisions newest first.
pub fn apply(
    rules: &Retention,
    points: &[(String, DateTime<Utc>)],
    tz: chrono_tz::Tz,
) -> Vec<Decision> {
    let mut sorted: Vec<_> = points.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut decisions: Vec<Decision> = sorted
        .iter()
        .map(|(id, t)| Decision {
            id: id.clone(),
            consistency_time: *t,
            reasons: Vec::new(),
        })
        .collect();
    if rules.is_empty() {
        for d in &mut decisions {
            d.reasons.push("no retention rule: keep all".into());
        }
        return decisions;
    }
    if let Some(n) = rules.keep_last {
        for d in decisions.iter_mut().take(n as usize) {
            d.reasons.push("last".into());
        }
    }
    type Bucket = fn(DateTime<chrono_tz::Tz>) -> String;
    let rules: [(&str, Option<u32>, Bucket); 5] = [
        ("hourly", rules.keep_hourly, |t| {
            t.format("%Y-%m-%d %H:00").to_string()
        }),
        ("daily", rules.keep_daily, |t| {
            t.format("%Y-%m-%d").to_string()
        }),
        ("weekly", rules.keep_weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        ("monthly", rules.keep_monthly, |t| {
            t.format("%Y-%m").to_string()
        }),
        ("yearly", rules.keep_yearly, |t| t.format("%Y").to_string()),
    ];
    for (name, count, bucket) in rules {
        let Some(n) = count else { continue };
        let mut kept = 0;
        let mut last: Option<String> = None;
        for d in decisions.iter_mut() {
            if kept >= n {
                break;
            }
            let b = bucket(d.consistency_time.with_timezone(&tz));
            if last.as_ref() != Some(&b) {
                d.reasons.push(format!("{name} {b}"));
                kept += 1;
                last = Some(b);
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: usize, start: DateTime<Utc>, every_hours: i64) -> Vec<(String, DateTime<Utc>)> {
        (0..n)
            .map(|i| {
                let t = start + chrono::Duration::hours(every_hours * i as i64);
                (format!("p{i:04}"), t)
            })
            .collect()
    }

    fn kept(decisions: &[Decision]) -> Vec<String> {
        let mut v: Vec<_> = decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.id.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn exact_keep_set_over_a_year_of_twice_daily_exports() {
        // 730 points: 06:00 and 18:00 every day of 2025 (UTC).
        let start = DateTime::parse_from_rfc3339("2025-01-01T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let points = history(730, start, 12);
        let rules = Retention {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(6),
            keep_yearly: Some(2),
            ..Default::default()
        };
        let d = apply(&rules, &points, chrono_tz::UTC);
        let mut expected: Vec<String> = Vec::new();
        // last 3: p0729 (Dec 31 18:00), p0728 (Dec 31 06:00), p0727 (Dec 30 18:00)
        expected.extend(["p0729", "p0728", "p0727"].map(String::from));
        // daily: the 18:00 point of each of the last 7 days: Dec 25..31
        for day in 0..7 {
            expected.push(format!("p{:04}", 729 - 2 * day));
        }
        // weekly (ISO): newest of each week: Wed Dec 31 (W01 of 2026), Sun Dec 28, Dec 21, Dec 14
        for id in ["p0729", "p0723", "p0709", "p0695"] {
            expected.push(id.into());
        }
        // monthly: last point of Dec, Nov, Oct, Sep, Aug, Jul
        for id in ["p0729", "p0667", "p0607", "p0545", "p0485", "p0423"] {
            expected.push(id.into());
        }
        // yearly: only 2025 exists
        expected.push("p0729".into());
        expected.sort();
        expected.dedup();
        assert_eq!(kept(&d), expected);
        assert_eq!(d.iter().filter(|x| !x.keep()).count(), 730 - expected.len());
        let newest = &d[0];
        assert_eq!(
            newest.reasons,
            vec![
                "last",
                "daily 2025-12-31",
                "weekly 2026-W01",
                "monthly 2025-12",
                "yearly 2025"
            ]
        );
    }

    #[test]
    fn hourly_buckets_keep_the_newest_of_each_hour() {
        let start = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // Every 15 minutes for 10 hours: 40 points.
        let points: Vec<_> = (0..40)
            .map(|i| {
                (
                    format!("q{i:02}"),
                    start + chrono::Duration::minutes(15 * i),
                )
            })
            .collect();
        let d = apply(
            &Retention {
                keep_hourly: Some(3),
                ..Default::default()
            },
            &points,
            chrono_tz::UTC,
        );
        assert_eq!(kept(&d), vec!["q31", "q35", "q39"]);
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 23:30 UTC on Mar 1 is already Mar 2 in Paris.
        let points = vec![
            (
                "a".to_string(),
                DateTime::parse_from_rfc3339("2026-03-01T22:30:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            (
                "b".to_string(),
                DateTime::parse_from_rfc3339("2026-03-01T23:30:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
        ];
        let rules = Retention {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&apply(&rules, &points, chrono_tz::UTC)), vec!["b"]);
        assert_eq!(
            kept(&apply(&rules, &points, "Europe/Paris".parse().unwrap())),
            vec!["a", "b"]
        );
    }

    #[test]
    fn no_rule_keeps_everything() {
        let start = Utc::now();
        let d = apply(&Retention::default(), &history(5, start, 1), chrono_tz::UTC);
        assert!(d.iter().all(Decision::keep));
    }
}
