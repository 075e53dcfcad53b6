//! The audit log on the store: durable appends per second with group commit
//! (many concurrent producers, as decisions are), the latency one durable
//! append adds to a decision (sequential, one at a time), and the rate of
//! online verification (read, re-encode, re-hash, check checkpoints).
//!
//! cargo bench -p steward-testkit --bench audit
//! (STEWARD_BENCH_ENTRIES changes the number of appends, default 100000.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_core::{AuditEvent, ChangeContext};
use steward_server::audit_log::AuditLog;
use steward_store::Store;
use steward_testkit::{Backend, TempStore};

fn event(i: usize) -> (ChangeContext, AuditEvent) {
    let mut ctx = ChangeContext::system("default", "bench", chrono::Utc::now());
    ctx.request_id = Some(format!("req-{i}"));
    // A thousand agents, each acting for one of a hundred people: two
    // identities for the log's index of who each entry is about.
    let agent = format!("agt_{:032x}", i % 1000);
    let human = format!("hum_{:032x}", i % 100);
    let after = serde_json::json!({
        "decision_id": format!("dec_{i:032}"), "decision": "allow", "action": "read",
        "principal": {"kind": "agent", "id": agent, "name": "bench-bot"},
        "chain": [{"kind": "agent", "id": agent}, {"kind": "human", "id": human}],
        "resource": {"type": "repo", "id": "steward"}, "policies": ["readers"],
    });
    (
        ctx,
        AuditEvent {
            action: "decision.allow".into(),
            resource_type: "repo".into(),
            resource_id: "steward".into(),
            before: None,
            after: Some(after),
            reason: None,
        },
    )
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

async fn run(backend: Backend, entries: usize) {
    let temp = TempStore::new(backend).await.unwrap();
    let store = Store::open(&temp.url).await.unwrap();
    let ctx = ChangeContext::system("default", "bench", chrono::Utc::now());
    store
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    let log = Arc::new(AuditLog::start(&store, None).await.unwrap());

    // Group commit: 256 producers, each waiting for durability before its next append.
    let producers = 256;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in (p..entries).step_by(producers) {
                let (ctx, ev) = event(i);
                log.record(ctx, ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = entries as f64 / start.elapsed().as_secs_f64();

    // Latency one durable append adds when nothing else is waiting.
    let mut latencies = Vec::new();
    for i in 0..500 {
        let (ctx, ev) = event(i);
        let t = Instant::now();
        log.record(ctx, ev).await.unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();

    // Sign a checkpoint, then verify everything from the store.
    log.checkpoint(&store).await.unwrap();
    let start = Instant::now();
    let report = log.verify_store(&store).await.unwrap();
    let verify_elapsed = start.elapsed();
    assert!(report.ok, "{report:?}");
    println!(
        "{backend:?}: {entries} durable appends from {producers} producers: {rate:.0}/s | one append alone: p50 {:.0} µs, p99 {:.0} µs | online verify of {} entries: {:.0} entries/s",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        report.entries_checked,
        report.entries_checked as f64 / verify_elapsed.as_secs_f64(),
    );
    store.close().await;
    temp.remove().await.unwrap();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let entries = if full {
        std::env::var("STEWARD_BENCH_ENTRIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    } else {
        500
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            run(backend, entries).await;
        }
    });
}
