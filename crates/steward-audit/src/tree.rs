//! The append-only Merkle tree (RFC 9162 §2.1), in memory, over leaf hashes.
//!
//! The tree keeps every complete perfect subtree: level `k` holds, in order,
//! the hashes of the aligned subtrees of `2^k` leaves (level 0 is the leaves
//! themselves). An append adds one leaf and closes at most one subtree per
//! level, which is amortised O(1); every range RFC 9162 asks about is then a
//! handful of lookups, so roots and proofs are O(log n). Storage is about
//! twice the leaf hashes: 64 bytes per entry.

use crate::hash::{Hash, empty_root, node_hash};

/// A request the tree cannot answer, because it names leaves or sizes the
/// tree does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A tree size larger than the number of leaves appended so far.
    #[error("tree size {size} is larger than the log, which has {len} entries")]
    SizeBeyondLog {
        /// The size asked for.
        size: u64,
        /// The number of leaves in the tree.
        len: u64,
    },
    /// A leaf index that is not inside the tree of the given size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The (0-based) leaf index asked for.
        index: u64,
        /// The tree size it was asked against.
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
}

/// An append-only Merkle tree over leaf hashes (see [`crate::leaf_hash`]).
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[k][j]` is the hash of leaves `j * 2^k .. (j + 1) * 2^k`.
    /// `levels[0]` always exists.
    levels: Vec<Vec<Hash>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
        }
    }

    /// Builds a tree from leaf hashes in log order.
    pub fn from_leaves<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let leaves: Vec<Hash> = leaves.into_iter().collect();
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|below| below.len() >= 2) {
            let above: Vec<Hash> = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// Appends a leaf hash; returns the new size.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let mut carry = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(carry);
            // An even count means the newest entry completed a pair: its
            // parent, one level up, is now a complete subtree too.
            if row.len() & 1 == 1 {
                break;
            }
            carry = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
        self.len()
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at a 0-based index, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The root of the whole tree (the empty-tree hash when empty).
    pub fn root(&self) -> Hash {
        self.range_hash(0, self.len())
    }

    /// The root of the tree made of the first `size` leaves, MTH(D\[0:size\]).
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        Ok(self.range_hash(0, size))
    }

    /// The roots of the perfect subtrees that the first `size` leaves
    /// decompose into, largest (leftmost) first: one per set bit of `size`.
    /// They stand for those leaves when verifying what follows them (an
    /// export bundle starting after entry `size` carries them).
    pub fn prefix_subtrees(&self, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        let mut roots = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0;
        for level in (0..64).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                roots.push(self.perfect(level, start >> level));
                start += width;
            }
        }
        Ok(roots)
    }

    /// The audit path of leaf `index` in the tree of the first `tree_size`
    /// leaves: PATH(index, D\[0:tree_size\]) of RFC 9162 §2.1.3.1, ordered
    /// from the leaf's sibling up to the child of the root.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(tree_size)?;
        if index >= tree_size {
            return Err(TreeError::IndexOutOfRange {
                index,
                size: tree_size,
            });
        }
        let mut proof = Vec::with_capacity(64);
        self.path(index, 0, tree_size, &mut proof);
        Ok(proof)
    }

    /// The consistency proof between the trees of the first `old_size` and
    /// the first `new_size` leaves: PROOF(old_size, D\[0:new_size\]) of
    /// RFC 9162 §2.1.4.1.
    ///
    /// When `old_size` is 0 or equal to `new_size` the proof is empty: every
    /// tree extends the empty one, and a tree is consistent with itself.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(TreeError::OldSizeAfterNewSize { old_size, new_size });
        }
        let mut proof = Vec::with_capacity(64);
        if old_size > 0 && old_size < new_size {
            self.subproof(old_size, 0, new_size, true, &mut proof);
        }
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        let len = self.len();
        if size > len {
            return Err(TreeError::SizeBeyondLog { size, len });
        }
        Ok(())
    }

    /// PATH(m, D\[start:end\]) with `m` relative to `start`, appended to `out`.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_hash(start, start + k));
        }
    }

    /// SUBPROOF(m, D\[start:end\], complete) with `m` relative to `start`.
    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_hash(start, start + k));
        }
    }

    /// MTH(D\[start:end\]) for the ranges RFC 9162's recursion visits, whose
    /// `start` is a multiple of the largest power of two not above
    /// `end - start`. Such a range is its perfect subtrees, largest first,
    /// and its hash folds them from the right: O(popcount) lookups.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let mut remaining = end - start;
        let mut position = end;
        let mut acc: Option<Hash> = None;
        while remaining > 0 {
            let level = remaining.trailing_zeros();
            let width = 1u64 << level;
            position -= width;
            let piece = self.perfect(level, position >> level);
            acc = Some(match acc {
                None => piece,
                Some(right) => node_hash(&piece, &right),
            });
            remaining -= width;
        }
        acc.unwrap_or_else(empty_root)
    }

    /// The hash of the `index`-th aligned subtree of `2^level` leaves.
    ///
    /// Callers only ask for complete subtrees inside the tree, which
    /// [`MerkleTree::push`] and [`MerkleTree::from_leaves`] always store.
    fn perfect(&self, level: u32, index: u64) -> Hash {
        self.levels[level as usize][index as usize]
    }
}

/// The largest power of two strictly below `n` (for `n >= 2`): RFC 9162's
/// split point `k`.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    /// The RFC 9162 definition, recursively, as the oracle.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn split_point_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn every_prefix_root_matches_the_recursive_definition() {
        let all = leaves(70);
        let mut tree = MerkleTree::new();
        assert_eq!(tree.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            assert_eq!(tree.push(*leaf), i as u64 + 1);
            for size in 0..=tree.len() {
                assert_eq!(
                    tree.root_at(size).unwrap(),
                    reference_root(&all[..size as usize]),
                    "size {size} of {}",
                    tree.len()
                );
            }
        }
    }

    #[test]
    fn bulk_build_equals_appending() {
        for n in [0, 1, 2, 3, 7, 8, 9, 33, 100] {
            let bulk = MerkleTree::from_leaves(leaves(n));
            let mut appended = MerkleTree::new();
            leaves(n).into_iter().for_each(|leaf| {
                appended.push(leaf);
            });
            assert_eq!(bulk.len(), n);
            assert_eq!(bulk.levels, appended.levels, "n = {n}");
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let tree = MerkleTree::from_leaves(leaves(5));
        assert_eq!(
            tree.root_at(6),
            Err(TreeError::SizeBeyondLog { size: 6, len: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(TreeError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 0),
            Err(TreeError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 9),
            Err(TreeError::SizeBeyondLog { size: 9, len: 5 })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(TreeError::OldSizeAfterNewSize {
                old_size: 4,
                new_size: 3
            })
        );
        assert_eq!(
            tree.consistency_proof(1, 6),
            Err(TreeError::SizeBeyondLog { size: 6, len: 5 })
        );
        assert_eq!(tree.consistency_proof(0, 5), Ok(vec![]));
        assert_eq!(tree.consistency_proof(5, 5), Ok(vec![]));
        assert_eq!(tree.leaf(4), Some(leaves(5)[4]));
        assert_eq!(tree.leaf(5), None);
    }
}
