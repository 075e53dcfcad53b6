//! Proven delegation: an agent exchanges a person's identity-provider token
//! (a JWT signed by a trusted issuer's key) for a delegated token at
//! `/oauth/token` (RFC 8693); with it, every decision acts for that person,
//! the chain rule applies, and the audit actor names them. Bad tokens are
//! refused with OAuth errors and store nothing; a leaver's, a revoked and a
//! key-revoked delegation stop working; a tenant can require proof.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use steward_testkit::{Backend, TestServer};
use steward_types::*;

use crate::support::*;

pub const ISS: &str = "https://login.example.com/";

/// An identity provider's signing key: a fresh P-256 key pair.
pub struct Idp {
    key: EncodingKey,
    pub jwk: Value,
}

pub fn idp(kid: &str) -> Idp {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Idp {
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

impl Idp {
    /// A token for `email`, with `claims` overriding the defaults.
    pub fn token(&self, kid: &str, email: &str, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut body = json!({"iss": ISS, "aud": "steward", "sub": format!("sub-{email}"),
            "email": email, "email_verified": true, "iat": now, "exp": now + 600});
        // A claim given as null is left out.
        for (k, v) in claims.as_object().unwrap() {
            match v {
                Value::Null => {
                    body.as_object_mut().unwrap().remove(k);
                }
                v => body[k] = v.clone(),
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &body, &self.key).unwrap()
    }
}

fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POST /oauth/token with `bearer`; the status and the JSON answer.
async fn exchange(s: &TestServer, bearer: Option<&str>, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/oauth/token", s.server.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    assert_eq!(
        res.headers().get("cache-control").unwrap(),
        "no-store",
        "token answers are never cached"
    );
    (status, res.json().await.unwrap())
}

fn grant(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.to_string()),
        ("subject_token", token.to_string()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_string(),
        ),
    ]
}

pub async fn exchange_token(s: &TestServer, key: &str, token: &str) -> (u16, Value) {
    let fields = grant(token);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    exchange(s, Some(key), &fields).await
}

/// A JSON call with `bearer`; the status and the answer (null if none).
pub async fn call(
    s: &TestServer,
    bearer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.server.url()))
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn ask(on_behalf_of: Option<&str>) -> Value {
    let mut body = json!({"action": "call", "resource": {"type": "api", "id": "billing"}});
    if let Some(h) = on_behalf_of {
        body["on_behalf_of"] = json!(h);
    }
    body
}

async fn decide(s: &TestServer, bearer: &str, on_behalf_of: Option<&str>) -> (u16, Value) {
    call(
        s,
        bearer,
        reqwest::Method::POST,
        "/v1/decisions",
        Some(ask(on_behalf_of)),
    )
    .await
}

async fn delegations(s: &TestServer, query: &str) -> Vec<Value> {
    let admin = s.admin.token().unwrap().to_string();
    let (status, page) = call(
        s,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/delegations{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn setup(s: &TestServer) -> String {
    let a = &s.admin;
    a.put_resource_type(&PutResourceType {
        name: "api".into(),
        description: String::new(),
        attributes: Default::default(),
    })
    .await
    .unwrap();
    a.put_action(&PutAction {
        name: "call".into(),
        description: String::new(),
        resource_types: vec!["api".into()],
        context: Default::default(),
    })
    .await
    .unwrap();
    a.put_policy(&PutPolicy {
        id: "callers".into(),
        description: "Callers may call APIs".into(),
        owner: "platform@example.com".into(),
        text: r#"permit(principal in Role::"callers", action == Action::"call", resource is api);"#
            .into(),
    })
    .await
    .unwrap();
    a.create_role(&CreateRole {
        name: "callers".into(),
        description: "May call APIs".into(),
        writes: false,
    })
    .await
    .unwrap();
    for (email, roles) in [
        ("owner@example.com", vec![]),
        ("alice@example.com", vec!["callers".to_string()]),
        ("bob@example.com", vec![]),
        ("carol@example.com", vec!["callers".to_string()]),
    ] {
        a.create_human(&CreateHuman {
            email: email.into(),
            display_name: email.into(),
            roles,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    a.register_agent(&RegisterAgent {
        name: "bot".into(),
        owner: "owner@example.com".into(),
        roles: Some(vec!["callers".into()]),
        classifications: Some(vec!["public".into()]),
        ..Default::default()
    })
    .await
    .unwrap();
    a.create_key(
        "bot",
        &CreateKey {
            name: "prod".into(),
            expires_at: None,
        },
    )
    .await
    .unwrap()
    .secret
}

async fn proven_delegation(backend: Backend) {
    let s = TestServer::start(backend).await;
    let key = setup(&s).await;
    let admin = s.admin.token().unwrap().to_string();
    let corp = idp("k1");
    let put = |jwks: Value| json!({"issuer": ISS, "audience": "steward", "jwks": jwks});
    let issuers = "/v1/delegation/issuers";

    // Bad key sets are refused and change nothing; an auditor cannot add one.
    for jwks in [
        json!({"keys": []}),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}),
        json!("not a key set"),
    ] {
        let (status, body) = call(
            &s,
            &admin,
            reqwest::Method::PUT,
            &format!("{issuers}/corp"),
            Some(put(jwks.clone())),
        )
        .await;
        assert_eq!(status, 400, "{jwks} -> {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("jwks"),
            "{body}"
        );
    }
    let auditor = token_for(&s.admin, "aud", TokenRole::Auditor, "owner@example.com").await;
    let (status, _) = call(
        &s,
        &auditor.secret,
        reqwest::Method::PUT,
        &format!("{issuers}/corp"),
        Some(put(json!({"keys": [corp.jwk]}))),
    )
    .await;
    assert_eq!(status, 403);
    let (_, list) = call(&s, &admin, reqwest::Method::GET, issuers, None).await;
    assert_eq!(list, json!([]));

    // Trusted; one `iss` names one issuer.
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/corp"),
        Some(put(json!({"keys": [corp.jwk]}))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["match_claim"], "email");
    let (status, _) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/again"),
        Some(put(json!({"keys": [corp.jwk]}))),
    )
    .await;
    assert_eq!(status, 409);

    // Refusals: OAuth errors, nothing stored.
    let other = idp("k1");
    let alice_jwt = corp.token("k1", "alice@example.com", json!({}));
    let expired = corp.token(
        "k1",
        "alice@example.com",
        json!({"exp": chrono::Utc::now().timestamp() - 3600}),
    );
    let refusals: Vec<(String, &str, &str)> = vec![
        (
            corp.token("k1", "alice@example.com", json!({"aud": "elsewhere"})),
            "invalid_grant",
            "audience",
        ),
        (expired, "invalid_grant", "expired"),
        (
            other.token("k1", "alice@example.com", json!({})),
            "invalid_grant",
            "signature",
        ),
        (
            corp.token("k2", "alice@example.com", json!({})),
            "invalid_grant",
            "kid 'k2'",
        ),
        (
            corp.token(
                "k1",
                "alice@example.com",
                json!({"iss": "https://evil.example/"}),
            ),
            "invalid_grant",
            "not trusted",
        ),
        (
            corp.token("k1", "nobody@example.com", json!({})),
            "invalid_grant",
            "nobody@example.com",
        ),
        ("not.a.jwt".into(), "invalid_grant", "JWT"),
        (
            corp.token("k1", "alice@example.com", json!({"email_verified": false})),
            "invalid_grant",
            "not verified",
        ),
        (
            corp.token(
                "k1",
                "alice@example.com",
                json!({"nbf": chrono::Utc::now().timestamp() + 3600}),
            ),
            "invalid_grant",
            "not valid yet",
        ),
    ];
    for (token, error, says) in &refusals {
        let (status, body) = exchange_token(&s, &key, token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(*error)),
            "{body}"
        );
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{says}: {description}");
    }
    let (status, body) = exchange(
        &s,
        Some(&key),
        &[
            ("grant_type", "client_credentials"),
            ("subject_token", &alice_jwt),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let grant_alice = grant(&alice_jwt);
    let fields: Vec<(&str, &str)> = grant_alice.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for bearer in [None, Some(admin.as_str()), Some("stw_unknown")] {
        let (status, body) = exchange(&s, bearer, &fields).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
    assert!(
        delegations(&s, "").await.is_empty(),
        "refusals store nothing"
    );

    // Alice's token, exchanged: the delegated token acts for her.
    let (status, body) = exchange_token(&s, &key, &alice_jwt).await;
    assert_eq!(status, 200, "{body}");
    let alice_token = body["access_token"].as_str().unwrap().to_string();
    assert!(alice_token.starts_with(DELEGATION_TOKEN_PREFIX));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    let lifetime = body["expires_in"].as_i64().unwrap();
    assert!(
        (1..=600).contains(&lifetime),
        "capped by her token: {lifetime}"
    );
    let alice_delegation = body["delegation_id"].as_str().unwrap().to_string();
    let alice_id = s.admin.get_human("alice@example.com").await.unwrap().id;
    let (_, who) = call(&s, &alice_token, reqwest::Method::GET, "/v1/whoami", None).await;
    assert_eq!(who["acting_for"], json!(alice_id), "{who}");
    assert_eq!(who["agent_name"], "bot");

    let (status, allowed) = decide(&s, &alice_token, None).await;
    assert_eq!(status, 200, "{allowed}");
    assert_eq!(allowed["decision"], "allow");
    let chain: Vec<&str> = allowed["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["bot", "alice@example.com"], "{allowed}");
    // Naming her again is fine; naming anyone else is refused.
    let (status, _) = decide(&s, &alice_token, Some("alice@example.com")).await;
    assert_eq!(status, 200);
    let (status, body) = decide(&s, &alice_token, Some("bob@example.com")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("delegation_required")),
        "{body}"
    );

    // Bob's delegation: the chain rule narrows it to what he may do.
    let bob_jwt = corp.token("k1", "bob@example.com", json!({}));
    let (status, body) = exchange_token(&s, &key, &bob_jwt).await;
    assert_eq!(status, 200, "{body}");
    let bob_token = body["access_token"].as_str().unwrap().to_string();
    let bob_delegation = body["delegation_id"].as_str().unwrap().to_string();
    let (_, denied) = decide(&s, &bob_token, None).await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    // A delegated token does not exchange again.
    let (status, body) = exchange_token(&s, &bob_token, &alice_jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // Without proof required, a key may still say whom it acts for; with
    // it, only a delegated token may. Enforcement points are trusted.
    let (_, said) = decide(&s, &key, Some("alice@example.com")).await;
    assert_eq!(said["decision"], "allow", "{said}");
    // Someone unknown and someone deactivated are the same denial to a key,
    // so it cannot probe the directory for e-mails; an admin's enforcement
    // point is told the name is unknown.
    s.admin
        .create_human(&CreateHuman {
            email: "dora@example.com".into(),
            display_name: "Dora".into(),
            roles: vec!["callers".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    s.admin
        .deactivate_human("dora@example.com", &TransitionRequest::default())
        .await
        .unwrap();
    for person in ["ghost@example.com", "dora@example.com"] {
        let (status, body) = decide(&s, &key, Some(person)).await;
        assert_eq!(
            (status, body["decision"].as_str()),
            (200, Some("deny")),
            "{body}"
        );
        assert_eq!(
            body["chain"][1],
            json!({"kind": "human", "id": person, "name": person, "allowed": false,
                   "reason": format!("'{person}' is not an active person of this tenant")}),
            "{body}"
        );
    }
    // The record names the person the tenant knows by id: the audit log
    // finds the decision under the leaver.
    let (status, found) = call(
        &s,
        &admin,
        reqwest::Method::GET,
        "/v1/audit?human=dora@example.com&action=decision.*",
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let entries = found["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{found}");
    assert_eq!(entries[0]["after"]["on_behalf_of"], "dora@example.com");
    let mut pep = ask(Some("ghost@example.com"));
    pep["principal"] = json!({"type": "agent", "id": "bot"});
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::POST,
        "/v1/decisions",
        Some(pep),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_reference")),
        "{body}"
    );
    let settings = "/v1/delegation/settings";
    for bad in [
        json!({"require_proof": true, "max_lifetime_secs": 5}),
        json!({"require_proof": "yes"}),
    ] {
        let (status, _) = call(&s, &admin, reqwest::Method::PUT, settings, Some(bad)).await;
        assert_eq!(status, 400);
    }
    let (_, current) = call(&s, &admin, reqwest::Method::GET, settings, None).await;
    assert_eq!(
        current,
        json!({"require_proof": false, "max_lifetime_secs": 3600})
    );
    let (status, _) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        settings,
        Some(json!({"require_proof": true, "max_lifetime_secs": 900})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = decide(&s, &key, Some("alice@example.com")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("delegation_required")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/oauth/token"),
        "{body}"
    );
    let (status, _) = decide(&s, &key, None).await;
    assert_eq!(status, 200, "acting for nobody needs no proof");
    assert_eq!(decide(&s, &alice_token, None).await.1["decision"], "allow");
    let mut pep = ask(Some("alice@example.com"));
    pep["principal"] = json!({"type": "agent", "id": "bot"});
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::POST,
        "/v1/decisions",
        Some(pep),
    )
    .await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (200, Some("allow")),
        "{body}"
    );

    // Revoked by an admin: it stops at once; revoking twice is a conflict.
    let revoke = format!("/v1/delegations/{bob_delegation}/revoke");
    let (status, _) = call(&s, &admin, reqwest::Method::POST, &revoke, Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = call(&s, &admin, reqwest::Method::POST, &revoke, Some(json!({}))).await;
    assert_eq!(status, 409);
    assert_eq!(decide(&s, &bob_token, None).await.0, 401);

    // Lists and filters.
    assert_eq!(delegations(&s, "").await.len(), 2);
    let active = delegations(&s, "?active=true").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], json!(alice_delegation));
    assert_eq!(delegations(&s, "?human=bob@example.com").await.len(), 1);
    let (status, _) = call(
        &s,
        &admin,
        reqwest::Method::GET,
        "/v1/delegations?agent=ghost",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The leaver: her delegations are revoked with her, and her token no
    // longer exchanges.
    let left = s
        .admin
        .deactivate_human(
            "alice@example.com",
            &TransitionRequest {
                reason: Some("left".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(left.revoked_delegations, vec![alice_delegation.clone()]);
    assert_eq!(decide(&s, &alice_token, None).await.0, 401);
    let (status, body) = exchange_token(&s, &key, &alice_jwt).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("deactivated"),
        "{body}"
    );

    // The agent key it was exchanged with revoked: it stops too.
    let carol_jwt = corp.token(
        "k1",
        "carol@example.com",
        json!({"exp": chrono::Utc::now().timestamp() + 7200}),
    );
    let (status, body) = exchange_token(&s, &key, &carol_jwt).await;
    assert_eq!(status, 200, "{body}");
    let lifetime = body["expires_in"].as_i64().unwrap();
    assert!(
        (840..=900).contains(&lifetime),
        "the tenant's cap: {lifetime}"
    );
    let carol_token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(decide(&s, &carol_token, None).await.1["decision"], "allow");
    // The agent's page shows whom it acts for now: Carol only (Alice left,
    // Bob's was revoked).
    let bot = s.admin.get_agent("bot").await.unwrap();
    let mut browser = crate::dashboard::Browser::new(&s.server.url());
    assert!(browser.sign_in(&admin).await.is_redirection());
    let (status, _, page) = browser.get(&format!("/ui/agents/{}", bot.id)).await;
    assert!(status.is_success());
    let section = page.split("Acting for people").nth(1).unwrap();
    let section = section.split("<h2>").next().unwrap();
    assert!(section.contains("carol@example.com"), "{section}");
    assert!(!section.contains("alice@example.com"), "{section}");
    assert!(!section.contains("bob@example.com"), "{section}");
    let key_id = s.admin.list_keys("bot", &page500()).await.unwrap().items[0]
        .id
        .clone();
    s.admin.revoke_key("bot", &key_id).await.unwrap();
    assert_eq!(decide(&s, &carol_token, None).await.0, 401);
    assert!(
        delegations(&s, "?active=true").await.is_empty(),
        "ended with its key"
    );
    let (_, _, page) = browser.get(&format!("/ui/agents/{}", bot.id)).await;
    assert!(
        !page.contains("carol@example.com"),
        "no longer listed as live"
    );

    // Every change is audited, with the person as the actor's human; no
    // secret is ever written.
    let audit = all_audit(&s.admin).await;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "delegation_issuer.put",
        "delegation.issue",
        "delegation.revoke",
        "delegation.settings",
    ] {
        assert!(actions.contains(&action), "{action} missing");
    }
    let decided_for_alice = audit
        .iter()
        .filter(|e| e.actor.kind == "agent" && e.actor.human_id.as_deref() == Some(&alice_id))
        .count();
    assert!(decided_for_alice >= 3, "{decided_for_alice}");
    // A delegated decision's record names her, though the request did not.
    let record = audit
        .iter()
        .find(|e| e.action == "decision.allow" && e.actor.human_id.as_deref() == Some(&alice_id))
        .unwrap();
    assert_eq!(
        record.after.as_ref().unwrap()["on_behalf_of"],
        json!("alice@example.com")
    );
    let text = serde_json::to_string(&audit).unwrap();
    for secret in [&alice_token, &bob_token, &carol_token, &key] {
        assert!(!text.contains(secret.as_str()));
    }
    assert!(!text.contains(&alice_jwt), "the person's token is not kept");

    // An issuer that requires its tokens to name the agent in `may_act`.
    let strict = idp("s1");
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/strict"),
        Some(
            json!({"issuer": "https://strict.example.com/", "audience": "steward",
            "jwks": {"keys": [strict.jwk]}, "require_may_act": true}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["require_may_act"], true);
    let strict_token = |may_act: Value| {
        strict.token(
            "s1",
            "carol@example.com",
            json!({"iss": "https://strict.example.com/", "may_act": may_act}),
        )
    };
    let next_key = s
        .admin
        .create_key(
            "bot",
            &CreateKey {
                name: "strict".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .secret;
    for (may_act, accepted) in [
        (Value::Null, false),
        (json!({"sub": "some-other-agent"}), false),
        (json!({"sub": "bot"}), true),
        (json!({"sub": bot.id}), true),
    ] {
        let (status, body) = exchange_token(&s, &next_key, &strict_token(may_act.clone())).await;
        assert_eq!(status == 200, accepted, "{may_act} -> {body}");
        if !accepted {
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("may_act"),
                "{body}"
            );
        }
    }

    // One issuer per tenant may match people by `sub`.
    let hr = idp("h1");
    let by_sub = |iss: &str| json!({"issuer": iss, "audience": "steward", "jwks": {"keys": [hr.jwk]}, "match_claim": "sub"});
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/hr"),
        Some(by_sub("https://hr.example.com/")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/hr2"),
        Some(by_sub("https://hr2.example.com/")),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // An address the token does not say is verified names nobody, unless
    // the issuer is trusted to send such addresses.
    let unverified = corp.token("k1", "carol@example.com", json!({"email_verified": null}));
    let (status, body) = exchange_token(&s, &next_key, &unverified).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("accept_unverified_email"),
        "{body}"
    );
    let said_as_text = corp.token("k1", "carol@example.com", json!({"email_verified": "true"}));
    assert_eq!(exchange_token(&s, &next_key, &said_as_text).await.0, 200);
    let (status, body) = call(
        &s,
        &admin,
        reqwest::Method::PUT,
        &format!("{issuers}/corp"),
        Some(
            json!({"issuer": ISS, "audience": "steward", "jwks": {"keys": [corp.jwk]},
            "accept_unverified_email": true}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accept_unverified_email"], true);
    assert_eq!(exchange_token(&s, &next_key, &unverified).await.0, 200);
    let refused = corp.token("k1", "carol@example.com", json!({"email_verified": false}));
    assert_eq!(exchange_token(&s, &next_key, &refused).await.0, 400);

    // An issuer removed: its tokens no longer exchange (with a new key).
    let key = s
        .admin
        .create_key(
            "bot",
            &CreateKey {
                name: "next".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .secret;
    let carol_again = corp.token("k1", "carol@example.com", json!({}));
    assert_eq!(exchange_token(&s, &key, &carol_again).await.0, 200);
    let (status, _) = call(
        &s,
        &admin,
        reqwest::Method::DELETE,
        &format!("{issuers}/corp"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &s,
        &admin,
        reqwest::Method::DELETE,
        &format!("{issuers}/corp"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = exchange_token(&s, &key, &carol_again).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{body}"
    );
    s.stop().await;
}

steward_testkit::on_both_backends!(proven_delegation);
