//! Benchmarks of the audit log primitives: offline verification throughput,
//! proof generation at a million entries, append rate, checkpoint signing.
//!
//! cargo bench -p steward-audit
//! Results go to docs/benchmarks.md by hand, with the machine and date.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use steward_audit::{
    Hash, LogSigner, MerkleTree, SignedTreeHead, TreeHead, leaf_hash, verify_consistency,
    verify_inclusion, verify_log, verify_tree_head,
};

const MILLION: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 10_000;

/// A stored row: sequence number, canonical bytes, stored leaf hash.
type Row = (u64, Vec<u8>, Option<Hash>);

/// A decision entry of about 200 bytes, as canonical JSON.
fn entry(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"action":"issue_refund","actor":"support-bot","decision":"require_approval","for":"user-{:04}","policy":"refunds-over-100","resource":"ticket-{seq}","seq":{seq},"tenant":"acme","time":"2026-11-26T10:02:00Z"}}"#,
        seq % 10_000
    )
    .into_bytes()
}

fn signed_log(n: u64, signer: &LogSigner) -> (Vec<Row>, Vec<SignedTreeHead>) {
    let rows: Vec<_> = (1..=n)
        .map(|seq| {
            let bytes = entry(seq);
            let hash = leaf_hash(&bytes);
            (seq, bytes, Some(hash))
        })
        .collect();
    let tree = MerkleTree::from_leaves(rows.iter().map(|row| row.2.unwrap()));
    let checkpoints = (1..=n / CHECKPOINT_EVERY)
        .map(|i| {
            let size = i * CHECKPOINT_EVERY;
            signer.sign(TreeHead {
                origin: "steward.bench/audit".into(),
                size,
                root: tree.root_at(size).unwrap(),
                time_ms: 1_795_687_320_000 + size as i64,
            })
        })
        .collect();
    (rows, checkpoints)
}

fn verification(c: &mut Criterion) {
    let signer = LogSigner::from_seed_bytes(&[1; 32]);
    let key = signer.public_key_base64();
    let (rows, checkpoints) = signed_log(MILLION, &signer);
    let mean_len = rows.iter().map(|r| r.1.len()).sum::<usize>() / rows.len();
    eprintln!(
        "verify_log: {} entries of {mean_len} bytes on average, {} checkpoints",
        rows.len(),
        checkpoints.len()
    );

    let mut group = c.benchmark_group("verify_log");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(35));
    group.throughput(Throughput::Elements(MILLION));
    group.bench_function("1M entries, stored hashes, checkpoint every 10k", |b| {
        b.iter(|| {
            let report = verify_log(
                rows.iter()
                    .map(|(seq, bytes, hash)| (*seq, bytes.as_slice(), *hash)),
                &checkpoints,
                &key,
            );
            assert!(report.ok);
            report
        })
    });
    group.bench_function("1M entries, owned rows (as from a reader)", |b| {
        b.iter_batched(
            || rows.clone(),
            |owned| {
                let report = verify_log(owned, &checkpoints, &key);
                assert!(report.ok);
                report
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let tree = MerkleTree::from_leaves((0..MILLION).map(|i| leaf_hash(&entry(i))));
    let root = tree.root();
    let mut group = c.benchmark_group("proofs at 1M leaves");

    // A fixed pseudo-random walk over positions, so every run asks the same.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };

    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            tree.inclusion_proof(black_box(next(MILLION)), MILLION)
                .unwrap()
        })
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            let old = next(MILLION - 1) + 1;
            tree.consistency_proof(black_box(old), MILLION).unwrap()
        })
    });
    group.bench_function("root_at", |b| {
        b.iter(|| tree.root_at(black_box(next(MILLION) + 1)).unwrap())
    });

    let index = 123_457;
    let proof = tree.inclusion_proof(index, MILLION).unwrap();
    let leaf = tree.leaf(index).unwrap();
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(&leaf, black_box(index), MILLION, &proof, &root).unwrap())
    });
    let old = 654_321;
    let old_root = tree.root_at(old).unwrap();
    let consistency = tree.consistency_proof(old, MILLION).unwrap();
    group.bench_function("verify_consistency", |b| {
        b.iter(|| {
            verify_consistency(black_box(old), MILLION, &old_root, &root, &consistency).unwrap()
        })
    });
    group.finish();
}

fn appends(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..MILLION).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let entries: Vec<Vec<u8>> = (1..=100_000).map(entry).collect();
    let mut group = c.benchmark_group("append");
    group.sample_size(10);

    group.throughput(Throughput::Elements(MILLION));
    group.bench_function("push 1M leaf hashes", |b| {
        b.iter(|| {
            let mut tree = MerkleTree::new();
            for leaf in &leaves {
                tree.push(*leaf);
            }
            tree
        })
    });
    group.bench_function("from_leaves 1M leaf hashes", |b| {
        b.iter(|| MerkleTree::from_leaves(leaves.iter().copied()))
    });

    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function("hash and push 100k entries of ~200 bytes", |b| {
        b.iter(|| {
            let mut tree = MerkleTree::new();
            for bytes in &entries {
                tree.push(leaf_hash(bytes));
            }
            tree.root()
        })
    });
    group.finish();
}

fn checkpoints(c: &mut Criterion) {
    let signer = LogSigner::from_seed_bytes(&[2; 32]);
    let key = signer.public_key_base64();
    let head = TreeHead {
        origin: "steward.bench/audit".into(),
        size: MILLION,
        root: leaf_hash(b"root"),
        time_ms: 1_795_687_320_000,
    };
    let signed = signer.sign(head.clone());
    let mut group = c.benchmark_group("tree head");
    group.bench_function("sign", |b| b.iter(|| signer.sign(black_box(head.clone()))));
    group.bench_function("verify", |b| {
        b.iter(|| verify_tree_head(&key, black_box(&signed)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, verification, proofs, appends, checkpoints);
criterion_main!(benches);
