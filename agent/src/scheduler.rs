//! When exports run: which are due now (including runs missed while the host
//! was down, collapsed into one), when each runs next, and the longest gap a
//! schedule leaves between two runs (its worst-case RPO).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Schedule;

impl Schedule {
    /// The newest scheduled slot at or before `now`.
    pub fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone);
        // `after` excludes its starting instant; start one second later so a
        // slot exactly at `now` counts as passed.
        let probe = local + chrono::Duration::seconds(1);
        self.cron
            .after(&probe)
            .next_back()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first scheduled slot strictly after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&now.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The slot that makes an export due: the newest slot at or before `now`
    /// that came after its last attempt. Never attempted means due now.
    /// Several missed slots give one run.
    pub fn due(
        &self,
        last_attempt: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match last_attempt {
            None => Some(self.previous(now).unwrap_or(now)),
            Some(last) => self.previous(now).filter(|slot| *slot > last),
        }
    }

    /// The longest interval between two consecutive slots over a year from
    /// `from`: the data written just after one run waits this long for the next.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        let horizon = from + chrono::Duration::days(366);
        let mut slots = self.cron.after(&from.with_timezone(&self.timezone));
        let mut prev = slots.next()?;
        let mut longest = chrono::Duration::zero();
        // Bounded: a schedule every second would otherwise take 31M steps.
        for slot in slots.take(200_000) {
            if slot.with_timezone(&Utc) > horizon {
                break;
            }
            longest = longest.max(slot - prev);
            prev = slot;
        }
        longest.to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn twice_a_day() -> Schedule {
        Schedule::parse("0 6,18 * * *", chrono_tz::UTC).unwrap()
    }

    #[test]
    fn due_after_a_slot_passes_and_not_again() {
        let s = twice_a_day();
        let last = t("2026-11-21T06:00:05Z");
        assert_eq!(s.due(Some(last), t("2026-11-21T12:00:00Z")), None);
        assert_eq!(
            s.due(Some(last), t("2026-11-21T18:00:00Z")),
            Some(t("2026-11-21T18:00:00Z"))
        );
        assert_eq!(
            s.due(Some(t("2026-11-21T18:00:01Z")), t("2026-11-21T18:30:00Z")),
            None
        );
    }

    #[test]
    fn missed_slots_while_down_collapse_into_one_run() {
        let s = twice_a_day();
        // Down from Friday morning to Monday noon: six slots missed, one run.
        let last = t("2026-11-20T06:00:03Z");
        let now = t("2026-11-23T12:00:00Z");
        assert_eq!(s.due(Some(last), now), Some(t("2026-11-23T06:00:00Z")));
        assert_eq!(s.due(Some(now), now + chrono::Duration::hours(1)), None);
    }

    #[test]
    fn clock_jumps_neither_repeat_nor_lose_a_run() {
        let s = twice_a_day();
        let last = t("2026-11-21T18:00:02Z");
        // The clock is set back an hour: the 18:00 run is not repeated.
        assert_eq!(s.due(Some(last), t("2026-11-21T17:10:00Z")), None);
        assert_eq!(s.due(Some(last), t("2026-11-21T18:00:01Z")), None);
        // The clock jumps forward past the next slot: one run, at once.
        assert_eq!(
            s.due(Some(last), t("2026-11-22T09:00:00Z")),
            Some(t("2026-11-22T06:00:00Z"))
        );
    }

    #[test]
    fn never_run_is_due() {
        assert!(twice_a_day().due(None, t("2026-11-21T07:00:00Z")).is_some());
    }

    #[test]
    fn time_zones_move_slots() {
        let paris = Schedule::parse("0 6 * * *", "Europe/Paris".parse().unwrap()).unwrap();
        // 06:00 in Paris in November is 05:00 UTC.
        assert_eq!(
            paris.next(t("2026-11-21T00:00:00Z")),
            Some(t("2026-11-21T05:00:00Z"))
        );
    }

    #[test]
    fn seconds_form_and_gaps() {
        let every_15 = Schedule::parse("0 */15 * * * *", chrono_tz::UTC).unwrap();
        assert_eq!(
            every_15.longest_gap(t("2026-11-21T00:00:00Z")),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            twice_a_day().longest_gap(t("2026-11-21T00:00:00Z")),
            Some(Duration::from_secs(12 * 3600))
        );
        let weekdays = Schedule::parse("0 2 * * Mon-Fri", chrono_tz::UTC).unwrap();
        assert_eq!(
            weekdays.longest_gap(t("2026-11-21T00:00:00Z")),
            Some(Duration::from_secs(3 * 86_400))
        );
    }
}
