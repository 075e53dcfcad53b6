//! `steward serve`: build the one configuration (TOML file, then `STEWARD_*`
//! environment variables, then flags; later wins) and run the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use steward_server::Config;

use crate::logging::{self, LogFormat};
use crate::output::say;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "steward.toml";

/// `steward serve`. Each option also reads its `STEWARD_*` variable; a flag
/// beats the variable, and both beat the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (default: ./steward.toml when it exists).
    #[arg(long, env = "STEWARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "STEWARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// postgres://... or sqlite://... (default: SQLite under the data dir).
    #[arg(
        long,
        env = "STEWARD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Folder of the embedded SQLite store (default ./steward-data).
    #[arg(long, env = "STEWARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bootstrap admin token (prefer the variable: flags show in `ps`).
    /// Without one, a token is generated at first start and printed once.
    #[arg(
        long,
        env = "STEWARD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    #[arg(long, env = "STEWARD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds between sweeps that expire agents (default 30).
    #[arg(long, env = "STEWARD_EXPIRY_SWEEP_SECS", value_name = "SECS")]
    pub expiry_sweep_secs: Option<u64>,
    /// Log format (default pretty). `RUST_LOG` sets the filter (default info).
    #[arg(long, env = "STEWARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM file of extra certificate authorities the MCP gateway trusts for
    /// https:// upstreams, on top of the system's.
    #[arg(long, env = "STEWARD_MCP_UPSTREAM_CA_FILE", value_name = "FILE")]
    pub mcp_upstream_ca_file: Option<PathBuf>,
    /// File with the audit log's signing key, kept apart from the store
    /// (created at first start, from the store's key if it had one).
    #[arg(long, env = "STEWARD_AUDIT_SIGNING_KEY_FILE", value_name = "FILE")]
    pub audit_signing_key_file: Option<PathBuf>,
}

/// Run the server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args, Path::new(DEFAULT_CONFIG_FILE))?;
    logging::init(LogFormat::parse(&config.log_format)?, "info")?;
    let running = steward_server::start(config)
        .await
        .context("cannot start the server")?;
    let signal = steward_server::ShutdownSignal::listen()?;
    say(format!("Steward listening on {}", running.url()))?;
    if let Some(token) = running.generated_admin_token() {
        say(format!(
            "\nBootstrap admin token (shown once, store it now): {token}\n\
             Use it with: export STEWARD_TOKEN=<the token above>\n"
        ))?;
    }
    running.stop_on(signal).await?;
    Ok(())
}

/// The configuration `args` describe: the file (`--config`, else
/// `default_file` when it exists, else built-in defaults), with every option
/// that was given (by variable or flag) laid over it.
pub fn load_config(args: &ServeArgs, default_file: &Path) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => Some(path.as_path()),
        None => default_file.is_file().then_some(default_file),
    };
    let base = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration file {}", path.display()))?;
            parse_config(&text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?
        }
        None => Config::default(),
    };
    let config = apply_overrides(base, args);
    // The file may say anything; fail now rather than after binding.
    LogFormat::parse(&config.log_format)?;
    Ok(config)
}

/// Parse a TOML configuration; absent keys keep their defaults, unknown keys
/// are errors.
pub fn parse_config(text: &str) -> anyhow::Result<Config> {
    Ok(toml::from_str(text)?)
}

/// Lay the options that were given over `config`.
pub fn apply_overrides(mut config: Config, args: &ServeArgs) -> Config {
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = &args.database_url {
        config.database_url = Some(url.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(token) = &args.admin_token {
        config.admin_token = Some(token.clone());
    }
    if let Some(bytes) = args.max_body_bytes {
        config.max_body_bytes = bytes;
    }
    if let Some(secs) = args.expiry_sweep_secs {
        config.expiry_sweep_secs = secs;
    }
    if let Some(format) = args.log_format {
        config.log_format = format.as_str().to_owned();
    }
    if let Some(file) = &args.mcp_upstream_ca_file {
        config.mcp_upstream_ca_file = Some(file.clone());
    }
    if let Some(file) = &args.audit_signing_key_file {
        config.audit_signing_key_file = Some(file.clone());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn flags(args: &[&str]) -> ServeArgs {
        let argv = std::iter::once("serve").chain(args.iter().copied());
        Harness::try_parse_from(argv).unwrap().serve
    }

    fn write_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("steward.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn without_a_file_or_options_the_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("steward.toml");
        let config = load_config(&ServeArgs::default(), &missing).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn options_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            &dir,
            r#"
                listen = "0.0.0.0:9000"
                data_dir = "/var/lib/steward"
                max_body_bytes = 2048
                log_format = "json"
            "#,
        );
        let args = flags(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7000",
            "--log-format",
            "pretty",
        ]);
        let config = load_config(&args, Path::new("/nonexistent")).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.log_format, "pretty");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/steward"));
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(
            config.expiry_sweep_secs,
            Config::default().expiry_sweep_secs
        );
    }

    #[test]
    fn the_default_file_is_read_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "admin_token = \"stwt_from_file\"\n");
        let config = load_config(&ServeArgs::default(), &path).unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("stwt_from_file"));
        let args = flags(&["--admin-token", "stwt_from_flag"]);
        let config = load_config(&args, &path).unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("stwt_from_flag"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let err = parse_config("listen_addr = \"127.0.0.1:1\"").unwrap_err();
        assert!(format!("{err:#}").contains("listen_addr"), "{err:#}");
        assert!(parse_config("listen = \"not an address\"").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "log_format = \"xml\"");
        let err = load_config(&ServeArgs::default(), &path).unwrap_err();
        assert!(format!("{err:#}").contains("xml"), "{err:#}");
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let args = flags(&["--config", "/nonexistent/steward.toml"]);
        let err = load_config(&args, Path::new("/nonexistent")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/steward.toml"));
    }

    #[test]
    fn every_option_reads_its_environment_variable() {
        let command = Harness::command();
        let env_of = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_env())
                .and_then(|env| env.to_str())
                .map(str::to_owned)
        };
        for (id, variable) in [
            ("config", "STEWARD_CONFIG"),
            ("listen", "STEWARD_LISTEN"),
            ("database_url", "STEWARD_DATABASE_URL"),
            ("data_dir", "STEWARD_DATA_DIR"),
            ("admin_token", "STEWARD_ADMIN_TOKEN"),
            ("max_body_bytes", "STEWARD_MAX_BODY_BYTES"),
            ("expiry_sweep_secs", "STEWARD_EXPIRY_SWEEP_SECS"),
            ("log_format", "STEWARD_LOG_FORMAT"),
            ("mcp_upstream_ca_file", "STEWARD_MCP_UPSTREAM_CA_FILE"),
            ("audit_signing_key_file", "STEWARD_AUDIT_SIGNING_KEY_FILE"),
        ] {
            assert_eq!(env_of(id).as_deref(), Some(variable), "{id}");
        }
    }
}
