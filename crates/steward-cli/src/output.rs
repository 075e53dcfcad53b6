//! How the CLI shows things: tables for people, raw JSON for programs, and
//! one way to report an error.
//!
//! Everything written to stdout goes through [`say`], so a closed pipe
//! (`steward agents list | head`) ends the command quietly instead of
//! panicking.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use comfy_table::{Table, presets};
use serde::Serialize;
use steward_client::ClientError;
use steward_types::{ErrorCode, Page};

/// `-o/--output`: how results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for reading.
    #[default]
    Table,
    /// The JSON the server answered with, pretty-printed.
    Json,
}

/// A record that can be one row of a list table.
pub trait Tabular {
    /// Column headers, in upper case.
    const HEADERS: &'static [&'static str];
    /// What a list of these is called ("agents"), for the empty-list message.
    const PLURAL: &'static str;
    /// The cells of its row, one per header.
    fn row(&self) -> Vec<String>;
}

/// A record that can be shown on its own as `field  value` lines.
pub trait Detail {
    /// Field names and values, in display order.
    fn fields(&self) -> Vec<(&'static str, String)>;
}

/// Write one line (or several) to stdout.
pub fn say(text: impl AsRef<str>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", text.as_ref())?;
    stdout.flush()
}

/// Print a value as pretty JSON.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    say(serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Print a page of records: a table (with a hint when more pages exist) or
/// the page as JSON.
pub fn print_page<T: Tabular + Serialize>(
    format: OutputFormat,
    page: &Page<T>,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(page),
        OutputFormat::Table => {
            say(render_list(&page.items))?;
            if let Some(cursor) = &page.next_cursor {
                // On stderr, so the table stays clean for pipes.
                eprintln!(
                    "More {} exist: pass --cursor {cursor}, or --all.",
                    T::PLURAL
                );
            }
            Ok(())
        }
    }
}

/// Print one record: `field  value` lines, or the record as JSON.
pub fn print_record<T: Detail + Serialize>(format: OutputFormat, record: &T) -> anyhow::Result<()> {
    print_outcome(format, record, render_detail)
}

/// Print the answer to an action: the sentence `describe` makes of it, or the
/// answer as JSON.
pub fn print_outcome<T: Serialize>(
    format: OutputFormat,
    value: &T,
    describe: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print_json(value),
        OutputFormat::Table => {
            say(describe(value))?;
            Ok(())
        }
    }
}

/// A list of records as a table, or a sentence when there are none.
pub fn render_list<T: Tabular>(items: &[T]) -> String {
    if items.is_empty() {
        return format!("No {} found.", T::PLURAL);
    }
    table(T::HEADERS, items.iter().map(Tabular::row))
}

/// One record as aligned `field  value` lines.
pub fn render_detail<T: Detail>(record: &T) -> String {
    let mut table = bare_table();
    for (field, value) in record.fields() {
        table.add_row(vec![field.to_owned(), value]);
    }
    finish(table)
}

/// A table with the CLI's look: no borders, columns separated by spaces,
/// upper-case headers, like `kubectl get`.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = bare_table();
    table.set_header(headers.to_vec());
    table.add_rows(rows);
    finish(table)
}

/// Pad columns only on the right (two spaces apart) and render without
/// trailing blanks.
fn finish(mut table: Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

fn bare_table() -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    // The preset's borders are spaces: drop them all so lines start at
    // column 0 and columns are separated by padding alone.
    table.remove_style(comfy_table::TableComponent::LeftBorder);
    table.remove_style(comfy_table::TableComponent::RightBorder);
    table.remove_style(comfy_table::TableComponent::VerticalLines);
    table.remove_style(comfy_table::TableComponent::HeaderLines);
    table.remove_style(comfy_table::TableComponent::MiddleHeaderIntersections);
    table.remove_style(comfy_table::TableComponent::LeftHeaderIntersection);
    table.remove_style(comfy_table::TableComponent::RightHeaderIntersection);
    table.remove_style(comfy_table::TableComponent::TopBorder);
    table.remove_style(comfy_table::TableComponent::BottomBorder);
    table
}

/// A time as `YYYY-MM-DD HH:MM` UTC.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

/// An optional time, `-` when absent.
pub fn optional_time(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// A possibly empty text, `-` when empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A list joined with commas, `-` when empty.
pub fn list(items: &[String]) -> String {
    or_dash(&items.join(", "))
}

/// The error message for stderr: `error: {message} ({code})`, then what the
/// server added (details, request id) and a hint when one is obvious.
pub fn render_error(err: &anyhow::Error, server: &str, has_token: bool) -> String {
    // Some causes (TOML parse errors) end with a newline of their own.
    let mut lines = vec![format!("error: {err:#}").trim_end().to_owned()];
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api { detail, .. }) => {
            if let Some(details) = &detail.details {
                lines.push(format!("  details: {details}"));
            }
            if let Some(request_id) = &detail.request_id {
                lines.push(format!("  request id: {request_id}"));
            }
            if detail.code == ErrorCode::Unauthenticated && !has_token {
                lines.push("  hint: pass --token or set STEWARD_TOKEN".to_owned());
            }
        }
        Some(ClientError::Transport(_)) => {
            lines.push(format!(
                "  hint: is a Steward server running at {server}? (set --server or STEWARD_SERVER)"
            ));
        }
        _ => {}
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use steward_types::ErrorDetail;

    struct Fruit {
        name: &'static str,
        colour: &'static str,
    }

    impl Tabular for Fruit {
        const HEADERS: &'static [&'static str] = &["NAME", "COLOUR"];
        const PLURAL: &'static str = "fruits";
        fn row(&self) -> Vec<String> {
            vec![self.name.into(), self.colour.into()]
        }
    }

    impl Detail for Fruit {
        fn fields(&self) -> Vec<(&'static str, String)> {
            vec![("name", self.name.into()), ("colour", self.colour.into())]
        }
    }

    #[test]
    fn lists_are_aligned_columns_without_borders() {
        let fruits = [
            Fruit {
                name: "apple",
                colour: "red",
            },
            Fruit {
                name: "kiwi",
                colour: "green",
            },
        ];
        let rendered = render_list(&fruits);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 3, "{rendered}");
        assert!(lines[0].starts_with("NAME"), "{rendered}");
        assert!(lines[1].starts_with("apple"), "{rendered}");
        // Columns line up: COLOUR starts where red and green start.
        let column = lines[0].find("COLOUR").unwrap();
        assert_eq!(lines[1].find("red"), Some(column));
        assert_eq!(lines[2].find("green"), Some(column));
        assert!(lines.iter().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(render_list::<Fruit>(&[]), "No fruits found.");
    }

    #[test]
    fn details_are_field_value_lines() {
        let rendered = render_detail(&Fruit {
            name: "apple",
            colour: "red",
        });
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 2, "{rendered}");
        assert!(lines[0].starts_with("name") && lines[0].ends_with("apple"));
        assert!(lines[1].starts_with("colour") && lines[1].ends_with("red"));
    }

    #[test]
    fn times_are_minutes_in_utc() {
        let at = Utc.with_ymd_and_hms(2025, 3, 7, 9, 5, 59).unwrap();
        assert_eq!(time(&at), "2025-03-07 09:05");
        assert_eq!(optional_time(None), "-");
    }

    #[test]
    fn api_errors_print_message_and_code() {
        let err = anyhow::Error::new(ClientError::Api {
            status: 401,
            detail: Box::new(ErrorDetail::new(
                ErrorCode::Unauthenticated,
                "no credential",
            )),
        });
        assert_eq!(
            render_error(&err, "http://x", true),
            "error: no credential (unauthenticated)"
        );
        let without_token = render_error(&err, "http://x", false);
        assert!(without_token.contains("STEWARD_TOKEN"), "{without_token}");
    }

    #[test]
    fn transport_errors_name_the_server() {
        let err = anyhow::Error::new(ClientError::Transport("connection refused".into()));
        let rendered = render_error(&err, "http://127.0.0.1:9", true);
        assert!(rendered.starts_with("error: cannot reach the server: connection refused"));
        assert!(rendered.contains("http://127.0.0.1:9"), "{rendered}");
    }
}
