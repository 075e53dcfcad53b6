//! Load benchmark of the inventory API over HTTP, on SQLite and PostgreSQL:
//! agent registration rate and `GET /v1/agents/{id}` latency (p50, p99) and
//! throughput. Results go to docs/benchmarks.md by hand, with the machine.
//!
//! cargo bench -p steward-testkit --bench inventory
//! (STEWARD_BENCH_AGENTS and STEWARD_BENCH_GETS change the counts.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_testkit::{Backend, TestServer};
use steward_types::{CreateHuman, RegisterAgent};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn run(backend: Backend, agents: usize, gets: usize, concurrency: usize) {
    let s = Arc::new(TestServer::start(backend).await);
    s.admin
        .create_human(&CreateHuman {
            external_id: None,
            email: "owner@example.com".into(),
            display_name: "Owner".into(),
            teams: vec![],
            roles: vec![],
        })
        .await
        .unwrap();

    // Registration: `concurrency` clients, each registering its share.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..agents).step_by(concurrency) {
                let agent = s
                    .admin
                    .register_agent(&RegisterAgent {
                        name: format!("agent-{i}"),
                        owner: "owner@example.com".into(),
                        classifications: Some(vec!["public".into()]),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                ids.push(agent.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let reg_elapsed = start.elapsed();

    // Latency: one client, sequential requests.
    let mut latencies = Vec::with_capacity(gets);
    for i in 0..gets {
        let id = &ids[i % ids.len()];
        let t = Instant::now();
        s.admin.get_agent(id).await.unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();

    // Throughput: `concurrency` clients in parallel.
    let ids = Arc::new(ids);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (s, ids) = (s.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..gets).step_by(concurrency) {
                s.admin.get_agent(&ids[i % ids.len()]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let get_elapsed = start.elapsed();

    println!(
        "{backend:?}: register {agents} agents with {concurrency} clients: {:.0}/s | GET /v1/agents/{{id}} sequential p50 {:.0} µs, p99 {:.0} µs | {concurrency} clients: {:.0} req/s",
        agents as f64 / reg_elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        gets as f64 / get_elapsed.as_secs_f64(),
    );
    Arc::try_unwrap(s)
        .ok()
        .expect("no other handles")
        .stop()
        .await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // extra: then run a tiny smoke version so the bench stays compiled and working.
    let full = std::env::args().any(|a| a == "--bench");
    let (agents, gets) = if full {
        (
            env_count("STEWARD_BENCH_AGENTS", 2000),
            env_count("STEWARD_BENCH_GETS", 10000),
        )
    } else {
        (20, 50)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            run(backend, agents, gets, 16).await;
        }
    });
}
