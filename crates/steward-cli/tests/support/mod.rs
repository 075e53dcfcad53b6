//! `steward serve` in a child process on a temporary data directory, for the
//! CLI's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `steward serve` with its SQLite store in `data`, the admin token
/// `token` (none: generated), and wait until it accepts connections.
pub fn serve_in(data: &Path, token: Option<&str>, stdout: Stdio) -> Serve {
    serve_on(data, None, token, stdout)
}

/// Start `steward serve` on the database at `url` (`data` is only its
/// working folder).
pub fn serve_on(data: &Path, url: Option<&str>, token: Option<&str>, stdout: Stdio) -> Serve {
    // A free port can be taken by another test's server before this one
    // binds it; then this server exits, and it starts again on another.
    let mut stdout = Some(stdout);
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steward"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .current_dir(data.parent().unwrap_or(data))
            .env_remove("STEWARD_TOKEN")
            .env_remove("STEWARD_ADMIN_TOKEN")
            .stdout(stdout.take().unwrap_or_else(Stdio::null))
            .stderr(Stdio::null());
        if let Some(token) = token {
            cmd.env("STEWARD_ADMIN_TOKEN", token);
        }
        if let Some(url) = url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if listening(port) {
                return Serve {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                    data: data.to_path_buf(),
                    dir: None,
                };
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "steward serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("steward serve exited at every start");
}

/// Whether something listens on `port`. A connection whose own port is
/// `port` is the kernel connecting the socket to itself (possible when
/// nothing listens and the port is in the ephemeral range), not a server.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|s| s.local_addr().is_ok_and(|a| a.port() != port))
}

/// Start `steward serve` on a new temporary data directory it owns.
pub fn serve(token: Option<&str>, stdout: Stdio) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_in(&dir.path().join("data"), token, stdout);
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
