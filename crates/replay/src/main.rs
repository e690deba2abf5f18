//! The `custodian-replay` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    custodian_replay::run(custodian_replay::Cli::parse()).await
}
