//! Checking inclusion and consistency proofs (RFC 9162 §2.1.3.2, §2.1.4.2)
//! with nothing but the hashes: what an auditor runs without the log.

use crate::hash::{Hash, node_hash};

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The (0-based) leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldSizeAfterNewSize {
        /// The older (first) tree size.
        old_size: u64,
        /// The newer (second) tree size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has {actual} hashes, these tree sizes need {expected}")]
    WrongLength {
        /// How many hashes a proof for these sizes has.
        expected: usize,
        /// How many were given.
        actual: usize,
    },
    /// The proof leads to a root other than the one given (for a consistency
    /// proof: to a different new root).
    #[error("the proof leads to root {computed}, not the expected {expected}")]
    RootMismatch {
        /// The root the proof computes.
        computed: Hash,
        /// The root it was checked against.
        expected: Hash,
    },
    /// A consistency proof whose reconstruction of the old tree does not give
    /// the old root: the new tree does not extend the old one.
    #[error("the proof leads to old root {computed}, not the expected {expected}")]
    OldRootMismatch {
        /// The old root the proof computes.
        computed: Hash,
        /// The old root it was checked against.
        expected: Hash,
    },
}

/// Checks that `leaf_hash` is leaf `index` of the tree of size `tree_size`
/// with root `root`, following RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let expected = inclusion_proof_len(index, tree_size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        // The length check above makes this unreachable; the RFC keeps it,
        // and so do we, so the loop is correct on its own.
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                expected,
                actual: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that the tree of size `new_size` with root `new_root` extends the
/// tree of size `old_size` with root `old_root`, following RFC 9162 §2.1.4.2.
///
/// The RFC defines the algorithm for `0 < old_size < new_size`. The edge
/// cases follow from the definitions: a tree is consistent with itself (the
/// proof must be empty and the roots equal), and every tree extends the empty
/// tree (the proof must be empty).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeAfterNewSize { old_size, new_size });
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    if old_size == 0 {
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(ProofError::RootMismatch {
                computed: *old_root,
                expected: *new_root,
            });
        }
        return Ok(());
    }

    // Step 2: when the old tree is a perfect subtree, the proof leaves out
    // its hash, which the verifier already has.
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(hash) => *hash,
            None => {
                return Err(ProofError::WrongLength {
                    expected,
                    actual: proof.len(),
                });
            }
        }
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = first;
    let mut s_r = first;
    for c in path {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                expected,
                actual: proof.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            expected,
            actual: proof.len(),
        });
    }
    if f_r != *old_root {
        return Err(ProofError::OldRootMismatch {
            computed: f_r,
            expected: *old_root,
        });
    }
    if s_r != *new_root {
        return Err(ProofError::RootMismatch {
            computed: s_r,
            expected: *new_root,
        });
    }
    Ok(())
}

/// The number of hashes in PATH(index, D\[0:size\]) for `index < size`.
///
/// The path climbs `inner` levels inside the perfect subtree the leaf shares
/// with the last leaf (the levels where `index` and `size - 1` differ), then
/// takes one hash per left sibling on the right border above it.
pub(crate) fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// The number of hashes in PROOF(old_size, D\[0:new_size\]).
pub(crate) fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size >= new_size {
        return 0;
    }
    // The proof is the inclusion path of the old tree's last leaf, less the
    // levels inside the old tree's rightmost perfect subtree, plus that
    // subtree's hash unless it is the whole old tree.
    let path = inclusion_proof_len(old_size - 1, new_size);
    let shared = old_size.trailing_zeros() as usize;
    let start = usize::from(!old_size.is_power_of_two());
    path - shared + start
}

#[cfg(test)]
mod tests;
