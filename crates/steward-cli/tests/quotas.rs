//! Two `steward serve` processes on one PostgreSQL database share a quota:
//! a limit of 100 allows exactly 100 decisions across both, not 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use steward_client::Client;
use steward_testkit::callers::{self, call};
use steward_testkit::{Backend, TempStore};
use steward_types::*;
use support::serve_on;

const TOKEN: &str = "stwt_two-process-quota-test-token";

/// Decide on `node` until `done` holds for the answer (bounded).
async fn until(node: &Client, done: impl Fn(&DecisionResponse) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = node.decide(&call("bot")).await.unwrap();
        if done(&r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the other node never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_one_limit() {
    let store = TempStore::new(Backend::Postgres)
        .await
        .expect("PostgreSQL is running");
    let dir = tempfile::tempdir().unwrap();
    let a = serve_on(dir.path(), Some(&store.url), Some(TOKEN));
    let b = serve_on(dir.path(), Some(&store.url), Some(TOKEN));
    let (ca, cb) = (
        Client::new(&a.url, Some(TOKEN.into())),
        Client::new(&b.url, Some(TOKEN.into())),
    );
    callers::setup(&ca, "bot").await.unwrap();
    // The policy reaches the second process's engine within a second or so.
    until(&cb, |r| r.decision == Decision::Allow).await;
    ca.put_quota(&PutQuota {
        name: "hundred".into(),
        scope: Some(QuotaScope::Agent),
        subject: Some("bot".into()),
        metric: "requests".into(),
        window: "day".into(),
        limit: 100.0,
        ..Default::default()
    })
    .await
    .unwrap();
    // So does the rule: wait until the second process charges it.
    until(&cb, |r| r.quota.is_some() && r.decision == Decision::Allow).await;
    let mut allowed = 1; // the decision that showed the rule charged

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..600 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.spawn(
            async move { c.decide(&call("bot")).await.unwrap().decision == Decision::Allow },
        );
    }
    while let Some(ok) = tasks.join_next().await {
        allowed += usize::from(ok.unwrap());
    }
    let usage = ca
        .usage(&UsageQuery {
            agent: Some("bot".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    println!(
        "two processes: {allowed} decisions allowed, usage {} of 100",
        usage[0].status.used
    );
    assert_eq!(usage[0].status.used, 100.0);
    assert_eq!(
        allowed, 100,
        "exactly the limit across both processes, never the limit per process"
    );
    drop((a, b));
    store.remove().await.unwrap();
}
