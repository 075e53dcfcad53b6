//! Quotas, budgets and rate limits; usage; decision outcomes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What a quota counts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Every decision that passes policy.
    Requests,
    /// Decisions for the quota's `action` (default `call_tool`, the MCP gateway's).
    ToolCalls,
    /// Model tokens (estimated in the request, settled by the outcome).
    Tokens,
    /// Spend in the quota's currency, fixed-point to 1e-6.
    Cost,
    /// Records accessed.
    Records,
    /// Bytes accessed.
    Bytes,
    /// Live agents spawned below the agent (checked at registration).
    ChildAgents,
}

impl Metric {
    /// Every metric, for messages.
    pub const ALL: [Metric; 7] = [
        Metric::Requests,
        Metric::ToolCalls,
        Metric::Tokens,
        Metric::Cost,
        Metric::Records,
        Metric::Bytes,
        Metric::ChildAgents,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::ToolCalls => "tool_calls",
            Metric::Tokens => "tokens",
            Metric::Cost => "cost",
            Metric::Records => "records",
            Metric::Bytes => "bytes",
            Metric::ChildAgents => "child_agents",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Who a quota applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// One agent, and everything spawned below it.
    Agent,
    /// All agents of a persona together.
    Persona,
    /// All agents of a team together.
    Team,
    /// All agents owned by one human together.
    Owner,
    /// The whole tenant.
    Tenant,
}

impl QuotaScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::Agent => "agent",
            QuotaScope::Persona => "persona",
            QuotaScope::Team => "team",
            QuotaScope::Owner => "owner",
            QuotaScope::Tenant => "tenant",
        }
    }
}

/// What happens to a decision that would go over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Deny it.
    #[default]
    Deny,
    /// Hold it for a human's approval.
    ApprovalRequired,
    /// Allow it, count it, and alert.
    AlertOnly,
}

impl OnExceed {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExceed::Deny => "deny",
            OnExceed::ApprovalRequired => "approval_required",
            OnExceed::AlertOnly => "alert_only",
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(f64),
    Text(String),
}

impl NumOrText {
    fn value<E: serde::de::Error>(self) -> Result<f64, E> {
        match self {
            NumOrText::Num(n) => Ok(n),
            NumOrText::Text(t) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| E::custom(format!("'{t}' is not a number"))),
        }
    }
}

/// A number or a decimal string (`"12.50"`), for amounts.
fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    NumOrText::deserialize(d)?.value()
}

fn opt_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Option::<NumOrText>::deserialize(d)?
        .map(NumOrText::value)
        .transpose()
}

/// A quota rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// `quo_...`, or `persona:NAME:METRIC:WINDOW` for a persona's default.
    pub id: String,
    /// Unique in the tenant.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Who it applies to.
    pub scope: QuotaScope,
    /// The agent id, persona name, team name or owner e-mail (absent for a tenant).
    pub subject: Option<String>,
    /// What it counts.
    pub metric: Metric,
    /// Count only decisions for this action.
    pub action: Option<String>,
    /// Count only decisions on this resource type.
    pub resource_type: Option<String>,
    /// Count only decisions on this resource id.
    pub resource_id: Option<String>,
    /// `second` (a rate limit), `minute`, `hour`, `day`, `month`, or `live` (child_agents).
    pub window: String,
    /// A sliding window of that length instead of calendar-aligned.
    pub rolling: bool,
    /// IANA time zone calendar windows align to. An hour or minute is one
    /// of the local clock's, never longer than a real one: an hour the
    /// clock shows twice is two windows.
    pub timezone: String,
    /// Rate limits: requests allowed at once (default: the limit).
    pub burst: Option<u64>,
    /// The limit per window (per second for a rate limit).
    pub limit: f64,
    /// ISO 4217 code, for cost.
    pub currency: Option<String>,
    /// Percentages of the limit that warn, ascending.
    pub thresholds: Vec<u32>,
    /// What a decision over the limit gets.
    pub on_exceed: OnExceed,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Create or replace a quota (by name). Sending the same rule again changes
/// nothing; changing its window, `rolling` or time zone restarts its
/// counter: usage is not carried into the new window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PutQuota {
    /// Unique in the tenant.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Who it applies to.
    pub scope: Option<QuotaScope>,
    /// Agent id or name, persona name, team name, owner e-mail or id; absent for `tenant`.
    #[serde(default)]
    pub subject: Option<String>,
    /// What it counts: requests, tool_calls, tokens, cost, records, bytes, child_agents.
    pub metric: String,
    /// Count only decisions for this action (tool_calls default: `call_tool`).
    #[serde(default)]
    pub action: Option<String>,
    /// Count only decisions on this resource type.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Count only decisions on this resource id.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// `second`, `minute`, `hour`, `day`, `month` or `live`.
    pub window: String,
    /// Sliding instead of calendar-aligned.
    #[serde(default)]
    pub rolling: bool,
    /// IANA time zone (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Rate limits: burst size.
    #[serde(default)]
    pub burst: Option<u64>,
    /// The limit (a number, or a decimal string for cost).
    #[serde(deserialize_with = "amount")]
    pub limit: f64,
    /// ISO 4217 code (cost only; default `USD`).
    #[serde(default)]
    pub currency: Option<String>,
    /// Warning percentages (default 50, 80, 95).
    #[serde(default)]
    pub thresholds: Option<Vec<u32>>,
    /// deny (default), approval_required or alert_only.
    #[serde(default)]
    pub on_exceed: OnExceed,
}

/// Usage a request expects to consume, reserved when it is allowed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageEstimate {
    /// Model tokens.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Spend (a number or a decimal string).
    #[serde(default, deserialize_with = "opt_amount")]
    pub cost: Option<f64>,
    /// Currency of `cost` (default `USD`).
    #[serde(default)]
    pub currency: Option<String>,
    /// Records accessed.
    #[serde(default)]
    pub records: Option<u64>,
    /// Bytes accessed.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Set by the MCP gateway for a tool's registered cost estimate, which
    /// has no currency of its own: `cost` then counts in each cost quota's
    /// own currency. Never read from a request.
    #[serde(skip)]
    pub in_each_quotas_currency: bool,
}

/// Where one quota stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaStatus {
    /// The quota.
    pub quota_id: String,
    /// Its name.
    pub name: String,
    /// What it counts.
    pub metric: Metric,
    /// Whose usage: agent id, persona, team, owner or the tenant.
    pub subject: String,
    /// Used in the current window (reservations included).
    pub used: f64,
    /// The limit.
    pub limit: f64,
    /// `limit - used`, never negative.
    pub remaining: f64,
    /// Its window.
    pub window: String,
    /// When the current window began (calendar windows).
    pub window_start: Option<DateTime<Utc>>,
    /// When usage next drops (window end; for rolling and rate limits, when it is fully free).
    pub resets_at: Option<DateTime<Utc>>,
    /// Currency, for cost.
    pub currency: Option<String>,
}

/// A threshold crossed: the limit is getting close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaWarning {
    /// The quota.
    pub quota_id: String,
    /// Its name.
    pub name: String,
    /// The highest threshold reached, in percent.
    pub threshold: u32,
    /// Where it stands.
    pub status: QuotaStatus,
    /// For people.
    pub message: String,
}

/// What a decision's caller reports after acting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// `success` (default) or `error`.
    #[serde(default)]
    pub status: Option<String>,
    /// Actual tokens.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Actual spend (currency of the estimate).
    #[serde(default, deserialize_with = "opt_amount")]
    pub cost: Option<f64>,
    /// Actual records.
    #[serde(default)]
    pub records: Option<u64>,
    /// Actual bytes.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Free text for the audit record (an error message, say): at most
    /// 4096 bytes, no NUL character.
    #[serde(default)]
    pub detail: Option<String>,
}

/// How a reservation was settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Settlement {
    /// The decision.
    pub decision_id: String,
    /// Per quota: estimate and actual.
    pub entries: Vec<SettledEntry>,
    /// When.
    pub settled_at: DateTime<Utc>,
}

/// One quota's share of a settlement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettledEntry {
    /// The quota.
    pub quota_id: String,
    /// Whose usage.
    pub subject: String,
    /// What it counts.
    pub metric: Metric,
    /// Reserved at decision time.
    pub estimate: f64,
    /// Reported.
    pub actual: f64,
}

/// Filters for `/v1/usage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The quotas that apply to this agent (id or name), with its usage.
    pub agent: Option<String>,
    /// Only this quota (id or name).
    pub quota: Option<String>,
    /// Past windows to include per quota (default 7, at most 100).
    pub history: Option<u32>,
}

/// One quota's usage for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    /// The rule.
    pub quota: Quota,
    /// The current window.
    pub status: QuotaStatus,
    /// Past windows, newest first.
    pub history: Vec<WindowUsage>,
}

/// Usage of one past window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WindowUsage {
    /// When it began.
    pub start: DateTime<Utc>,
    /// Used in it.
    pub used: f64,
}

/// An amount of money: at least two decimals, and as many more (up to the
/// millionths costs are counted in) as it needs, so a tool call's 0.0025
/// does not read as 0.00.
pub fn money_text(v: f64) -> String {
    let full = format!("{v:.6}");
    let trimmed = full.trim_end_matches('0');
    let decimals = trimmed.split('.').nth(1).map_or(0, str::len);
    if decimals >= 2 {
        trimmed.to_string()
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_keeps_what_a_small_cost_needs() {
        assert_eq!(super::money_text(0.0025), "0.0025");
        assert_eq!(super::money_text(12.5), "12.50");
        assert_eq!(super::money_text(3.0), "3.00");
        assert_eq!(super::money_text(0.000001), "0.000001");
        assert_eq!(super::money_text(1234.567891), "1234.567891");
    }
}
