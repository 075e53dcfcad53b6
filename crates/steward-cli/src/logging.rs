//! Log setup for the commands that run a server (`serve`, `demo`).

use std::io::IsTerminal;

use anyhow::anyhow;
use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Pretty,
    /// One JSON object per event, for log collectors.
    Json,
}

impl LogFormat {
    /// The name used in configuration: `pretty` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }

    /// Parse the configuration's `log_format`.
    pub fn parse(text: &str) -> anyhow::Result<LogFormat> {
        <LogFormat as ValueEnum>::from_str(text, false)
            .map_err(|_| anyhow!("log_format must be \"pretty\" or \"json\", not {text:?}"))
    }
}

/// Install the global subscriber: filter from `RUST_LOG`, else
/// `default_filter`; lines on stderr so stdout stays for what the command
/// prints.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|err| anyhow!("cannot set up logging: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_their_names_only() {
        assert_eq!(LogFormat::parse("pretty").unwrap(), LogFormat::Pretty);
        assert_eq!(LogFormat::parse("json").unwrap(), LogFormat::Json);
        assert!(LogFormat::parse("xml").is_err());
        assert!(LogFormat::parse("JSON").is_err());
    }
}
