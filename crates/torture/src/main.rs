//! `custodian-torture`: runs the load and fault scenarios against the real server and prints one
//! summary line per scenario; exits 1 when any failed.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let settings = custodian_torture::Settings::parse();
    let summaries = custodian_torture::run(&settings).await;
    if summaries.iter().all(|s| s.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
