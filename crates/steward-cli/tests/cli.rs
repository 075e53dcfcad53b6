//! The `steward` binary end to end: `steward serve` in a child process on a
//! temporary SQLite store, driven by the CLI's own admin commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

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
    let server = serve(Some(TOKEN));
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
    let server = serve(None);
    // The first lines on stdout announce the address and the token.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = server.printed();
    while !seen.contains("stwt_") {
        assert!(Instant::now() < deadline, "no token printed: {seen}");
        std::thread::sleep(Duration::from_millis(20));
        seen = server.printed();
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
    let send = |request: String| -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    };
    // The sign-in form first: its cookie and the value the form echoes.
    let form = send(format!(
        "GET /ui/login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    assert!(form.starts_with("HTTP/1.1 200"), "{form}");
    let cookie = form
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: steward_login="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no sign-in cookie in {form}"));
    let csrf = form
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no form value in {form}"));
    let body = format!("token={token}&csrf={csrf}");
    let signed_in = send(format!(
        "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nCookie: steward_login={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(signed_in.starts_with("HTTP/1.1 303"), "{signed_in}");
    assert!(signed_in.contains("steward_session="), "{signed_in}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// Proven delegation from the command line: an identity provider with its
/// keys, the tenant's settings, the (empty) list of delegated tokens, and a
/// token exchange refused the OAuth way.
#[test]
fn delegation_issuers_settings_and_exchange() {
    let server = serve(Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    )
    .unwrap();
    let jwks = jwks.to_str().unwrap();
    let put = json(
        &server,
        &[
            "issuers",
            "put",
            "corp",
            "--issuer",
            "https://login.example.com/",
            "--audience",
            "steward",
            "--jwks",
            jwks,
        ],
    );
    assert_eq!(put["name"], "corp");
    assert_eq!(put["issuer"], "https://login.example.com/");
    assert_eq!(put["match_claim"], "email");
    assert_eq!(put["jwks"]["keys"][0]["kid"], "k1");
    let table = ok(&server, &["issuers", "list"]);
    assert!(
        table.contains("corp") && table.contains("https://login.example.com/"),
        "{table}"
    );

    // A file that is not JSON is refused before anything is sent.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "-----BEGIN PUBLIC KEY-----").unwrap();
    let refused = steward(
        &server,
        TOKEN,
        &[
            "issuers",
            "put",
            "corp",
            "--issuer",
            "https://other.example.com/",
            "--audience",
            "other",
            "--jwks",
            garbage.to_str().unwrap(),
            "--match-claim",
            "sub",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("JWKS file") && stderr.contains("is not JSON"),
        "{stderr}"
    );
    let missing = steward(
        &server,
        TOKEN,
        &[
            "issuers",
            "put",
            "corp",
            "--issuer",
            "https://other.example.com/",
            "--audience",
            "other",
            "--jwks",
            dir.path().join("nope.json").to_str().unwrap(),
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the JWKS file"));
    let listed = json(&server, &["issuers", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["issuer"], "https://login.example.com/");
    assert_eq!(listed[0]["audience"], "steward");
    assert_eq!(listed[0]["match_claim"], "email");

    // Settings: shown, changed, and a change of one field keeps the other.
    let shown = ok(&server, &["delegations", "settings"]);
    assert!(
        shown.contains("require proof") && shown.contains("3600 s"),
        "{shown}"
    );
    let changed = json(
        &server,
        &[
            "delegations",
            "settings",
            "--require-proof",
            "true",
            "--max-lifetime",
            "900",
        ],
    );
    assert_eq!(changed["require_proof"], true);
    assert_eq!(changed["max_lifetime_secs"], 900);
    let changed = json(
        &server,
        &["delegations", "settings", "--max-lifetime", "600"],
    );
    assert_eq!(changed["require_proof"], true);
    assert_eq!(changed["max_lifetime_secs"], 600);
    let shown = ok(&server, &["delegations", "settings"]);
    assert!(shown.contains("yes") && shown.contains("600 s"), "{shown}");
    let too_short = steward(
        &server,
        TOKEN,
        &["delegations", "settings", "--max-lifetime", "5"],
    );
    assert_eq!(too_short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_short.stderr).contains("invalid_request"));

    // No delegated tokens yet.
    assert!(ok(&server, &["delegations", "list"]).contains("No delegations found."));
    let page = json(&server, &["delegations", "list", "--active"]);
    assert_eq!(page["items"], serde_json::json!([]));

    // An exchange with a token that is not a JWT: the OAuth error, readable.
    ok(
        &server,
        &[
            "humans",
            "create",
            "--email",
            "dana@example.com",
            "--name",
            "Dana",
        ],
    );
    ok(
        &server,
        &[
            "agents",
            "register",
            "--name",
            "assistant",
            "--owner",
            "dana@example.com",
            "--classification",
            "public",
        ],
    );
    let key = json(&server, &["keys", "create", "assistant", "--name", "ci"]);
    let secret = key["secret"].as_str().unwrap();
    let refused = steward(
        &server,
        TOKEN,
        &[
            "delegations",
            "exchange",
            "--subject-token",
            "not-a-jwt",
            "--agent-key",
            secret,
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("token exchange refused: invalid_grant: "),
        "{stderr}"
    );
    let description = stderr
        .split("invalid_grant: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(description.trim().len() > 10, "{stderr}");
    // The key may come from STEWARD_AGENT_KEY instead.
    let from_env = std::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args([
            "delegations",
            "exchange",
            "--subject-token",
            "a.b.c",
            "--subject-token-type",
            "id_token",
        ])
        .env("STEWARD_SERVER", &server.url)
        .env_remove("STEWARD_TOKEN")
        .env("STEWARD_AGENT_KEY", secret)
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&from_env.stderr);
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    // Refusals store nothing.
    assert!(ok(&server, &["delegations", "list"]).contains("No delegations found."));

    // Deleting the issuer.
    let deleted = ok(&server, &["issuers", "delete", "corp"]);
    assert!(deleted.contains("corp"), "{deleted}");
    assert!(ok(&server, &["issuers", "list"]).contains("No identity providers found."));
    let again = steward(&server, TOKEN, &["issuers", "delete", "corp"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not_found"));
}
