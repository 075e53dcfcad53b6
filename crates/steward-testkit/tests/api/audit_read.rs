//! Reading the audit log: filters, paging and bad filters; export bundles
//! in JSON Lines and OCSF verified offline with the public key alone,
//! tampering with an exported file found at its position, and no secret in
//! the log or an export.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use steward_audit::{BundleReport, SignedManifest, verify_bundle};
use steward_client::Client;
use steward_testkit::{ADMIN_TOKEN, Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    filters_find_what_they_name,
    pages_follow_the_cursor,
    bad_filters_are_refused_and_change_nothing,
    exports_verify_offline_in_both_formats,
    tampering_with_an_export_is_found_at_its_position,
    secrets_never_reach_the_log_or_an_export
);

/// Tickets with an amount; refunds up to 100 allowed for anyone; a support
/// team with alice and support-bot; bob and reviewer outside it; three
/// decisions (one on behalf of bob) and a suspension.
async fn history(admin: &Client) {
    admin
        .put_resource_type(&PutResourceType {
            name: "ticket".into(),
            description: "A support ticket".into(),
            attributes: [("amount".to_string(), "Long".to_string())].into(),
        })
        .await
        .unwrap();
    admin
        .put_action(&PutAction {
            name: "refund".into(),
            description: String::new(),
            resource_types: vec!["ticket".into()],
            context: Default::default(),
        })
        .await
        .unwrap();
    admin
        .put_policy(&PutPolicy {
            id: "refunds-up-to-100".into(),
            description: "Refunds up to 100".into(),
            owner: "support@example.com".into(),
            text: r#"permit(principal, action == Action::"refund", resource is ticket) when { resource.amount <= 100 };"#.into(),
        })
        .await
        .unwrap();
    admin
        .create_team(&CreateTeam {
            name: "support".into(),
            description: "Customer support".into(),
        })
        .await
        .unwrap();
    admin
        .create_human(&CreateHuman {
            external_id: None,
            email: "alice@example.com".into(),
            display_name: "Alice".into(),
            teams: vec!["support".into()],
            roles: vec![],
        })
        .await
        .unwrap();
    human(admin, "bob@example.com").await;
    admin
        .register_agent(&RegisterAgent {
            name: "support-bot".into(),
            owner: "alice@example.com".into(),
            team: Some("support".into()),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    low_risk_agent(admin, "reviewer", "bob@example.com").await;
    decide(admin, "support-bot", "T-1", 50, Some("bob@example.com")).await;
    decide(admin, "support-bot", "T-88", 250, None).await;
    decide(admin, "reviewer", "T-2", 500, None).await;
    admin
        .suspend_agent("reviewer", Some("investigating spend"))
        .await
        .unwrap();
}

async fn decide(
    admin: &Client,
    agent: &str,
    ticket: &str,
    amount: i64,
    for_whom: Option<&str>,
) -> DecisionResponse {
    admin
        .decide(&DecisionRequest {
            principal: Some(PrincipalRef {
                principal_type: "agent".into(),
                id: agent.into(),
            }),
            action: "refund".into(),
            resource: ResourceRef {
                resource_type: "ticket".into(),
                id: ticket.into(),
                attributes: [("amount".to_string(), json!(amount))].into(),
            },
            on_behalf_of: for_whom.map(str::to_owned),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Every entry a filter returns, following cursors with small pages.
async fn search(admin: &Client, filter: AuditFilter) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = admin
            .list_audit(&AuditFilter {
                cursor,
                ..filter.clone()
            })
            .await
            .unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn seqs(entries: &[AuditEntry]) -> Vec<i64> {
    entries.iter().map(|e| e.seq).collect()
}

/// The sequence numbers of `all` entries that `keep` accepts.
fn expected(all: &[AuditEntry], keep: impl Fn(&AuditEntry) -> bool) -> Vec<i64> {
    all.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
}

fn after_text(e: &AuditEntry) -> String {
    e.after.as_ref().map(Value::to_string).unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn filters_find_what_they_name(b: Backend) {
    let s = TestServer::start(b).await;
    history(&s.admin).await;
    let all = all_audit(&s.admin).await;
    let bot = s.admin.get_agent("support-bot").await.unwrap();
    let reviewer = s.admin.get_agent("reviewer").await.unwrap();
    let bob = s.admin.get_human("bob@example.com").await.unwrap();
    let team = s.admin.get_team("support").await.unwrap();
    let is_decision = |e: &AuditEntry| e.action.starts_with("decision.");
    let f = AuditFilter::default;

    // Agent, by name or id: it acted, was acted on, or was decided about.
    let about_bot = expected(&all, |e| {
        e.actor.id == bot.id
            || e.resource_id == bot.id
            || (is_decision(e) && after_text(e).contains(&format!("\"{}\"", bot.id)))
    });
    assert_eq!(about_bot.len(), 3, "register and two decisions: {all:#?}");
    for key in [&bot.name, &bot.id] {
        let found = search(
            &s.admin,
            AuditFilter {
                agent: Some(key.clone()),
                ..f()
            },
        )
        .await;
        assert_eq!(seqs(&found), about_bot, "agent={key}");
    }
    let about_reviewer = search(
        &s.admin,
        AuditFilter {
            agent: Some("reviewer".into()),
            ..f()
        },
    )
    .await;
    let actions: Vec<&str> = about_reviewer.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["agent.register", "decision.deny", "agent.suspend"]
    );
    assert!(
        about_reviewer
            .iter()
            .all(|e| e.resource_id == reviewer.id || e.action == "decision.deny")
    );

    // Human, by e-mail: created, and a decision made on their behalf.
    let about_bob = search(
        &s.admin,
        AuditFilter {
            human: Some("bob@example.com".into()),
            ..f()
        },
    )
    .await;
    let actions: Vec<&str> = about_bob.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["human.create", "decision.allow"],
        "{about_bob:#?}"
    );
    assert_eq!(about_bob[0].resource_id, bob.id);
    let by_id = search(
        &s.admin,
        AuditFilter {
            human: Some(bob.id.clone()),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&by_id), seqs(&about_bob));
    // The admin token has no human: nothing is "by" alice, only about her.
    let about_alice = search(
        &s.admin,
        AuditFilter {
            human: Some("alice@example.com".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(about_alice.len(), 1);
    assert_eq!(about_alice[0].action, "human.create");

    // Team: the team itself and its agents.
    let about_team = search(
        &s.admin,
        AuditFilter {
            team: Some("support".into()),
            ..f()
        },
    )
    .await;
    let mut want = about_bot.clone();
    want.extend(expected(&all, |e| e.resource_id == team.id));
    want.sort_unstable();
    assert_eq!(seqs(&about_team), want);

    // Actions, exact or by prefix; decisions by outcome.
    let decisions = search(
        &s.admin,
        AuditFilter {
            action: Some("decision.*".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(decisions.len(), 3);
    // Without the star the action is exact.
    assert!(
        search(
            &s.admin,
            AuditFilter {
                action: Some("decision.".into()),
                ..f()
            }
        )
        .await
        .is_empty()
    );
    let suspensions = search(
        &s.admin,
        AuditFilter {
            action: Some("agent.suspend".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(suspensions.len(), 1);
    assert_eq!(
        suspensions[0].reason.as_deref(),
        Some("investigating spend")
    );
    let everything = search(
        &s.admin,
        AuditFilter {
            action: Some("*".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&everything), seqs(&all));
    let denials = search(
        &s.admin,
        AuditFilter {
            decision: Some("deny".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(denials.len(), 2);
    assert!(denials.iter().all(|e| e.action == "decision.deny"));
    let allowed = search(
        &s.admin,
        AuditFilter {
            decision: Some("allow".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(allowed.len(), 1);
    assert!(
        search(
            &s.admin,
            AuditFilter {
                decision: Some("approval_required".into()),
                ..f()
            }
        )
        .await
        .is_empty()
    );

    // Resources, by id or type:id.
    let t88 = search(
        &s.admin,
        AuditFilter {
            resource: Some("ticket:T-88".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(t88.len(), 1);
    assert_eq!(
        seqs(&t88),
        seqs(
            &search(
                &s.admin,
                AuditFilter {
                    resource: Some("T-88".into()),
                    ..f()
                }
            )
            .await
        )
    );
    let agent_records = search(
        &s.admin,
        AuditFilter {
            resource: Some(format!("agent:{}", reviewer.id)),
            ..f()
        },
    )
    .await;
    assert_eq!(
        seqs(&agent_records),
        expected(&all, |e| e.resource_id == reviewer.id)
    );
    assert!(
        search(
            &s.admin,
            AuditFilter {
                resource: Some("ticket:T-404".into()),
                ..f()
            }
        )
        .await
        .is_empty()
    );

    // Filters combine.
    let bot_denials = search(
        &s.admin,
        AuditFilter {
            agent: Some("support-bot".into()),
            decision: Some("deny".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(bot_denials.len(), 1);
    assert_eq!(bot_denials[0].resource_id, "T-88");

    // Time: since is inclusive, until exclusive.
    let middle = all[all.len() / 2].time;
    let since = search(
        &s.admin,
        AuditFilter {
            since: Some(rfc3339(middle)),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&since), expected(&all, |e| e.time >= middle));
    let until = search(
        &s.admin,
        AuditFilter {
            until: Some(rfc3339(middle)),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&until), expected(&all, |e| e.time < middle));
    let none = search(
        &s.admin,
        AuditFilter {
            since: Some(rfc3339(middle)),
            until: Some(rfc3339(middle)),
            ..f()
        },
    )
    .await;
    assert!(none.is_empty());
    let offset = middle.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
    let since_offset = search(
        &s.admin,
        AuditFilter {
            since: Some(offset.to_rfc3339_opts(SecondsFormat::Millis, false)),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&since_offset), seqs(&since));

    // The last N, still oldest first.
    let last = s
        .admin
        .list_audit(&AuditFilter {
            last: Some(2),
            ..f()
        })
        .await
        .unwrap();
    assert_eq!(seqs(&last.items), seqs(&all[all.len() - 2..]));
    let last_decisions = s
        .admin
        .list_audit(&AuditFilter {
            last: Some(2),
            action: Some("decision.*".into()),
            ..f()
        })
        .await
        .unwrap();
    assert_eq!(seqs(&last_decisions.items), seqs(&decisions[1..]));
    let more_than_all = s
        .admin
        .list_audit(&AuditFilter {
            last: Some(500),
            limit: Some(500),
            ..f()
        })
        .await
        .unwrap();
    assert_eq!(seqs(&more_than_all.items), seqs(&all));

    // An auditor reads the same; an agent key does not.
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
    let as_auditor = search(
        &s.client(&auditor.secret),
        AuditFilter {
            agent: Some("support-bot".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(seqs(&as_auditor), about_bot);
    let key = s
        .admin
        .create_key(
            "support-bot",
            &CreateKey {
                name: "k".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        code(s.client(&key.secret).list_audit(&f()).await),
        ErrorCode::Forbidden
    );
    s.stop().await;
}

async fn pages_follow_the_cursor(b: Backend) {
    let s = TestServer::start(b).await;
    history(&s.admin).await;
    for filter in [
        AuditFilter::default(),
        AuditFilter {
            agent: Some("support-bot".into()),
            ..Default::default()
        },
        AuditFilter {
            action: Some("decision.*".into()),
            ..Default::default()
        },
        AuditFilter {
            team: Some("support".into()),
            ..Default::default()
        },
    ] {
        let whole = search(
            &s.admin,
            AuditFilter {
                limit: Some(500),
                ..filter.clone()
            },
        )
        .await;
        let paged = search(
            &s.admin,
            AuditFilter {
                limit: Some(1),
                ..filter.clone()
            },
        )
        .await;
        assert_eq!(seqs(&paged), seqs(&whole), "{filter:?}");
        let first = s
            .admin
            .list_audit(&AuditFilter {
                limit: Some(1),
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(
            first.next_cursor.as_deref(),
            Some(first.items[0].seq.to_string().as_str())
        );
    }
    let whole = all_audit(&s.admin).await;
    let last_page = s
        .admin
        .list_audit(&AuditFilter {
            cursor: Some(whole.last().unwrap().seq.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(last_page.items.is_empty() && last_page.next_cursor.is_none());
    s.stop().await;
}

async fn bad_filters_are_refused_and_change_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    history(&s.admin).await;
    let before = snapshot(&s.admin).await;
    let f = AuditFilter::default;
    let cases: Vec<(AuditFilter, &str)> = vec![
        (
            AuditFilter {
                since: Some("yesterday".into()),
                ..f()
            },
            "since",
        ),
        (
            AuditFilter {
                until: Some("2026-13-01T00:00:00Z".into()),
                ..f()
            },
            "until",
        ),
        (
            AuditFilter {
                since: Some("2026-11-26T10:00:00Z".into()),
                until: Some("2026-11-25T10:00:00Z".into()),
                ..f()
            },
            "reversed",
        ),
        (
            AuditFilter {
                decision: Some("maybe".into()),
                ..f()
            },
            "decision",
        ),
        (
            AuditFilter {
                agent: Some("nobody".into()),
                ..f()
            },
            "agent",
        ),
        (
            AuditFilter {
                agent: Some("agt_0000".into()),
                ..f()
            },
            "agent",
        ),
        (
            AuditFilter {
                human: Some("nobody@example.com".into()),
                ..f()
            },
            "human",
        ),
        (
            AuditFilter {
                team: Some("no-such-team".into()),
                ..f()
            },
            "team",
        ),
        (
            AuditFilter {
                action: Some("decision.*.x*".into()),
                ..f()
            },
            "action",
        ),
        (
            AuditFilter {
                agent: Some(" ".into()),
                ..f()
            },
            "agent",
        ),
        (
            AuditFilter {
                last: Some(0),
                ..f()
            },
            "last",
        ),
        (
            AuditFilter {
                limit: Some(0),
                ..f()
            },
            "limit",
        ),
        (
            AuditFilter {
                cursor: Some("next".into()),
                ..f()
            },
            "cursor",
        ),
    ];
    for (filter, named) in cases {
        let err = s.admin.list_audit(&filter).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidQuery),
            "{filter:?}: {err}"
        );
        assert!(err.to_string().contains(named), "{named}: {err}");
    }
    let exports = [
        AuditExportQuery {
            format: Some("csv".into()),
            ..Default::default()
        },
        AuditExportQuery {
            since: Some("last week".into()),
            ..Default::default()
        },
        AuditExportQuery {
            since: Some("2026-11-26T10:00:00Z".into()),
            until: Some("2026-11-26T09:00:00Z".into()),
            ..Default::default()
        },
    ];
    for query in exports {
        assert_eq!(
            code(s.admin.audit_export(&query).await),
            ErrorCode::InvalidQuery,
            "{query:?}"
        );
    }
    // A raw request with a malformed parameter type is refused the same way.
    let raw = s
        .admin
        .raw(
            steward_client::Method::GET,
            "/v1/audit?last=many",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.0, 400);
    assert_eq!(snapshot(&s.admin).await, before);
    s.stop().await;
}

/// Tenant `acme` writes between the default tenant's entries.
async fn two_tenants(s: &TestServer) -> Client {
    s.admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let acme = s
        .admin
        .create_token(&CreateToken {
            name: "acme-admin".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    let acme = s.client(&acme.secret);
    human(&acme, "carol@acme.example").await;
    history(&s.admin).await;
    low_risk_agent(&acme, "acme-secret-project", "carol@acme.example").await;
    s.admin
        .resume_agent("reviewer", Some("cleared"))
        .await
        .unwrap();
    acme.suspend_agent("acme-secret-project", Some("acme only"))
        .await
        .unwrap();
    acme
}

fn manifest_of(export: &AuditExport) -> SignedManifest {
    serde_json::from_value(export.manifest.clone()).unwrap()
}

fn check(export: &AuditExport, key: Option<&str>) -> BundleReport {
    verify_bundle(&manifest_of(export), export.entries.as_bytes(), key)
}

/// The entries a file's lines carry, in order.
fn entries_in(export: &AuditExport) -> Vec<AuditEntry> {
    let format = manifest_of(export).manifest.format;
    export
        .entries
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let entry = match format {
                steward_audit::BundleFormat::Jsonl => v,
                steward_audit::BundleFormat::Ocsf => v["unmapped"]["steward"]["entry"].clone(),
            };
            serde_json::from_value(entry).unwrap()
        })
        .collect()
}

async fn exports_verify_offline_in_both_formats(b: Backend) {
    let s = TestServer::start(b).await;
    let acme = two_tenants(&s).await;
    let key = s.anonymous().audit_public_key().await.unwrap();
    for format in ["jsonl", "ocsf"] {
        // Each export is recorded, so the next one holds one more entry.
        let ours = all_audit(&s.admin).await;
        let export = s
            .admin
            .audit_export(&AuditExportQuery {
                format: Some(format.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let report = check(&export, Some(&key.public_key));
        assert!(report.ok, "{format}: {report:?}");
        assert!(report.key_pinned);
        assert!(
            report.withheld > 0,
            "acme's entries are in the range as hashes"
        );
        // Exactly our entries, as stored; nothing of acme's but hashes.
        let exported = entries_in(&export);
        assert_eq!(seqs(&exported), seqs(&ours), "{format}");
        for (e, stored) in exported.iter().zip(&ours) {
            assert_eq!(e.after, stored.after);
            assert_eq!(e.leaf_hash, stored.leaf_hash);
            // The offline canonical form is the store's.
            assert_eq!(
                steward_audit::canonical_entry(&serde_json::to_value(e).unwrap()).unwrap(),
                steward_store::audit::canonical_entry(stored)
            );
        }
        for secret in ["acme", "carol", "acme-secret-project"] {
            assert!(
                !export.entries.contains(secret),
                "{format}: {secret} leaked"
            );
        }
        let manifest = manifest_of(&export).manifest;
        assert_eq!(manifest.entry_count, ours.len() as u64);
        assert_eq!(manifest.public_key, key.public_key);
        assert_eq!(manifest.from_seq, ours[0].seq as u64);
        assert!(manifest.to_seq >= ours.last().unwrap().seq as u64);
        if format == "ocsf" {
            let first: Value =
                serde_json::from_str(export.entries.lines().next().unwrap()).unwrap();
            assert_eq!(first["class_uid"], 6003);
            assert_eq!(first["metadata"]["product"]["name"], "Steward");
            let denial = export
                .entries
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|v| v["status_detail"] == "deny")
                .unwrap();
            assert_eq!(denial["status"], "Failure");
            assert_eq!(denial["actor"]["user"]["name"], "support-bot");
            assert_eq!(denial["api"]["operation"], "refund");
        }
    }

    // A time range: the entries in it, starting after a prefix of hashes.
    let ours = all_audit(&s.admin).await;
    let decisions: Vec<&AuditEntry> = ours
        .iter()
        .filter(|e| e.action.starts_with("decision."))
        .collect();
    let since = decisions[0].time;
    let until = ours.last().unwrap().time;
    let export = s
        .admin
        .audit_export(&AuditExportQuery {
            since: Some(rfc3339(since)),
            until: Some(rfc3339(until)),
            format: Some("ocsf".into()),
        })
        .await
        .unwrap();
    let report = check(&export, Some(&key.public_key));
    assert!(report.ok, "{report:?}");
    assert_eq!(
        seqs(&entries_in(&export)),
        expected(&ours, |e| e.time >= since && e.time < until)
    );
    assert!(manifest_of(&export).manifest.from_seq > 1);
    assert!(!manifest_of(&export).manifest.prefix_subtrees.is_empty());

    // Acme's export holds only acme's entries and verifies with the same key.
    let theirs = acme
        .audit_export(&AuditExportQuery::default())
        .await
        .unwrap();
    assert!(check(&theirs, Some(&key.public_key)).ok);
    assert!(entries_in(&theirs).iter().all(|e| e.tenant_id == "acme"));
    assert!(!theirs.entries.contains("support-bot"));

    // A range with nothing in it is an empty bundle that verifies.
    let empty = s
        .admin
        .audit_export(&AuditExportQuery {
            since: Some("2999-01-01T00:00:00Z".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(empty.entries, "");
    assert!(check(&empty, Some(&key.public_key)).ok);

    // Auditors export; agents do not; the exports themselves are recorded.
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
    assert!(
        check(
            &s.client(&auditor.secret)
                .audit_export(&AuditExportQuery::default())
                .await
                .unwrap(),
            None
        )
        .ok
    );
    let key_secret = s
        .admin
        .create_key(
            "support-bot",
            &CreateKey {
                name: "k".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .secret;
    assert_eq!(
        code(
            s.client(&key_secret)
                .audit_export(&AuditExportQuery::default())
                .await
        ),
        ErrorCode::Forbidden
    );
    let recorded = search(
        &s.admin,
        AuditFilter {
            action: Some("audit.export".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(recorded.len(), 5, "{recorded:#?}");

    // Another log's key is refused.
    let other = steward_audit::LogSigner::generate().public_key_base64();
    assert!(!check(&export, Some(&other)).ok);
    let online = s.admin.audit_verify().await.unwrap();
    assert!(online.ok, "{online:?}");
    s.stop().await;
}

/// The first log position a line carries (a withheld one, or its entry).
fn first_position(line: &str, ocsf: bool) -> u64 {
    let v: Value = serde_json::from_str(line).unwrap();
    let holder = if ocsf {
        v["unmapped"]["steward"].clone()
    } else {
        v
    };
    holder["withheld_before"]
        .get(0)
        .map(|w| w["seq"].as_u64().unwrap())
        .unwrap_or_else(|| {
            let entry = if ocsf { &holder["entry"] } else { &holder };
            entry["seq"].as_u64().unwrap()
        })
}

fn entry_seq(line: &str, ocsf: bool) -> u64 {
    let v: Value = serde_json::from_str(line).unwrap();
    let entry = if ocsf {
        v["unmapped"]["steward"]["entry"].clone()
    } else {
        v
    };
    entry["seq"].as_u64().unwrap()
}

async fn tampering_with_an_export_is_found_at_its_position(b: Backend) {
    let s = TestServer::start(b).await;
    two_tenants(&s).await;
    let key = s.anonymous().audit_public_key().await.unwrap().public_key;
    for format in ["jsonl", "ocsf"] {
        let ocsf = format == "ocsf";
        let export = s
            .admin
            .audit_export(&AuditExportQuery {
                format: Some(format.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let manifest = manifest_of(&export);
        let lines: Vec<String> = export.entries.lines().map(str::to_owned).collect();
        // A line in the middle that carries acme's hashes before its entry.
        let k = (1..lines.len() - 1)
            .find(|&i| first_position(&lines[i], ocsf) < entry_seq(&lines[i], ocsf))
            .expect("a line with withheld positions");
        let join =
            |lines: &[String]| -> String { lines.iter().map(|l| format!("{l}\n")).collect() };
        let expect = |file: String, position: u64, line: usize, what: &str| {
            let report = verify_bundle(&manifest, file.as_bytes(), Some(&key));
            assert!(!report.ok, "{format} {what}: not detected");
            assert_eq!(
                report.first_bad_position,
                Some(position),
                "{format} {what}: {report:?}"
            );
            assert_eq!(
                report.first_bad_line,
                Some(line as u64 + 1),
                "{format} {what}: {report:?}"
            );
        };

        let mut modified = lines.clone();
        let mut v: Value = serde_json::from_str(&lines[k]).unwrap();
        let entry = if ocsf {
            &mut v["unmapped"]["steward"]["entry"]
        } else {
            &mut v
        };
        entry["reason"] = json!("nothing to see");
        modified[k] = v.to_string();
        expect(join(&modified), entry_seq(&lines[k], ocsf), k, "modified");

        let mut deleted = lines.clone();
        deleted.remove(k);
        expect(
            join(&deleted),
            first_position(&lines[k], ocsf),
            k,
            "deleted",
        );

        let mut inserted = lines.clone();
        inserted.insert(k + 1, lines[k].clone());
        expect(
            join(&inserted),
            first_position(&lines[k + 1], ocsf),
            k + 1,
            "inserted",
        );

        let mut swapped = lines.clone();
        swapped.swap(k, k + 1);
        expect(
            join(&swapped),
            first_position(&lines[k], ocsf),
            k,
            "reordered",
        );

        // The untouched file still verifies.
        assert!(verify_bundle(&manifest, export.entries.as_bytes(), Some(&key)).ok);
    }
    s.stop().await;
}

async fn secrets_never_reach_the_log_or_an_export(b: Backend) {
    let s = TestServer::start(b).await;
    history(&s.admin).await;
    let token = s
        .admin
        .create_token(&CreateToken {
            name: "ops".into(),
            role: TokenRole::Admin,
            human: Some("alice@example.com".into()),
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    let key = s
        .admin
        .create_key(
            "support-bot",
            &CreateKey {
                name: "prod".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    // Use both, so their holders appear as actors.
    s.client(&token.secret)
        .suspend_agent("support-bot", Some("rotate keys"))
        .await
        .unwrap();
    s.client(&token.secret)
        .resume_agent("support-bot", None)
        .await
        .unwrap();
    s.client(&key.secret)
        .decide(&DecisionRequest {
            action: "refund".into(),
            resource: ResourceRef {
                resource_type: "ticket".into(),
                id: "T-9".into(),
                attributes: [("amount".to_string(), json!(5))].into(),
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(token.secret.starts_with("stwt_") && key.secret.starts_with("stw_"));
    // The secret and its part after the visible prefix, which is what
    // a careless encoder would copy.
    let needles: BTreeSet<String> = [&token.secret, &key.secret, &ADMIN_TOKEN.to_string()]
        .iter()
        .flat_map(|secret| [secret.to_string(), secret[secret.len() - 16..].to_string()])
        .collect();
    let log = serde_json::to_string(&all_audit(&s.admin).await).unwrap();
    let jsonl = s
        .admin
        .audit_export(&AuditExportQuery::default())
        .await
        .unwrap();
    let ocsf = s
        .admin
        .audit_export(&AuditExportQuery {
            format: Some("ocsf".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for (what, text) in [
        ("log", &log),
        ("jsonl", &jsonl.entries),
        ("ocsf", &ocsf.entries),
    ] {
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} holds secret material {needle}"
            );
        }
        assert!(
            text.contains(&key.key.id),
            "{what}: the key's id is recorded"
        );
    }
    assert!(!jsonl.manifest.to_string().contains(&key.secret));
    s.stop().await;
}
