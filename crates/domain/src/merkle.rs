//! The log as an RFC 6962 (RFC 9162 section 2.1) Merkle tree: the leaves are the events' hashes, in
//! position order, so leaf index `i` is position `i + 1`.
//!
//! - leaf hash: `SHA-256(0x00 || data)`, where `data` is the event's 32-byte `hash`;
//! - node hash: `SHA-256(0x01 || left || right)`;
//! - the tree of `n > 1` leaves splits at `k`, the largest power of two below `n`;
//! - the empty tree's root is `SHA-256("")`.
//!
//! [`Tree`] keeps every complete subtree's hash, so an append costs one leaf hash and, on average,
//! one node hash, whatever the tree's size, and a root, an inclusion proof or a consistency proof
//! for any earlier size costs `O(log² n)` hashes and no reads. [`Frontier`] keeps only the
//! `O(log n)` hashes on the tree's right edge: enough for the root as leaves stream past, in
//! bounded memory. The proofs and their verification follow RFC 9162 sections 2.1.3 and 2.1.4 to
//! the letter, so they are byte-compatible with any other implementation of them.

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Why a proof cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The tree size asked for is beyond the tree.
    #[error("tree size {asked} is beyond the tree's {size} leaves")]
    BeyondTree {
        /// The size asked for.
        asked: u64,
        /// The tree's size.
        size: u64,
    },
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The older size of a consistency proof is larger than the newer one.
    #[error("a tree of {old} leaves cannot be a prefix of one of {new}")]
    Shrinking {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
}

/// The whole tree: every complete subtree's hash, level by level (`levels[0]` are the leaf
/// hashes). About 64 bytes per leaf.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves it has.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf whose data is `data` (for the log, an event's 32-byte hash).
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(leaf_hash(data));
    }

    /// Appends a leaf given its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            let index = row.len() - 1;
            if index % 2 == 0 {
                return;
            }
            let Some(left) = row.get(index - 1) else {
                return;
            };
            hash = node_hash(left, &hash);
            level += 1;
        }
    }

    /// The root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.range(0, size).ok_or(self.beyond(size))
    }

    /// The audit path of leaf `index` in the tree of its first `size` leaves (RFC 9162
    /// 2.1.3.1), nearest sibling first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof)
            .ok_or(self.beyond(size))?;
        Ok(proof)
    }

    /// The proof that the tree of `old` leaves is a prefix of the tree of `new` leaves (RFC 9162
    /// 2.1.4.1). Empty when `old` is 0 or equals `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        if old > new {
            return Err(ProofError::Shrinking { old, new });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof)
                .ok_or(self.beyond(new))?;
        }
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            Err(self.beyond(size))
        } else {
            Ok(())
        }
    }

    fn beyond(&self, asked: u64) -> ProofError {
        ProofError::BeyondTree {
            asked,
            size: self.size(),
        }
    }

    /// MTH(D[lo:hi]) for a range the RFC's recursion produces: `lo` is a multiple of a power of
    /// two at least `hi - lo`, so every complete piece is a stored subtree.
    fn range(&self, lo: u64, hi: u64) -> Option<Hash> {
        let n = hi - lo;
        if n.is_power_of_two() {
            let level = n.trailing_zeros();
            let index = usize::try_from(lo >> level).ok()?;
            return self.levels.get(level as usize)?.get(index).copied();
        }
        let k = split(n);
        Some(node_hash(
            &self.range(lo, lo + k)?,
            &self.range(lo + k, hi)?,
        ))
    }

    /// PATH(m, D[lo:hi]) with `m` relative to `lo`.
    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Option<()> {
        let n = hi - lo;
        if n <= 1 {
            return Some(());
        }
        let k = split(n);
        if m < k {
            self.path(m, lo, lo + k, out)?;
            out.push(self.range(lo + k, hi)?);
        } else {
            self.path(m - k, lo + k, hi, out)?;
            out.push(self.range(lo, lo + k)?);
        }
        Some(())
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(
        &self,
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Option<()> {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(self.range(lo, hi)?);
            }
            return Some(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out)?;
            out.push(self.range(lo + k, hi)?);
        } else {
            self.subproof(m - k, lo + k, hi, false, out)?;
            out.push(self.range(lo, lo + k)?);
        }
        Some(())
    }
}

/// The right edge of a tree: the roots of its complete subtrees, largest first. Enough to give
/// the root at the current size in `O(log n)` memory, as a stream of leaves goes by.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)` of each complete subtree on the right edge, left to right.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves went by.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf whose data is `data`.
    pub fn push(&mut self, data: &[u8]) {
        let mut hash = leaf_hash(data);
        let mut height = 0;
        while let Some(&(h, left)) = self.peaks.last() {
            if h != height {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&left, &hash);
            height += 1;
        }
        self.peaks.push((height, hash));
        self.size += 1;
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, last)) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |right, (_, left)| node_hash(left, &right))
    }
}

/// The root of a tree over `leaves` (each leaf's data).
pub fn root_of<D: AsRef<[u8]>>(leaves: &[D]) -> Hash {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(leaf.as_ref());
    }
    frontier.root()
}

/// Whether `proof` shows that the leaf with data `leaf` is at `index` in the tree of `size` leaves
/// whose root is `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &[u8], proof: &[Hash], root: &Hash) -> bool {
    verify_inclusion_hash(index, size, &leaf_hash(leaf), proof, root)
}

/// [`verify_inclusion`] given the leaf's hash rather than its data.
pub fn verify_inclusion_hash(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Whether `proof` shows that the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 2.1.4.2). Equal sizes need an
/// empty proof and equal roots; from the empty tree, an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let Some((&first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// MTH by the RFC's definition, straight from the leaves.
    fn reference_root(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn tree_of(leaves: &[Vec<u8>]) -> Tree {
        let mut tree = Tree::new();
        for l in leaves {
            tree.push(l);
        }
        tree
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (i as u64).to_be_bytes().to_vec()).collect()
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
    }

    #[test]
    fn every_root_matches_the_definition_at_every_size() {
        let all = leaves(70);
        let tree = tree_of(&all);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for n in 0..=all.len() {
            let expected = reference_root(&all[..n]);
            assert_eq!(tree.root(n as u64).unwrap(), expected, "size {n}");
            assert_eq!(root_of(&all[..n]), expected, "size {n}");
            if n > 0 {
                frontier.push(&all[n - 1]);
            }
            assert_eq!(frontier.root(), expected, "size {n}");
        }
    }

    #[test]
    fn sizes_and_indexes_beyond_the_tree_are_refused() {
        let tree = tree_of(&leaves(5));
        assert!(matches!(
            tree.root(6),
            Err(ProofError::BeyondTree { asked: 6, size: 5 })
        ));
        assert!(matches!(
            tree.inclusion_proof(3, 3),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        ));
        assert!(matches!(
            tree.consistency_proof(4, 3),
            Err(ProofError::Shrinking { old: 4, new: 3 })
        ));
        assert!(tree.consistency_proof(0, 5).unwrap().is_empty());
        assert!(tree.consistency_proof(5, 5).unwrap().is_empty());
    }

    /// The published vectors of an independent implementation (see the file's `source`).
    #[derive(serde::Deserialize)]
    struct Vectors {
        leaves: Vec<String>,
        empty_root: String,
        roots: Vec<String>,
        inclusion: Vec<InclusionVector>,
        consistency: Vec<ConsistencyVector>,
    }

    #[derive(serde::Deserialize)]
    struct InclusionVector {
        index: u64,
        size: u64,
        proof: Vec<String>,
    }

    #[derive(serde::Deserialize)]
    struct ConsistencyVector {
        old: u64,
        new: u64,
        proof: Vec<String>,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../tests/data/rfc6962-vectors.json")).unwrap()
    }

    fn h(s: &str) -> Hash {
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    fn hs(v: &[String]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    fn vector_tree(v: &Vectors) -> (Vec<Vec<u8>>, Tree) {
        let data: Vec<Vec<u8>> = v.leaves.iter().map(|l| hex::decode(l).unwrap()).collect();
        let tree = tree_of(&data);
        (data, tree)
    }

    #[test]
    fn roots_match_the_published_vectors_for_sizes_0_to_8() {
        let v = vectors();
        let (data, tree) = vector_tree(&v);
        assert_eq!(empty_root(), h(&v.empty_root));
        assert_eq!(tree.root(0).unwrap(), h(&v.empty_root));
        for (n, root) in (1..=8).zip(&v.roots) {
            assert_eq!(tree.root(n).unwrap(), h(root), "size {n}");
            assert_eq!(root_of(&data[..n as usize]), h(root), "size {n}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_published_vectors_and_their_corruptions_fail() {
        let v = vectors();
        let (data, tree) = vector_tree(&v);
        let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        for vector in &v.inclusion {
            let (i, n) = (vector.index, vector.size);
            let proof = hs(&vector.proof);
            let root = h(&v.roots[n as usize - 1]);
            let leaf = &data[i as usize];
            assert_eq!(tree.inclusion_proof(i, n).unwrap(), proof, "{i} in {n}");
            assert!(verify_inclusion(i, n, leaf, &proof, &root), "{i} in {n}");
            let mut probes: Vec<(u64, u64, Vec<u8>, Hash, Vec<Hash>)> = vec![
                (i.wrapping_sub(1), n, leaf.clone(), root, proof.clone()),
                (i + 1, n, leaf.clone(), root, proof.clone()),
                (i ^ 2, n, leaf.clone(), root, proof.clone()),
                (i, n * 2, leaf.clone(), root, proof.clone()),
                (i, n / 2, leaf.clone(), root, proof.clone()),
                (i, n, b"WrongLeaf".to_vec(), root, proof.clone()),
                (i, n, leaf.clone(), empty_root(), proof.clone()),
                (i, n, leaf.clone(), some, proof.clone()),
                (
                    i,
                    n,
                    leaf.clone(),
                    root,
                    [proof.clone(), vec![root]].concat(),
                ),
                (
                    i,
                    n,
                    leaf.clone(),
                    root,
                    [vec![root], proof.clone()].concat(),
                ),
            ];
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][0] ^= 8;
                probes.push((i, n, leaf.clone(), root, bad));
            }
            if !proof.is_empty() {
                probes.push((i, n, leaf.clone(), root, proof[..proof.len() - 1].to_vec()));
            }
            if proof.len() > 1 {
                let inserted = [vec![proof[0], some], proof[1..].to_vec()].concat();
                probes.push((i, n, leaf.clone(), root, inserted));
            }
            for (pi, pn, pleaf, proot, pproof) in probes {
                assert!(
                    !verify_inclusion(pi, pn, &pleaf, &pproof, &proot),
                    "a corrupted proof of {i} in {n} verified: index {pi}, size {pn}"
                );
            }
        }
    }

    #[test]
    fn consistency_proofs_match_the_published_vectors_and_their_corruptions_fail() {
        let v = vectors();
        let (_, tree) = vector_tree(&v);
        for vector in &v.consistency {
            let (m, n) = (vector.old, vector.new);
            let proof = hs(&vector.proof);
            let (r1, r2) = (h(&v.roots[m as usize - 1]), h(&v.roots[n as usize - 1]));
            assert_eq!(tree.consistency_proof(m, n).unwrap(), proof, "{m} to {n}");
            assert!(verify_consistency(m, n, &r1, &r2, &proof), "{m} to {n}");
            if proof.is_empty() {
                continue;
            }
            let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
                (m - 1, n, r1, r2, proof.clone()),
                (m + 1, n, r1, r2, proof.clone()),
                (m ^ 2, n, r1, r2, proof.clone()),
                (m, n * 2, r1, r2, proof.clone()),
                (m, n / 2, r1, r2, proof.clone()),
                (m, n, h(&v.empty_root), r2, proof.clone()),
                (m, n, r1, h(&v.empty_root), proof.clone()),
                (m, n, r2, r1, proof.clone()),
                (m, n, r1, r2, vec![]),
                (m, n, r1, r2, [proof.clone(), vec![r1]].concat()),
                (m, n, r1, r2, [proof.clone(), vec![r2]].concat()),
                (m, n, r1, r2, [vec![r1], proof.clone()].concat()),
                (m, n, r1, r2, [vec![r2], proof.clone()].concat()),
                (m, n, r1, r2, [vec![proof[0]], proof.clone()].concat()),
                (m, n, r1, r2, proof[..proof.len() - 1].to_vec()),
            ];
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][0] ^= 16;
                probes.push((m, n, r1, r2, bad));
            }
            for (pm, pn, p1, p2, pproof) in probes {
                assert!(
                    !verify_consistency(pm, pn, &p1, &p2, &pproof),
                    "a corrupted proof of {m} to {n} verified: sizes {pm} to {pn}"
                );
            }
        }
    }

    #[test]
    fn every_proof_up_to_size_8_verifies_against_the_published_roots() {
        let v = vectors();
        let (data, tree) = vector_tree(&v);
        for n in 1..=8u64 {
            let root = h(&v.roots[n as usize - 1]);
            for i in 0..n {
                let proof = tree.inclusion_proof(i, n).unwrap();
                assert!(
                    verify_inclusion(i, n, &data[i as usize], &proof, &root),
                    "{i} in {n}"
                );
                for other in (0..n).filter(|o| data[*o as usize] != data[i as usize]) {
                    assert!(!verify_inclusion(
                        i,
                        n,
                        &data[other as usize],
                        &proof,
                        &root
                    ));
                }
            }
            for m in 1..=n {
                let old = h(&v.roots[m as usize - 1]);
                let proof = tree.consistency_proof(m, n).unwrap();
                assert!(verify_consistency(m, n, &old, &root, &proof), "{m} to {n}");
                for wrong in (1..=8).filter(|w| *w != m as usize) {
                    let other = h(&v.roots[wrong - 1]);
                    assert!(
                        !verify_consistency(m, n, &other, &root, &proof),
                        "{m} to {n} from root {wrong}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn proofs_verify_and_tampered_proofs_do_not(
            n in 1u64..300,
            a in any::<u64>(),
            b in any::<u64>(),
            flip in any::<usize>(),
        ) {
            let all = leaves(n as usize);
            let tree = tree_of(&all);
            let size = 1 + a % n;
            let index = b % size;
            let root = tree.root(size).unwrap();
            let proof = tree.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root));
            prop_assert!(!verify_inclusion(index, size, b"other", &proof, &root));
            if size > 1 {
                prop_assert!(!verify_inclusion((index + 1) % size, size, &all[index as usize], &proof, &root));
            }
            if !proof.is_empty() {
                let mut bad = proof.clone();
                bad[flip % proof.len()][0] ^= 1;
                prop_assert!(!verify_inclusion(index, size, &all[index as usize], &bad, &root));
                prop_assert!(!verify_inclusion(index, size, &all[index as usize], &proof[1..], &root));
            }

            let old = 1 + b % size;
            let old_root = tree.root(old).unwrap();
            let consistency = tree.consistency_proof(old, size).unwrap();
            prop_assert!(verify_consistency(old, size, &old_root, &root, &consistency));
            if old < size {
                let mut bad = consistency.clone();
                bad[flip % consistency.len()][31] ^= 0x80;
                prop_assert!(!verify_consistency(old, size, &old_root, &root, &bad));
                let mut wrong_old = old_root;
                wrong_old[0] ^= 1;
                prop_assert!(!verify_consistency(old, size, &wrong_old, &root, &consistency));
                prop_assert!(!verify_consistency(old, size, &old_root, &root, &consistency[..consistency.len() - 1]));
            }
        }
    }
}
