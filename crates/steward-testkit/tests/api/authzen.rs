//! The OpenID AuthZEN Authorization API over HTTP: the public Todo interop
//! scenario (every case of both decision files), batch semantics, search with
//! pagination, bad input, metadata, request ids and auditing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use steward_client::{Client, Method};
use steward_testkit::{ADMIN_TOKEN, Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    todo_interop_scenario,
    evaluations_semantics_defaults_and_order,
    search_with_pagination,
    authzen_bad_input_metadata_and_audit,
    authzen_refusals_record_effective_attributes,
    authzen_search_leaves_out_candidates_it_cannot_decide,
    authzen_search_leaves_out_what_a_quota_would_refuse,
    authzen_search_token_is_bound_to_properties_and_context,
    authzen_ignores_unknown_fields_where_decisions_refuse_them
);

/// The Todo scenario's users: name, PID (the AuthZEN subject id), e-mail, roles.
const TODO_USERS: [(&str, &str, &str, &[&str]); 5] = [
    (
        "Rick Sanchez",
        "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "rick@the-citadel.com",
        &["admin", "evil_genius"],
    ),
    (
        "Morty Smith",
        "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "morty@the-citadel.com",
        &["editor"],
    ),
    (
        "Summer Smith",
        "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "summer@the-smiths.com",
        &["editor"],
    ),
    (
        "Beth Smith",
        "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "beth@the-smiths.com",
        &["viewer"],
    ),
    (
        "Jerry Smith",
        "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "jerry@the-smiths.com",
        &["viewer"],
    ),
];

const RICK: &str = TODO_USERS[0].1;
const MORTY: &str = TODO_USERS[1].1;
const SUMMER: &str = TODO_USERS[2].1;
const JERRY: &str = TODO_USERS[4].1;

/// The Todo scenario in Steward: four roles, the five users (external id =
/// PID), the `user` and `todo` resource types, five actions, and a Cedar
/// policy per rule of the scenario's README.
async fn todo_setup(admin: &Client) {
    for (name, description, writes) in [
        ("admin", "Todo administrators", true),
        ("editor", "Todo editors", true),
        ("evil_genius", "May update anyone's todos", true),
        ("viewer", "May only read", false),
    ] {
        admin
            .create_role(&CreateRole {
                name: name.into(),
                description: description.into(),
                writes,
            })
            .await
            .unwrap();
    }
    for (name, pid, email, roles) in TODO_USERS {
        admin
            .create_human(&CreateHuman {
                email: email.into(),
                display_name: name.into(),
                external_id: Some(pid.into()),
                teams: vec![],
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
            .await
            .unwrap();
    }
    admin
        .put_resource_type(&PutResourceType {
            name: "user".into(),
            description: "A user of the Todo application".into(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
    admin
        .put_resource_type(&PutResourceType {
            name: "todo".into(),
            description: "A todo item".into(),
            attributes: [("ownerID".to_string(), "String?".to_string())].into(),
        })
        .await
        .unwrap();
    for (name, resource_type) in [
        ("can_read_user", "user"),
        ("can_read_todos", "todo"),
        ("can_create_todo", "todo"),
        ("can_update_todo", "todo"),
        ("can_delete_todo", "todo"),
    ] {
        admin
            .put_action(&PutAction {
                name: name.into(),
                description: String::new(),
                resource_types: vec![resource_type.into()],
                context: Default::default(),
            })
            .await
            .unwrap();
    }
    let policies = [
        (
            "todo-read-users",
            "Anyone may read users",
            r#"permit(principal, action == Action::"can_read_user", resource is user);"#,
        ),
        (
            "todo-read-todos",
            "Anyone may read todos",
            r#"permit(principal, action == Action::"can_read_todos", resource is todo);"#,
        ),
        (
            "todo-create-admin",
            "Admins create todos",
            r#"permit(principal in Role::"admin", action == Action::"can_create_todo", resource is todo);"#,
        ),
        (
            "todo-create-editor",
            "Editors create todos",
            r#"permit(principal in Role::"editor", action == Action::"can_create_todo", resource is todo);"#,
        ),
        (
            "todo-update-evil-genius",
            "Evil geniuses update any todo",
            r#"permit(principal in Role::"evil_genius", action == Action::"can_update_todo", resource is todo);"#,
        ),
        (
            "todo-update-editor-owner",
            "Editors update their own todos",
            r#"permit(principal is Human in Role::"editor", action == Action::"can_update_todo", resource is todo)
when { resource has ownerID && resource.ownerID == principal.email };"#,
        ),
        (
            "todo-delete-admin",
            "Admins delete any todo",
            r#"permit(principal in Role::"admin", action == Action::"can_delete_todo", resource is todo);"#,
        ),
        (
            "todo-delete-editor-owner",
            "Editors delete their own todos",
            r#"permit(principal is Human in Role::"editor", action == Action::"can_delete_todo", resource is todo)
when { resource has ownerID && resource.ownerID == principal.email };"#,
        ),
    ];
    for (id, description, text) in policies {
        admin
            .put_policy(&PutPolicy {
                id: id.into(),
                description: description.into(),
                owner: "rick@the-citadel.com".into(),
                text: text.into(),
            })
            .await
            .unwrap();
    }
}

/// `$STEWARD_CONFORMANCE_DIR/authzen-todo`, else `shared/conformance/authzen-todo`
/// next to the repository (`../../../shared/conformance` from this crate, or
/// found walking up from it).
fn todo_conformance_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(base) = std::env::var_os("STEWARD_CONFORMANCE_DIR") {
        let dir = PathBuf::from(base).join("authzen-todo");
        assert!(
            dir.is_dir(),
            "STEWARD_CONFORMANCE_DIR is set, but {} is not a directory holding the AuthZEN Todo decision files",
            dir.display()
        );
        return dir;
    }
    let default = manifest.join("../../../shared/conformance/authzen-todo");
    if default.is_dir() {
        return default;
    }
    manifest
        .ancestors()
        .map(|a| a.join("shared/conformance/authzen-todo"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "the AuthZEN Todo decision files are missing: expected {} (or set STEWARD_CONFORMANCE_DIR to the folder holding authzen-todo/)",
                default.display()
            )
        })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

async fn post(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    client
        .raw(
            Method::POST,
            path,
            Some(body.to_string()),
            Some("application/json"),
        )
        .await
        .unwrap()
}

async fn todo_interop_scenario(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    let dir = todo_conformance_dir();
    let mut passed = 0;
    let mut total = 0;
    let mut failures = Vec::new();
    for file in [
        "decisions-authorization-api-1_0-01.json",
        "decisions-authorization-api-1_0-02.json",
    ] {
        let data = read_json(&dir.join(file));
        for (i, case) in data["evaluation"].as_array().unwrap().iter().enumerate() {
            total += 1;
            let (status, answer) = post(&s.admin, "/access/v1/evaluation", &case["request"]).await;
            if status == 200 && answer["decision"] == case["expected"] {
                passed += 1;
            } else {
                failures.push(format!(
                    "{file} evaluation[{i}]: {} -> {status} {answer}, expected {}",
                    case["request"], case["expected"]
                ));
            }
        }
        for (i, case) in data["evaluations"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            total += 1;
            let (status, answer) = post(&s.admin, "/access/v1/evaluations", &case["request"]).await;
            // The reference harness compares the array as JSON text.
            let got = serde_json::to_string(&answer["evaluations"]).unwrap();
            let expected = serde_json::to_string(&case["expected"]).unwrap();
            if status == 200 && got == expected {
                passed += 1;
            } else {
                failures.push(format!(
                    "{file} evaluations[{i}]: {status} {got}, expected {expected}"
                ));
            }
        }
    }
    println!("authzen todo: {passed}/{total} passed");
    assert_eq!(
        total, 83,
        "the decision files hold 40 + 40 single and 3 batch cases"
    );
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );

    // Every one of those decisions is in the audit log.
    let decisions = all_audit(&s.admin)
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("decision."))
        .count();
    assert_eq!(decisions, 80 + 6);
    s.stop().await;
}

fn todo(id: &str, owner: &str) -> Value {
    json!({ "type": "todo", "id": id, "properties": { "ownerID": owner } })
}

fn user(pid: &str) -> Value {
    json!({ "type": "user", "id": pid })
}

fn decisions(answer: &Value) -> Vec<bool> {
    answer["evaluations"]
        .as_array()
        .unwrap_or_else(|| panic!("no evaluations in {answer}"))
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect()
}

async fn decision_count(admin: &Client) -> usize {
    all_audit(admin)
        .await
        .iter()
        .filter(|e| e.action.starts_with("decision."))
        .count()
}

async fn evaluations_semantics_defaults_and_order(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    let mine = todo("t1", "morty@the-citadel.com");
    let ricks = todo("t2", "rick@the-citadel.com");
    let batch = |semantic: Option<&str>, items: Vec<Value>| {
        let mut body = json!({
            "subject": user(MORTY),
            "action": { "name": "can_update_todo" },
            "evaluations": items.into_iter().map(|r| json!({ "resource": r })).collect::<Vec<_>>(),
        });
        if let Some(semantic) = semantic {
            body["options"] = json!({ "evaluations_semantic": semantic });
        }
        body
    };
    let items = vec![mine.clone(), ricks.clone(), mine.clone()];

    // execute_all (default and explicit): every item, in request order, each exactly {"decision": bool}.
    for semantic in [None, Some("execute_all")] {
        let answer = s
            .admin
            .authzen_evaluations(&batch(semantic, items.clone()))
            .await
            .unwrap();
        assert_eq!(
            answer,
            json!({ "evaluations": [{"decision": true}, {"decision": false}, {"decision": true}] })
        );
    }
    // deny_on_first_deny: ends with the first denial; the rest is not evaluated (nor audited).
    let before = decision_count(&s.admin).await;
    let answer = s
        .admin
        .authzen_evaluations(&batch(Some("deny_on_first_deny"), items.clone()))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [true, false]);
    assert_eq!(decision_count(&s.admin).await, before + 2);
    let all_allowed = s
        .admin
        .authzen_evaluations(&batch(Some("deny_on_first_deny"), vec![mine.clone(); 3]))
        .await
        .unwrap();
    assert_eq!(decisions(&all_allowed), [true, true, true]);
    // permit_on_first_permit: ends with the first permit.
    let answer = s
        .admin
        .authzen_evaluations(&batch(
            Some("permit_on_first_permit"),
            vec![ricks.clone(), mine.clone(), ricks.clone()],
        ))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [false, true]);
    let none = s
        .admin
        .authzen_evaluations(&batch(
            Some("permit_on_first_permit"),
            vec![ricks.clone(); 2],
        ))
        .await
        .unwrap();
    assert_eq!(decisions(&none), [false, false]);

    // Defaults and per-item overrides.
    let answer = s
        .admin
        .authzen_evaluations(&json!({
            "subject": user(JERRY),
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "t9" },
            "context": { "time": "2025-06-27T18:03-07:00" },
            "evaluations": [
                {},
                { "action": { "name": "can_create_todo" } },
                { "subject": user(RICK), "action": { "name": "can_create_todo" } },
                { "resource": { "type": "todo", "id": "t10" } },
                { "subject": user(SUMMER), "action": { "name": "can_delete_todo" }, "resource": todo("t3", "summer@the-smiths.com") },
                { "subject": user(SUMMER), "action": { "name": "can_delete_todo" }, "resource": { "type": "todo", "id": "t4" } },
                { "context": { "source": "batch-override" } },
            ],
        }))
        .await
        .unwrap();
    assert_eq!(
        decisions(&answer),
        [true, false, true, true, true, false, true]
    );

    // An item's subject, action or resource replaces the default's whole
    // (AuthZEN: the item's value takes precedence): an item naming only a
    // resource's type, or a subject's id, is incomplete, not completed from
    // the default into a resource or subject nobody named.
    let answer = s
        .admin
        .authzen_evaluations(&json!({
            "subject": user(RICK),
            "action": { "name": "can_read_todos" },
            "resource": todo("t1", "morty@the-citadel.com"),
            "evaluations": [
                { "resource": { "type": "todo" } },
                { "subject": { "type": "agent" } },
                { "subject": { "id": RICK } },
                { "action": {} },
                { "resource": { "type": "todo", "id": "t5" } },
            ],
        }))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [false, false, false, false, true]);
    let items = answer["evaluations"].as_array().unwrap();
    for (item, field) in
        items[..4]
            .iter()
            .zip(["resource.id", "subject.id", "subject.type", "action.name"])
    {
        assert_eq!(item["context"]["error"]["status"], 400, "{item}");
        let message = item["context"]["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {item}");
    }

    // An item that is not a complete evaluation is denied in its place with
    // the error; the others are still evaluated.
    let answer = s
        .admin
        .authzen_evaluations(&json!({
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "t1" },
            "evaluations": [
                { "subject": user(JERRY) },
                {},
                { "subject": "jerry" },
                { "subject": { "type": "user" } },
                { "subject": user(MORTY) },
                { "subject": ["user", MORTY] },
                [user(MORTY), { "name": "can_read_todos" }, { "type": "todo", "id": "t1" }],
            ],
        }))
        .await
        .unwrap();
    assert_eq!(
        decisions(&answer),
        [true, false, false, false, true, false, false]
    );
    let items = answer["evaluations"].as_array().unwrap();
    assert_eq!(items[0], json!({"decision": true}));
    for bad in items[1..4].iter().chain(&items[5..]) {
        assert_eq!(bad["context"]["error"]["status"], 400, "{bad}");
        assert_eq!(bad["context"]["error"]["code"], "invalid_request", "{bad}");
    }
    assert!(
        items[1]["context"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("subject"),
        "{answer}"
    );
    // Under deny_on_first_deny an item error counts as a denial.
    let answer = s
        .admin
        .authzen_evaluations(&json!({
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "t1" },
            "options": { "evaluations_semantic": "deny_on_first_deny" },
            "evaluations": [{ "subject": user(JERRY) }, {}, { "subject": user(MORTY) }],
        }))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [true, false]);

    // Without items (absent or empty), it is one evaluation of the top level.
    for evaluations in [None, Some(json!([]))] {
        let mut body = json!({
            "subject": user(MORTY),
            "action": { "name": "can_update_todo" },
            "resource": mine,
        });
        if let Some(e) = evaluations {
            body["evaluations"] = e;
        }
        assert_eq!(
            s.admin.authzen_evaluations(&body).await.unwrap(),
            json!({ "decision": true })
        );
        body["resource"] = ricks.clone();
        let denied = s.admin.authzen_evaluations(&body).await.unwrap();
        assert_eq!(denied["decision"], false);
        assert!(denied["context"]["decision_id"].is_string(), "{denied}");
    }
    s.stop().await;
}

/// Every page of a search, each asking with `page.token` for the page after
/// the last answer's `next_token`; checks every page keeps to the limit.
async fn search_all(
    client: &Client,
    kind: &str,
    mut body: Value,
    limit: u32,
) -> (Vec<Value>, usize) {
    let mut results = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        body["page"] = json!({ "limit": limit, "token": token });
        let answer = match kind {
            "subject" => client.authzen_search_subject(&body).await,
            "resource" => client.authzen_search_resource(&body).await,
            _ => client.authzen_search_action(&body).await,
        }
        .unwrap();
        pages += 1;
        let page = answer["results"].as_array().unwrap();
        assert!(page.len() <= limit as usize, "{answer}");
        results.extend(page.iter().cloned());
        token = answer["page"]["next_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            return (results, pages);
        }
        assert!(pages < 50, "pagination does not end");
    }
}

fn ids(results: &[Value]) -> BTreeSet<String> {
    results
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .or_else(|| r["name"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn search_with_pagination(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    for (id, owner) in [
        ("t1", "morty@the-citadel.com"),
        ("t2", "rick@the-citadel.com"),
        ("t3", "morty@the-citadel.com"),
        ("t4", "summer@the-smiths.com"),
        ("t5", "morty@the-citadel.com"),
    ] {
        s.admin
            .put_entity(&ResourceEntity {
                resource_type: "todo".into(),
                id: id.into(),
                attributes: [("ownerID".to_string(), json!(owner))].into(),
            })
            .await
            .unwrap();
    }
    low_risk_agent(&s.admin, "todo-bot", "rick@the-citadel.com").await;

    // Subjects: who may create a todo (admins and editors), two at a time.
    let query = json!({
        "subject": { "type": "user" },
        "action": { "name": "can_create_todo" },
        "resource": { "type": "todo", "id": "t1" },
    });
    let (found, pages) = search_all(&s.admin, "subject", query.clone(), 2).await;
    assert_eq!(ids(&found), set(&[RICK, MORTY, SUMMER]));
    assert!(pages >= 2, "{pages} pages");
    assert!(found.iter().all(|r| r["type"] == "user"));
    // Each result, fed back into an evaluation, is allowed.
    for r in &found {
        assert!(
            s.admin
                .authzen_allowed(
                    ("user", r["id"].as_str().unwrap()),
                    "can_create_todo",
                    ("todo", "t1")
                )
                .await
                .unwrap()
        );
    }
    let (everyone, _) = search_all(
        &s.admin,
        "subject",
        json!({
            "subject": { "type": "user" },
            "action": { "name": "can_read_user" },
            "resource": { "type": "user", "id": "beth@the-smiths.com" },
        }),
        50,
    )
    .await;
    assert_eq!(everyone.len(), 5);
    // Who may update t4: its editor owner and the evil genius (resource attributes from the store).
    let (updaters, _) = search_all(
        &s.admin,
        "subject",
        json!({
            "subject": { "type": "user" },
            "action": { "name": "can_update_todo" },
            "resource": { "type": "todo", "id": "t4" },
        }),
        1,
    )
    .await;
    assert_eq!(ids(&updaters), set(&[RICK, SUMMER]));
    // Agents are subjects too.
    let (agents, _) = search_all(
        &s.admin,
        "subject",
        json!({
            "subject": { "type": "agent" },
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "t1" },
        }),
        10,
    )
    .await;
    assert_eq!(agents, vec![json!({"type": "agent", "id": "todo-bot"})]);

    // Resources: the todos Morty may update, two at a time.
    let morty_updates = json!({
        "subject": user(MORTY),
        "action": { "name": "can_update_todo" },
        "resource": { "type": "todo" },
    });
    let (found, pages) = search_all(&s.admin, "resource", morty_updates, 2).await;
    assert_eq!(ids(&found), set(&["t1", "t3", "t5"]));
    assert!(pages >= 2);
    assert!(found.iter().all(|r| r["type"] == "todo"));
    // Rick may update all; resource properties narrow the candidates.
    let (all, _) = search_all(
        &s.admin,
        "resource",
        json!({ "subject": user(RICK), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } }),
        3,
    )
    .await;
    assert_eq!(ids(&all), set(&["t1", "t2", "t3", "t4", "t5"]));
    let (owned, _) = search_all(
        &s.admin,
        "resource",
        json!({
            "subject": user(RICK),
            "action": { "name": "can_update_todo" },
            "resource": { "type": "todo", "properties": { "ownerID": "summer@the-smiths.com" } },
        }),
        3,
    )
    .await;
    assert_eq!(ids(&owned), set(&["t4"]));
    // Jerry may update none; an unknown subject finds nothing (not an error).
    for subject in [user(JERRY), user("nobody")] {
        let (none, pages) = search_all(
            &s.admin,
            "resource",
            json!({ "subject": subject, "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } }),
            2,
        )
        .await;
        assert!(none.is_empty());
        assert_eq!(pages, 1);
    }

    // Actions: what Morty may do on his own todo, then on Rick's.
    let (actions, pages) = search_all(
        &s.admin,
        "action",
        json!({ "subject": user(MORTY), "resource": { "type": "todo", "id": "t1" } }),
        3,
    )
    .await;
    assert_eq!(
        ids(&actions),
        set(&[
            "can_create_todo",
            "can_delete_todo",
            "can_read_todos",
            "can_update_todo"
        ])
    );
    assert_eq!(pages, 2);
    let (actions, _) = search_all(
        &s.admin,
        "action",
        json!({ "subject": user(MORTY), "resource": { "type": "todo", "id": "t2" } }),
        10,
    )
    .await;
    assert_eq!(ids(&actions), set(&["can_create_todo", "can_read_todos"]));
    let (actions, _) = search_all(
        &s.admin,
        "action",
        json!({ "subject": user(JERRY), "resource": { "type": "user", "id": "rick@the-citadel.com" } }),
        10,
    )
    .await;
    assert_eq!(actions, vec![json!({"name": "can_read_user"})]);

    // One summary audit entry per search request, not one per candidate.
    let before = all_audit(&s.admin).await.len();
    s.admin
        .authzen_search_resource(&json!({
            "subject": user(MORTY), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" }
        }))
        .await
        .unwrap();
    let log = all_audit(&s.admin).await;
    assert_eq!(log.len(), before + 1);
    let summary = log.last().unwrap();
    assert_eq!(summary.action, "decision.search");
    let after = summary.after.as_ref().unwrap();
    assert_eq!(after["search"], "resource");
    assert_eq!(after["examined"], 5);
    assert_eq!(after["results"].as_array().unwrap().len(), 3);

    // Bad paging is a 400; so is a search without its required fields.
    let base = json!({ "subject": user(MORTY), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } });
    for page in [
        json!({ "limit": 0 }),
        json!({ "limit": 501 }),
        json!({ "limit": -1 }),
        json!({ "next_token": "not-a-token" }),
        json!({ "next_token": 7 }),
    ] {
        let mut body = base.clone();
        body["page"] = page;
        let (status, answer) = post(&s.admin, "/access/v1/search/resource", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    // A token from another search does not fit.
    let first = s
        .admin
        .authzen_search_action(&json!({
            "subject": user(MORTY), "resource": { "type": "todo", "id": "t1" }, "page": { "limit": 1 }
        }))
        .await
        .unwrap();
    let mut body = base.clone();
    body["page"] = json!({ "next_token": first["page"]["next_token"] });
    assert_eq!(
        post(&s.admin, "/access/v1/search/resource", &body).await.0,
        400
    );
    // Nor does one from the same kind of search with another subject: it
    // would start this list at a position from that one.
    let ricks = s
        .admin
        .authzen_search_resource(&json!({
            "subject": user(RICK), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" }, "page": { "limit": 1 }
        }))
        .await
        .unwrap();
    let token = ricks["page"]["next_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{ricks}");
    body["page"] = json!({ "next_token": token });
    let (status, answer) = post(&s.admin, "/access/v1/search/resource", &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("page.token"),
        "{answer}"
    );
    // A page after the first keeps the first's limit: left out, it does;
    // another is refused. `page.token` and the drafts' `page.next_token`
    // must agree when both are sent.
    let rick_base = json!({ "subject": user(RICK), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } });
    let mut body = rick_base.clone();
    body["page"] = json!({ "token": token });
    let second = s.admin.authzen_search_resource(&body).await.unwrap();
    assert_eq!(second["results"].as_array().unwrap().len(), 1, "{second}");
    assert_ne!(second["results"], ricks["results"], "{second}");
    body["page"] = json!({ "token": token, "limit": 1 });
    assert_eq!(
        s.admin.authzen_search_resource(&body).await.unwrap(),
        second
    );
    for (page, says) in [
        (json!({ "token": token, "limit": 2 }), "page.limit"),
        (json!({ "token": token, "next_token": "other" }), "differ"),
    ] {
        body["page"] = page;
        let (status, answer) = post(&s.admin, "/access/v1/search/resource", &body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    // Members another AuthZEN request reads are ignored where this one
    // does not: an action search's `action`, an evaluation's `page`.
    let (status, answer) = post(
        &s.admin,
        "/access/v1/search/action",
        &json!({ "subject": user(MORTY), "resource": { "type": "todo", "id": "t1" }, "action": "x", "options": 5 }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(
        &s.admin,
        "/access/v1/evaluation",
        &json!({ "subject": user(MORTY), "action": { "name": "can_read_todos" }, "resource": { "type": "todo", "id": "t1" }, "page": 5, "options": true }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // A value of the wrong type is a 400 for a subject Steward does not
    // know too, as for one it knows, and nothing is recorded.
    let before = all_audit(&s.admin).await.len();
    for subject in [user("ghost"), user(MORTY)] {
        let (status, answer) = post(
            &s.admin,
            "/access/v1/evaluation",
            &json!({ "subject": subject, "action": { "name": "can_update_todo" },
                "resource": { "type": "todo", "id": "new9", "properties": { "ownerID": 5 } } }),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_entity", "{answer}");
    }
    assert_eq!(all_audit(&s.admin).await.len(), before);
    // A human is named by id, e-mail or external id: a new one whose
    // external id is another's e-mail (or whose e-mail is another's
    // external id) could not be told apart from it, so is refused; so is
    // an external id that is blank.
    for (human, status) in [
        (
            json!({ "email": "dup@example.com", "display_name": "Dup", "external_id": TODO_USERS[3].2 }),
            409,
        ),
        (
            json!({ "email": "a1@example.com", "display_name": "A1", "external_id": "ext@example.com" }),
            201,
        ),
        (
            json!({ "email": "ext@example.com", "display_name": "Ext" }),
            409,
        ),
        (
            json!({ "email": "sp@example.com", "display_name": "Sp", "external_id": " " }),
            400,
        ),
        (
            json!({ "email": "sp@example.com", "display_name": "Sp", "external_id": "ok-1" }),
            201,
        ),
        // An e-mail is found in any case, so it may not be another's
        // external id in other case either.
        (
            json!({ "email": "carol@example.com", "display_name": "Carol", "external_id": "Zed@Example.com" }),
            201,
        ),
        (
            json!({ "email": "zed@example.com", "display_name": "Zed" }),
            409,
        ),
    ] {
        let (got, answer) = post(&s.admin, "/v1/humans", &human).await;
        assert_eq!(got, status, "{human}: {answer}");
    }
    // Where the store's `lower()` cannot see the clash (SQLite folds only
    // ASCII), an external id written exactly still names its holder.
    let (got, answer) = post(
        &s.admin,
        "/v1/humans",
        &json!({ "email": "eva.a@example.com", "display_name": "Eva A", "external_id": "ÉVA@example.com" }),
    )
    .await;
    assert_eq!(got, 201, "{answer}");
    let (got, _) = post(
        &s.admin,
        "/v1/humans",
        &json!({ "email": "éva@example.com", "display_name": "Éva" }),
    )
    .await;
    assert!(got == 201 || got == 409, "{got}");
    let (status, answer) = post(
        &s.admin,
        "/access/v1/evaluation",
        &json!({ "subject": user("ÉVA@example.com"), "action": { "name": "can_delete_todo" },
            "resource": { "type": "todo", "id": "t1" } }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // A denial's reason names the human it was decided for.
    let said = answer.to_string();
    assert!(
        said.contains("'eva.a@example.com'") && !said.contains("'éva@example.com'"),
        "{answer}"
    );
    // Ids no store can keep, in what a search holds fixed.
    for fixed in [
        json!({ "subject": user("a\u{0}b"), "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } }),
        json!({ "subject": { "type": "agent", "id": "z".repeat(600) }, "action": { "name": "can_update_todo" }, "resource": { "type": "todo" } }),
    ] {
        let (status, answer) = post(&s.admin, "/access/v1/search/resource", &fixed).await;
        assert_eq!(status, 400, "{fixed}: {answer}");
    }
    for (path, body) in [
        (
            "/access/v1/search/subject",
            json!({ "action": { "name": "can_read_todos" }, "resource": { "type": "todo", "id": "t1" } }),
        ),
        (
            "/access/v1/search/subject",
            json!({ "subject": { "type": "user" }, "action": { "name": "can_read_todos" }, "resource": { "type": "todo" } }),
        ),
        (
            "/access/v1/search/resource",
            json!({ "subject": { "type": "user" }, "action": { "name": "can_read_todos" }, "resource": { "type": "todo" } }),
        ),
        (
            "/access/v1/search/resource",
            json!({ "subject": user(MORTY), "resource": { "type": "todo" } }),
        ),
        (
            "/access/v1/search/action",
            json!({ "subject": user(MORTY), "resource": { "type": "todo" } }),
        ),
    ] {
        let (status, answer) = post(&s.admin, path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
    }

    // An agent asks about itself only; subject search needs an admin token.
    let key = s
        .admin
        .create_key("todo-bot", &CreateKey::default())
        .await
        .unwrap();
    let bot = s.client(&key.secret);
    let (found, _) = search_all(
        &bot,
        "resource",
        json!({ "subject": { "type": "agent", "id": "todo-bot" }, "action": { "name": "can_read_todos" }, "resource": { "type": "todo" } }),
        10,
    )
    .await;
    assert_eq!(found.len(), 5);
    assert_eq!(
        code(bot.authzen_search_subject(&query).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            bot.authzen_search_resource(&json!({
                "subject": user(MORTY), "action": { "name": "can_read_todos" }, "resource": { "type": "todo" }
            }))
            .await
        ),
        ErrorCode::Forbidden
    );
    s.stop().await;
}

async fn authzen_bad_input_metadata_and_audit(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    let audit_before = all_audit(&s.admin).await.len();

    // Malformed requests are 400 with the catalogue's error body, and change nothing.
    let good = json!({
        "subject": user(MORTY),
        "action": { "name": "can_read_todos" },
        "resource": { "type": "todo", "id": "t1" },
    });
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let with = |path: &[&str], value: Value| {
        let mut body = good.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut body;
        for p in parents {
            at = &mut at[*p];
        }
        match value {
            Value::Null => {
                at.as_object_mut().unwrap().remove(*last);
            }
            v => at[*last] = v,
        }
        body
    };
    let bad_bodies = [
        without("subject"),
        without("action"),
        without("resource"),
        with(&["subject", "type"], Value::Null),
        with(&["subject", "id"], Value::Null),
        with(&["action", "name"], Value::Null),
        with(&["resource", "type"], Value::Null),
        with(&["resource", "id"], Value::Null),
        with(&["subject"], json!("morty")),
        with(&["action", "name"], json!(123)),
        with(&["resource", "id"], json!(["t1"])),
        with(&["resource", "properties"], json!("owner")),
        with(&["context"], json!([1, 2])),
        with(&["subject", "id"], json!("")),
        with(&["action", "name"], json!("  ")),
        json!([good.clone()]),
        json!(null),
        // Serde would read a struct from an array of its fields.
        json!([user(MORTY), { "name": "can_read_todos" }, { "type": "todo", "id": "t1" }]),
        with(&["subject"], json!(["user", MORTY])),
        with(&["action"], json!(["can_read_todos"])),
        with(&["resource"], json!(["todo", "t1", {}])),
        // Values no store can keep are refused before anything is looked up
        // or recorded, whether or not the subject and resource are known.
        with(&["resource", "id"], json!("bad\u{0}id")),
        with(&["resource", "id"], json!("x".repeat(600))),
        with(&["subject", "type"], json!("robot\u{0}")),
        json!({
            "subject": { "type": "robot", "id": "r" },
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "y".repeat(600) },
        }),
        json!({
            "subject": { "type": "robot", "id": "r" },
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo\u{0}", "id": "t1" },
        }),
        json!({
            "subject": user("nobody-we-know"),
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "a\u{0}b\u{7}" },
        }),
    ];
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        for body in &bad_bodies {
            let (status, answer) = post(&s.admin, path, body).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert!(answer["error"]["code"].is_string(), "{answer}");
        }
        for (body, content_type) in [
            ("{\"subject\": ", Some("application/json")),
            ("not json at all", Some("application/json")),
            ("", Some("application/json")),
            ("", None),
            (&good.to_string() as &str, Some("text/plain")),
        ] {
            let (status, answer) = s
                .admin
                .raw(Method::POST, path, Some(body.to_string()), content_type)
                .await
                .unwrap();
            assert_eq!(status, 400, "{path} {body:?} {content_type:?}: {answer}");
            assert!(answer["error"]["code"].is_string(), "{answer}");
        }
    }
    for options in [
        json!({ "evaluations_semantic": "bogus_value" }),
        json!({ "evaluations_semantic": 3 }),
        json!("deny_on_first_deny"),
    ] {
        let mut body = good.clone();
        body["options"] = options;
        body["evaluations"] = json!([{}]);
        let (status, answer) = post(&s.admin, "/access/v1/evaluations", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, _) = post(
        &s.admin,
        "/access/v1/evaluations",
        &json!({ "evaluations": "all of them" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        all_audit(&s.admin).await.len(),
        audit_before,
        "bad input reached the log"
    );

    // Unknown fields are ignored (the interop data carries one).
    let mut extra = good.clone();
    extra["subject"]["_note"] = json!("ID for Morty");
    extra["foo"] = json!("bar");
    extra["futureField"] = json!({ "nested": true });
    extra["action"]["properties"] = json!({ "method": "GET" });
    extra["subject"]["properties"] = json!({ "department": "Sales" });
    let (status, answer) = post(&s.admin, "/access/v1/evaluation", &extra).await;
    assert_eq!((status, answer), (200, json!({ "decision": true })));

    // A deny is 200 {"decision": false} with a context a person can act on.
    let (status, denied) = post(
        &s.admin,
        "/access/v1/evaluation",
        &json!({ "subject": user(JERRY), "action": { "name": "can_create_todo" }, "resource": { "type": "todo", "id": "t1" } }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(denied["decision"], false);
    let context = &denied["context"];
    assert_eq!(context["outcome"], "deny");
    assert!(context["decision_id"].as_str().unwrap().starts_with("dec_"));
    let reason = context["reason"].as_str().unwrap();
    assert!(
        reason.contains("admin") || reason.contains("editor"),
        "{reason}"
    );
    // Unknown subjects, undeclared actions and unknown resource types are
    // denials too, not errors; so is a subject type Steward does not know.
    let denials = [
        json!({ "subject": user("nobody"), "action": { "name": "can_read_todos" }, "resource": { "type": "todo", "id": "t1" } }),
        json!({ "subject": user(RICK), "action": { "name": "can_fly" }, "resource": { "type": "todo", "id": "t1" } }),
        json!({ "subject": user(RICK), "action": { "name": "can_read_todos" }, "resource": { "type": "spaceship", "id": "x" } }),
        json!({ "subject": { "type": "group", "id": "admins" }, "action": { "name": "can_read_todos" }, "resource": { "type": "todo", "id": "t1" } }),
        json!({ "subject": user(RICK), "action": { "name": "can_read_todos" }, "resource": { "type": "agent", "id": "ghost" } }),
    ];
    let mut decision_ids = vec![context["decision_id"].as_str().unwrap().to_string()];
    for body in &denials {
        let (status, answer) = post(&s.admin, "/access/v1/evaluation", body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["decision"], false, "{body}: {answer}");
        assert!(answer["context"]["reason"].is_string(), "{answer}");
        decision_ids.push(answer["context"]["decision_id"].as_str().unwrap().into());
    }
    // Humans are found by external id, e-mail or id.
    let morty = s.admin.get_human("morty@the-citadel.com").await.unwrap();
    for id in [MORTY, "morty@the-citadel.com", morty.id.as_str()] {
        assert!(
            s.admin
                .authzen_allowed(("user", id), "can_create_todo", ("todo", "t1"))
                .await
                .unwrap(),
            "{id}"
        );
    }

    // Every AuthZEN decision is in the audit log, with its id.
    let log = all_audit(&s.admin).await;
    let recorded: Vec<&AuditEntry> = log
        .iter()
        .skip(audit_before)
        .filter(|e| e.action.starts_with("decision."))
        .collect();
    for id in &decision_ids {
        assert!(
            recorded
                .iter()
                .any(|e| e.after.as_ref().unwrap()["decision_id"] == json!(id)),
            "decision {id} is not in the audit log"
        );
    }
    let unknown = recorded
        .iter()
        .find(|e| e.after.as_ref().unwrap()["decision_id"] == json!(decision_ids[1]))
        .unwrap();
    assert_eq!(unknown.action, "decision.deny");
    assert!(unknown.reason.as_deref().unwrap().contains("nobody"));
    let principal = |i: usize| {
        let entry = recorded
            .iter()
            .find(|e| e.after.as_ref().unwrap()["decision_id"] == json!(decision_ids[i]))
            .unwrap();
        entry.after.as_ref().unwrap()["principal"].clone()
    };
    // A refusal names a known subject as any decision names its principal
    // (so it counts toward that identity); an unknown one as it was given.
    let rick = s.admin.get_human(RICK).await.unwrap();
    assert_eq!(
        principal(3),
        json!({ "kind": "human", "id": rick.id, "name": rick.email })
    );
    assert_eq!(
        principal(1),
        json!({ "kind": null, "type": "user", "id": "nobody" })
    );
    assert_eq!(
        principal(4),
        json!({ "kind": null, "type": "group", "id": "admins" })
    );

    // The request id is echoed, and recorded with the decision.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/access/v1/evaluation", s.server.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "authzen-req-42")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "authzen-req-42");
    assert!(
        all_audit(&s.admin)
            .await
            .iter()
            .any(|e| e.action == "decision.allow"
                && e.request_id.as_deref() == Some("authzen-req-42"))
    );
    let r = http
        .post(format!("{}/access/v1/evaluations", s.server.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "authzen-req-43")
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-request-id"], "authzen-req-43");

    // Who may ask: no credential is 401, an auditor 403; an agent about itself only.
    let (status, _) = s
        .anonymous()
        .raw(
            Method::POST,
            "/access/v1/evaluation",
            Some(good.to_string()),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    let auditor = s
        .admin
        .create_token(&CreateToken {
            name: "auditor".into(),
            role: TokenRole::Auditor,
            human: None,
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    assert_eq!(
        code(s.client(&auditor.secret).authzen_evaluation(&good).await),
        ErrorCode::Forbidden
    );
    low_risk_agent(&s.admin, "todo-bot", "rick@the-citadel.com").await;
    let key = s
        .admin
        .create_key("todo-bot", &CreateKey::default())
        .await
        .unwrap();
    let bot = s.client(&key.secret);
    assert!(
        bot.authzen_allowed(("agent", "todo-bot"), "can_read_todos", ("todo", "t1"))
            .await
            .unwrap()
    );
    assert_eq!(
        code(bot.authzen_evaluation(&good).await),
        ErrorCode::Forbidden
    );
    // In a batch, asking about someone else is an error in that item's place.
    let answer = bot
        .authzen_evaluations(&json!({
            "action": { "name": "can_read_todos" },
            "resource": { "type": "todo", "id": "t1" },
            "evaluations": [{ "subject": { "type": "agent", "id": "todo-bot" } }, { "subject": user(MORTY) }],
        }))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [true, false]);
    assert_eq!(answer["evaluations"][1]["context"]["error"]["status"], 403);
    // Also when what it names is unknown: refused, not recorded as a
    // denial under someone else.
    let other = low_risk_agent(&s.admin, "other-bot", "rick@the-citadel.com").await;
    let recorded = all_audit(&s.admin).await.len();
    for subject in [
        json!({ "type": "agent", "id": other.id }),
        json!({ "type": "robot", "id": "todo-bot" }),
        user("nobody-we-know"),
    ] {
        for resource in [json!({ "type": "nosuchtype", "id": "x" }), todo("t1", "x")] {
            let body = json!({ "subject": subject, "action": { "name": "can_read_todos" }, "resource": resource });
            assert_eq!(
                code(bot.authzen_evaluation(&body).await),
                ErrorCode::Forbidden,
                "{body}"
            );
            // A search about it likewise, whatever its type.
            let body = json!({ "subject": subject, "resource": resource });
            assert_eq!(
                code(bot.authzen_search_action(&body).await),
                ErrorCode::Forbidden,
                "{body}"
            );
        }
        let body = json!({ "subject": subject, "action": { "name": "can_read_todos" }, "resource": { "type": "todo" } });
        assert_eq!(
            code(bot.authzen_search_resource(&body).await),
            ErrorCode::Forbidden,
            "{body}"
        );
    }
    assert_eq!(all_audit(&s.admin).await.len(), recorded);

    // The metadata document: no credential needed, absolute URLs.
    let config = s.anonymous().authzen_configuration().await.unwrap();
    let base = s.server.url();
    assert_eq!(config["policy_decision_point"], json!(base));
    for (key, path) in [
        ("access_evaluation_endpoint", "/access/v1/evaluation"),
        ("access_evaluations_endpoint", "/access/v1/evaluations"),
        ("search_subject_endpoint", "/access/v1/search/subject"),
        ("search_resource_endpoint", "/access/v1/search/resource"),
        ("search_action_endpoint", "/access/v1/search/action"),
    ] {
        assert_eq!(config[key], json!(format!("{base}{path}")), "{key}");
    }
    let proxied: Value = http
        .get(format!("{base}/.well-known/authzen-configuration"))
        .header("host", "pdp.example.com")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        proxied["policy_decision_point"],
        json!("https://pdp.example.com")
    );
    assert_eq!(
        proxied["access_evaluation_endpoint"],
        json!("https://pdp.example.com/access/v1/evaluation")
    );
    // The endpoints are in the OpenAPI document.
    let doc = s.anonymous().get_json("/openapi.json").await.unwrap();
    for path in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
        "/.well-known/authzen-configuration",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    s.stop().await;
}

/// The `after` of the decision record with this id.
async fn recorded_decision(admin: &Client, decision_id: &str) -> Value {
    all_audit(admin)
        .await
        .into_iter()
        .filter_map(|e| e.after)
        .find(|a| a["decision_id"] == json!(decision_id))
        .unwrap_or_else(|| panic!("decision {decision_id} is not in the audit log"))
}

/// A refusal (an unknown subject or resource, a subject type Steward does
/// not know) records the resource's attributes as a decision records them:
/// stored values over claimed ones, undeclared ones left out; a resource it
/// cannot resolve records none, never what the request claimed.
async fn authzen_refusals_record_effective_attributes(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "rick@the-citadel.com").await;
    s.admin
        .put_resource_type(&PutResourceType {
            name: "repository".into(),
            description: "A repository".into(),
            attributes: [("classification".to_string(), "String".to_string())].into(),
        })
        .await
        .unwrap();
    s.admin
        .put_action(&PutAction {
            name: "read_repository".into(),
            description: String::new(),
            resource_types: vec!["repository".into()],
            context: Default::default(),
        })
        .await
        .unwrap();
    s.admin
        .put_policy(&PutPolicy {
            id: "public-repos".into(),
            description: "Anyone reads public repositories".into(),
            owner: "rick@the-citadel.com".into(),
            text: r#"permit(principal, action == Action::"read_repository", resource is repository) when { resource.classification == "public" };"#.into(),
        })
        .await
        .unwrap();
    s.admin
        .put_entity(&ResourceEntity {
            resource_type: "repository".into(),
            id: "customer-exports".into(),
            attributes: [("classification".to_string(), json!("pii"))].into(),
        })
        .await
        .unwrap();
    let claimed = json!({ "classification": "public", "junk": 1 });
    let evaluate = |subject: Value, resource: Value| {
        let admin = s.admin.clone();
        async move {
            let body = json!({ "subject": subject, "action": { "name": "read_repository" }, "resource": resource });
            let (status, answer) = post(&admin, "/access/v1/evaluation", &body).await;
            assert_eq!(status, 200, "{body}: {answer}");
            assert_eq!(answer["decision"], false, "{body}: {answer}");
            let id = answer["context"]["decision_id"]
                .as_str()
                .unwrap()
                .to_string();
            recorded_decision(&admin, &id).await["resource"]["attributes"].clone()
        }
    };
    let exports = json!({ "type": "repository", "id": "customer-exports", "properties": claimed });
    // What /v1/decisions records for the same resource, asked by someone it knows.
    let decided = s
        .admin
        .decide(&DecisionRequest {
            principal: Some(PrincipalRef {
                principal_type: "human".into(),
                id: "rick@the-citadel.com".into(),
            }),
            action: "read_repository".into(),
            resource: ResourceRef {
                resource_type: "repository".into(),
                id: "customer-exports".into(),
                attributes: [
                    ("classification".to_string(), json!("public")),
                    ("junk".to_string(), json!(1)),
                ]
                .into(),
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(decided.decision, Decision::Deny);
    let stored = json!({ "classification": "pii" });
    assert_eq!(
        recorded_decision(&s.admin, &decided.decision_id).await["resource"]["attributes"],
        stored
    );
    // Refused subjects: a type Steward does not know, an unknown person, an unknown agent.
    for subject in [
        json!({ "type": "robot", "id": "x" }),
        user("nobody@example.com"),
        json!({ "type": "agent", "id": "ghost" }),
    ] {
        assert_eq!(
            evaluate(subject.clone(), exports.clone()).await,
            stored,
            "{subject}"
        );
    }
    // A declared type with nothing stored: the request's declared attributes only.
    let fresh = json!({ "type": "repository", "id": "new-repo", "properties": claimed });
    assert_eq!(
        evaluate(json!({ "type": "robot", "id": "x" }), fresh).await,
        json!({ "classification": "public" })
    );
    // A resource Steward cannot resolve records no attributes.
    for (subject, resource) in [
        (
            user("rick@the-citadel.com"),
            json!({ "type": "spaceship", "id": "x", "properties": claimed }),
        ),
        (
            json!({ "type": "robot", "id": "x" }),
            json!({ "type": "spaceship", "id": "x", "properties": claimed }),
        ),
        (
            user("rick@the-citadel.com"),
            json!({ "type": "agent", "id": "ghost", "properties": claimed }),
        ),
    ] {
        assert_eq!(
            evaluate(subject, resource.clone()).await,
            json!({}),
            "{resource}"
        );
    }
    // The same in a batch.
    let answer = s
        .admin
        .authzen_evaluations(&json!({
            "action": { "name": "read_repository" },
            "resource": exports,
            "evaluations": [{ "subject": { "type": "robot", "id": "x" } }],
        }))
        .await
        .unwrap();
    assert_eq!(decisions(&answer), [false]);
    let last = all_audit(&s.admin)
        .await
        .into_iter()
        .rfind(|e| e.action == "decision.deny")
        .unwrap();
    assert_eq!(last.after.unwrap()["resource"]["attributes"], stored);
    s.stop().await;
}

/// A declared `doc` type, an action needing a `reason` in its context and
/// one needing none, both permitted to anyone, and a known doc `d1`.
async fn sign_setup(admin: &Client) {
    admin
        .put_resource_type(&PutResourceType {
            name: "doc".into(),
            description: "A document".into(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
    for (name, context) in [("sign", Some("reason")), ("view", None)] {
        admin
            .put_action(&PutAction {
                name: name.into(),
                description: String::new(),
                resource_types: vec!["doc".into()],
                context: context
                    .map(|c| [(c.to_string(), "String".to_string())].into())
                    .unwrap_or_default(),
            })
            .await
            .unwrap();
        admin
            .put_policy(&PutPolicy {
                id: format!("doc-{name}"),
                description: format!("Anyone may {name} a doc"),
                owner: "rick@the-citadel.com".into(),
                text: format!(r#"permit(principal, action == Action::"{name}", resource is doc);"#),
            })
            .await
            .unwrap();
    }
    admin
        .put_entity(&ResourceEntity {
            resource_type: "doc".into(),
            id: "d1".into(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
}

/// A candidate the engine cannot decide for the request (its action needs a
/// context attribute the request lacks, or gives in the wrong type) is not
/// in the results; it does not fail the search.
async fn authzen_search_leaves_out_candidates_it_cannot_decide(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    sign_setup(&s.admin).await;
    let rick = user("rick@the-citadel.com");
    let d1 = json!({ "type": "doc", "id": "d1" });
    // Actions: without a reason, or with one of the wrong type, only `view`.
    for context in [
        None,
        Some(json!({ "reason": 5 })),
        Some(json!({ "other": "x" })),
    ] {
        let mut body = json!({ "subject": rick, "resource": d1 });
        if let Some(c) = &context {
            body["context"] = c.clone();
        }
        let (status, answer) = post(&s.admin, "/access/v1/search/action", &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["results"], json!([{ "name": "view" }]), "{body}");
    }
    let (actions, _) = search_all(
        &s.admin,
        "action",
        json!({ "subject": rick, "resource": d1, "context": { "reason": "audit" } }),
        1,
    )
    .await;
    assert_eq!(ids(&actions), set(&["sign", "view"]));
    // Subjects and resources alike: nobody may sign without a reason.
    let subjects =
        json!({ "subject": { "type": "user" }, "action": { "name": "sign" }, "resource": d1 });
    let resources =
        json!({ "subject": rick, "action": { "name": "sign" }, "resource": { "type": "doc" } });
    for (kind, path, body) in [
        ("subject", "/access/v1/search/subject", &subjects),
        ("resource", "/access/v1/search/resource", &resources),
    ] {
        let (status, answer) = post(&s.admin, path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["results"], json!([]), "{path}");
        let mut with_reason = body.clone();
        with_reason["context"] = json!({ "reason": "audit" });
        let (found, _) = search_all(&s.admin, kind, with_reason, 2).await;
        assert!(!found.is_empty(), "{path}");
    }
    // An evaluation of that action without its reason is still a bad request.
    let (status, answer) = post(
        &s.admin,
        "/access/v1/evaluation",
        &json!({ "subject": rick, "action": { "name": "sign" }, "resource": d1 }),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_entity");
    s.stop().await;
}

/// Search results are what an evaluation would allow (AuthZEN 1.0, search
/// semantics): what a used-up quota would refuse is left out, and a search
/// uses none of the quota.
async fn authzen_search_leaves_out_what_a_quota_would_refuse(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    low_risk_agent(&s.admin, "todo-bot", "rick@the-citadel.com").await;
    let bot = json!({ "type": "agent", "id": "todo-bot" });
    let t1 = todo("t1", "rick@the-citadel.com");
    let actions = json!({ "subject": bot, "resource": t1 });
    let reads = |found: &[Value]| found.iter().any(|a| a["name"] == "can_read_todos");
    s.admin
        .put_quota(&PutQuota {
            name: "one-read-a-day".into(),
            scope: Some(QuotaScope::Agent),
            subject: Some("todo-bot".into()),
            metric: "requests".into(),
            action: Some("can_read_todos".into()),
            window: "day".into(),
            limit: 1.0,
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let (found, _) = search_all(&s.admin, "action", actions.clone(), 10).await;
        assert!(reads(&found), "{found:?}");
    }
    let evaluation =
        json!({ "subject": bot, "action": { "name": "can_read_todos" }, "resource": t1 });
    let (_, answer) = post(&s.admin, "/access/v1/evaluation", &evaluation).await;
    assert_eq!(answer["decision"], true, "{answer}");
    let (_, answer) = post(&s.admin, "/access/v1/evaluation", &evaluation).await;
    assert_eq!(answer["decision"], false, "{answer}");
    let (found, _) = search_all(&s.admin, "action", actions, 10).await;
    assert!(!reads(&found), "{found:?}");
    s.stop().await;
}

/// A page token continues only the search that gave it, resource
/// properties and context included (in whatever key order they are given).
async fn authzen_search_token_is_bound_to_properties_and_context(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    for (id, owner) in [
        ("t1", "morty@the-citadel.com"),
        ("t2", "morty@the-citadel.com"),
        ("t3", "summer@the-smiths.com"),
    ] {
        s.admin
            .put_entity(&ResourceEntity {
                resource_type: "todo".into(),
                id: id.into(),
                attributes: [("ownerID".to_string(), json!(owner))].into(),
            })
            .await
            .unwrap();
    }
    let raw = |path: &'static str, body: String| {
        let admin = s.admin.clone();
        async move {
            admin
                .raw(Method::POST, path, Some(body), Some("application/json"))
                .await
                .unwrap()
        }
    };
    let token_of = |answer: &Value| {
        let token = answer["page"]["next_token"].as_str().unwrap().to_string();
        assert!(!token.is_empty(), "{answer}");
        token
    };
    // Resource properties: a token for Morty's todos does not continue a
    // search for Summer's, or for all of them.
    let resources = "/access/v1/search/resource";
    let head = format!(
        r#""subject": {{"type": "user", "id": "{RICK}"}}, "action": {{"name": "can_update_todo"}}"#
    );
    let (status, first) = raw(
        resources,
        format!(r#"{{{head}, "resource": {{"type": "todo", "properties": {{"ownerID": "morty@the-citadel.com"}}}}, "page": {{"limit": 1}}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["results"], json!([{ "type": "todo", "id": "t1" }]));
    let token = token_of(&first);
    for resource in [
        r#"{"type": "todo", "properties": {"ownerID": "summer@the-smiths.com"}}"#,
        r#"{"type": "todo"}"#,
        r#"{"type": "todo", "properties": {}}"#,
        r#"{"type": "todo", "properties": {"ownerID": "morty@the-citadel.com", "extra": 1}}"#,
    ] {
        let (status, answer) = raw(
            resources,
            format!(r#"{{{head}, "resource": {resource}, "page": {{"next_token": "{token}"}}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{resource}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("page.token"),
            "{answer}"
        );
    }
    let (status, rest) = raw(
        resources,
        format!(r#"{{{head}, "resource": {{"properties": {{"ownerID": "morty@the-citadel.com"}}, "type": "todo"}}, "page": {{"next_token": "{token}"}}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["results"], json!([{ "type": "todo", "id": "t2" }]));

    // Context: the same context with its keys in another order continues;
    // another context does not.
    let actions = "/access/v1/search/action";
    let head = format!(
        r#""subject": {{"type": "user", "id": "{MORTY}"}}, "resource": {{"type": "todo", "id": "t1"}}"#
    );
    let (status, first) = raw(
        actions,
        format!(r#"{{{head}, "context": {{"a": 1, "b": {{"x": 1, "y": [2, {{"p": 1, "q": 2}}]}}}}, "page": {{"limit": 2}}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let token = token_of(&first);
    for context in [
        None,
        Some(r#"{"a": 2, "b": {"x": 1, "y": [2, {"p": 1, "q": 2}]}}"#),
        Some(r#"{"a": 1, "b": {"x": 1, "y": [{"p": 1, "q": 2}, 2]}}"#),
        Some(r#"{"a": 1}"#),
    ] {
        let context = context
            .map(|c| format!(r#", "context": {c}"#))
            .unwrap_or_default();
        let (status, answer) = raw(
            actions,
            format!(r#"{{{head}{context}, "page": {{"next_token": "{token}"}}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{context}: {answer}");
    }
    let (status, rest) = raw(
        actions,
        format!(r#"{{{head}, "context": {{"b": {{"y": [2, {{"q": 2, "p": 1}}], "x": 1}}, "a": 1}}, "page": {{"next_token": "{token}"}}}}"#),
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    let mut all = ids(first["results"].as_array().unwrap());
    all.extend(ids(rest["results"].as_array().unwrap()));
    assert_eq!(
        all,
        set(&[
            "can_create_todo",
            "can_delete_todo",
            "can_read_todos",
            "can_update_todo"
        ])
    );
    s.stop().await;
}

/// `POST /v1/decisions` refuses unknown fields in `principal` and
/// `resource` as at its top level (a misspelt `attributes` must not decide
/// without them); AuthZEN, per its specification, ignores unknown fields
/// at every level.
async fn authzen_ignores_unknown_fields_where_decisions_refuse_them(b: Backend) {
    let s = TestServer::start(b).await;
    todo_setup(&s.admin).await;
    let good = json!({
        "principal": { "type": "human", "id": MORTY },
        "action": "can_update_todo",
        "resource": { "type": "todo", "id": "t1", "attributes": { "ownerID": "morty@the-citadel.com" } },
    });
    let (status, answer) = post(&s.admin, "/v1/decisions", &good).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "allow");
    let before = all_audit(&s.admin).await.len();
    for (path, field) in [
        ("resource", "attribute"),
        ("resource", "properties"),
        ("principal", "name"),
        ("principal", "properties"),
        ("", "unknown"),
    ] {
        let mut body = good.clone();
        let at = if path.is_empty() {
            &mut body
        } else {
            &mut body[path]
        };
        at[field] = json!({ "ownerID": "morty@the-citadel.com" });
        let (status, answer) = post(&s.admin, "/v1/decisions", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(
        all_audit(&s.admin).await.len(),
        before,
        "a refused request was recorded"
    );
    // AuthZEN: unknown fields in the subject, action and resource are ignored.
    let body = json!({
        "subject": { "type": "user", "id": MORTY, "name": "Morty", "_note": 1 },
        "action": { "name": "can_update_todo", "verb": "PUT" },
        "resource": { "type": "todo", "id": "t1", "attributes": { "x": 1 }, "properties": { "ownerID": "morty@the-citadel.com" } },
        "extra": true,
    });
    let (status, answer) = post(&s.admin, "/access/v1/evaluation", &body).await;
    assert_eq!((status, answer), (200, json!({ "decision": true })));
    let (status, answer) = post(
        &s.admin,
        "/access/v1/evaluations",
        &json!({ "evaluations": [body.clone()], "extra": 1 }),
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, json!({ "evaluations": [{ "decision": true }] }))
    );
    let mut search = body.clone();
    search["resource"] = json!({ "type": "todo", "id": "t1", "label": "x" });
    search.as_object_mut().unwrap().remove("action");
    let (status, answer) = post(&s.admin, "/access/v1/search/action", &search).await;
    assert_eq!(status, 200, "{answer}");
    s.stop().await;
}
