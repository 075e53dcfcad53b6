//! The rules of human approvals, as pure functions (`now` is passed in).
//!
//! * **Binding.** A runtime approval covers one exact request: the digest of
//!   its principal chain, action, resource (type, id, request attributes) and
//!   context. Key order does not matter; any other difference does.
//! * **Chains.** An approval has one step per approver group, decided in
//!   order; registrations and tier-raising changes follow the chain of their
//!   risk tier (default low: none, medium: security, high: security then legal).
//! * **Separation of duties.** Nobody decides an approval they requested, one
//!   for an agent they own or act through, or two steps of the same approval.
//! * **Expiry.** A pending approval expires at `expires_at`; an approved
//!   action's grant allows its request once, until `grant_expires_at`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use steward_types::{Approval, ApprovalStatus, ApprovalStep, ErrorCode, RiskTier};

use crate::Error;

/// The approver groups a registration (or a change raising the tier) of
/// each risk tier goes through, in order. An empty chain means automatic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierChains {
    /// Low risk (default: automatic).
    pub low: Vec<String>,
    /// Medium risk (default: `security`).
    pub medium: Vec<String>,
    /// High risk (default: `security`, then `legal`).
    pub high: Vec<String>,
}

impl Default for TierChains {
    fn default() -> Self {
        TierChains {
            low: vec![],
            medium: vec!["security".into()],
            high: vec!["security".into(), "legal".into()],
        }
    }
}

impl TierChains {
    /// The chain for a tier.
    pub fn for_tier(&self, tier: RiskTier) -> &[String] {
        match tier {
            RiskTier::Low => &self.low,
            RiskTier::Medium => &self.medium,
            RiskTier::High => &self.high,
        }
    }
}

/// How long approvals live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalTimes {
    /// A pending runtime approval expires after this.
    pub request_ttl: Duration,
    /// A pending registration or change approval expires after this.
    pub registration_ttl: Duration,
    /// Approvers should decide within this.
    pub sla: Duration,
    /// An approved action may be retried within this.
    pub grant_ttl: Duration,
}

impl Default for ApprovalTimes {
    fn default() -> Self {
        ApprovalTimes {
            request_ttl: Duration::hours(1),
            registration_ttl: Duration::days(14),
            sla: Duration::minutes(15),
            grant_ttl: Duration::minutes(15),
        }
    }
}

/// A JSON value with object keys sorted at every level, as compact text:
/// the same value gives the same text however its keys were ordered.
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(v) = m.get(*k) {
                    canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a runtime approval is bound to.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBinding<'a> {
    /// The principal chain as (kind, id): principal, ancestors, the human acted for.
    pub chain: &'a [(String, String)],
    /// The action.
    pub action: &'a str,
    /// Resource type.
    pub resource_type: &'a str,
    /// Resource id.
    pub resource_id: &'a str,
    /// Resource attributes given with the request.
    pub resource_attributes: &'a Map<String, Value>,
    /// The request context.
    pub context: &'a Map<String, Value>,
    /// A gateway call's full arguments, when the request is one (absent
    /// from the digest otherwise, so other requests' digests are as before).
    pub arguments: Option<&'a Map<String, Value>>,
    /// The usage the request estimates, when it gives one: approving a
    /// request over a quota approves that much, not any amount.
    pub estimate: Option<&'a Value>,
}

impl RequestBinding<'_> {
    /// The request as approvers see it.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::json!({
            "chain": self.chain.iter().map(|(k, i)| serde_json::json!({"kind": k, "id": i})).collect::<Vec<_>>(),
            "action": self.action,
            "resource": {
                "type": self.resource_type,
                "id": self.resource_id,
                "attributes": self.resource_attributes,
            },
            "context": self.context,
        });
        if let (Some(arguments), Some(fields)) = (self.arguments, out.as_object_mut()) {
            fields.insert("arguments".into(), Value::Object(arguments.clone()));
        }
        if let (Some(estimate), Some(fields)) = (self.estimate, out.as_object_mut()) {
            fields.insert("estimate".into(), estimate.clone());
        }
        out
    }

    /// The digest an approval of this request is bound to.
    pub fn digest(&self) -> String {
        let mut text = String::from("steward-approval-v1\n");
        canonical(&self.to_json(), &mut text);
        sha256_hex(&text)
    }
}

/// The digest of a registration or change approval: what exactly is approved.
pub fn subject_digest(kind: &str, subject: &Value) -> String {
    let mut text = format!("steward-approval-v1 {kind}\n");
    canonical(subject, &mut text);
    sha256_hex(&text)
}

/// The groups a runtime approval needs: those named by `@approval("a, b")`
/// annotations of the permitting policies (in order, without repeats), or
/// `default_group` when only the persona's `approval_required_for` asks.
pub fn runtime_groups(
    annotations: &[&str],
    persona_requires: bool,
    default_group: &str,
) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for a in annotations {
        for g in a.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !groups.iter().any(|x| x == g) {
                groups.push(g.to_string());
            }
        }
    }
    if groups.is_empty() && persona_requires {
        groups.push(default_group.to_string());
    }
    groups
}

/// Match approved grants to what a request needs. Each ask (the groups one
/// approval must include, e.g. a policy's `@approval` chain, or a quota's
/// group) needs its own grant whose approved groups include all of the
/// ask's; a grant serves one ask. `grants` is in filing order and the
/// oldest fitting grant is used. Returns, for each ask in order, the index
/// of its grant, or the index of the first ask no grant covers.
pub fn match_grants(grants: &[Vec<String>], asks: &[Vec<String>]) -> Result<Vec<usize>, usize> {
    // A bipartite matching by augmenting paths: an ask may take a grant
    // another ask holds when that one can move to a different grant.
    fn place(
        ask: usize,
        grants: &[Vec<String>],
        asks: &[Vec<String>],
        seen: &mut [bool],
        holder: &mut [Option<usize>],
    ) -> bool {
        let fits = |g: usize| asks[ask].iter().all(|a| grants[g].contains(a));
        // The oldest free grant first; move another ask only when none is.
        if let Some(g) = (0..grants.len()).find(|&g| holder[g].is_none() && fits(g)) {
            holder[g] = Some(ask);
            return true;
        }
        for g in 0..grants.len() {
            if seen[g] || !fits(g) {
                continue;
            }
            seen[g] = true;
            let free = match holder[g] {
                None => true,
                Some(other) => place(other, grants, asks, seen, holder),
            };
            if free {
                holder[g] = Some(ask);
                return true;
            }
        }
        false
    }
    let mut holder = vec![None; grants.len()];
    for ask in 0..asks.len() {
        let mut seen = vec![false; grants.len()];
        if !place(ask, grants, asks, &mut seen, &mut holder) {
            return Err(ask);
        }
    }
    let mut chosen = vec![0; asks.len()];
    for (g, h) in holder.iter().enumerate() {
        if let Some(ask) = h {
            chosen[*ask] = g;
        }
    }
    Ok(chosen)
}

/// Fresh, undecided steps for a chain of groups.
pub fn new_steps(groups: &[String]) -> Vec<ApprovalStep> {
    groups
        .iter()
        .map(|g| ApprovalStep {
            group: g.clone(),
            status: "pending".into(),
            decided_by: None,
            decided_by_email: None,
            comment: None,
            decided_at: None,
        })
        .collect()
}

/// The status as of `now`: pending past its expiry, or an unused grant past
/// its validity, is expired.
pub fn status_at(a: &Approval, now: DateTime<Utc>) -> ApprovalStatus {
    match a.status {
        ApprovalStatus::Pending if a.expires_at <= now => ApprovalStatus::Expired,
        ApprovalStatus::Approved if a.grant_expires_at.is_some_and(|g| g <= now) => {
            ApprovalStatus::Expired
        }
        s => s,
    }
}

/// Whether an approved grant allows a request with `digest` at `now`.
pub fn grant_allows(a: &Approval, digest: &str, now: DateTime<Utc>) -> bool {
    a.status == ApprovalStatus::Approved
        && a.digest == digest
        && a.grant_expires_at.is_some_and(|g| g > now)
}

/// The person deciding a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Approver<'a> {
    /// Their human id.
    pub human_id: &'a str,
    /// Their e-mail.
    pub email: &'a str,
    /// The roles they hold (approver groups are roles).
    pub roles: &'a [String],
    /// Whether they are an active human.
    pub active: bool,
}

/// Check that `approver` may decide the current step of `a` at `now`.
/// `excluded` holds the ids and e-mails of the people who may not: the
/// requester, the owners of the agents concerned, the human acted for.
/// Returns the index of the current step.
pub fn check_decider(
    a: &Approval,
    approver: &Approver<'_>,
    excluded: &[String],
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let status = status_at(a, now);
    if status != ApprovalStatus::Pending {
        return Err(Error::new(
            ErrorCode::ApprovalClosed,
            format!(
                "approval {} is {}; nothing is left to decide",
                a.id,
                status.as_str()
            ),
        )
        .with_details(serde_json::json!({ "approval": a.id, "status": status.as_str() })));
    }
    let Some(index) = a.steps.iter().position(|s| s.status == "pending") else {
        return Err(Error::new(
            ErrorCode::ApprovalClosed,
            format!("approval {} has no step left to decide", a.id),
        ));
    };
    let group = &a.steps[index].group;
    if !approver.active {
        return Err(Error::new(
            ErrorCode::NotAnApprover,
            format!("'{}' is deactivated and cannot approve", approver.email),
        ));
    }
    let me = |x: &String| x == approver.human_id || x.eq_ignore_ascii_case(approver.email);
    if excluded.iter().any(me) {
        return Err(Error::new(
            ErrorCode::SeparationOfDuties,
            format!(
                "'{}' requested this, owns the agent concerned or is acted for: someone else in '{group}' must decide",
                approver.email
            ),
        )
        .with_details(serde_json::json!({ "approval": a.id, "group": group })));
    }
    if a.steps
        .iter()
        .any(|s| s.decided_by.as_deref() == Some(approver.human_id))
    {
        return Err(Error::new(
            ErrorCode::SeparationOfDuties,
            format!(
                "'{}' already decided an earlier step; each step needs a different person",
                approver.email
            ),
        )
        .with_details(serde_json::json!({ "approval": a.id, "group": group })));
    }
    if !approver.roles.iter().any(|r| r == group) {
        return Err(Error::new(
            ErrorCode::NotAnApprover,
            format!(
                "this step waits for the '{group}' group; '{}' does not hold the role '{group}'",
                approver.email
            ),
        )
        .with_details(serde_json::json!({ "approval": a.id, "group": group })));
    }
    Ok(index)
}

fn decide_step(
    a: &mut Approval,
    index: usize,
    approver: &Approver<'_>,
    verdict: &str,
    comment: Option<String>,
    now: DateTime<Utc>,
) {
    if let Some(step) = a.steps.get_mut(index) {
        step.status = verdict.into();
        step.decided_by = Some(approver.human_id.into());
        step.decided_by_email = Some(approver.email.into());
        step.comment = comment;
        step.decided_at = Some(now);
    }
}

/// Approve the current step. Returns true when it was the last: the approval
/// is then `approved` (an action's grant valid for `grant_ttl`).
pub fn approve(
    a: &mut Approval,
    approver: &Approver<'_>,
    excluded: &[String],
    comment: Option<String>,
    now: DateTime<Utc>,
    grant_ttl: Duration,
) -> Result<bool, Error> {
    let index = check_decider(a, approver, excluded, now)?;
    decide_step(a, index, approver, "approved", comment, now);
    let last = a.steps.iter().all(|s| s.status == "approved");
    if last {
        a.status = ApprovalStatus::Approved;
        a.decided_at = Some(now);
        if a.kind == steward_types::ApprovalKind::Action {
            a.grant_expires_at = Some(now + grant_ttl);
        }
    }
    Ok(last)
}

/// Deny at the current step; a comment is required.
pub fn deny(
    a: &mut Approval,
    approver: &Approver<'_>,
    excluded: &[String],
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let comment = comment.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
        Error::invalid(
            "comment",
            "say why you deny it (the requester and the audit log see it)",
        )
    })?;
    let index = check_decider(a, approver, excluded, now)?;
    decide_step(a, index, approver, "denied", Some(comment), now);
    a.status = ApprovalStatus::Denied;
    a.decided_at = Some(now);
    Ok(())
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// An approved change from the list `from` to the list `to`, applied to
/// `current` (the list as it is when the approval is granted): what `to`
/// added is added, what it dropped is dropped, and whatever changed in the
/// meantime stays as it is. Order follows `current`, then `to`.
pub fn apply_change(current: &[String], from: &[String], to: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current
        .iter()
        .filter(|x| to.contains(x) || !from.contains(x))
        .cloned()
        .collect();
    for x in to {
        if !from.contains(x) && !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use steward_types::ApprovalKind;

    fn groups(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn a_grant_serves_only_asks_its_groups_cover() {
        // A quota approval by `approvers` is not a `finance` approval.
        let grants = groups(&[&["approvers"]]);
        assert_eq!(match_grants(&grants, &groups(&[&["finance"]])), Err(0));
        // Two asks need two grants, even of the same group.
        let asks = groups(&[&["approvers"], &["approvers"]]);
        assert_eq!(match_grants(&grants, &asks), Err(1));
        let two = groups(&[&["approvers"], &["approvers"]]);
        assert_eq!(match_grants(&two, &asks), Ok(vec![0, 1]));
        // A policy grant and a quota grant together serve both asks.
        let both = groups(&[&["finance", "security"], &["approvers"]]);
        let asks = groups(&[&["finance", "security"], &["approvers"]]);
        assert_eq!(match_grants(&both, &asks), Ok(vec![0, 1]));
        // The broad grant goes where only it fits, whatever the order.
        let grants = groups(&[&["approvers", "finance"], &["approvers"]]);
        let asks = groups(&[&["approvers"], &["finance"]]);
        assert_eq!(match_grants(&grants, &asks), Ok(vec![1, 0]));
        assert_eq!(match_grants(&[], &asks), Err(0));
        assert_eq!(match_grants(&grants, &[]), Ok(vec![]));
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn approval(groups: &[&str]) -> Approval {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        Approval {
            id: "apr_1".into(),
            kind: ApprovalKind::Action,
            status: ApprovalStatus::Pending,
            risk_tier: RiskTier::High,
            digest: "d".into(),
            agent_id: Some("agt_1".into()),
            agent_name: Some("bot".into()),
            requested_by: "agent:agt_1".into(),
            requested_by_human: None,
            request: json!({}),
            reason: "test".into(),
            steps: new_steps(&groups),
            created_at: t0(),
            expires_at: t0() + Duration::hours(1),
            sla_due_at: t0() + Duration::minutes(15),
            decided_at: None,
            grant_expires_at: None,
            used_at: None,
            used_by_decision: None,
        }
    }

    fn person<'a>(id: &'a str, email: &'a str, roles: &'a [String]) -> Approver<'a> {
        Approver {
            human_id: id,
            email,
            roles,
            active: true,
        }
    }

    #[test]
    fn a_chain_is_decided_in_order_by_different_people() {
        let security = vec!["security".to_string(), "legal".to_string()];
        let legal = vec!["legal".to_string()];
        let mut a = approval(&["security", "legal"]);
        let now = t0() + Duration::minutes(1);
        // Legal cannot go first.
        let err = approve(
            &mut a,
            &person("h2", "l@x", &legal),
            &[],
            None,
            now,
            Duration::minutes(5),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::NotAnApprover);
        assert!(
            !approve(
                &mut a,
                &person("h1", "s@x", &security),
                &[],
                None,
                now,
                Duration::minutes(5)
            )
            .unwrap()
        );
        assert_eq!(a.current_group(), Some("legal"));
        // The same person may not take the second step, even holding the role.
        let err = approve(
            &mut a,
            &person("h1", "s@x", &security),
            &[],
            None,
            now,
            Duration::minutes(5),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::SeparationOfDuties);
        assert!(
            approve(
                &mut a,
                &person("h2", "l@x", &legal),
                &[],
                None,
                now,
                Duration::minutes(5)
            )
            .unwrap()
        );
        assert_eq!(a.status, ApprovalStatus::Approved);
        assert_eq!(a.grant_expires_at, Some(now + Duration::minutes(5)));
        // Nothing is left.
        let err = approve(
            &mut a,
            &person("h3", "o@x", &legal),
            &[],
            None,
            now,
            Duration::minutes(5),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::ApprovalClosed);
    }

    #[test]
    fn requesters_and_owners_do_not_approve() {
        let roles = vec!["approvers".to_string()];
        let mut a = approval(&["approvers"]);
        let excluded = vec!["owner@x".to_string()];
        let err = approve(
            &mut a,
            &person("h9", "Owner@X", &roles),
            &excluded,
            None,
            t0(),
            Duration::minutes(5),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::SeparationOfDuties);
        let excluded = vec!["h9".to_string()];
        let err = deny(
            &mut a,
            &person("h9", "z@x", &roles),
            &excluded,
            Some("no".into()),
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::SeparationOfDuties);
        assert_eq!(a.status, ApprovalStatus::Pending);
    }

    #[test]
    fn deny_needs_a_comment_and_ends_it() {
        let roles = vec!["approvers".to_string()];
        let mut a = approval(&["approvers", "legal"]);
        let err = deny(
            &mut a,
            &person("h1", "a@x", &roles),
            &[],
            Some("  ".into()),
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        deny(
            &mut a,
            &person("h1", "a@x", &roles),
            &[],
            Some("too much".into()),
            t0(),
        )
        .unwrap();
        assert_eq!(a.status, ApprovalStatus::Denied);
        assert_eq!(a.steps[0].comment.as_deref(), Some("too much"));
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let roles = vec!["approvers".to_string()];
        let mut a = approval(&["approvers"]);
        assert_eq!(
            status_at(&a, t0() + Duration::minutes(59)),
            ApprovalStatus::Pending
        );
        assert_eq!(
            status_at(&a, t0() + Duration::hours(1)),
            ApprovalStatus::Expired
        );
        let err = approve(
            &mut a,
            &person("h1", "a@x", &roles),
            &[],
            None,
            t0() + Duration::hours(2),
            Duration::minutes(5),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::ApprovalClosed);
        let now = t0() + Duration::minutes(10);
        approve(
            &mut a,
            &person("h1", "a@x", &roles),
            &[],
            None,
            now,
            Duration::minutes(5),
        )
        .unwrap();
        assert!(grant_allows(&a, "d", now + Duration::minutes(4)));
        assert!(!grant_allows(&a, "d", now + Duration::minutes(5)));
        assert!(!grant_allows(&a, "other", now));
        assert_eq!(
            status_at(&a, now + Duration::minutes(5)),
            ApprovalStatus::Expired
        );
    }

    #[test]
    fn groups_come_from_annotations_or_the_persona() {
        assert_eq!(
            runtime_groups(&["support-leads, finance", "finance"], true, "approvers"),
            vec!["support-leads", "finance"]
        );
        assert_eq!(runtime_groups(&[], true, "approvers"), vec!["approvers"]);
        assert!(runtime_groups(&[], false, "approvers").is_empty());
        assert!(runtime_groups(&[" , "], false, "approvers").is_empty());
        let chains = TierChains::default();
        assert!(chains.for_tier(RiskTier::Low).is_empty());
        assert_eq!(chains.for_tier(RiskTier::High), ["security", "legal"]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn binding_digest(
        chain: &[(String, String)],
        action: &str,
        id: &str,
        context: &Map<String, Value>,
    ) -> String {
        RequestBinding {
            chain,
            action,
            resource_type: "refund",
            resource_id: id,
            resource_attributes: &Map::new(),
            context,
            arguments: None,
            estimate: None,
        }
        .digest()
    }

    proptest! {
        /// The digest ignores key order and changes with any amount, resource,
        /// action or chain difference.
        #[test]
        fn digests_bind_the_exact_request(
            amount in 0i64..1_000_000,
            other in 0i64..1_000_000,
            id in "[a-z0-9-]{1,12}",
            note in "[a-z ]{0,12}",
        ) {
            let chain = vec![("agent".to_string(), "agt_1".to_string())];
            let mut ctx = Map::new();
            ctx.insert("amount".into(), json!(amount));
            ctx.insert("note".into(), json!(note));
            let mut reordered = Map::new();
            reordered.insert("note".into(), json!(note));
            reordered.insert("amount".into(), json!(amount));
            let d = binding_digest(&chain, "issue_refund", &id, &ctx);
            prop_assert_eq!(&d, &binding_digest(&chain, "issue_refund", &id, &reordered));
            let mut changed = ctx.clone();
            changed.insert("amount".into(), json!(other));
            prop_assert_eq!(d == binding_digest(&chain, "issue_refund", &id, &changed), amount == other);
            prop_assert_ne!(&d, &binding_digest(&chain, "issue_refund", &format!("{id}x"), &ctx));
            prop_assert_ne!(&d, &binding_digest(&chain, "refund", &id, &ctx));
            let longer = vec![chain[0].clone(), ("human".to_string(), "hum_1".to_string())];
            prop_assert_ne!(&d, &binding_digest(&longer, "issue_refund", &id, &ctx));
        }

        /// A grant allows only its own digest, only before its validity ends,
        /// and never once it is used.
        #[test]
        fn a_grant_allows_only_its_request_in_time(minutes in 0i64..60, ttl in 1i64..30) {
            let roles = vec!["approvers".to_string()];
            let mut a = approval(&["approvers"]);
            let decided = t0() + Duration::minutes(1);
            approve(&mut a, &person("h1", "a@x", &roles), &[], None, decided, Duration::minutes(ttl)).unwrap();
            let at = decided + Duration::minutes(minutes);
            prop_assert_eq!(grant_allows(&a, "d", at), minutes < ttl);
            prop_assert!(!grant_allows(&a, "e", at));
            a.status = ApprovalStatus::Used;
            prop_assert!(!grant_allows(&a, "d", decided));
        }
    }

    #[test]
    fn an_approved_change_applies_to_the_list_as_it_is_now() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Filed as [a, b] -> [a, b, c]; meanwhile b was removed.
        assert_eq!(
            apply_change(&v(&["a"]), &v(&["a", "b"]), &v(&["a", "b", "c"])),
            v(&["a", "c"])
        );
        // Filed as [a, b] -> [a]; meanwhile d was added.
        assert_eq!(
            apply_change(&v(&["a", "b", "d"]), &v(&["a", "b"]), &v(&["a"])),
            v(&["a", "d"])
        );
        // Nothing changed meanwhile: exactly `to`.
        assert_eq!(
            apply_change(&v(&["a", "b"]), &v(&["a", "b"]), &v(&["b", "c"])),
            v(&["b", "c"])
        );
    }
}
