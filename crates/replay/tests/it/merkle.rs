//! `custodian-replay merkle` against the published RFC 6962 vectors of an independent
//! implementation (the file's `source` says whose): roots for sizes 1 to 8, inclusion and
//! consistency proofs, and proofs that must fail, through the real binary.

use serde::Deserialize;

use crate::support::run_binary_with_input;

#[derive(Deserialize)]
struct Vectors {
    leaves: Vec<String>,
    empty_root: String,
    roots: Vec<String>,
    inclusion: Vec<Inclusion>,
    consistency: Vec<Consistency>,
}

#[derive(Deserialize)]
struct Inclusion {
    index: u64,
    size: usize,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct Consistency {
    old: usize,
    new: usize,
    proof: Vec<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!(
        "../../../domain/tests/data/rfc6962-vectors.json"
    ))
    .unwrap()
}

/// The first `n` leaves as `merkle` reads them: one hex line each (the first leaf is empty).
fn stdin(v: &Vectors, n: usize) -> String {
    v.leaves[..n].iter().map(|l| format!("{l}\n")).collect()
}

fn lines(proof: &[String]) -> String {
    proof.iter().map(|h| format!("{h}\n")).collect()
}

#[tokio::test]
async fn roots_match_the_published_vectors() {
    let v = vectors();
    let run = run_binary_with_input(&["merkle", "root"], "").await;
    assert_eq!(
        (run.code, run.stdout),
        (Some(0), format!("{}\n", v.empty_root))
    );
    for n in 1..=8 {
        let run = run_binary_with_input(&["merkle", "root"], &stdin(&v, n)).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(run.stdout, format!("{}\n", v.roots[n - 1]), "size {n}");
    }
}

#[tokio::test]
async fn proofs_match_the_published_vectors() {
    let v = vectors();
    for case in &v.inclusion {
        let run = run_binary_with_input(
            &["merkle", "inclusion", &case.index.to_string()],
            &stdin(&v, case.size),
        )
        .await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(
            run.stdout,
            lines(&case.proof),
            "{} in {}",
            case.index,
            case.size
        );
    }
    for case in &v.consistency {
        let run = run_binary_with_input(
            &["merkle", "consistency", &case.old.to_string()],
            &stdin(&v, case.new),
        )
        .await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(
            run.stdout,
            lines(&case.proof),
            "{} to {}",
            case.old,
            case.new
        );
    }
}

#[tokio::test]
async fn published_proofs_verify_and_corrupted_ones_exit_1() {
    let v = vectors();
    for case in v.inclusion.iter().filter(|c| !c.proof.is_empty()) {
        let (index, size) = (case.index.to_string(), case.size.to_string());
        let root = &v.roots[case.size - 1];
        let leaf = &v.leaves[case.index as usize];
        let args = |root: &str, leaf: &str, index: &str| {
            vec![
                "merkle".to_owned(),
                "verify-inclusion".into(),
                "--index".into(),
                index.into(),
                "--size".into(),
                size.clone(),
                "--root".into(),
                root.into(),
                "--leaf".into(),
                leaf.into(),
            ]
        };
        let run_with = |args: Vec<String>, proof: String| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary_with_input(&args, &proof).await
        };
        let run = run_with(args(root, leaf, &index), lines(&case.proof)).await;
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (Some(0), "verified\n"),
            "{run:?}"
        );
        let mut flipped = case.proof.clone();
        let first = if flipped[0].starts_with('0') {
            "1"
        } else {
            "0"
        };
        flipped[0].replace_range(0..1, first);
        for (what, args, proof) in [
            (
                "a flipped proof hash",
                args(root, leaf, &index),
                lines(&flipped),
            ),
            (
                "a truncated proof",
                args(root, leaf, &index),
                lines(&case.proof[1..]),
            ),
            (
                "another root",
                args(&v.empty_root, leaf, &index),
                lines(&case.proof),
            ),
            ("another leaf", args(root, "ff", &index), lines(&case.proof)),
            (
                "another index",
                args(root, leaf, &(case.index + 1).to_string()),
                lines(&case.proof),
            ),
        ] {
            let run = run_with(args, proof).await;
            assert_eq!(run.code, Some(1), "{what}: {run:?}");
            assert_eq!(run.stdout, "does not verify\n", "{what}");
        }
    }
    for case in v.consistency.iter().filter(|c| !c.proof.is_empty()) {
        let (old, new) = (&v.roots[case.old - 1], &v.roots[case.new - 1]);
        let verify = |old_root: &str, new_root: &str, proof: String| {
            let args = [
                "merkle".to_owned(),
                "verify-consistency".into(),
                "--old-size".into(),
                case.old.to_string(),
                "--new-size".into(),
                case.new.to_string(),
                "--old-root".into(),
                old_root.into(),
                "--new-root".into(),
                new_root.into(),
            ];
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_binary_with_input(&args, &proof).await
            }
        };
        let run = verify(old, new, lines(&case.proof)).await;
        assert_eq!(run.code, Some(0), "{} to {}: {run:?}", case.old, case.new);
        for (what, run) in [
            ("swapped roots", verify(new, old, lines(&case.proof)).await),
            (
                "a truncated proof",
                verify(old, new, lines(&case.proof[..case.proof.len() - 1])).await,
            ),
            ("an empty proof", verify(old, new, String::new()).await),
        ] {
            assert_eq!(
                run.code,
                Some(1),
                "{what}, {} to {}: {run:?}",
                case.old,
                case.new
            );
        }
    }
}

#[tokio::test]
async fn bad_input_exits_2_saying_what_is_wrong() {
    for (args, input, says) in [
        (
            vec!["merkle", "root"],
            "zz\n",
            "line 1 is not hex leaf data",
        ),
        (
            vec!["merkle", "inclusion", "3"],
            "00\n01\n",
            "leaf index 3 is not in a tree of 2 leaves",
        ),
        (
            vec!["merkle", "consistency", "5"],
            "00\n01\n",
            "a tree of 5 leaves cannot be a prefix of one of 2",
        ),
        (
            vec![
                "merkle",
                "verify-consistency",
                "--old-size",
                "1",
                "--new-size",
                "2",
                "--old-root",
                "00",
                "--new-root",
                "00",
            ],
            "",
            "--old-root is not a 32-byte hash",
        ),
    ] {
        let run = run_binary_with_input(&args, input).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}
