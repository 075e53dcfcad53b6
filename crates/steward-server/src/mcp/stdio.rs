//! A stdio upstream: a child process speaking JSON-RPC, one message a line,
//! on its stdin and stdout.
//!
//! rmcp's own child transport drops a line over its cap without a word, so
//! an answer that large looked like no answer and its request ended only
//! at the timeout. Here the child's stdout is read through [`Capped`], which
//! ends the upstream at such a line and says why: the requests waiting on
//! it fail at once with an error that names the cap.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::{AsyncRwTransport, DEFAULT_MAX_LINE_LENGTH};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};

/// The longest message a stdio upstream may send, in bytes without its
/// newline: as much as rmcp's Streamable HTTP client takes in one event.
pub(super) const MAX_MESSAGE_BYTES: usize = DEFAULT_MAX_LINE_LENGTH;

/// Variables a stdio upstream inherits from the gateway's environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR", "USER"];

/// How long a closed upstream has to exit on its own, and then after
/// `SIGTERM`, before it is killed (the MCP specification's stdio shutdown).
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// A running stdio upstream. Dropped, it kills the child's whole process
/// group.
pub(super) struct StdioUpstream {
    child: Option<Box<dyn ChildWrapper>>,
    overflowed: Arc<AtomicBool>,
    transport: AsyncRwTransport<RoleClient, Capped<ChildStdout>, ChildStdin>,
}

impl StdioUpstream {
    /// Start `command` with `args` and `env` (and of Steward's own
    /// environment only what programs need to run at all: its admin token
    /// and database URL are not the upstream's business). `overflowed` is
    /// set if the upstream ends for a message over [`MAX_MESSAGE_BYTES`].
    pub(super) fn spawn(
        command: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        overflowed: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(args).env_clear();
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // Its own process group, killed whole: what a wrapper command
        // started dies with it.
        let mut cmd = CommandWrap::from(cmd);
        #[cfg(unix)]
        cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
        cmd.wrap(process_wrap::tokio::KillOnDrop);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (
            child.inner_mut().stdin().take(),
            child.inner_mut().stdout().take(),
        ) else {
            return Err(io::Error::other("the child's stdin or stdout is missing"));
        };
        let stdout = Capped {
            inner: stdout,
            line: 0,
            cap: MAX_MESSAGE_BYTES,
            overflowed: overflowed.clone(),
        };
        Ok(Self {
            child: Some(child),
            overflowed,
            // rmcp counts the newline; the cap has already held the rest.
            transport: AsyncRwTransport::new_client(stdout, stdin)
                .with_max_line_length(MAX_MESSAGE_BYTES + 1),
        })
    }

    /// Close the child's stdin and give it time to exit, then `SIGTERM`,
    /// then kill its process group.
    async fn shut_down(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // One that sent a message past the cap is still writing it, and is
        // no peer to wait for.
        if self.overflowed.load(Ordering::Acquire) {
            return Box::into_pin(child.kill()).await;
        }
        let closed = self.transport.close().await;
        #[allow(unused_mut)]
        let mut done = exited(&mut child).await;
        #[cfg(unix)]
        if !done && child.signal(libc::SIGTERM).is_ok() {
            done = exited(&mut child).await;
        }
        if !done {
            Box::into_pin(child.kill()).await?;
            return closed;
        }
        // The first process has exited; what it started in its group (a
        // wrapper's background job, say) goes with it.
        #[cfg(unix)]
        let _ = child.signal(libc::SIGKILL);
        closed
    }
}

/// Whether `child` exits within [`EXIT_GRACE`].
async fn exited(child: &mut Box<dyn ChildWrapper>) -> bool {
    matches!(
        tokio::time::timeout(EXIT_GRACE, child.wait()).await,
        Ok(Ok(_))
    )
}

impl Drop for StdioUpstream {
    fn drop(&mut self) {
        // `kill` (not only `start_kill`) also reaps the child, leaving no
        // zombie.
        let Some(mut child) = self.child.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = Box::into_pin(child.kill()).await {
                        tracing::warn!(error = %e, "could not kill a stdio MCP upstream");
                    }
                });
            }
            // The runtime has gone: kill without waiting to reap.
            Err(_) => {
                let _ = child.start_kill();
            }
        }
    }
}

impl Transport<RoleClient> for StdioUpstream {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.transport.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.transport.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.shut_down()
    }
}

/// A reader of newline-separated messages that fails, and sets
/// `overflowed`, once a message runs past `cap` bytes, before the rest of
/// it is read.
struct Capped<R> {
    inner: R,
    /// Bytes of the current message read so far.
    line: usize,
    cap: usize,
    overflowed: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        // The first piece continues the message under way; each later one
        // starts a message; the last is where the next read resumes.
        let mut line = this.line;
        let over = buf.filled()[before..]
            .split(|b| *b == b'\n')
            .enumerate()
            .any(|(i, piece)| {
                line = if i == 0 {
                    line + piece.len()
                } else {
                    piece.len()
                };
                line > this.cap
            });
        if over {
            // A reader that fails has read nothing.
            buf.set_filled(before);
            this.overflowed.store(true, Ordering::Release);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message over {} bytes", this.cap),
            )));
        }
        this.line = line;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(input: &'static [u8], cap: usize) -> (io::Result<Vec<u8>>, bool) {
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut reader = Capped {
            // Small reads, so that messages span them.
            inner: tokio::io::BufReader::with_capacity(3, input),
            line: 0,
            cap,
            overflowed: overflowed.clone(),
        };
        let mut out = Vec::new();
        let read = reader.read_to_end(&mut out).await.map(|_| out);
        (read, overflowed.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn messages_up_to_the_cap_pass_and_a_longer_one_ends_the_stream() {
        let (read, overflowed) = read_all(b"12345\n1234\n\n12345", 5).await;
        assert_eq!(read.unwrap(), b"12345\n1234\n\n12345");
        assert!(!overflowed);
        // Over the cap in the middle of the stream, even before its newline.
        let (read, overflowed) = read_all(b"12\n123456\n12\n", 5).await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(overflowed);
        let (read, overflowed) = read_all(b"1234567", 5).await;
        assert!(read.is_err() && overflowed);
    }
}
