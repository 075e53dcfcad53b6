//! `steward serve` in a child process on a temporary data directory, for the
//! CLI's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running `steward serve`; killed when dropped.
pub struct Serve {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The data directory (kept across restarts by the test that owns it).
    pub data: PathBuf,
    /// The temporary folder holding it, when the server owns one.
    pub dir: Option<tempfile::TempDir>,
    /// Everything the server printed on stdout so far.
    pub printed: Arc<Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// What the server printed on stdout so far.
    pub fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }
}

/// Start `steward serve` with its SQLite store in `data` and the admin token
/// `token` (none: generated), and wait until it listens.
pub fn serve_in(data: &Path, token: Option<&str>) -> Serve {
    serve_on(data, None, token)
}

/// Start `steward serve` on the database at `url` (`data` is only its
/// working folder).
///
/// The server binds a port the kernel picks and announces it on stdout, so
/// no other process can take the port between a test choosing it and the
/// server binding it.
pub fn serve_on(data: &Path, url: Option<&str>, token: Option<&str>) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .current_dir(data.parent().unwrap_or(data))
        .env_remove("STEWARD_TOKEN")
        .env_remove("STEWARD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("STEWARD_ADMIN_TOKEN", token);
    }
    if let Some(url) = url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().unwrap();

    // stdout is read to its end by a thread (the server never blocks on a
    // full pipe); the announced address comes back on a channel.
    let printed = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let kept = printed.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("Steward listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    let logged = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let log = logged.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut log = log.lock().unwrap();
            // The log's first lines say why a start failed; keep those.
            if log.len() < 64 * 1024 {
                log.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => Serve {
            child,
            url,
            data: data.to_path_buf(),
            dir: None,
            printed,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "steward serve did not start.\nstdout:\n{}\nstderr:\n{}",
                printed.lock().unwrap(),
                logged.lock().unwrap()
            );
        }
    }
}

/// Start `steward serve` on a new temporary data directory it owns.
pub fn serve(token: Option<&str>) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_in(&dir.path().join("data"), token);
    server.dir = Some(dir);
    server
}

/// Run the CLI against `server` with `token`.
pub fn steward(server: &Serve, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(args)
        .env("STEWARD_SERVER", &server.url)
        .env("STEWARD_TOKEN", token)
        .output()
        .unwrap()
}
