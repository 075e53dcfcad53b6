//! Behavioural baselines over the wire: a tenant's settings, the alerts
//! raised when an agent acts out of character, and an agent's baseline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A kind of departure from an agent's baseline.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// More decisions in an hour than usual.
    Requests,
    /// More denials in an hour than usual.
    Denials,
    /// More bytes (reported outcomes, MCP responses) in an hour than usual.
    Bytes,
    /// More records (reported outcomes) in an hour than usual.
    Records,
    /// More child agents registered in an hour than usual.
    Spawns,
    /// Acting at an hour of the day it never acts in.
    Hours,
    /// An action on a resource type it has never used.
    NewAction,
}

impl Signal {
    /// Every signal, in a fixed order.
    pub const ALL: [Signal; 7] = [
        Signal::Requests,
        Signal::Denials,
        Signal::Bytes,
        Signal::Records,
        Signal::Spawns,
        Signal::Hours,
        Signal::NewAction,
    ];

    /// The signals that are hourly counts.
    pub const COUNTS: [Signal; 5] = [
        Signal::Requests,
        Signal::Denials,
        Signal::Bytes,
        Signal::Records,
        Signal::Spawns,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Requests => "requests",
            Signal::Denials => "denials",
            Signal::Bytes => "bytes",
            Signal::Records => "records",
            Signal::Spawns => "spawns",
            Signal::Hours => "hours",
            Signal::NewAction => "new_action",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// How a tenant's agents are watched (`GET`/`PUT /v1/behaviour/settings`).
/// Every field has a default, so `{}` restores them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BehaviourSettings {
    /// Whether departures raise alerts (default true). Activity is counted
    /// either way, so turning it back on needs no new learning.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Days of history each hour is compared with, 1..=90 (default 14).
    #[serde(default = "default_baseline_days")]
    pub baseline_days: u32,
    /// Days an agent must have acted for before anything is flagged, 0..=30
    /// (default 3).
    #[serde(default = "default_learning_days")]
    pub learning_days: u32,
    /// How many times its busiest baseline hour a count must exceed to be
    /// flagged, 1.5..=100 (default 2).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Signals whose alert also suspends the agent until a person resumes
    /// it (default none: alert only).
    #[serde(default)]
    pub suspend_on: Vec<Signal>,
}

fn yes() -> bool {
    true
}
fn default_baseline_days() -> u32 {
    14
}
fn default_learning_days() -> u32 {
    3
}
fn default_factor() -> f64 {
    2.0
}

impl Default for BehaviourSettings {
    fn default() -> Self {
        BehaviourSettings {
            enabled: true,
            baseline_days: default_baseline_days(),
            learning_days: default_learning_days(),
            factor: default_factor(),
            suspend_on: Vec::new(),
        }
    }
}

/// An alert: an agent acted out of character in one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BehaviourAlert {
    /// `bha_...`.
    pub id: String,
    /// The agent.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// What departed from the baseline.
    pub signal: Signal,
    /// What it is about: `action on Type` for `new_action`, the hour of the
    /// day for `hours`, empty for counts.
    pub subject: String,
    /// The hour it happened in (its start).
    pub hour: DateTime<Utc>,
    /// What happened in that hour.
    pub observed: u64,
    /// The busiest baseline hour's count, or for `hours` how many hours of
    /// the day it usually acts in.
    pub usual: u64,
    /// The count above which it was flagged (counts; 0 otherwise).
    pub threshold: u64,
    /// Why, in one sentence.
    pub message: String,
    /// Whether the alert suspended the agent.
    pub suspended: bool,
    /// `open` or `resolved`.
    pub status: String,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who resolved it (token id).
    pub resolved_by: Option<String>,
    /// `expected` (normal after all) or `confirmed` (a real problem).
    pub resolution: Option<String>,
    /// What the person who resolved it said.
    pub note: Option<String>,
}

/// Filters for listing alerts, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only this agent's (id or name).
    pub agent: Option<String>,
    /// `open` or `resolved`.
    pub status: Option<String>,
    /// Only this signal.
    pub signal: Option<String>,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// Resolving an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveAlert {
    /// `expected` (the activity was normal after all: it joins the baseline
    /// as any hour does) or `confirmed` (a real problem, dealt with).
    pub resolution: String,
    /// A note for the record.
    #[serde(default)]
    pub note: Option<String>,
}

/// One hourly count of an agent's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SignalBaseline {
    /// The count.
    pub signal: Signal,
    /// Its busiest hour in the baseline window.
    pub busiest_hour: u64,
    /// Above this, an hour is flagged.
    pub threshold: u64,
    /// The hour being filled now.
    pub this_hour: u64,
    /// Its total over the baseline window.
    pub total: u64,
}

/// An action the agent has used on a resource type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FootprintEntry {
    /// The action.
    pub action: String,
    /// The resource type.
    pub resource_type: String,
    /// Decisions asked for with it.
    pub uses: u64,
    /// First time.
    pub first_seen: DateTime<Utc>,
    /// Last time.
    pub last_seen: DateTime<Utc>,
}

/// What normal looks like for one agent (`GET /v1/agents/{id}/baseline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Baseline {
    /// The agent.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// When it was first seen acting.
    pub first_seen: Option<DateTime<Utc>>,
    /// Until when it is still learning (nothing is flagged before).
    pub learning_until: Option<DateTime<Utc>>,
    /// The window the baseline covers, in days.
    pub baseline_days: u32,
    /// Hours it acted in within the window.
    pub active_hours: u64,
    /// Hours of the day (UTC, 0..=23) it acted in within the window.
    pub hours_of_day: Vec<u32>,
    /// Each count: busiest hour, threshold, this hour.
    pub signals: Vec<SignalBaseline>,
    /// The actions it has used, on which resource types.
    pub footprint: Vec<FootprintEntry>,
    /// Its alerts still open.
    pub open_alerts: u64,
    /// How far the log has been read for baselines (sequence number).
    pub observed_through: i64,
}
