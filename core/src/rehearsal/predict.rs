//! How long a restore of the newest point would take, at the rate the
//! last restore test measured, and when the export's growth makes it miss
//! the RTO.

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::state::LastTest;

/// How long restoring the newest point would take at the throughput the
/// last restore test measured, and when growth makes it miss the RTO.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub seconds: f64,
    pub raw_bytes: u64,
    pub rto_seconds: Option<f64>,
    pub fits: Option<bool>,
    /// Growth of the raw size over the points of the last 90 days.
    pub growth_bytes_per_month: Option<f64>,
    /// Months until the prediction passes the RTO at that growth.
    pub months_left: Option<f64>,
}

const MONTH: f64 = 30.44 * 86_400.0;

/// Predicts from `last` (the throughput) for `points` (oldest first).
pub fn predict(
    last: &LastTest,
    points: &[Manifest],
    rto: Option<std::time::Duration>,
) -> Option<Prediction> {
    if last.restore_bytes_per_second <= 0.0 {
        return None;
    }
    let newest = points.last()?;
    Some(predict_at(
        last.restore_bytes_per_second,
        newest.raw.size,
        points,
        rto,
    ))
}

/// The restore time of `raw_bytes` at `rate` bytes per second, against
/// the RTO, with the growth seen over `history` (oldest first, the newest
/// point last).
pub fn predict_at(
    rate: f64,
    raw_bytes: u64,
    history: &[Manifest],
    rto: Option<std::time::Duration>,
) -> Prediction {
    let seconds = raw_bytes as f64 / rate;
    let rto_seconds = rto.map(|r| r.as_secs_f64());
    let window = chrono::Duration::days(90);
    let growth = history.last().and_then(|newest| {
        history
            .iter()
            .find(|m| newest.consistency_time - m.consistency_time <= window)
            .filter(|m| m.id != newest.id)
            .map(|first| {
                let span = (newest.consistency_time - first.consistency_time).num_seconds() as f64;
                (newest.raw.size as f64 - first.raw.size as f64) / span.max(1.0) * MONTH
            })
    });
    let months_left = match (rto_seconds, growth) {
        (Some(r), Some(g)) if g > 0.0 => Some(((r * rate - raw_bytes as f64) / g).max(0.0)),
        _ => None,
    };
    Prediction {
        seconds,
        raw_bytes,
        rto_seconds,
        fits: rto_seconds.map(|r| seconds <= r),
        growth_bytes_per_month: growth,
        months_left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rehearsal::tests::point;

    #[test]
    fn the_prediction_is_the_newest_size_at_the_tested_rate_and_growth_says_when_it_stops_fitting()
    {
        let last = LastTest {
            restore_bytes_per_second: 10e6,
            ..Default::default()
        };
        // From nothing to 2 GB in 61 days; 2 GB now: 200 s at 10 MB/s.
        let points = [
            point(61, 2_000_000_000 - 2_000_000_000),
            point(0, 2_000_000_000),
        ];
        let p = predict(&last, &points, Some(std::time::Duration::from_secs(300))).unwrap();
        assert!((p.seconds - 200.0).abs() < 1e-6);
        assert_eq!(p.fits, Some(true));
        let g = p.growth_bytes_per_month.unwrap();
        assert!((g - 2e9 / 61.0 * 30.44).abs() < 1e3, "{g}");
        // 300 s at 10 MB/s is 3 GB: 1 GB more, at the growth per month.
        let months = p.months_left.unwrap();
        assert!((months - 1e9 / g).abs() < 1e-6, "{months}");
    }
}
