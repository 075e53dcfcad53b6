//! HTTP load on the AuthZEN evaluation endpoint, audited, on SQLite and
//! PostgreSQL: closed-loop throughput with 16 clients, and latency under an
//! open-loop load of 1000 requests per second (a request is sent every
//! millisecond whether or not earlier ones have finished; latency is measured
//! from when each is sent, since the pacing timer's millisecond granularity
//! would otherwise count its own lateness). The server runs in this process;
//! the load comes from a second process (this binary again), so the two do
//! not share a runtime.
//!
//! cargo bench -p steward-testkit --bench decisions
//! (STEWARD_BENCH_RATE and STEWARD_BENCH_SECONDS change the open-loop load;
//! STEWARD_BENCH_STORES=disk,floor,full,normal,postgres,agents picks the
//! runs: `floor` is the same load on `/healthz`, which does nothing, for
//! what HTTP and the two processes cost on their own; `agents` is the open
//! loop alone for 60 s on `POST /v1/decisions` from 1000 agents, each
//! asking about itself with its own key, 60 requests in a row per agent, so
//! that every key is first used once a minute as in a steady state where
//! each agent decides once a second; `disk` is the durable floor, a
//! small write and `fsync` (what SQLite calls) every millisecond in the
//! directory the SQLite store lives in, which an audited decision on the
//! default `synchronous=FULL` store waits for at least once.
//! STEWARD_BENCH_SERIES=DIR writes each open loop's latencies, in µs and
//! in the order sent, one per line, to DIR/RUN.txt, for
//! `benches/latency_phases.py`. STEWARD_BENCH_WORKERS=N runs the server
//! on N worker threads rather than one per core.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use steward_testkit::{Backend, TestServer};
use steward_types::{CreateHuman, PutAction, PutPolicy, PutResourceType, RegisterAgent};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

async fn setup(s: &TestServer) {
    let a = &s.admin;
    a.put_resource_type(&PutResourceType {
        name: "repo".into(),
        description: String::new(),
        attributes: [("classification".to_string(), "String".to_string())].into(),
    })
    .await
    .unwrap();
    a.put_action(&PutAction {
        name: "read".into(),
        description: String::new(),
        resource_types: vec!["repo".into()],
        context: Default::default(),
    })
    .await
    .unwrap();
    a.put_policy(&PutPolicy { id: "readers".into(), description: String::new(), owner: String::new(), text: r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#.into() }).await.unwrap();
    a.put_policy(&PutPolicy { id: "no-pii".into(), description: String::new(), owner: String::new(), text: r#"forbid(principal is Agent, action, resource is repo) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#.into() }).await.unwrap();
    a.create_human(&CreateHuman {
        email: "owner@example.com".into(),
        display_name: "Owner".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    a.register_agent(&reader("bot")).await.unwrap();
}

/// An agent of owner@example.com that may read repos.
fn reader(name: &str) -> RegisterAgent {
    RegisterAgent {
        name: name.into(),
        owner: "owner@example.com".into(),
        roles: Some(vec!["repo-reader".into()]),
        classifications: Some(vec!["public".into()]),
        ..Default::default()
    }
}

fn body() -> String {
    json!({
        "subject": {"type": "agent", "id": "bot"},
        "action": {"name": "read"},
        "resource": {"type": "repo", "id": "steward", "properties": {"classification": "internal"}},
    })
    .to_string()
}

/// The load, in a process of its own (this binary run again with
/// `STEWARD_BENCH_LOAD=url`) so that the load generator does not share the
/// server's runtime: closed loop, then open loop; prints one line of figures.
async fn load(url: String, full: bool) {
    if let Ok(keys) = std::env::var("STEWARD_BENCH_KEYS") {
        let keys: Vec<String> = std::fs::read_to_string(keys)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        return load_agents(url, keys, full).await;
    }
    let http = reqwest::Client::new();
    let send = |http: reqwest::Client, url: String| async move {
        if url.ends_with("/healthz") {
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            return;
        }
        let r = http
            .post(url)
            .bearer_auth(steward_testkit::ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["decision"], true);
    };

    // Closed loop: 16 clients as fast as they go.
    let total = if full { 20_000 } else { 100 };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..total).step_by(16) {
                send(http.clone(), url.clone()).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let throughput = total as f64 / start.elapsed().as_secs_f64();

    // Open loop at a fixed rate.
    let rate = env_num("STEWARD_BENCH_RATE", 1000);
    let seconds = if full {
        env_num("STEWARD_BENCH_SECONDS", 10)
    } else {
        1
    };
    let latencies = open_loop(rate, seconds, |_| send(http.clone(), url.clone())).await;
    println!(
        "closed loop 16 clients {throughput:.0} req/s | open loop {rate} req/s for {seconds}s: {}",
        summary(&latencies)
    );
}

/// `rate` requests a second for `seconds`, request `i` made by `send(i)`,
/// whether or not earlier ones have finished; the latencies, sorted, each
/// from when its request was actually sent (the timer that paces the load
/// has millisecond granularity and would add its own lateness).
async fn open_loop<F, R>(rate: u64, seconds: u64, send: F) -> Vec<Duration>
where
    F: Fn(usize) -> R,
    R: std::future::Future<Output = ()> + Send + 'static,
{
    let n = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let begin = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = begin + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let request = send(i);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            request.await;
            sent.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    if let Ok(path) = std::env::var("STEWARD_BENCH_SERIES_FILE") {
        let lines: String = latencies
            .iter()
            .map(|l| format!("{}\n", l.as_micros()))
            .collect();
        std::fs::write(path, lines).unwrap();
    }
    latencies.sort();
    latencies
}

/// p50, p99 and max of sorted latencies.
fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        pct(sorted, 0.5),
        pct(sorted, 0.99),
        pct(sorted, 1.0),
    )
}

/// Agents that decide once a second each, with their own keys: the open
/// loop at STEWARD_BENCH_RATE (1000/s) for 60 s (1 s when not `full`),
/// request `i` from agent `(i / 60) % keys`, so that each key's first use
/// (which records when it was last used) comes once a minute per agent and
/// evenly spread, as in a steady state.
async fn load_agents(url: String, keys: Vec<String>, full: bool) {
    let http = reqwest::Client::new();
    let rate = env_num("STEWARD_BENCH_RATE", 1000);
    let seconds = if full { 60 } else { 1 };
    let body = json!({
        "action": "read",
        "resource": {"type": "repo", "id": "steward", "attributes": {"classification": "internal"}},
    })
    .to_string();
    let latencies = open_loop(rate, seconds, |i| {
        let request = http
            .post(&url)
            .bearer_auth(&keys[(i / 60) % keys.len()])
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let r = request.send().await.unwrap();
            assert!(r.status().is_success());
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["decision"], "allow");
        }
    })
    .await;
    println!(
        "{} agents, open loop {rate} req/s for {seconds}s: {}",
        keys.len(),
        summary(&latencies)
    );
}

/// 1000 agents (`agent-0` ...) that may read repos, each with a key, on a
/// server on the default store; the `agents` load against them.
async fn run_agents(full: bool) {
    let s = TestServer::start(Backend::Sqlite).await;
    setup(&s).await;
    let count = if full { 1000 } else { 20 };
    let mut secrets = String::new();
    for i in 0..count {
        let name = format!("agent-{i}");
        s.admin.register_agent(&reader(&name)).await.unwrap();
        let key = s
            .admin
            .create_key(&name, &Default::default())
            .await
            .unwrap();
        secrets.push_str(&key.secret);
        secrets.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, secrets).unwrap();
    let url = format!("{}/v1/decisions", s.server.url());
    println!(
        "Sqlite: /v1/decisions audited, each agent with its own key: {}",
        load_in_child("agents", &url, Some(&keys), full).await
    );
    s.stop().await;
}

/// The load on `url` from this binary run again (with the agents' keys
/// in the file `keys`, if given); the line of figures it prints.
async fn load_in_child(run: &str, url: &str, keys: Option<&std::path::Path>, full: bool) -> String {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child.env("STEWARD_BENCH_LOAD", url);
    if let Ok(dir) = std::env::var("STEWARD_BENCH_SERIES") {
        std::fs::create_dir_all(&dir).unwrap();
        child.env(
            "STEWARD_BENCH_SERIES_FILE",
            std::path::Path::new(&dir).join(format!("{run}.txt")),
        );
    }
    if let Some(keys) = keys {
        child.env("STEWARD_BENCH_KEYS", keys);
    }
    if full {
        child.arg("--bench");
    }
    let out = child.output().await.unwrap();
    assert!(
        out.status.success(),
        "the load generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The same load on `path` of a server on `backend`; prints one line.
async fn run(backend: Backend, relaxed: bool, full: bool, path: &str) {
    // STEWARD_BENCH_BEHAVIOUR_SECS sets the behavioural pass's interval
    // (default: the server's 10 s; 0 turns it off, and then one pass over
    // what the load wrote is timed after it).
    let behaviour: Option<u64> = std::env::var("STEWARD_BENCH_BEHAVIOUR_SECS")
        .ok()
        .map(|v| v.parse().unwrap());
    let s = TestServer::start_with(backend, |c| {
        if let Some(url) = c.database_url.as_mut().filter(|_| relaxed) {
            url.push_str("?synchronous=normal");
        }
        if let Some(secs) = behaviour {
            c.behaviour_interval_secs = secs;
        }
    })
    .await;
    setup(&s).await;
    let url = format!("{}{path}", s.server.url());
    let run = match (backend, relaxed, path) {
        (_, _, "/healthz") => "floor",
        (Backend::Postgres, ..) => "postgres",
        (_, true, _) => "normal",
        _ => "full",
    };
    let figures = load_in_child(run, &url, None, full).await;
    println!(
        "{backend:?}{}: {path}{}: {}",
        if relaxed { " (synchronous=normal)" } else { "" },
        if path == EVALUATION {
            " audited"
        } else {
            " (the floor: does nothing)"
        },
        figures
    );
    if behaviour == Some(0) {
        let store = s.server.store();
        let started = Instant::now();
        let mut read = 0;
        loop {
            let now = chrono::Utc::now();
            let pass = steward_server::behaviour::run_pass(
                store,
                "bench",
                now,
                chrono::Duration::minutes(5),
            )
            .await
            .unwrap();
            read += pass.read;
            if pass.read == 0 {
                break;
            }
        }
        let took = started.elapsed();
        println!(
            "  behavioural pass over what the load wrote: {read} audit entries in {:.0} ms ({:.0} entries/s)",
            took.as_secs_f64() * 1000.0,
            read as f64 / took.as_secs_f64()
        );
    }
    s.stop().await;
}

const EVALUATION: &str = "/access/v1/evaluation";

/// The disk's own latency for what a `synchronous=FULL` commit must do at
/// least once: a few hundred bytes written over a preallocated file, then
/// `fsync` (SQLite's build syncs with `fsync`, not `fdatasync`), paced like the open loop (one every millisecond, timed from
/// the write). Prints one line.
fn disk(full: bool) {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("probe")).unwrap();
    const SIZE: u64 = 1 << 20;
    file.set_len(SIZE).unwrap();
    file.sync_all().unwrap();
    let n = if full {
        (env_num("STEWARD_BENCH_RATE", 1000) * env_num("STEWARD_BENCH_SECONDS", 10)) as usize
    } else {
        100
    };
    let record = [b'x'; 300];
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        file.seek(SeekFrom::Start((i * 4096) % SIZE)).unwrap();
        file.write_all(&record).unwrap();
        file.sync_all().unwrap();
        let took = started.elapsed();
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(1).saturating_sub(took));
    }
    latencies.sort();
    println!(
        "disk: {n} writes of 300 bytes, each followed by fsync, one every ms: {}",
        summary(&latencies)
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if let Ok(url) = std::env::var("STEWARD_BENCH_LOAD") {
        // One thread is plenty for 1000 requests a second and leaves the
        // other core to the server.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(load(url, full));
        return;
    }
    // STEWARD_BENCH_WORKERS sets the server runtime's worker threads
    // (tokio's default: one per core).
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = std::env::var("STEWARD_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().unwrap();
    rt.block_on(async {
        // STEWARD_BENCH_STORES picks some of: floor, full, normal, postgres.
        let only = std::env::var("STEWARD_BENCH_STORES").unwrap_or_default();
        let wanted = |name: &str| only.is_empty() || only.split(',').any(|s| s == name);
        if wanted("disk") {
            tokio::task::spawn_blocking(move || disk(full))
                .await
                .unwrap();
        }
        if wanted("floor") {
            run(Backend::Sqlite, false, full, "/healthz").await;
        }
        if wanted("full") {
            run(Backend::Sqlite, false, full, EVALUATION).await;
        }
        if wanted("normal") {
            run(Backend::Sqlite, true, full, EVALUATION).await;
        }
        if wanted("postgres") {
            run(Backend::Postgres, false, full, EVALUATION).await;
        }
        if wanted("agents") {
            run_agents(full).await;
        }
    });
}
