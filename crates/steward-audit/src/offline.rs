//! Export bundles as files, and their verification with nothing but the
//! files and a public key.
//!
//! A bundle is a manifest ([`SignedManifest`]) and an entries file of one
//! JSON object per line. Each line carries one entry of the exporting
//! tenant: as the entry itself (JSON Lines) or as an OCSF 1.3 API Activity
//! event with the entry under `unmapped.steward.entry` (OCSF). The file
//! covers the log positions `from_seq..=to_seq` without gaps: positions held
//! by other tenants' entries (or by entries outside the time range, or whose
//! payload was pruned) are listed only as their sequence number and leaf
//! hash, under `withheld_before` of the next line (`withheld_after` of the
//! last line for those after it), so the verifier can rebuild the Merkle
//! tree up to the manifest's checkpoints without learning anything about
//! them.
//!
//! [`export_line`] writes a line and [`verify_bundle`] checks a whole
//! bundle, so the writer and the checker share one definition of the format.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::bundle::{BundleFormat, SignedManifest, verify_manifest};
use crate::canonical::canonical_json;
use crate::hash::Hash;
use crate::verify::LogVerifier;

mod ocsf;

pub use ocsf::ocsf_event;

/// The manifest's file name in a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// The entries file's name in a bundle directory for a format.
pub fn entries_file_name(format: BundleFormat) -> &'static str {
    match format {
        BundleFormat::Jsonl => "entries.jsonl",
        BundleFormat::Ocsf => "entries.ocsf.jsonl",
    }
}

/// A log position whose entry is not in the bundle: only its leaf hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldEntry {
    /// The position (sequence number).
    pub seq: u64,
    /// The entry's leaf hash, hex.
    pub leaf_hash: Hash,
}

/// The bytes an entry's leaf hash covers, from the entry as JSON (an
/// `AuditEntry` as the API writes it): the same bytes as
/// `steward_store::audit::canonical_entry`. Fails when a field has the wrong
/// type or the time is not RFC 3339.
pub fn canonical_entry(entry: &Value) -> Result<Vec<u8>, String> {
    let object = entry
        .as_object()
        .ok_or_else(|| "the entry is not a JSON object".to_owned())?;
    let field = |name: &str| object.get(name).cloned().unwrap_or(Value::Null);
    let seq = object
        .get("seq")
        .and_then(Value::as_i64)
        .ok_or_else(|| "the entry has no integer \"seq\"".to_owned())?;
    let time = object
        .get("time")
        .and_then(Value::as_str)
        .and_then(rfc3339_millis)
        .ok_or_else(|| "the entry has no RFC 3339 \"time\"".to_owned())?;
    let actor = object
        .get("actor")
        .and_then(Value::as_object)
        .ok_or_else(|| "the entry has no \"actor\" object".to_owned())?;
    let actor_field = |name: &str| actor.get(name).cloned().unwrap_or(Value::Null);
    let mut canonical = json!({
        "seq": seq,
        "time": time,
        "tenant_id": field("tenant_id"),
        "actor": {
            "kind": actor_field("kind"),
            "id": actor_field("id"),
            "human_id": actor_field("human_id"),
        },
        "action": field("action"),
        "resource_type": field("resource_type"),
        "resource_id": field("resource_id"),
        "before": field("before"),
        "after": field("after"),
        "reason": field("reason"),
        "request_id": field("request_id"),
    });
    // The source address joined the log later: it is covered when present,
    // and entries without one hash as they always did.
    if let (Some(source), Some(map)) = (
        object.get("source").filter(|v| !v.is_null()),
        canonical.as_object_mut(),
    ) {
        map.insert("source".into(), source.clone());
    }
    Ok(canonical_json(&canonical))
}

/// One line of an entries file (without the newline): the entry (an
/// `AuditEntry` as JSON, with its `leaf_hash`) in the bundle's format, and
/// the withheld positions just before it and, on the last line, after it.
pub fn export_line(
    format: BundleFormat,
    entry: &Value,
    withheld_before: &[WithheldEntry],
    withheld_after: &[WithheldEntry],
) -> Value {
    match format {
        BundleFormat::Jsonl => {
            let mut line = entry.as_object().cloned().unwrap_or_default();
            add_withheld(&mut line, withheld_before, withheld_after);
            Value::Object(line)
        }
        BundleFormat::Ocsf => {
            let mut steward = Map::new();
            steward.insert("entry".into(), entry.clone());
            add_withheld(&mut steward, withheld_before, withheld_after);
            let mut event = ocsf_event(entry);
            if let Some(fields) = event.as_object_mut() {
                fields.insert("unmapped".into(), json!({ "steward": steward }));
            }
            event
        }
    }
}

fn add_withheld(
    fields: &mut Map<String, Value>,
    withheld_before: &[WithheldEntry],
    withheld_after: &[WithheldEntry],
) {
    for (name, list) in [
        ("withheld_before", withheld_before),
        ("withheld_after", withheld_after),
    ] {
        if !list.is_empty() {
            fields.insert(name.into(), json!(list));
        }
    }
}

/// Writes an entries file: feed the positions in log order, exported
/// entries with [`BundleWriter::entry`] and the others with
/// [`BundleWriter::withheld`]; withheld positions ride on the next line
/// (on the last line when none follows).
#[derive(Debug, Clone)]
pub struct BundleWriter {
    format: BundleFormat,
    lines: Vec<(Value, Vec<WithheldEntry>)>,
    pending: Vec<WithheldEntry>,
}

impl BundleWriter {
    /// An empty file in `format`.
    pub fn new(format: BundleFormat) -> Self {
        Self {
            format,
            lines: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The next position is this exported entry (an `AuditEntry` as JSON,
    /// with its `leaf_hash`).
    pub fn entry(&mut self, entry: Value) {
        let before = std::mem::take(&mut self.pending);
        self.lines.push((entry, before));
    }

    /// The next position is withheld: only its leaf hash is written.
    pub fn withheld(&mut self, seq: u64, leaf_hash: Hash) {
        self.pending.push(WithheldEntry { seq, leaf_hash });
    }

    /// Entries written so far.
    pub fn entry_count(&self) -> u64 {
        self.lines.len() as u64
    }

    /// The file's text: one line per exported entry, each ending in `\n`.
    /// Withheld positions after the last entry go on that line; with no
    /// entry at all there is nothing to carry them (callers start and end
    /// the range on exported entries).
    pub fn finish(self) -> String {
        let count = self.lines.len();
        let mut out = String::new();
        for (i, (entry, before)) in self.lines.into_iter().enumerate() {
            let after: &[WithheldEntry] = if i + 1 == count { &self.pending } else { &[] };
            out.push_str(&export_line(self.format, &entry, &before, after).to_string());
            out.push('\n');
        }
        out
    }
}

/// The parts of a line: the entry and the withheld positions around it.
struct LineParts {
    entry: Value,
    before: Vec<WithheldEntry>,
    after: Vec<WithheldEntry>,
}

fn line_parts(format: BundleFormat, line: &Value) -> Result<LineParts, String> {
    let holder = match format {
        BundleFormat::Jsonl => line,
        BundleFormat::Ocsf => line
            .pointer("/unmapped/steward")
            .ok_or_else(|| "the OCSF event has no unmapped.steward".to_owned())?,
    };
    let withheld = |name: &str| -> Result<Vec<WithheldEntry>, String> {
        match holder.get(name) {
            None => Ok(Vec::new()),
            Some(list) => serde_json::from_value(list.clone())
                .map_err(|e| format!("\"{name}\" is not a list of positions and hashes: {e}")),
        }
    };
    let entry = match format {
        BundleFormat::Jsonl => {
            let mut entry = holder.as_object().cloned().unwrap_or_default();
            entry.remove("withheld_before");
            entry.remove("withheld_after");
            Value::Object(entry)
        }
        BundleFormat::Ocsf => holder
            .get("entry")
            .cloned()
            .ok_or_else(|| "the OCSF event has no unmapped.steward.entry".to_owned())?,
    };
    Ok(LineParts {
        entry,
        before: withheld("withheld_before")?,
        after: withheld("withheld_after")?,
    })
}

/// What checking a bundle found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleReport {
    /// True when nothing is wrong.
    pub ok: bool,
    /// The public key the bundle was checked with, base64.
    pub public_key: String,
    /// Whether that key was given by the person verifying (pinned) rather
    /// than taken from the manifest.
    pub key_pinned: bool,
    /// The first and last log positions the bundle covers.
    pub from_seq: u64,
    /// See `from_seq`.
    pub to_seq: u64,
    /// Lines (exported entries) read.
    pub lines: u64,
    /// Log positions verified: exported entries and withheld ones.
    pub positions_checked: u64,
    /// Of those, positions given only as a leaf hash.
    pub withheld: u64,
    /// Checkpoints whose root matched.
    pub checkpoints_checked: u64,
    /// The largest tree size a matching checkpoint covers.
    pub checkpointed_size: u64,
    /// The log position of the first entry found bad.
    pub first_bad_position: Option<u64>,
    /// The line of the entries file where the problem was found (1-based).
    pub first_bad_line: Option<u64>,
    /// What is wrong, as a sentence for a person.
    pub problem: Option<String>,
    /// The root over every position verified (the prefix included).
    pub root: Hash,
}

struct Finding {
    position: Option<u64>,
    line: Option<u64>,
    problem: String,
}

/// Checks a bundle offline: the manifest's signature (with `pinned_key`,
/// base64, or else the key the manifest carries), the entries file's
/// SHA-256, then every line, re-encoded and re-hashed and fed with the
/// withheld positions through a [`LogVerifier`] against the manifest's
/// checkpoints. Modification, deletion, insertion or reordering of any line
/// is detected; the report names the first bad log position and line.
pub fn verify_bundle(
    signed: &SignedManifest,
    entries_file: &[u8],
    pinned_key: Option<&str>,
) -> BundleReport {
    let manifest = &signed.manifest;
    let key = pinned_key
        .map(str::trim)
        .unwrap_or(manifest.public_key.as_str());
    let mut report = BundleReport {
        ok: false,
        public_key: key.to_owned(),
        key_pinned: pinned_key.is_some(),
        from_seq: manifest.from_seq,
        to_seq: manifest.to_seq,
        lines: 0,
        positions_checked: 0,
        withheld: 0,
        checkpoints_checked: 0,
        checkpointed_size: 0,
        first_bad_position: None,
        first_bad_line: None,
        problem: None,
        root: Hash::default(),
    };
    let fail = |mut report: BundleReport, finding: Finding| {
        report.first_bad_position = finding.position;
        report.first_bad_line = finding.line;
        report.problem = Some(finding.problem);
        report
    };
    if let Err(error) = verify_manifest(key, signed) {
        let problem = format!("The manifest is not the log's, unaltered: {error}.");
        return fail(
            report,
            Finding {
                position: None,
                line: None,
                problem,
            },
        );
    }
    if let Some(other) = manifest
        .checkpoints
        .iter()
        .find(|c| c.head.origin != manifest.origin)
    {
        let problem = format!(
            "The manifest names the log \"{}\" but one of its checkpoints names \"{}\".",
            manifest.origin, other.head.origin
        );
        return fail(
            report,
            Finding {
                position: None,
                line: None,
                problem,
            },
        );
    }
    if manifest.from_seq == 0 {
        let problem = "The manifest's first position is 0; positions start at 1.".to_owned();
        return fail(
            report,
            Finding {
                position: None,
                line: None,
                problem,
            },
        );
    }
    let digest_ok = manifest.check_entries_file(entries_file).is_ok();

    let scan = scan_lines(signed, entries_file, key, !digest_ok);
    report.lines = scan.lines;
    report.withheld = scan.withheld;
    let log = scan.verifier.finish();
    report.positions_checked = log.entries_checked;
    report.checkpoints_checked = log.checkpoints_checked;
    report.checkpointed_size = log.checkpointed_size;
    report.root = log.root;

    // A line that cannot be read stops the scan (the verifier's complaint
    // about the missing rest is then beside the point); a line that no
    // longer matches the entry it carries (an OCSF field edited) is found
    // only by comparing. Report whichever comes first in the file.
    let from_log = match scan.read_error {
        Some(finding) => Some(finding),
        None => (!log.ok).then(|| Finding {
            position: log.first_bad_position,
            line: scan.failed_line,
            problem: log.problem.unwrap_or_default(),
        }),
    };
    let line_order = |f: &Finding| f.line.unwrap_or(u64::MAX);
    let finding = match (from_log, scan.mismatch) {
        (Some(a), Some(b)) if line_order(&b) < line_order(&a) => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    if let Some(mut finding) = finding {
        if !digest_ok {
            finding.problem.push_str(
                " The entries file's SHA-256 also differs from the one the manifest signed.",
            );
        }
        return fail(report, finding);
    }
    if !digest_ok {
        let problem = "The entries file is not the one the manifest signed (its SHA-256 \
                       differs), though every entry in it still verifies: it was reformatted, \
                       or blank lines were added."
            .to_owned();
        return fail(
            report,
            Finding {
                position: None,
                line: None,
                problem,
            },
        );
    }
    if let Some(problem) = coverage_problem(signed, &report, scan.last_seq) {
        return fail(
            report,
            Finding {
                position: None,
                line: None,
                problem,
            },
        );
    }
    report.ok = true;
    report
}

/// Whether the lines cover what the manifest says, all under a checkpoint.
fn coverage_problem(signed: &SignedManifest, report: &BundleReport, last: u64) -> Option<String> {
    let manifest = &signed.manifest;
    if report.lines != manifest.entry_count {
        return Some(format!(
            "The entries file has {} entries; the manifest says {}.",
            report.lines, manifest.entry_count
        ));
    }
    if manifest.entry_count == 0 {
        return None;
    }
    if last != manifest.to_seq {
        return Some(format!(
            "The entries file ends at position {last}; the manifest says {}.",
            manifest.to_seq
        ));
    }
    if report.checkpointed_size < manifest.to_seq {
        return Some(format!(
            "Positions {} to {} are not covered by any signed checkpoint in the manifest.",
            report.checkpointed_size.max(manifest.from_seq - 1) + 1,
            manifest.to_seq
        ));
    }
    None
}

struct Scan {
    verifier: LogVerifier,
    lines: u64,
    withheld: u64,
    last_seq: u64,
    failed_line: Option<u64>,
    read_error: Option<Finding>,
    mismatch: Option<Finding>,
}

/// Feed every line to the verifier; with `compare`, also find the first
/// line that differs from what its entry makes.
fn scan_lines(signed: &SignedManifest, file: &[u8], key: &str, compare: bool) -> Scan {
    let manifest = &signed.manifest;
    let prefix = manifest.from_seq - 1;
    let mut scan = Scan {
        verifier: LogVerifier::after_prefix(
            prefix,
            &manifest.prefix_subtrees,
            &manifest.checkpoints,
            key,
        ),
        lines: 0,
        withheld: 0,
        last_seq: prefix,
        failed_line: None,
        read_error: None,
        mismatch: None,
    };
    if !scan.verifier.is_ok() {
        return scan;
    }
    let mut pieces: Vec<&[u8]> = file.split(|b| *b == b'\n').collect();
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    for (index, bytes) in pieces.into_iter().enumerate() {
        let line_no = index as u64 + 1;
        scan.lines = line_no;
        let expected = scan.last_seq + 1;
        let parts = serde_json::from_slice::<Value>(bytes)
            .map_err(|e| format!("it is not JSON ({e})"))
            .and_then(|line| line_parts(manifest.format, &line).map(|parts| (line, parts)));
        let (line, parts) = match parts {
            Ok(found) => found,
            Err(why) => {
                scan.fail_line(line_no, expected, why);
                return scan;
            }
        };
        if !scan.push(line_no, &parts) {
            return scan;
        }
        if compare && scan.mismatch.is_none() {
            let rebuilt = export_line(manifest.format, &parts.entry, &parts.before, &parts.after);
            if rebuilt != line {
                scan.mismatch = Some(Finding {
                    position: Some(scan.last_seq),
                    line: Some(line_no),
                    problem: format!(
                        "Line {line_no} (entry {}) was modified: its fields no longer match \
                         the entry it carries.",
                        scan.last_seq
                    ),
                });
            }
        }
    }
    scan
}

impl Scan {
    /// Push one line's withheld positions and entry; false on a problem.
    fn push(&mut self, line_no: u64, parts: &LineParts) -> bool {
        for withheld in &parts.before {
            if !self.push_withheld(line_no, withheld) {
                return false;
            }
        }
        let expected = self.last_seq + 1;
        let canonical = match canonical_entry(&parts.entry) {
            Ok(bytes) => bytes,
            Err(why) => {
                self.fail_line(line_no, expected, why);
                return false;
            }
        };
        let stored = parts
            .entry
            .get("leaf_hash")
            .and_then(Value::as_str)
            .and_then(|hex| Hash::from_hex(hex).ok());
        let Some(stored) = stored else {
            self.fail_line(line_no, expected, "the entry has no valid leaf_hash".into());
            return false;
        };
        let seq = parts
            .entry
            .get("seq")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        if !self.verifier.push(seq, &canonical, Some(stored)) {
            self.failed_line = Some(line_no);
            return false;
        }
        self.last_seq = seq;
        for withheld in &parts.after {
            if !self.push_withheld(line_no, withheld) {
                return false;
            }
        }
        true
    }

    fn push_withheld(&mut self, line_no: u64, withheld: &WithheldEntry) -> bool {
        if !self.verifier.push_pruned(withheld.seq, withheld.leaf_hash) {
            self.failed_line = Some(line_no);
            return false;
        }
        self.withheld += 1;
        self.last_seq = withheld.seq;
        true
    }

    /// A line that cannot be read: the entry expected there is bad.
    fn fail_line(&mut self, line_no: u64, expected: u64, why: String) {
        self.failed_line = Some(line_no);
        self.read_error = Some(Finding {
            position: Some(expected),
            line: Some(line_no),
            problem: format!(
                "Line {line_no}, where entry {expected} was expected, cannot be read: {why}."
            ),
        });
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time
/// (`2026-11-26T10:02:00.123Z`, `...+01:00`); fractions beyond
/// milliseconds are truncated, as the log stores them.
pub fn rfc3339_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    if bytes.len() < 20
        || bytes.get(4) != Some(&b'-')
        || bytes.get(7) != Some(&b'-')
        || !matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        || bytes.get(13) != Some(&b':')
        || bytes.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = 19;
    let mut millis = 0;
    if bytes.get(rest) == Some(&b'.') {
        let start = rest + 1;
        let mut end = start;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        let digits = text.get(start..end.min(start + 3))?;
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
        rest = end;
    }
    let offset_minutes = match text.get(rest..)? {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.as_bytes().get(3) == Some(&b':') => {
            let sign = match zone.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let hours = number(rest + 1..rest + 3)?;
            let minutes = number(rest + 4..rest + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests;
