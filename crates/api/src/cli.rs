//! The `custodian` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ServeArgs};

/// Custodian: an event-sourced identity and access ledger.
#[derive(Debug, Parser)]
#[command(name = "custodian", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (on the embedded SQLite store unless --database-url is given)
    Serve(ServeArgs),
    /// Inspect or rebuild the read models folded from the log
    Projections {
        /// What to do with them.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

/// `custodian projections ...`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show each projection generation's state, position and lag behind the log's head
    Status(StoreArgs),
    /// Build a fresh generation of NAME from position 0; the serving one keeps serving until the
    /// new one has caught up (a running server starts it within seconds, otherwise the next start)
    Rebuild {
        /// The projection, e.g. `tenants`.
        name: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the store is, as for `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store [default: ./custodian-data]
    #[arg(long, env = "CUSTODIAN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL of a production store
    #[arg(long, env = "CUSTODIAN_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "CUSTODIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StoreArgs {
    fn resolve(self) -> Result<Config, crate::config::ConfigError> {
        Config::resolve(ServeArgs {
            data_dir: self.data_dir,
            database_url: self.database_url,
            config: self.config,
            ..ServeArgs::default()
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("custodian: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::resolve(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("custodian: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init(config.log_format);
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(crate::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "the server stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Projections { command } => {
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(projections(command)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("custodian: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn projections(command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let (store_args, rebuild) = match command {
        ProjectionsCommand::Status(s) => (s, None),
        ProjectionsCommand::Rebuild { name, store } => (store, Some(name)),
    };
    let config = match store_args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custodian: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let location = config.store.as_open_arg();
    let store = custodian_store::open(
        &location,
        custodian_store::StoreOptions {
            read_only: true,
            ..custodian_store::StoreOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot open the event store ({})", config.store.redacted()))?;
    let db = custodian_projections::ViewDb::open(&location).await?;
    if let Some(name) = rebuild {
        let known = custodian_projections::all();
        let Some(p) = known.iter().find(|p| p.name() == name) else {
            let names: Vec<&str> = known.iter().map(|p| p.name()).collect();
            eprintln!(
                "custodian: no projection named {name:?}; known: {}",
                names.join(", ")
            );
            return Ok(ExitCode::from(2));
        };
        let generation = custodian_projections::request_rebuild(&db, &name, p.version()).await?;
        println!(
            "generation {generation} of {name} will be built from position 0; the serving generation keeps serving until it has caught up"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let head = store.head().await?.position;
    println!("log head: {head}");
    println!(
        "{:<16} {:>10} {:>7} {:<9} {:>10} {:>10}",
        "projection", "generation", "version", "state", "position", "lag"
    );
    for s in custodian_projections::statuses(&db).await? {
        println!(
            "{:<16} {:>10} {:>7} {:<9} {:>10} {:>10}",
            s.name,
            s.generation,
            s.code_version,
            s.state.as_str(),
            s.position,
            head.saturating_sub(s.position)
        );
    }
    Ok(ExitCode::SUCCESS)
}
