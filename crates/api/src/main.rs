//! The `custodian` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    custodian_api::cli::main()
}
