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
    // Boxed: the server's settings are many times larger than any other command's arguments.
    Serve(Box<ServeArgs>),
    /// Inspect or rebuild the read models folded from the log
    Projections {
        /// What to do with them.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Platform administration from the command line
    Admin {
        /// What to do.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage the keys that sign access tokens
    Keys {
        /// What to do.
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `custodian admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the first platform administrator on an empty ledger (refused on any other); the
    /// password is read from standard input. Log in with tenant `_system`.
    Bootstrap {
        /// The administrator's email address.
        #[arg(long)]
        email: String,
        /// The administrator's display name [default: Platform administrator]
        #[arg(long)]
        name: Option<String>,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `custodian keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new access-token signing key; running servers sign with it within 30 seconds, and
    /// keep accepting tokens of the old key until they expire
    RotateSigning(StoreArgs),
    /// Create a new key that signs the log's checkpoints, named after the configured ledger
    /// origin; its issuance is recorded on the log and every server signs the next checkpoint
    /// with it
    RotateCheckpoint(StoreArgs),
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
    /// File of the server's master key [default: DATA_DIR/secret.key]
    #[arg(long, env = "CUSTODIAN_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// TOML configuration file
    #[arg(long, env = "CUSTODIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration these flags select; a bad flag or file refuses the command.
    fn resolve(self) -> anyhow::Result<Config> {
        Config::resolve(ServeArgs {
            data_dir: self.data_dir,
            database_url: self.database_url,
            secret_key_file: self.secret_key_file,
            config: self.config,
            ..ServeArgs::default()
        })
        .map_err(|e| Refused(e.to_string()).into())
    }
}

/// A command refused before it changed anything, for its input or its situation: the message is
/// printed and the process exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// The exit code of a refused command.
const REFUSED: u8 = 2;

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
            let config = match Config::resolve(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("custodian: {e}");
                    return ExitCode::from(REFUSED);
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
        Command::Admin {
            command: AdminCommand::Bootstrap { email, name, store },
        } => run_async(admin_bootstrap(email, name, store)),
        Command::Keys {
            command: KeysCommand::RotateSigning(store),
        } => run_async(rotate_signing(store)),
        Command::Keys {
            command: KeysCommand::RotateCheckpoint(store),
        } => run_async(rotate_checkpoint(store)),
        Command::Projections { command } => run_async(projections(command)),
    }
}

/// Runs a command: exit code 2 for a [`Refused`] one, 1 for any other failure.
fn run_async(task: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(task) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<Refused>() {
            Some(refused) => {
                eprintln!("custodian: {refused}");
                ExitCode::from(REFUSED)
            }
            None => {
                eprintln!("custodian: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The configuration of a command that works on an existing ledger: refused, before anything is
/// opened or created, when there is none at the location the flags, variables and file select.
async fn existing_ledger(store_args: StoreArgs) -> anyhow::Result<Config> {
    use anyhow::Context;
    let config = store_args.resolve()?;
    let exists = custodian_store::ledger_exists(&config.store.as_open_arg())
        .await
        .with_context(|| format!("cannot look for the ledger ({})", config.store.redacted()))?;
    if !exists {
        return Err(Refused(config.store.no_ledger()).into());
    }
    Ok(config)
}

async fn admin_bootstrap(
    email: String,
    name: Option<String>,
    store_args: StoreArgs,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use custodian_app::auth::password::{PasswordHasher, PasswordPolicy};
    use custodian_app::bootstrap::{Admin, BootstrapError, bootstrap};
    let config = store_args.resolve()?;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let location = config.store.as_open_arg();
    let store = custodian_store::open(&location, custodian_store::StoreOptions::default())
        .await
        .with_context(|| format!("cannot open the event store ({})", config.store.redacted()))?;
    let db = custodian_projections::ViewDb::open(&location).await?;
    let keyring = custodian_app::auth::secrets::Keyring::load_or_create(&config.secret_key_file)?;
    let options = config.security_options();
    let hasher = PasswordHasher::new(options.argon2)?;
    let policy = PasswordPolicy {
        min_length: options.password_min_length,
        ..PasswordPolicy::default()
    };
    let outcome = bootstrap(
        &store,
        &db,
        &keyring,
        &hasher,
        &policy,
        Admin {
            email: &email,
            name: name.as_deref().unwrap_or("Platform administrator"),
            password,
        },
        custodian_app::Clock::now(&custodian_app::SystemClock),
    )
    .await;
    store.close().await;
    match outcome {
        Ok(user_id) => {
            println!("created platform administrator {user_id}; log in with tenant _system");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ BootstrapError::Failed(_)) => Err(e.into()),
        Err(e) => Err(Refused(e.to_string()).into()),
    }
}

/// What a key rotation works on: the ledger, its views' database and the servers' master key.
struct KeyRotation {
    config: Config,
    store: std::sync::Arc<dyn custodian_store::EventStore>,
    db: custodian_projections::ViewDb,
    keyring: custodian_app::auth::secrets::Keyring,
}

/// Opens an existing ledger for a key rotation. The new key (`what`) is wrapped under the master
/// key, and one the servers do not have would make it unusable to them, so a missing key file is
/// refused, never created.
async fn open_for_rotation(store_args: StoreArgs, what: &str) -> anyhow::Result<KeyRotation> {
    use anyhow::Context;
    let config = existing_ledger(store_args).await?;
    if !config.secret_key_file.is_file() {
        return Err(Refused(format!(
            "no master key at {}: the new {what} must be wrapped under the servers' master key; name its file with --secret-key-file FILE (default: DATA_DIR/secret.key, see --data-dir)",
            config.secret_key_file.display()
        ))
        .into());
    }
    let location = config.store.as_open_arg();
    let store = custodian_store::open(&location, custodian_store::StoreOptions::default())
        .await
        .with_context(|| format!("cannot open the event store ({})", config.store.redacted()))?;
    let db = custodian_projections::ViewDb::open(&location).await?;
    let keyring = custodian_app::auth::secrets::Keyring::load_or_create(&config.secret_key_file)?;
    Ok(KeyRotation {
        config,
        store,
        db,
        keyring,
    })
}

async fn rotate_signing(store_args: StoreArgs) -> anyhow::Result<ExitCode> {
    let r = open_for_rotation(store_args, "signing key").await?;
    let issued = custodian_app::signing::issue(
        &r.store,
        &r.db,
        &r.keyring,
        custodian_domain::Actor::system(),
        custodian_app::Clock::now(&custodian_app::SystemClock),
    )
    .await;
    r.store.close().await;
    let issued = issued?;
    println!(
        "new signing key {}; servers sign with it within 30 seconds (signing_key.issued at position {})",
        issued.kid, issued.position
    );
    Ok(ExitCode::SUCCESS)
}

async fn rotate_checkpoint(store_args: StoreArgs) -> anyhow::Result<ExitCode> {
    let r = open_for_rotation(store_args, "checkpoint key").await?;
    let issued = custodian_app::ledger::issue_key(
        &r.store,
        &r.db,
        &r.keyring,
        &r.config.ledger.origin,
        custodian_domain::Actor::system(),
        custodian_app::Clock::now(&custodian_app::SystemClock),
    )
    .await;
    r.store.close().await;
    let issued = match issued {
        Ok(issued) => issued,
        Err(e @ custodian_app::AppError::Conflict(_)) => return Err(Refused(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    println!(
        "new checkpoint key {} ({}); the next checkpoint is signed with it (ledger.checkpoint_key_issued at position {})",
        issued.key_id, issued.verifier_key, issued.position
    );
    Ok(ExitCode::SUCCESS)
}

async fn projections(command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let (store_args, rebuild) = match command {
        ProjectionsCommand::Status(s) => (s, None),
        ProjectionsCommand::Rebuild { name, store } => (store, Some(name)),
    };
    let config = existing_ledger(store_args).await?;
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
            return Err(Refused(format!(
                "no projection named {name:?}; known: {}",
                names.join(", ")
            ))
            .into());
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
