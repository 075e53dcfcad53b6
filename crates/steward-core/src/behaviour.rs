//! Behavioural baselines: what normal looks like for one agent, and which
//! departures from it are worth a person's attention.
//!
//! An agent's history is a series of hourly [`Activity`] buckets (requests,
//! denials, data volume, spawns) plus the set of actions it has used on each
//! resource type. [`assess`] compares one hour against the hours of the
//! baseline window before it and returns explained [`Finding`]s. The rules
//! are deliberately plain so that every alert can say why in one sentence:
//!
//! - a count is out of character when it exceeds both `factor` times the
//!   busiest hour of the baseline and that hour plus a floor (so an agent
//!   that made 2 calls an hour is not flagged for making 5);
//! - an hour of the day the agent never acted in during the baseline is out
//!   of character when the agent keeps to some hours (active in at most 20
//!   of the 24);
//! - the first use of an action on a resource type is out of character once
//!   the agent has a settled footprint.
//!
//! Nothing is flagged while the agent is still learning: until it has acted
//! for `learning_days`.

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

/// What an agent did in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Decisions asked for as principal.
    pub requests: u64,
    /// Of those, denied.
    pub denials: u64,
    /// Bytes reported as read or returned.
    pub bytes: u64,
    /// Records reported as accessed.
    pub records: u64,
    /// Child agents registered.
    pub spawns: u64,
}

impl Activity {
    /// Add another bucket's counts.
    pub fn add(&mut self, other: &Activity) {
        self.requests = self.requests.saturating_add(other.requests);
        self.denials = self.denials.saturating_add(other.denials);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.records = self.records.saturating_add(other.records);
        self.spawns = self.spawns.saturating_add(other.spawns);
    }

    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        *self == Activity::default()
    }
}

pub use steward_types::behaviour::{BehaviourSettings as Settings, Signal};

/// The count of one signal (zero for signals that are not counts).
pub fn count(a: &Activity, signal: Signal) -> u64 {
    match signal {
        Signal::Requests => a.requests,
        Signal::Denials => a.denials,
        Signal::Bytes => a.bytes,
        Signal::Records => a.records,
        Signal::Spawns => a.spawns,
        Signal::Hours | Signal::NewAction => 0,
    }
}

/// The least margin over the busiest baseline hour before a count is
/// flagged, whatever the factor.
fn floor(signal: Signal) -> u64 {
    match signal {
        Signal::Requests => 20,
        Signal::Denials => 5,
        Signal::Bytes => 1 << 20,
        Signal::Records => 1000,
        Signal::Spawns => 3,
        Signal::Hours | Signal::NewAction => 0,
    }
}

/// How a quantity of this signal reads in a sentence.
fn quantity(signal: Signal, n: u64) -> String {
    let unit = match signal {
        Signal::Requests => "request",
        Signal::Denials => "denial",
        Signal::Bytes => "byte",
        Signal::Records => "record",
        Signal::Spawns => "child agent",
        Signal::Hours | Signal::NewAction => "event",
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Days of hourly activity kept: the longest baseline (90 days) and the
/// longest learning period (30 days). Older hours are deleted; an agent
/// that comes back after longer than this is learning again.
pub const HISTORY_DAYS: i64 = 120;

/// Refuse settings outside their ranges; nothing is clamped silently.
pub fn check_settings(s: &Settings) -> Result<(), Error> {
    if !(1..=90).contains(&s.baseline_days) {
        return Err(Error::invalid("baseline_days", "must be 1 to 90"));
    }
    if s.learning_days > 30 {
        return Err(Error::invalid("learning_days", "must be 0 to 30"));
    }
    if !s.factor.is_finite() || !(1.5..=100.0).contains(&s.factor) {
        return Err(Error::invalid("factor", "must be 1.5 to 100"));
    }
    Ok(())
}

/// The hour that contains `t`.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// One agent's history up to the hour being assessed.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When the agent was first seen acting (the start of its first hour).
    pub first_seen: Option<DateTime<Utc>>,
    /// Its non-empty hours before the assessed one, within the baseline
    /// window (older or later hours are ignored).
    pub hours: Vec<(DateTime<Utc>, Activity)>,
}

/// A departure from the baseline, explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What departed.
    pub signal: Signal,
    /// What it is about: the action and resource type for `new_action`, the
    /// hour of the day for `hours`, empty for counts.
    pub subject: String,
    /// What happened in the hour.
    pub observed: u64,
    /// The busiest baseline hour's count (counts), or the number of baseline
    /// hours the agent acted in (`hours`).
    pub usual: u64,
    /// The count above which it is flagged (counts).
    pub threshold: u64,
    /// One sentence a person can act on.
    pub message: String,
}

/// Whether an agent has been watched long enough to be judged, and how it
/// compares with its baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Assessment {
    /// Still learning until this time: nothing is flagged.
    Learning {
        /// When the agent will have acted for `learning_days`.
        until: DateTime<Utc>,
    },
    /// Judged; empty when the hour is in character.
    Judged(Vec<Finding>),
}

/// The usual range of one count over the baseline: its busiest hour, and
/// the count above which an hour is flagged.
pub fn threshold(settings: &Settings, signal: Signal, history: &History) -> (u64, u64) {
    let peak = history
        .hours
        .iter()
        .map(|(_, a)| count(a, signal))
        .max()
        .unwrap_or(0);
    let scaled = (peak as f64 * settings.factor).ceil();
    let scaled = if scaled >= u64::MAX as f64 {
        u64::MAX
    } else {
        scaled as u64
    };
    (peak, scaled.max(peak.saturating_add(floor(signal))))
}

/// The hours of the day (UTC) the agent acted in during the baseline.
pub fn active_hours(history: &History) -> [bool; 24] {
    let mut seen = [false; 24];
    for (t, a) in &history.hours {
        if !a.is_empty() {
            seen[t.hour() as usize] = true;
        }
    }
    seen
}

/// Compare the hour starting at `hour` (`current`: what happened in it;
/// `new_actions`: `action on type` pairs first used in it) with the baseline
/// before it.
pub fn assess(
    settings: &Settings,
    history: &History,
    hour: DateTime<Utc>,
    current: &Activity,
    new_actions: &[String],
) -> Assessment {
    let until = history
        .first_seen
        .map(|f| f + Duration::days(i64::from(settings.learning_days)));
    match until {
        Some(until) if until <= hour => {}
        Some(until) => return Assessment::Learning { until },
        None => {
            return Assessment::Learning {
                until: hour + Duration::days(i64::from(settings.learning_days)),
            };
        }
    }
    let window_start = hour - Duration::days(i64::from(settings.baseline_days));
    let baseline = History {
        first_seen: history.first_seen,
        hours: history
            .hours
            .iter()
            .filter(|(t, a)| *t >= window_start && *t < hour && !a.is_empty())
            .copied()
            .collect(),
    };
    let days = settings.baseline_days;
    let mut findings = Vec::new();
    for signal in Signal::COUNTS {
        let observed = count(current, signal);
        let (usual, threshold) = threshold(settings, signal, &baseline);
        if observed > threshold {
            findings.push(Finding {
                signal,
                subject: String::new(),
                observed,
                usual,
                threshold,
                message: format!(
                    "{} in the hour from {} UTC; its busiest hour in the last {days} days had {} (flagged above {threshold})",
                    quantity(signal, observed),
                    hour.format("%Y-%m-%d %H:00"),
                    quantity(signal, usual),
                ),
            });
        }
    }
    let seen = active_hours(&baseline);
    let kept = seen.iter().filter(|s| **s).count();
    let h = hour.hour() as usize;
    if !current.is_empty() && kept > 0 && kept <= 20 && !seen[h] {
        findings.push(Finding {
            signal: Signal::Hours,
            subject: format!("{h:02}:00"),
            observed: current.requests.max(1),
            usual: kept as u64,
            threshold: 0,
            message: format!(
                "acted at {h:02}:00-{:02}:00 UTC; in the last {days} days it acted only in {}",
                (h + 1) % 24,
                hour_ranges(&seen)
            ),
        });
    }
    if !baseline.hours.is_empty() {
        for key in new_actions {
            findings.push(Finding {
                signal: Signal::NewAction,
                subject: key.clone(),
                observed: 1,
                usual: 0,
                threshold: 0,
                message: format!(
                    "first use of {key} since it was first seen on {}",
                    history
                        .first_seen
                        .map(|f| f.format("%Y-%m-%d").to_string())
                        .unwrap_or_default()
                ),
            });
        }
    }
    Assessment::Judged(findings)
}

/// `08:00-12:00 and 14:00-15:00 UTC` for the hours marked.
fn hour_ranges(seen: &[bool; 24]) -> String {
    let mut ranges = Vec::new();
    let mut h = 0;
    while h < 24 {
        if seen[h] {
            let start = h;
            while h < 24 && seen[h] {
                h += 1;
            }
            ranges.push(format!("{start:02}:00-{:02}:00", h % 24));
        } else {
            h += 1;
        }
    }
    match ranges.len() {
        0 => "no hour".into(),
        1 => format!("{} UTC", ranges[0]),
        n => format!("{} and {} UTC", ranges[..n - 1].join(", "), ranges[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(
            1_767_225_600 + i64::from(day) * 86_400 + i64::from(hour) * 3600,
            0,
        )
        .unwrap_or_default()
    }

    fn requests(n: u64) -> Activity {
        Activity {
            requests: n,
            ..Activity::default()
        }
    }

    /// Ten days of office hours: `per_hour` requests from 09:00 to 17:00.
    fn office(per_hour: u64) -> History {
        let mut hours = Vec::new();
        for day in 0..10 {
            for h in 9..17 {
                hours.push((at(day, h), requests(per_hour)));
            }
        }
        History {
            first_seen: Some(at(0, 9)),
            hours,
        }
    }

    fn judged(a: Assessment) -> Vec<Finding> {
        match a {
            Assessment::Judged(f) => f,
            Assessment::Learning { until } => vec![Finding {
                signal: Signal::Hours,
                subject: format!("learning until {until}"),
                observed: 0,
                usual: 0,
                threshold: 0,
                message: String::new(),
            }],
        }
    }

    #[test]
    fn an_ordinary_hour_is_in_character() {
        let s = Settings::default();
        let f = judged(assess(&s, &office(40), at(10, 10), &requests(45), &[]));
        assert_eq!(f, vec![]);
    }

    #[test]
    fn a_burst_is_flagged_with_its_numbers() {
        let s = Settings::default();
        let f = judged(assess(&s, &office(40), at(10, 10), &requests(412), &[]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].signal, Signal::Requests);
        assert_eq!((f[0].observed, f[0].usual, f[0].threshold), (412, 40, 80));
        assert_eq!(
            f[0].message,
            "412 requests in the hour from 2026-01-11 10:00 UTC; its busiest hour in the last 14 days had 40 requests (flagged above 80)"
        );
    }

    #[test]
    fn a_quiet_agent_is_not_flagged_for_a_few_more_calls() {
        let s = Settings::default();
        // 2 an hour usually; 2 x 2 = 4, but the floor keeps the bar at 22.
        let f = judged(assess(&s, &office(2), at(10, 10), &requests(20), &[]));
        assert_eq!(f, vec![]);
        let f = judged(assess(&s, &office(2), at(10, 10), &requests(23), &[]));
        assert_eq!(f[0].threshold, 22);
    }

    #[test]
    fn nothing_is_flagged_while_learning() {
        let s = Settings::default();
        let mut h = office(1);
        h.first_seen = Some(at(9, 9));
        let a = assess(
            &s,
            &h,
            at(10, 3),
            &requests(5000),
            &["delete on Repo".into()],
        );
        assert_eq!(a, Assessment::Learning { until: at(12, 9) });
    }

    #[test]
    fn acting_at_night_is_flagged_for_an_office_hours_agent() {
        let s = Settings::default();
        let f = judged(assess(&s, &office(40), at(10, 3), &requests(3), &[]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].signal, Signal::Hours);
        assert_eq!(f[0].subject, "03:00");
        assert_eq!(
            f[0].message,
            "acted at 03:00-04:00 UTC; in the last 14 days it acted only in 09:00-17:00 UTC"
        );
    }

    #[test]
    fn an_always_on_agent_has_no_off_hours() {
        let s = Settings::default();
        let mut h = office(1);
        for x in 0..21 {
            h.hours.push((at(5, x), requests(1)));
        }
        let f = judged(assess(&s, &h, at(10, 23), &requests(1), &[]));
        assert_eq!(f, vec![]);
    }

    #[test]
    fn a_first_use_is_flagged_once_settled() {
        let s = Settings::default();
        let f = judged(assess(
            &s,
            &office(4),
            at(10, 10),
            &requests(4),
            &["delete on Repo".into()],
        ));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].signal, Signal::NewAction);
        assert_eq!(
            f[0].message,
            "first use of delete on Repo since it was first seen on 2026-01-01"
        );
    }

    #[test]
    fn hours_outside_the_window_do_not_count() {
        let s = Settings {
            baseline_days: 2,
            ..Settings::default()
        };
        let mut h = office(10);
        h.hours.push((at(1, 10), requests(10_000)));
        // The 10 000-request hour was 9 days ago: outside a 2-day baseline.
        let f = judged(assess(&s, &h, at(10, 10), &requests(500), &[]));
        assert_eq!(f[0].usual, 10);
    }

    #[test]
    fn ranges_read_naturally() {
        let mut seen = [false; 24];
        assert_eq!(hour_ranges(&seen), "no hour");
        seen[8] = true;
        seen[9] = true;
        seen[14] = true;
        seen[23] = true;
        assert_eq!(
            hour_ranges(&seen),
            "08:00-10:00, 14:00-15:00 and 23:00-00:00 UTC"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(check_settings(&Settings::default()).is_ok());
        let bad = |s: Settings| check_settings(&s).is_err();
        assert!(bad(Settings {
            baseline_days: 0,
            ..Settings::default()
        }));
        assert!(bad(Settings {
            factor: f64::NAN,
            ..Settings::default()
        }));
        assert!(bad(Settings {
            factor: 1.0,
            ..Settings::default()
        }));
        assert!(bad(Settings {
            learning_days: 31,
            ..Settings::default()
        }));
        let parsed: Result<Settings, _> = serde_json::from_str(r#"{"suspend_on":["nope"]}"#);
        assert!(parsed.is_err());
        let parsed: Result<Settings, _> = serde_json::from_str(r#"{"sensitivity":3}"#);
        assert!(parsed.is_err());
    }

    fn activity() -> impl Strategy<Value = Activity> {
        (0u64..500, 0u64..50, 0u64..5_000_000, 0u64..5000, 0u64..5).prop_map(
            |(requests, denials, bytes, records, spawns)| Activity {
                requests,
                denials,
                bytes,
                records,
                spawns,
            },
        )
    }

    proptest! {
        /// An hour that repeats one of the baseline's own hours is never
        /// flagged for its counts: the baseline is normal by definition.
        #[test]
        fn a_baseline_hour_is_never_out_of_character(
            hours in proptest::collection::vec((0u32..14, 0u32..24, activity()), 1..60),
            pick in 0usize..60,
            factor in 1.5f64..10.0,
        ) {
            let s = Settings { factor, learning_days: 0, ..Settings::default() };
            let h = History {
                first_seen: Some(at(0, 0)),
                hours: hours.iter().map(|(d, x, a)| (at(*d, *x), *a)).collect(),
            };
            let again = h.hours[pick % h.hours.len()].1;
            let f = judged(assess(&s, &h, at(14, 0), &again, &[]));
            prop_assert!(f.iter().all(|f| !Signal::COUNTS.contains(&f.signal)), "{f:?}");
        }

        /// Doing more never clears a flag that doing less raised.
        #[test]
        fn more_activity_never_clears_a_flag(
            hours in proptest::collection::vec((0u32..14, 0u32..24, activity()), 0..60),
            now in activity(),
            more in activity(),
        ) {
            let s = Settings { learning_days: 0, ..Settings::default() };
            let h = History {
                first_seen: Some(at(0, 0)),
                hours: hours.iter().map(|(d, x, a)| (at(*d, *x), *a)).collect(),
            };
            let mut bigger = now;
            bigger.add(&more);
            let signals = |a: &Activity| judged(assess(&s, &h, at(14, 5), a, &[]))
                .into_iter().map(|f| f.signal).collect::<Vec<_>>();
            let less = signals(&now);
            let greater = signals(&bigger);
            for s in less.iter().filter(|s| Signal::COUNTS.contains(s)) {
                prop_assert!(greater.contains(s), "{s:?} cleared: {less:?} -> {greater:?}");
            }
        }
    }
}
