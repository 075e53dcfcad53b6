//! The right edge of a Merkle tree: enough to compute its root and keep
//! appending, in O(log n) memory. The streaming verifier uses it so that
//! checking a log of any length never holds the log.

use crate::hash::{Hash, empty_root, node_hash};

/// The roots of the perfect subtrees a tree of `size` leaves decomposes
/// into, largest (leftmost) first: one per set bit of `size`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves from its peaks, largest
    /// first; `None` unless there is one peak per set bit of `size`.
    pub(crate) fn from_parts(size: u64, peaks: &[Hash]) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then(|| Self {
            size,
            peaks: peaks.to_vec(),
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a peak of the same width
        // as `carry`: merge them, as binary addition carries.
        while size & 1 == 1 {
            match self.peaks.pop() {
                Some(left) => carry = node_hash(&left, &carry),
                None => break,
            }
            size >>= 1;
        }
        self.peaks.push(carry);
        self.size += 1;
    }

    /// MTH of all leaves pushed so far.
    pub(crate) fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::MerkleTree;

    #[test]
    fn root_matches_the_full_tree_at_every_size() {
        let mut frontier = Frontier::default();
        let mut tree = MerkleTree::new();
        assert_eq!(frontier.root(), tree.root());
        for i in 0u32..300 {
            let leaf = leaf_hash(&i.to_le_bytes());
            frontier.push(leaf);
            tree.push(leaf);
            assert_eq!(frontier.size(), tree.len());
            assert_eq!(frontier.root(), tree.root(), "size {}", tree.len());
            assert_eq!(frontier.peaks.len() as u32, frontier.size.count_ones());
        }
    }
}
