//! `custodian-replay merkle`: RFC 6962 arithmetic on data given on stdin, so that auditors can
//! cross-check Custodian's roots and proofs against any other implementation, and check proofs the
//! service hands out without trusting it.
//!
//! - `root`, `inclusion INDEX`, `consistency OLD_SIZE` read leaf DATA (not leaf hashes), one leaf
//!   per line in hex (an empty line is an empty leaf), and print the root, or the proof one hex
//!   hash per line, nearest the leaves first.
//! - `verify-inclusion` and `verify-consistency` read a proof on stdin, one hex hash per line
//!   (blank lines are skipped), and exit 0 when it verifies, 1 when it does not.
//!
//! For the log, a leaf's data is an event's 32-byte `hash` and leaf index `i` is position `i + 1`.

use std::io::{BufRead, Write};

use clap::{Args, Subcommand};
use custodian_domain::merkle::{self, Hash, Tree};

/// Exit status: the proof does not verify.
const EXIT_FAILS: u8 = 1;
/// Exit status: bad input.
const EXIT_USAGE: u8 = 2;

/// The `merkle` subcommands.
#[derive(Debug, Subcommand)]
pub enum MerkleCommand {
    /// Print the root of the tree over the leaves on stdin (hex leaf data, one per line)
    Root,
    /// Print the inclusion proof (audit path) of leaf INDEX (0-based) in the tree over the leaves
    /// on stdin, one hex hash per line
    Inclusion {
        /// The leaf's 0-based index.
        index: u64,
    },
    /// Print the consistency proof from the tree of the first OLD_SIZE leaves to the tree over
    /// all the leaves on stdin, one hex hash per line
    Consistency {
        /// The older tree's size.
        old_size: u64,
    },
    /// Read an inclusion proof on stdin (one hex hash per line); exit 0 if it verifies, 1 if not
    VerifyInclusion(VerifyInclusionArgs),
    /// Read a consistency proof on stdin (one hex hash per line); exit 0 if it verifies, 1 if not
    VerifyConsistency(VerifyConsistencyArgs),
}

/// Arguments of `merkle verify-inclusion`.
#[derive(Debug, Args)]
pub struct VerifyInclusionArgs {
    /// The leaf's 0-based index.
    #[arg(long)]
    pub index: u64,
    /// The tree size.
    #[arg(long)]
    pub size: u64,
    /// The tree's root, hex.
    #[arg(long)]
    pub root: String,
    /// The leaf's data, hex, as `merkle root` reads it (for the log: the event's hash).
    #[arg(long)]
    pub leaf: String,
}

/// Arguments of `merkle verify-consistency`.
#[derive(Debug, Args)]
pub struct VerifyConsistencyArgs {
    /// The older tree's size.
    #[arg(long)]
    pub old_size: u64,
    /// The newer tree's size.
    #[arg(long)]
    pub new_size: u64,
    /// The older tree's root, hex.
    #[arg(long)]
    pub old_root: String,
    /// The newer tree's root, hex.
    #[arg(long)]
    pub new_root: String,
}

/// Runs a `merkle` subcommand on `input`; returns the exit status.
pub fn run(
    command: &MerkleCommand,
    json: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match execute(command, input) {
        Ok(Answer::Hashes(hashes)) => {
            if json {
                let hashes: Vec<String> = hashes.iter().map(hex::encode).collect();
                let _ = writeln!(out, "{}", serde_json::json!({ "hashes": hashes }));
            } else {
                for h in &hashes {
                    let _ = writeln!(out, "{}", hex::encode(h));
                }
            }
            0
        }
        Ok(Answer::Verified(ok)) => {
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({ "verified": ok }));
            } else {
                let _ = writeln!(out, "{}", if ok { "verified" } else { "does not verify" });
            }
            if ok { 0 } else { EXIT_FAILS }
        }
        Err(message) => {
            let _ = writeln!(err, "custodian-replay: {message}");
            EXIT_USAGE
        }
    }
}

enum Answer {
    Hashes(Vec<Hash>),
    Verified(bool),
}

fn execute(command: &MerkleCommand, input: &mut dyn BufRead) -> Result<Answer, String> {
    match command {
        MerkleCommand::Root => Ok(Answer::Hashes(vec![merkle::root_of(&leaves(input)?)])),
        MerkleCommand::Inclusion { index } => {
            let tree = tree(input)?;
            tree.inclusion_proof(*index, tree.size())
                .map(Answer::Hashes)
                .map_err(|e| e.to_string())
        }
        MerkleCommand::Consistency { old_size } => {
            let tree = tree(input)?;
            tree.consistency_proof(*old_size, tree.size())
                .map(Answer::Hashes)
                .map_err(|e| e.to_string())
        }
        MerkleCommand::VerifyInclusion(a) => {
            let root = hash_arg("--root", &a.root)?;
            let leaf = hex_arg("--leaf", &a.leaf)?;
            let proof = proof(input)?;
            Ok(Answer::Verified(merkle::verify_inclusion(
                a.index, a.size, &leaf, &proof, &root,
            )))
        }
        MerkleCommand::VerifyConsistency(a) => {
            let old = hash_arg("--old-root", &a.old_root)?;
            let new = hash_arg("--new-root", &a.new_root)?;
            let proof = proof(input)?;
            Ok(Answer::Verified(merkle::verify_consistency(
                a.old_size, a.new_size, &old, &new, &proof,
            )))
        }
    }
}

/// Every line of `input`, trimmed: a hex leaf each, an empty line being an empty leaf.
fn leaves(input: &mut dyn BufRead) -> Result<Vec<Vec<u8>>, String> {
    input
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
            hex::decode(line.trim())
                .map_err(|e| format!("line {} is not hex leaf data: {e}", i + 1))
        })
        .collect()
}

fn tree(input: &mut dyn BufRead) -> Result<Tree, String> {
    let mut tree = Tree::new();
    for leaf in leaves(input)? {
        tree.push(&leaf);
    }
    Ok(tree)
}

/// The proof on `input`: one 32-byte hex hash per non-blank line.
fn proof(input: &mut dyn BufRead) -> Result<Vec<Hash>, String> {
    let mut hashes = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        hashes.push(parse_hash(line).map_err(|e| format!("line {} of the proof {e}", i + 1))?);
    }
    Ok(hashes)
}

fn hex_arg(name: &str, value: &str) -> Result<Vec<u8>, String> {
    hex::decode(value.trim()).map_err(|e| format!("{name} is not hex: {e}"))
}

fn hash_arg(name: &str, value: &str) -> Result<Hash, String> {
    parse_hash(value.trim()).map_err(|e| format!("{name} {e}"))
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    let mut hash = [0; 32];
    hex::decode_to_slice(text, &mut hash)
        .map_err(|_| format!("is not a 32-byte hash in hex (64 hex digits): {text:?}"))?;
    Ok(hash)
}
