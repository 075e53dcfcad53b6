//! The store against both backends: SQLite in a temporary folder and the
//! machine's PostgreSQL in a fresh schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, InventoryRules};
use steward_store::Store;
use steward_types::*;

/// The tenant `default` in `store`, and a system change context in it.
async fn default_tenant(store: &Store) -> ChangeContext {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    store
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    ctx
}

/// The store file in `dir`.
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/s.db", dir.path().display())
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    (Store::open(&url).await.unwrap(), dir)
}

/// The URL of a fresh, empty schema on the test PostgreSQL database.
async fn postgres_url() -> String {
    let base = std::env::var("STEWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("st_{}", uuid::Uuid::now_v7().simple());
    // A plain connection: opening a Store on the base URL would migrate the
    // shared database's own schema, and tie it to this checkout's migrations.
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

async fn postgres() -> Store {
    Store::open(&postgres_url().await).await.unwrap()
}

async fn scenario(store: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    let rules = InventoryRules::default();
    assert!(
        store
            .ensure_tenant(&ctx, "default", "Default")
            .await
            .unwrap()
    );
    let owner = store
        .create_human(
            &ctx,
            CreateHuman {
                external_id: None,
                email: "Alice@Example.com".into(),
                display_name: "Alice".into(),
                teams: vec![],
                roles: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(owner.email, "alice@example.com");
    let parent = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "p".into(),
                owner: "alice@example.com".into(),
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(parent.state, AgentState::Active);
    let child = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "c".into(),
                owner: owner.id.clone(),
                parent: Some("p".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(child.depth, 1);
    let dup = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "c".into(),
                owner: owner.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::AlreadyExists);
    let r = store
        .transition_agent(&ctx, "p", Transition::Decommission, Some("done".into()))
        .await
        .unwrap();
    assert_eq!(r.cascaded, vec![child.id.clone()]);
    let page = store
        .list_agents(
            "default",
            AgentFilter {
                state: Some("decommissioned".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let audit = store
        .list_audit("default", AuditFilter::default())
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.action == "agent.decommission" && e.resource_id == child.id)
    );
}

/// The identities a decision reads follow every committed change at once,
/// whether or not the backend caches them, and the decision path's own
/// writes do not disturb them.
async fn identities_follow_changes(store: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    let rules = InventoryRules::default();
    store
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    for name in ["reader", "writer"] {
        store
            .create_role(
                &ctx,
                CreateRole {
                    name: name.into(),
                    description: String::new(),
                    writes: false,
                },
            )
            .await
            .unwrap();
    }
    let human = store
        .create_human(
            &ctx,
            CreateHuman {
                external_id: None,
                email: "bo@example.com".into(),
                display_name: "Bo".into(),
                teams: vec![],
                roles: vec![],
            },
        )
        .await
        .unwrap();
    let agent = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "a".into(),
                owner: human.email.clone(),
                roles: Some(vec!["reader".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let read = || async { store.agent_context("default", "a").await.unwrap().unwrap() };
    assert_eq!(read().await.agent.roles, vec!["reader".to_string()]);
    assert_eq!(read().await.agent.state, AgentState::Active);

    // A decision's own writes change no identity.
    store
        .write_batch(vec![steward_store::quotas::Write::Audit(Box::new((
            ctx.clone(),
            steward_core::AuditEvent {
                action: "decision.allow".into(),
                resource_type: "repo".into(),
                resource_id: "r".into(),
                before: None,
                after: None,
                reason: None,
            },
        )))])
        .await
        .unwrap();
    assert_eq!(read().await, read().await);

    store
        .change_agent(
            &ctx,
            &rules,
            &agent.id,
            UpdateAgent {
                roles: Some(vec!["writer".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(read().await.agent.roles, vec!["writer".to_string()]);
    store
        .transition_agent(&ctx, "a", Transition::Suspend, Some("test".into()))
        .await
        .unwrap();
    assert_eq!(read().await.agent.state, AgentState::Suspended);
    // By id as well as by name.
    let by_id = store
        .agent_context("default", &agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.agent.state, AgentState::Suspended);

    let human_status = || async {
        store
            .human_context("default", "bo@example.com")
            .await
            .unwrap()
            .unwrap()
            .0
            .status
    };
    assert_eq!(human_status().await, HumanStatus::Active);
    assert_eq!(human_status().await, HumanStatus::Active);
    store
        .deactivate_human(&ctx, "bo@example.com", None)
        .await
        .unwrap();
    assert_eq!(human_status().await, HumanStatus::Deactivated);
    assert_eq!(read().await.owner_email, "bo@example.com");

    // Even a change made with raw SQL is seen.
    store
        .execute_raw("UPDATE humans SET email = 'bo2@example.com'")
        .await
        .unwrap();
    assert_eq!(read().await.owner_email, "bo2@example.com");
}

/// `n` audit records (a decision each) whose resource ids are `tag0`,
/// `tag1`, ...
fn records(tag: &str, n: usize) -> Vec<steward_store::quotas::Write> {
    let ctx = ChangeContext::system("default", "test", chrono::Utc::now());
    (0..n)
        .map(|i| {
            steward_store::quotas::Write::Audit(Box::new((
                ctx.clone(),
                steward_core::AuditEvent {
                    action: "decision.allow".into(),
                    resource_type: "repo".into(),
                    resource_id: format!("{tag}{i}"),
                    before: None,
                    after: Some(serde_json::json!({"i": i})),
                    reason: None,
                },
            )))
        })
        .collect()
}

/// Write `n` records as one batch; their sequence numbers.
async fn write_records(store: &Store, tag: &str, n: usize) -> Vec<i64> {
    let written = store.write_batch(records(tag, n)).await.unwrap();
    written
        .iter()
        .map(|w| match w {
            steward_store::quotas::Written::Audited(seq) => *seq,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The log after `before`: consecutive sequence numbers, every stored row
/// hashing to its leaf; the resource ids in order.
async fn log_after(store: &Store, before: i64) -> Vec<String> {
    let page = store.audit_page_all(before, 1000).await.unwrap();
    assert_eq!(
        store.audit_size().await.unwrap(),
        before + page.len() as i64
    );
    page.iter()
        .enumerate()
        .map(|(i, (entry, leaf, _))| {
            assert_eq!(entry.seq, before + 1 + i as i64);
            let hashed = steward_audit::leaf_hash(&steward_store::audit::canonical_entry(entry));
            assert_eq!(leaf.as_deref(), Some(hashed.to_hex().as_str()));
            entry.resource_id.clone()
        })
        .collect()
}

fn ids(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i}")).collect()
}

/// A group commit of many records: consecutive sequence numbers in the
/// order given, every stored row hashing to its leaf, in however many
/// statements the batch is cut into.
async fn a_batch_lands_in_order(store: &Store) {
    let before = store.audit_size().await.unwrap();
    let seqs = write_records(store, "r", 45).await;
    assert_eq!(seqs, (before + 1..=before + 45).collect::<Vec<_>>());
    assert_eq!(log_after(store, before).await, ids("r", 45));
}

/// Small batches (on SQLite, one round trip each, numbered from the head
/// this store last wrote) between other writers: an audited change in this
/// store, and another store on the same database appending behind its
/// back. Nothing collides, nothing is lost, the log has no gaps.
async fn small_batches_between_other_writers(store: &Store, other: &Store) {
    let before = store.audit_size().await.unwrap();
    let ctx = ChangeContext::system("default", "test", chrono::Utc::now());
    assert_eq!(
        write_records(store, "a", 3).await,
        vec![before + 1, before + 2, before + 3]
    );
    store.place_hold(&ctx, "an audited change").await.unwrap();
    assert_eq!(
        write_records(store, "b", 2).await,
        vec![before + 5, before + 6]
    );
    assert_eq!(
        write_records(other, "c", 2).await,
        vec![before + 7, before + 8]
    );
    let d = write_records(store, "d", 4).await;
    assert_eq!(d, (before + 9..=before + 12).collect::<Vec<_>>());
    assert_eq!(write_records(store, "e", 1).await, vec![before + 13]);
    let logged = log_after(store, before).await;
    let mut expected = ids("a", 3);
    expected.push(logged[3].clone());
    for (tag, n) in [("b", 2), ("c", 2), ("d", 4), ("e", 1)] {
        expected.extend(ids(tag, n));
    }
    assert_eq!(logged, expected);
}

#[tokio::test]
async fn small_batches_between_other_writers_on_sqlite() {
    let (store, dir) = sqlite().await;
    let other = Store::open(&sqlite_url(&dir)).await.unwrap();
    small_batches_between_other_writers(&store, &other).await;
}

#[tokio::test]
async fn small_batches_between_other_writers_on_postgres() {
    let store = postgres().await;
    small_batches_between_other_writers(&store, &store.clone()).await;
}

/// A transaction dropped before it ends changes nothing and does not keep
/// the next writer waiting; a closed store refuses writes, loudly.
async fn unfinished_transactions_change_nothing(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    sqlx::query("INSERT INTO settings (key, value) VALUES ('left', 'open')")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let tx = store.begin().await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        store
            .setting_or_init("left", || "later".into())
            .await
            .unwrap(),
        "later"
    );
    let before = store.audit_size().await.unwrap();
    assert_eq!(
        write_records(store, "after", 2).await,
        vec![before + 1, before + 2]
    );
    store.close().await;
    let refused = store
        .setting_or_init("closed", || "no".into())
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::StoreUnavailable, "{refused:?}");
}

/// SQLite's write-ahead log is checkpointed and restarted beside the
/// writer: under steady single-record commits (several pages each) the log
/// file stays near the restart threshold instead of growing with every
/// commit, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_stays_bounded_on_sqlite() {
    let (store, dir) = sqlite().await;
    let before = store.audit_size().await.unwrap();
    let commits = 3000;
    for i in 0..commits {
        write_records(&store, &format!("w{i}-"), 1).await;
    }
    let wal = std::fs::metadata(dir.path().join("s.db-wal"))
        .unwrap()
        .len();
    // 4096 pages of 4 KiB before a restart, plus what is written while the
    // restart waits its turn; without checkpoints this log would hold every
    // commit's pages (about 60 MiB).
    eprintln!("log file: {wal} bytes after {commits} commits");
    assert!(wal < 24 << 20, "the log file grew to {wal} bytes");
    assert_eq!(store.audit_size().await.unwrap(), before + commits);
}

/// Two stores appending to one log (two processes on one SQLite file, two
/// nodes on PostgreSQL): each store's small batches follow the head it last
/// wrote, so the one that did not see the other's records collides with
/// them, writes nothing, and appends under the head's lock instead. The log
/// has no gap, every row hashes to its leaf, and what was written where is
/// in order.
async fn two_writers_share_one_log(url: &str) {
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    let before = a.audit_size().await.unwrap();
    assert_eq!(
        write_records(&a, "a", 2).await,
        vec![before + 1, before + 2]
    );
    assert_eq!(
        write_records(&b, "b", 3).await,
        vec![before + 3, before + 4, before + 5]
    );
    // `a` last wrote the head at `before + 2`.
    assert_eq!(
        write_records(&a, "c", 2).await,
        vec![before + 6, before + 7]
    );
    assert_eq!(write_records(&a, "d", 1).await, vec![before + 8]);
    let sqlite = url.starts_with("sqlite:");
    assert_eq!(a.one_trip_fallbacks(), u64::from(sqlite));
    assert_eq!(b.one_trip_fallbacks(), 0);
    let mut expected = ids("a", 2);
    expected.extend(ids("b", 3));
    expected.extend(ids("c", 2));
    expected.extend(ids("d", 1));
    assert_eq!(log_after(&b, before).await, expected);
}

/// A copy of one backend's migrations up to and including `last`, for a
/// store as an earlier release left it.
fn migrations_up_to(backend: &str, last: &str) -> tempfile::TempDir {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() <= last {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied >= 8, "found {copied} migrations up to {last}");
    dir
}

/// What the release before `decision_record` stored: a tenant and one MCP
/// server, in that release's columns.
const OLD_ROWS: [&str; 2] = [
    "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'T1', 1700000000000)",
    "INSERT INTO mcp_servers (id, tenant_id, name, description, transport, tools, \
     timeout_secs, created_at, updated_at) VALUES ('m1', 't1', 'files', 'old', \
     '{\"type\":\"stdio\",\"command\":\"npx\",\"args\":[\"-y\",\"x\"],\"env\":{}}', \
     '{\"read\":{\"classification\":\"internal\",\"risk\":\"low\",\"cost_estimate\":0}}', \
     7, 1700000000000, 1700000000001)",
];

/// The store that opens an older database applies the migrations it lacks
/// and reads the old rows with the new column's default.
async fn upgraded(store: &Store) {
    let server = store.get_mcp_server("t1", "files").await.unwrap();
    assert_eq!(server.description, "old");
    assert_eq!(server.timeout_secs, 7);
    assert_eq!(server.decision_record, McpDecisionRecord::BeforeCall);
    assert_eq!(server.tools["read"].risk, "low");
    assert!(matches!(server.transport, McpTransport::Stdio { .. }));
    assert_eq!(server.updated_at.timestamp_millis(), 1700000000001);
}

/// A database as the release whose last migration was `last` left it,
/// with `rows` written in that release's columns.
async fn older_database(url: &str, backend: &str, last: &str, rows: &[&str]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let old = migrations_up_to(backend, last);
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for sql in rows {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// The release before `decision_record`.
const BEFORE_DECISION_RECORD: &str = "0008_quotas.sql";

#[tokio::test]
async fn an_older_database_upgrades_keeping_its_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    older_database(
        &format!("{url}?mode=rwc"),
        "sqlite",
        BEFORE_DECISION_RECORD,
        &OLD_ROWS,
    )
    .await;
    upgraded(&Store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn an_older_database_upgrades_keeping_its_rows_on_postgres() {
    let url = postgres_url().await;
    older_database(&url, "postgres", BEFORE_DECISION_RECORD, &OLD_ROWS).await;
    upgraded(&Store::open(&url).await.unwrap()).await;
}

/// An issuer trusted before e-mails had to be marked verified, in that
/// release's columns.
const OLD_ISSUER: [&str; 2] = [
    "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'T1', 1700000000000)",
    "INSERT INTO delegation_issuers (tenant_id, name, issuer, audience, jwks, match_claim, \
     updated_at, require_may_act) VALUES ('t1', 'corp', 'https://login.example.com/', \
     'steward', '{\"keys\":[]}', 'email', 1700000000000, 0)",
];

/// It keeps accepting what it accepted (tokens that do not say whether
/// their address is verified); an issuer put from now on does not.
async fn old_issuers_keep_accepting_unverified_email(store: &Store) {
    let issuers = store.issuers("t1").await.unwrap();
    assert_eq!(issuers.len(), 1);
    assert!(issuers[0].accept_unverified_email);
    assert!(!steward_types::PutIssuer::default().accept_unverified_email);
}

#[tokio::test]
async fn an_older_issuer_keeps_its_behaviour_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    let last = "0021_approvals_decided.sql";
    older_database(&format!("{url}?mode=rwc"), "sqlite", last, &OLD_ISSUER).await;
    old_issuers_keep_accepting_unverified_email(&Store::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn an_older_issuer_keeps_its_behaviour_on_postgres() {
    let url = postgres_url().await;
    let last = "0021_approvals_decided.sql";
    older_database(&url, "postgres", last, &OLD_ISSUER).await;
    old_issuers_keep_accepting_unverified_email(&Store::open(&url).await.unwrap()).await;
}

/// Nodes starting together each offer a generated bootstrap token: exactly
/// one is kept and the others learn theirs was not; a configured token
/// replaces it.
async fn one_bootstrap_token(stores: &[Store]) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    stores[0]
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    let offers = stores.iter().cycle().take(8).enumerate().map(|(i, s)| {
        let (ctx, s) = (ctx.clone(), s.clone());
        async move {
            s.set_bootstrap_token(&ctx, "stwt_x", &format!("hash-{i}"), false)
                .await
                .unwrap()
        }
    });
    let kept = futures_kept(offers).await;
    assert_eq!(kept.iter().filter(|k| **k).count(), 1, "{kept:?}");
    assert!(
        stores[0]
            .set_bootstrap_token(&ctx, "configured", "hash-configured", true)
            .await
            .unwrap()
    );
    assert!(
        !stores[1]
            .set_bootstrap_token(&ctx, "stwt_y", "hash-late", false)
            .await
            .unwrap()
    );
}

async fn futures_kept(
    offers: impl Iterator<Item = impl Future<Output = bool> + Send + 'static>,
) -> Vec<bool> {
    let tasks: Vec<_> = offers.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn one_bootstrap_token_on_sqlite() {
    let (store, _dir) = sqlite().await;
    one_bootstrap_token(&[store.clone(), store]).await;
}

#[tokio::test]
async fn one_bootstrap_token_on_postgres() {
    let store = postgres().await;
    one_bootstrap_token(&[store.clone(), store]).await;
}

/// A name that looks like another record's id (refused today, possible in
/// older data) never makes a lookup by that id find the other record.
async fn ids_beat_names(store: &Store) {
    let ctx = default_tenant(store).await;
    person(store, &ctx, "o@example.com").await;
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        ids.push(public_agent(store, &ctx, name, "o@example.com").await.id);
    }
    // The refusal itself.
    let err = store
        .register_agent(
            &ctx,
            &InventoryRules::default(),
            RegisterAgent {
                name: ids[0].clone(),
                owner: "o@example.com".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        steward_types::ErrorCode::InvalidRequest,
        "{err:?}"
    );
    // Older data: the second agent renamed to the first one's id, behind
    // the rules' back. Whichever row the scan meets first, the id wins.
    store
        .execute_raw(&format!(
            "UPDATE agents SET name = '{}' WHERE id = '{}'",
            ids[0], ids[1]
        ))
        .await
        .unwrap();
    let found = store
        .agent_context("default", &ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.agent.id, ids[0]);
    assert_eq!(found.agent.name, "first");
    assert_eq!(
        store.get_agent("default", &ids[0]).await.unwrap().name,
        "first"
    );
}

/// An agent reassigned while its old owner is being deactivated (the
/// reassignment holds the agent's row; the deactivation listed it before)
/// is not orphaned: it has a new owner.
#[tokio::test]
async fn a_reassigned_agent_is_not_orphaned_by_its_old_owner_leaving_on_postgres() {
    use sqlx::Connection;
    let url = postgres_url().await;
    let store = Store::open(&url).await.unwrap();
    let ctx = default_tenant(&store).await;
    let mut people = Vec::new();
    for email in ["alice@example.com", "bob@example.com"] {
        people.push(person(&store, &ctx, email).await.id);
    }
    let agent = public_agent(&store, &ctx, "moving", "alice@example.com").await;
    // The reassignment, mid-transaction: it holds the agent's row.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("UPDATE agents SET owner_id = $1 WHERE id = $2")
        .bind(&people[1])
        .bind(&agent.id)
        .execute(&mut other)
        .await
        .unwrap();
    let leaving = {
        let store = store.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            store
                .deactivate_human(&ctx, "alice@example.com", Some("left".into()))
                .await
        })
    };
    // Let the deactivation reach the agent's row (if it has not, it reads
    // the reassignment once committed: the outcome is the same).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let left = leaving.await.unwrap().unwrap();
    assert!(left.orphaned_agents.is_empty(), "{left:?}");
    let after = store.get_agent("default", &agent.id).await.unwrap();
    assert_eq!(after.owner_id, people[1]);
    assert!(!after.orphaned);
}

/// A deactivation and a change that locks an agent and then its owner (as
/// a reassignment does) take their locks in the same order: neither waits
/// on the other in a cycle, so PostgreSQL never has to abort one of them.
#[tokio::test]
async fn a_leaver_and_a_change_to_their_agent_do_not_deadlock_on_postgres() {
    use sqlx::Connection;
    let url = postgres_url().await;
    let store = Store::open(&url).await.unwrap();
    let ctx = default_tenant(&store).await;
    let alice = person(&store, &ctx, "alice@example.com").await;
    let agent = public_agent(&store, &ctx, "kept", "alice@example.com").await;
    // The change, mid-transaction: it holds the agent's row.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT id FROM agents WHERE id = $1 FOR UPDATE")
        .bind(&agent.id)
        .execute(&mut other)
        .await
        .unwrap();
    let leaving = {
        let store = store.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            store
                .deactivate_human(&ctx, "alice@example.com", Some("left".into()))
                .await
        })
    };
    // Let the deactivation reach its first wait, then the change takes the
    // owner's row, as a reassignment to the same owner does.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let owner = sqlx::query("SELECT id FROM humans WHERE id = $1 FOR UPDATE")
        .bind(&alice.id)
        .execute(&mut other)
        .await;
    let committed = sqlx::query("COMMIT").execute(&mut other).await;
    let left = leaving.await.unwrap();
    assert!(owner.is_ok(), "the change was aborted: {owner:?}");
    assert!(committed.is_ok(), "{committed:?}");
    let left = left.unwrap();
    assert_eq!(left.orphaned_agents, vec![agent.id.clone()]);
    assert!(
        store
            .get_agent("default", &agent.id)
            .await
            .unwrap()
            .orphaned
    );
}

async fn person(store: &Store, ctx: &ChangeContext, email: &str) -> Human {
    store
        .create_human(
            ctx,
            CreateHuman {
                external_id: None,
                email: email.into(),
                display_name: email.into(),
                teams: vec![],
                roles: vec![],
            },
        )
        .await
        .unwrap()
}

/// A low-risk agent (public data only), active at once.
async fn public_agent(store: &Store, ctx: &ChangeContext, name: &str, owner: &str) -> Agent {
    store
        .register_agent(
            ctx,
            &InventoryRules::default(),
            RegisterAgent {
                name: name.into(),
                owner: owner.into(),
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// A write transaction that reads before it writes waits for SQLite's write
/// lock when another connection holds it (the log's checkpointer does, as
/// it restarts the log) rather than failing with "database is locked":
/// SQLite refuses a reading transaction's upgrade at once, whatever the
/// busy timeout, so the store takes the lock when the transaction begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_a_write_lock_held_elsewhere_on_sqlite() {
    use sqlx::{Connection, Executor};
    let (store, dir) = sqlite().await;
    let ctx = default_tenant(&store).await;
    person(&store, &ctx, "owner@example.com").await;
    let url = sqlite_url(&dir);
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    // Registering reads the owner, then inserts: it asks for the lock
    // while the other connection holds it, and gets it once that ends.
    let registering = tokio::spawn({
        let (store, ctx) = (store.clone(), ctx.clone());
        async move {
            store
                .register_agent(
                    &ctx,
                    &InventoryRules::default(),
                    RegisterAgent {
                        name: "bot".into(),
                        owner: "owner@example.com".into(),
                        classifications: Some(vec!["public".into()]),
                        ..Default::default()
                    },
                )
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    other.execute("COMMIT").await.unwrap();
    let agent = registering.await.unwrap().unwrap();
    assert_eq!(
        store.get_agent("default", "bot").await.unwrap().id,
        agent.id
    );
}

fn policy(id: &str, text: &str) -> steward_store::policies::PolicyChange {
    steward_store::policies::PolicyChange::PutPolicy(PutPolicy {
        id: id.into(),
        description: String::new(),
        owner: String::new(),
        text: text.into(),
    })
}

/// A policy batch is checked (compiled, in the server) before its
/// transaction and not again inside it, unless another change landed in
/// between: then the check runs again on the state the transaction sees.
async fn a_policy_batch_is_checked_once_unless_the_state_moves(store: &Store) {
    use std::sync::Mutex;
    let ctx = default_tenant(store).await;
    // Every call: the policy ids of the state it was shown.
    let seen: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
    let check = |st: &steward_store::policies::PolicyState, _: &[ResourceEntity]| {
        let ids: Vec<String> = st.policies.iter().map(|p| p.id.clone()).collect();
        seen.lock().unwrap().push(ids);
        if st.policies.iter().any(|p| p.text.contains("refused")) {
            return Err(steward_core::Error::invalid("text", "refused by the check"));
        }
        Ok(st
            .policies
            .iter()
            .map(|p| (p.id.clone(), "permit".to_string()))
            .collect())
    };
    let calls = || seen.lock().unwrap().len();

    store
        .change_policies(
            &ctx,
            vec![policy("a", "permit(principal, action, resource);")],
            check,
        )
        .await
        .unwrap();
    assert_eq!(calls(), 1, "an unmoved state is checked once");

    let batch = vec![policy("b", "permit(principal, action, resource);")];
    let mut check_b = check;
    let prechecked = store
        .precheck_policies(&ctx, &batch, &mut check_b)
        .await
        .unwrap();
    assert_eq!(calls(), 2);
    // Another change lands between the check and the transaction.
    store
        .change_policies(
            &ctx,
            vec![policy("c", "permit(principal, action, resource);")],
            check,
        )
        .await
        .unwrap();
    assert_eq!(calls(), 3);
    let mut tx = store.begin().await.unwrap();
    let report = store
        .change_policies_in(&mut tx, &ctx, batch, Some(prechecked), &mut check_b)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(calls(), 4, "a moved state is checked again");
    assert_eq!(seen.lock().unwrap()[3], ["a", "b", "c"]);
    let ids: Vec<String> = report.state.policies.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(report.state.policies.iter().all(|p| p.effect == "permit"));

    // A refused batch is refused by the check before the transaction, once,
    // and changes nothing.
    let epoch = store.policy_epoch("default").await.unwrap();
    let err = store
        .change_policies(&ctx, vec![policy("d", "refused")], check)
        .await
        .unwrap_err();
    assert!(err.message.contains("refused by the check"), "{err:?}");
    assert_eq!(calls(), 5);
    assert_eq!(store.policy_epoch("default").await.unwrap(), epoch);
    assert_eq!(
        store.policy_state("default").await.unwrap().policies.len(),
        3
    );
}

/// A batch that changes a resource type's attributes has its check see the
/// type's stored entities, as they are inside its transaction: one stored
/// after the check before the transaction is seen by the check inside it.
/// A type with stored entities is not deleted, unless the batch deletes
/// them too.
async fn a_type_change_is_checked_against_its_stored_entities(store: &Store) {
    use steward_store::policies::PolicyChange;
    let ctx = default_tenant(store).await;
    let put_type = |level: &str| {
        PolicyChange::PutResourceType(PutResourceType {
            name: "t".into(),
            description: String::new(),
            attributes: [("level".to_string(), level.to_string())].into(),
        })
    };
    // Refuses an entity whose level does not fit the type's; records the
    // entities it was shown.
    let seen = std::sync::Mutex::new(Vec::new());
    let check = |st: &steward_store::policies::PolicyState, entities: &[ResourceEntity]| {
        seen.lock()
            .unwrap()
            .push(entities.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
        let wants_string = st
            .resource_types
            .iter()
            .any(|t| t.attributes.get("level").is_some_and(|l| l == "String"));
        if entities
            .iter()
            .any(|e| e.attributes["level"].is_string() != wants_string)
        {
            return Err(steward_core::Error::invalid(
                "level",
                "refused by the check",
            ));
        }
        Ok(Default::default())
    };
    store
        .change_policies(&ctx, vec![put_type("Long")], check)
        .await
        .unwrap();
    let batch = vec![put_type("String")];
    let mut check_b = check;
    let prechecked = store
        .precheck_policies(&ctx, &batch, &mut check_b)
        .await
        .unwrap();
    let entity = ResourceEntity {
        resource_type: "t".into(),
        id: "e1".into(),
        attributes: [("level".to_string(), serde_json::json!(5))].into(),
    };
    store
        .change_policies(&ctx, vec![PolicyChange::PutEntity(entity)], check)
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let err = store
        .change_policies_in(&mut tx, &ctx, batch, Some(prechecked), &mut check_b)
        .await
        .unwrap_err();
    drop(tx);
    assert!(err.message.contains("refused by the check"), "{err:?}");
    assert_eq!(seen.lock().unwrap().last().unwrap(), &["e1"]);
    let state = store.policy_state("default").await.unwrap();
    assert_eq!(state.resource_types[0].attributes["level"], "Long");

    let delete_type = PolicyChange::DeleteResourceType("t".into());
    let err = store
        .change_policies(&ctx, vec![delete_type.clone()], check)
        .await
        .unwrap_err();
    assert!(err.message.contains("t::e1"), "{err:?}");
    assert_eq!(
        store
            .policy_state("default")
            .await
            .unwrap()
            .resource_types
            .len(),
        1
    );
    store
        .change_policies(
            &ctx,
            vec![
                PolicyChange::DeleteEntity("t".into(), "e1".into()),
                delete_type,
            ],
            check,
        )
        .await
        .unwrap();
    assert!(
        store
            .policy_state("default")
            .await
            .unwrap()
            .resource_types
            .is_empty()
    );
}

/// Queries that run on every view or every spawn use an index for what
/// grows: the newest entries of a tenant, with or without an action (the
/// dashboard's recent denials, `steward audit --last N`), are read from the
/// end of an index, never by sorting the tenant's whole log; a spawn counts
/// its parent's live children without reading every child it ever had; the
/// expiry sweep reads live agents only.
#[tokio::test]
async fn growing_tables_are_read_through_indexes_on_sqlite() {
    use sqlx::{Connection, Row};
    let (_store, dir) = sqlite().await;
    let url = sqlite_url(&dir);
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut plan = async |query: &str, args: &[&str]| -> Vec<String> {
        let sql = format!("EXPLAIN QUERY PLAN {query}");
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        q.fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    };
    for query in [
        "SELECT seq FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET 99",
        "SELECT seq FROM audit_log WHERE tenant_id = $1 AND action = $2 ORDER BY seq DESC LIMIT 1 OFFSET 9",
        "SELECT seq FROM audit_log WHERE tenant_id = $1 AND substr(action, 1, 9) = $2 ORDER BY seq DESC LIMIT 1 OFFSET 9",
    ] {
        let steps = plan(query, &["default", "decision.deny"]).await;
        assert!(
            steps.iter().all(|step| !step.contains("TEMP B-TREE"))
                && steps.iter().any(|s| s.contains("INDEX")),
            "{query}: {steps:?}"
        );
    }
    // An agent's or a human's entries are read through their index in
    // order, a page at a time, whatever the length of the log.
    let by_subject = steward_store::audit::BY_SUBJECT;
    for query in [
        format!(
            "SELECT audit_log.* {by_subject} AND action = $3 AND audit_subjects.entry > 7 \
             ORDER BY audit_subjects.entry LIMIT 51"
        ),
        format!("SELECT seq {by_subject} ORDER BY audit_subjects.entry DESC LIMIT 1 OFFSET 9"),
    ] {
        let steps = plan(&query, &["agt_x", "default", "decision.deny"]).await;
        assert!(
            steps.iter().all(|s| !s.contains("TEMP B-TREE"))
                && steps[0].contains("INDEX audit_subjects_subject (subject_id=?")
                && steps[1].starts_with("SEARCH audit_log USING")
                && (steps[1].contains("seq=?") || steps[1].contains("rowid=?")),
            "{query}: {steps:?}"
        );
    }
    // A spawn counts its parent's live children from the index alone, not
    // by reading every child the parent ever had.
    let steps = plan(
        "SELECT COUNT(*) FROM agents WHERE parent_id = $1 \
         AND state IN ('proposed', 'pending_approval', 'active', 'suspended')",
        &["parent"],
    )
    .await;
    assert!(
        steps
            .iter()
            .any(|s| s.contains("COVERING INDEX agents_parent_state (parent_id=? AND state=?)")),
        "{steps:?}"
    );
    // A decommission finds the tree under an agent through the parent
    // index at every level, never by walking the tenant's agents.
    let steps = plan(steward_store::agents::DESCENDANTS, &["default", "root"]).await;
    assert!(
        steps.iter().all(|s| !s.starts_with("SCAN agents")
            && !s.starts_with("SCAN a ")
            && !s.contains("agents_owner"))
            && steps
                .iter()
                .filter(|s| s.contains("USING INDEX agents_parent_state (parent_id=?)"))
                .count()
                == 2,
        "{steps:?}"
    );
    // The expiry sweep reads live agents only, not every agent that ever
    // expired.
    let steps = plan(
        "SELECT tenant_id, id FROM agents WHERE expires_at IS NOT NULL \
         AND expires_at <= $1 AND state IN ('proposed', 'pending_approval', 'active', 'suspended') \
         ORDER BY id LIMIT 1000",
        &["0"],
    )
    .await;
    assert!(
        steps
            .iter()
            .any(|s| s.contains("USING INDEX agents_expiry_live")),
        "{steps:?}"
    );
}

/// A key's use is noted, not written, in the request that makes it: this
/// node's reads show it at once, the store writes it beside the requests
/// (here: when asked, and when it closes), and a time never goes back.
async fn key_uses_are_written_beside_requests(url: &str) {
    let store = Store::open(url).await.unwrap();
    let ctx = default_tenant(&store).await;
    person(&store, &ctx, "ka@example.com").await;
    public_agent(&store, &ctx, "k", "ka@example.com").await;
    let hash = |s: &str| format!("h-{s}");
    let created = store
        .create_key(&ctx, "k", CreateKey::default(), hash)
        .await
        .unwrap();
    let hashed = hash(&created.secret);
    let stored = || async {
        let key = store.find_key(&hashed).await.unwrap().unwrap().key;
        key.last_used_at.map(|t| t.timestamp_millis())
    };
    let shown = || async {
        let keys = store
            .list_keys("default", "k", PageQuery::default())
            .await
            .unwrap();
        let agent = store.get_agent("default", "k").await.unwrap();
        let listed = store
            .list_agents("default", AgentFilter::default())
            .await
            .unwrap();
        assert_eq!(listed.items[0].last_seen_at, agent.last_seen_at);
        (
            keys.items[0].last_used_at.map(|t| t.timestamp_millis()),
            agent.last_seen_at.map(|t| t.timestamp_millis()),
        )
    };
    let t1 = Utc::now();
    let found = store.find_agent_key(&hashed).await.unwrap().unwrap().0;
    store.touch_key(&hashed, &found.key, t1);
    assert_eq!(stored().await, None, "written in the request");
    let t1 = Some(t1.timestamp_millis());
    assert_eq!(shown().await, (t1, t1));

    // Within the minute nothing more is noted.
    store.touch_key(
        &hashed,
        &found.key,
        Utc::now() + chrono::Duration::seconds(30),
    );
    store.flush_key_uses().await.unwrap();
    assert_eq!(stored().await, t1);
    assert_eq!(shown().await, (t1, t1));

    // An older use (noted by a request that read the key before) does not
    // move the time back.
    store.touch_key(&hashed, &found.key, Utc::now() - chrono::Duration::hours(1));
    store.flush_key_uses().await.unwrap();
    assert_eq!(stored().await, t1);

    // Closing writes what is noted.
    let t2 = Utc::now() + chrono::Duration::minutes(2);
    let found = store.find_key(&hashed).await.unwrap().unwrap();
    store.touch_key(&hashed, &found.key, t2);
    store.close().await;
    let store = Store::open(url).await.unwrap();
    let key = store.find_key(&hashed).await.unwrap().unwrap().key;
    let t2 = Some(t2.timestamp_millis());
    assert_eq!(key.last_used_at.map(|t| t.timestamp_millis()), t2);
    let agent = store.get_agent("default", "k").await.unwrap();
    assert_eq!(agent.last_seen_at.map(|t| t.timestamp_millis()), t2);
}

/// A leaver's agents and tokens, and a decommissioned tree, each leave one
/// record per thing changed, appended together: gapless, in order, each
/// hashed as the verifier hashes it.
async fn bulk_changes_record_each_item(store: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    let rules = InventoryRules::default();
    store
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    let owner = person(store, &ctx, "lee@example.com").await;
    let agent = |name: &'static str, parent: Option<&'static str>| {
        let (store, ctx, rules) = (store.clone(), ctx.clone(), rules.clone());
        async move {
            store
                .register_agent(
                    &ctx,
                    &rules,
                    RegisterAgent {
                        name: name.into(),
                        owner: "lee@example.com".into(),
                        parent: parent.map(Into::into),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .id
        }
    };
    let root = agent("root", None).await;
    let c2 = agent("c2", Some("root")).await;
    let c1 = agent("c1", Some("root")).await;
    let g = agent("g", Some("c2")).await;
    let gone = agent("gone", None).await;
    store
        .transition_agent(&ctx, "gone", Transition::Decommission, Some("x".into()))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for name in ["t1", "t2"] {
        let t = store
            .create_token(
                &ctx,
                CreateToken {
                    name: name.into(),
                    role: TokenRole::Admin,
                    human: Some(owner.id.clone()),
                    expires_at: None,
                    tenant: None,
                },
                |s| format!("h-{s}"),
            )
            .await
            .unwrap();
        tokens.push(t.token.id);
    }
    tokens.sort();

    let size = store.audit_size().await.unwrap();
    let left = store
        .deactivate_human(&ctx, "lee@example.com", Some("left".into()))
        .await
        .unwrap();
    let mut live = vec![root.clone(), c1.clone(), c2.clone(), g.clone()];
    live.sort();
    assert_eq!(left.orphaned_agents, live);
    assert!(!left.orphaned_agents.contains(&gone));
    assert_eq!(left.revoked_tokens, tokens);
    let back = store
        .reactivate_human(&ctx, "lee@example.com", None)
        .await
        .unwrap();
    assert_eq!(back.orphaned_agents, live);
    let decommissioned = store
        .transition_agent(&ctx, "root", Transition::Decommission, Some("done".into()))
        .await
        .unwrap();
    // Shallowest first, then by id.
    let mut children = vec![c1.clone(), c2.clone()];
    children.sort();
    children.push(g.clone());
    assert_eq!(decommissioned.cascaded, children);

    let entries = store.audit_page_all(size, 1000).await.unwrap();
    let said: Vec<(String, String)> = entries
        .iter()
        .map(|(e, _, _)| (e.action.clone(), e.resource_id.clone()))
        .collect();
    let mut expected: Vec<(String, String)> = Vec::new();
    expected.extend(
        live.iter()
            .map(|id| ("agent.orphan".to_string(), id.clone())),
    );
    expected.extend(
        tokens
            .iter()
            .map(|id| ("token.revoke".to_string(), id.clone())),
    );
    expected.push(("human.deactivate".into(), owner.id.clone()));
    expected.extend(
        live.iter()
            .map(|id| ("agent.unorphan".to_string(), id.clone())),
    );
    expected.push(("human.reactivate".into(), owner.id.clone()));
    expected.push(("agent.decommission".into(), root.clone()));
    expected.extend(
        children
            .iter()
            .map(|id| ("agent.decommission".to_string(), id.clone())),
    );
    assert_eq!(said, expected);
    for (i, (entry, leaf, _)) in entries.iter().enumerate() {
        assert_eq!(entry.seq, size + 1 + i as i64);
        let hashed = steward_audit::leaf_hash(&steward_store::audit::canonical_entry(entry));
        assert_eq!(leaf.as_deref(), Some(hashed.to_hex().as_str()));
    }
    assert_eq!(
        store.audit_size().await.unwrap(),
        size + expected.len() as i64
    );
}

/// A retention pruning is recorded before it empties anything, then empties
/// the log a stretch at a time from the oldest payload, up to the first
/// stretch holding nothing past its cut-off; the next one starts where the
/// payloads start and finds nothing.
async fn pruning_goes_a_stretch_at_a_time(store: &Store) {
    let ctx = default_tenant(store).await;
    let old = *write_records(store, "old", 10).await.last().unwrap();
    store
        .execute_raw(&format!(
            "UPDATE audit_log SET time = time - 172800000 WHERE seq <= {old}"
        ))
        .await
        .unwrap();
    write_records(store, "new", 7).await;
    let size = store.audit_size().await.unwrap();
    let cutoff = Utc::now() - chrono::Duration::days(1);
    let pruned = store.prune_audit_by(&ctx, cutoff, 3).await.unwrap();
    assert_eq!(pruned, old as u64);
    let entries = store.audit_page_all(0, 1000).await.unwrap();
    assert_eq!(entries.len() as i64, size + 1);
    for (entry, leaf, emptied) in &entries {
        assert!(leaf.is_some());
        if entry.seq <= old {
            assert!(*emptied && entry.after.is_none(), "{entry:?}");
        } else {
            assert!(!*emptied && entry.after.is_some(), "{entry:?}");
        }
    }
    let (record, _, _) = entries.last().unwrap();
    assert_eq!(record.action, "audit.prune");
    assert_eq!(
        record.after.as_ref().unwrap()["held_tenants"],
        serde_json::json!([])
    );
    let prunings = store.prune_records().await.unwrap();
    assert_eq!(prunings.len(), 1);
    assert_eq!(
        (prunings[0].seq, prunings[0].cutoff),
        (size + 1, cutoff.timestamp_millis())
    );
    // Again: nothing left to empty, and the first record keeps its payload.
    assert_eq!(store.prune_audit_by(&ctx, cutoff, 3).await.unwrap(), 0);
    assert_eq!(store.prune_records().await.unwrap().len(), 2);
}

/// Decisions about `agent`, `n` of them, the odd ones acting for `human`.
fn decisions_about(agent: &Agent, human: &Human, n: usize) -> Vec<steward_store::quotas::Write> {
    let ctx = ChangeContext::system("default", "test", chrono::Utc::now());
    (0..n)
        .map(|i| {
            let mut chain = vec![serde_json::json!({"kind": "agent", "id": agent.id})];
            if i % 2 == 1 {
                chain.push(serde_json::json!({"kind": "human", "id": human.id}));
            }
            steward_store::quotas::Write::Audit(Box::new((
                ctx.clone(),
                steward_core::AuditEvent {
                    action: "decision.allow".into(),
                    resource_type: "repo".into(),
                    resource_id: format!("r{i}"),
                    before: None,
                    after: Some(serde_json::json!({"principal": {"id": agent.id}, "chain": chain})),
                    reason: None,
                },
            )))
        })
        .collect()
}

/// The sequence numbers the filter finds, a page of 7 at a time.
async fn found(store: &Store, filter: AuditFilter) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(
                "default",
                AuditFilter {
                    cursor,
                    limit: Some(7),
                    ..filter.clone()
                },
            )
            .await
            .unwrap();
        seqs.extend(page.items.iter().map(|e| e.seq));
        cursor = page.next_cursor;
        if cursor.is_none() {
            return seqs;
        }
    }
}

/// Who each entry is about is indexed as it is written (in small batches
/// and large), for entries written before the index at the next open, and
/// forgotten with the payload when a pruning empties the entry.
async fn who_an_entry_is_about_is_indexed(url: &str) {
    let store = Store::open(url).await.unwrap();
    let ctx = default_tenant(&store).await;
    let bob = person(&store, &ctx, "bob@example.com").await;
    let bot = public_agent(&store, &ctx, "bot", "bob@example.com").await;
    let other = public_agent(&store, &ctx, "other", "bob@example.com").await;
    // (agent, acting for bob, sequence number) of each decision.
    let mut decided = Vec::new();
    for (agent, n) in [(&bot, 3), (&other, 2), (&bot, 40)] {
        let written = store
            .write_batch(decisions_about(agent, &bob, n))
            .await
            .unwrap();
        for (i, w) in written.into_iter().enumerate() {
            match w {
                steward_store::quotas::Written::Audited(seq) => {
                    decided.push((agent.id.clone(), i % 2 == 1, seq))
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let first = |action: &str, id: &str| {
        let filter = AuditFilter {
            action: Some(action.into()),
            resource_id: Some(id.into()),
            ..Default::default()
        };
        let store = &store;
        async move { found(store, filter).await[0] }
    };
    let registered = first("agent.register", &bot.id).await;
    let created = first("human.create", &bob.id).await;
    let pick = |keep: &dyn Fn(&str, bool) -> bool| -> Vec<i64> {
        decided
            .iter()
            .filter(|(a, bob, _)| keep(a, *bob))
            .map(|(_, _, s)| *s)
            .collect()
    };
    let filters = [
        AuditFilter {
            agent: Some(bot.id.clone()),
            ..Default::default()
        },
        AuditFilter {
            human: Some("bob@example.com".into()),
            ..Default::default()
        },
        AuditFilter {
            agent: Some("bot".into()),
            human: Some(bob.id.clone()),
            ..Default::default()
        },
        AuditFilter {
            agent: Some("bot".into()),
            last: Some(5),
            ..Default::default()
        },
    ];
    // The agent: registered, then decided about. The human: created, then
    // acted for (the agents' registrations only name bob as their owner).
    // Both: the bot acting for bob. The last five about the bot.
    let about_bot: Vec<i64> = [registered]
        .into_iter()
        .chain(pick(&|a, _| a == bot.id))
        .collect();
    let answers = vec![
        about_bot.clone(),
        [created]
            .into_iter()
            .chain(pick(&|_, for_bob| for_bob))
            .collect(),
        pick(&|a, for_bob| a == bot.id && for_bob),
        about_bot[about_bot.len() - 5..].to_vec(),
    ];
    // The small batches went in one trip each, index rows included.
    assert_eq!(store.one_trip_fallbacks(), 0);
    assert_eq!(answers[0].len(), 44);
    assert_eq!(answers[2].len(), 21);
    for (filter, answer) in filters.iter().zip(&answers) {
        assert_eq!(&found(&store, filter.clone()).await, answer, "{filter:?}");
    }

    // Forget the index as if the entries were written before it, and
    // alter one entry about nobody the filters name so that it cannot be
    // read: the backfill passes over it rather than stopping the start.
    let other_registered = first("agent.register", &other.id).await;
    store
        .execute_raw(&format!(
            "DELETE FROM audit_subjects; INSERT INTO audit_subjects_backfill (id, next, up_to) \
             SELECT 1, 1, size FROM audit_head WHERE id = 1; \
             UPDATE audit_log SET after = '{{not json' WHERE seq = {other_registered}"
        ))
        .await
        .unwrap();
    assert!(found(&store, filters[0].clone()).await.is_empty());
    drop(store);
    // The start backfills: every filter answers as before, and the index
    // the backfill dropped is back.
    let reopened = |url: &str| {
        let (url, filters, answers) = (url.to_string(), filters.clone(), answers.clone());
        async move {
            let store = Store::open(&url).await.unwrap();
            for (filter, answer) in filters.iter().zip(&answers) {
                assert_eq!(&found(&store, filter.clone()).await, answer, "{filter:?}");
            }
            let again = store
                .execute_raw(
                    "CREATE INDEX audit_subjects_subject ON audit_subjects (subject_id, entry)",
                )
                .await;
            assert!(again.is_err(), "the index by identity is missing");
            store
        }
    };
    let store = reopened(url).await;

    // A start stopped half-way through the backfill (the index dropped,
    // the first entries indexed, the marker past them) goes on from there.
    let half = decided[20].2;
    store
        .execute_raw(&format!(
            "DROP INDEX audit_subjects_subject; DELETE FROM audit_subjects WHERE entry >= {half}; \
             INSERT INTO audit_subjects_backfill (id, next, up_to) SELECT 1, {half}, size FROM audit_head WHERE id = 1"
        ))
        .await
        .unwrap();
    drop(store);
    let store = reopened(url).await;

    // A pruning empties them all: nobody is named any more.
    let later = Utc::now() + chrono::Duration::seconds(1);
    store.prune_audit_by(&ctx, later, 10).await.unwrap();
    for filter in filters {
        assert_eq!(found(&store, filter).await, Vec::<i64>::new());
    }
}

/// Two nodes closing the same due campaign at once: one closes it, and
/// each overdue agent is suspended once, with one record; an owner's
/// attestation that landed first stands.
async fn a_campaign_closes_once_across_nodes(a: &Store, b: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    a.ensure_tenant(&ctx, "default", "Default").await.unwrap();
    person(a, &ctx, "owner@example.com").await;
    for i in 0..40 {
        public_agent(a, &ctx, &format!("bot-{i}"), "owner@example.com").await;
    }
    let campaign = a
        .start_campaign(
            &ctx,
            &StartCampaign {
                name: "q4".into(),
                on_overdue: Some(OnOverdue::Suspend),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(campaign.counts.total, 40);
    let owner = a.get_human("default", "owner@example.com").await.unwrap();
    a.attest(
        &ctx,
        Some(&owner.id),
        false,
        "q4",
        "bot-7",
        &Attest {
            decision: "keep".into(),
            note: None,
        },
    )
    .await
    .unwrap();
    // Each node's answer, not the sweep's (which logs an error and goes
    // on): one closes it, the other finds it closed, neither fails.
    let later = ChangeContext::system("default", "recertification", Utc::now());
    let (x, y) = tokio::join!(
        a.close_campaign(&later, &campaign.id),
        b.close_campaign(&later, &campaign.id)
    );
    let closed: Vec<Campaign> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert_eq!((closed[0].counts.kept, closed[0].counts.overdue), (1, 39));
    let suspensions = a
        .list_audit(
            "default",
            AuditFilter {
                action: Some("agent.suspend".into()),
                limit: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    let mut suspended: Vec<&str> = suspensions.iter().map(|e| e.resource_id.as_str()).collect();
    suspended.sort_unstable();
    suspended.dedup();
    assert_eq!((suspensions.len(), suspended.len()), (39, 39));
    assert_eq!(
        a.get_agent("default", "bot-7").await.unwrap().state,
        AgentState::Active
    );
    assert_eq!(
        b.get_agent("default", "bot-8").await.unwrap().state,
        AgentState::Suspended
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_closes_once_across_nodes_on_sqlite() {
    let (a, dir) = sqlite().await;
    let b = Store::open(&sqlite_url(&dir)).await.unwrap();
    a_campaign_closes_once_across_nodes(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_closes_once_across_nodes_on_postgres() {
    let url = postgres_url().await;
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    a_campaign_closes_once_across_nodes(&a, &b).await;
}

/// A dashboard session signed out on one node is ended on every node
/// sharing the store, read by its primary key; its id goes once the
/// session would have expired anyway.
async fn a_dashboard_sign_out_holds_on_every_node(url: &str) {
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    let now = Utc::now();
    let hours = |h| now + chrono::Duration::hours(h);
    assert!(!b.dashboard_session_ended("s1").await.unwrap());
    a.end_dashboard_session("s1", hours(8), now).await.unwrap();
    a.end_dashboard_session("s1", hours(8), now).await.unwrap();
    a.end_dashboard_session("s0", hours(1), now).await.unwrap();
    for node in [&a, &b] {
        assert!(node.dashboard_session_ended("s1").await.unwrap());
        assert!(node.dashboard_session_ended("s0").await.unwrap());
        assert!(!node.dashboard_session_ended("s2").await.unwrap());
    }
    // Two hours on, s0 would have expired: the next sign-out prunes it.
    b.end_dashboard_session("s2", hours(10), hours(2))
        .await
        .unwrap();
    assert!(!a.dashboard_session_ended("s0").await.unwrap());
    assert!(a.dashboard_session_ended("s1").await.unwrap());
    assert!(a.dashboard_session_ended("s2").await.unwrap());
    if url.starts_with("sqlite:") {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            steward_store::dashboard_sessions::ENDED
        );
        let steps: Vec<String> = sqlx::query(&sql)
            .bind("s1")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        assert!(
            steps.len() == 1 && steps[0].contains("INDEX") && steps[0].contains("(id=?)"),
            "{steps:?}"
        );
    }
}

/// Each test twice: on SQLite in a temporary folder and on PostgreSQL in a
/// fresh schema (`sqlite::name`, `postgres::name`), given the store or, for
/// those under `url`, its URL.
macro_rules! on_both_stores {
    (store: [$($s:ident),* $(,)?], url: [$($u:ident),* $(,)?]) => {
        mod sqlite {
            $( #[tokio::test]
               async fn $s() { let (store, _dir) = super::sqlite().await; super::$s(&store).await } )*
            $( #[tokio::test]
               async fn $u() { let dir = tempfile::tempdir().unwrap(); super::$u(&super::sqlite_url(&dir)).await } )*
        }
        mod postgres {
            $( #[tokio::test]
               async fn $s() { super::$s(&super::postgres().await).await } )*
            $( #[tokio::test]
               async fn $u() { super::$u(&super::postgres_url().await).await } )*
        }
    };
}

on_both_stores!(
    store: [
        scenario,
        identities_follow_changes,
        unfinished_transactions_change_nothing,
        a_batch_lands_in_order,
        ids_beat_names,
        a_policy_batch_is_checked_once_unless_the_state_moves,
        a_type_change_is_checked_against_its_stored_entities,
        bulk_changes_record_each_item,
        pruning_goes_a_stretch_at_a_time,
    ],
    url: [
        key_uses_are_written_beside_requests,
        who_an_entry_is_about_is_indexed,
        two_writers_share_one_log,
        a_dashboard_sign_out_holds_on_every_node,
    ]
);
