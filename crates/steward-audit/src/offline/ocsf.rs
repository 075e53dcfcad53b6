//! Steward entries as OCSF events, for SIEMs.

use serde_json::{Value, json};

use super::{OCSF_VERSION, rfc3339_millis};

/// An entry (an `AuditEntry` as JSON) as an OCSF 1.3 API Activity event
/// (class 6003), without `unmapped`.
///
/// Decisions: the principal is `actor.user`, each deciding policy an
/// `actor.authorizations` item, the requested action `api.operation`, the
/// resource (with its attributes) `resources`, and the outcome `status`
/// (allow: Success; deny: Failure; approval required: Other). Changes: the
/// person or agent behind the credential is `actor.user` (the credential id
/// in `credential_uid`), the Steward action `api.operation`, the changed
/// record `resources`, status Success (a gateway's tool call: its outcome,
/// an error or a refusal being a Failure). The address a request came
/// from, when the entry has one, is `src_endpoint.ip`.
pub fn ocsf_event(entry: &Value) -> Value {
    let text = |pointer: &str| entry.pointer(pointer).and_then(Value::as_str);
    let action = text("/action").unwrap_or_default();
    let time = text("/time").and_then(rfc3339_millis).unwrap_or_default();
    let decision = action
        .strip_prefix("decision.")
        .filter(|d| matches!(*d, "allow" | "deny" | "approval_required"));
    let activity_id = match decision {
        Some(_) => 99,
        None => activity_of(action),
    };
    let activity_name = match activity_id {
        1 => "Create",
        2 => "Read",
        3 => "Update",
        4 => "Delete",
        _ => "Other",
    };
    let mut event = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": if decision.is_some() { "Authorize" } else { activity_name },
        "type_uid": 600_300 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "severity_id": 1,
        "severity": "Informational",
        "time": time,
        "metadata": {
            "version": OCSF_VERSION,
            "product": { "name": "Steward", "vendor_name": "Steward" },
            "uid": entry.get("seq").cloned().unwrap_or(Value::Null).to_string(),
            "tenant_uid": entry.get("tenant_id").cloned().unwrap_or(Value::Null),
            "correlation_uid": entry.get("request_id").cloned().unwrap_or(Value::Null),
            "event_code": action,
            "original_time": entry.get("time").cloned().unwrap_or(Value::Null),
            "log_name": "audit",
        },
    });
    let details = match decision {
        Some(outcome) => decision_details(entry, outcome),
        None => change_details(entry, action),
    };
    if let (Some(fields), Value::Object(more)) = (event.as_object_mut(), details) {
        fields.extend(more);
    }
    let source = text("/source").filter(|s| s.parse::<std::net::IpAddr>().is_ok());
    if let (Some(fields), Some(ip)) = (event.as_object_mut(), source) {
        fields.insert("src_endpoint".into(), json!({ "ip": ip }));
    }
    event
}

/// OCSF activity of a Steward action, by its verb.
fn activity_of(action: &str) -> i64 {
    let verb = action.rsplit('.').next().unwrap_or_default();
    match verb {
        "create" | "register" | "put" => 1,
        "read" | "search" | "list" | "export" => 2,
        "delete" | "revoke" | "decommission" => 4,
        "update" | "suspend" | "resume" | "rotate" | "activate" | "approve" | "reject"
        | "deactivate" | "reactivate" | "expire" | "transfer" => 3,
        _ => 99,
    }
}

fn decision_details(entry: &Value, outcome: &str) -> Value {
    let after = entry.get("after").cloned().unwrap_or(Value::Null);
    let principal = after.get("principal").cloned().unwrap_or(Value::Null);
    let kind = principal
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("agent");
    let policies: Vec<Value> = after
        .get("policies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let authorizations: Vec<Value> = if policies.is_empty() {
        vec![json!({ "decision": outcome })]
    } else {
        policies
            .iter()
            .map(|id| json!({ "decision": outcome, "policy": { "uid": id, "name": id } }))
            .collect()
    };
    let (status_id, status) = match outcome {
        "allow" => (1, "Success"),
        "deny" => (2, "Failure"),
        _ => (99, "Other"),
    };
    let resource = after.get("resource").cloned().unwrap_or(Value::Null);
    json!({
        "actor": {
            "user": {
                "uid": principal.get("id").cloned().unwrap_or(Value::Null),
                "name": principal.get("name").cloned().unwrap_or(Value::Null),
                "type": if kind == "human" { "User" } else { "AI Agent" },
                "type_id": if kind == "human" { 1 } else { 99 },
            },
            "authorizations": authorizations,
        },
        "api": {
            "operation": after.get("action").cloned().unwrap_or(Value::Null),
            "request": { "uid": entry.get("request_id").cloned().unwrap_or(Value::Null) },
            "service": { "name": "Steward decisions" },
        },
        "resources": [{
            "type": resource.get("type").cloned().unwrap_or(Value::Null),
            "uid": resource.get("id").cloned().unwrap_or(Value::Null),
            "data": resource.get("attributes").cloned().unwrap_or(Value::Null),
        }],
        "status_id": status_id,
        "status": status,
        "status_detail": outcome,
        "message": format!(
            "{} {} {}:{} -> {}",
            principal.get("name").and_then(Value::as_str).unwrap_or("?"),
            after.get("action").and_then(Value::as_str).unwrap_or("?"),
            resource.get("type").and_then(Value::as_str).unwrap_or("?"),
            resource.get("id").and_then(Value::as_str).unwrap_or("?"),
            outcome,
        ),
    })
}

fn change_details(entry: &Value, action: &str) -> Value {
    let text = |pointer: &str| entry.pointer(pointer).and_then(Value::as_str);
    let kind = text("/actor/kind").unwrap_or_default();
    let user = match (kind, text("/actor/human_id")) {
        ("agent", _) => json!({
            "uid": text("/actor/id"), "type": "AI Agent", "type_id": 99,
        }),
        ("token", Some(human)) => json!({
            "uid": human, "credential_uid": text("/actor/id"), "type": "User", "type_id": 1,
        }),
        ("token", None) => json!({
            "uid": text("/actor/id"), "credential_uid": text("/actor/id"),
            "type": "API Token", "type_id": 99,
        }),
        _ => json!({ "uid": text("/actor/id"), "type": "System", "type_id": 3 }),
    };
    let record = entry
        .get("after")
        .filter(|v| !v.is_null())
        .or_else(|| entry.get("before"));
    let name = record
        .and_then(|r| r.get("name").or_else(|| r.get("email")))
        .cloned()
        .unwrap_or(Value::Null);
    let mut resource = json!({
        "type": text("/resource_type"),
        "uid": text("/resource_id"),
    });
    if let (Some(fields), false) = (resource.as_object_mut(), name.is_null()) {
        fields.insert("name".into(), name);
    }
    // A change happened; a tool call reports how it went.
    let (status_id, status) = match record
        .and_then(|r| r.get("outcome"))
        .and_then(Value::as_str)
    {
        Some("error" | "refused") => (2, "Failure"),
        _ => (1, "Success"),
    };
    json!({
        "actor": { "user": user },
        "api": {
            "operation": action,
            "request": { "uid": entry.get("request_id").cloned().unwrap_or(Value::Null) },
            "service": { "name": "Steward" },
        },
        "resources": [resource],
        "status_id": status_id,
        "status": status,
        "message": format!(
            "{action} {}:{}{}",
            text("/resource_type").unwrap_or_default(),
            text("/resource_id").unwrap_or_default(),
            text("/reason").map(|r| format!(" ({r})")).unwrap_or_default(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_tool_call_is_a_failure_from_its_source() {
        let entry = |outcome: &str| {
            json!({
                "seq": 7, "time": "2026-11-27T10:00:00.000Z", "tenant_id": "default",
                "actor": { "kind": "agent", "id": "agt_1" },
                "action": "mcp.tool_call", "resource_type": "Tool", "resource_id": "files/read",
                "after": { "outcome": outcome, "tool": "read" },
                "source": "10.1.2.3",
            })
        };
        let failed = ocsf_event(&entry("error"));
        assert_eq!(
            (failed["status_id"].clone(), failed["status"].clone()),
            (json!(2), json!("Failure"))
        );
        assert_eq!(failed["src_endpoint"]["ip"], "10.1.2.3");
        assert_eq!(ocsf_event(&entry("refused"))["status_id"], 2);
        assert_eq!(ocsf_event(&entry("success"))["status_id"], 1);
    }
}
