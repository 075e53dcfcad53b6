//! The `steward` binary end to end: `steward serve` in a child process on a
//! temporary SQLite store, driven by the CLI's own admin commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Serve, serve, steward};

const TOKEN: &str = "stwt_cli-test-admin-token-0123456789";

fn ok(server: &Serve, args: &[&str]) -> String {
    let out = steward(server, TOKEN, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "steward {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(server: &Serve, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(server, &all)).unwrap()
}

#[test]
fn serve_and_cli_walk_the_lifecycle() {
    let server = serve(Some(TOKEN), Stdio::null());
    ok(&server, &["teams", "create", "platform"]);
    ok(
        &server,
        &[
            "humans",
            "create",
            "--email",
            "alice@example.com",
            "--name",
            "Alice",
            "--team",
            "platform",
        ],
    );
    let parent = json(
        &server,
        &[
            "agents",
            "register",
            "--name",
            "planner",
            "--owner",
            "alice@example.com",
            "--classification",
            "public",
        ],
    );
    assert_eq!(parent["state"], "active");
    ok(
        &server,
        &[
            "agents",
            "register",
            "--name",
            "worker",
            "--owner",
            "alice@example.com",
            "--parent",
            "planner",
        ],
    );

    let table = ok(&server, &["agents", "list"]);
    assert!(
        table.contains("planner") && table.contains("worker") && table.contains("active"),
        "{table}"
    );

    let key = json(&server, &["keys", "create", "planner", "--name", "ci"]);
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("stw_"));
    let me = steward(&server, &secret, &["whoami"]);
    assert!(me.status.success());
    assert!(String::from_utf8_lossy(&me.stdout).contains("planner"));

    ok(
        &server,
        &[
            "agents",
            "suspend",
            "planner",
            "--reason",
            "unexpected spend",
        ],
    );
    let refused = steward(&server, &secret, &["whoami"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("agent_not_active") && stderr.contains("suspended"),
        "{stderr}"
    );

    ok(
        &server,
        &["agents", "resume", "planner", "--reason", "explained"],
    );
    let decommissioned = json(
        &server,
        &[
            "agents",
            "decommission",
            "planner",
            "--reason",
            "project over",
        ],
    );
    assert_eq!(decommissioned["agent"]["state"], "decommissioned");
    assert_eq!(decommissioned["cascaded"].as_array().unwrap().len(), 1);
    assert_eq!(
        json(&server, &["agents", "show", "worker"])["state"],
        "decommissioned"
    );
    assert_eq!(
        steward(&server, &secret, &["whoami"]).status.code(),
        Some(1)
    );

    // Behaviour: settings change and show, a baseline, an empty alert list.
    let settings = json(
        &server,
        &[
            "alerts",
            "settings",
            "--factor",
            "3",
            "--suspend-on",
            "requests,new_action",
        ],
    );
    assert_eq!(settings["factor"], 3.0);
    assert_eq!(
        settings["suspend_on"],
        serde_json::json!(["requests", "new_action"])
    );
    let shown = ok(&server, &["alerts", "settings"]);
    assert!(shown.contains("requests, new_action"), "{shown}");
    let none = ok(&server, &["alerts", "settings", "--suspend-on", "none"]);
    assert!(none.contains("none (alert only)"), "{none}");
    let bad = steward(
        &server,
        TOKEN,
        &["alerts", "settings", "--suspend-on", "mood"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown signal"));
    let too_low = steward(&server, TOKEN, &["alerts", "settings", "--factor", "1"]);
    assert_eq!(too_low.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_low.stderr).contains("factor"));
    let baseline = ok(&server, &["baseline", "planner"]);
    assert!(baseline.contains("flagged above"), "{baseline}");
    assert!(ok(&server, &["alerts", "list"]).contains("No alerts found."));

    // Recertification: a campaign over the live agents; only owners attest.
    ok(
        &server,
        &[
            "agents",
            "register",
            "--name",
            "keeper",
            "--owner",
            "alice@example.com",
            "--classification",
            "public",
        ],
    );
    let started = json(
        &server,
        &["recert", "start", "2026-Q4", "--due-in-days", "7"],
    );
    assert_eq!(started["status"], "open");
    assert!(ok(&server, &["recert", "list"]).contains("2026-Q4"));
    let items = json(
        &server,
        &["recert", "items", "2026-Q4", "--status", "pending"],
    );
    let total = started["counts"]["total"].as_u64().unwrap();
    assert!(total > 0, "{started}");
    assert_eq!(items["items"].as_array().unwrap().len() as u64, total);
    if let Some(first) = items["items"][0]["agent_name"].as_str() {
        let refused = steward(
            &server,
            TOKEN,
            &["recert", "attest", "2026-Q4", first, "keep"],
        );
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("only the owner"));
    }
    let shown = ok(&server, &["recert", "show", "2026-Q4"]);
    assert!(
        shown.contains("if not attested") && shown.contains("suspend"),
        "{shown}"
    );

    // Bad input: a clear message and a non-zero exit.
    let dup = steward(&server, TOKEN, &["teams", "create", "platform"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already_exists"));
}

#[test]
fn first_start_prints_a_generated_admin_token_once() {
    let mut server = serve(None, Stdio::piped());
    // The first lines on stdout announce the address and the token.
    let mut stdout = server.child.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 512];
    while !seen.contains("stwt_") {
        assert!(Instant::now() < deadline, "no token printed: {seen}");
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "stdout closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let token: String = seen[seen.find("stwt_").unwrap()..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let out = steward(&server, &token, &["-o", "json", "whoami"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["platform_admin"], true);
}

/// `steward demo` plays its whole story: approvals walked by people, a
/// quota counted, one runtime approval used once, a suspension, a verified log.
#[test]
fn the_demo_runs_end_to_end() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .arg("demo")
        .env_remove("STEWARD_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "then lucia@example.com (legal); it is now active",
        "persona's default quota",
        "held for a human's approval",
        "(the grant is used once)",
        "an approval is never reused",
        "is refused with 401",
        "verifying it: intact",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// `steward demo --keep` tells its story, then keeps the server up with its
/// dashboard until interrupted, and stops cleanly.
#[test]
fn the_demo_can_stay_up_for_a_look_around() {
    use std::io::{BufRead, Read, Write};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["demo", "--keep"])
        .env_remove("STEWARD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = loop {
        let line = lines
            .next()
            .expect("the demo ended without staying up")
            .unwrap();
        if line.contains("/ui (sign in with ") {
            break line;
        }
    };
    let url = line.split("The dashboard: ").nth(1).unwrap();
    let (url, rest) = url.split_once("/ui (sign in with ").unwrap();
    let token = rest.split(')').next().unwrap();
    let addr = url.trim_start_matches("http://");
    let post = |path: &str, body: &str| -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    };
    let signed_in = post("/ui/login", &format!("token={token}"));
    assert!(signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    assert!(signed_in.contains("steward_session="), "{signed_in}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}
