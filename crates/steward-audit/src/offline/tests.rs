use serde_json::{Value, json};

use super::*;
use crate::bundle::{BundleManifest, entries_sha256};
use crate::checkpoint::{LogSigner, TreeHead};
use crate::hash::leaf_hash;
use crate::tree::MerkleTree;

const ORIGIN: &str = "steward.test/audit";

/// Entry `seq` of tenant `t1` (odd positions) or `t2` (even ones); entry 5
/// is a decision.
fn entry(seq: u64) -> Value {
    let tenant = if seq % 2 == 1 { "t1" } else { "t2" };
    let mut e = json!({
        "seq": seq,
        "time": format!("2026-11-26T10:{:02}:00.{:03}Z", seq % 60, seq),
        "tenant_id": tenant,
        "actor": { "kind": "token", "id": "tok_1", "human_id": "hum_1" },
        "action": "agent.suspend",
        "resource_type": "agent",
        "resource_id": format!("agt_{seq}"),
        "before": null,
        "after": { "name": format!("bot-{seq}"), "state": "suspended" },
        "reason": "investigating",
        "request_id": format!("req-{seq}"),
    });
    if seq == 5 {
        e["action"] = json!("decision.deny");
        e["resource_type"] = json!("ticket");
        e["after"] = json!({
            "decision": "deny",
            "principal": { "kind": "agent", "id": "agt_9", "name": "support-bot" },
            "action": "refund",
            "resource": { "type": "ticket", "id": "T-88", "attributes": { "amount": 250 } },
            "policies": ["refunds-up-to-100"],
        });
    }
    let leaf = leaf_hash(&canonical_entry(&e).unwrap());
    e["leaf_hash"] = json!(leaf.to_hex());
    e
}

struct Log {
    signer: LogSigner,
    entries: Vec<Value>,
    tree: MerkleTree,
}

fn log(size: u64) -> Log {
    let entries: Vec<Value> = (1..=size).map(entry).collect();
    let tree = MerkleTree::from_leaves(entries.iter().map(leaf_of));
    Log {
        signer: LogSigner::generate(),
        entries,
        tree,
    }
}

fn leaf_of(e: &Value) -> Hash {
    Hash::from_hex(e["leaf_hash"].as_str().unwrap()).unwrap()
}

/// Tenant t1's entries from `from` to `to` as a bundle, as the server
/// builds it.
fn export(log: &Log, format: BundleFormat, from: u64, to: u64) -> (SignedManifest, String) {
    let mut writer = BundleWriter::new(format);
    for e in &log.entries[(from - 1) as usize..to as usize] {
        let seq = e["seq"].as_u64().unwrap();
        if e["tenant_id"] == "t1" {
            writer.entry(e.clone());
        } else {
            writer.withheld(seq, leaf_of(e));
        }
    }
    let count = writer.entry_count();
    let file = writer.finish();
    let checkpoint = log.signer.sign(TreeHead {
        origin: ORIGIN.into(),
        size: to,
        root: log.tree.root_at(to).unwrap(),
        time_ms: 1_764_151_320_000,
    });
    let manifest = BundleManifest {
        origin: ORIGIN.into(),
        public_key: log.signer.public_key_base64(),
        key_id: log.signer.key_id(),
        from_seq: from,
        to_seq: to,
        entry_count: count,
        entries_sha256: entries_sha256(file.as_bytes()),
        prefix_subtrees: log.tree.prefix_subtrees(from - 1).unwrap(),
        checkpoints: vec![checkpoint],
        format,
    };
    (log.signer.sign_manifest(manifest), file)
}

fn lines(file: &str) -> Vec<String> {
    file.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn rfc3339_times_become_milliseconds() {
    assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339_millis("1970-01-01T00:00:01.5Z"), Some(1500));
    assert_eq!(
        rfc3339_millis("2026-11-26T10:02:00.123456789Z"),
        Some(1_795_687_320_123)
    );
    assert_eq!(
        rfc3339_millis("2026-11-26T11:02:00.123+01:00"),
        rfc3339_millis("2026-11-26T10:02:00.123Z")
    );
    assert_eq!(rfc3339_millis("1969-12-31T23:59:59Z"), Some(-1000));
    assert_eq!(
        rfc3339_millis("2024-02-29T00:00:00Z"),
        Some(1_709_164_800_000)
    );
    for bad in [
        "",
        "2026-11-26",
        "2026-11-26T10:02:00",
        "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T10:02:00.Z",
        "2026-11-26T10:02:00+0100",
        "yesterday at noon, roughly",
    ] {
        assert_eq!(rfc3339_millis(bad), None, "{bad}");
    }
}

#[test]
fn canonical_bytes_ignore_extra_fields_and_need_the_core_ones() {
    let e = entry(3);
    let mut with_extra = e.clone();
    with_extra["withheld_before"] = json!([]);
    assert_eq!(canonical_entry(&e), canonical_entry(&with_extra));
    let mut changed = e.clone();
    changed["reason"] = json!("nothing to see");
    assert_ne!(canonical_entry(&e), canonical_entry(&changed));
    let mut no_time = e.clone();
    no_time["time"] = json!("noon");
    assert!(canonical_entry(&no_time).is_err());
    assert!(canonical_entry(&json!([1])).is_err());
}

#[test]
fn an_exported_tenant_range_verifies_in_both_formats() {
    let log = log(12);
    for format in [BundleFormat::Jsonl, BundleFormat::Ocsf] {
        // From entry 3 (a prefix of two) to 11: t1's 3, 5, 7, 9, 11.
        let (manifest, file) = export(&log, format, 3, 11);
        assert_eq!(file.lines().count(), 5);
        let report = verify_bundle(&manifest, file.as_bytes(), None);
        assert!(report.ok, "{format:?}: {report:?}");
        assert_eq!(report.lines, 5);
        assert_eq!(report.positions_checked, 9);
        assert_eq!(report.withheld, 4);
        assert_eq!(report.checkpointed_size, 11);
        assert!(!report.key_pinned);
        // Another tenant's entries are not in the file, only their hashes.
        assert!(!file.contains("\"t2\""), "{file}");
        assert!(!file.contains("agt_4"), "{file}");
        // Pinning the right key works; another key is refused.
        let key = log.signer.public_key_base64();
        assert!(verify_bundle(&manifest, file.as_bytes(), Some(&key)).ok);
        let other = LogSigner::generate().public_key_base64();
        let refused = verify_bundle(&manifest, file.as_bytes(), Some(&other));
        assert!(!refused.ok);
        assert!(refused.problem.unwrap().contains("manifest"));
    }
}

#[test]
fn ocsf_lines_are_api_activity_events_carrying_the_entry() {
    let log = log(6);
    let (_, file) = export(&log, BundleFormat::Ocsf, 1, 5);
    let events: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decision = &events[2];
    assert_eq!(decision["class_uid"], 6003);
    assert_eq!(decision["type_uid"], 600_399);
    assert_eq!(decision["status"], "Failure");
    assert_eq!(decision["actor"]["user"]["name"], "support-bot");
    assert_eq!(decision["api"]["operation"], "refund");
    assert_eq!(decision["resources"][0]["uid"], "T-88");
    assert_eq!(
        decision["actor"]["authorizations"][0]["policy"]["uid"],
        "refunds-up-to-100"
    );
    assert_eq!(decision["unmapped"]["steward"]["entry"]["seq"], 5);
    assert_eq!(decision["metadata"]["version"], OCSF_VERSION);
    let change = &events[0];
    assert_eq!(change["activity_id"], 3);
    assert_eq!(change["api"]["operation"], "agent.suspend");
    assert_eq!(change["actor"]["user"]["uid"], "hum_1");
    assert_eq!(change["actor"]["user"]["credential_uid"], "tok_1");
    assert_eq!(change["resources"][0]["name"], "bot-1");
    assert_eq!(
        change["time"],
        rfc3339_millis("2026-11-26T10:01:00.001Z").unwrap()
    );
    // Entry 2 (tenant t2) rides on the line of entry 3 as a hash.
    assert_eq!(
        events[1]["unmapped"]["steward"]["withheld_before"][0]["seq"],
        2
    );
}

fn expect_bad(
    manifest: &SignedManifest,
    file: &str,
    position: u64,
    line: u64,
    what: &str,
) -> BundleReport {
    let report = verify_bundle(manifest, file.as_bytes(), None);
    assert!(!report.ok, "{what}: not detected");
    assert_eq!(
        report.first_bad_position,
        Some(position),
        "{what}: {report:?}"
    );
    assert_eq!(report.first_bad_line, Some(line), "{what}: {report:?}");
    report
}

#[test]
fn tampering_with_any_line_is_found_at_its_position() {
    let log = log(12);
    for format in [BundleFormat::Jsonl, BundleFormat::Ocsf] {
        let (manifest, file) = export(&log, format, 1, 11);
        let original = lines(&file);
        let edit = |i: usize, f: &dyn Fn(&mut Value)| -> Vec<String> {
            let mut out = original.clone();
            let mut v: Value = serde_json::from_str(&out[i]).unwrap();
            f(entry_mut(format, &mut v));
            out[i] = v.to_string();
            out
        };

        // Modified: line 3 holds entry 5.
        let modified = edit(2, &|e| e["reason"] = json!("nothing to see"));
        let report = expect_bad(&manifest, &join(&modified), 5, 3, "modified");
        assert!(report.problem.unwrap().contains("Entry 5 was modified"));

        // Deleted: line 2 (entry 3).
        let mut deleted = original.clone();
        deleted.remove(1);
        expect_bad(&manifest, &join(&deleted), 2, 2, "deleted");

        // Inserted: line 2 duplicated.
        let mut inserted = original.clone();
        inserted.insert(1, original[1].clone());
        expect_bad(&manifest, &join(&inserted), 4, 3, "inserted");

        // Reordered: lines 2 and 3 swapped.
        let mut swapped = original.clone();
        swapped.swap(1, 2);
        expect_bad(&manifest, &join(&swapped), 2, 2, "reordered");

        // The last line cut: the checkpoint covers more.
        let mut cut = original.clone();
        cut.pop();
        let report = verify_bundle(&manifest, join(&cut).as_bytes(), None);
        assert!(!report.ok);

        // A line that is not JSON.
        let mut garbage = original.clone();
        garbage[3] = "{not json".into();
        expect_bad(&manifest, &join(&garbage), 6, 4, "garbage");

        // A forger who also fixes the leaf hash still fails the checkpoint.
        let forged = edit(2, &|e| {
            e["reason"] = json!("nothing to see");
            let leaf = leaf_hash(&canonical_entry(e).unwrap());
            e["leaf_hash"] = json!(leaf.to_hex());
        });
        let report = verify_bundle(&manifest, join(&forged).as_bytes(), None);
        assert!(!report.ok);
        assert_eq!(report.first_bad_position, Some(1), "{report:?}");
    }
}

/// The entry inside a line of the format.
fn entry_mut(format: BundleFormat, line: &mut Value) -> &mut Value {
    match format {
        BundleFormat::Jsonl => line,
        BundleFormat::Ocsf => &mut line["unmapped"]["steward"]["entry"],
    }
}

#[test]
fn an_edited_ocsf_field_is_found_although_the_entry_is_intact() {
    let log = log(8);
    let (manifest, file) = export(&log, BundleFormat::Ocsf, 1, 7);
    let mut out = lines(&file);
    let mut v: Value = serde_json::from_str(&out[2]).unwrap();
    v["status"] = json!("Success");
    out[2] = v.to_string();
    let report = expect_bad(&manifest, &join(&out), 5, 3, "ocsf field");
    assert!(report.problem.unwrap().contains("Line 3"));
}

#[test]
fn reformatting_is_refused_without_a_position() {
    let log = log(4);
    let (manifest, file) = export(&log, BundleFormat::Jsonl, 1, 3);
    let report = verify_bundle(&manifest, file.replace('\n', "\r\n").as_bytes(), None);
    assert!(!report.ok);
    let report = verify_bundle(&manifest, format!("{file}\n").as_bytes(), None);
    assert!(!report.ok, "{report:?}");
}

#[test]
fn an_empty_bundle_verifies() {
    let signer = LogSigner::generate();
    let manifest = BundleManifest {
        origin: ORIGIN.into(),
        public_key: signer.public_key_base64(),
        key_id: signer.key_id(),
        from_seq: 1,
        to_seq: 0,
        entry_count: 0,
        entries_sha256: entries_sha256(b""),
        prefix_subtrees: vec![],
        checkpoints: vec![],
        format: BundleFormat::Jsonl,
    };
    let signed = signer.sign_manifest(manifest);
    let report = verify_bundle(&signed, b"", None);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.lines, 0);
}
