//! Bad input gets a clear 4xx with a stable code and changes nothing.

use serde_json::json;
use steward_client::Method;
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(bad_requests_change_nothing);

/// Method, path, body, content type, expected status and code.
type Case<'a> = (
    Method,
    &'a str,
    Option<String>,
    Option<&'a str>,
    u16,
    &'a str,
);

async fn bad_requests_change_nothing(b: Backend) {
    let s = TestServer::start_with(b, |c| c.max_body_bytes = 4096).await;
    human(&s.admin, "alice@example.com").await;
    let bob = human(&s.admin, "bob@example.com").await;
    low_risk_agent(&s.admin, "existing", "alice@example.com").await;
    s.admin
        .deactivate_human(&bob.id, &TransitionRequest::default())
        .await
        .unwrap();
    let before = snapshot(&s.admin).await;

    let json_ct = Some("application/json");
    let cases: Vec<Case> = vec![
        (Method::POST, "/v1/agents", Some("{not json".into()), json_ct, 400, "invalid_json"),
        (Method::POST, "/v1/agents", Some(String::new()), json_ct, 400, "invalid_json"),
        (Method::POST, "/v1/agents", Some(json!({"name": 5, "owner": "alice@example.com"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/agents", Some(json!({"owner": "alice@example.com"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "colour": "red"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x/y", "owner": "alice@example.com"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com"}).to_string()), Some("text/plain"), 415, "unsupported_media_type"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "a".repeat(10_000)}).to_string()), json_ct, 413, "payload_too_large"),
        (Method::POST, "/v1/agents", Some(json!({"name": "existing", "owner": "alice@example.com"}).to_string()), json_ct, 409, "already_exists"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "nobody@example.com"}).to_string()), json_ct, 422, "unknown_reference"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "bob@example.com"}).to_string()), json_ct, 422, "owner_inactive"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "persona": "Ghost"}).to_string()), json_ct, 422, "unknown_reference"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "roles": ["root"]}).to_string()), json_ct, 422, "unknown_reference"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "classifications": ["secret"]}).to_string()), json_ct, 422, "unknown_reference"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "parent": "ghost"}).to_string()), json_ct, 422, "unknown_reference"),
        (Method::POST, "/v1/agents", Some(json!({"name": "x", "owner": "alice@example.com", "expires_at": "yesterday"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::GET, "/v1/agents/agt_unknown", None, None, 404, "not_found"),
        (Method::GET, "/v1/agents?limit=abc", None, None, 400, "invalid_query"),
        (Method::GET, "/v1/agents?risk_tier=extreme", None, None, 400, "invalid_query"),
        (Method::POST, "/v1/agents/existing/explode", None, None, 404, "route_not_found"),
        (Method::POST, "/v1/agents/existing/resume", None, None, 409, "invalid_transition"),
        (Method::POST, "/v1/agents/ghost/suspend", Some(json!({"reason": "x"}).to_string()), json_ct, 404, "not_found"),
        (Method::POST, "/v1/humans", Some(json!({"email": "not-an-email", "display_name": "X"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/humans/bob@example.com/deactivate", None, None, 409, "invalid_transition"),
        (Method::POST, "/v1/personas", Some(json!({"name": "P", "quotas": [{"metric": "vibes", "window": "day", "limit": 1}]}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/personas", Some(json!({"name": "P", "quotas": [{"metric": "tokens", "window": "day", "limit": -1}]}).to_string()), json_ct, 400, "invalid_request"),
        (Method::POST, "/v1/agents/existing/keys", Some(json!({"expires_at": "2001-01-01T00:00:00Z"}).to_string()), json_ct, 400, "invalid_request"),
        (Method::DELETE, "/v1/agents", None, None, 405, "method_not_allowed"),
        (Method::GET, "/v2/nothing", None, None, 404, "route_not_found"),
    ];
    for (method, path, body, ct, status, code) in cases {
        let (got, body_json) = s.admin.raw(method.clone(), path, body, ct).await.unwrap();
        assert_eq!(got, status, "{method} {path}: {body_json}");
        assert_eq!(
            body_json["error"]["code"], code,
            "{method} {path}: {body_json}"
        );
        let message = body_json["error"]["message"].as_str().unwrap();
        assert!(
            message.len() > 10,
            "{method} {path}: message too terse: {message}"
        );
        assert!(body_json["error"]["docs"].as_str().unwrap().contains(code));
    }
    assert_eq!(
        snapshot(&s.admin).await,
        before,
        "a rejected request changed the store"
    );
    s.stop().await;
}
