//! Quota arithmetic: amounts in fixed point, windows (calendar-aligned in a
//! time zone, rolling, per-second rates with GCRA, live gauges), admission,
//! warning thresholds. Pure functions of the counters and `now`; the store
//! applies them under a row lock so that concurrent decisions on any number
//! of nodes never go over a limit.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use steward_types::{Metric, OnExceed, PutQuota, Quota, QuotaScope, QuotaTemplate};

use crate::{Error, validate};

/// Fixed-point scale of cost: amounts are stored in millionths.
pub const COST_SCALE: i64 = 1_000_000;
/// The largest limit or amount accepted, in display units.
pub const MAX_AMOUNT: f64 = 1e11;

/// Most one counter slice holds: above any limit ([`MAX_AMOUNT`] in the
/// finest unit, millionths of a currency), and small enough that the
/// [`ROLLING_SLICES`] + 1 slices a rolling window sums, plus an estimate,
/// stay inside 64 bits, however much usage agents report.
pub const USAGE_CAP: i64 = i64::MAX / (ROLLING_SLICES + 4);
/// The largest rate (and burst) accepted, in display units per second.
pub const MAX_RATE: f64 = 1e6;
/// Default warning thresholds, in percent.
pub const DEFAULT_THRESHOLDS: [u32; 3] = [50, 80, 95];
/// Slices per rolling window. A window sums the slice `now` is in and the
/// [`ROLLING_SLICES`] before it (see [`rolling_range`]): usage leaves it at
/// most one slice late, never early, so a rolling limit is never exceeded.
pub const ROLLING_SLICES: i64 = 60;

/// A display amount (`12.5` dollars, `1000` requests) in stored units.
pub fn to_units(field: &str, metric: Metric, value: f64) -> Result<i64, Error> {
    if !value.is_finite() || value < 0.0 {
        return Err(Error::invalid(
            field,
            format!("must be a number ≥ 0, got {value}"),
        ));
    }
    if value > MAX_AMOUNT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_AMOUNT}"),
        ));
    }
    if metric == Metric::Cost {
        let units = (value * COST_SCALE as f64).round();
        if ((units / COST_SCALE as f64) - value).abs() > 1e-9 * value.max(1.0) {
            return Err(Error::invalid(field, "cost has at most 6 decimal places"));
        }
        Ok(units as i64)
    } else if value.fract() != 0.0 {
        Err(Error::invalid(
            field,
            format!(
                "{} are counted in whole units, got {value}",
                metric.as_str()
            ),
        ))
    } else {
        Ok(value as i64)
    }
}

/// Stored units back to a display amount.
pub fn from_units(metric: Metric, units: i64) -> f64 {
    if metric == Metric::Cost {
        units as f64 / COST_SCALE as f64
    } else {
        units as f64
    }
}

/// A calendar unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Minute.
    Minute,
    /// Hour.
    Hour,
    /// Day.
    Day,
    /// Month (rolling: 30 days).
    Month,
}

impl Unit {
    fn parse(s: &str) -> Option<Unit> {
        match s {
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            "month" => Some(Unit::Month),
            _ => None,
        }
    }

    /// Length of a rolling window of this unit.
    pub fn length(self) -> Duration {
        match self {
            Unit::Minute => Duration::minutes(1),
            Unit::Hour => Duration::hours(1),
            Unit::Day => Duration::days(1),
            Unit::Month => Duration::days(30),
        }
    }
}

/// How a quota's usage is windowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Aligned to the calendar in a time zone; resets at each boundary.
    Calendar(Unit, Tz),
    /// The last `unit.length()`, counted in [`ROLLING_SLICES`] slices.
    Rolling(Unit),
    /// A rate per second with a burst, by GCRA.
    Rate {
        /// Units earned back per second.
        per_second: i64,
        /// Units allowed at once.
        burst: i64,
    },
    /// A gauge of live things (child agents), no window.
    Live,
}

/// Start and end of the calendar window holding `now`.
///
/// A minute or an hour is one of the local clock's, and is never longer
/// than that: where the clock is set back, the repeated hour is a window
/// of its own, after the first one; where it jumps in mid-hour, the hour
/// is shorter. A day or a month runs from local midnight to local
/// midnight, so the day DST starts has 23 hours and the day it ends 25.
/// Windows are keyed by their start, which for every local time that
/// occurs once is the same instant it has always been.
pub fn calendar_bounds(unit: Unit, tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    match unit {
        Unit::Minute | Unit::Hour => clock_bounds(unit, tz, now),
        Unit::Day | Unit::Month => date_bounds(unit, tz, now),
    }
}

/// The offset from UTC in force at `t` seconds, in seconds.
fn offset_at(tz: Tz, t: i64) -> i32 {
    let utc = DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
}

/// The first second in `(after, last]` where `found` holds, given that it
/// does not at `after` and does at `last` (a clock change in between).
fn first_second(mut after: i64, mut last: i64, found: impl Fn(i64) -> bool) -> i64 {
    while last - after > 1 {
        let mid = after + (last - after) / 2;
        if found(mid) {
            last = mid;
        } else {
            after = mid;
        }
    }
    last
}

/// A minute or an hour of the local clock: the stretch of real time in
/// which the clock shows it with the offset in force at `now`, cut where
/// the offset changes. Keyed by the wall-clock time, two real hours would
/// share one counter where the clock is set back; with the offset, each
/// is one real hour (or less), and the hours that occur once keep the
/// start they had.
fn clock_bounds(unit: Unit, tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz);
    let here = local.offset().fix().local_minus_utc();
    let (past, length) = match unit {
        Unit::Hour => (
            i64::from(local.minute()) * 60 + i64::from(local.second()),
            3600,
        ),
        _ => (i64::from(local.second()), 60),
    };
    // Offsets and their changes are in whole seconds: the floor of `now`
    // is on the same side of any change as `now`.
    let second = now.timestamp();
    let mut start = second - past;
    let mut end = start + length;
    if offset_at(tz, start) != here {
        // The clock changed since it last showed the hour begin: the
        // window begins at the change.
        start = first_second(start, second, |t| offset_at(tz, t) == here);
    }
    if offset_at(tz, end - 1) != here {
        // It changes before the hour is over: the window ends there.
        end = first_second(second, end - 1, |t| offset_at(tz, t) != here);
    }
    let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or(now);
    (at(start), at(end))
}

/// A local day or month, from local midnight to local midnight.
fn date_bounds(unit: Unit, tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = now.with_timezone(&tz);
    let start_naive = match unit {
        Unit::Month => NaiveDate::from_ymd_opt(local.year(), local.month(), 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
        _ => local.date_naive().and_hms_opt(0, 0, 0),
    };
    let Some(start_naive) = start_naive else {
        return (now, now + Duration::seconds(1));
    };
    let next_naive = match unit {
        Unit::Month => {
            let (y, m) = if start_naive.month() == 12 {
                (start_naive.year() + 1, 1)
            } else {
                (start_naive.year(), start_naive.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or(start_naive + Duration::days(31))
        }
        _ => start_naive + Duration::days(1),
    };
    // Local midnight may not exist or be ambiguous around DST changes.
    let to_utc = |n: chrono::NaiveDateTime| -> DateTime<Utc> {
        match tz.from_local_datetime(&n) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
            // Midnight is skipped: the day begins when the clock jumps
            // past it, the first time it shows a later time (no offset is
            // more than 26 hours from UTC).
            chrono::LocalResult::None => {
                let local = n.and_utc().timestamp();
                let reached = |t: i64| t + i64::from(offset_at(tz, t)) >= local;
                let t = first_second(local - 26 * 3600, local + 26 * 3600, reached);
                DateTime::from_timestamp(t, 0).unwrap_or_else(|| Utc.from_utc_datetime(&n))
            }
        }
    };
    let (start, end) = (to_utc(start_naive), to_utc(next_naive));
    if start <= now && now < end {
        (start, end)
    } else {
        // Not expected; a UTC window rather than none.
        date_bounds(unit, chrono_tz::UTC, now)
    }
}

/// The slice of a rolling window that `now` falls in: (slice start, slice length).
pub fn rolling_slice(unit: Unit, now: DateTime<Utc>) -> (i64, i64) {
    let slice = unit.length().num_milliseconds() / ROLLING_SLICES;
    let t = now.timestamp_millis();
    (t - t.rem_euclid(slice), slice)
}

/// The slices a rolling window sums at `now`: (first slice start, current
/// slice start, slice length). The first is the slice holding `now` − the
/// window's length, whose usage may still be inside the window: 61 slices,
/// so usage leaves the window late, never early.
pub fn rolling_range(unit: Unit, now: DateTime<Utc>) -> (i64, i64, i64) {
    let (slice, len) = rolling_slice(unit, now);
    (slice - ROLLING_SLICES * len, slice, len)
}

/// When usage in the slice starting at `slice_start` leaves a rolling
/// window: once the window's oldest slice is past it.
pub fn rolling_leaves_at(unit: Unit, slice_start: i64) -> i64 {
    let len = unit.length().num_milliseconds() / ROLLING_SLICES;
    slice_start + (ROLLING_SLICES + 1) * len
}

/// Whether `estimate` more fits: within the limit, and (for a zero
/// estimate) the limit is not used up already.
pub fn admits(used: i64, estimate: i64, limit: i64) -> bool {
    used < limit && used.saturating_add(estimate) <= limit
}

/// A rate limit's theoretical arrival time (GCRA), exact: `us` − `behind` /
/// rate microseconds. A request rarely takes a whole number of microseconds
/// to earn back (at 3 a second, 333333⅓ µs), so a time rounded at each
/// request would drift and refuse part of the burst; the remainder keeps
/// it exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tat {
    /// Microseconds, rounded up: on its own, a time never in the spender's
    /// favour.
    pub us: i64,
    /// How far the exact time is before `us`, in 1/rate microseconds: from
    /// 0 to rate − 1.
    pub behind: i64,
}

impl Tat {
    /// A time stored in whole microseconds, exact.
    pub fn at(us: i64) -> Tat {
        Tat { us, behind: 0 }
    }

    /// The time in microseconds × `rate`.
    fn scaled(self, rate: i128) -> i128 {
        i128::from(self.us) * rate - i128::from(self.behind).clamp(0, rate - 1)
    }

    /// A time in microseconds × `rate`, as `us` rounded up and its remainder.
    fn from_scaled(t: i128, rate: i128) -> Tat {
        let us = t.div_euclid(rate) + i128::from(t.rem_euclid(rate) != 0);
        match (i64::try_from(us), i64::try_from(us * rate - t)) {
            (Ok(us), Ok(behind)) => Tat { us, behind },
            _ => Tat::at(i64::MAX),
        }
    }
}

/// GCRA in exact integers: time is counted in microseconds × `per_second`,
/// so that a unit takes exactly 1000000 of them to earn back and the burst
/// reaches `burst` × 1000000 ahead of now. The new arrival time if `cost` units
/// fit at `now_us`, else how long until they would (microseconds).
pub fn gcra(tat: Tat, now_us: i64, per_second: i64, burst: i64, cost: i64) -> Result<Tat, i64> {
    let rate = i128::from(per_second.max(1));
    let now = i128::from(now_us) * rate;
    let next = tat.scaled(rate).max(now) + i128::from(cost.max(1)) * 1_000_000;
    let over = next - now - i128::from(burst.max(0)) * 1_000_000;
    if over <= 0 {
        Ok(Tat::from_scaled(next, rate))
    } else {
        Err(i64::try_from((over + rate - 1) / rate).unwrap_or(i64::MAX))
    }
}

/// Units a GCRA limit would still admit at once.
pub fn gcra_remaining(tat: Tat, now_us: i64, per_second: i64, burst: i64) -> i64 {
    let rate = i128::from(per_second.max(1));
    let debt = (tat.scaled(rate) - i128::from(now_us) * rate).max(0);
    let free = (i128::from(burst.max(0)) * 1_000_000 - debt).max(0);
    i64::try_from(free / 1_000_000).unwrap_or(i64::MAX)
}

/// Thresholds (percent) crossed by going from `before` to `after`.
pub fn crossed(before: i64, after: i64, limit: i64, thresholds: &[u32]) -> Vec<u32> {
    if limit <= 0 {
        return Vec::new();
    }
    thresholds
        .iter()
        .copied()
        .filter(|t| {
            let mark = i128::from(*t) * i128::from(limit);
            i128::from(before) * 100 < mark && mark <= i128::from(after) * 100
        })
        .collect()
}

/// The highest threshold at or below `used`.
pub fn highest_reached(used: i64, limit: i64, thresholds: &[u32]) -> Option<u32> {
    thresholds
        .iter()
        .copied()
        .filter(|t| limit > 0 && i128::from(*t) * i128::from(limit) <= i128::from(used) * 100)
        .max()
}

/// A validated rule, with its limit in stored units and its window parsed.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule as shown.
    pub quota: Quota,
    /// The limit in stored units (per second for a rate).
    pub limit: i64,
    /// Its window.
    pub window: Window,
}

impl Rule {
    /// Parse a stored or requested rule.
    pub fn new(quota: Quota) -> Result<Rule, Error> {
        let limit = to_units("limit", quota.metric, quota.limit)?;
        let tz: Tz = quota.timezone.parse().map_err(|_| {
            Error::invalid(
                "timezone",
                format!(
                    "'{}' is not an IANA time zone (for example Europe/Paris)",
                    quota.timezone
                ),
            )
        })?;
        let window = match (quota.metric, quota.window.as_str()) {
            (Metric::ChildAgents, "live") => Window::Live,
            (Metric::ChildAgents, w) => {
                return Err(Error::invalid(
                    "window",
                    format!("child_agents counts live agents: use window 'live', not '{w}'"),
                ));
            }
            (_, "live") => return Err(Error::invalid("window", "'live' is only for child_agents")),
            (_, "second") => {
                if quota.rolling {
                    return Err(Error::invalid(
                        "rolling",
                        "a per-second rate is already a sliding limit (GCRA)",
                    ));
                }
                // Both in display units (dollars, not millionths), as given.
                if limit < 1 || quota.limit > MAX_RATE {
                    return Err(Error::invalid(
                        "limit",
                        format!(
                            "a rate is {} to {MAX_RATE} per second",
                            from_units(quota.metric, 1)
                        ),
                    ));
                }
                // A burst is in stored units, as rules have always kept it:
                // millionths of the currency for cost (as a tool's
                // `cost_estimate`), whole units otherwise.
                let most = to_units("burst", quota.metric, MAX_RATE)?;
                let burst = match quota.burst {
                    Some(b) if b == 0 || b > most as u64 => {
                        return Err(Error::invalid("burst", format!("must be 1 to {most}")));
                    }
                    Some(b) => b as i64,
                    None => limit,
                };
                Window::Rate {
                    per_second: limit,
                    burst,
                }
            }
            (_, w) => {
                let unit = Unit::parse(w).ok_or_else(|| {
                    Error::invalid(
                        "window",
                        format!("'{w}' is not a window (second, minute, hour, day, month, live)"),
                    )
                })?;
                if quota.rolling {
                    Window::Rolling(unit)
                } else {
                    Window::Calendar(unit, tz)
                }
            }
        };
        if quota.burst.is_some() && !matches!(window, Window::Rate { .. }) {
            return Err(Error::invalid(
                "burst",
                "only a per-second rate (window 'second') has a burst",
            ));
        }
        Ok(Rule {
            quota,
            limit,
            window,
        })
    }

    /// Whether a decision for `action` on `resource_type/resource_id` counts.
    pub fn counts(&self, action: &str, resource_type: &str, resource_id: &str) -> bool {
        let q = &self.quota;
        let want_action = match (&q.action, q.metric) {
            (Some(a), _) => Some(a.as_str()),
            (None, Metric::ToolCalls) => Some("call_tool"),
            (None, _) => None,
        };
        q.metric != Metric::ChildAgents
            && want_action.is_none_or(|a| a == action)
            && q.resource_type
                .as_deref()
                .is_none_or(|t| t == resource_type)
            && q.resource_id.as_deref().is_none_or(|r| r == resource_id)
    }

    /// What a decision reserves against this rule, from its estimate.
    pub fn estimate(&self, e: &steward_types::UsageEstimate) -> Result<i64, Error> {
        let amount = |field: &str, v: Option<u64>| -> Result<i64, Error> {
            v.map_or(Ok(0), |n| to_units(field, self.quota.metric, n as f64))
        };
        match self.quota.metric {
            Metric::Requests | Metric::ToolCalls => Ok(1),
            Metric::Tokens => amount("estimate.tokens", e.tokens),
            Metric::Records => amount("estimate.records", e.records),
            Metric::Bytes => amount("estimate.bytes", e.bytes),
            Metric::Cost => {
                let counts = self.quota.currency.as_deref().unwrap_or("USD");
                let currency = match e.currency.as_deref() {
                    _ if e.in_each_quotas_currency => counts,
                    Some(c) => c,
                    None => "USD",
                };
                match e.cost {
                    Some(c) if c != 0.0 && currency != counts => Err(Error::invalid(
                        "estimate.currency",
                        format!(
                            "the estimate is in {currency} but quota '{}' counts {counts}; Steward does not convert currencies",
                            self.quota.name
                        ),
                    )),
                    Some(c) => to_units("estimate.cost", Metric::Cost, c),
                    None => Ok(0),
                }
            }
            Metric::ChildAgents => Ok(0),
        }
    }

    /// The window's label for people: `day (Europe/Paris)`, `rolling hour`, `10/s burst 20`.
    pub fn window_label(&self) -> String {
        match self.window {
            Window::Calendar(_, tz) if tz == chrono_tz::UTC => self.quota.window.clone(),
            Window::Calendar(_, tz) => format!("{} ({tz})", self.quota.window),
            Window::Rolling(_) => format!("rolling {}", self.quota.window),
            Window::Rate { burst, .. } => {
                format!("second (burst {})", from_units(self.quota.metric, burst))
            }
            Window::Live => "live".into(),
        }
    }
}

/// Validate a request into a rule (its subject already resolved to its canonical key).
pub fn rule_from_request(
    id: String,
    req: PutQuota,
    subject: Option<String>,
    now: DateTime<Utc>,
) -> Result<Rule, Error> {
    validate::name("name", &req.name)?;
    validate::text("description", &req.description)?;
    let metric = steward_types::Metric::parse(&req.metric).ok_or_else(|| {
        Error::invalid(
            "metric",
            format!(
                "'{}' is not a metric ({})",
                req.metric,
                Metric::ALL.map(|m| m.as_str()).join(", ")
            ),
        )
    })?;
    let scope = req.scope.unwrap_or(QuotaScope::Tenant);
    if metric == Metric::ChildAgents && scope != QuotaScope::Agent {
        return Err(Error::invalid(
            "scope",
            "child_agents counts one agent's live descendants: scope it to an agent (or give it to a persona as a default quota)",
        ));
    }
    let mut thresholds = req
        .thresholds
        .unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec());
    thresholds.sort_unstable();
    thresholds.dedup();
    if thresholds.iter().any(|t| *t == 0 || *t > 100) {
        return Err(Error::invalid("thresholds", "percentages from 1 to 100"));
    }
    let currency = match (metric, req.currency) {
        (Metric::Cost, c) => {
            let c = c.unwrap_or_else(|| "USD".into());
            if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
                return Err(Error::invalid(
                    "currency",
                    format!("'{c}' is not an ISO 4217 code such as USD"),
                ));
            }
            Some(c)
        }
        (_, Some(_)) => {
            return Err(Error::invalid(
                "currency",
                "only cost quotas have a currency",
            ));
        }
        (_, None) => None,
    };
    if metric == Metric::ChildAgents && req.on_exceed == OnExceed::ApprovalRequired {
        return Err(Error::invalid(
            "on_exceed",
            "child_agents is checked at registration: deny or alert_only",
        ));
    }
    for (field, v) in [
        ("action", &req.action),
        ("resource_type", &req.resource_type),
        ("resource_id", &req.resource_id),
    ] {
        if let Some(v) = v {
            validate::text(field, v)?;
            if v.is_empty() {
                return Err(Error::invalid(field, "must not be empty when given"));
            }
        }
    }
    Rule::new(Quota {
        id,
        name: req.name,
        description: req.description,
        scope,
        subject,
        metric,
        action: req.action,
        resource_type: req.resource_type,
        resource_id: req.resource_id,
        window: req.window,
        rolling: req.rolling,
        timezone: req.timezone.unwrap_or_else(|| "UTC".into()),
        burst: req.burst,
        limit: req.limit,
        currency,
        thresholds,
        on_exceed: req.on_exceed,
        updated_at: now,
    })
}

/// A persona's default quota as a rule on each of its agents.
pub fn template_rule(
    persona: &str,
    t: &QuotaTemplate,
    updated_at: DateTime<Utc>,
) -> Result<Rule, Error> {
    let metric = Metric::parse(&t.metric).ok_or_else(|| {
        Error::invalid("quotas.metric", format!("'{}' is not a metric", t.metric))
    })?;
    Rule::new(Quota {
        id: format!("persona:{persona}:{}:{}", t.metric, t.window),
        name: format!("{persona} default {} per {}", t.metric, t.window),
        description: format!("Default quota of every {persona} agent"),
        scope: QuotaScope::Agent,
        subject: None,
        metric,
        action: None,
        resource_type: None,
        resource_id: None,
        window: t.window.clone(),
        rolling: false,
        timezone: "UTC".into(),
        burst: None,
        limit: t.limit as f64,
        currency: (metric == Metric::Cost).then(|| "USD".into()),
        thresholds: DEFAULT_THRESHOLDS.to_vec(),
        on_exceed: OnExceed::Deny,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn cost_is_fixed_point() {
        assert_eq!(to_units("l", Metric::Cost, 12.5), Ok(12_500_000));
        assert_eq!(to_units("l", Metric::Cost, 0.000001), Ok(1));
        assert!(to_units("l", Metric::Cost, 0.0000001).is_err());
        assert!(to_units("l", Metric::Requests, 1.5).is_err());
        assert!(to_units("l", Metric::Requests, -1.0).is_err());
        assert!(to_units("l", Metric::Requests, f64::NAN).is_err());
        assert_eq!(from_units(Metric::Cost, 12_500_000), 12.5);
    }

    #[test]
    fn days_align_to_the_time_zone() {
        let paris: Tz = "Europe/Paris".parse().unwrap_or(chrono_tz::UTC);
        // 23:30 UTC on 1 March is 00:30 on 2 March in Paris.
        let (start, end) = calendar_bounds(Unit::Day, paris, at("2026-03-01T23:30:00Z"));
        assert_eq!(start, at("2026-03-01T23:00:00Z"));
        assert_eq!(end, at("2026-03-02T23:00:00Z"));
        // The day DST starts in Paris has 23 hours.
        let (start, end) = calendar_bounds(Unit::Day, paris, at("2026-03-29T12:00:00Z"));
        assert_eq!(end - start, Duration::hours(23));
        let (start, end) = calendar_bounds(Unit::Month, chrono_tz::UTC, at("2026-12-31T23:59:59Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
    }

    /// Where the clock goes back an hour (Paris, 25 October 2026: 03:00
    /// CEST becomes 02:00 CET), each of the two real hours the clock shows
    /// 02:xx is a window of its own; the day has 25 hours. Where it jumps
    /// forward, the hour after the jump begins at the jump.
    #[test]
    fn an_hour_is_one_real_hour_when_the_clock_changes() {
        let paris: Tz = "Europe/Paris".parse().unwrap_or(chrono_tz::UTC);
        let hour = |t: &str| calendar_bounds(Unit::Hour, paris, at(t));
        let bounds = |a: &str, b: &str| (at(a), at(b));
        // 02:30 CEST, then 02:30 CET: two windows, two keys.
        assert_eq!(
            hour("2026-10-25T00:30:00Z"),
            bounds("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z")
        );
        assert_eq!(
            hour("2026-10-25T01:30:00Z"),
            bounds("2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z")
        );
        // The hours around them keep the keys they always had.
        assert_eq!(
            hour("2026-10-24T23:59:59Z"),
            bounds("2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z")
        );
        assert_eq!(
            hour("2026-10-25T02:00:00Z"),
            bounds("2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z")
        );
        let (start, end) = calendar_bounds(Unit::Day, paris, at("2026-10-25T12:00:00Z"));
        assert_eq!(end - start, Duration::hours(25));
        // Spring forward: 01:59 CET, then 03:00 CEST, one hour later.
        assert_eq!(
            hour("2026-03-29T00:30:00Z"),
            bounds("2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z")
        );
        assert_eq!(
            hour("2026-03-29T01:00:00Z"),
            bounds("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z")
        );
        // Lord Howe Island moves its clock by half an hour: at 02:00 (+11)
        // back to 01:30 (+10:30). The half hour the clock shows twice is a
        // short window of its own, not half of a 90-minute one.
        let lord_howe: Tz = "Australia/Lord_Howe".parse().unwrap_or(chrono_tz::UTC);
        let hour = |t: &str| calendar_bounds(Unit::Hour, lord_howe, at(t));
        assert_eq!(
            hour("2026-04-04T14:45:00Z"),
            bounds("2026-04-04T14:00:00Z", "2026-04-04T15:00:00Z")
        );
        assert_eq!(
            hour("2026-04-04T15:10:00Z"),
            bounds("2026-04-04T15:00:00Z", "2026-04-04T15:30:00Z")
        );
        assert_eq!(
            hour("2026-04-04T15:40:00Z"),
            bounds("2026-04-04T15:30:00Z", "2026-04-04T16:30:00Z")
        );
    }

    /// Every clock change of every IANA zone from 1970 to 2040, found by
    /// stepping six days at a time and narrowing down to the second.
    fn clock_changes() -> &'static [(Tz, i64)] {
        static CHANGES: std::sync::OnceLock<Vec<(Tz, i64)>> = std::sync::OnceLock::new();
        CHANGES.get_or_init(|| {
            let (from, to, step) = (0i64, 2_208_988_800i64, 6 * 86_400);
            let mut out = Vec::new();
            for tz in chrono_tz::TZ_VARIANTS {
                let mut t = from;
                let mut offset = offset_at(tz, t);
                while t < to {
                    let next = offset_at(tz, t + step);
                    if next != offset {
                        out.push((tz, first_second(t, t + step, |x| offset_at(tz, x) == next)));
                        offset = next;
                    }
                    t += step;
                }
            }
            out
        })
    }

    /// A minute or an hour window at `t`: it holds `t`, lasts at most the
    /// unit, the clock shows one minute or hour all through it, the windows
    /// before and after it meet it, and a time the clock shows once, with
    /// no change in its hour, keeps the key it always had.
    fn check_clock_window(unit: Unit, tz: Tz, t: DateTime<Utc>) -> Result<(), String> {
        let (start, end) = calendar_bounds(unit, tz, t);
        let most = if unit == Unit::Hour { 3600 } else { 60 };
        let span = (end - start).num_seconds();
        let whole = |x: DateTime<Utc>| x.timestamp_subsec_nanos() == 0;
        let shown = |x: DateTime<Utc>| {
            let local = x.with_timezone(&tz).naive_local();
            let minute = if unit == Unit::Hour {
                0
            } else {
                local.minute()
            };
            (local.date(), local.hour(), minute)
        };
        let last = end - Duration::milliseconds(1);
        let ok = start <= t
            && t < end
            && (1..=most).contains(&span)
            && whole(start)
            && whole(end)
            && shown(start) == shown(last)
            && calendar_bounds(unit, tz, end).0 == end
            && calendar_bounds(unit, tz, last).0 == start
            && calendar_bounds(unit, tz, start - Duration::milliseconds(1)).1 == start;
        if !ok {
            return Err(format!("{unit:?} in {tz} at {t}: [{start}, {end})"));
        }
        // The key an hour had before repeated hours got their own.
        let local = t.with_timezone(&tz).naive_local();
        let naive = match unit {
            Unit::Hour => local.with_minute(0).and_then(|x| x.with_second(0)),
            _ => local.with_second(0),
        }
        .and_then(|x| x.with_nanosecond(0));
        if let Some(chrono::LocalResult::Single(old)) = naive.map(|n| tz.from_local_datetime(&n)) {
            let old = old.with_timezone(&Utc);
            if offset_at(tz, old.timestamp()) == offset_at(tz, t.timestamp()) && old != start {
                return Err(format!("{unit:?} in {tz} at {t}: key {start}, was {old}"));
            }
        }
        Ok(())
    }

    #[test]
    fn every_hour_around_every_clock_change_is_one_real_hour() {
        let changes = clock_changes();
        assert!(changes.len() > 10_000, "{} changes found", changes.len());
        for &(tz, change) in changes {
            for d in [
                -3601, -3600, -1801, -1, 0, 1, 59, 60, 1799, 1800, 3599, 3600, 5400,
            ] {
                let t = DateTime::from_timestamp(change + d, 500_000_000).unwrap_or_default();
                check_clock_window(Unit::Hour, tz, t).unwrap();
                check_clock_window(Unit::Minute, tz, t).unwrap();
            }
        }
    }

    /// Days and months around every clock change of every zone are
    /// exactly the times whose local date (month) is one: they hold the
    /// time asked about, meet end to end, and begin and end where the
    /// local date does, midnight or, where the clock skips it, the jump.
    /// (Not where the clock was set back across midnight, as St. John's
    /// did until 2011: a local date there is not one stretch of time.)
    #[test]
    fn days_around_every_clock_change_are_local_dates() {
        let date_at = |tz: Tz, t: i64| {
            DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive()
        };
        for &(tz, change) in clock_changes() {
            if date_at(tz, change) < date_at(tz, change - 1) {
                continue;
            }
            for d in [-86_401, -3601, -1, 0, 1, 3600, 86_400] {
                let t = DateTime::from_timestamp(change + d, 0).unwrap_or_default();
                for unit in [Unit::Day, Unit::Month] {
                    let (start, end) = calendar_bounds(unit, tz, t);
                    let at = format!("{unit:?} in {tz} at {t}: [{start}, {end})");
                    let date = |x: DateTime<Utc>| {
                        let local = x.with_timezone(&tz).date_naive();
                        let day = if unit == Unit::Day { local.day() } else { 1 };
                        (local.year(), local.month(), day)
                    };
                    let second = Duration::seconds(1);
                    assert!(start <= t && t < end, "{at}");
                    assert_eq!(calendar_bounds(unit, tz, end).0, end, "{at}");
                    assert_eq!(date(start), date(end - second), "{at}");
                    assert_ne!(date(start - second), date(start), "{at}");
                    assert_ne!(date(end), date(end - second), "{at}");
                }
            }
        }
    }

    #[test]
    fn exactly_at_the_limit_is_allowed_and_one_more_is_not() {
        assert!(admits(99, 1, 100));
        assert!(!admits(100, 1, 100));
        assert!(admits(99, 0, 100));
        assert!(!admits(100, 0, 100));
        assert!(!admits(0, 0, 0));
        assert!(!admits(90, 11, 100));
    }

    #[test]
    fn thresholds_fire_once_when_crossed() {
        assert_eq!(crossed(49, 50, 100, &[50, 80, 95]), vec![50]);
        assert_eq!(crossed(50, 51, 100, &[50, 80, 95]), Vec::<u32>::new());
        assert_eq!(crossed(10, 96, 100, &[50, 80, 95]), vec![50, 80, 95]);
        assert_eq!(highest_reached(81, 100, &[50, 80, 95]), Some(80));
        assert_eq!(highest_reached(49, 100, &[50, 80, 95]), None);
    }

    #[test]
    fn rules_reject_nonsense() {
        let base = || PutQuota {
            name: "q".into(),
            metric: "requests".into(),
            window: "day".into(),
            limit: 10.0,
            ..Default::default()
        };
        let now = Utc::now();
        assert!(rule_from_request("x".into(), base(), None, now).is_ok());
        for bad in [
            PutQuota {
                metric: "calories".into(),
                ..base()
            },
            PutQuota {
                window: "fortnight".into(),
                ..base()
            },
            PutQuota {
                limit: -1.0,
                ..base()
            },
            PutQuota {
                timezone: Some("Mars/Base".into()),
                ..base()
            },
            PutQuota {
                thresholds: Some(vec![0]),
                ..base()
            },
            PutQuota {
                currency: Some("USD".into()),
                ..base()
            },
            PutQuota {
                burst: Some(5),
                ..base()
            },
            PutQuota {
                metric: "child_agents".into(),
                window: "live".into(),
                ..base()
            },
            PutQuota {
                window: "live".into(),
                ..base()
            },
        ] {
            assert!(
                rule_from_request("x".into(), bad.clone(), None, now).is_err(),
                "{bad:?}"
            );
        }
    }

    /// A rate rule as requested.
    fn rate(metric: &str, limit: f64, burst: Option<u64>) -> Result<Rule, Error> {
        let req = PutQuota {
            name: "rate".into(),
            metric: metric.into(),
            window: "second".into(),
            limit,
            burst,
            ..Default::default()
        };
        rule_from_request("x".into(), req, None, Utc::now())
    }

    /// An estimate in another currency is refused; a gateway tool's, which
    /// has none of its own, counts in the quota's.
    #[test]
    fn a_tools_cost_counts_in_the_quotas_currency() {
        let req = PutQuota {
            name: "spend".into(),
            metric: "cost".into(),
            window: "day".into(),
            limit: 100.0,
            currency: Some("EUR".into()),
            ..Default::default()
        };
        let euros = rule_from_request("x".into(), req, None, Utc::now()).unwrap();
        let dollars = steward_types::UsageEstimate {
            cost: Some(2.5),
            ..Default::default()
        };
        let refused = euros.estimate(&dollars).unwrap_err();
        assert!(refused.message.contains("does not convert"), "{refused:?}");
        let tool = steward_types::UsageEstimate {
            in_each_quotas_currency: true,
            ..dollars.clone()
        };
        assert_eq!(euros.estimate(&tool), Ok(2_500_000));
        let in_euros = steward_types::UsageEstimate {
            currency: Some("EUR".into()),
            ..dollars
        };
        assert_eq!(euros.estimate(&in_euros), Ok(2_500_000));
    }

    /// How many `cost`-unit requests at the same instant a fresh limit admits.
    fn at_once(per_second: i64, burst: i64, cost: i64) -> i64 {
        let (mut tat, mut n) = (Tat::at(0), 0);
        while let Ok(t) = gcra(tat, 1_000_000, per_second, burst, cost) {
            (tat, n) = (t, n + 1);
        }
        n
    }

    #[test]
    fn a_burst_is_admitted_whole_whatever_the_rate() {
        // 3 a second, burst 1: one earned back every 333333⅓ µs.
        let t = gcra(Tat::at(0), 0, 3, 1, 1).unwrap();
        assert_eq!(
            t,
            Tat {
                us: 333_334,
                behind: 2
            }
        );
        assert_eq!(gcra(t, 1, 3, 1, 1), Err(333_333));
        assert_eq!(gcra(t, 333_333, 3, 1, 1), Err(1));
        assert!(gcra(t, 333_334, 3, 1, 1).is_ok());
        assert_eq!(at_once(3, 1, 1), 1);
        assert_eq!(at_once(3, 3, 1), 3);
        assert_eq!(at_once(7, 3, 3), 1);
        assert_eq!(at_once(7, 3, 1), 3);
        assert_eq!(at_once(7, 3, 4), 0);
        // Three a second, burst 3, taken all at once every second for a
        // minute: exact, with no drift.
        let mut tat = Tat::at(0);
        for second in 0..60 {
            let now = second * 1_000_000;
            for _ in 0..3 {
                tat = gcra(tat, now, 3, 3, 1).unwrap();
            }
            assert_eq!(gcra(tat, now, 3, 3, 1), Err(333_334), "second {second}");
        }
        assert_eq!(gcra_remaining(tat, 60_000_000, 3, 3), 3);
        assert_eq!(gcra_remaining(Tat::at(0), 0, 7, 3), 3);
        // A time stored before remainders existed reads as exact.
        assert_eq!(gcra(Tat::at(500), 0, 3, 1, 1), Err(500));
    }

    #[test]
    fn cost_rates_are_in_currency_units() {
        let window = |r: Result<Rule, Error>| r.map(|r| r.window);
        assert_eq!(
            window(rate("cost", 2.5, None)),
            Ok(Window::Rate {
                per_second: 2_500_000,
                burst: 2_500_000
            })
        );
        // Above one dollar a second, with a burst in millionths, as stored
        // rules have always had it.
        let big = rate("cost", 1000.0, Some(5_000_000_000)).unwrap();
        assert_eq!(
            big.window,
            Window::Rate {
                per_second: 1_000_000_000,
                burst: 5_000_000_000
            }
        );
        assert_eq!(big.window_label(), "second (burst 5000)");
        assert_eq!(
            window(rate("cost", 0.5, Some(2_000_000))),
            Ok(Window::Rate {
                per_second: 500_000,
                burst: 2_000_000
            })
        );
        assert!(rate("cost", 0.000001, None).is_ok());
        assert!(rate("cost", 1_000_000.0, Some(1_000_000_000_000)).is_ok());
        let too_fast = rate("cost", 1_000_001.0, None).unwrap_err();
        assert!(
            too_fast.message.contains("0.000001 to 1000000"),
            "{too_fast:?}"
        );
        assert!(rate("cost", 0.0, None).is_err());
        assert!(rate("cost", 1.0, Some(0)).is_err());
        assert!(rate("cost", 1.0, Some(1_000_000_000_001)).is_err());
        assert_eq!(
            window(rate("requests", 10.0, Some(20))),
            Ok(Window::Rate {
                per_second: 10,
                burst: 20
            })
        );
        let slow = rate("requests", 0.0, None).unwrap_err();
        assert!(slow.message.contains("1 to 1000000"), "{slow:?}");
        assert!(rate("requests", 1_000_001.0, None).is_err());
        assert!(rate("tokens", 10.0, Some(1_000_001)).is_err());
    }

    #[test]
    fn rolling_usage_leaves_a_slice_late_never_early() {
        let ms = |s: &str| at(s).timestamp_millis();
        // Spent at 12:00:00.999: still counted at 12:01:00.999, gone at 12:01:01.
        let spent = rolling_slice(Unit::Minute, at("2026-03-01T12:00:00.999Z")).0;
        let (from, _, _) = rolling_range(Unit::Minute, at("2026-03-01T12:01:00.999Z"));
        assert!(from <= spent);
        let (from, _, _) = rolling_range(Unit::Minute, at("2026-03-01T12:01:01Z"));
        assert!(from > spent);
        assert_eq!(
            rolling_leaves_at(Unit::Minute, spent),
            ms("2026-03-01T12:01:01Z")
        );
        let (from, slice, len) = rolling_range(Unit::Hour, at("2026-03-01T12:30:30Z"));
        assert_eq!((slice - from) / len, ROLLING_SLICES);
        // The slices a window sums cannot overflow, however full each is.
        assert!(
            i128::from(USAGE_CAP) * i128::from(ROLLING_SLICES + 1) + i128::from(USAGE_CAP)
                <= i128::from(i64::MAX)
        );
    }

    proptest! {
        /// Every calendar window holds `now`, is aligned, and the next one
        /// starts where it ends.
        #[test]
        fn calendar_windows_tile_time(secs in 0i64..4_000_000_000, unit in 0usize..4, tz in 0usize..4) {
            let unit = [Unit::Minute, Unit::Hour, Unit::Day, Unit::Month][unit];
            let tz: Tz = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"][tz].parse().unwrap_or(chrono_tz::UTC);
            let now = DateTime::from_timestamp(secs, 0).unwrap_or_default();
            let (start, end) = calendar_bounds(unit, tz, now);
            prop_assert!(start <= now && now < end);
            let (next_start, _) = calendar_bounds(unit, tz, end);
            prop_assert_eq!(next_start, end);
            let (same, _) = calendar_bounds(unit, tz, end - Duration::milliseconds(1));
            prop_assert_eq!(same, start);
        }

        /// No minute or hourly window, in any IANA zone, at any time, is
        /// longer than a minute or an hour of real time: near a clock
        /// change or anywhere.
        #[test]
        fn no_hourly_window_is_longer_than_an_hour(change in 0usize..1_000_000, d in -7_300i64..7_300, ms in 0i64..1000, zone in 0usize..chrono_tz::TZ_VARIANTS.len(), secs in 0i64..4_000_000_000) {
            let changes = clock_changes();
            let (tz, at_change) = changes[change % changes.len()];
            let near = DateTime::from_timestamp_millis((at_change + d) * 1000 + ms).unwrap_or_default();
            let anywhere = DateTime::from_timestamp_millis(secs * 1000 + ms).unwrap_or_default();
            for unit in [Unit::Minute, Unit::Hour] {
                prop_assert_eq!(check_clock_window(unit, tz, near), Ok(()));
                prop_assert_eq!(check_clock_window(unit, chrono_tz::TZ_VARIANTS[zone], anywhere), Ok(()));
            }
        }

        /// Admitting requests one by one reaches the limit exactly and never passes it.
        #[test]
        fn admission_never_overshoots(limit in 0i64..500, estimates in proptest::collection::vec(0i64..20, 0..200)) {
            let mut used = 0;
            for e in estimates {
                if admits(used, e, limit) { used += e; }
                prop_assert!(used <= limit);
            }
            let mut calls = 0;
            while admits(calls, 1, limit) { calls += 1; }
            prop_assert_eq!(calls, limit);
        }

        /// GCRA: over any span, at most burst + span x rate units are
        /// admitted, whatever the rate (one that does not divide a second
        /// into whole microseconds too) and the size of each request; a
        /// refused request that can fit is admitted after the wait given,
        /// not before; and once idle long enough, the whole burst is.
        #[test]
        fn gcra_respects_rate_and_burst(rate in 1i64..1_000_000, burst in 1i64..50, steps in proptest::collection::vec((0i64..5_000, 1i64..5), 1..400)) {
            let (mut tat, mut now) = (Tat::default(), 0i64);
            let mut admitted: Vec<(i64, i64)> = Vec::new();
            for (gap, cost) in steps {
                now += gap;
                match gcra(tat, now, rate, burst, cost) {
                    Ok(t) => {
                        prop_assert!(t.behind >= 0 && t.behind < rate);
                        tat = t;
                        admitted.push((now, cost));
                    }
                    Err(wait) if cost <= burst => {
                        prop_assert!(wait >= 1);
                        prop_assert!(gcra(tat, now + wait, rate, burst, cost).is_ok());
                        prop_assert!(gcra(tat, now + wait - 1, rate, burst, cost).is_err());
                    }
                    Err(_) => {}
                }
            }
            for (i, (start, _)) in admitted.iter().enumerate() {
                let mut sum = 0i128;
                for (at, cost) in &admitted[i..] {
                    sum += i128::from(*cost);
                    let bound = i128::from(burst) * 1_000_000 + i128::from(at - start) * i128::from(rate);
                    prop_assert!(sum * 1_000_000 <= bound, "{} admitted in {} µs", sum, at - start);
                }
            }
            // Idle until the arrival time: the whole burst at once, then nothing.
            let idle = tat.us.max(now);
            prop_assert_eq!(gcra_remaining(tat, idle, rate, burst), burst);
            let full = gcra(tat, idle, rate, burst, burst);
            prop_assert!(full.is_ok());
            if let Ok(t) = full {
                prop_assert!(gcra(t, idle, rate, burst, 1).is_err());
            }
        }

        /// A rolling window admits, over any stretch as long as the
        /// window, at most its limit: the rule the store applies, summing
        /// the slices of [`rolling_range`].
        #[test]
        fn rolling_windows_never_overshoot(limit in 1i64..30, start in 0i64..1_000_000_000_000, steps in proptest::collection::vec((0i64..4_000, 1i64..4), 1..300)) {
            let mut slices = std::collections::BTreeMap::<i64, i64>::new();
            let (mut now, mut admitted) = (start, Vec::new());
            for (gap, cost) in steps {
                now += gap;
                let t = DateTime::from_timestamp_millis(now).unwrap_or_default();
                let (from, slice, _) = rolling_range(Unit::Minute, t);
                let used: i64 = slices.range(from..=slice).map(|(_, u)| u).sum();
                if admits(used, cost, limit) {
                    *slices.entry(slice).or_default() += cost;
                    admitted.push((now, cost));
                }
            }
            let length = Unit::Minute.length().num_milliseconds();
            for (end, _) in &admitted {
                let within: i64 = admitted
                    .iter()
                    .filter(|(at, _)| end - length <= *at && at <= end)
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(within <= limit, "{} in the minute to {}", within, end);
            }
        }
    }
}
