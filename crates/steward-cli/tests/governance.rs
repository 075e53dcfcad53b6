//! Governance as code end to end: `steward serve` in a child process, the
//! example directories planned, applied and checked with the CLI, and broken
//! directories refused with their file and line, changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::Serve;

const TOKEN: &str = "stwt_governance-test-token-0123456789";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn steward(server: &Serve, args: &[&str]) -> Output {
    support::steward(server, TOKEN, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run and expect exit code `code`; the stdout.
fn exits(server: &Serve, code: i32, args: &[&str]) -> String {
    let out = steward(server, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "steward {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ok(server: &Serve, args: &[&str]) -> String {
    exits(server, 0, args)
}

fn json(server: &Serve, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server, &all)).unwrap()
}

/// Refused with exit code 1; the stderr.
fn refused(server: &Serve, args: &[&str]) -> String {
    let out = steward(server, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "steward {args:?} should fail: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// What a refused directory must not change: the audit log (every change
/// is audited) and the policies.
fn state(server: &Serve) -> (usize, serde_json::Value) {
    let audit = json(server, &["audit", "list", "--all"])["items"]
        .as_array()
        .unwrap()
        .len();
    let policies = json(server, &["policies", "list", "--all"])["items"].clone();
    (audit, policies)
}

#[test]
fn the_personas_example_plans_applies_and_explains_decisions() {
    let server = support::serve(Some(TOKEN));
    let dir = example("personas");
    let dir = dir.to_str().unwrap();

    let before = state(&server);
    let plan = ok(&server, &["plan", dir]);
    for line in [
        "+ agent code-review-bot: register",
        "~ agent support-assistant: activate",
        "+ resource type repository: created",
        "+ action issue_refund: created",
        "+ policy data-classification-boundary: created (version 1)",
        "+ entity ticket::T-1042: created",
        "+ delegation_issuer corp-login: create",
        "unchanged",
        "plan only",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    assert_eq!(state(&server), before, "plan changed something");

    let applied = ok(&server, &["apply", dir]);
    assert!(
        applied.contains("+ agent data-pipeline: register"),
        "{applied}"
    );
    assert!(applied.trim_end().ends_with("applied"), "{applied}");

    let again = ok(&server, &["plan", dir]);
    assert!(again.contains("No changes."), "{again}");
    let again = json(&server, &["plan", dir]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    assert_eq!(again["applied"], false);
    let issuers = json(&server, &["issuers", "list"]);
    assert_eq!(issuers[0]["name"], "corp-login", "{issuers}");
    assert_eq!(issuers[0]["require_may_act"], true);

    let agent = json(&server, &["agents", "show", "support-assistant"]);
    assert_eq!(agent["state"], "active");

    // An allow exits 0 and names the permitting policy.
    let allow = exits(
        &server,
        0,
        &[
            "check",
            "--agent",
            "code-review-bot",
            "--action",
            "comment_on_pull_request",
            "--resource",
            "pull_request:payments-api/42",
        ],
    );
    assert!(allow.starts_with("ALLOW"), "{allow}");
    assert!(allow.contains("code-review.comment"), "{allow}");

    // A refund over 100 waits for a support lead's approval: exit 4.
    let refund = [
        "check",
        "--agent",
        "support-assistant",
        "--action",
        "issue_refund",
        "--resource",
        "refund:R-7",
        "--context",
        "amount=250",
    ];
    let held = exits(&server, 4, &refund);
    assert!(held.starts_with("APPROVAL REQUIRED"), "{held}");
    assert!(held.contains("support-leads"), "{held}");
    assert!(held.contains("support.refund-over-100"), "{held}");
    let pending = json(
        &server,
        &[
            "approvals",
            "list",
            "--status",
            "pending",
            "--group",
            "support-leads",
        ],
    );
    let id = pending["items"][0]["id"].as_str().unwrap().to_string();
    // Riley, a support lead, approves with her own token; the refund then
    // goes through once.
    let token = json(
        &server,
        &[
            "tokens",
            "create",
            "--name",
            "riley",
            "--role",
            "auditor",
            "--human",
            "riley.chen@example.com",
        ],
    );
    let riley = token["secret"].as_str().unwrap().to_string();
    let approved = support::steward(
        &server,
        &riley,
        &[
            "approvals",
            "approve",
            &id,
            "--comment",
            "customer was double-charged",
        ],
    );
    assert!(
        approved.status.success(),
        "{}{}",
        text(&approved.stdout),
        text(&approved.stderr)
    );
    assert!(
        text(&approved.stdout).contains("approved"),
        "{}",
        text(&approved.stdout)
    );
    let shown = ok(&server, &["approvals", "show", &id]);
    assert!(shown.contains("riley.chen@example.com"), "{shown}");
    assert!(ok(&server, &refund).starts_with("ALLOW"));
    assert!(exits(&server, 4, &refund).starts_with("APPROVAL REQUIRED"));
    // ... while a small one on behalf of the support lead is allowed.
    let small = ok(
        &server,
        &[
            "check",
            "--agent",
            "support-assistant",
            "--action",
            "issue_refund",
            "--resource",
            "refund:R-8",
            "--context",
            "amount=80",
            "--on-behalf-of",
            "jordan.lee@example.com",
        ],
    );
    assert!(
        small.contains("human jordan.lee@example.com: allowed"),
        "{small}"
    );

    // A denial without a guardrail says which role and persona would allow it.
    let deny = exits(
        &server,
        3,
        &[
            "check",
            "--agent",
            "support-assistant",
            "--action",
            "read_repository",
            "--resource",
            "repository:payments-api",
        ],
    );
    assert!(
        deny.contains("Roles that would allow it: repo-reader"),
        "{deny}"
    );
    assert!(deny.contains("Code Review Bot"), "{deny}");
    // The organisation-wide guardrail keeps agents out of pii.
    let pii = exits(
        &server,
        3,
        &[
            "check",
            "--agent",
            "data-pipeline",
            "--action",
            "read_table",
            "--resource",
            "database_table:crm.customers",
        ],
    );
    assert!(pii.contains("data-classification-boundary"), "{pii}");
    let answer = steward(
        &server,
        &[
            "-o",
            "json",
            "check",
            "--agent",
            "data-pipeline",
            "--action",
            "read_table",
            "--resource",
            "database_table:shop.orders",
        ],
    );
    assert_eq!(answer.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(answer["decision"], "allow");

    // The catalogue commands show what the directory declared.
    let policies = ok(&server, &["policies", "list"]);
    assert!(policies.contains("people-merge"), "{policies}");
    let shown = ok(&server, &["policies", "show", "people-merge"]);
    assert!(
        shown.contains("forbid") && shown.contains("merge_pull_request"),
        "{shown}"
    );
    let versions = json(&server, &["policies", "versions", "people-merge"]);
    assert_eq!(versions[0]["version"], 1);
    assert!(ok(&server, &["resource-types", "list"]).contains("warehouse_table"));
    assert!(ok(&server, &["actions", "list"]).contains("amount: Long"));
    assert!(ok(&server, &["schema"]).contains("entity repository"));

    // The AuthZEN Todo scenario applies to the same tenant.
    let todo = example("authzen-todo");
    let todo = ok(&server, &["apply", todo.to_str().unwrap()]);
    assert!(
        todo.contains("+ human rick@the-citadel.com: create"),
        "{todo}"
    );
    assert!(todo.trim_end().ends_with("applied"), "{todo}");
    let morty = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let own = ok(
        &server,
        &[
            "check",
            "--human",
            morty,
            "--action",
            "can_update_todo",
            "--resource",
            "todo:t-1",
            "--attr",
            "ownerID=morty@the-citadel.com",
        ],
    );
    assert!(
        own.starts_with("ALLOW: human morty@the-citadel.com"),
        "{own}"
    );
    exits(
        &server,
        3,
        &[
            "check",
            "--human",
            morty,
            "--action",
            "can_update_todo",
            "--resource",
            "todo:t-2",
            "--attr",
            "ownerID=rick@the-citadel.com",
        ],
    );
}

#[test]
fn the_mcp_example_registers_upstreams_and_governs_tool_arguments() {
    let server = support::serve(Some(TOKEN));
    let dir = example("mcp");
    let dir = dir.to_str().unwrap();
    let plan = ok(&server, &["plan", dir]);
    for line in [
        "mcp_server everything: register",
        "mcp_server files: register",
        "policy mcp-no-large-sums: created (version 1)",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    ok(&server, &["apply", dir]);
    let again = ok(&server, &["plan", dir]);
    assert!(again.contains("No changes."), "{again}");

    let listed = ok(&server, &["mcp-servers", "list"]);
    assert!(
        listed.contains("everything") && listed.contains("files"),
        "{listed}"
    );
    let shown = json(&server, &["mcp-servers", "show", "everything"]);
    assert_eq!(shown["tools"]["get-sum"]["classification"], "financial");
    assert_eq!(shown["decision_record"], "with_call");
    let files = json(&server, &["mcp-servers", "show", "files"]);
    assert_eq!(files["decision_record"], "before_call");

    // The argument guardrail decides like the gateway asks.
    let base = [
        "check",
        "--agent",
        "mcp-helper",
        "--action",
        "call_tool",
        "--resource",
        "Tool:everything/get-sum",
        "--attr",
        "server=everything",
        "--attr",
        "name=get-sum",
        "--attr",
        "classification=financial",
        "--attr",
        "risk=high",
        "--attr",
        "cost_estimate=5",
    ];
    let mut small = base.to_vec();
    small.extend(["--context", r#"arguments={"a": 2, "b": 3}"#]);
    exits(&server, 0, &small);
    let mut large = base.to_vec();
    large.extend(["--context", r#"arguments={"a": 500, "b": 3}"#]);
    let denied = exits(&server, 3, &large);
    assert!(denied.contains("mcp-no-large-sums"), "{denied}");

    // Added from the command line, removed again.
    ok(
        &server,
        &[
            "mcp-servers",
            "add",
            "remote",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--tool",
            "search=public,low,2",
            "--record-with-call",
        ],
    );
    let remote = json(&server, &["mcp-servers", "show", "remote"]);
    assert_eq!(remote["tools"]["search"]["cost_estimate"], 2);
    assert_eq!(remote["decision_record"], "with_call");
    let shown = ok(&server, &["mcp-servers", "show", "remote"]);
    assert!(shown.contains("with call"), "{shown}");
    ok(&server, &["mcp-servers", "remove", "remote"]);
    refused(&server, &["mcp-servers", "show", "remote"]);
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

const VALID: &str = r#"
[[role]]
name = "auditor"
description = "Reads the audit log"

[[resource_type]]
name = "report"
attributes = { classification = "String" }

[[action]]
name = "read_report"
resource_types = ["report"]
"#;

#[test]
fn broken_directories_are_refused_with_file_and_line() {
    let server = support::serve(Some(TOKEN));
    let before = state(&server);

    // A TOML syntax error.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", VALID);
    write(
        dir.path(),
        "more/b.toml",
        "[[team]]\nname = \"audit\"\ndescription = \n",
    );
    let root = dir.path().to_str().unwrap();
    for command in ["plan", "apply"] {
        let err = refused(&server, &[command, root]);
        assert!(err.contains("b.toml: line 3, column"), "{err}");
    }

    // An unknown key in a table.
    write(
        dir.path(),
        "more/b.toml",
        "[[team]]\nname = \"audit\"\n\n[[human]]\nemail = \"x@example.com\"\ndisplay_name = \"X\"\ncolour = \"red\"\n",
    );
    let err = refused(&server, &["apply", root]);
    assert!(
        err.contains("b.toml: line 4: human: unknown field `colour`"),
        "{err}"
    );

    // An identity provider whose key set holds a shared secret: the
    // server refuses it, named by the file and line that declared it.
    write(
        dir.path(),
        "more/b.toml",
        "[[team]]\nname = \"audit\"\n\n[[delegation_issuer]]\nname = \"idp\"\nissuer = \"https://idp.example/\"\naudience = \"steward\"\njwks = { keys = [{ kty = \"oct\", k = \"c2VjcmV0\" }] }\n",
    );
    let err = refused(&server, &["apply", root]);
    assert!(
        err.contains("b.toml: line 4") && err.contains("shared secret"),
        "{err}"
    );

    // A Cedar syntax error.
    std::fs::remove_file(dir.path().join("more/b.toml")).unwrap();
    write(
        dir.path(),
        "policies/bad.cedar",
        "@id(\"reports.read\")\npermit(principal in Role::\"auditor\", action,\n",
    );
    let err = refused(&server, &["apply", root]);
    assert!(err.contains("bad.cedar: line 2, column"), "{err}");

    // A policy that parses but does not validate: the server refuses it, and
    // the error points at the file and the line within it.
    write(
        dir.path(),
        "policies/bad.cedar",
        "// Reports\n\n@id(\"reports.read\")\npermit (\n  principal in Role::\"auditor\",\n  action == Action::\"read_report\",\n  resource is report\n)\nwhen { resource.colour == \"red\" };\n",
    );
    let err = refused(&server, &["apply", root]);
    assert!(err.contains("bad.cedar: line 9, column"), "{err}");
    assert!(
        err.contains("reports.read") && err.contains("invalid_policy"),
        "{err}"
    );

    // The same item twice names both files.
    std::fs::remove_file(dir.path().join("policies/bad.cedar")).unwrap();
    write(dir.path(), "z.toml", "[[role]]\nname = \"auditor\"\n");
    let err = refused(&server, &["plan", root]);
    assert!(
        err.contains("role \"auditor\" is declared twice") && err.contains("z.toml"),
        "{err}"
    );

    // An agent whose owner does not exist: the whole batch is refused.
    write(
        dir.path(),
        "z.toml",
        "[[agent]]\nname = \"stray\"\nowner = \"nobody@example.com\"\nclassifications = [\"public\"]\n",
    );
    let err = refused(&server, &["apply", root]);
    assert!(err.contains("z.toml: line 1: agent stray: owner:"), "{err}");

    assert_eq!(
        state(&server),
        before,
        "a refused directory changed something"
    );
    assert_eq!(
        steward(&server, &["roles", "show", "auditor"])
            .status
            .code(),
        Some(1)
    );

    // Fixed, it applies; `policies put` replaces the policies of one file.
    std::fs::remove_file(dir.path().join("z.toml")).unwrap();
    write(
        dir.path(),
        "policies/reports.cedar",
        "@id(\"reports.read\")\n@owner(\"security\")\npermit (principal in Role::\"auditor\", action == Action::\"read_report\", resource is report);\n",
    );
    assert!(ok(&server, &["apply", root]).contains("+ role auditor: create"));
    let elsewhere = tempfile::tempdir().unwrap();
    write(
        elsewhere.path(),
        "extra.cedar",
        "@id(\"reports.deny-pii\")\nforbid (principal is Agent, action, resource is report) when { resource.classification == \"pii\" };\n",
    );
    let file = elsewhere.path().join("extra.cedar");
    let put = ok(&server, &["policies", "put", file.to_str().unwrap()]);
    assert!(
        put.contains("+ policy reports.deny-pii: created (version 1)"),
        "{put}"
    );

    // The directory does not declare that policy: apply keeps it, and
    // --prune-policies deletes it.
    assert!(ok(&server, &["apply", root]).contains("No changes."));
    let plan = ok(&server, &["plan", "--prune-policies", root]);
    assert!(
        plan.contains("- policy reports.deny-pii: deleted"),
        "{plan}"
    );
    ok(&server, &["apply", "--prune-policies", root]);
    assert_eq!(
        steward(&server, &["policies", "show", "reports.deny-pii"])
            .status
            .code(),
        Some(1)
    );
    ok(&server, &["policies", "delete", "reports.read"]);
    assert!(!ok(&server, &["policies", "list"]).contains("reports.read"));
}

/// `$STEWARD_CONFORMANCE_DIR/authzen-todo`, else `shared/conformance/authzen-todo`
/// next to the repository.
fn todo_conformance_dir() -> PathBuf {
    if let Some(base) = std::env::var_os("STEWARD_CONFORMANCE_DIR") {
        return PathBuf::from(base).join("authzen-todo");
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/conformance/authzen-todo"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| {
            panic!("the AuthZEN Todo decision files are missing: set STEWARD_CONFORMANCE_DIR")
        })
}

/// The example directory, applied with the CLI, answers every case of the
/// AuthZEN interop Todo decision files over HTTP.
#[tokio::test]
async fn the_authzen_todo_example_passes_the_interop_decisions() {
    let server = support::serve(Some(TOKEN));
    let todo = example("authzen-todo");
    ok(&server, &["apply", todo.to_str().unwrap()]);
    let client = steward_client::Client::new(&server.url, Some(TOKEN.into()));
    let post = async |path: &str, body: &serde_json::Value| {
        client
            .raw(
                steward_client::Method::POST,
                path,
                Some(body.to_string()),
                Some("application/json"),
            )
            .await
            .unwrap()
    };
    let dir = todo_conformance_dir();
    let (mut passed, mut failures) = (0, Vec::new());
    for file in [
        "decisions-authorization-api-1_0-01.json",
        "decisions-authorization-api-1_0-02.json",
    ] {
        let data: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let single = data["evaluation"].as_array().cloned().unwrap_or_default();
        for case in &single {
            let (status, answer) = post("/access/v1/evaluation", &case["request"]).await;
            if status == 200 && answer["decision"] == case["expected"] {
                passed += 1;
            } else {
                failures.push(format!("{}: {status} {answer}", case["request"]));
            }
        }
        let batches = data["evaluations"].as_array().cloned().unwrap_or_default();
        for case in &batches {
            let (status, answer) = post("/access/v1/evaluations", &case["request"]).await;
            if status == 200 && answer["evaluations"] == case["expected"] {
                passed += 1;
            } else {
                failures.push(format!("{}: {status} {answer}", case["request"]));
            }
        }
    }
    println!("AuthZEN Todo with examples/authzen-todo: {passed} cases passed");
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(passed, 83);
}
