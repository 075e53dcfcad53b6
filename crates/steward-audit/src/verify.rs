//! Verifying a whole log, online or offline, from its entries and its signed
//! checkpoints.
//!
//! The verifier streams: it keeps only the right edge of the tree (see
//! `frontier.rs`), so a log of any length is checked in O(log n) memory.
//! What it catches, and where it points:
//!
//! - a sequence number that is not the next one (an entry deleted,
//!   duplicated, inserted with a reused number, or moved): the position
//!   where the next entry was expected;
//! - an entry whose bytes no longer give its stored leaf hash (when the
//!   store keeps one): that entry;
//! - a signed checkpoint whose root differs from the root recomputed at its
//!   size (any change an attacker also covered up in the stored hashes and
//!   sequence numbers): the entries since the last checkpoint that matched,
//!   which is as precise as the evidence allows;
//! - a checkpoint larger than the log: the log was truncated (the suspect
//!   range starts after the last checkpoint that matched);
//! - a checkpoint whose signature does not verify: the checkpoint.
//!
//! Entries after the last checkpoint are only checked for sequence and
//! stored hashes: nothing signed covers them yet
//! ([`VerifyReport::checkpointed_size`] says how far signatures reach).

use serde::{Deserialize, Serialize};

use crate::checkpoint::{SignedTreeHead, TreeHead, check_key_id, parse_public_key, verify_bytes};
use crate::frontier::Frontier;
use crate::hash::{Hash, leaf_hash};

/// The outcome of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when no problem was found.
    pub ok: bool,
    /// Entries read and accepted (all of them when `ok`; those before the
    /// problem otherwise). A prefix given as subtree hashes is not counted.
    pub entries_checked: u64,
    /// Checkpoints whose root matched the entries.
    pub checkpoints_checked: u64,
    /// The largest tree size a matching checkpoint covers: entries up to
    /// here are bound by a signature.
    pub checkpointed_size: u64,
    /// The 1-based position of the first entry found bad, when the problem
    /// concerns entries.
    pub first_bad_position: Option<u64>,
    /// What is wrong, as a sentence for a person.
    pub problem: Option<String>,
    /// The root over every entry up to the last accepted one (a prefix
    /// included): what a checkpoint at that size would sign.
    pub root: Hash,
}

/// Verifies a log in one pass: `entries` are `(sequence number, canonical
/// bytes, stored leaf hash if the store keeps one)` in log order, sequence
/// numbers starting at 1; `checkpoints` in any order. See the module
/// documentation for what is detected. Stops at the first problem.
pub fn verify_log<I, B>(
    entries: I,
    checkpoints: &[SignedTreeHead],
    public_key_base64: &str,
) -> VerifyReport
where
    I: IntoIterator<Item = (u64, B, Option<Hash>)>,
    B: AsRef<[u8]>,
{
    let mut verifier = LogVerifier::new(checkpoints, public_key_base64);
    for (seq, bytes, stored) in entries {
        if !verifier.push(seq, bytes.as_ref(), stored) {
            break;
        }
    }
    verifier.finish()
}

/// The push-style form of [`verify_log`], for entries that arrive from an
/// asynchronous source (a database cursor) or that were pruned.
#[derive(Debug, Clone)]
pub struct LogVerifier {
    tree: Frontier,
    /// Entries before this one were given as subtree hashes.
    prefix_size: u64,
    /// Checkpoints with good signatures, by size.
    checkpoints: Vec<TreeHead>,
    next_checkpoint: usize,
    checkpoints_checked: u64,
    checkpointed_size: u64,
    failure: Option<Failure>,
}

#[derive(Debug, Clone)]
struct Failure {
    position: Option<u64>,
    problem: String,
}

impl LogVerifier {
    /// Starts a verification of a whole log: checks every checkpoint's
    /// signature with the public key (base64) and that they all name the
    /// same log. The first entry pushed must be entry 1.
    pub fn new(checkpoints: &[SignedTreeHead], public_key_base64: &str) -> Self {
        Self::after_prefix(0, &[], checkpoints, public_key_base64)
    }

    /// Starts a verification of the entries after the first `prefix_size`,
    /// which are represented only by `prefix_subtrees`: the roots of the
    /// perfect subtrees covering them, largest first (see
    /// [`crate::MerkleTree::prefix_subtrees`]), as an export bundle carries
    /// them. The first entry pushed must be entry `prefix_size + 1`.
    ///
    /// The prefix hashes are not trusted: a checkpoint at or after
    /// `prefix_size` only matches if they are right. Checkpoints smaller
    /// than `prefix_size` cannot be recomputed and are left out (they do
    /// not count in [`VerifyReport::checkpoints_checked`]).
    pub fn after_prefix(
        prefix_size: u64,
        prefix_subtrees: &[Hash],
        checkpoints: &[SignedTreeHead],
        public_key_base64: &str,
    ) -> Self {
        match trusted_inputs(prefix_size, prefix_subtrees, checkpoints, public_key_base64) {
            Ok((tree, heads)) => Self::from_trusted(prefix_size, tree, heads),
            Err(problem) => {
                let mut verifier = Self::from_trusted(prefix_size, Frontier::default(), Vec::new());
                verifier.fail(None, problem);
                verifier
            }
        }
    }

    /// A verifier over a prefix and checkpoints that were already checked.
    pub(crate) fn from_trusted(prefix_size: u64, tree: Frontier, mut heads: Vec<TreeHead>) -> Self {
        heads.sort_by_key(|head| head.size);
        let mut verifier = Self {
            tree,
            prefix_size,
            checkpoints: heads,
            next_checkpoint: 0,
            checkpoints_checked: 0,
            checkpointed_size: 0,
            failure: None,
        };
        // Checkpoints at the prefix size (0 for a whole log) are checked
        // before any entry.
        verifier.check_checkpoints();
        verifier
    }

    /// Adds the next entry: its sequence number, canonical bytes and stored
    /// leaf hash (if any). Returns false once a problem has been found; the
    /// caller may stop feeding entries then.
    pub fn push(&mut self, seq: u64, canonical: &[u8], stored: Option<Hash>) -> bool {
        if !self.check_sequence(seq) {
            return false;
        }
        let leaf = leaf_hash(canonical);
        if stored.is_some_and(|stored| stored != leaf) {
            self.fail(
                Some(seq),
                format!(
                    "Entry {seq} was modified: its contents no longer match the hash stored with it."
                ),
            );
            return false;
        }
        self.push_leaf(leaf)
    }

    /// Adds the next entry when only its leaf hash is kept (its payload was
    /// pruned past retention). The hash is trusted as far as the checkpoints
    /// covering it vouch for it.
    pub fn push_pruned(&mut self, seq: u64, leaf: Hash) -> bool {
        if !self.check_sequence(seq) {
            return false;
        }
        self.push_leaf(leaf)
    }

    /// Records a problem the caller found with entry `seq` by rules of its
    /// own (the tree may be fine, or the entry cannot be read at all): the
    /// report fails there. An entry that is not the next one is reported as
    /// a break in the sequence instead, like [`LogVerifier::push`] does.
    /// Returns false.
    pub fn reject(&mut self, seq: u64, problem: String) -> bool {
        if self.check_sequence(seq) {
            self.fail(Some(seq), problem);
        }
        false
    }

    /// Records a problem the caller found with the log as a whole rather
    /// than with one entry (a stored checkpoint that cannot be read): the
    /// report fails without a position, as for a checkpoint whose signature
    /// does not verify. Returns false.
    pub fn reject_log(&mut self, problem: String) -> bool {
        self.fail(None, problem);
        false
    }

    /// Whether no problem has been found so far.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Ends the verification: checkpoints beyond the last entry mean the log
    /// lost its tail.
    pub fn finish(mut self) -> VerifyReport {
        let len = self.tree.size();
        // Everything after the last matching checkpoint is suspect: the tail
        // may have been cut, or changed and then cut.
        let range_start = self.checkpointed_size.max(self.prefix_size) + 1;
        let truncation = match (&self.failure, self.checkpoints.last()) {
            (None, Some(largest)) if largest.size > len => {
                let unchecked = if range_start <= len {
                    format!(", and entries {range_start} to {len} cannot be checked against it")
                } else {
                    String::new()
                };
                Some(format!(
                    "The log ends after entry {len}, but {} covers {} entries: entries {} to {} \
                     are missing (the log was truncated){unchecked}.",
                    describe(largest),
                    largest.size,
                    len + 1,
                    largest.size
                ))
            }
            _ => None,
        };
        if let Some(problem) = truncation {
            self.fail(Some(range_start), problem);
        }
        let (first_bad_position, problem) = match self.failure {
            Some(failure) => (failure.position, Some(failure.problem)),
            None => (None, None),
        };
        VerifyReport {
            ok: problem.is_none(),
            entries_checked: len.saturating_sub(self.prefix_size),
            checkpoints_checked: self.checkpoints_checked,
            checkpointed_size: self.checkpointed_size,
            first_bad_position,
            problem,
            root: self.tree.root(),
        }
    }

    fn check_sequence(&mut self, seq: u64) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let expected = self.tree.size() + 1;
        if seq == expected {
            return true;
        }
        // A streaming reader cannot tell a missing entry from one that comes
        // later, so a jump forward names both.
        let problem = if seq > expected && expected == 1 {
            format!(
                "The log starts at entry {seq}: entries 1 to {} are missing or out of order.",
                seq - 1
            )
        } else if seq == expected + 1 {
            format!(
                "Entry {expected} is missing or out of order: entry {} is followed by entry {seq}.",
                expected - 1
            )
        } else if seq > expected {
            format!(
                "Entries {expected} to {} are missing or out of order: entry {} is followed by \
                 entry {seq}.",
                seq - 1,
                expected - 1
            )
        } else {
            format!(
                "Entry {seq} appears again where entry {expected} should be: entries are \
                 duplicated or out of order."
            )
        };
        self.fail(Some(expected), problem);
        false
    }

    fn push_leaf(&mut self, leaf: Hash) -> bool {
        self.tree.push(leaf);
        self.check_checkpoints();
        self.failure.is_none()
    }

    /// Compares every checkpoint of the current size with the current root.
    fn check_checkpoints(&mut self) {
        let size = self.tree.size();
        let range_start = self.checkpointed_size.max(self.prefix_size) + 1;
        let mut root = None;
        let mut matched_at_this_size = false;
        while let Some(head) = self.checkpoints.get(self.next_checkpoint) {
            if head.size != size {
                break;
            }
            let actual = *root.get_or_insert_with(|| self.tree.root());
            if head.root != actual {
                let also = if matched_at_this_size {
                    " Another checkpoint of the same size matches them: the log key signed two \
                     different histories."
                } else {
                    ""
                };
                if size == self.prefix_size {
                    // No entry was read yet: the checkpoint or the prefix
                    // hashes are wrong, not any entry.
                    let problem = if size == 0 {
                        format!(
                            "{} does not have the empty log's root.",
                            capitalise(&describe(head))
                        )
                    } else {
                        format!(
                            "The hashes given for the first {size} entries do not match {}.",
                            describe(head)
                        )
                    };
                    self.fail(None, problem);
                    return;
                }
                let problem = format!(
                    "The entries do not match {}: one or more of entries {range_start} to {size} \
                     were modified, inserted, deleted or reordered.{also}",
                    describe(head)
                );
                self.fail(Some(range_start), problem);
                return;
            }
            matched_at_this_size = true;
            self.checkpoints_checked += 1;
            self.checkpointed_size = size;
            self.next_checkpoint += 1;
        }
    }

    fn fail(&mut self, position: Option<u64>, problem: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure { position, problem });
        }
    }
}

/// The prefix as a frontier, and the checkpoints (at or after the prefix)
/// once their signatures and origins are checked; or what is wrong.
fn trusted_inputs(
    prefix_size: u64,
    prefix_subtrees: &[Hash],
    checkpoints: &[SignedTreeHead],
    public_key_base64: &str,
) -> Result<(Frontier, Vec<TreeHead>), String> {
    let tree = Frontier::from_parts(prefix_size, prefix_subtrees).ok_or_else(|| {
        format!(
            "The prefix of {prefix_size} entries is given as {} subtree hashes, and \
             {prefix_size} entries make {} perfect subtrees.",
            prefix_subtrees.len(),
            prefix_size.count_ones()
        )
    })?;
    let key = parse_public_key(public_key_base64)
        .map_err(|error| format!("The public key given cannot be used: {error}."))?;
    let mut heads = Vec::with_capacity(checkpoints.len());
    let first_origin = checkpoints.first().map(|first| first.head.origin.as_str());
    for (i, signed) in checkpoints.iter().enumerate() {
        check_key_id(&key, &signed.key_id)
            .and_then(|()| {
                verify_bytes(
                    &key,
                    signed.head.canonical_text().as_bytes(),
                    &signed.signature,
                )
            })
            .map_err(|error| {
                format!(
                    "Checkpoint {} of {} ({}) is not validly signed by the log's key: {error}.",
                    i + 1,
                    checkpoints.len(),
                    describe(&signed.head)
                )
            })?;
        if let Some(first) = first_origin.filter(|first| *first != signed.head.origin) {
            return Err(format!(
                "The checkpoints name different logs: \"{first}\" and \"{}\".",
                signed.head.origin
            ));
        }
        if signed.head.size >= prefix_size {
            heads.push(signed.head.clone());
        }
    }
    Ok((tree, heads))
}

/// "the checkpoint of size 100 signed 2026-11-26 10:02:00 UTC".
fn describe(head: &TreeHead) -> String {
    format!(
        "the checkpoint of size {} signed {}",
        head.size,
        format_utc(head.time_ms)
    )
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_utc(time_ms: i64) -> String {
    let seconds = time_ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
