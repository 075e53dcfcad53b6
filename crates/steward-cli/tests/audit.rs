//! `steward audit ...` end to end: `steward serve` in a child process, the
//! log read as lines, exported, and the bundle verified offline (with the
//! server gone) and refused once tampered with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOKEN: &str = "stwt_cli-audit-test-admin-token-0123";

fn serve() -> support::Serve {
    support::serve(Some(TOKEN))
}

/// The CLI against `url` (a server, or nothing listening).
fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env("STEWARD_SERVER", url)
        .env("STEWARD_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "steward {args:?} failed: {stdout}{stderr}"
    );
    stdout
}

/// Some history: a team, a person, two agents, a suspension with a reason.
fn history(url: &str) {
    ok(url, &["teams", "create", "support"]);
    ok(
        url,
        &[
            "humans",
            "create",
            "--email",
            "alice@example.com",
            "--name",
            "Alice",
            "--team",
            "support",
        ],
    );
    for name in ["support-bot", "reviewer"] {
        ok(
            url,
            &[
                "agents",
                "register",
                "--name",
                name,
                "--owner",
                "alice@example.com",
                "--classification",
                "public",
            ],
        );
    }
    ok(
        url,
        &[
            "agents",
            "suspend",
            "reviewer",
            "--reason",
            "investigating spend",
        ],
    );
}

/// Copy a bundle directory, changing its entries file with `edit`.
fn tampered_copy(from: &Path, to: &Path, file: &str, edit: impl Fn(&mut Vec<String>)) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("manifest.json"), to.join("manifest.json")).unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(from.join(file))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    edit(&mut lines);
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(to.join(file), body).unwrap();
}

#[test]
fn the_log_reads_as_lines_exports_and_verifies_offline() {
    let server = serve();
    let url = server.url.clone();
    history(&url);

    // Readable lines.
    let tail = ok(&url, &["audit", "tail", "-n", "3"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail}");
    assert!(
        lines[2].ends_with(": agent.suspend agent reviewer — investigating spend"),
        "{tail}"
    );
    assert!(
        lines[0].contains("agent.register agent support-bot"),
        "{tail}"
    );
    assert!(lines[2].starts_with("20"), "a date first: {tail}");
    let json_lines = ok(&url, &["audit", "tail", "-n", "2", "-o", "json"]);
    let entries: Vec<serde_json::Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["action"], "agent.suspend");
    let found = ok(&url, &["audit", "search", "--agent", "reviewer"]);
    assert_eq!(found.lines().count(), 2, "register and suspend: {found}");
    let found = ok(&url, &["audit", "search", "--action", "human.*"]);
    assert!(
        found.contains("human.create human alice@example.com"),
        "{found}"
    );
    let none = ok(&url, &["audit", "search", "--decision", "deny"]);
    assert_eq!(none.trim(), "No audit entries found.");
    let bad = run(&url, &["audit", "search", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("invalid_query"), "{}", text(&bad).1);
    let bad = run(&url, &["audit", "search", "--agent", "nobody"]);
    assert!(
        text(&bad).1.contains("no agent 'nobody'"),
        "{}",
        text(&bad).1
    );

    // Online verification, the key and the checkpoint.
    let verified = ok(&url, &["audit", "verify"]);
    assert!(verified.starts_with("OK: "), "{verified}");
    let key: serde_json::Value =
        serde_json::from_str(&ok(&url, &["audit", "public-key", "-o", "json"])).unwrap();
    let public_key = key["public_key"].as_str().unwrap().to_owned();
    let checkpoint = ok(&url, &["audit", "checkpoint"]);
    assert!(
        checkpoint.contains("size") && checkpoint.contains(&key["key_id"].as_str().unwrap()[..8])
    );

    // Export both formats.
    let work = tempfile::tempdir().unwrap();
    let jsonl = work.path().join("jsonl");
    let ocsf = work.path().join("ocsf");
    let exported = ok(&url, &["audit", "export", "--out", jsonl.to_str().unwrap()]);
    assert!(
        exported.starts_with("Exported ") && exported.contains("entries (log positions 1 to"),
        "{exported}"
    );
    ok(
        &url,
        &[
            "audit",
            "export",
            "--format",
            "ocsf",
            "--out",
            ocsf.to_str().unwrap(),
        ],
    );
    assert!(jsonl.join("entries.jsonl").is_file() && jsonl.join("manifest.json").is_file());
    assert!(ocsf.join("entries.ocsf.jsonl").is_file());
    // Not over an existing bundle without --force.
    let again = run(&url, &["audit", "export", "--out", jsonl.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("--force"));

    // The server is gone: verification is offline.
    drop(server);
    let gone = "http://127.0.0.1:9";
    for dir in [&jsonl, &ocsf] {
        let out = ok(
            gone,
            &[
                "audit",
                "verify",
                "--bundle",
                dir.to_str().unwrap(),
                "--public-key",
                &public_key,
            ],
        );
        assert!(out.contains("OK: ") && out.contains("(pinned)"), "{out}");
    }
    let unpinned = ok(
        gone,
        &["audit", "verify", "--bundle", jsonl.to_str().unwrap()],
    );
    assert!(unpinned.contains("taken from the manifest"), "{unpinned}");

    // Tampered copies are refused, naming the place.
    let modified = work.path().join("modified");
    tampered_copy(&jsonl, &modified, "entries.jsonl", |lines| {
        let mut entry: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        entry["reason"] = serde_json::json!("nothing to see");
        lines[1] = entry.to_string();
    });
    let out = run(
        gone,
        &["audit", "verify", "--bundle", modified.to_str().unwrap()],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("BAD: line 2 (log position"), "{stdout}");
    assert!(stderr.contains("was modified"), "{stderr}");

    let deleted = work.path().join("deleted");
    tampered_copy(&ocsf, &deleted, "entries.ocsf.jsonl", |lines| {
        lines.remove(2);
    });
    let out = run(
        gone,
        &["audit", "verify", "--bundle", deleted.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.contains("line 3"), "{}", text(&out).0);

    // Another key is refused even for an intact bundle.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = run(
        gone,
        &[
            "audit",
            "verify",
            "--bundle",
            jsonl.to_str().unwrap(),
            "--public-key",
            other,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn tail_follow_prints_new_entries_as_they_come() {
    let server = serve();
    history(&server.url);
    let mut follow = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["audit", "tail", "-n", "1", "--follow"])
        .env("STEWARD_SERVER", &server.url)
        .env("STEWARD_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("agent.suspend agent reviewer"), "{first}");
    ok(
        &server.url,
        &["agents", "resume", "reviewer", "--reason", "cleared"],
    );
    let next = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        next.contains("agent.resume agent reviewer — cleared"),
        "{next}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}
