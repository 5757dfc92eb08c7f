//! When exports run: which are due now (including runs missed while the host
//! was down, collapsed into one), when each runs next, and the longest gap a
//! schedule leaves between two runs (its worst-case RPO).
//!
//! Slots are wall-clock times in the policy's time zone, with the rules of
//! cron around changes of the clock: a slot at a fixed hour that falls in the
//! hour skipped in spring runs when the clock jumps (02:30 runs at 03:00), and
//! one in the hour repeated in autumn runs once, the first time. A schedule
//! that runs every hour (`*` in the hour field) runs by elapsed time instead:
//! nothing extra in spring, both copies of the repeated hour in autumn.
//! `previous`, `next`, `due` and `longest_gap` all read the one [`Slots`]
//! sequence, so they agree.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};

use crate::config::Schedule;

/// Offsets are looked up at most this far apart: no time zone changes its
/// offset twice within a day.
const STEP: chrono::Duration = chrono::Duration::days(1);

/// How far `next` and `previous` look: past the longest wait a cron
/// expression can give (29 February, skipped in 2100).
const REACH: chrono::Duration = chrono::Duration::days(9 * 366);

impl Schedule {
    /// The newest scheduled slot at or before `now`.
    pub fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Read forward over a window that doubles until it holds a slot.
        let mut window = chrono::Duration::hours(1);
        loop {
            let from = now - window;
            if let Some(slot) = Slots::new(self, from, now + chrono::Duration::nanoseconds(1))
                .take_while(|t| *t <= now)
                .last()
            {
                return Some(slot);
            }
            if window >= REACH {
                return None;
            }
            window = window * 2;
        }
    }

    /// The first scheduled slot strictly after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Slots::new(self, now, now + REACH).next()
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
        let mut slots = Slots::new(self, from, horizon);
        let mut prev = slots.next()?;
        let mut longest = chrono::Duration::zero();
        // Bounded: a schedule every second would otherwise take 31M steps.
        for slot in slots.take(200_000) {
            longest = longest.max(slot - prev);
            prev = slot;
        }
        longest.to_std().ok()
    }

    /// Whether the hour field is `*`: the schedule runs every hour, by
    /// elapsed time across changes of the clock.
    fn hourly(&self) -> bool {
        self.every_hour()
    }

    fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        self.timezone.offset_from_utc_datetime(&t.naive_utc()).fix()
    }

    /// The instant the offset changes in `(a, b]`, to the second, when it
    /// does (once at most, since `b - a` is at most [`STEP`]).
    fn change_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let before = self.offset_at(a);
        if self.offset_at(b) == before {
            return None;
        }
        let (mut lo, mut hi) = (a.timestamp(), b.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_at(DateTime::from_timestamp(mid, 0)?) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        DateTime::from_timestamp(hi, 0)
    }
}

/// A schedule's instants at one offset, in order.
type Instants = Box<dyn Iterator<Item = DateTime<FixedOffset>>>;

/// Slots of a schedule strictly after a start and at or before an end, in
/// order, each once.
///
/// Between two changes of the clock the offset is fixed, so the cron
/// expression is read at that offset; at a change, slots whose wall time is
/// skipped move to the change (fixed hours) and slots whose wall time repeats
/// are left out the second time (fixed hours).
struct Slots<'a> {
    schedule: &'a Schedule,
    end: DateTime<Utc>,
    /// Slots up to here have been read into `segment`.
    cursor: DateTime<Utc>,
    /// Slots at one offset, up to an instant.
    segment: Option<(Instants, DateTime<Utc>)>,
    /// The offset changes at this instant, once the current segment is read.
    change: Option<DateTime<Utc>>,
    /// The slot a skipped wall time moved to, given before the next segment.
    moved: Option<DateTime<Utc>>,
    /// Slots before this instant repeat a wall time that already ran.
    repeat_until: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl<'a> Slots<'a> {
    fn new(schedule: &'a Schedule, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        let mut slots = Slots {
            schedule,
            end,
            cursor: start,
            segment: None,
            change: None,
            moved: None,
            repeat_until: None,
            last: None,
        };
        // Starting inside the repeated hour of autumn: the first copy ran.
        if let Some(change) = schedule.change_between(start - STEP, start) {
            slots.note_repeat(change);
        }
        slots
    }

    fn note_repeat(&mut self, change: DateTime<Utc>) {
        let s = self.schedule;
        let before = s.offset_at(change - chrono::Duration::seconds(1));
        let after = s.offset_at(change);
        let back = before.local_minus_utc() - after.local_minus_utc();
        if back > 0 && !s.hourly() {
            self.repeat_until = Some(change + chrono::Duration::seconds(back.into()));
        }
    }

    /// Slots at offset `offset` in `(from, to]`.
    fn read(&mut self, offset: FixedOffset, from: DateTime<Utc>, to: DateTime<Utc>) {
        let iter = self.schedule.after(from.with_timezone(&offset));
        self.segment = Some((Box::new(iter), to));
    }

    /// Prepares the next segment; `false` when the end is reached.
    fn advance(&mut self) -> bool {
        let s = self.schedule;
        if let Some(change) = self.change.take() {
            let just_before = change - chrono::Duration::seconds(1);
            let before = s.offset_at(just_before);
            let after = s.offset_at(change);
            let skipped = after.local_minus_utc() - before.local_minus_utc();
            if skipped > 0 && !s.hourly() {
                // Wall times the clock jumps over, read at the old offset.
                let gap_end = change + chrono::Duration::seconds(skipped.into());
                let in_gap = s
                    .after(just_before.with_timezone(&before))
                    .next()
                    .is_some_and(|t| t.with_timezone(&Utc) < gap_end);
                if in_gap && change <= self.end {
                    self.moved = Some(change);
                }
            }
            self.note_repeat(change);
            let to = (change + STEP).min(self.end);
            self.read(after, just_before, to);
            self.cursor = to;
            return true;
        }
        if self.cursor >= self.end {
            return false;
        }
        let to = (self.cursor + STEP).min(self.end);
        let offset = s.offset_at(self.cursor);
        match s.change_between(self.cursor, to) {
            Some(change) => {
                let just_before = change - chrono::Duration::seconds(1);
                self.read(offset, self.cursor, just_before.max(self.cursor));
                self.change = Some(change);
                self.cursor = change;
            }
            None => {
                self.read(offset, self.cursor, to);
                self.cursor = to;
            }
        }
        true
    }
}

impl Iterator for Slots<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        loop {
            let candidate = if let Some(moved) = self.moved.take() {
                Some(moved)
            } else if let Some((iter, to)) = &mut self.segment {
                match iter.next().map(|t| t.with_timezone(&Utc)) {
                    Some(t) if t <= *to => Some(t),
                    _ => {
                        self.segment = None;
                        None
                    }
                }
            } else if self.advance() {
                continue;
            } else {
                return None;
            };
            let Some(t) = candidate else { continue };
            if self.repeat_until.is_some_and(|until| t < until)
                || self.last.is_some_and(|last| t <= last)
            {
                continue;
            }
            self.last = Some(t);
            return Some(t);
        }
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

    fn paris(expression: &str) -> Schedule {
        Schedule::parse(expression, "Europe/Paris".parse().unwrap()).unwrap()
    }

    // In 2027 Paris springs forward on 28 March (02:00 CET is 03:00 CEST,
    // 01:00 UTC) and falls back on 31 October (03:00 CEST is 02:00 CET,
    // 01:00 UTC).

    #[test]
    fn a_slot_in_the_spring_gap_runs_when_the_clock_jumps() {
        let s = paris("30 2 * * *");
        let jump = t("2027-03-28T01:00:00Z");
        assert_eq!(s.next(t("2027-03-27T12:00:00Z")), Some(jump));
        assert_eq!(s.next(jump), Some(t("2027-03-29T00:30:00Z")));
        assert_eq!(s.previous(t("2027-03-28T05:00:00Z")), Some(jump));
        assert_eq!(s.previous(jump), Some(jump));
        let last = t("2027-03-27T01:30:04Z");
        assert_eq!(s.due(Some(last), t("2027-03-28T00:59:59Z")), None);
        assert_eq!(s.due(Some(last), t("2027-03-28T06:00:00Z")), Some(jump));
        // The worst gap of the year is the long night of October (25 h), not
        // two days around a skipped slot.
        assert_eq!(
            s.longest_gap(t("2027-03-01T00:00:00Z")),
            Some(Duration::from_secs(25 * 3600))
        );
    }

    #[test]
    fn several_slots_in_the_gap_give_one_run() {
        let s = paris("0,30 2 * * *");
        assert_eq!(
            s.next(t("2027-03-27T12:00:00Z")),
            Some(t("2027-03-28T01:00:00Z"))
        );
        assert_eq!(
            s.next(t("2027-03-28T01:00:00Z")),
            Some(t("2027-03-29T00:00:00Z"))
        );
    }

    #[test]
    fn a_slot_in_the_autumn_fold_runs_once() {
        let s = paris("30 2 * * *");
        let first = t("2027-10-31T00:30:00Z");
        assert_eq!(s.next(t("2027-10-30T12:00:00Z")), Some(first));
        assert_eq!(s.next(first), Some(t("2027-11-01T01:30:00Z")));
        // 02:45 CET: the second 02:30 has passed on the wall, not as a slot.
        assert_eq!(s.previous(t("2027-10-31T01:45:00Z")), Some(first));
        let last = t("2027-10-31T00:30:03Z");
        assert_eq!(s.due(Some(last), t("2027-10-31T01:45:00Z")), None);
        assert_eq!(s.due(Some(last), t("2027-10-31T12:00:00Z")), None);
    }

    #[test]
    fn hourly_schedules_keep_their_interval_across_both_changes() {
        // A schedule that runs every hour runs by elapsed time: both 02:00 of
        // the fold, and nothing extra for the hour that does not exist.
        let hourly = paris("0 * * * *");
        assert_eq!(
            hourly.next(t("2027-10-31T00:00:00Z")),
            Some(t("2027-10-31T01:00:00Z"))
        );
        assert_eq!(
            hourly.next(t("2027-03-28T00:30:00Z")),
            Some(t("2027-03-28T01:00:00Z"))
        );
        assert_eq!(
            hourly.longest_gap(t("2027-03-01T00:00:00Z")),
            Some(Duration::from_secs(3600))
        );
        let half_hourly = paris("*/30 * * * *");
        assert_eq!(
            half_hourly.longest_gap(t("2027-03-01T00:00:00Z")),
            Some(Duration::from_secs(1800))
        );
    }
}
