//! Administering policies, resource types and entities: what a change
//! leaves valid, what it audits, what it refuses and to whom, and how the
//! decision engine follows the role and persona catalogue.

use serde_json::json;
use steward_client::{Client, Method};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    new_roles_and_personas_reach_denial_hints,
    resource_types_keep_their_stored_entities_valid,
    entity_changes_are_audited_with_what_they_replace,
    policy_owners_and_entity_keys_are_checked,
    applied_entity_keys_are_refused_by_name,
    a_committed_change_succeeds_though_the_engine_update_fails,
    non_admins_learn_nothing_of_what_exists,
    policy_statuses_say_whether_a_policy_was_created
);

/// Resource type `rt` and action `act` on it.
async fn declare_rt_act(admin: &Client) {
    admin
        .put_resource_type(&resource_type("rt", &[]))
        .await
        .unwrap();
    admin.put_action(&action("act", &["rt"])).await.unwrap();
}

fn resource_type(name: &str, attributes: &[(&str, &str)]) -> PutResourceType {
    PutResourceType {
        name: name.into(),
        description: String::new(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn action(name: &str, types: &[&str]) -> PutAction {
    PutAction {
        name: name.into(),
        resource_types: types.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

fn policy(id: &str, text: &str) -> PutPolicy {
    PutPolicy {
        id: id.into(),
        description: String::new(),
        owner: "security@example.com".into(),
        text: text.into(),
    }
}

fn entity(resource_type: &str, id: &str, attributes: serde_json::Value) -> ResourceEntity {
    ResourceEntity {
        resource_type: resource_type.into(),
        id: id.into(),
        attributes: serde_json::from_value(attributes).unwrap(),
    }
}

/// `bot` asks to `action` the resource `resource_type::id`.
fn ask(action: &str, resource_type: &str, id: &str) -> DecisionRequest {
    DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: "bot".into(),
        }),
        action: action.into(),
        resource: ResourceRef {
            resource_type: resource_type.into(),
            id: id.into(),
            attributes: Default::default(),
        },
        ..Default::default()
    }
}

/// An active agent `bot` holding no role.
async fn bot(admin: &Client) {
    human(admin, "owner@example.com").await;
    low_risk_agent(admin, "bot", "owner@example.com").await;
}

/// The error of a failed call.
fn error<T: std::fmt::Debug>(
    result: Result<T, steward_client::ClientError>,
) -> steward_types::ErrorDetail {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.detail().cloned().unwrap_or_else(|| panic!("{e}")),
    }
}

/// A role or persona created after the policy that names it is offered by
/// the very next denial on this node, and moves the tenant's policy epoch,
/// which is how the other nodes learn to rebuild their engines.
async fn new_roles_and_personas_reach_denial_hints(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    a.put_resource_type(&resource_type("doc", &[]))
        .await
        .unwrap();
    a.put_action(&action("read_doc", &["doc"])).await.unwrap();
    a.put_policy(&policy(
        "late-readers",
        r#"permit(principal in Role::"late-role", action == Action::"read_doc", resource);"#,
    ))
    .await
    .unwrap();
    bot(a).await;
    let hint = |d: DecisionResponse| {
        assert_eq!(d.decision, Decision::Deny, "{d:?}");
        d.remediation.unwrap()
    };
    // The engine is compiled (and kept) by this first decision.
    let before = hint(a.decide(&ask("read_doc", "doc", "d1")).await.unwrap());
    assert!(before.roles_that_allow.is_empty(), "{before:?}");

    let epoch = s.server.store().policy_epoch("default").await.unwrap();
    a.create_role(&CreateRole {
        name: "late-role".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let after_role = s.server.store().policy_epoch("default").await.unwrap();
    assert!(after_role > epoch, "a new role moves the policy epoch");
    let with_role = hint(a.decide(&ask("read_doc", "doc", "d1")).await.unwrap());
    assert_eq!(with_role.roles_that_allow, ["late-role"], "{with_role:?}");
    assert!(with_role.personas_that_allow.is_empty(), "{with_role:?}");

    a.create_persona(&CreatePersona {
        name: "late-persona".into(),
        roles: vec!["late-role".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        s.server.store().policy_epoch("default").await.unwrap() > after_role,
        "a new persona moves the policy epoch"
    );
    let with_persona = hint(a.decide(&ask("read_doc", "doc", "d1")).await.unwrap());
    assert_eq!(
        with_persona.personas_that_allow,
        ["late-persona"],
        "{with_persona:?}"
    );
    // A refused role changes nothing, the epoch included.
    let epoch = s.server.store().policy_epoch("default").await.unwrap();
    assert_eq!(
        code(
            a.create_role(&CreateRole {
                name: "late-role".into(),
                ..Default::default()
            })
            .await
        ),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        s.server.store().policy_epoch("default").await.unwrap(),
        epoch
    );
    // A role a governance directory creates moves it as well, so other
    // nodes' hints offer it too.
    a.apply(&ApplyRequest {
        roles: vec![CreateRole {
            name: "applied-role".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        s.server.store().policy_epoch("default").await.unwrap() > epoch,
        "a role created by apply moves the policy epoch"
    );
    s.stop().await;
}

/// A resource type is not changed under its stored entities: a change they
/// no longer fit is refused, naming the entity and the attribute, and
/// changes nothing; a type with entities is not deleted.
async fn resource_types_keep_their_stored_entities_valid(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    a.put_resource_type(&resource_type("rt10", &[("level", "Long")]))
        .await
        .unwrap();
    a.put_action(&action("use10", &["rt10"])).await.unwrap();
    a.put_policy(&policy(
        "use-rt10",
        r#"permit(principal, action == Action::"use10", resource is rt10);"#,
    ))
    .await
    .unwrap();
    bot(a).await;
    a.put_entity(&entity("rt10", "e1", json!({ "level": 5 })))
        .await
        .unwrap();
    a.put_entity(&entity("rt10", "e2", json!({ "level": 7 })))
        .await
        .unwrap();
    assert_eq!(
        a.decide(&ask("use10", "rt10", "e1"))
            .await
            .unwrap()
            .decision,
        Decision::Allow
    );
    let audit = all_audit(a).await.len();

    // The attribute's type changes under the stored value.
    let err = error(
        a.put_resource_type(&resource_type("rt10", &[("level", "String")]))
            .await,
    );
    assert_eq!(err.code, ErrorCode::InvalidSchema, "{err:?}");
    assert!(err.message.contains("rt10::e1"), "{}", err.message);
    assert!(err.message.contains("'level'"), "{}", err.message);
    // A required attribute the stored entities lack.
    let err = error(
        a.put_resource_type(&resource_type(
            "rt10",
            &[("level", "Long"), ("owner", "String")],
        ))
        .await,
    );
    assert_eq!(err.code, ErrorCode::InvalidSchema, "{err:?}");
    assert!(err.message.contains("rt10::e1"), "{}", err.message);
    assert!(err.message.contains("'owner'"), "{}", err.message);
    // Nothing changed: the type, the log, and decisions on the entity.
    let types = a.list_resource_types().await.unwrap();
    let rt10 = types.iter().find(|t| t.name == "rt10").unwrap();
    assert_eq!(rt10.attributes["level"], "Long");
    assert_eq!(rt10.attributes.len(), 1);
    assert_eq!(all_audit(a).await.len(), audit);
    assert_eq!(
        a.decide(&ask("use10", "rt10", "e1"))
            .await
            .unwrap()
            .decision,
        Decision::Allow
    );
    // A change the entities still fit is taken.
    a.put_resource_type(&resource_type(
        "rt10",
        &[("level", "Long"), ("note", "String?")],
    ))
    .await
    .unwrap();
    assert_eq!(
        a.decide(&ask("use10", "rt10", "e2"))
            .await
            .unwrap()
            .decision,
        Decision::Allow
    );

    // A type with entities is not deleted; once they are gone it is.
    a.put_resource_type(&resource_type("rt9", &[]))
        .await
        .unwrap();
    a.put_entity(&entity("rt9", "x", json!({}))).await.unwrap();
    let err = error(a.delete_resource_type("rt9").await);
    assert_eq!(err.code, ErrorCode::InvalidSchema, "{err:?}");
    assert!(err.message.contains("rt9::x"), "{}", err.message);
    assert!(err.message.contains("delete them first"), "{}", err.message);
    assert!(
        a.list_resource_types()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "rt9")
    );
    let (status, _) = a
        .raw(Method::DELETE, "/v1/entities/rt9/x", None, None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    a.delete_resource_type("rt9").await.unwrap();
    s.stop().await;
}

/// An entity's update and deletion are audited with the value they
/// replace; a put that changes nothing is not audited.
async fn entity_changes_are_audited_with_what_they_replace(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    a.put_resource_type(&resource_type("rt10", &[("level", "String")]))
        .await
        .unwrap();
    let first = entity("rt10", "aud1", json!({ "level": "a" }));
    let second = entity("rt10", "aud1", json!({ "level": "b" }));
    a.put_entity(&first).await.unwrap();
    a.put_entity(&second).await.unwrap();
    a.put_entity(&second).await.unwrap();
    let (status, _) = a
        .raw(Method::DELETE, "/v1/entities/rt10/aud1", None, None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let entries: Vec<AuditEntry> = all_audit(a)
        .await
        .into_iter()
        .filter(|e| e.resource_id == "rt10::aud1")
        .collect();
    let as_json = |e: &ResourceEntity| Some(serde_json::to_value(e).unwrap());
    let seen: Vec<(&str, Option<serde_json::Value>, Option<serde_json::Value>)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.before.clone(), e.after.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("entity.put", None, as_json(&first)),
            ("entity.put", as_json(&first), as_json(&second)),
            ("entity.delete", as_json(&second), None),
        ]
    );
    s.stop().await;
}

/// A policy's owner and an entity's type and id are checked before
/// anything is written: bounded, with no control characters.
async fn policy_owners_and_entity_keys_are_checked(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    declare_rt_act(a).await;
    let audit = all_audit(a).await.len();
    let text = r#"permit(principal, action == Action::"act", resource is rt);"#;
    for owner in [
        "o".repeat(600),
        "o".repeat(500 * 1024),
        "sec\0@example.com".into(),
        "sec\u{1b}[31m@example.com".into(),
    ] {
        let mut p = policy("owned", text);
        p.owner = owner;
        let err = error(a.put_policy(&p).await);
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{err:?}");
        assert!(err.message.starts_with("owner:"), "{}", err.message);
    }
    for (t, id) in [
        ("rt", String::new()),
        ("rt", "i".repeat(100 * 1024)),
        ("rt", "a\0b".into()),
        ("rt", "a\u{1b}b".into()),
        ("r\u{1b}t", "fine".into()),
    ] {
        let err = error(a.put_entity(&entity(t, &id, json!({}))).await);
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{err:?}");
    }
    assert!(
        a.list_policies(&PolicyQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        a.list_entities("rt", &PolicyQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(all_audit(a).await.len(), audit);
    // No owner, or a plain one, is fine.
    let mut p = policy("owned", text);
    p.owner = String::new();
    a.put_policy(&p).await.unwrap();
    p.owner = "Platform team <platform@example.com>".into();
    a.put_policy(&p).await.unwrap();
    s.stop().await;
}

/// An entity of an applied directory whose type or id is refused is
/// named, `entity TYPE::ID: `, as every other item of an apply is: the CLI
/// traces the refusal to its file and line by that name. Nothing is
/// written.
async fn applied_entity_keys_are_refused_by_name(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    let audit = all_audit(a).await.len();
    for (t, id, why) in [
        ("rt", String::new(), "id: must not be empty"),
        ("rt", "i".repeat(600), "id: longer than 512 bytes"),
        ("rt", "a\u{1b}b".into(), "id: contains a control character"),
        (
            "r\u{1b}t",
            "fine".into(),
            "type: contains a control character",
        ),
    ] {
        let req = ApplyRequest {
            resource_types: vec![resource_type("rt", &[])],
            entities: vec![entity(t, &id, json!({}))],
            ..Default::default()
        };
        let err = error(a.apply(&req).await);
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{err:?}");
        assert_eq!(err.message, format!("entity {t}::{id}: {why}"));
    }
    assert!(a.list_resource_types().await.unwrap().is_empty());
    assert_eq!(all_audit(a).await.len(), audit);
    s.stop().await;
}

/// A policy change, alone or in an apply, is committed before this node's
/// engine is updated: if the update fails (here the stored entities'
/// types cannot be read), the change is still reported done, not as an
/// error the client would take for a refusal; the engine is rebuilt at
/// the next refresh.
async fn a_committed_change_succeeds_though_the_engine_update_fails(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    declare_rt_act(a).await;
    let text = r#"permit(principal, action == Action::"act", resource is rt);"#;
    let store = s.server.store();
    store
        .execute_raw("ALTER TABLE resource_entities RENAME TO test_entities_away")
        .await
        .unwrap();
    let put = a.put_policy(&policy("alone", text)).await;
    let applied = a
        .apply(&ApplyRequest {
            policies: vec![policy("applied", text)],
            ..Default::default()
        })
        .await;
    store
        .execute_raw("ALTER TABLE test_entities_away RENAME TO resource_entities")
        .await
        .unwrap();
    put.unwrap();
    assert!(applied.unwrap().applied);
    let ids: Vec<String> = a
        .list_policies(&PolicyQuery::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["alone", "applied"]);
    s.stop().await;
}

/// A caller who may not administer policies is refused alike whether
/// what it names exists or not.
async fn non_admins_learn_nothing_of_what_exists(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    declare_rt_act(a).await;
    a.put_policy(&policy(
        "exists",
        r#"permit(principal, action == Action::"act", resource);"#,
    ))
    .await
    .unwrap();
    bot(a).await;
    let key = a.create_key("bot", &CreateKey::default()).await.unwrap();
    human(a, "auditor@example.com").await;
    let auditor = token_for(a, "auditor", TokenRole::Auditor, "auditor@example.com").await;
    for client in [s.client(&key.secret), s.client(&auditor.secret)] {
        for path in [
            "/v1/policies/exists",
            "/v1/policies/nonexistent",
            "/v1/resource-types/rt",
            "/v1/resource-types/nonexistent",
            "/v1/actions/act",
            "/v1/actions/nonexistent",
            "/v1/entities/rt/nonexistent",
        ] {
            let (status, body) = client.raw(Method::DELETE, path, None, None).await.unwrap();
            assert_eq!(status, 403, "DELETE {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "DELETE {path}: {body}");
        }
    }
    // Nothing was deleted.
    a.get_policy("exists").await.unwrap();
    assert_eq!(a.list_resource_types().await.unwrap().len(), 1);
    s.stop().await;
}

/// `201` means a policy was created (a deleted one put again included);
/// putting it unchanged or changed is `200`. Deleting a resource type an
/// action uses names the action.
async fn policy_statuses_say_whether_a_policy_was_created(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    a.put_resource_type(&resource_type("rt12", &[]))
        .await
        .unwrap();
    a.put_action(&action("act12", &["rt12"])).await.unwrap();
    let put = |text: &str| {
        let body = serde_json::to_string(&policy("p12", text)).unwrap();
        a.raw(
            Method::POST,
            "/v1/policies",
            Some(body),
            Some("application/json"),
        )
    };
    let permit = r#"permit(principal, action == Action::"act12", resource);"#;
    let forbid = r#"forbid(principal, action == Action::"act12", resource);"#;
    let (status, body) = put(permit).await.unwrap();
    assert_eq!((status, body["version"].as_i64()), (201, Some(1)), "{body}");
    let (status, body) = put(permit).await.unwrap();
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    let (status, body) = put(forbid).await.unwrap();
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    a.delete_policy("p12").await.unwrap();
    let (status, body) = put(permit).await.unwrap();
    assert_eq!((status, body["version"].as_i64()), (201, Some(4)), "{body}");

    a.delete_policy("p12").await.unwrap();
    let err = error(a.delete_resource_type("rt12").await);
    assert_eq!(err.code, ErrorCode::InvalidSchema, "{err:?}");
    assert!(err.message.contains("'act12'"), "{}", err.message);
    assert!(err.message.contains("used by action"), "{}", err.message);
    s.stop().await;
}
