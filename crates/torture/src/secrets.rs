//! The secrets scan: no secret a scenario created may appear in the database files, the server's
//! log or the NATS messages, in plain text, base64 (standard or URL-safe, with or without padding)
//! or hex.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Every form of `secret` a careless writer might have stored.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = secret.as_bytes();
    let mut forms = vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
    ];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes).into_bytes());
    }
    forms.sort();
    forms.dedup();
    forms
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// Searches every file under `stores`, every line of `log` and every NATS payload for every form
/// of every secret; returns one line per find (secrets shown by their first characters only).
pub fn scan(
    secrets: &[String],
    stores: &[PathBuf],
    log: &[String],
    payloads: &[Vec<u8>],
) -> Vec<String> {
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files = Vec::new();
    for dir in stores {
        files_under(dir, &mut files);
    }
    for f in files {
        if let Ok(bytes) = std::fs::read(&f) {
            haystacks.push((f.display().to_string(), bytes));
        }
    }
    haystacks.push(("the server's log".into(), log.join("\n").into_bytes()));
    let mut nats = Vec::new();
    for p in payloads {
        nats.extend_from_slice(p);
        nats.push(b'\n');
    }
    haystacks.push(("the NATS messages".into(), nats));
    let mut unique: Vec<&String> = secrets.iter().filter(|s| s.len() >= 8).collect();
    unique.sort();
    unique.dedup();
    // One automaton over every form of every secret: one pass over each haystack.
    let mut patterns = Vec::new();
    let mut owner = Vec::new();
    for (i, secret) in unique.iter().enumerate() {
        for f in forms(secret) {
            patterns.push(f);
            owner.push(i);
        }
    }
    let Ok(automaton) = aho_corasick::AhoCorasick::new(&patterns) else {
        return vec!["cannot build the secrets' automaton".into()];
    };
    let mut found = Vec::new();
    for (name, hay) in &haystacks {
        let mut seen = std::collections::BTreeSet::new();
        for m in automaton.find_overlapping_iter(hay.as_slice()) {
            seen.insert(owner[m.pattern().as_usize()]);
        }
        for i in seen {
            found.push(format!(
                "a secret ({}...) appears in {name}",
                unique[i].chars().take(6).collect::<String>()
            ));
        }
    }
    found
}
