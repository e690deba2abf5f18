//! Interim re-exports while the handlers move to `handlers/`: the pieces the old handler modules
//! shared, now served by the application layer.

use custodian_domain::session::RevokeReason;
use custodian_domain::user::{User, UserError};

pub use crate::extract::{ClientIp, JsonBody, MAX_BODY_BYTES, PathParams, QueryParams, user_agent};
use crate::respond::Problem;
pub use crate::respond::positioned;
use crate::state::AppState;
pub use custodian_app::Principal;
pub use custodian_app::auth::Security as Identity;
pub use custodian_app::auth::SecurityOptions as IdentityOptions;
use custodian_app::commands::{Context, Failed};
pub use custodian_app::identity::Accepted;
pub use custodian_app::sessions::{SessionListQuery, SessionPage};
pub use custodian_app::stream;
pub use custodian_app::users::{check_password, record_bad_code, run_user};
pub use custodian_app::validate::{
    MAX_PASSWORD_CHARS, check_len, check_tenant, from_name, normalize_email, parse_flag,
    parse_limit,
};

/// Maps a failed command to a problem.
pub fn command_problem<X>(e: Failed<X>, refused: impl FnOnce(X) -> Problem) -> Problem {
    match e {
        Failed::Refused(x) => refused(x),
        Failed::Store(e) => Problem::from(e),
    }
}

/// Maps a vault failure to a problem.
pub fn vault_problem(e: custodian_app::auth::vault::VaultError) -> Problem {
    Problem::from(custodian_app::auth::vault_error(e))
}

/// The current time as the log writes it.
pub fn now() -> custodian_domain::Timestamp {
    custodian_app::Clock::now(&custodian_app::SystemClock)
}

/// A refused user command as a problem.
pub fn user_problem(e: UserError) -> Problem {
    custodian_app::users::user_error(e, now()).into()
}

/// A user's state.
pub async fn load_user(
    state: &AppState,
    tenant: &str,
    user_id: &str,
) -> Result<Option<User>, Problem> {
    Ok(custodian_app::users::load_user(state, tenant, user_id).await?)
}

/// Revokes a user's live sessions but `keep`; the last position written.
pub async fn revoke_sessions(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    keep: Option<&str>,
    reason: RevokeReason,
) -> Result<u64, Problem> {
    Ok(
        custodian_app::sessions::revoke_all(state, ctx, tenant, user_id, keep, reason)
            .await?
            .1,
    )
}

/// A page of a user's sessions.
pub async fn sessions_of(
    state: &AppState,
    tenant: &str,
    user_id: &str,
    q: &SessionListQuery,
    default_active: bool,
    current: Option<&str>,
) -> Result<SessionPage, Problem> {
    Ok(
        custodian_app::sessions::page_of_user(state, tenant, user_id, q, default_active, current)
            .await?,
    )
}

/// The serving tables of a view.
pub fn view_tables(state: &AppState, view: &str) -> Result<custodian_projections::Tables, Problem> {
    Ok(state.tables(view)?)
}

/// A failed view query.
pub fn view_problem(e: sqlx::Error) -> Problem {
    custodian_app::AppError::from(e).into()
}

/// The position a command answers with.
pub async fn answer_position(state: &AppState, written: u64) -> Result<u64, Problem> {
    Ok(state.answer_position(written).await?)
}

/// The server's security options from its configuration.
pub fn options_from_config(config: &crate::config::Config) -> IdentityOptions {
    IdentityOptions {
        secret_key_file: config.secret_key_file.clone(),
        issuer: config.issuer.clone(),
        password_min_length: config.password_min_length,
        argon2: custodian_app::auth::password::Argon2Params {
            memory_kib: config.argon2_memory_kib,
            iterations: config.argon2_iterations,
            ..custodian_app::auth::password::Argon2Params::default()
        },
        login_ip_failures: config.login_ip_failures,
        index_wait: config.read_wait,
        trusted_proxies: config.trusted_proxies.clone(),
    }
}
