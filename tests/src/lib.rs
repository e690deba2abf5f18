//! Black-box tests of the whole system live in `tests/it`; this library holds what they share with
//! the helper binaries in `src/bin`.

use std::path::PathBuf;

/// The stream a load-generator client appends to.
pub fn load_stream(client: usize) -> String {
    format!("load/client/c{client}")
}

/// Path of a binary of this workspace, built next to the test executables.
///
/// # Panics
/// When the binary has not been built: `cargo nextest run --workspace` (the README's test command)
/// builds every binary of the workspace first.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut dir = exe
        .parent()
        .expect("a test executable lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}
