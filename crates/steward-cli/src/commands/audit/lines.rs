//! One audit entry as one line a person can read, and the names it needs.

use std::collections::HashMap;

use serde_json::Value;
use steward_client::Client;
use steward_types::{AuditEntry, PageQuery};

use crate::output;

/// Names for the ids entries mention, looked up once through the API where
/// the entry itself does not say (people's e-mails, agents' and tokens'
/// names). Lookups that fail (an auditor cannot list tokens) leave the id.
#[derive(Debug, Default)]
pub(super) struct Names {
    humans: HashMap<String, Option<String>>,
    agents: HashMap<String, Option<String>>,
    /// Token id to its role and human.
    tokens: Option<HashMap<String, (String, Option<String>)>>,
}

impl Names {
    /// A person's e-mail by id.
    fn human(&self, id: &str) -> Option<&str> {
        self.humans.get(id).and_then(|n| n.as_deref())
    }

    /// An agent's name by id.
    fn agent(&self, id: &str) -> Option<&str> {
        self.agents.get(id).and_then(|n| n.as_deref())
    }

    /// A token's role.
    fn token_role(&self, id: &str) -> Option<&str> {
        self.tokens.as_ref()?.get(id).map(|(role, _)| role.as_str())
    }

    /// Record names the entries give, then look up the ids still unknown.
    pub(super) async fn learn(&mut self, client: &Client, entries: &[AuditEntry]) {
        for e in entries {
            self.note_record(&e.resource_type, &e.resource_id, e.after.as_ref());
            self.note_record(&e.resource_type, &e.resource_id, e.before.as_ref());
        }
        if self.tokens.is_none() && entries.iter().any(|e| e.actor.kind == "token") {
            self.tokens = Some(token_roles(client).await);
        }
        for e in entries {
            if let Some(human) = &e.actor.human_id
                && !self.humans.contains_key(human)
            {
                let email = client.get_human(human).await.ok().map(|h| h.email);
                self.humans.insert(human.clone(), email);
            }
            if e.actor.kind == "agent" && !self.agents.contains_key(&e.actor.id) {
                let name = client.get_agent(&e.actor.id).await.ok().map(|a| a.name);
                self.agents.insert(e.actor.id.clone(), name);
            }
        }
    }

    fn note_record(&mut self, kind: &str, id: &str, record: Option<&Value>) {
        let Some(record) = record else { return };
        let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_owned);
        match kind {
            "agent" => {
                if let Some(name) = text("name") {
                    self.agents.insert(id.to_owned(), Some(name));
                }
            }
            "human" => {
                if let Some(email) = text("email") {
                    self.humans.insert(id.to_owned(), Some(email));
                }
            }
            _ => {}
        }
    }
}

async fn token_roles(client: &Client) -> HashMap<String, (String, Option<String>)> {
    let mut roles = HashMap::new();
    let mut cursor = None;
    // A few pages at most: names are a convenience.
    for _ in 0..10 {
        let query = PageQuery {
            cursor,
            limit: Some(500),
            ..PageQuery::default()
        };
        let Ok(page) = client.list_tokens(&query).await else {
            break;
        };
        for t in page.items {
            roles.insert(t.id, (t.role.as_str().to_owned(), t.human_id));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    roles
}

/// One entry as one line a person can read:
///
/// `2026-11-26 10:02 support-bot for alice@example.com: refund ticket:T-88
/// (amount 250) → deny (policy refunds-up-to-100)` for a decision, and
/// `2026-11-26 10:03 admin alice@example.com: agent.suspend agent reviewer —
/// investigating spend` for a change. Names come from the entry, then from
/// `names`; ids stand in for what neither knows.
pub(super) fn render_line(e: &AuditEntry, names: &Names) -> String {
    let when = output::time(&e.time);
    match decision_of(e) {
        Some(outcome) => format!("{when} {}", render_decision(e, outcome, names)),
        None => format!("{when} {}", render_change(e, names)),
    }
}

fn decision_of(e: &AuditEntry) -> Option<&str> {
    e.action
        .strip_prefix("decision.")
        .filter(|d| matches!(*d, "allow" | "deny" | "approval_required"))
}

fn render_decision(e: &AuditEntry, outcome: &str, names: &Names) -> String {
    let after = e.after.clone().unwrap_or(Value::Null);
    let text = |pointer: &str| after.pointer(pointer).and_then(Value::as_str);
    let principal = text("/principal/name")
        .or_else(|| text("/principal/id"))
        .unwrap_or("?");
    let chain = after
        .get("chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // The human acted for: the chain's human link (after the principal).
    let for_human = chain
        .iter()
        .skip(1)
        .filter(|l| l.get("kind").and_then(Value::as_str) == Some("human"))
        .filter_map(|l| l.get("name").and_then(Value::as_str))
        .next_back()
        .map(str::to_owned)
        .or_else(|| text("/on_behalf_of").map(|h| names.human(h).unwrap_or(h).to_owned()));
    let mut line = principal.to_owned();
    if let Some(human) = for_human {
        line.push_str(&format!(" for {human}"));
    }
    let action = text("/action").unwrap_or("?");
    let rtype = text("/resource/type").unwrap_or(&e.resource_type);
    let rid = text("/resource/id").unwrap_or(&e.resource_id);
    line.push_str(&format!(": {action} {rtype}:{rid}"));
    // The resource's attributes, then the request's scalar context values
    // (an amount, a channel): what a reader needs to see why.
    let shown: Vec<String> = ["/resource/attributes", "/context"]
        .into_iter()
        .filter_map(|at| after.pointer(at).and_then(Value::as_object))
        .flat_map(|fields| fields.iter())
        .filter(|(_, v)| !v.is_object() && !v.is_array() && !v.is_null())
        .map(|(k, v)| format!("{k} {}", plain(v)))
        .collect();
    if !shown.is_empty() {
        line.push_str(&format!(" ({})", shown.join(", ")));
    }
    line.push_str(&format!(" → {}", outcome.replace('_', " ")));
    let policies: Vec<String> = after
        .get("policies")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(plain).collect())
        .unwrap_or_default();
    let refused = chain
        .iter()
        .filter(|l| l.get("allowed").and_then(Value::as_bool) == Some(false))
        .find_map(|l| l.get("reason").and_then(Value::as_str));
    let errors: Vec<String> = after
        .get("errors")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(plain).collect())
        .unwrap_or_default();
    match (policies.as_slice(), refused) {
        ([one], _) => line.push_str(&format!(" (policy {one})")),
        ([], Some(reason)) => line.push_str(&format!(" ({reason})")),
        ([], None) => {}
        (many, _) => line.push_str(&format!(" (policies {})", many.join(", "))),
    }
    if !errors.is_empty() {
        line.push_str(&format!(" [errors: {}]", errors.join("; ")));
    }
    line
}

fn render_change(e: &AuditEntry, names: &Names) -> String {
    let actor = actor_label(e, names);
    let resource = resource_label(e, names);
    let mut line = format!("{actor}: {} {resource}", e.action);
    if let Some(reason) = e.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

/// "admin alice@example.com", "agent support-bot", "system expiry".
fn actor_label(e: &AuditEntry, names: &Names) -> String {
    let a = &e.actor;
    match a.kind.as_str() {
        "token" => {
            let person = a
                .human_id
                .as_deref()
                .map(|h| names.human(h).unwrap_or(h).to_owned());
            match (names.token_role(&a.id), person) {
                (Some(role), Some(person)) => format!("{role} {person}"),
                (Some(role), None) => format!("{role} token {}", a.id),
                (None, Some(person)) => person,
                (None, None) => format!("token {}", a.id),
            }
        }
        "agent" => format!("agent {}", names.agent(&a.id).unwrap_or(&a.id)),
        kind => format!("{kind} {}", a.id),
    }
}

/// "agent reviewer", "human bob@example.com", "policy refunds".
fn resource_label(e: &AuditEntry, names: &Names) -> String {
    let from_record = |record: Option<&Value>| {
        let record = record?;
        ["name", "email"]
            .iter()
            .find_map(|k| record.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let name = from_record(e.after.as_ref())
        .or_else(|| from_record(e.before.as_ref()))
        .or_else(|| match e.resource_type.as_str() {
            "agent" => names.agent(&e.resource_id).map(str::to_owned),
            "human" => names.human(&e.resource_id).map(str::to_owned),
            _ => None,
        });
    match name {
        Some(name) => format!("{} {name}", e.resource_type),
        None => format!("{} {}", e.resource_type, e.resource_id),
    }
}

/// A JSON value as plain text: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;
    use steward_types::Actor;

    fn entry(action: &str, actor: Actor, after: Value) -> AuditEntry {
        AuditEntry {
            seq: 7,
            time: chrono::Utc
                .with_ymd_and_hms(2026, 11, 26, 10, 2, 41)
                .single()
                .unwrap(),
            tenant_id: "default".into(),
            actor,
            action: action.into(),
            resource_type: "ticket".into(),
            resource_id: "T-88".into(),
            before: None,
            after: Some(after),
            reason: None,
            request_id: Some("req-1".into()),
            source: None,
            leaf_hash: None,
        }
    }

    fn pep() -> Actor {
        Actor {
            kind: "token".into(),
            id: "tok_pep".into(),
            human_id: None,
        }
    }

    fn decision(outcome: &str, policies: Value, chain_extra: Value) -> AuditEntry {
        let mut chain = vec![json!({
            "kind": "agent", "id": "agt_1", "name": "support-bot", "allowed": outcome == "allow",
            "reason": null
        })];
        if let Value::Array(extra) = chain_extra {
            chain.extend(extra);
        }
        entry(
            &format!("decision.{outcome}"),
            pep(),
            json!({
                "decision_id": "dec_1",
                "decision": outcome,
                "principal": { "kind": "agent", "id": "agt_1", "name": "support-bot" },
                "action": "refund",
                "resource": { "type": "ticket", "id": "T-88", "attributes": { "amount": 250 } },
                "context": {},
                "on_behalf_of": "alice@example.com",
                "chain": chain,
                "policies": policies,
                "errors": [],
            }),
        )
    }

    #[test]
    fn a_decision_reads_as_who_for_whom_did_what_and_why() {
        let human = json!([{
            "kind": "human", "id": "hum_1", "name": "alice@example.com", "allowed": true, "reason": null
        }]);
        let e = decision("deny", json!(["support.agent-refunds-up-to-100"]), human);
        assert_eq!(
            render_line(&e, &Names::default()),
            "2026-11-26 10:02 support-bot for alice@example.com: refund ticket:T-88 (amount 250) \
             → deny (policy support.agent-refunds-up-to-100)"
        );
        let e = decision("approval_required", json!(["a", "b"]), json!([]));
        assert_eq!(
            render_line(&e, &Names::default()),
            "2026-11-26 10:02 support-bot for alice@example.com: refund ticket:T-88 (amount 250) \
             → approval required (policies a, b)"
        );
    }

    #[test]
    fn a_refusal_without_a_policy_says_why() {
        let mut e = decision("deny", json!([]), json!([]));
        if let Some(after) = e.after.as_mut() {
            after["chain"][0]["reason"] = json!("agent 'support-bot' is suspended");
            after["on_behalf_of"] = Value::Null;
            after["resource"]["attributes"] = json!({});
        }
        assert_eq!(
            render_line(&e, &Names::default()),
            "2026-11-26 10:02 support-bot: refund ticket:T-88 → deny (agent 'support-bot' is \
             suspended)"
        );
    }

    #[test]
    fn a_change_reads_as_who_did_what_to_which_and_why() {
        let admin = Actor {
            kind: "token".into(),
            id: "tok_admin".into(),
            human_id: Some("hum_alice".into()),
        };
        let mut e = entry(
            "agent.suspend",
            admin,
            json!({ "id": "agt_9", "name": "reviewer", "state": "suspended" }),
        );
        e.resource_type = "agent".into();
        e.resource_id = "agt_9".into();
        e.reason = Some("investigating spend".into());
        // Without names: the ids.
        assert_eq!(
            render_line(&e, &Names::default()),
            "2026-11-26 10:02 hum_alice: agent.suspend agent reviewer — investigating spend"
        );
        let mut names = Names::default();
        names
            .humans
            .insert("hum_alice".into(), Some("alice@example.com".into()));
        names.tokens = Some(HashMap::from([(
            "tok_admin".to_owned(),
            ("admin".to_owned(), Some("hum_alice".to_owned())),
        )]));
        assert_eq!(
            render_line(&e, &names),
            "2026-11-26 10:02 admin alice@example.com: agent.suspend agent reviewer — \
             investigating spend"
        );
    }

    #[test]
    fn agents_and_the_system_are_named_as_such() {
        let mut e = entry(
            "key.create",
            Actor {
                kind: "agent".into(),
                id: "agt_1".into(),
                human_id: None,
            },
            json!({ "id": "key_1", "agent_id": "agt_1", "name": "ci" }),
        );
        e.resource_type = "agent_key".into();
        e.resource_id = "key_1".into();
        let mut names = Names::default();
        names.agents.insert("agt_1".into(), Some("builder".into()));
        assert_eq!(
            render_line(&e, &names),
            "2026-11-26 10:02 agent builder: key.create agent_key ci"
        );
        e.actor = Actor {
            kind: "system".into(),
            id: "expiry".into(),
            human_id: None,
        };
        e.after = None;
        assert_eq!(
            render_line(&e, &Names::default()),
            "2026-11-26 10:02 system expiry: key.create agent_key key_1"
        );
    }

    #[test]
    fn names_are_learnt_from_the_records_entries_carry() {
        let mut names = Names::default();
        names.note_record(
            "human",
            "hum_2",
            Some(&json!({ "email": "bob@example.com" })),
        );
        names.note_record("agent", "agt_2", Some(&json!({ "name": "triage" })));
        assert_eq!(names.human("hum_2"), Some("bob@example.com"));
        assert_eq!(names.agent("agt_2"), Some("triage"));
        assert_eq!(names.agent("agt_3"), None);
    }
}
