//! Black-box tests of the whole system live in `tests/it`; this library holds what they share with
//! the helper binaries in `src/bin`.

/// The stream a load-generator client appends to.
pub fn load_stream(client: usize) -> String {
    format!("load/client/c{client}")
}
