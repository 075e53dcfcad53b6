//! How each wire type looks in a list table and in a detail view.

use steward_types::{
    Agent, ApiKey, ApiToken, AuditEntry, Baseline, BehaviourAlert, BehaviourSettings, Campaign,
    CampaignItem, Delegation, DelegationSettings, Human, HumanStatus, Issuer, Persona, Quota,
    QuotaScope, QuotaUsage, Role, Team, Tenant, Webhook, WebhookDelivery, WhoAmI,
};

use crate::output::{Detail, Tabular, list, optional_time, or_dash, time};

/// `active`, or `active (orphaned)` when the owner has left.
fn agent_state(agent: &Agent) -> String {
    if agent.orphaned {
        format!("{} (orphaned)", agent.state.as_str())
    } else {
        agent.state.as_str().to_owned()
    }
}

fn human_status(status: HumanStatus) -> &'static str {
    match status {
        HumanStatus::Active => "active",
        HumanStatus::Deactivated => "deactivated",
    }
}

/// `revoked` once revoked, else `active` (expiry shows in its own column).
fn credential_status(revoked_at: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    match revoked_at {
        Some(at) => format!("revoked {}", time(at)),
        None => "active".to_owned(),
    }
}

fn optional(text: Option<&String>) -> String {
    text.map_or_else(|| "-".to_owned(), |t| or_dash(t))
}

impl Tabular for Agent {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "STATE", "RISK", "OWNER", "CREATED"];
    const PLURAL: &'static str = "agents";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            agent_state(self),
            self.risk_tier.as_str().to_owned(),
            self.owner_id.clone(),
            time(&self.created_at),
        ]
    }
}

impl Detail for Agent {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("state", agent_state(self)),
            ("state reason", optional(self.state_reason.as_ref())),
            ("risk tier", self.risk_tier.as_str().to_owned()),
            ("owner", self.owner_id.clone()),
            ("team", optional(self.team_id.as_ref())),
            ("purpose", or_dash(&self.purpose)),
            ("platform", or_dash(&self.platform)),
            ("model", or_dash(&self.model)),
            ("persona", optional(self.persona_id.as_ref())),
            ("roles", list(&self.roles)),
            ("classifications", list(&self.classifications)),
            ("labels", list(&labels)),
            ("parent", optional(self.parent_id.as_ref())),
            ("depth", self.depth.to_string()),
            ("expires", optional_time(self.expires_at.as_ref())),
            ("created", time(&self.created_at)),
            ("updated", time(&self.updated_at)),
            ("last seen", optional_time(self.last_seen_at.as_ref())),
        ]
    }
}

impl Tabular for Human {
    const HEADERS: &'static [&'static str] = &["ID", "EMAIL", "NAME", "STATUS", "CREATED"];
    const PLURAL: &'static str = "humans";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.email.clone(),
            self.display_name.clone(),
            human_status(self.status).to_owned(),
            time(&self.created_at),
        ]
    }
}

impl Detail for Human {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("email", self.email.clone()),
            ("name", self.display_name.clone()),
            ("status", human_status(self.status).to_owned()),
            ("teams", list(&self.teams)),
            ("roles", list(&self.roles)),
            ("created", time(&self.created_at)),
            ("updated", time(&self.updated_at)),
        ]
    }
}

impl Tabular for Team {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "DESCRIPTION", "CREATED"];
    const PLURAL: &'static str = "teams";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            or_dash(&self.description),
            time(&self.created_at),
        ]
    }
}

impl Detail for Team {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("description", or_dash(&self.description)),
            ("created", time(&self.created_at)),
        ]
    }
}

impl Tabular for Role {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "WRITES", "DESCRIPTION", "CREATED"];
    const PLURAL: &'static str = "roles";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            yes_no(self.writes),
            or_dash(&self.description),
            time(&self.created_at),
        ]
    }
}

impl Detail for Role {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("writes", yes_no(self.writes)),
            ("description", or_dash(&self.description)),
            ("created", time(&self.created_at)),
        ]
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

impl Tabular for Persona {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "ROLES", "CLASSIFICATIONS", "CREATED"];
    const PLURAL: &'static str = "personas";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            list(&self.roles),
            list(&self.classifications),
            time(&self.created_at),
        ]
    }
}

impl Detail for Persona {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let quotas: Vec<String> = self
            .quotas
            .iter()
            .map(|q| format!("{} {} per {}", q.limit, q.metric, q.window))
            .collect();
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("description", or_dash(&self.description)),
            ("roles", list(&self.roles)),
            ("classifications", list(&self.classifications)),
            ("quotas", list(&quotas)),
            ("max children", self.max_children.to_string()),
            ("max depth", self.max_depth.to_string()),
            (
                "approval tier",
                self.approval_tier
                    .map_or_else(|| "-".to_owned(), |tier| tier.as_str().to_owned()),
            ),
            ("approval for", list(&self.approval_required_for)),
            ("created", time(&self.created_at)),
        ]
    }
}

impl Tabular for ApiKey {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "NAME",
        "PREFIX",
        "STATUS",
        "EXPIRES",
        "LAST USED",
        "CREATED",
    ];
    const PLURAL: &'static str = "keys";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            or_dash(&self.name),
            self.prefix.clone(),
            credential_status(self.revoked_at.as_ref()),
            optional_time(self.expires_at.as_ref()),
            optional_time(self.last_used_at.as_ref()),
            time(&self.created_at),
        ]
    }
}

impl Detail for ApiKey {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("agent", self.agent_id.clone()),
            ("name", or_dash(&self.name)),
            ("prefix", self.prefix.clone()),
            ("status", credential_status(self.revoked_at.as_ref())),
            ("expires", optional_time(self.expires_at.as_ref())),
            ("last used", optional_time(self.last_used_at.as_ref())),
            ("created", time(&self.created_at)),
        ]
    }
}

impl Tabular for ApiToken {
    const HEADERS: &'static [&'static str] = &[
        "ID", "NAME", "ROLE", "HUMAN", "STATUS", "EXPIRES", "CREATED",
    ];
    const PLURAL: &'static str = "tokens";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.role.as_str().to_owned(),
            optional(self.human_id.as_ref()),
            credential_status(self.revoked_at.as_ref()),
            optional_time(self.expires_at.as_ref()),
            time(&self.created_at),
        ]
    }
}

impl Detail for ApiToken {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("tenant", self.tenant_id.clone()),
            ("name", self.name.clone()),
            ("role", self.role.as_str().to_owned()),
            ("human", optional(self.human_id.as_ref())),
            ("prefix", self.prefix.clone()),
            ("status", credential_status(self.revoked_at.as_ref())),
            ("expires", optional_time(self.expires_at.as_ref())),
            ("last used", optional_time(self.last_used_at.as_ref())),
            ("created", time(&self.created_at)),
        ]
    }
}

impl Tabular for Tenant {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "CREATED"];
    const PLURAL: &'static str = "tenants";
    fn row(&self) -> Vec<String> {
        vec![self.id.clone(), self.name.clone(), time(&self.created_at)]
    }
}

impl Detail for Tenant {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("created", time(&self.created_at)),
        ]
    }
}

impl Tabular for AuditEntry {
    const HEADERS: &'static [&'static str] =
        &["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "REASON"];
    const PLURAL: &'static str = "audit entries";
    fn row(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            time(&self.time),
            format!("{}:{}", self.actor.kind, self.actor.id),
            self.action.clone(),
            format!("{}:{}", self.resource_type, self.resource_id),
            optional(self.reason.as_ref()),
        ]
    }
}

impl Detail for WhoAmI {
    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            WhoAmI::Agent {
                tenant_id,
                agent_id,
                agent_name,
                key_id,
                acting_for,
            } => {
                let mut fields = vec![
                    ("kind", "agent".to_owned()),
                    ("tenant", tenant_id.clone()),
                    ("agent", format!("{agent_name} ({agent_id})")),
                    ("key", key_id.clone()),
                ];
                if let Some(human) = acting_for {
                    fields.push(("acting for", format!("{human} (delegated token)")));
                }
                fields
            }
            WhoAmI::Token {
                tenant_id,
                token_id,
                role,
                human_id,
                platform_admin,
            } => vec![
                ("kind", "token".to_owned()),
                ("tenant", tenant_id.clone()),
                ("token", token_id.clone()),
                ("role", role.as_str().to_owned()),
                ("human", optional(human_id.as_ref())),
                ("platform admin", yes_no(*platform_admin)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use steward_types::{AgentState, RiskTier};

    fn agent() -> Agent {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        Agent {
            id: "ag_1".into(),
            name: "docs-helper".into(),
            owner_id: "hu_1".into(),
            team_id: None,
            purpose: String::new(),
            platform: String::new(),
            model: String::new(),
            persona_id: None,
            roles: vec![],
            classifications: vec!["public".into()],
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            parent_id: None,
            depth: 0,
            expires_at: None,
            state: AgentState::Active,
            state_reason: None,
            risk_tier: RiskTier::Low,
            orphaned: true,
            created_at: at,
            updated_at: at,
            last_seen_at: None,
        }
    }

    #[test]
    fn agent_rows_show_state_risk_and_time() {
        let row = agent().row();
        assert_eq!(row.len(), Agent::HEADERS.len());
        assert_eq!(
            row,
            [
                "ag_1",
                "docs-helper",
                "active (orphaned)",
                "low",
                "hu_1",
                "2025-01-02 03:04"
            ]
        );
    }

    #[test]
    fn agent_details_fill_empty_fields_with_dashes() {
        let fields = agent().fields();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("purpose"), "-");
        assert_eq!(field("labels"), "env=prod");
        assert_eq!(field("classifications"), "public");
        assert_eq!(field("expires"), "-");
    }
}

fn limit_text(q: &Quota) -> String {
    match (&q.currency, q.window.as_str()) {
        (Some(c), _) => format!("{} {c}", steward_types::money_text(q.limit)),
        (None, "second") => format!("{}/s burst {}", q.limit, q.burst.unwrap_or(q.limit as u64)),
        (None, _) => format!("{}", q.limit),
    }
}

fn window_text(q: &Quota) -> String {
    let mut w = q.window.clone();
    if q.rolling {
        w = format!("rolling {w}");
    }
    if q.timezone != "UTC" && !q.rolling && q.window != "second" && q.window != "live" {
        w = format!("{w} ({})", q.timezone);
    }
    w
}

impl Tabular for Quota {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "SCOPE",
        "SUBJECT",
        "METRIC",
        "WINDOW",
        "LIMIT",
        "ON EXCEED",
    ];
    const PLURAL: &'static str = "quotas";
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.scope.as_str().into(),
            or_dash(self.subject.as_deref().unwrap_or_default()),
            self.metric.as_str().into(),
            window_text(self),
            limit_text(self),
            self.on_exceed.as_str().into(),
        ]
    }
}

impl Detail for Quota {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("description", or_dash(&self.description)),
            ("scope", self.scope.as_str().into()),
            (
                "subject",
                or_dash(self.subject.as_deref().unwrap_or_default()),
            ),
            ("metric", self.metric.as_str().into()),
            (
                "action",
                or_dash(self.action.as_deref().unwrap_or_default()),
            ),
            (
                "resource type",
                or_dash(self.resource_type.as_deref().unwrap_or_default()),
            ),
            (
                "resource id",
                or_dash(self.resource_id.as_deref().unwrap_or_default()),
            ),
            ("window", window_text(self)),
            ("limit", limit_text(self)),
            (
                "thresholds",
                self.thresholds
                    .iter()
                    .map(|t| format!("{t}%"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("on exceed", self.on_exceed.as_str().into()),
            ("updated", time(&self.updated_at)),
        ]
    }
}

impl Tabular for Webhook {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "URL", "EVENTS", "CREATED"];
    const PLURAL: &'static str = "webhooks";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.url.clone(),
            if self.events.is_empty() {
                "all".into()
            } else {
                list(&self.events)
            },
            time(&self.created_at),
        ]
    }
}

impl Tabular for WebhookDelivery {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "EVENT",
        "STATUS",
        "ATTEMPTS",
        "HTTP",
        "LAST ERROR",
        "CREATED",
    ];
    const PLURAL: &'static str = "deliveries";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.event.clone(),
            self.status.as_str().into(),
            self.attempts.to_string(),
            self.response_status.map_or("-".into(), |s| s.to_string()),
            or_dash(self.last_error.as_deref().unwrap_or_default()),
            time(&self.created_at),
        ]
    }
}

/// `2h 5m`, `45s`, `3d 4h`.
pub fn duration_text(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {secs}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// One quota as a bar: name, a 30-cell bar, used/limit, window, time to reset.
pub fn usage_bar(u: &QuotaUsage, now: chrono::DateTime<chrono::Utc>) -> String {
    const CELLS: usize = 30;
    let s = &u.status;
    let share = if s.limit > 0.0 {
        (s.used / s.limit).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (share * CELLS as f64).round() as usize;
    let figure = |v: f64| match &s.currency {
        Some(_) => steward_types::money_text(v),
        None => format!("{v}"),
    };
    let unit = s
        .currency
        .clone()
        .unwrap_or_else(|| s.metric.as_str().to_string());
    let reset = match s.resets_at {
        Some(t) if t > now => format!("resets in {}", duration_text(t - now)),
        Some(_) => "resets now".into(),
        None => "no reset (live count)".into(),
    };
    let mut out = format!(
        "{:<28} [{}{}] {:>3}%  {}/{} {}  {}  {}",
        u.quota.name,
        "#".repeat(filled),
        "-".repeat(CELLS - filled),
        (share * 100.0).round() as u32,
        figure(s.used),
        figure(s.limit),
        unit,
        s.window,
        reset
    );
    if s.subject != u.quota.subject.clone().unwrap_or_default()
        && u.quota.scope != QuotaScope::Tenant
    {
        out.push_str(&format!("  (for {})", s.subject));
    }
    for w in &u.history {
        out.push_str(&format!(
            "\n{:<28}   {}  {}",
            "",
            w.start.format("%Y-%m-%d %H:%M"),
            figure(w.used)
        ));
    }
    out
}

#[cfg(test)]
mod quota_tests {
    use super::*;
    use steward_types::{Metric, OnExceed, QuotaStatus};

    #[test]
    fn a_bar_shows_share_figures_and_reset() {
        let now = chrono::Utc::now();
        let quota = Quota {
            id: "q".into(),
            name: "calls".into(),
            description: String::new(),
            scope: QuotaScope::Agent,
            subject: Some("agt_1".into()),
            metric: Metric::Requests,
            action: None,
            resource_type: None,
            resource_id: None,
            window: "day".into(),
            rolling: false,
            timezone: "UTC".into(),
            burst: None,
            limit: 1000.0,
            currency: None,
            thresholds: vec![50, 80, 95],
            on_exceed: OnExceed::Deny,
            updated_at: now,
        };
        let status = QuotaStatus {
            quota_id: "q".into(),
            name: "calls".into(),
            metric: Metric::Requests,
            subject: "agt_1".into(),
            used: 820.0,
            limit: 1000.0,
            remaining: 180.0,
            window: "day".into(),
            window_start: None,
            resets_at: Some(now + chrono::Duration::minutes(192)),
            currency: None,
        };
        let bar = usage_bar(
            &QuotaUsage {
                quota,
                status,
                history: vec![],
            },
            now,
        );
        assert!(
            bar.contains(&format!("[{}{}]", "#".repeat(25), "-".repeat(5))),
            "{bar}"
        );
        assert!(bar.contains("82%"));
        assert!(bar.contains("820/1000 requests"));
        assert!(
            bar.contains("resets in 3h 1") || bar.contains("resets in 3h 12m"),
            "{bar}"
        );
        assert_eq!(duration_text(chrono::Duration::seconds(45)), "45s");
        assert_eq!(
            duration_text(chrono::Duration::days(3) + chrono::Duration::hours(4)),
            "3d 4h"
        );
    }
}

impl Tabular for BehaviourAlert {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "AGENT",
        "SIGNAL",
        "HOUR",
        "STATUS",
        "SUSPENDED",
        "WHY",
    ];
    const PLURAL: &'static str = "alerts";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.agent_name.clone(),
            self.signal.as_str().into(),
            time(&self.hour),
            self.resolution
                .as_ref()
                .map_or_else(|| self.status.clone(), |r| format!("{} ({r})", self.status)),
            if self.suspended { "yes" } else { "no" }.into(),
            self.message.clone(),
        ]
    }
}

impl Detail for BehaviourAlert {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("agent", format!("{} ({})", self.agent_name, self.agent_id)),
            ("signal", self.signal.as_str().into()),
            ("subject", or_dash(&self.subject)),
            ("hour", time(&self.hour)),
            ("observed", self.observed.to_string()),
            ("usual", self.usual.to_string()),
            ("threshold", self.threshold.to_string()),
            ("why", self.message.clone()),
            (
                "suspended",
                if self.suspended { "yes" } else { "no" }.into(),
            ),
            ("status", self.status.clone()),
            ("raised", time(&self.created_at)),
            ("resolved", optional_time(self.resolved_at.as_ref())),
            ("resolved by", optional(self.resolved_by.as_ref())),
            ("resolution", optional(self.resolution.as_ref())),
            ("note", optional(self.note.as_ref())),
        ]
    }
}

impl Detail for BehaviourSettings {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let suspend: Vec<String> = self.suspend_on.iter().map(|s| s.as_str().into()).collect();
        vec![
            ("enabled", self.enabled.to_string()),
            ("baseline days", self.baseline_days.to_string()),
            ("learning days", self.learning_days.to_string()),
            ("factor", self.factor.to_string()),
            (
                "suspend on",
                if suspend.is_empty() {
                    "none (alert only)".into()
                } else {
                    list(&suspend)
                },
            ),
        ]
    }
}

impl Detail for Baseline {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("agent", format!("{} ({})", self.agent_name, self.agent_id)),
            ("first seen", optional_time(self.first_seen.as_ref())),
            (
                "learning",
                self.learning_until.as_ref().map_or_else(
                    || "done".into(),
                    |u| format!("until {} (nothing is flagged before)", time(u)),
                ),
            ),
            (
                "window",
                format!(
                    "{} days, {} active hours",
                    self.baseline_days, self.active_hours
                ),
            ),
            (
                "hours of day",
                if self.hours_of_day.is_empty() {
                    "-".into()
                } else {
                    list(
                        &self
                            .hours_of_day
                            .iter()
                            .map(|h| format!("{h:02}"))
                            .collect::<Vec<_>>(),
                    ) + " (UTC)"
                },
            ),
        ];
        for s in &self.signals {
            fields.push((
                s.signal.as_str(),
                format!(
                    "this hour {}, busiest hour {}, flagged above {}",
                    s.this_hour, s.busiest_hour, s.threshold
                ),
            ));
        }
        let footprint: Vec<String> = self
            .footprint
            .iter()
            .map(|f| format!("{} on {} ({})", f.action, f.resource_type, f.uses))
            .collect();
        fields.push((
            "actions used",
            if footprint.is_empty() {
                "-".into()
            } else {
                list(&footprint)
            },
        ));
        fields.push(("open alerts", self.open_alerts.to_string()));
        fields
    }
}

impl Tabular for Campaign {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "NAME",
        "STATUS",
        "DUE",
        "AGENTS",
        "PENDING",
        "KEPT",
        "WITHDRAWN",
        "OVERDUE",
    ];
    const PLURAL: &'static str = "recertifications";
    fn row(&self) -> Vec<String> {
        let c = &self.counts;
        vec![
            self.id.clone(),
            self.name.clone(),
            self.status.clone(),
            time(&self.due_at),
            c.total.to_string(),
            c.pending.to_string(),
            c.kept.to_string(),
            (c.suspended + c.decommissioned).to_string(),
            c.overdue.to_string(),
        ]
    }
}

impl Detail for Campaign {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let c = &self.counts;
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("status", self.status.clone()),
            ("started", time(&self.created_at)),
            ("due", time(&self.due_at)),
            ("closed", optional_time(self.closed_at.as_ref())),
            (
                "scope",
                format!(
                    "{} tier{}",
                    self.min_risk_tier
                        .map_or("every".to_string(), |t| format!("{} or higher", t.as_str())),
                    self.team_id
                        .as_ref()
                        .map_or(String::new(), |t| format!(", team {t}"))
                ),
            ),
            ("if not attested", self.on_overdue.as_str().into()),
            (
                "agents",
                format!(
                    "{} in all: {} pending, {} kept, {} suspended, {} decommissioned, {} overdue",
                    c.total, c.pending, c.kept, c.suspended, c.decommissioned, c.overdue
                ),
            ),
        ]
    }
}

impl Tabular for CampaignItem {
    const HEADERS: &'static [&'static str] =
        &["AGENT", "RISK", "OWNER", "STATUS", "DECIDED", "NOTE"];
    const PLURAL: &'static str = "agents in this recertification";
    fn row(&self) -> Vec<String> {
        vec![
            self.agent_name.clone(),
            self.risk_tier.as_str().into(),
            self.owner_id.clone(),
            self.status.clone(),
            optional_time(self.decided_at.as_ref()),
            optional(self.note.as_ref()),
        ]
    }
}

/// The keys of a JWKS by id and type (`k1 (EC), k2 (RSA)`), `none` when empty.
fn jwks_keys(jwks: &serde_json::Value) -> String {
    let keys = jwks["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if keys.is_empty() {
        return "none".into();
    }
    let kids: Vec<String> = keys
        .iter()
        .map(|k| {
            let kty = k["kty"].as_str().unwrap_or("?");
            match k["kid"].as_str() {
                Some(kid) => format!("{kid} ({kty})"),
                None => format!("({kty}, no kid)"),
            }
        })
        .collect();
    list(&kids)
}

impl Tabular for Issuer {
    const HEADERS: &'static [&'static str] =
        &["NAME", "ISSUER", "AUDIENCE", "MATCH", "KEYS", "UPDATED"];
    const PLURAL: &'static str = "identity providers";
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.issuer.clone(),
            self.audience.clone(),
            self.match_claim.as_str().into(),
            self.jwks["keys"].as_array().map_or(0, Vec::len).to_string(),
            time(&self.updated_at),
        ]
    }
}

impl Detail for Issuer {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let matched = match self.match_claim {
            steward_types::MatchClaim::Email => "email (the human's e-mail)",
            steward_types::MatchClaim::Sub => "sub (the human's external id)",
        };
        vec![
            ("name", self.name.clone()),
            ("issuer", self.issuer.clone()),
            ("audience", self.audience.clone()),
            ("match claim", matched.into()),
            (
                "agent named in may_act",
                if self.require_may_act {
                    "required"
                } else {
                    "not required"
                }
                .into(),
            ),
            (
                "unverified e-mail",
                if self.accept_unverified_email {
                    "accepted"
                } else {
                    "refused"
                }
                .into(),
            ),
            ("keys", jwks_keys(&self.jwks)),
            ("updated", time(&self.updated_at)),
        ]
    }
}

/// `active`, `expired` or `revoked <time>`.
fn delegation_status(d: &Delegation, now: chrono::DateTime<chrono::Utc>) -> String {
    match &d.revoked_at {
        Some(at) => format!("revoked {}", time(at)),
        None if d.expires_at <= now => "expired".into(),
        None => "active".into(),
    }
}

impl Tabular for Delegation {
    const HEADERS: &'static [&'static str] = &[
        "ID", "AGENT", "HUMAN", "ISSUER", "STATUS", "CREATED", "EXPIRES",
    ];
    const PLURAL: &'static str = "delegations";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.agent_id.clone(),
            self.human_id.clone(),
            self.issuer.clone(),
            delegation_status(self, chrono::Utc::now()),
            time(&self.created_at),
            time(&self.expires_at),
        ]
    }
}

impl Detail for Delegation {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("agent", self.agent_id.clone()),
            ("acts for", self.human_id.clone()),
            ("issuer", self.issuer.clone()),
            ("subject", or_dash(&self.subject)),
            ("agent key", self.key_id.clone()),
            ("status", delegation_status(self, chrono::Utc::now())),
            ("created", time(&self.created_at)),
            ("expires", time(&self.expires_at)),
            ("revoked", optional_time(self.revoked_at.as_ref())),
        ]
    }
}

impl Detail for DelegationSettings {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "require proof",
                if self.require_proof {
                    "yes (an agent acts for a person only with a delegated token)".into()
                } else {
                    "no (an agent key may name on_behalf_of)".into()
                },
            ),
            (
                "max lifetime",
                format!(
                    "{} s ({})",
                    self.max_lifetime_secs,
                    duration_text(chrono::Duration::seconds(i64::from(self.max_lifetime_secs)))
                ),
            ),
        ]
    }
}
