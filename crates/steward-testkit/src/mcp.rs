//! Real MCP software for the gateway's tests and benchmark: the official
//! TypeScript SDK as the client (`tests/mcp/client.mjs`) and the reference
//! servers (`server-everything`, `server-filesystem`) as upstreams, installed
//! at pinned versions by `npm ci` in `tests/mcp/` (`.ci/run` does it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use anyhow::{Context, bail};
use serde_json::Value;
use steward_types::McpTransport;

/// Where the Node.js material lives.
pub fn material_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// Whether the third-party MCP software can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// `node` runs and the pinned packages are installed.
    Ready,
    /// No `node` on this machine.
    NodeMissing,
    /// `node` runs but `npm ci` has not been run in [`material_dir`].
    PackagesMissing,
}

/// Check for `node` and the installed packages.
pub fn node_status() -> NodeStatus {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return NodeStatus::NodeMissing;
    }
    let modules = material_dir().join("node_modules/@modelcontextprotocol");
    let all = ["sdk", "server-everything", "server-filesystem"]
        .iter()
        .all(|p| modules.join(p).is_dir());
    if all {
        NodeStatus::Ready
    } else {
        NodeStatus::PackagesMissing
    }
}

fn package_entry(package: &str) -> String {
    material_dir()
        .join("node_modules/@modelcontextprotocol")
        .join(package)
        .join("dist/index.js")
        .to_string_lossy()
        .into_owned()
}

/// `server-everything` as a child process speaking stdio.
pub fn everything_stdio() -> McpTransport {
    McpTransport::Stdio {
        command: "node".into(),
        args: vec![package_entry("server-everything"), "stdio".into()],
        env: Default::default(),
    }
}

/// `server-filesystem` over stdio, allowed to touch `dir` only.
pub fn filesystem_stdio(dir: &std::path::Path) -> McpTransport {
    McpTransport::Stdio {
        command: "node".into(),
        args: vec![
            package_entry("server-filesystem"),
            dir.to_string_lossy().into_owned(),
        ],
        env: Default::default(),
    }
}

/// An MCP server serving Streamable HTTP on a free local port
/// (`server-everything`, or `tests/mcp/refusing.mjs`); killed when dropped.
pub struct HttpUpstream {
    child: tokio::process::Child,
    /// What `node` runs: the script and its arguments.
    script: Vec<String>,
    /// Its MCP endpoint.
    pub url: String,
    /// The local port it listens on.
    pub port: u16,
}

impl HttpUpstream {
    /// `server-everything`, started and listening.
    pub async fn start() -> anyhow::Result<HttpUpstream> {
        Self::start_script(vec![
            package_entry("server-everything"),
            "streamableHttp".into(),
        ])
        .await
    }

    /// `tests/mcp/refusing.mjs`, a live server with an `echo` tool that
    /// answers any POST holding "REFUSE" with a plain-text `429`, and a
    /// resource `box://shelf` whose read holds its items' contents too.
    pub async fn refusing() -> anyhow::Result<HttpUpstream> {
        Self::refusing_with(None).await
    }

    /// `tests/mcp/refusing.mjs` offering no event stream: only a request
    /// can find out that it restarted.
    pub async fn without_stream() -> anyhow::Result<HttpUpstream> {
        Self::refusing_with(Some("--no-stream")).await
    }

    async fn refusing_with(option: Option<&str>) -> anyhow::Result<HttpUpstream> {
        let script = material_dir().join("refusing.mjs");
        let mut args = vec![script.to_string_lossy().into_owned()];
        args.extend(option.map(String::from));
        Self::start_script(args).await
    }

    /// Start `node script` and wait until it has bound its port.
    ///
    /// A server that finds its port taken (another process took it between
    /// the pick and the bind) exits, and starts again on another.
    async fn start_script(script: Vec<String>) -> anyhow::Result<HttpUpstream> {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if let Some(upstream) = Self::try_on(&script, port).await? {
                return Ok(upstream);
            }
        }
        bail!("{script:?} exited at every start")
    }

    /// A new server on this one's port, as an upstream that restarted: it
    /// knows none of the old one's sessions. This one is stopped first.
    pub async fn restart(self) -> anyhow::Result<HttpUpstream> {
        let HttpUpstream {
            mut child,
            script,
            port,
            ..
        } = self;
        child.kill().await?;
        // The port can stay taken for a moment after the kill.
        for _ in 0..50 {
            if let Some(upstream) = Self::try_on(&script, port).await? {
                return Ok(upstream);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{script:?} could not listen on port {port} again")
    }

    /// Start one on `port`; `None` if it exited without listening.
    ///
    /// Readiness is the server's own "listening" line, printed once its
    /// port is bound: a connect could instead reach another process that
    /// took the port first.
    async fn try_on(script: &[String], port: u16) -> anyhow::Result<Option<HttpUpstream>> {
        let mut child = tokio::process::Command::new("node")
            .args(script)
            .env("PORT", port.to_string())
            .current_dir(material_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {script:?} over HTTP"))?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on port") {
                    return true;
                }
            }
            false
        })
        .await
        .with_context(|| format!("{script:?} did not listen within 30 s"))?;
        if !listening {
            child.wait().await?;
            return Ok(None);
        }
        // Keep reading, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Some(HttpUpstream {
            child,
            script: script.to_vec(),
            url: format!("http://127.0.0.1:{port}/mcp"),
            port,
        }))
    }
}

/// Run `client.mjs` against `url` with `key` (and an on-behalf-of header):
/// the script's steps, answered as `{"steps": [...]}` or `{"connect_error"}`.
pub async fn run_client(
    url: &str,
    key: &str,
    script: &Value,
    on_behalf_of: Option<&str>,
) -> anyhow::Result<Value> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(material_dir().join("client.mjs"))
        .arg(url)
        .arg(key)
        .arg(script.to_string());
    if let Some(h) = on_behalf_of {
        cmd.arg(h);
    }
    let out = cmd
        .current_dir(material_dir())
        .kill_on_drop(true)
        .output()
        .await
        .context("running the MCP client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "the MCP client printed no result (status {}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
