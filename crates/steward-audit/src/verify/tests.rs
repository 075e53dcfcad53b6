//! The verifier finds tampering and points at the first bad entry.

use proptest::prelude::*;

use super::*;
use crate::checkpoint::LogSigner;
use crate::frontier::Frontier;
use crate::hash::empty_root;
use crate::tree::MerkleTree;

const ORIGIN: &str = "steward.test/audit";
/// 2026-11-26 10:02:00 UTC.
const NOW_MS: i64 = 1_795_687_320_000;

type Row = (u64, Vec<u8>, Option<Hash>);

fn payload(seq: u64, variant: &str) -> Vec<u8> {
    format!(
        r#"{{"action":"issue_refund","actor":"support-bot","decision":"allow","resource":"ticket-{seq}","seq":{seq},"v":"{variant}"}}"#
    )
    .into_bytes()
}

fn rows(n: u64, stored: bool) -> Vec<Row> {
    (1..=n)
        .map(|seq| {
            let bytes = payload(seq, "");
            let hash = stored.then(|| leaf_hash(&bytes));
            (seq, bytes, hash)
        })
        .collect()
}

fn tree_of(rows: &[Row]) -> MerkleTree {
    MerkleTree::from_leaves(rows.iter().map(|(_, bytes, _)| leaf_hash(bytes)))
}

fn checkpoints(signer: &LogSigner, tree: &MerkleTree, sizes: &[u64]) -> Vec<SignedTreeHead> {
    sizes
        .iter()
        .map(|&size| {
            signer.sign(TreeHead {
                origin: ORIGIN.into(),
                size,
                root: tree.root_at(size).unwrap(),
                time_ms: NOW_MS + size as i64,
            })
        })
        .collect()
}

fn verify(rows: &[Row], checkpoints: &[SignedTreeHead], signer: &LogSigner) -> VerifyReport {
    verify_log(
        rows.iter()
            .map(|(seq, bytes, hash)| (*seq, bytes.as_slice(), *hash)),
        checkpoints,
        &signer.public_key_base64(),
    )
}

fn assert_bad_at(report: &VerifyReport, position: u64, words: &str) {
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_position, Some(position), "{report:?}");
    let problem = report.problem.as_deref().unwrap_or_default();
    assert!(problem.contains(words), "{problem:?} lacks {words:?}");
}

#[test]
fn an_intact_log_verifies() {
    let signer = LogSigner::generate();
    let log = rows(100, true);
    let tree = tree_of(&log);
    let cps = checkpoints(&signer, &tree, &[50, 0, 100, 7]);
    let report = verify(&log, &cps, &signer);
    assert_eq!(
        report,
        VerifyReport {
            ok: true,
            entries_checked: 100,
            checkpoints_checked: 4,
            checkpointed_size: 100,
            first_bad_position: None,
            problem: None,
            root: tree.root(),
        }
    );
    // Entries past the last checkpoint are read, but not bound.
    let more = rows(120, false);
    let report = verify(&more, &cps, &signer);
    assert!(report.ok);
    assert_eq!(report.entries_checked, 120);
    assert_eq!(report.checkpointed_size, 100);
    assert_eq!(report.root, tree_of(&more).root());
}

#[test]
fn an_empty_log_verifies() {
    let signer = LogSigner::generate();
    let report = verify(&[], &[], &signer);
    assert!(report.ok);
    assert_eq!(report.root, empty_root());
    let cps = checkpoints(&signer, &MerkleTree::new(), &[0]);
    assert!(verify(&[], &cps, &signer).ok);
}

#[test]
fn a_modified_entry_is_named_by_its_stored_hash() {
    let signer = LogSigner::generate();
    let mut log = rows(20, true);
    let cps = checkpoints(&signer, &tree_of(&log), &[20]);
    log[11].1 = payload(12, "changed");
    let report = verify(&log, &cps, &signer);
    assert_bad_at(&report, 12, "Entry 12 was modified");
    assert_eq!(report.entries_checked, 11);
}

#[test]
fn a_covered_up_modification_is_caught_by_the_checkpoint_range() {
    let signer = LogSigner::generate();
    let mut log = rows(30, true);
    let cps = checkpoints(&signer, &tree_of(&log), &[10, 20, 30]);
    log[14].1 = payload(15, "changed");
    log[14].2 = Some(leaf_hash(&log[14].1));
    let report = verify(&log, &cps, &signer);
    assert_bad_at(&report, 11, "entries 11 to 20 were modified");
    assert_eq!(report.checkpoints_checked, 1);
    assert_eq!(report.checkpointed_size, 10);
}

#[test]
fn a_deleted_entry_leaves_a_gap() {
    let signer = LogSigner::generate();
    let mut log = rows(10, true);
    log.remove(4);
    assert_bad_at(&verify(&log, &[], &signer), 5, "Entry 5 is missing");
    log.remove(4);
    assert_bad_at(&verify(&log, &[], &signer), 5, "Entries 5 to 6 are missing");
    log.remove(0);
    assert_bad_at(&verify(&log, &[], &signer), 1, "The log starts at entry 2");
}

#[test]
fn a_duplicated_or_moved_entry_is_out_of_order() {
    let signer = LogSigner::generate();
    let mut log = rows(10, true);
    let copy = log[3].clone();
    log.insert(4, copy);
    assert_bad_at(&verify(&log, &[], &signer), 5, "Entry 4 appears again");

    let mut log = rows(10, true);
    log.swap(2, 7);
    assert_bad_at(&verify(&log, &[], &signer), 3, "out of order");
}

#[test]
fn a_truncated_log_is_detected() {
    let signer = LogSigner::generate();
    let mut log = rows(10, true);
    let cps = checkpoints(&signer, &tree_of(&log), &[6, 10]);
    log.truncate(8);
    assert_bad_at(
        &verify(&log, &cps, &signer),
        7,
        "entries 9 to 10 are missing (the log was truncated), and entries 7 to 8 cannot be checked",
    );
    log.truncate(6);
    assert_bad_at(
        &verify(&log, &cps, &signer),
        7,
        "entries 7 to 10 are missing",
    );
}

#[test]
fn a_bad_checkpoint_signature_is_named() {
    let signer = LogSigner::generate();
    let log = rows(10, true);
    let mut cps = checkpoints(&signer, &tree_of(&log), &[5, 10]);
    cps[1].head.time_ms += 1;
    let report = verify(&log, &cps, &signer);
    assert!(!report.ok);
    assert_eq!(report.first_bad_position, None);
    let problem = report.problem.unwrap();
    assert!(
        problem.starts_with("Checkpoint 2 of 2 (the checkpoint of size 10 signed 2026-11-26 10:02:00 UTC) is not validly signed"),
        "{problem}"
    );

    let other = LogSigner::generate();
    let cps = checkpoints(&signer, &tree_of(&log), &[10]);
    let report = verify(&log, &cps, &other);
    assert!(!report.ok);
    assert!(report.problem.unwrap().contains("signed by key"));

    let report = verify_log(Vec::<Row>::new(), &cps, "not a key");
    assert!(report.problem.unwrap().contains("not a valid Ed25519 key"));
}

#[test]
fn checkpoints_must_agree() {
    let signer = LogSigner::generate();
    let log = rows(10, true);
    let tree = tree_of(&log);
    let mut cps = checkpoints(&signer, &tree, &[10]);
    cps.push(signer.sign(TreeHead {
        origin: "another/log".into(),
        size: 5,
        root: tree.root_at(5).unwrap(),
        time_ms: NOW_MS,
    }));
    let report = verify(&log, &cps, &signer);
    assert!(report.problem.unwrap().contains("different logs"));

    // The key signed two different trees of size 10: a split view.
    let mut forked = rows(10, true);
    forked[9].1 = payload(10, "fork");
    let mut cps = checkpoints(&signer, &tree, &[5, 10]);
    cps.extend(checkpoints(&signer, &tree_of(&forked), &[10]));
    let report = verify(&log, &cps, &signer);
    assert_bad_at(&report, 6, "signed two different histories");
}

#[test]
fn a_wrong_empty_root_blames_the_checkpoint() {
    let signer = LogSigner::generate();
    let cp = signer.sign(TreeHead {
        origin: ORIGIN.into(),
        size: 0,
        root: leaf_hash(b"not empty"),
        time_ms: 0,
    });
    let report = verify(&rows(3, true), &[cp], &signer);
    assert!(!report.ok);
    assert_eq!(report.first_bad_position, None);
    assert_eq!(
        report.problem.unwrap(),
        "The checkpoint of size 0 signed 1970-01-01 00:00:00 UTC does not have the empty log's root."
    );
}

#[test]
fn a_suffix_verifies_from_the_prefix_subtrees() {
    let signer = LogSigner::generate();
    let log = rows(100, true);
    let tree = tree_of(&log);
    let cps = checkpoints(&signer, &tree, &[30, 37, 64, 100]);
    let prefix = tree.prefix_subtrees(37).unwrap();
    assert_eq!(prefix.len(), 3);

    let verify_suffix = |prefix: &[Hash], suffix: &[Row]| {
        let mut verifier = LogVerifier::after_prefix(37, prefix, &cps, &signer.public_key_base64());
        for (seq, bytes, hash) in suffix {
            if !verifier.push(*seq, bytes, *hash) {
                break;
            }
        }
        verifier.finish()
    };
    let report = verify_suffix(&prefix, &log[37..]);
    assert!(report.ok, "{report:?}");
    // The checkpoint at 30 predates the export and is left out.
    assert_eq!(report.checkpoints_checked, 3);
    assert_eq!(report.entries_checked, 63);
    assert_eq!(report.root, tree.root());

    let mut forged = prefix.clone();
    forged[1] = leaf_hash(b"forged");
    let report = verify_suffix(&forged, &log[37..]);
    assert_eq!(report.first_bad_position, None);
    assert!(
        report
            .problem
            .unwrap()
            .contains("first 37 entries do not match")
    );

    let report = verify_suffix(&prefix[..2], &log[37..]);
    assert!(report.problem.unwrap().contains("make 3 perfect subtrees"));

    let mut tampered = log[37..].to_vec();
    tampered[10].1 = payload(48, "changed");
    tampered[10].2 = Some(leaf_hash(&tampered[10].1));
    assert_bad_at(&verify_suffix(&prefix, &tampered), 38, "entries 38 to 64");
}

#[test]
fn pruned_entries_verify_by_their_leaf_hash() {
    let signer = LogSigner::generate();
    let log = rows(10, true);
    let tree = tree_of(&log);
    let cps = checkpoints(&signer, &tree, &[10]);
    let mut verifier = LogVerifier::new(&cps, &signer.public_key_base64());
    for (seq, bytes, hash) in &log {
        let still_ok = if *seq <= 4 {
            verifier.push_pruned(*seq, leaf_hash(bytes))
        } else {
            verifier.push(*seq, bytes, *hash)
        };
        assert!(still_ok);
    }
    assert!(verifier.is_ok());
    assert!(verifier.finish().ok);

    let mut verifier = LogVerifier::new(&cps, &signer.public_key_base64());
    verifier.push_pruned(1, leaf_hash(b"forged"));
    for (seq, bytes, hash) in &log[1..] {
        verifier.push(*seq, bytes, *hash);
    }
    assert_bad_at(&verifier.finish(), 1, "entries 1 to 10");
}

#[test]
fn a_rejected_entry_is_named_unless_the_sequence_broke_first() {
    let signer = LogSigner::generate();
    let log = rows(6, true);
    let cps = checkpoints(&signer, &tree_of(&log), &[6]);
    let key = signer.public_key_base64();
    // An entry the caller cannot read fails there, and stops the pass.
    let mut verifier = LogVerifier::new(&cps, &key);
    for (seq, bytes, hash) in &log[..3] {
        assert!(verifier.push(*seq, bytes, *hash));
    }
    assert!(!verifier.reject(4, "Entry 4 cannot be read.".into()));
    assert!(!verifier.push(5, &log[4].1, log[4].2));
    assert_bad_at(&verifier.finish(), 4, "Entry 4 cannot be read");
    // An unreadable entry after a gap: the gap comes first.
    let mut verifier = LogVerifier::new(&cps, &key);
    verifier.push(1, &log[0].1, log[0].2);
    assert!(!verifier.reject(3, "Entry 3 cannot be read.".into()));
    assert_bad_at(&verifier.finish(), 2, "Entry 2 is missing");
    // A problem with the log as a whole has no position.
    let mut verifier = LogVerifier::new(&cps, &key);
    assert!(!verifier.reject_log("A checkpoint cannot be read.".into()));
    assert!(!verifier.push(1, &log[0].1, log[0].2));
    let report = verifier.finish();
    assert!(
        !report.ok && report.first_bad_position.is_none(),
        "{report:?}"
    );
}

#[test]
fn times_are_printed_in_utc() {
    assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
    assert_eq!(format_utc(NOW_MS), "2026-11-26 10:02:00 UTC");
    assert_eq!(format_utc(951_868_799_999), "2000-02-29 23:59:59 UTC");
}

/// The ways an attacker with write access to the store can change the log.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// Change an entry's bytes, leave its stored hash.
    Modify,
    /// Change an entry's bytes and recompute its stored hash.
    ModifyAndRehash,
    Delete,
    DeleteAndRenumber,
    /// Insert a new entry reusing the next entry's number.
    Insert,
    InsertAndRenumber,
    /// Swap two rows, numbers and all.
    SwapRows,
    /// Swap two entries' contents, keeping the numbering.
    SwapContents,
}

fn tamper_strategy() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        Just(Tamper::Modify),
        Just(Tamper::ModifyAndRehash),
        Just(Tamper::Delete),
        Just(Tamper::DeleteAndRenumber),
        Just(Tamper::Insert),
        Just(Tamper::InsertAndRenumber),
        Just(Tamper::SwapRows),
        Just(Tamper::SwapContents),
    ]
}

fn renumber(log: &mut [Row]) {
    for (i, row) in log.iter_mut().enumerate() {
        row.0 = i as u64 + 1;
    }
}

/// Applies `tamper` at 1-based position `p` (and `other`, for swaps).
fn apply(log: &mut Vec<Row>, tamper: Tamper, p: usize, other: usize) {
    let i = p - 1;
    match tamper {
        Tamper::Modify => log[i].1 = payload(p as u64, "changed"),
        Tamper::ModifyAndRehash => {
            log[i].1 = payload(p as u64, "changed");
            log[i].2 = log[i].2.map(|_| leaf_hash(&log[i].1));
        }
        Tamper::Delete => {
            log.remove(i);
        }
        Tamper::DeleteAndRenumber => {
            log.remove(i);
            renumber(log);
        }
        Tamper::Insert | Tamper::InsertAndRenumber => {
            let bytes = payload(p as u64, "inserted");
            let hash = log[i].2.map(|_| leaf_hash(&bytes));
            log.insert(i, (p as u64, bytes, hash));
            if matches!(tamper, Tamper::InsertAndRenumber) {
                renumber(log);
            }
        }
        Tamper::SwapRows => log.swap(i, other - 1),
        Tamper::SwapContents => {
            let (a, b) = (log[i].clone(), log[other - 1].clone());
            log[i] = (a.0, b.1, b.2);
            log[other - 1] = (b.0, a.1, a.2);
        }
    }
}

/// The position the verifier must name, worked out from first principles:
/// the first row a local check rejects (`local`), against the first
/// checkpoint that covers the first changed leaf (`covert`).
fn expected_position(original: &[Row], tampered: &[Row], sizes: &[u64]) -> u64 {
    let local = tampered
        .iter()
        .enumerate()
        .position(|(i, (seq, bytes, stored))| {
            *seq != i as u64 + 1 || stored.is_some_and(|h| h != leaf_hash(bytes))
        })
        .map(|i| i as u64 + 1);
    let first_changed = original
        .iter()
        .zip(tampered)
        .position(|(a, b)| a.1 != b.1)
        .unwrap_or(original.len().min(tampered.len())) as u64
        + 1;
    let failing = sizes.iter().copied().filter(|&s| s >= first_changed).min();
    let covered = sizes
        .iter()
        .copied()
        .filter(|&s| s < first_changed)
        .max()
        .unwrap_or(0);
    match (local, failing) {
        // A mismatching checkpoint inside the log is seen after pushing its
        // last entry; a local problem at or before it is seen first. A
        // truncation is only seen at the end.
        (Some(q), Some(cp)) if q <= cp || cp > tampered.len() as u64 => q,
        (Some(q), None) => q,
        (_, Some(_)) => covered + 1,
        (None, None) => {
            unreachable!("every tamper changes something the largest checkpoint covers")
        }
    }
}

/// A tamper scenario: the original log, its checkpoint sizes, the tampered
/// log and where the tamper was applied (`None` when the case is void).
struct Scenario {
    original: Vec<Row>,
    sizes: Vec<u64>,
    tampered: Vec<Row>,
}

fn scenario(
    n: u64,
    tamper: Tamper,
    p: usize,
    other_seed: u64,
    stored: bool,
    dense: bool,
    picks: &[bool],
) -> Option<Scenario> {
    let original = rows(n, stored);
    let sizes: Vec<u64> = if dense {
        (1..=n).collect()
    } else {
        (1..n)
            .filter(|&s| picks[s as usize % picks.len()])
            .chain([n])
            .collect()
    };
    let other = (p + 1 + (other_seed % (n - p as u64).max(1)) as usize).min(n as usize);
    if matches!(tamper, Tamper::SwapRows | Tamper::SwapContents) && other == p {
        return None;
    }
    let mut tampered = original.clone();
    apply(&mut tampered, tamper, p, other);
    Some(Scenario {
        original,
        sizes,
        tampered,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The position logic, over many shapes. Checkpoint signatures are
    /// taken as checked here (Ed25519 in an unoptimised test build costs
    /// milliseconds); the next property runs the signed path end to end.
    #[test]
    fn tampering_is_found_at_the_first_bad_position(
        n in 2u64..80,
        tamper in tamper_strategy(),
        p_seed in any::<u64>(),
        other_seed in any::<u64>(),
        stored in any::<bool>(),
        dense in any::<bool>(),
        picks in prop::collection::vec(any::<bool>(), 80),
    ) {
        let p = (p_seed % n) as usize + 1;
        let Some(case) = scenario(n, tamper, p, other_seed, stored, dense, &picks) else {
            return Ok(());
        };
        let tree = tree_of(&case.original);
        let heads = case
            .sizes
            .iter()
            .map(|&size| TreeHead {
                origin: ORIGIN.into(),
                size,
                root: tree.root_at(size).unwrap(),
                time_ms: NOW_MS,
            })
            .collect();
        let mut verifier = LogVerifier::from_trusted(0, Frontier::default(), heads);
        for (seq, bytes, hash) in &case.tampered {
            if !verifier.push(*seq, bytes, *hash) {
                break;
            }
        }
        let report = verifier.finish();

        prop_assert!(!report.ok, "{:?} at {} undetected", tamper, p);
        let expected = expected_position(&case.original, &case.tampered, &case.sizes);
        prop_assert_eq!(report.first_bad_position, Some(expected), "{:?}", report.problem);
        if dense {
            // With a checkpoint at every size the position is exact.
            prop_assert_eq!(expected, p as u64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tampering_is_found_through_signed_checkpoints(
        n in 2u64..60,
        tamper in tamper_strategy(),
        p_seed in any::<u64>(),
        other_seed in any::<u64>(),
        stored in any::<bool>(),
        picks in prop::collection::vec(prop::bool::weighted(0.1), 60),
    ) {
        let p = (p_seed % n) as usize + 1;
        let Some(case) = scenario(n, tamper, p, other_seed, stored, false, &picks) else {
            return Ok(());
        };
        let signer = LogSigner::from_seed_bytes(&[9; 32]);
        let cps = checkpoints(&signer, &tree_of(&case.original), &case.sizes);
        let report = verify(&case.tampered, &cps, &signer);
        prop_assert!(!report.ok, "{:?} at {} undetected", tamper, p);
        let expected = expected_position(&case.original, &case.tampered, &case.sizes);
        prop_assert_eq!(report.first_bad_position, Some(expected), "{:?}", report.problem);
    }

    #[test]
    fn a_tampered_checkpoint_is_rejected(
        n in 1u64..40,
        field in 0usize..5,
        bit in 0usize..64,
    ) {
        let signer = LogSigner::from_seed_bytes(&[3; 32]);
        let log = rows(n, true);
        let mut cps = checkpoints(&signer, &tree_of(&log), &[n]);
        let head = &mut cps[0].head;
        match field {
            0 => head.size ^= 1 << (bit % 8),
            1 => head.root.0[bit % 32] ^= 1 << (bit % 8),
            2 => head.time_ms ^= 1 << bit,
            3 => head.origin.push(char::from(b'a' + (bit % 26) as u8)),
            _ => {
                let mut sig = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    &cps[0].signature,
                ).unwrap();
                sig[bit] ^= 1 << (bit % 8);
                cps[0].signature =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig);
            }
        }
        let report = verify(&log, &cps, &signer);
        prop_assert!(!report.ok);
        prop_assert_eq!(report.first_bad_position, None);
        prop_assert!(report.problem.unwrap().starts_with("Checkpoint 1 of 1"));
    }
}
