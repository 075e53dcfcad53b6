//! The tamper-evident log: checkpoints, proofs checked with the public key
//! alone, and verification that finds tampering done directly in the store.

use steward_audit::{Hash, verify_consistency, verify_inclusion, verify_tree_head};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    proofs_verify_with_the_public_key_alone,
    tampering_is_found_at_its_position,
    retention_prunes_payloads_but_not_under_a_hold,
    the_signing_key_can_live_outside_the_store,
    a_failed_append_fails_its_decision_and_leaves_the_log_whole,
    a_record_no_store_can_keep_fails_alone,
    a_row_that_cannot_be_read_back_is_reported_at_its_position,
    a_rewritten_history_is_never_signed,
    deleted_checkpoints_do_not_hide_a_rewrite,
    floats_in_a_decision_verify
);

/// A store that stops taking audit appends fails every decision (none is
/// answered unrecorded), alone or in a batch; a failed append leaves no
/// trace: the decisions around it are numbered without a gap (on SQLite,
/// by the head this process last wrote, which the failure must not move),
/// and the log verifies, its checkpoint signed over exactly what is stored.
async fn a_failed_append_fails_its_decision_and_leaves_the_log_whole(b: Backend) {
    let s = TestServer::start(b).await;
    steward_testkit::callers::setup(&s.admin, "agent")
        .await
        .unwrap();
    let allowed = steward_testkit::callers::call("agent");
    // Acting for the owner, whom no policy allows: a denial.
    let denied = DecisionRequest {
        on_behalf_of: Some("owner@example.com".into()),
        ..allowed.clone()
    };
    let decide = |req: &DecisionRequest| {
        let (client, req) = (s.client(steward_testkit::ADMIN_TOKEN), req.clone());
        async move { client.decide(&req).await }
    };
    assert_eq!(decide(&denied).await.unwrap().decision, Decision::Deny);
    let before = all_audit(&s.admin).await.len();
    s.fail_audit_appends(Some("decision.deny")).await.unwrap();
    // Denials fail, alone and in a batch with allowed decisions, which
    // share their commit; allowed decisions alone go on.
    for _ in 0..3 {
        assert_eq!(decide(&allowed).await.unwrap().decision, Decision::Allow);
        let err = decide(&denied).await.unwrap_err();
        assert!(err.status().is_some_and(|c| c >= 500), "{err:?}");
    }
    let mut many = tokio::task::JoinSet::new();
    for i in 0..8 {
        many.spawn(decide(if i % 2 == 0 { &allowed } else { &denied }));
    }
    let mut answered = 0;
    while let Some(r) = many.join_next().await {
        if let Ok(d) = r.unwrap() {
            assert_eq!(d.decision, Decision::Allow);
            answered += 1;
        }
    }
    for _ in 0..3 {
        assert_eq!(decide(&allowed).await.unwrap().decision, Decision::Allow);
    }
    let entries = all_audit(&s.admin).await;
    assert_eq!(entries.len(), before + 6 + answered);
    let mut seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(
        entries
            .iter()
            .all(|e| e.action != "decision.deny" || e.seq <= before as i64)
    );
    let verified = s.admin.audit_verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
    let head = s.admin.audit_checkpoint().await.unwrap();
    let key = s.anonymous().audit_public_key().await.unwrap();
    verify_tree_head(&key.public_key, &sth(&head)).unwrap();
    assert_eq!(head.size, entries.len() as u64);
    s.stop().await;
}

/// With `audit_signing_key_file`, the key that signs checkpoints moves out
/// of the store (whoever can rewrite the log could otherwise re-sign it);
/// a store still holding another key, or a file without a key, is refused.
async fn the_signing_key_can_live_outside_the_store(b: Backend) {
    use steward_testkit::{ADMIN_TOKEN, TempStore};
    let config = |url: &str, key: Option<&std::path::Path>| steward_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(url.to_string()),
        admin_token: Some(ADMIN_TOKEN.into()),
        audit_signing_key_file: key.map(std::path::Path::to_path_buf),
        ..Default::default()
    };
    let run = |server: &steward_server::RunningServer| {
        steward_client::Client::new(&server.url(), Some(ADMIN_TOKEN.into()))
    };
    let store = TempStore::new(b).await.unwrap();
    let server = steward_server::start(config(&store.url, None))
        .await
        .unwrap();
    human(&run(&server), "ana@example.com").await;
    let key = run(&server).audit_public_key().await.unwrap().public_key;
    run(&server).audit_checkpoint().await.unwrap();
    server.shutdown().await.unwrap();

    // The first start with a file that does not exist moves the key there.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys").join("audit.key");
    for _ in 0..2 {
        let server = steward_server::start(config(&store.url, Some(&file)))
            .await
            .unwrap();
        let admin = run(&server);
        assert_eq!(admin.audit_public_key().await.unwrap().public_key, key);
        human(
            &admin,
            &format!("{}@example.com", uuid::Uuid::now_v7().simple()),
        )
        .await;
        admin.audit_checkpoint().await.unwrap();
        assert!(admin.audit_verify().await.unwrap().ok);
        server.shutdown().await.unwrap();
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let opened = steward_store::Store::open(&store.url).await.unwrap();
    assert_eq!(opened.setting("audit_signing_seed").await.unwrap(), None);
    opened.close().await;

    // Once the key has left the store, a node (or a restart) without that
    // file does not mint a new key for the signed log.
    let elsewhere = dir.path().join("other.key");
    for key in [None, Some(elsewhere.as_path())] {
        let refused = steward_server::start(config(&store.url, key))
            .await
            .err()
            .expect("a new key for a signed log is refused");
        assert!(
            refused.to_string().contains("same audit_signing_key_file"),
            "{refused}"
        );
    }
    assert!(!elsewhere.exists());

    // Another store that holds its own key does not take this file's.
    let other = TempStore::new(b).await.unwrap();
    let server = steward_server::start(config(&other.url, None))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
    let refused = steward_server::start(config(&other.url, Some(&file)))
        .await
        .err()
        .expect("a second key is refused");
    assert!(
        refused.to_string().contains("different audit signing key"),
        "{refused}"
    );
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let refused = steward_server::start(config(&other.url, Some(&garbage)))
        .await
        .err()
        .expect("a file without a key is refused");
    assert!(
        refused.to_string().contains("does not hold a key"),
        "{refused}"
    );
    other.remove().await.unwrap();
    store.remove().await.unwrap();
}

fn h(s: &str) -> Hash {
    Hash::from_hex(s).unwrap()
}

fn sth(c: &Checkpoint) -> steward_audit::SignedTreeHead {
    steward_audit::SignedTreeHead {
        head: steward_audit::TreeHead {
            origin: c.origin.clone(),
            size: c.size,
            root: h(&c.root),
            time_ms: c.time_ms,
        },
        signature: c.signature.clone(),
        key_id: c.key_id.clone(),
    }
}

async fn some_history(s: &TestServer) {
    human(&s.admin, "alice@example.com").await;
    for i in 0..6 {
        low_risk_agent(&s.admin, &format!("a{i}"), "alice@example.com").await;
    }
}

async fn proofs_verify_with_the_public_key_alone(b: Backend) {
    let s = TestServer::start(b).await;
    some_history(&s).await;
    let key = s.anonymous().audit_public_key().await.unwrap();
    let first = s.admin.audit_checkpoint().await.unwrap();
    verify_tree_head(&key.public_key, &sth(&first)).unwrap();
    // Grow the log; the next checkpoint is consistent with the first.
    s.admin.suspend_agent("a1", Some("check")).await.unwrap();
    let second = s.admin.audit_checkpoint().await.unwrap();
    assert!(second.size > first.size);
    verify_tree_head(&key.public_key, &sth(&second)).unwrap();
    let c = s
        .admin
        .audit_consistency(&ConsistencyQuery {
            from: first.size,
            to: Some(second.size),
        })
        .await
        .unwrap();
    assert_eq!(
        (c.from_root.as_str(), c.to_root.as_str()),
        (first.root.as_str(), second.root.as_str())
    );
    let proof: Vec<Hash> = c.proof.iter().map(|p| h(p)).collect();
    verify_consistency(
        first.size,
        second.size,
        &h(&first.root),
        &h(&second.root),
        &proof,
    )
    .unwrap();
    // Every entry is included in the latest tree.
    for seq in 1..=second.size {
        let p = s
            .admin
            .audit_inclusion(&InclusionQuery { seq, size: None })
            .await
            .unwrap();
        assert_eq!(p.root, second.root);
        let proof: Vec<Hash> = p.proof.iter().map(|x| h(x)).collect();
        verify_inclusion(
            &h(&p.leaf_hash),
            seq - 1,
            second.size,
            &proof,
            &h(&second.root),
        )
        .unwrap();
    }
    // The entry read back carries the same leaf hash.
    let entries = all_audit(&s.admin).await;
    let last = entries.last().unwrap();
    let p = s
        .admin
        .audit_inclusion(&InclusionQuery {
            seq: last.seq as u64,
            size: None,
        })
        .await
        .unwrap();
    assert_eq!(last.leaf_hash.as_deref(), Some(p.leaf_hash.as_str()));
    // Sizes the log never had are refused.
    assert_eq!(
        code(
            s.admin
                .audit_inclusion(&InclusionQuery {
                    seq: 1,
                    size: Some(second.size + 100)
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    assert_eq!(
        code(
            s.admin
                .audit_inclusion(&InclusionQuery {
                    seq: second.size + 1,
                    size: Some(second.size)
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    assert_eq!(
        code(
            s.admin
                .audit_consistency(&ConsistencyQuery {
                    from: second.size,
                    to: Some(first.size)
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    let report = s.admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries_checked, second.size);
    s.stop().await;
}

async fn expect_bad(s: &TestServer, position: u64, what: &str) {
    let report = s.admin.audit_verify().await.unwrap();
    assert!(!report.ok, "{what}: tampering not found");
    assert_eq!(
        report.first_bad_position,
        Some(position),
        "{what}: {report:?}"
    );
    assert!(report.problem.as_deref().is_some_and(|p| !p.is_empty()));
}

async fn tampering_is_found_at_its_position(b: Backend) {
    // Each kind of tampering on a fresh log, directly in the store's rows.
    let cases: [(&str, &str, u64); 4] = [
        (
            "modified",
            "UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 4",
            4,
        ),
        ("deleted", "DELETE FROM audit_log WHERE seq = 5", 5),
        (
            "reordered",
            "UPDATE audit_log SET seq = -3 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = -3",
            3,
        ),
        (
            "inserted",
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 4; UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1004; INSERT INTO audit_log (seq, tenant_id, time, actor_kind, actor_id, action, resource_type, resource_id, leaf_hash) SELECT 4, tenant_id, time, actor_kind, actor_id, 'agent.forged', resource_type, resource_id, leaf_hash FROM audit_log WHERE seq = 3",
            4,
        ),
    ];
    for (what, sql, position) in cases {
        let s = TestServer::start(b).await;
        some_history(&s).await;
        // Sign a checkpoint over the honest log, then tamper.
        let cp = s.admin.audit_checkpoint().await.unwrap();
        assert!(cp.size >= 7);
        assert!(s.admin.audit_verify().await.unwrap().ok);
        s.server
            .store()
            .execute_raw(sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        expect_bad(&s, position, what).await;
        s.stop().await;
    }

    // A careful forger changes entry 2 and stores the matching leaf hash:
    // the signed checkpoint's root no longer matches, and verification names
    // the range it vouches for (from entry 1).
    let s = TestServer::start(b).await;
    some_history(&s).await;
    let cp = s.admin.audit_checkpoint().await.unwrap();
    let (mut entry, _, _) = s
        .server
        .store()
        .audit_page_all(1, 1)
        .await
        .unwrap()
        .remove(0);
    entry.action = "agent.forged".into();
    let forged = steward_audit::leaf_hash(&steward_store::audit::canonical_entry(&entry)).to_hex();
    s.server
        .store()
        .execute_raw(&format!(
            "UPDATE audit_log SET action = 'agent.forged', leaf_hash = '{forged}' WHERE seq = 2"
        ))
        .await
        .unwrap();
    let report = s.admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_position, Some(1), "{report:?}");
    // The first signed checkpoint that covers entry 2 is named (the
    // background signer may have signed one before the test's own).
    let first = s
        .admin
        .audit_checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.size)
        .filter(|size| *size >= 2)
        .min()
        .unwrap();
    assert!(first <= cp.size);
    assert!(
        report
            .problem
            .as_deref()
            .unwrap()
            .contains(&format!("checkpoint of size {first} ")),
        "{report:?}"
    );
    s.stop().await;
}

async fn retention_prunes_payloads_but_not_under_a_hold(b: Backend) {
    // Retention of one day; the history is dated two days back (its rows'
    // times changed, which only pruning them makes verifiable again).
    let s = TestServer::start_with(b, |c| c.audit_retention_days = 1).await;
    some_history(&s).await;
    let cp = s.admin.audit_checkpoint().await.unwrap();
    s.server
        .store()
        .execute_raw(&format!(
            "UPDATE audit_log SET time = time - 172800000 WHERE seq <= {}",
            cp.size
        ))
        .await
        .unwrap();
    let http = s.admin.clone();
    let hold: LegalHold = serde_json::from_value(
        http.post_json("/v1/audit/holds", &serde_json::json!({"reason": "case 42"}))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(hold.released_at.is_none());
    // Under the hold nothing is pruned.
    let r: PruneResult = serde_json::from_value(
        http.post_json("/v1/audit/prune", &serde_json::json!({}))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r.pruned, 0);
    // A cut-off inside the retention period is refused.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, _) = http
        .raw(
            steward_client::Method::POST,
            "/v1/audit/prune",
            Some(serde_json::json!({"older_than": later}).to_string()),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    // Released: the payloads go, the tree still verifies.
    http.post_json(
        &format!("/v1/audit/holds/{}/release", hold.id),
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let r: PruneResult = serde_json::from_value(
        http.post_json("/v1/audit/prune", &serde_json::json!({}))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(r.pruned, cp.size, "{r:?}");
    let entries = all_audit(&s.admin).await;
    let first = &entries[0];
    assert!(
        first.after.is_none() && first.leaf_hash.is_some(),
        "{first:?}"
    );
    let report = s.admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    // An entry inside retention emptied behind the server's back (the leaf
    // hash kept, so the tree alone would not tell): found at its position.
    let hold_record = entries
        .iter()
        .find(|e| e.action == "audit.hold")
        .unwrap()
        .seq;
    s.server
        .store()
        .execute_raw(&format!(
            "UPDATE audit_log SET after = NULL, reason = NULL, pruned = 1 WHERE seq = {hold_record}"
        ))
        .await
        .unwrap();
    expect_bad(&s, hold_record as u64, "emptied inside retention").await;
    // Only the platform administrator prunes.
    let (status, _) = tenant_admin_client(&s)
        .await
        .raw(steward_client::Method::POST, "/v1/audit/prune", None, None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    s.stop().await;
}

/// Settings that cannot work are refused at start, with what to change.
#[tokio::test]
async fn zero_retention_or_idle_limit_refuses_to_start() {
    type Adjust = fn(&mut steward_server::Config);
    let adjustments: [(Adjust, &str); 2] = [
        (|c| c.audit_retention_days = 0, "audit_retention_days"),
        (|c| c.mcp_session_idle_secs = 0, "mcp_session_idle_secs"),
    ];
    for (adjust, named) in adjustments {
        let dir = tempfile::tempdir().unwrap();
        let mut config = steward_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        adjust(&mut config);
        let refused = steward_server::start(config).await.err().unwrap();
        assert!(refused.to_string().contains(named), "{refused}");
        // Nothing was created.
        assert!(!dir.path().join("steward.db").exists());
    }
}

/// A record no store can keep (a NUL character, an over-long indexed id) is
/// refused alone: queued together with others' records, which would share
/// its batch and commit, they are still written, and nothing of it is.
async fn a_record_no_store_can_keep_fails_alone(b: Backend) {
    use steward_core::{AuditEvent, ChangeContext};
    let s = TestServer::start(b).await;
    let log = steward_server::audit_log::AuditLog::start(s.server.store(), None)
        .await
        .unwrap();
    let before = all_audit(&s.admin).await.len();
    let event = |id: &str| AuditEvent {
        action: "test.record".into(),
        resource_type: "thing".into(),
        resource_id: id.into(),
        before: None,
        after: None,
        reason: None,
    };
    let ctx = ChangeContext::system("default", "test", chrono::Utc::now());
    let long = "x".repeat(3000);
    let ids = ["first", "bad\0id", "second", long.as_str(), "third"];
    // Queued before any is awaited, so they can share a batch.
    let mut receipts = Vec::new();
    for id in ids {
        receipts.push(log.queue_record(ctx.clone(), event(id)).await);
    }
    let mut outcomes = Vec::new();
    for r in receipts {
        outcomes.push(match r {
            Ok(queued) => queued.wait().await,
            Err(refused) => Err(refused),
        });
    }
    for (id, outcome) in ids.iter().zip(&outcomes) {
        let good = !id.contains('\0') && id.len() < 100;
        match outcome {
            Ok(_) => assert!(good, "{id:.20} was recorded"),
            Err(e) => {
                assert!(!good, "{id} failed: {e:?}");
                assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}");
            }
        }
    }
    let entries = all_audit(&s.admin).await;
    let recorded: Vec<&str> = entries[before..]
        .iter()
        .filter(|e| e.action == "test.record")
        .map(|e| e.resource_id.as_str())
        .collect();
    assert_eq!(recorded, ["first", "second", "third"]);
}

/// A stored row that no longer reads back as an entry (a payload that is
/// not JSON, a leaf hash that is not a hash, a time that is not a number)
/// or a checkpoint that does not is reported by verification like any
/// other tampering: a verdict, not a failed request.
async fn a_row_that_cannot_be_read_back_is_reported_at_its_position(b: Backend) {
    let mut cases = vec![
        (
            "a payload that is not JSON",
            "UPDATE audit_log SET after = '{\"not json' WHERE seq = 4",
            Some(4),
        ),
        (
            "a leaf hash that is not a hash",
            "UPDATE audit_log SET leaf_hash = 'not a hash' WHERE seq = 3",
            Some(3),
        ),
        (
            "a checkpoint whose root is not a hash",
            "UPDATE audit_checkpoints SET root = 'not a hash'",
            None,
        ),
    ];
    if b == Backend::Sqlite {
        // Only SQLite lets a column hold a value of another type.
        cases.push((
            "a time that is not a number",
            "UPDATE audit_log SET time = 'yesterday' WHERE seq = 5",
            Some(5),
        ));
    }
    for (what, sql, position) in cases {
        let s = TestServer::start(b).await;
        some_history(&s).await;
        s.admin.audit_checkpoint().await.unwrap();
        s.server
            .store()
            .execute_raw(sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let report = s
            .admin
            .audit_verify()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!report.ok, "{what}: not found");
        assert_eq!(report.first_bad_position, position, "{what}: {report:?}");
        assert!(
            report
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("cannot be read back") || p.contains("not a hash")),
            "{what}: {report:?}"
        );
        s.stop().await;
    }
}

/// The tree a node builds at start comes from the leaf hashes in the store.
/// Someone who rewrites an entry and its leaf hash there, and restarts a
/// node, does not get a fresh signature over the forged history: the node
/// checks that the rebuilt tree extends the last signed checkpoint, refuses
/// to sign, and verification says why, even once the rows are put back
/// (the node's tree is still the forged one until it restarts).
async fn a_rewritten_history_is_never_signed(b: Backend) {
    use steward_testkit::{ADMIN_TOKEN, TempStore};
    let store = TempStore::new(b).await.unwrap();
    let config = steward_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(store.url.clone()),
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let start = || async {
        let server = steward_server::start(config.clone()).await.unwrap();
        let admin = steward_client::Client::new(&server.url(), Some(ADMIN_TOKEN.into()));
        (server, admin)
    };
    let (server, admin) = start().await;
    human(&admin, "alice@example.com").await;
    for i in 0..6 {
        low_risk_agent(&admin, &format!("a{i}"), "alice@example.com").await;
    }
    let signed = admin.audit_checkpoint().await.unwrap();
    server.shutdown().await.unwrap();

    // Entry 2 rewritten with a matching leaf hash, while no node runs.
    let opened = steward_store::Store::open(&store.url).await.unwrap();
    let (honest, _, _) = opened.audit_page_all(1, 1).await.unwrap().remove(0);
    let mut forged = honest.clone();
    forged.action = "agent.forged".into();
    let leaf = |e: &AuditEntry| {
        steward_audit::leaf_hash(&steward_store::audit::canonical_entry(e)).to_hex()
    };
    let rewrite = |e: &AuditEntry| {
        format!(
            "UPDATE audit_log SET action = '{}', leaf_hash = '{}' WHERE seq = 2",
            e.action,
            leaf(e)
        )
    };
    opened.execute_raw(&rewrite(&forged)).await.unwrap();
    opened.close().await;

    let (server, admin) = start().await;
    human(&admin, "bob@example.com").await;
    let refused = admin.audit_checkpoint().await.unwrap_err();
    assert!(refused.status().is_some_and(|c| c >= 500), "{refused:?}");
    // Nor did the background signer sign anything past the honest log.
    let sizes: Vec<u64> = server
        .store()
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|c| c.head.size)
        .collect();
    assert!(sizes.iter().all(|size| *size <= signed.size), "{sizes:?}");
    let listed = admin.audit_checkpoints().await.unwrap();
    assert_eq!(listed.len(), sizes.len());
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(
        report.first_bad_position.is_some_and(|p| p <= 2),
        "{report:?}"
    );

    // The rows put back verify, but this node's tree is still forged.
    server.store().execute_raw(&rewrite(&honest)).await.unwrap();
    assert!(admin.audit_checkpoint().await.is_err());
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(
        report
            .problem
            .as_deref()
            .is_some_and(|p| p.contains(&format!("checkpoint of size {}", signed.size))),
        "{report:?}"
    );
    server.shutdown().await.unwrap();

    // Restarted on the honest rows, the node signs again.
    let (server, admin) = start().await;
    let next = admin.audit_checkpoint().await.unwrap();
    assert!(next.size > signed.size);
    let report = admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    server.shutdown().await.unwrap();
    store.remove().await.unwrap();
}

/// Whoever rewrites the stored history and also deletes the checkpoints
/// that would give it away is caught by the witness the node keeps beside
/// its key file: it signs nothing over the rewrite, and says why.
async fn deleted_checkpoints_do_not_hide_a_rewrite(b: Backend) {
    use steward_testkit::{ADMIN_TOKEN, TempStore};
    let store = TempStore::new(b).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit.key");
    let config = steward_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(store.url.clone()),
        admin_token: Some(ADMIN_TOKEN.into()),
        audit_signing_key_file: Some(key_file.clone()),
        ..Default::default()
    };
    let start = || async {
        let server = steward_server::start(config.clone()).await.unwrap();
        let admin = steward_client::Client::new(&server.url(), Some(ADMIN_TOKEN.into()));
        (server, admin)
    };
    let (server, admin) = start().await;
    human(&admin, "alice@example.com").await;
    for i in 0..4 {
        low_risk_agent(&admin, &format!("a{i}"), "alice@example.com").await;
    }
    let signed = admin.audit_checkpoint().await.unwrap();
    server.shutdown().await.unwrap();
    let witness = std::fs::read_to_string(dir.path().join("audit.key.head")).unwrap();
    let witnessed: u64 = witness.split(' ').next().unwrap().parse().unwrap();
    assert!(witnessed >= signed.size, "{witness}");

    // Entry 2 rewritten with a matching leaf hash, every checkpoint gone.
    let opened = steward_store::Store::open(&store.url).await.unwrap();
    let (honest, _, _) = opened.audit_page_all(1, 1).await.unwrap().remove(0);
    let mut forged = honest.clone();
    forged.action = "agent.forged".into();
    let leaf = steward_audit::leaf_hash(&steward_store::audit::canonical_entry(&forged)).to_hex();
    opened
        .execute_raw(&format!(
            "UPDATE audit_log SET action = 'agent.forged', leaf_hash = '{leaf}' WHERE seq = 2"
        ))
        .await
        .unwrap();
    opened
        .execute_raw("DELETE FROM audit_checkpoints")
        .await
        .unwrap();
    opened.close().await;

    let (server, admin) = start().await;
    human(&admin, "bob@example.com").await;
    let refused = admin.audit_checkpoint().await.unwrap_err();
    assert!(refused.status().is_some_and(|c| c >= 500), "{refused:?}");
    assert!(
        server.store().checkpoints().await.unwrap().is_empty(),
        "a checkpoint was signed over the rewrite"
    );
    let report = admin.audit_verify().await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(
        report
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("missing from the store")),
        "{report:?}"
    );
    server.shutdown().await.unwrap();
    store.remove().await.unwrap();
}

/// Floats in a decision's context are hashed as written when recorded and
/// again from the stored text when verified: every float must read back
/// as the same number (shortest round-trip digits, denormals and the
/// extremes included), or an honest log would fail verification.
async fn floats_in_a_decision_verify(b: Backend) {
    let s = TestServer::start(b).await;
    steward_testkit::callers::setup(&s.admin, "agent")
        .await
        .unwrap();
    let floats = [
        -1.157573748487175e-210,
        8.712240929461937e85,
        90.18217000830143,
        149.25810622176905,
        0.30000000000000004,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
    ];
    let mut req = steward_testkit::callers::call("agent");
    for (i, x) in floats.iter().enumerate() {
        req.context.insert(format!("x{i}"), serde_json::json!(x));
    }
    req.context
        .insert("all".into(), serde_json::json!({ "floats": floats }));
    s.admin.decide(&req).await.unwrap();
    s.admin.audit_checkpoint().await.unwrap();
    let report = s.admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    // And the log holds the very numbers asked about.
    let entries = all_audit(&s.admin).await;
    let decision = entries
        .iter()
        .rev()
        .find(|e| e.action.starts_with("decision."))
        .unwrap();
    let context = &decision.after.as_ref().unwrap()["context"];
    assert_eq!(context["all"]["floats"], serde_json::json!(floats));
    s.stop().await;
}

/// Two nodes on one store: another node signs a checkpoint over entries
/// this node has not read yet, between this node's catch-up and its reading
/// of the latest checkpoint, as an export starts. The export is still built
/// (on a checkpoint this node's tree covers) and verifies offline.
///
/// The other node's signature is made here, with the log's key, while the
/// checkpoints table is locked so that the export waits for it at that
/// very point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_racing_another_nodes_checkpoint_succeeds() {
    use sqlx::{Connection, Executor};
    use steward_testkit::{ADMIN_TOKEN, TempStore};
    let store = TempStore::new(Backend::Postgres).await.unwrap();
    let server = steward_server::start(steward_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(store.url.clone()),
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = steward_client::Client::new(&server.url(), Some(ADMIN_TOKEN.into()));
    human(&admin, "alice@example.com").await;
    admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let acme = admin
        .create_token(&CreateToken {
            name: "acme-admin".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    let acme = steward_client::Client::new(&server.url(), Some(acme.secret));
    let origin = admin.audit_public_key().await.unwrap().origin;
    admin.audit_checkpoint().await.unwrap();

    let mut other = sqlx::PgConnection::connect(&store.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    other
        .execute("LOCK TABLE audit_checkpoints IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let export = {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .audit_export(&AuditExportQuery {
                    since: Some(since),
                    ..Default::default()
                })
                .await
        })
    };
    // The export has caught up and waits for the latest checkpoint.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Another tenant's entry, then ours: the first of ours in the range is
    // not the next one after what this node has read.
    human(&acme, "carol@acme.example").await;
    human(&admin, "bob@example.com").await;
    let size = server.store().audit_size().await.unwrap();
    let leaves = server.store().audit_leaves(1, size).await.unwrap();
    let tree = steward_audit::MerkleTree::from_leaves(leaves.into_iter().map(|(_, leaf)| leaf));
    let seed = server
        .store()
        .setting("audit_signing_seed")
        .await
        .unwrap()
        .unwrap();
    let seed: Vec<u8> = (0..seed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&seed[i..i + 2], 16).unwrap())
        .collect();
    let signed = steward_audit::LogSigner::from_seed_bytes(&seed.try_into().unwrap()).sign(
        steward_audit::TreeHead {
            origin,
            size: size as u64,
            root: tree.root(),
            time_ms: chrono::Utc::now().timestamp_millis(),
        },
    );
    sqlx::query(
        "INSERT INTO audit_checkpoints (size, origin, root, time_ms, signature, key_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(size)
    .bind(&signed.head.origin)
    .bind(signed.head.root.to_hex())
    .bind(signed.head.time_ms)
    .bind(&signed.signature)
    .bind(&signed.key_id)
    .execute(&mut other)
    .await
    .unwrap();
    other.execute("COMMIT").await.unwrap();
    other.close().await.unwrap();

    let export = export.await.unwrap().unwrap();
    let manifest: steward_audit::SignedManifest = serde_json::from_value(export.manifest).unwrap();
    assert_eq!(manifest.manifest.to_seq, size as u64);
    assert_eq!(manifest.manifest.entry_count, 1, "{manifest:?}");
    let key = admin.audit_public_key().await.unwrap().public_key;
    let report = steward_audit::verify_bundle(&manifest, export.entries.as_bytes(), Some(&key));
    assert!(report.ok, "{report:?}");
    assert!(admin.audit_verify().await.unwrap().ok);
    server.shutdown().await.unwrap();
    store.remove().await.unwrap();
}
