//! The Certificate Transparency reference vectors (RFC 6962 test data, as
//! published with the CT and transparency-dev Merkle implementations): a
//! tree that disagrees with them proves nothing to anyone else.

use crate::hash::{Hash, empty_root, leaf_hash};
use crate::proof::{ProofError, verify_consistency, verify_inclusion};
use crate::tree::MerkleTree;

const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Roots of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (0-based leaf index, tree size, audit path).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency proof).
const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

fn hashes(hex: &[&str]) -> Vec<Hash> {
    hex.iter().map(|h| Hash::from_hex(h).unwrap()).collect()
}

fn reference_tree() -> MerkleTree {
    MerkleTree::from_leaves(LEAVES.iter().map(|leaf| leaf_hash(leaf)))
}

fn root(size: u64) -> Hash {
    if size == 0 {
        empty_root()
    } else {
        Hash::from_hex(ROOTS[size as usize - 1]).unwrap()
    }
}

#[test]
fn roots_match_at_every_size() {
    let tree = reference_tree();
    assert_eq!(tree.root_at(0).unwrap(), empty_root());
    for size in 1..=8u64 {
        assert_eq!(tree.root_at(size).unwrap(), root(size), "size {size}");
    }
    // Appending one by one gives the same roots as the bulk build.
    let mut grown = MerkleTree::new();
    for (i, leaf) in LEAVES.iter().enumerate() {
        grown.push(leaf_hash(leaf));
        assert_eq!(grown.root(), root(i as u64 + 1));
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let tree = reference_tree();
    for (index, size, path) in INCLUSION {
        let expected = hashes(path);
        assert_eq!(
            tree.inclusion_proof(index, size).unwrap(),
            expected,
            "leaf {index} in {size}"
        );
        let leaf = leaf_hash(LEAVES[index as usize]);
        verify_inclusion(&leaf, index, size, &expected, &root(size)).unwrap();
    }
}

#[test]
fn consistency_proofs_match_and_verify() {
    let tree = reference_tree();
    for (old, new, path) in CONSISTENCY {
        let expected = hashes(path);
        assert_eq!(
            tree.consistency_proof(old, new).unwrap(),
            expected,
            "{old} -> {new}"
        );
        verify_consistency(old, new, &root(old), &root(new), &expected).unwrap();
    }
}

#[test]
fn corrupted_inclusion_proofs_are_rejected() {
    let some_hash =
        Hash::from_hex("abacaba000000000000000000000000000000000000000000060061e00123456").unwrap();
    for (index, size, path) in INCLUSION {
        let proof = hashes(path);
        let leaf = leaf_hash(LEAVES[index as usize]);
        let good_root = root(size);
        let mut probes: Vec<(String, u64, u64, Vec<Hash>, Hash, Hash)> = vec![
            (
                "index + 1".into(),
                index + 1,
                size,
                proof.clone(),
                good_root,
                leaf,
            ),
            (
                "index ^ 2".into(),
                index ^ 2,
                size,
                proof.clone(),
                good_root,
                leaf,
            ),
            (
                "size * 2".into(),
                index,
                size * 2,
                proof.clone(),
                good_root,
                leaf,
            ),
            (
                "size / 2".into(),
                index,
                size / 2,
                proof.clone(),
                good_root,
                leaf,
            ),
            (
                "wrong leaf".into(),
                index,
                size,
                proof.clone(),
                good_root,
                leaf_hash(b"WrongLeaf"),
            ),
            (
                "empty root".into(),
                index,
                size,
                proof.clone(),
                empty_root(),
                leaf,
            ),
            (
                "random root".into(),
                index,
                size,
                proof.clone(),
                some_hash,
                leaf,
            ),
        ];
        if index > 0 {
            probes.push((
                "index - 1".into(),
                index - 1,
                size,
                proof.clone(),
                good_root,
                leaf,
            ));
        }
        let mut trailing = proof.clone();
        trailing.push(good_root);
        probes.push((
            "trailing root".into(),
            index,
            size,
            trailing,
            good_root,
            leaf,
        ));
        let mut preceding = vec![good_root];
        preceding.extend(&proof);
        probes.push((
            "preceding root".into(),
            index,
            size,
            preceding,
            good_root,
            leaf,
        ));
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i].0[0] ^= 8;
            probes.push((
                format!("bit flip in {i}"),
                index,
                size,
                flipped,
                good_root,
                leaf,
            ));
        }
        if !proof.is_empty() {
            let shorter = proof[..proof.len() - 1].to_vec();
            probes.push(("removed hash".into(), index, size, shorter, good_root, leaf));
        }
        for (what, index, size, proof, root, leaf) in probes {
            assert!(
                verify_inclusion(&leaf, index, size, &proof, &root).is_err(),
                "{what} accepted for leaf {index} in {size}"
            );
        }
    }
}

#[test]
fn corrupted_consistency_proofs_are_rejected() {
    for (old, new, path) in CONSISTENCY.into_iter().filter(|(_, _, p)| !p.is_empty()) {
        let proof = hashes(path);
        let (old_root, new_root) = (root(old), root(new));
        let mut probes: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (
                "old - 1".into(),
                old - 1,
                new,
                old_root,
                new_root,
                proof.clone(),
            ),
            (
                "old + 1".into(),
                old + 1,
                new,
                old_root,
                new_root,
                proof.clone(),
            ),
            (
                "old ^ 2".into(),
                old ^ 2,
                new,
                old_root,
                new_root,
                proof.clone(),
            ),
            (
                "new * 2".into(),
                old,
                new * 2,
                old_root,
                new_root,
                proof.clone(),
            ),
            (
                "new / 2".into(),
                old,
                new / 2,
                old_root,
                new_root,
                proof.clone(),
            ),
            (
                "wrong old root".into(),
                old,
                new,
                leaf_hash(b"x"),
                new_root,
                proof.clone(),
            ),
            (
                "wrong new root".into(),
                old,
                new,
                old_root,
                leaf_hash(b"x"),
                proof.clone(),
            ),
            (
                "swapped roots".into(),
                old,
                new,
                new_root,
                old_root,
                proof.clone(),
            ),
            ("empty proof".into(), old, new, old_root, new_root, vec![]),
        ];
        for extra in [old_root, new_root] {
            let mut trailing = proof.clone();
            trailing.push(extra);
            probes.push(("trailing".into(), old, new, old_root, new_root, trailing));
            let mut preceding = vec![extra];
            preceding.extend(&proof);
            probes.push(("preceding".into(), old, new, old_root, new_root, preceding));
        }
        probes.push((
            "truncated".into(),
            old,
            new,
            old_root,
            new_root,
            proof[..proof.len() - 1].to_vec(),
        ));
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i].0[0] ^= 16;
            probes.push((
                format!("bit flip in {i}"),
                old,
                new,
                old_root,
                new_root,
                flipped,
            ));
        }
        for (what, old, new, old_root, new_root, proof) in probes {
            assert!(
                verify_consistency(old, new, &old_root, &new_root, &proof).is_err(),
                "{what} accepted for {old} -> {new}"
            );
        }
    }
}

#[test]
fn trivial_consistency_cases() {
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    // Every tree extends the empty one; a tree is consistent with itself.
    assert_eq!(verify_consistency(0, 0, &a, &a, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 1, &a, &b, &[]), Ok(()));
    assert_eq!(verify_consistency(1, 1, &b, &b, &[]), Ok(()));
    // The same size with different roots is a fork.
    assert!(matches!(
        verify_consistency(1, 1, &a, &b, &[]),
        Err(ProofError::RootMismatch { .. })
    ));
    // Going back in time.
    assert_eq!(
        verify_consistency(2, 1, &a, &b, &[]),
        Err(ProofError::OldSizeAfterNewSize {
            old_size: 2,
            new_size: 1
        })
    );
    // A proof where none is needed.
    assert!(matches!(
        verify_consistency(1, 1, &a, &a, &[a]),
        Err(ProofError::WrongLength {
            expected: 0,
            actual: 1
        })
    ));
    assert!(matches!(
        verify_consistency(0, 3, &a, &b, &[a]),
        Err(ProofError::WrongLength {
            expected: 0,
            actual: 1
        })
    ));
    // An empty proof where one is needed.
    assert!(matches!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(ProofError::WrongLength {
            expected: 1,
            actual: 0
        })
    ));
    // No leaf is in an empty tree.
    assert_eq!(
        verify_inclusion(&a, 0, 0, &[], &empty_root()),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
}
