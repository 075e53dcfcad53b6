//! The dashboard's pages. Each reads through the API's own handler (or the
//! store call that handler makes, with the same caller check), then turns
//! what it got into rows of text for its template.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use steward_core::lifecycle::{Transition, allowed_from};
use steward_store::approvals::Verdict;
use steward_types::{
    Agent, AgentFilter, AgentState, Approval, ApprovalFilter, ApprovalStatus, AuditEntry,
    AuditFilter, McpTransport, PageQuery, PolicyQuery, QuotaUsage, RiskTier, TransitionRequest,
    UsageQuery,
};

use super::{Frame, Session, UiError, check_form, render};
use crate::state::AppState;

/// Rows a list page shows at most.
const PAGE: u32 = 50;

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn when_opt(t: Option<&DateTime<Utc>>) -> String {
    t.map(when).unwrap_or_default()
}

/// Empty form fields mean "no filter".
fn given(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Humans' e-mails and personas' names by id, for the rows that name them.
struct Names {
    people: BTreeMap<String, String>,
    personas: BTreeMap<String, String>,
}

impl Names {
    async fn load(state: &AppState, tenant: &str, agents: &[Agent]) -> Result<Names, UiError> {
        let mut people = BTreeMap::new();
        for a in agents {
            if !people.contains_key(&a.owner_id) {
                let email = match state.store.get_human(tenant, &a.owner_id).await {
                    Ok(h) => h.email,
                    Err(_) => a.owner_id.clone(),
                };
                people.insert(a.owner_id.clone(), email);
            }
        }
        let mut personas = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = state
                .store
                .list_personas(
                    tenant,
                    PageQuery {
                        cursor,
                        limit: Some(500),
                        ..Default::default()
                    },
                )
                .await?;
            personas.extend(page.items.into_iter().map(|p| (p.id, p.name)));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(Names { people, personas })
    }

    fn owner(&self, a: &Agent) -> String {
        self.people
            .get(&a.owner_id)
            .cloned()
            .unwrap_or_else(|| a.owner_id.clone())
    }

    fn persona(&self, a: &Agent) -> String {
        a.persona_id
            .as_ref()
            .map(|p| self.personas.get(p).cloned().unwrap_or_else(|| p.clone()))
            .unwrap_or_default()
    }
}

/// One agent in a table.
pub(crate) struct AgentRow {
    id: String,
    name: String,
    state: &'static str,
    risk: &'static str,
    owner: String,
    persona: String,
    purpose: String,
    orphaned: bool,
}

fn agent_rows(agents: &[Agent], names: &Names) -> Vec<AgentRow> {
    agents
        .iter()
        .map(|a| AgentRow {
            id: a.id.clone(),
            name: a.name.clone(),
            state: a.state.as_str(),
            risk: a.risk_tier.as_str(),
            owner: names.owner(a),
            persona: names.persona(a),
            purpose: a.purpose.clone(),
            orphaned: a.orphaned,
        })
        .collect()
}

/// One audit entry in a table, newest first.
pub(crate) struct AuditRow {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    resource: String,
    outcome: String,
    reason: String,
}

pub(crate) struct AlertRow {
    agent_id: String,
    agent_name: String,
    signal: &'static str,
    hour: String,
    message: String,
    suspended: bool,
    raised: String,
}

fn alert_rows(alerts: &[steward_types::BehaviourAlert]) -> Vec<AlertRow> {
    alerts
        .iter()
        .map(|a| AlertRow {
            agent_id: a.agent_id.clone(),
            agent_name: a.agent_name.clone(),
            signal: a.signal.as_str(),
            hour: a.hour.format("%Y-%m-%d %H:00 UTC").to_string(),
            message: a.message.clone(),
            suspended: a.suspended,
            raised: when(&a.created_at),
        })
        .collect()
}

fn audit_rows(mut entries: Vec<AuditEntry>) -> Vec<AuditRow> {
    entries.reverse();
    entries
        .into_iter()
        .map(|e| {
            let outcome = e
                .after
                .as_ref()
                .and_then(|a| a.get("decision").or_else(|| a.get("outcome")))
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_string();
            // A decision is about its principal, whoever asked for it.
            let after = e.after.as_ref();
            let principal = after.and_then(|a| a.get("principal"));
            let actor = match principal {
                Some(p) => format!(
                    "{} {}",
                    p["kind"].as_str().unwrap_or_default(),
                    p["name"].as_str().or(p["id"].as_str()).unwrap_or_default()
                ),
                None => format!("{}:{}", e.actor.kind, e.actor.id),
            };
            let action = match after.and_then(|a| a.get("action")).and_then(|a| a.as_str()) {
                Some(asked) if principal.is_some() => format!("{} · {asked}", e.action),
                _ => e.action,
            };
            AuditRow {
                seq: e.seq,
                time: when(&e.time),
                actor,
                action,
                resource: format!("{}:{}", e.resource_type, e.resource_id),
                outcome,
                reason: e.reason.unwrap_or_default(),
            }
        })
        .collect()
}

/// One approval in a table.
pub(crate) struct ApprovalRow {
    id: String,
    kind: &'static str,
    status: &'static str,
    risk: &'static str,
    agent: String,
    reason: String,
    waiting_for: String,
    created: String,
    expires: String,
}

fn approval_rows(items: &[Approval]) -> Vec<ApprovalRow> {
    items
        .iter()
        .map(|a| ApprovalRow {
            id: a.id.clone(),
            kind: a.kind.as_str(),
            status: a.status.as_str(),
            risk: a.risk_tier.as_str(),
            agent: a.agent_name.clone().unwrap_or_default(),
            reason: a.reason.clone(),
            waiting_for: a
                .steps
                .iter()
                .find(|s| s.status == "pending")
                .map(|s| s.group.clone())
                .unwrap_or_default(),
            created: when(&a.created_at),
            expires: when(&a.expires_at),
        })
        .collect()
}

/// One quota's current window.
pub(crate) struct QuotaRow {
    name: String,
    subject: String,
    metric: &'static str,
    used: String,
    limit: String,
    percent: u32,
    resets: String,
}

fn amount(v: f64, currency: Option<&str>) -> String {
    match currency {
        Some(c) => format!("{v:.2} {c}"),
        None if v.fract() == 0.0 => format!("{v:.0}"),
        None => format!("{v:.2}"),
    }
}

fn quota_rows(usage: &[QuotaUsage]) -> Vec<QuotaRow> {
    usage
        .iter()
        .map(|u| {
            let s = &u.status;
            let percent = if s.limit > 0.0 {
                ((s.used / s.limit) * 100.0).clamp(0.0, 999.0) as u32
            } else {
                0
            };
            QuotaRow {
                name: s.name.clone(),
                subject: s.subject.clone(),
                metric: s.metric.as_str(),
                used: amount(s.used, s.currency.as_deref()),
                limit: amount(s.limit, s.currency.as_deref()),
                percent,
                resets: when_opt(s.resets_at.as_ref()),
            }
        })
        .collect()
}

async fn tenant_usage(
    state: &AppState,
    session: &Session,
    agent: Option<String>,
) -> Result<Vec<QuotaUsage>, UiError> {
    let q = UsageQuery {
        agent,
        quota: None,
        history: Some(0),
    };
    Ok(crate::routes::quotas::usage(
        State(state.clone()),
        session.caller.clone(),
        crate::error::ApiQuery(q),
    )
    .await?
    .0)
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    frame: Frame,
    tenants: Vec<String>,
    states: Vec<(&'static str, u64)>,
    tiers: Vec<(&'static str, u64)>,
    orphaned: u64,
    total: u64,
    /// Approvals whose current step waits for a group the signed-in person
    /// holds (empty for a token of nobody).
    mine: Vec<ApprovalRow>,
    pending: Vec<ApprovalRow>,
    more_pending: bool,
    denials: Vec<AuditRow>,
    hot_quotas: Vec<QuotaRow>,
    alerts: Vec<AlertRow>,
    open_alerts: u64,
    /// Agents the signed-in person still has to re-attest:
    /// (agent id, agent name, campaign, due).
    to_attest: Vec<(String, String, String, String)>,
    /// Open campaigns: (name, due, pending, total).
    campaigns: Vec<(String, String, u64, u64)>,
    log_size: u64,
    checkpoint: String,
}

/// `GET /ui`: the tenant at a glance.
pub(crate) async fn overview(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let counts = state.store.agent_counts(&tenant).await?;
    let states = AgentState::ALL
        .iter()
        .map(|s| {
            let n = counts
                .iter()
                .filter(|c| c.state == *s)
                .map(|c| c.count)
                .sum();
            (s.as_str(), n)
        })
        .collect();
    let tiers = [RiskTier::Low, RiskTier::Medium, RiskTier::High]
        .iter()
        .map(|t| {
            let n = counts
                .iter()
                .filter(|c| c.risk_tier == *t && !c.state.is_terminal())
                .map(|c| c.count)
                .sum();
            (t.as_str(), n)
        })
        .collect();
    let orphaned = counts
        .iter()
        .filter(|c| c.orphaned && !c.state.is_terminal())
        .map(|c| c.count)
        .sum();
    let total = counts.iter().map(|c| c.count).sum();
    let pending = state
        .store
        .list_approvals(
            &tenant,
            ApprovalFilter {
                status: Some("pending".into()),
                limit: Some(10),
                ..Default::default()
            },
        )
        .await?;
    let mine = awaiting_me(&state, &session, &tenant).await?;
    let denials = state
        .store
        .list_audit(
            &tenant,
            AuditFilter {
                decision: Some("deny".into()),
                last: Some(10),
                ..Default::default()
            },
        )
        .await?;
    let hot_quotas = quota_rows(&tenant_usage(&state, &session, None).await?)
        .into_iter()
        .filter(|q| q.percent >= 80)
        .collect();
    let (alerts, open_alerts) = state.store.open_alerts(&tenant, None, 10).await?;
    let to_attest = match &session.caller {
        crate::auth::Caller::Token { token, .. } => match &token.human_id {
            Some(human) => state.store.awaiting_attestation(&tenant, human).await?,
            None => Vec::new(),
        },
        crate::auth::Caller::Agent { .. } => Vec::new(),
    }
    .into_iter()
    .map(|(i, campaign, due)| (i.agent_id, i.agent_name, campaign, when(&due)))
    .collect();
    let campaigns = state
        .store
        .list_campaigns(
            &tenant,
            PageQuery {
                limit: Some(500),
                ..Default::default()
            },
        )
        .await?
        .items
        .into_iter()
        .filter(|c| c.status == "open")
        .map(|c| (c.name, when(&c.due_at), c.counts.pending, c.counts.total))
        .collect();
    let head = state.store.latest_checkpoint().await?;
    // Suggestions for the tenant field (any tenant id may be typed).
    let tenants = if session.platform_admin() {
        state
            .store
            .list_tenants(PageQuery {
                limit: Some(500),
                ..Default::default()
            })
            .await?
            .items
            .into_iter()
            .map(|t| t.id)
            .collect()
    } else {
        Vec::new()
    };
    Ok(render(&Overview {
        frame: session.frame("overview"),
        tenants,
        states,
        tiers,
        orphaned,
        total,
        mine: approval_rows(&mine),
        pending: approval_rows(&pending.items),
        more_pending: pending.next_cursor.is_some(),
        denials: audit_rows(denials.items),
        hot_quotas,
        alerts: alert_rows(&alerts),
        open_alerts,
        to_attest,
        campaigns,
        log_size: head.as_ref().map_or(0, |h| h.head.size),
        checkpoint: head
            .and_then(|h| DateTime::from_timestamp_millis(h.head.time_ms))
            .map(|t| when(&t))
            .unwrap_or_default(),
    }))
}

/// Pending approvals whose current step waits for one of the signed-in
/// person's roles, oldest first (at most 50 per role).
async fn awaiting_me(
    state: &AppState,
    session: &Session,
    tenant: &str,
) -> Result<Vec<Approval>, UiError> {
    let crate::auth::Caller::Token {
        token: steward_types::ApiToken {
            human_id: Some(human),
            ..
        },
        ..
    } = &session.caller
    else {
        return Ok(Vec::new());
    };
    let Ok(person) = state.store.get_human(tenant, human).await else {
        // Their token works in another tenant than their own.
        return Ok(Vec::new());
    };
    let mut out: Vec<Approval> = Vec::new();
    for role in &person.roles {
        let page = state
            .store
            .list_approvals(
                tenant,
                ApprovalFilter {
                    status: Some("pending".into()),
                    group: Some(role.clone()),
                    limit: Some(PAGE),
                    ..Default::default()
                },
            )
            .await?;
        for a in page.items {
            if !out.iter().any(|o| o.id == a.id) {
                out.push(a);
            }
        }
    }
    out.sort_by_key(|a| a.created_at);
    Ok(out)
}

#[derive(Deserialize, Default)]
pub(crate) struct AgentsQuery {
    state: Option<String>,
    risk_tier: Option<String>,
    owner: Option<String>,
    orphaned: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    frame: Frame,
    rows: Vec<AgentRow>,
    state: String,
    risk_tier: String,
    owner: String,
    orphaned: bool,
    states: Vec<&'static str>,
    next: Option<String>,
}

/// `GET /ui/agents`: the inventory, filtered.
pub(crate) async fn agents(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<AgentsQuery>,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let orphaned = given(q.orphaned).is_some();
    let filter = AgentFilter {
        state: given(q.state),
        risk_tier: given(q.risk_tier),
        owner: given(q.owner),
        orphaned: orphaned.then_some(true),
        cursor: given(q.cursor),
        limit: Some(PAGE),
        ..Default::default()
    };
    let page = state.store.list_agents(&tenant, filter.clone()).await?;
    let names = Names::load(&state, &tenant, &page.items).await?;
    let next = page.next_cursor.map(|c| {
        let mut query = vec![("cursor", c)];
        for (k, v) in [
            ("state", &filter.state),
            ("risk_tier", &filter.risk_tier),
            ("owner", &filter.owner),
        ] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        if orphaned {
            query.push(("orphaned", "1".into()));
        }
        query_string(&query)
    });
    Ok(render(&AgentsPage {
        frame: session.frame("agents"),
        rows: agent_rows(&page.items, &names),
        state: filter.state.unwrap_or_default(),
        risk_tier: filter.risk_tier.unwrap_or_default(),
        owner: filter.owner.unwrap_or_default(),
        orphaned,
        states: AgentState::ALL.iter().map(|s| s.as_str()).collect(),
        next,
    }))
}

fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One credential of an agent.
pub(crate) struct KeyRow {
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    status: String,
}

/// A live delegation on the agent page: whom the agent may act for.
struct DelegationRow {
    person: String,
    issuer: String,
    issued: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    frame: Frame,
    agent: Agent,
    state: &'static str,
    risk: &'static str,
    owner: String,
    persona: String,
    parent: Option<(String, String)>,
    created: String,
    updated: String,
    expires: String,
    labels: Vec<(String, String)>,
    keys: Vec<KeyRow>,
    children: Vec<AgentRow>,
    quotas: Vec<QuotaRow>,
    baseline: steward_types::Baseline,
    alerts: Vec<AlertRow>,
    delegations: Vec<DelegationRow>,
    activity: Vec<AuditRow>,
    /// Lifecycle buttons an admin sees: (transition, label, reason required).
    actions: Vec<(&'static str, &'static str, bool)>,
}

/// The lifecycle changes the agent page offers (activation and rejection
/// go through approvals).
const PAGE_TRANSITIONS: [(Transition, &str, bool); 4] = [
    (Transition::Submit, "Submit for approval", false),
    (Transition::Suspend, "Suspend", true),
    (Transition::Resume, "Resume", false),
    (
        Transition::Decommission,
        "Decommission (and its descendants)",
        false,
    ),
];

/// `GET /ui/agents/{id}`: one agent, its credentials, children, quotas and
/// recent activity.
pub(crate) async fn agent(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let agent = state.store.get_agent(&tenant, &id).await?;
    let parent = match &agent.parent_id {
        Some(p) => Some(match state.store.get_agent(&tenant, p).await {
            Ok(a) => (a.id, a.name),
            Err(_) => (p.clone(), p.clone()),
        }),
        None => None,
    };
    let now = Utc::now();
    let keys = state
        .store
        .list_keys(
            &tenant,
            &agent.id,
            PageQuery {
                limit: Some(100),
                ..Default::default()
            },
        )
        .await?
        .items
        .into_iter()
        .map(|k| KeyRow {
            status: if let Some(r) = k.revoked_at {
                format!("revoked {}", when(&r))
            } else if k.expires_at.is_some_and(|e| e <= now) {
                "expired".into()
            } else {
                "active".into()
            },
            name: k.name,
            prefix: k.prefix,
            created: when(&k.created_at),
            last_used: when_opt(k.last_used_at.as_ref()),
        })
        .collect();
    let children = state
        .store
        .list_agents(
            &tenant,
            AgentFilter {
                parent: Some(agent.id.clone()),
                limit: Some(PAGE),
                ..Default::default()
            },
        )
        .await?
        .items;
    // One lookup of owners and personas for the agent and its children.
    let mut named = children.clone();
    named.push(agent.clone());
    let names = Names::load(&state, &tenant, &named).await?;
    let quotas = quota_rows(&tenant_usage(&state, &session, Some(agent.id.clone())).await?);
    let activity = state
        .store
        .list_audit(
            &tenant,
            AuditFilter {
                agent: Some(agent.id.clone()),
                last: Some(25),
                ..Default::default()
            },
        )
        .await?;
    let baseline = crate::behaviour::baseline(&state.store, &tenant, &agent, now).await?;
    let (alerts, _) = state
        .store
        .open_alerts(&tenant, Some(&agent.id), 50)
        .await?;
    let live = state
        .store
        .list_delegations(
            &tenant,
            steward_types::DelegationQuery {
                agent: Some(agent.id.clone()),
                active: Some(true),
                limit: Some(100),
                ..Default::default()
            },
            now,
        )
        .await?
        .items;
    let mut delegations = Vec::with_capacity(live.len());
    for d in live {
        let person = match state.store.get_human(&tenant, &d.human_id).await {
            Ok(h) => h.email,
            Err(_) => d.human_id.clone(),
        };
        delegations.push(DelegationRow {
            person,
            issuer: d.issuer,
            issued: when(&d.created_at),
            expires: when(&d.expires_at),
        });
    }
    Ok(render(&AgentPage {
        frame: session.frame("agents"),
        baseline,
        delegations,
        alerts: alert_rows(&alerts),
        state: agent.state.as_str(),
        risk: agent.risk_tier.as_str(),
        owner: names.owner(&agent),
        persona: names.persona(&agent),
        parent,
        created: when(&agent.created_at),
        updated: when(&agent.updated_at),
        expires: when_opt(agent.expires_at.as_ref()),
        labels: agent
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        keys,
        children: agent_rows(&children, &names),
        quotas,
        activity: audit_rows(activity.items),
        actions: if session.caller.admin().is_ok() {
            PAGE_TRANSITIONS
                .iter()
                .filter(|(t, _, _)| allowed_from(agent.state, *t))
                .map(|(t, label, reason)| (t.as_str(), *label, *reason))
                .collect()
        } else {
            Vec::new()
        },
        agent,
    }))
}

#[derive(Deserialize)]
pub(crate) struct TransitionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    /// The agent's name, typed to confirm a decommission.
    #[serde(default)]
    confirm: String,
}

/// `POST /ui/agents/{id}/{transition}`: as `POST /v1/agents/{id}/{transition}`
/// (admin tokens; a suspension needs a reason).
pub(crate) async fn transition(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path((id, transition)): Path<(String, String)>,
    super::UiForm(form): super::UiForm<TransitionForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &uri, &session, &form.csrf)?;
    if !PAGE_TRANSITIONS
        .iter()
        .any(|(t, _, _)| t.as_str() == transition)
    {
        return Err(crate::error::ApiError::new(
            steward_types::ErrorCode::NotFound,
            format!("'{transition}' is not a change this page makes"),
        )
        .into());
    }
    if transition == Transition::Decommission.as_str() {
        // For good, and its descendants with it: the name, typed.
        let agent = state.store.get_agent(session.caller.reader()?, &id).await?;
        if form.confirm.trim() != agent.name {
            return Err(crate::error::ApiError::new(
                steward_types::ErrorCode::InvalidRequest,
                format!(
                    "confirm: type the agent's name, '{}', to decommission it and its descendants",
                    agent.name
                ),
            )
            .into());
        }
    }
    let done = crate::routes::agents::transition_agent(
        State(state),
        session.caller.clone(),
        Path((id, transition)),
        crate::error::OptionalJson(TransitionRequest {
            reason: given(Some(form.reason)),
        }),
    )
    .await?
    .0;
    Ok(Redirect::to(&format!("/ui/agents/{}", percent_encode(&done.agent.id))).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct ApprovalsQuery {
    status: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    frame: Frame,
    rows: Vec<ApprovalRow>,
    status: String,
    statuses: Vec<&'static str>,
    next: Option<String>,
}

/// `GET /ui/approvals`: pending first; any status on request.
pub(crate) async fn approvals(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<ApprovalsQuery>,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let status = q.status.unwrap_or_else(|| "pending".into());
    let page = state
        .store
        .list_approvals(
            &tenant,
            ApprovalFilter {
                status: given(Some(status.clone())),
                cursor: given(q.cursor),
                limit: Some(PAGE),
                ..Default::default()
            },
        )
        .await?;
    let next = page
        .next_cursor
        .map(|c| query_string(&[("status", status.clone()), ("cursor", c)]));
    Ok(render(&ApprovalsPage {
        frame: session.frame("approvals"),
        rows: approval_rows(&page.items),
        status,
        statuses: ApprovalStatus::ALL.iter().map(|s| s.as_str()).collect(),
        next,
    }))
}

/// One step of an approval chain.
pub(crate) struct StepRow {
    group: String,
    status: String,
    by: String,
    comment: String,
    at: String,
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalPage {
    frame: Frame,
    row: ApprovalRow,
    requested_by: String,
    request: String,
    digest: String,
    steps: Vec<StepRow>,
    pending: bool,
    grant: String,
    sla: String,
}

/// `GET /ui/approvals/{id}`: the exact request, the chain, and the buttons.
pub(crate) async fn approval(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let a = crate::approvals::visible(&state, &session.caller, &id).await?;
    Ok(render(&approval_page(&session, &a)))
}

fn approval_page(session: &Session, a: &Approval) -> ApprovalPage {
    let requested_by = match &a.requested_by_human {
        Some(h) => format!("{} ({h})", a.requested_by),
        None => a.requested_by.clone(),
    };
    ApprovalPage {
        frame: session.frame("approvals"),
        row: approval_rows(std::slice::from_ref(a)).remove(0),
        requested_by,
        request: serde_json::to_string_pretty(&a.request).unwrap_or_default(),
        digest: a.digest.clone(),
        steps: a
            .steps
            .iter()
            .map(|s| StepRow {
                group: s.group.clone(),
                status: s.status.clone(),
                by: s
                    .decided_by_email
                    .clone()
                    .or_else(|| s.decided_by.clone())
                    .unwrap_or_default(),
                comment: s.comment.clone().unwrap_or_default(),
                at: when_opt(s.decided_at.as_ref()),
            })
            .collect(),
        pending: a.status == ApprovalStatus::Pending,
        grant: when_opt(a.grant_expires_at.as_ref()),
        sla: when(&a.sla_due_at),
    }
}

#[derive(Deserialize)]
pub(crate) struct VerdictForm {
    csrf: String,
    #[serde(default)]
    comment: String,
}

/// `POST /ui/approvals/{id}/approve` and `.../deny`: as the API's
/// `POST /v1/approvals/{id}/approve` and `.../deny`.
pub(crate) async fn decide(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path((id, verdict)): Path<(String, String)>,
    super::UiForm(form): super::UiForm<VerdictForm>,
) -> Result<Response, UiError> {
    check_form(&headers, &uri, &session, &form.csrf)?;
    let verdict = match verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        other => {
            return Err(crate::error::ApiError::new(
                steward_types::ErrorCode::NotFound,
                format!("'{other}' is not a verdict: approve or deny"),
            )
            .into());
        }
    };
    let comment = given(Some(form.comment));
    crate::approvals::decide(&state, &session.caller, &id, verdict, comment).await?;
    Ok(Redirect::to(&format!("/ui/approvals/{}", percent_encode(&id))).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    agent: Option<String>,
    human: Option<String>,
    action: Option<String>,
    decision: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    rows: Vec<AuditRow>,
    agent: String,
    human: String,
    action: String,
    decision: String,
}

/// `GET /ui/audit`: the latest entries, newest first, filtered.
pub(crate) async fn audit(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let filter = AuditFilter {
        agent: given(q.agent),
        human: given(q.human),
        action: given(q.action),
        decision: given(q.decision),
        last: Some(100),
        limit: Some(100),
        ..Default::default()
    };
    let entries = state.store.list_audit(&tenant, filter.clone()).await?;
    Ok(render(&AuditPage {
        frame: session.frame("audit"),
        rows: audit_rows(entries.items),
        agent: filter.agent.unwrap_or_default(),
        human: filter.human.unwrap_or_default(),
        action: filter.action.unwrap_or_default(),
        decision: filter.decision.unwrap_or_default(),
    }))
}

/// One policy.
pub(crate) struct PolicyRow {
    id: String,
    effect: String,
    description: String,
    owner: String,
    version: i64,
    updated: String,
    text: String,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    frame: Frame,
    rows: Vec<PolicyRow>,
}

/// `GET /ui/policies`: every policy with its Cedar text.
pub(crate) async fn policies(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .store
            .list_policies(
                &tenant,
                PolicyQuery {
                    cursor,
                    limit: Some(500),
                },
            )
            .await?;
        rows.extend(page.items.into_iter().map(|p| PolicyRow {
            id: p.id,
            effect: p.effect,
            description: p.description,
            owner: p.owner,
            version: p.version,
            updated: when(&p.updated_at),
            text: p.text,
        }));
        match page.next_cursor {
            Some(c) if rows.len() < 10_000 => cursor = Some(c),
            _ => break,
        }
    }
    Ok(render(&PoliciesPage {
        frame: session.frame("policies"),
        rows,
    }))
}

#[derive(Template)]
#[template(path = "quotas.html")]
struct QuotasPage {
    frame: Frame,
    rows: Vec<QuotaRow>,
}

/// `GET /ui/quotas`: every quota's current window.
pub(crate) async fn quotas(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, UiError> {
    let rows = quota_rows(&tenant_usage(&state, &session, None).await?);
    Ok(render(&QuotasPage {
        frame: session.frame("quotas"),
        rows,
    }))
}

/// One upstream MCP server.
pub(crate) struct McpRow {
    name: String,
    description: String,
    transport: String,
    tools: usize,
    record: &'static str,
    timeout: u32,
}

#[derive(Template)]
#[template(path = "mcp.html")]
struct McpPage {
    frame: Frame,
    rows: Vec<McpRow>,
}

/// `GET /ui/mcp`: the upstream servers the gateway fronts.
pub(crate) async fn mcp_servers(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, UiError> {
    let tenant = session.caller.reader()?.to_string();
    let rows = state
        .store
        .list_mcp_servers(&tenant)
        .await?
        .into_iter()
        .map(|s| McpRow {
            transport: match &s.transport {
                McpTransport::StreamableHttp { url } => url.clone(),
                McpTransport::Stdio { command, args, .. } => {
                    format!("stdio: {command} {}", args.join(" "))
                }
            },
            name: s.name,
            description: s.description,
            tools: s.tools.len(),
            record: s.decision_record.as_str(),
            timeout: s.timeout_secs,
        })
        .collect();
    Ok(render(&McpPage {
        frame: session.frame("mcp"),
        rows,
    }))
}
