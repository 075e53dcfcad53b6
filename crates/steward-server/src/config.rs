//! The one configuration struct. The CLI fills it from a TOML file, then
//! `STEWARD_*` environment variables, then flags (later wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `steward serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// `postgres://...` or `sqlite://...`; absent means SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// Folder of the embedded SQLite store (default `./steward-data`).
    pub data_dir: PathBuf,
    /// Bootstrap admin token; when absent one is generated at first start and
    /// printed once.
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Seconds between expiry sweeps (default 30).
    pub expiry_sweep_secs: u64,
    /// Seed the example personas and roles into a new default tenant (default true).
    pub seed_examples: bool,
    /// Log format: `pretty` or `json` (default `pretty`).
    pub log_format: String,
    /// Default spawn limit for agents without a persona.
    pub default_max_children: u32,
    /// Default spawn depth for agents without a persona.
    pub default_max_depth: u32,
    /// Days audit entries keep their payload (default 2557, seven years);
    /// older ones keep only what the tree needs, unless under a legal hold.
    pub audit_retention_days: u32,
    /// Extra data classifications beyond the built-in five.
    pub classifications: Vec<ClassificationConfig>,
    /// Seconds after which a reservation whose outcome was never reported
    /// settles at its estimate (default 900).
    pub quota_settle_secs: u64,
    /// Human approvals: chains per tier, lifetimes, the default approver group.
    pub approvals: ApprovalsConfig,
    /// PEM file of extra certificate authorities the MCP gateway trusts for
    /// `https://` upstreams (an internal CA), on top of the system's.
    pub mcp_upstream_ca_file: Option<PathBuf>,
    /// File holding the audit log's Ed25519 signing key (64 hex digits),
    /// kept apart from the store whose log it signs; created at first start
    /// (from the key the store held, if any). Without it, the key is kept
    /// in the store.
    pub audit_signing_key_file: Option<PathBuf>,
    /// Seconds an MCP gateway session may go without a request from its
    /// client (and with no answer streaming to it) before it is closed and
    /// its upstream ended (default 300). What the upstream sends does not
    /// keep a session open.
    pub mcp_session_idle_secs: u64,
    /// Seconds between passes that read new audit entries into agents'
    /// behavioural baselines and raise alerts (default 10; 0 turns the
    /// pass off on this node).
    pub behaviour_interval_secs: u64,
    /// Whether a tenant's admin tokens may register stdio MCP upstreams
    /// (default false: only the platform administrator may, since the
    /// command runs on this host as this server's user).
    pub mcp_stdio_tenant_admins: bool,
    /// Where webhook deliveries and MCP upstream requests may go
    /// (`[outbound] deny`, `allow`: CIDR ranges added to, and excepted
    /// from, the built-in refusals of metadata and link-local addresses).
    pub outbound: crate::outbound::OutboundConfig,
}

/// Human approvals (`[approvals]` in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Approver groups (human roles) per risk tier for registrations and
    /// tier-raising changes: `[approvals.chains] medium = ["security"]`.
    /// An empty chain means automatic.
    pub chains: steward_core::approval::TierChains,
    /// The group asked when a persona's `approval_required_for` names the
    /// action and no policy annotation names a group (default `approvers`).
    pub runtime_group: String,
    /// Seconds a pending runtime approval waits before it expires (default 3600).
    pub request_ttl_secs: u64,
    /// Seconds a pending registration or change approval waits (default 14 days).
    pub registration_ttl_secs: u64,
    /// Seconds approvers should decide within (the SLA; default 900).
    pub sla_secs: u64,
    /// Seconds an approved action may be retried, once (default 900).
    pub grant_ttl_secs: u64,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            chains: Default::default(),
            runtime_group: "approvers".into(),
            request_ttl_secs: 3600,
            registration_ttl_secs: 14 * 24 * 3600,
            sla_secs: 900,
            grant_ttl_secs: 900,
        }
    }
}

impl ApprovalsConfig {
    /// The lifetimes as the domain rules take them.
    pub fn times(&self) -> steward_core::approval::ApprovalTimes {
        // At least a second, at most ten years (no overflow).
        let secs = |s: u64| {
            chrono::Duration::seconds(i64::try_from(s.clamp(1, 10 * 365 * 86_400)).unwrap_or(1))
        };
        steward_core::approval::ApprovalTimes {
            request_ttl: secs(self.request_ttl_secs),
            registration_ttl: secs(self.registration_ttl_secs),
            sla: secs(self.sla_secs),
            grant_ttl: secs(self.grant_ttl_secs),
        }
    }
}

/// A custom data classification and the risk tiers it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationConfig {
    /// Name used in agents and personas.
    pub name: String,
    /// Tier when only read: `low`, `medium` or `high`.
    pub read: steward_types::RiskTier,
    /// Tier when written.
    pub write: steward_types::RiskTier,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from("./steward-data"),
            admin_token: None,
            max_body_bytes: 1024 * 1024,
            expiry_sweep_secs: 30,
            seed_examples: true,
            audit_retention_days: 2557,
            log_format: "pretty".into(),
            default_max_children: 10,
            default_max_depth: 3,
            classifications: Vec::new(),
            approvals: ApprovalsConfig::default(),
            quota_settle_secs: 900,
            mcp_upstream_ca_file: None,
            audit_signing_key_file: None,
            mcp_session_idle_secs: 300,
            behaviour_interval_secs: 10,
            mcp_stdio_tenant_admins: false,
            outbound: Default::default(),
        }
    }
}

impl Config {
    /// The database URL to connect to: the configured one, or SQLite under `data_dir`.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}/steward.db", self.data_dir.display()),
        }
    }
}
