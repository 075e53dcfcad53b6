//! Quotas in the decision path: which rules a decision charges (the agent's
//! own, its persona's, team's, owner's and tenant's, every ancestor's, and
//! each persona's defaults per agent), reserving them, and what the answer
//! then says (tightest quota, warnings, the quota that refused it).
//!
//! Rules are cached per tenant for a second (changes on this node clear the
//! cache at once); counters are never cached: every reservation reads and
//! writes them in the store under a lock, which is what makes limits exact
//! across nodes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use steward_core::Error;
use steward_core::quota::{self, Rule};
use steward_policy::{DecisionInput, Subject};
use steward_store::Store;
use steward_store::quotas::{Admission, Charge, scope_key};
use steward_types::{
    Decision, DecisionRequest, DecisionResponse, Metric, OnExceed, QuotaScope, QuotaStatus,
    QuotaWarning, Remediation, UsageEstimate,
};

/// How long a tenant's rules are reused before being read again.
const RULES_TTL: Duration = Duration::from_secs(1);

/// A tenant's rules: stored ones and persona defaults.
#[derive(Default)]
pub struct RuleSet {
    /// Stored rules.
    pub rules: Vec<Rule>,
    /// Persona name → its default rules (one counter per agent).
    pub templates: HashMap<String, Vec<Rule>>,
}

impl RuleSet {
    fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.templates.is_empty()
    }
}

/// Every tenant's rules, briefly cached.
#[derive(Default)]
pub struct QuotaRules {
    by_tenant: RwLock<HashMap<String, (Instant, Arc<RuleSet>)>>,
}

impl QuotaRules {
    /// The tenant's rules (cached up to a second).
    pub async fn get(&self, store: &Store, tenant: &str) -> Result<Arc<RuleSet>, Error> {
        if let Ok(map) = self.by_tenant.read()
            && let Some((at, set)) = map.get(tenant)
            && at.elapsed() < RULES_TTL
        {
            return Ok(set.clone());
        }
        let mut set = RuleSet::default();
        for q in store.list_quotas(tenant).await? {
            set.rules.push(Rule::new(q)?);
        }
        let now = Utc::now();
        for (persona, templates) in store.quota_templates(tenant).await? {
            let rules = templates
                .iter()
                .filter_map(|t| quota::template_rule(&persona, t, now).ok())
                .collect::<Vec<_>>();
            if !rules.is_empty() {
                set.templates.insert(persona, rules);
            }
        }
        let set = Arc::new(set);
        if let Ok(mut map) = self.by_tenant.write() {
            map.insert(tenant.to_string(), (Instant::now(), set.clone()));
        }
        Ok(set)
    }

    /// Forget a tenant's rules (after a change on this node).
    pub fn invalidate(&self, tenant: &str) {
        if let Ok(mut map) = self.by_tenant.write() {
            map.remove(tenant);
        }
    }
}

fn parent(s: &Subject, kind: &str) -> Option<String> {
    s.entity
        .parents
        .iter()
        .find(|(t, _)| t == kind)
        .map(|(_, n)| n.clone())
}

/// Check an estimate's amounts whether or not a quota applies.
pub fn check_estimate(e: &UsageEstimate) -> Result<(), Error> {
    if let Some(c) = e.cost {
        quota::to_units("estimate.cost", Metric::Cost, c)?;
    }
    if let Some(c) = &e.currency
        && (c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()))
    {
        return Err(Error::invalid(
            "estimate.currency",
            format!("'{c}' is not an ISO 4217 code such as USD"),
        ));
    }
    Ok(())
}

/// Every (rule, counter key) whose scope holds an agent of the chain: its
/// own rules, its persona's, team's, owner's, the tenant's, and its
/// persona's defaults (unless it has its own rule for that metric and
/// window that counts everything the default does), for the agent and each
/// ancestor, each pair once. A human principal (a chain with no agent) is
/// charged by the tenant's rules.
pub fn applicable(set: &RuleSet, tenant: &str, chain: &[Subject]) -> Vec<(Rule, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    if !chain.is_empty() && chain.iter().all(|s| s.kind != "agent") {
        return set
            .rules
            .iter()
            .filter(|r| r.quota.scope == QuotaScope::Tenant)
            .map(|r| (r.clone(), tenant.to_string()))
            .collect();
    }
    for s in chain.iter().filter(|s| s.kind == "agent") {
        let agent = s.entity.id.as_str();
        let persona = parent(s, "Persona");
        let team = parent(s, "Team");
        let owner = s
            .entity
            .attrs
            .get("owner")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let mut own = HashSet::new();
        let mut found = Vec::new();
        for rule in &set.rules {
            let key = scope_key(
                rule.quota.scope,
                agent,
                persona.as_deref(),
                team.as_deref(),
                owner,
                tenant,
            );
            let applies = match rule.quota.scope {
                QuotaScope::Tenant => true,
                _ => key.is_some() && rule.quota.subject == key,
            };
            if applies {
                // Only a rule as broad as a default replaces it: one on a
                // single action or resource leaves the rest counted.
                let broad = rule.quota.action.is_none()
                    && rule.quota.resource_type.is_none()
                    && rule.quota.resource_id.is_none();
                if rule.quota.scope == QuotaScope::Agent && broad {
                    own.insert((rule.quota.metric, rule.quota.window.clone()));
                }
                found.push((rule, key.unwrap_or_else(|| tenant.to_string())));
            }
        }
        if let Some(defaults) = persona.as_ref().and_then(|p| set.templates.get(p)) {
            for rule in defaults {
                if !own.contains(&(rule.quota.metric, rule.quota.window.clone())) {
                    found.push((rule, agent.to_string()));
                }
            }
        }
        for (rule, key) in found {
            if seen.insert((rule.quota.id.clone(), key.clone())) {
                out.push((rule.clone(), key));
            }
        }
    }
    out
}

/// The counters a decision charges: the applicable rules that count its
/// action and resource, with its estimate. The resource is matched by the
/// id its entity resolved to (an agent's or person's id, a team's name,
/// whichever key the request named it by), as rules store it, or by the
/// agent's name or person's e-mail.
pub fn charges(
    set: &RuleSet,
    tenant: &str,
    input: &DecisionInput,
    req: &DecisionRequest,
) -> Result<Vec<Charge>, Error> {
    if set.is_empty() {
        return Ok(Vec::new());
    }
    let estimate = req.estimate.clone().unwrap_or_default();
    let resource = &input.resource;
    // Rules stored before resource keys were resolved on the way in may
    // name an agent or person by name or e-mail: those count too.
    let alias = |attr: &str, of: &str| {
        (resource.entity_type == of)
            .then(|| resource.attrs.get(attr).and_then(|v| v.as_str()))
            .flatten()
    };
    let keys: Vec<&str> = [
        Some(resource.id.as_str()),
        Some(req.resource.id.as_str()),
        alias("name", "Agent"),
        alias("email", "Human"),
    ]
    .into_iter()
    .flatten()
    .collect();
    applicable(set, tenant, &input.chain)
        .into_iter()
        .filter(|(rule, _)| {
            keys.iter()
                .any(|key| rule.counts(&req.action, &resource.entity_type, key))
        })
        .map(|(rule, subject)| {
            Ok(Charge {
                estimate: rule.estimate(&estimate)?,
                rule,
                subject,
            })
        })
        .collect()
}

/// The quota part of a decision's answer.
#[derive(Debug, Default)]
pub struct QuotaAnswer {
    /// The tightest quota after the decision.
    pub tightest: Option<QuotaStatus>,
    /// Thresholds reached.
    pub warnings: Vec<QuotaWarning>,
    /// The quota that refused, and what it says to do.
    pub refused: Option<(QuotaStatus, OnExceed)>,
}

fn fraction_left(s: &QuotaStatus) -> f64 {
    if s.limit <= 0.0 {
        0.0
    } else {
        s.remaining / s.limit
    }
}

/// What a reservation's admission means for the decision's answer.
pub fn answer(admission: &Admission) -> QuotaAnswer {
    match admission {
        Admission::Refused(c) => QuotaAnswer {
            tightest: Some(c.status.clone()),
            warnings: Vec::new(),
            refused: Some((c.status.clone(), c.on_exceed)),
        },
        Admission::Admitted(counted) => {
            let warnings = counted
                .iter()
                .filter_map(|c| {
                    let t = c.reached?;
                    let s = &c.status;
                    Some(QuotaWarning {
                        quota_id: s.quota_id.clone(),
                        name: s.name.clone(),
                        threshold: t,
                        message: warning_text(s, t, c.over),
                        status: s.clone(),
                    })
                })
                .collect();
            let tightest = counted
                .iter()
                .map(|c| &c.status)
                .min_by(|a, b| fraction_left(a).total_cmp(&fraction_left(b)))
                .cloned();
            QuotaAnswer {
                tightest,
                warnings,
                refused: None,
            }
        }
    }
}

impl QuotaAnswer {
    /// Whether an `approval_required` quota refused: a person's approval
    /// can let the decision go over it.
    pub fn needs_approval(&self) -> Option<&QuotaStatus> {
        match &self.refused {
            Some((status, OnExceed::ApprovalRequired)) => Some(status),
            _ => None,
        }
    }

    /// Put the quota part into a decision's answer: the tightest quota,
    /// warnings, and for a refusal the decision and its remediation.
    pub fn apply(self, response: &mut DecisionResponse) {
        response.quota = self.tightest;
        response.warnings = self.warnings;
        if let Some((status, on_exceed)) = self.refused {
            // The counter's subject as people know it: an agent by name.
            let subject = response
                .chain
                .iter()
                .find(|l| l.id == status.subject)
                .map_or_else(
                    || status.subject.clone(),
                    |l| format!("{} '{}'", l.kind, l.name),
                );
            let (decision, remediation) = refusal(&status, &subject, on_exceed);
            response.decision = decision;
            response.remediation = Some(remediation);
            response.exceeded = Some(status);
        }
    }
}

fn amount(s: &QuotaStatus, v: f64) -> String {
    match &s.currency {
        Some(c) => format!("{} {c}", steward_types::money_text(v)),
        None => format!("{v}"),
    }
}

fn resets(s: &QuotaStatus) -> String {
    s.resets_at.map_or_else(
        || "as usage ages out".into(),
        |t| {
            format!(
                "at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        },
    )
}

fn warning_text(s: &QuotaStatus, threshold: u32, over: bool) -> String {
    if over {
        return format!(
            "quota '{}' is over its limit ({} of {} {}); allowed because it only alerts",
            s.name,
            amount(s, s.used),
            amount(s, s.limit),
            s.metric.as_str()
        );
    }
    format!(
        "quota '{}' is at {threshold}%: {} of {} {} used ({}), resets {}",
        s.name,
        amount(s, s.used),
        amount(s, s.limit),
        s.metric.as_str(),
        s.window,
        resets(s)
    )
}

/// The decision and remediation for a refusal by quota.
pub fn refusal(s: &QuotaStatus, subject: &str, on_exceed: OnExceed) -> (Decision, Remediation) {
    let decision = if on_exceed == OnExceed::ApprovalRequired {
        Decision::ApprovalRequired
    } else {
        Decision::Deny
    };
    let then = if on_exceed == OnExceed::ApprovalRequired {
        "a human must approve going over it"
    } else {
        "wait for the reset, or ask an admin to raise the quota (steward quotas set, or POST /v1/quotas)"
    };
    let message = format!(
        "quota '{}' would be exceeded: {} of {} {} used ({}) for {}; it resets {}; {then}",
        s.name,
        amount(s, s.used),
        amount(s, s.limit),
        s.metric.as_str(),
        s.window,
        subject,
        resets(s)
    );
    (
        decision,
        Remediation {
            message,
            ..Default::default()
        },
    )
}

/// `RateLimit` headers for the tightest quota: the IETF draft's
/// `RateLimit-Policy` and `RateLimit`, and the widely used
/// `RateLimit-Limit`/`-Remaining`/`-Reset`.
pub fn headers(s: &QuotaStatus, now: DateTime<Utc>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let reset = s.resets_at.map_or(0, |t| (t - now).num_seconds().max(0));
    let window = s
        .window_start
        .zip(s.resets_at)
        .map_or(reset, |(a, b)| (b - a).num_seconds());
    let name = s.name.replace(['"', '\\'], "");
    let (limit, remaining) = (s.limit.floor() as i64, s.remaining.floor() as i64);
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put(
        "ratelimit-policy",
        format!("\"{name}\";q={limit};w={window}"),
    );
    put("ratelimit", format!("\"{name}\";r={remaining};t={reset}"));
    put("ratelimit-limit", limit.to_string());
    put("ratelimit-remaining", remaining.to_string());
    put("ratelimit-reset", reset.to_string());
    h
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use steward_policy::{DecisionInput, EntityData, Subject};
    use steward_types::{DecisionRequest, PutQuota, QuotaScope, ResourceRef};

    use super::{RuleSet, charges};

    fn on_resource(resource_type: &str, id: &str) -> RuleSet {
        let rule = steward_core::quota::rule_from_request(
            "quo_1".into(),
            PutQuota {
                name: "one".into(),
                scope: Some(QuotaScope::Tenant),
                metric: "requests".into(),
                window: "day".into(),
                limit: 10.0,
                resource_type: Some(resource_type.into()),
                resource_id: Some(id.into()),
                ..Default::default()
            },
            None,
            chrono::Utc::now(),
        )
        .unwrap();
        RuleSet {
            rules: vec![rule],
            templates: Default::default(),
        }
    }

    fn decision(
        resource_type: &str,
        named: &str,
        id: &str,
        attrs: serde_json::Value,
    ) -> (DecisionInput, DecisionRequest) {
        let agent = Subject {
            kind: "agent",
            name: "bot".into(),
            inactive: None,
            entity: EntityData {
                entity_type: "Agent".into(),
                id: "agt_bot".into(),
                attrs: Default::default(),
                parents: vec![],
            },
        };
        let req = DecisionRequest {
            action: "inspect".into(),
            resource: ResourceRef {
                resource_type: resource_type.into(),
                id: named.into(),
                attributes: Default::default(),
            },
            ..Default::default()
        };
        let input = DecisionInput {
            chain: vec![agent],
            action: "inspect".into(),
            resource: EntityData {
                entity_type: resource_type.into(),
                id: id.into(),
                attrs: attrs.as_object().cloned().unwrap_or_default(),
                parents: vec![],
            },
            context: Default::default(),
        };
        (input, req)
    }

    #[test]
    fn rules_naming_a_resource_by_any_key_count_it() {
        // A rule stored with the canonical id, and one stored (before keys
        // were resolved) with an agent's name or a person's e-mail.
        let (input, req) = decision("Agent", "target", "agt_t", json!({"name": "target"}));
        for key in ["agt_t", "target"] {
            let set = on_resource("Agent", key);
            assert_eq!(charges(&set, "t", &input, &req).unwrap().len(), 1, "{key}");
        }
        let (input, req) = decision("Human", "hum_a", "hum_a", json!({"email": "a@x.com"}));
        let set = on_resource("Human", "a@x.com");
        assert_eq!(charges(&set, "t", &input, &req).unwrap().len(), 1);
        // A declared resource's own `name` attribute is not another key.
        let (input, req) = decision("repo", "r-1", "r-1", json!({"name": "billing"}));
        let set = on_resource("repo", "billing");
        assert!(charges(&set, "t", &input, &req).unwrap().is_empty());
        let set = on_resource("Agent", "someone-else");
        let (input, req) = decision("Agent", "target", "agt_t", json!({"name": "target"}));
        assert!(charges(&set, "t", &input, &req).unwrap().is_empty());
    }
}
