//! `steward audit ...`: read the audit log as lines a person can read,
//! export it with a signed manifest, and verify it online or offline.

mod lines;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use steward_audit::{
    BundleReport, MANIFEST_FILE, SignedManifest, entries_file_name, verify_bundle,
};
use steward_types::{AuditEntry, AuditExportQuery, AuditFilter};

use self::lines::{Names, render_line};
use super::{Ctx, PageArgs, fetch_pages, list};
use crate::output::{self, OutputFormat, say};

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries as a table, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print the last entries as readable lines; with --follow, keep printing
    /// new ones as they are recorded (until Ctrl-C).
    Tail {
        /// How many of the last entries to print first (1-500).
        #[arg(short = 'n', long = "lines", default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..=500))]
        lines: u32,
        /// Keep polling for new entries every second.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Search the log and print one readable line per entry (`-o json`: one
    /// entry as JSON per line).
    Search {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Export a time range (your tenant's entries) with a manifest signed by
    /// the log's key: DIR/entries.jsonl (or entries.ocsf.jsonl) and
    /// DIR/manifest.json.
    Export {
        /// Entries at or after this time (RFC 3339; default: the beginning).
        #[arg(long)]
        since: Option<String>,
        /// Entries before this time (RFC 3339; default: now).
        #[arg(long)]
        until: Option<String>,
        /// JSON Lines of entries, or OCSF events for a SIEM.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Directory to write the bundle to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite a bundle already in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Verify the whole log on the server, or with --bundle an exported
    /// bundle offline (no server needed). Exit code 1 when anything is wrong.
    Verify {
        /// An exported bundle's directory: verify it offline.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// The log's public key you trust (base64, or a file holding it, or
        /// the JSON of `steward audit public-key -o json`); without it the
        /// key in the manifest is used, which proves integrity but not
        /// origin.
        #[arg(long, value_name = "KEY", requires = "bundle")]
        public_key: Option<String>,
    },
    /// Print the log's public key (to pin for offline verification).
    PublicKey,
    /// Print the latest signed checkpoint (tree head) of the log.
    Checkpoint,
}

/// What to show of the log; every filter given must match.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Entries about an agent (id or name): it acted, was acted on, or was
    /// in a decision's delegation chain.
    #[arg(long)]
    pub agent: Option<String>,
    /// Entries about a person (id or e-mail).
    #[arg(long)]
    pub human: Option<String>,
    /// Entries about a team (id or name) and its agents.
    #[arg(long)]
    pub team: Option<String>,
    /// An action, or a prefix ending in `*` (`decision.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// A resource: its id, or `type:id`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Decisions with this outcome.
    #[arg(long, value_parser = ["allow", "deny", "approval_required"])]
    pub decision: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    fn to_filter(&self, cursor: Option<String>, limit: Option<u32>) -> AuditFilter {
        AuditFilter {
            agent: self.agent.clone(),
            human: self.human.clone(),
            team: self.team.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            decision: self.decision.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            cursor,
            limit,
            ..AuditFilter::default()
        }
    }
}

/// `--format` of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One audit entry as JSON per line.
    Jsonl,
    /// One OCSF 1.3 API Activity event per line.
    Ocsf,
}

impl ExportFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Ocsf => "ocsf",
        }
    }
}

/// Run an `audit` subcommand.
pub async fn run(ctx: &Ctx, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { filter, page } => {
            list(ctx, &page, async |cursor| {
                ctx.client
                    .list_audit(&filter.to_filter(cursor, page.limit))
                    .await
            })
            .await
        }
        AuditCommand::Tail {
            lines,
            follow,
            filter,
        } => tail(ctx, lines, follow, &filter).await,
        AuditCommand::Search { filter, page } => search(ctx, &filter, &page).await,
        AuditCommand::Export {
            since,
            until,
            format,
            out,
            force,
        } => {
            let query = AuditExportQuery {
                since,
                until,
                format: Some(format.as_str().into()),
            };
            export(ctx, &query, &out, force).await
        }
        AuditCommand::Verify {
            bundle: Some(dir),
            public_key,
        } => verify_offline(ctx.output, &dir, public_key.as_deref()),
        AuditCommand::Verify { bundle: None, .. } => verify_online(ctx).await,
        AuditCommand::PublicKey => {
            let key = ctx.client.audit_public_key().await?;
            output::print_outcome(ctx.output, &key, |k| {
                format!(
                    "public_key  {}\nkey_id      {}\norigin      {}",
                    k.public_key, k.key_id, k.origin
                )
            })
        }
        AuditCommand::Checkpoint => {
            let c = ctx.client.audit_checkpoint().await?;
            output::print_outcome(ctx.output, &c, |c| {
                let signed = chrono::DateTime::from_timestamp_millis(c.time_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                format!(
                    "origin     {}\nsize       {}\nroot       {}\nsigned     {signed}\nkey_id     {}\nsignature  {}",
                    c.origin, c.size, c.root, c.key_id, c.signature
                )
            })
        }
    }
}

/// Print entries: readable lines, or with `-o json` one JSON entry a line.
fn print_entries(
    format: OutputFormat,
    names: &Names,
    entries: &[AuditEntry],
) -> anyhow::Result<()> {
    for entry in entries {
        let line = match format {
            OutputFormat::Json => serde_json::to_string(entry)?,
            OutputFormat::Table => render_line(entry, names),
        };
        say(line)?;
    }
    Ok(())
}

async fn tail(ctx: &Ctx, lines: u32, follow: bool, filter: &FilterArgs) -> anyhow::Result<()> {
    let mut names = Names::default();
    let mut query = filter.to_filter(None, Some(lines));
    query.last = Some(lines);
    let first = ctx.client.list_audit(&query).await?;
    names.learn(&ctx.client, &first.items).await;
    print_entries(ctx.output, &names, &first.items)?;
    if !follow {
        return Ok(());
    }
    let mut cursor = first.items.last().map(|e| e.seq.to_string());
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Everything new since the last entry printed, page by page.
        loop {
            let page = ctx
                .client
                .list_audit(&filter.to_filter(cursor.clone(), Some(500)))
                .await?;
            names.learn(&ctx.client, &page.items).await;
            print_entries(ctx.output, &names, &page.items)?;
            if let Some(last) = page.items.last() {
                cursor = Some(last.seq.to_string());
            }
            if page.next_cursor.is_none() {
                break;
            }
        }
    }
}

async fn search(ctx: &Ctx, filter: &FilterArgs, page: &PageArgs) -> anyhow::Result<()> {
    let found = fetch_pages(page, async |cursor| {
        ctx.client
            .list_audit(&filter.to_filter(cursor, page.limit))
            .await
    })
    .await?;
    let mut names = Names::default();
    names.learn(&ctx.client, &found.items).await;
    if found.items.is_empty() && ctx.output == OutputFormat::Table {
        say("No audit entries found.")?;
    }
    print_entries(ctx.output, &names, &found.items)?;
    if let Some(cursor) = &found.next_cursor {
        eprintln!("More audit entries exist: pass --cursor {cursor}, or --all.");
    }
    Ok(())
}

async fn export(
    ctx: &Ctx,
    query: &AuditExportQuery,
    out: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let bundle = ctx.client.audit_export(query).await?;
    let signed: SignedManifest = serde_json::from_value(bundle.manifest)
        .context("the server's manifest is not a signed bundle manifest")?;
    let manifest = &signed.manifest;
    let entries_path = out.join(entries_file_name(manifest.format));
    let manifest_path = out.join(MANIFEST_FILE);
    if !force {
        for path in [&entries_path, &manifest_path] {
            if path.exists() {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(&entries_path, bundle.entries.as_bytes())
        .with_context(|| format!("writing {}", entries_path.display()))?;
    let manifest_text = format!("{}\n", serde_json::to_string_pretty(&signed)?);
    std::fs::write(&manifest_path, manifest_text)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    // Check what was written, as anyone receiving it will.
    let report = verify_bundle(&signed, bundle.entries.as_bytes(), None);
    let summary = serde_json::json!({
        "entries_file": entries_path,
        "manifest_file": manifest_path,
        "entry_count": manifest.entry_count,
        "from_seq": manifest.from_seq,
        "to_seq": manifest.to_seq,
        "entries_sha256": manifest.entries_sha256,
        "verified": report.ok,
    });
    output::print_outcome(ctx.output, &summary, |_| {
        format!(
            "Exported {} entries (log positions {} to {}) to {}\nManifest signed by key {}: {}\nCheck it with: steward audit verify --bundle {}",
            manifest.entry_count,
            manifest.from_seq,
            manifest.to_seq,
            entries_path.display(),
            manifest.key_id,
            manifest_path.display(),
            out.display()
        )
    })?;
    if !report.ok {
        bail!(
            "the exported bundle does not verify: {}",
            describe_problem(&report)
        );
    }
    Ok(())
}

async fn verify_online(ctx: &Ctx) -> anyhow::Result<()> {
    let report = ctx.client.audit_verify().await?;
    output::print_outcome(ctx.output, &report, |r| {
        if r.ok {
            format!(
                "OK: {} entries verified; {} signed checkpoints match; signatures cover entries 1 to {}.\nroot {}",
                r.entries_checked, r.checkpoints_checked, r.checkpointed_size, r.root
            )
        } else {
            let at = r
                .first_bad_position
                .map(|p| format!(" at position {p}"))
                .unwrap_or_default();
            format!(
                "BAD{at}: {}\n({} entries checked before the problem.)",
                r.problem.as_deref().unwrap_or("unknown problem"),
                r.entries_checked
            )
        }
    })?;
    if !report.ok {
        let at = report
            .first_bad_position
            .map(|p| format!(" (first bad position {p})"))
            .unwrap_or_default();
        bail!("the audit log does not verify{at}");
    }
    Ok(())
}

/// The key to pin: base64 text, a file holding it, or the JSON of
/// `steward audit public-key -o json` (inline or in a file).
fn pinned_key(given: &str) -> anyhow::Result<String> {
    let path = Path::new(given);
    let text = if path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        given.to_owned()
    };
    let text = text.trim();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).context("the public key JSON")?;
        return value
            .get("public_key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("the public key JSON has no \"public_key\"");
    }
    Ok(text.to_owned())
}

/// Verify a bundle directory with no server: files, manifest signature,
/// digest, and every entry against the checkpoints.
fn verify_offline(
    format: OutputFormat,
    dir: &Path,
    public_key: Option<&str>,
) -> anyhow::Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let signed: SignedManifest = serde_json::from_str(&manifest_text)
        .with_context(|| format!("{} is not a bundle manifest", manifest_path.display()))?;
    let entries_path = dir.join(entries_file_name(signed.manifest.format));
    let entries = std::fs::read(&entries_path)
        .with_context(|| format!("reading {}", entries_path.display()))?;
    let pinned = public_key.map(pinned_key).transpose()?;
    let report = verify_bundle(&signed, &entries, pinned.as_deref());
    output::print_outcome(format, &report, |r| {
        render_bundle_report(r, &signed, &entries_path)
    })?;
    if !report.ok {
        bail!("the bundle does not verify: {}", describe_problem(&report));
    }
    Ok(())
}

fn render_bundle_report(r: &BundleReport, signed: &SignedManifest, file: &Path) -> String {
    let key = if r.key_pinned {
        format!("Key: {} (pinned)", r.public_key)
    } else {
        format!(
            "Key: {} (key id {}) taken from the manifest: this proves the bundle is intact, not \
             that it is your log's; pass --public-key to pin the key you trust.",
            r.public_key, signed.manifest.key_id
        )
    };
    if r.ok {
        let withheld = if r.withheld > 0 {
            format!(
                "; {} positions of other tenants or outside the range given as hashes only",
                r.withheld
            )
        } else {
            String::new()
        };
        format!(
            "{key}\nOK: {} entries in {} verified (log positions {} to {}{withheld}); manifest \
             signature, file digest and {} signed checkpoints match.",
            r.lines,
            file.display(),
            r.from_seq,
            r.to_seq,
            r.checkpoints_checked
        )
    } else {
        format!("{key}\nBAD: {}", describe_problem(r))
    }
}

/// "line 3 (log position 5): Entry 5 was modified: ...".
fn describe_problem(r: &BundleReport) -> String {
    let place = match (r.first_bad_line, r.first_bad_position) {
        (Some(line), Some(position)) => format!("line {line} (log position {position}): "),
        (Some(line), None) => format!("line {line}: "),
        (None, Some(position)) => format!("log position {position}: "),
        (None, None) => String::new(),
    };
    format!(
        "{place}{}",
        r.problem.as_deref().unwrap_or("unknown problem")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_key_may_be_text_json_or_a_file() {
        assert_eq!(pinned_key(" abc= ").unwrap(), "abc=");
        assert_eq!(
            pinned_key(r#"{"public_key": "xyz=", "key_id": "k"}"#).unwrap(),
            "xyz="
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.txt");
        std::fs::write(&file, "from-file=\n").unwrap();
        assert_eq!(pinned_key(file.to_str().unwrap()).unwrap(), "from-file=");
        assert!(pinned_key(r#"{"other": 1}"#).is_err());
    }

    #[test]
    fn problems_name_the_line_and_position() {
        let r = BundleReport {
            ok: false,
            public_key: "k".into(),
            key_pinned: false,
            from_seq: 1,
            to_seq: 9,
            lines: 3,
            positions_checked: 4,
            withheld: 1,
            checkpoints_checked: 0,
            checkpointed_size: 0,
            first_bad_position: Some(5),
            first_bad_line: Some(3),
            problem: Some("Entry 5 was modified.".into()),
            root: steward_audit::Hash::default(),
        };
        assert_eq!(
            describe_problem(&r),
            "line 3 (log position 5): Entry 5 was modified."
        );
    }
}
