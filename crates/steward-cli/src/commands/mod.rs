//! The subcommands that talk to a running server, and what they share: the
//! client context, paging flags and argument parsers.

pub mod agents;
pub mod apply;
pub mod approvals;
pub mod audit;
pub mod behaviour;
pub mod check;
pub mod delegation;
pub mod humans;
pub mod keys;
pub mod mcp_servers;
pub mod personas;
pub mod policies;
pub mod quotas;
pub mod recert;
pub mod roles;
pub mod serve;
pub mod teams;
pub mod tenants;
pub mod tokens;

use std::collections::BTreeMap;

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use steward_client::{Client, ClientError};
use steward_types::{Page, PageQuery};

use crate::output::{self, OutputFormat, Tabular};

/// What every API command needs: a client and the output format.
pub struct Ctx {
    /// Client for `--server`, authenticated with `--token`.
    pub client: Client,
    /// `-o/--output`.
    pub output: OutputFormat,
}

/// Paging flags shared by every `list` command.
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// Records per page (1-500; the server's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Continue from this cursor (printed after a page that has more).
    #[arg(long, conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Follow cursors and list every record.
    #[arg(long)]
    pub all: bool,
}

impl PageArgs {
    /// A page query with this size and the given cursor.
    pub fn query(&self, cursor: Option<String>) -> PageQuery {
        PageQuery {
            cursor,
            limit: self.limit,
            ..PageQuery::default()
        }
    }
}

/// Fetch the page `args` asks for, or with `--all` every page, following
/// cursors. `fetch` gets the cursor to ask for.
pub async fn fetch_pages<T>(
    args: &PageArgs,
    mut fetch: impl AsyncFnMut(Option<String>) -> Result<Page<T>, ClientError>,
) -> anyhow::Result<Page<T>> {
    let first = fetch(args.cursor.clone()).await?;
    if !args.all {
        return Ok(first);
    }
    let mut items = first.items;
    let mut cursor = first.next_cursor;
    while let Some(current) = cursor {
        let mut page = fetch(Some(current.clone())).await?;
        if page.next_cursor.as_ref() == Some(&current) {
            bail!("the server returned the same cursor twice ({current}); stopping");
        }
        items.append(&mut page.items);
        cursor = page.next_cursor;
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// The one way a `list` command ends: fetch as `args` say, then print the
/// page as a table or as JSON.
pub async fn list<T: Tabular + Serialize>(
    ctx: &Ctx,
    args: &PageArgs,
    fetch: impl AsyncFnMut(Option<String>) -> Result<Page<T>, ClientError>,
) -> anyhow::Result<()> {
    let page = fetch_pages(args, fetch).await?;
    output::print_page(ctx.output, &page)
}

/// `steward whoami`.
pub async fn whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let me = ctx.client.whoami().await?;
    output::print_record(ctx.output, &me)
}

/// Parse `key=value` (for `--label`). The key may not be empty; the value may.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// Collect `--label` pairs into a map, refusing a key given twice.
pub fn labels_to_map(pairs: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (key, value) in pairs {
        if labels.insert(key.clone(), value).is_some() {
            bail!("label {key:?} is given twice");
        }
    }
    Ok(labels)
}

/// Parse an RFC 3339 time (`2025-12-31T23:59:00Z`) for `--expires-at`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| format!("expected an RFC 3339 time like 2025-12-31T23:59:00Z: {err}"))
}

/// `None` for an empty list, so the server applies its default.
pub fn non_empty(items: Vec<String>) -> Option<Vec<String>> {
    if items.is_empty() { None } else { Some(items) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_split_at_the_first_equals_sign() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("query=a=b"), Ok(("query".into(), "a=b".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=value").is_err());
    }

    #[test]
    fn a_label_key_may_be_given_only_once() {
        let pairs = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
        assert_eq!(labels_to_map(pairs).unwrap().len(), 2);
        let twice = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert!(labels_to_map(twice).is_err());
    }

    #[test]
    fn times_are_rfc3339_converted_to_utc() {
        let at = parse_time("2025-06-01T12:00:00+02:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2025-06-01T10:00:00+00:00");
        assert!(parse_time("tomorrow").is_err());
    }

    fn page(items: &[u32], next: Option<&str>) -> Page<u32> {
        Page {
            items: items.to_vec(),
            next_cursor: next.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn all_follows_cursors_until_the_last_page() {
        let args = PageArgs {
            all: true,
            ..PageArgs::default()
        };
        let mut asked = Vec::new();
        let result = fetch_pages(&args, async |cursor: Option<String>| {
            asked.push(cursor.clone());
            Ok(match cursor.as_deref() {
                None => page(&[1, 2], Some("c1")),
                Some("c1") => page(&[3], Some("c2")),
                _ => page(&[4], None),
            })
        })
        .await
        .unwrap();
        assert_eq!(result.items, [1, 2, 3, 4]);
        assert_eq!(result.next_cursor, None);
        assert_eq!(asked, [None, Some("c1".into()), Some("c2".into())]);
    }

    #[tokio::test]
    async fn without_all_one_page_is_fetched_from_the_given_cursor() {
        let args = PageArgs {
            cursor: Some("c9".into()),
            ..PageArgs::default()
        };
        let result = fetch_pages(&args, async |cursor: Option<String>| {
            assert_eq!(cursor.as_deref(), Some("c9"));
            Ok(page(&[7], Some("c10")))
        })
        .await
        .unwrap();
        assert_eq!(result.items, [7]);
        assert_eq!(result.next_cursor.as_deref(), Some("c10"));
    }

    #[tokio::test]
    async fn a_repeated_cursor_stops_the_loop() {
        let args = PageArgs {
            all: true,
            ..PageArgs::default()
        };
        let result = fetch_pages(&args, async |_cursor: Option<String>| {
            Ok(page(&[1], Some("same")))
        })
        .await;
        assert!(result.is_err());
    }
}
