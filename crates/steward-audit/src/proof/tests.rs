//! Generated proofs verify; any single changed bit does not.

use proptest::prelude::*;

use super::*;
use crate::hash::leaf_hash;
use crate::tree::MerkleTree;

fn tree(size: u64) -> MerkleTree {
    MerkleTree::from_leaves((0..size).map(|i| leaf_hash(&i.to_le_bytes())))
}

/// One tree for all cases: the properties ask about its prefixes, which
/// also exercises proofs for sizes below the tree's length.
fn shared_tree() -> &'static MerkleTree {
    static TREE: std::sync::OnceLock<MerkleTree> = std::sync::OnceLock::new();
    TREE.get_or_init(|| tree(5000))
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut bytes = hash.0;
    bytes[bit / 8 % 32] ^= 1 << (bit % 8);
    Hash(bytes)
}

#[test]
fn every_proof_in_small_trees_verifies() {
    let tree = tree(70);
    for size in 1..=tree.len() {
        let root = tree.root_at(size).unwrap();
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            let leaf = tree.leaf(index).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        }
        for old in 0..=size {
            let proof = tree.consistency_proof(old, size).unwrap();
            assert_eq!(
                proof.len(),
                consistency_proof_len(old, size),
                "{old} -> {size}"
            );
            let old_root = tree.root_at(old).unwrap();
            verify_consistency(old, size, &old_root, &root, &proof).unwrap();
        }
    }
}

#[test]
fn every_bit_of_one_proof_matters() {
    let tree = tree(13);
    let (index, size) = (5, 13);
    let root = tree.root_at(size).unwrap();
    let leaf = tree.leaf(index).unwrap();
    let proof = tree.inclusion_proof(index, size).unwrap();
    for element in 0..proof.len() {
        for bit in 0..256 {
            let mut bad = proof.clone();
            bad[element] = flip(&bad[element], bit);
            assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
    }
    for bit in 0..256 {
        assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
    }
}

proptest! {
    #[test]
    fn inclusion_proofs_verify_and_one_flipped_bit_fails(
        size in 1u64..=5000,
        index_seed in any::<u64>(),
        element_seed in any::<usize>(),
        bit in 0usize..256,
    ) {
        let tree = shared_tree();
        let index = index_seed % size;
        let root = tree.root_at(size).unwrap();
        let leaf = tree.leaf(index).unwrap();
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

        if !proof.is_empty() {
            let mut bad = proof.clone();
            let element = element_seed % bad.len();
            bad[element] = flip(&bad[element], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
        // The same path does not prove another position (unless both
        // positions hold the same hash, which distinct leaves never do).
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_one_flipped_bit_fails(
        new_size in 1u64..=5000,
        old_seed in any::<u64>(),
        element_seed in any::<usize>(),
        bit in 0usize..256,
    ) {
        let tree = shared_tree();
        let old_size = old_seed % (new_size + 1);
        let old_root = tree.root_at(old_size).unwrap();
        let new_root = tree.root_at(new_size).unwrap();
        let proof = tree.consistency_proof(old_size, new_size).unwrap();
        prop_assert_eq!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
            Ok(())
        );

        if !proof.is_empty() {
            let mut bad = proof.clone();
            let element = element_seed % bad.len();
            bad[element] = flip(&bad[element], bit);
            prop_assert!(
                verify_consistency(old_size, new_size, &old_root, &new_root, &bad).is_err()
            );
        }
        // Every tree extends the empty tree, whatever its "root" says; past
        // that, both roots are bound.
        if old_size > 0 {
            prop_assert!(verify_consistency(
                old_size, new_size, &flip(&old_root, bit), &new_root, &proof
            ).is_err());
            prop_assert!(verify_consistency(
                old_size, new_size, &old_root, &flip(&new_root, bit), &proof
            ).is_err());
        }
    }
}
