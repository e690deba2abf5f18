//! Creating the first platform administrator on an empty ledger.
//!
//! Platform administrators are users of the `_system` tenant with the `platform_admin` role; they
//! log in with tenant `_system` and manage tenants over the API. The first one can only be made
//! from the command line, and only while the log holds no event at all: once anything is
//! recorded, administrators are made by administrators.

use std::sync::Arc;

use custodian_domain::email::{self, EmailCommand, Reservation};
use custodian_domain::id::type_id;
use custodian_domain::user::{self, ROLE_PLATFORM_ADMIN, UserCommand, UserKind};
use custodian_domain::{Actor, StreamName, Timestamp};
use custodian_projections::ViewDb;
use custodian_store::EventStore;
use uuid::Uuid;

use crate::auth::index::SYSTEM_TENANT;
use crate::auth::password::{PasswordHasher, PasswordPolicy};
use crate::auth::secrets::{self, Keyring};
use crate::auth::vault::Vault;
use crate::commands::{self, Context, Failed};

/// Why a bootstrap was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The log is not empty.
    #[error(
        "the ledger already holds {0} events; the first platform administrator can only be created on an empty ledger (log in as an existing one to create more)"
    )]
    NotEmpty(u64),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// Something failed underneath.
    #[error("{0}")]
    Failed(String),
}

/// The first platform administrator's details.
#[derive(Debug)]
pub struct Admin<'a> {
    /// Their email address.
    pub email: &'a str,
    /// Their display name.
    pub name: &'a str,
    /// Their password (checked against the policy).
    pub password: &'a str,
}

/// Creates the first platform administrator at `now`; returns their user id.
pub async fn bootstrap(
    store: &Arc<dyn EventStore>,
    db: &ViewDb,
    keyring: &Keyring,
    hasher: &PasswordHasher,
    policy: &PasswordPolicy,
    admin: Admin<'_>,
    now: Timestamp,
) -> Result<String, BootstrapError> {
    let head = store
        .head()
        .await
        .map_err(|e| BootstrapError::Failed(e.to_string()))?;
    if head.position != 0 {
        return Err(BootstrapError::NotEmpty(head.position));
    }
    let email = crate::validate::normalize_email(admin.email)
        .map_err(|p| BootstrapError::Invalid(p.to_string()))?;
    let name = crate::validate::check_name(admin.name)
        .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    let name = name.as_str();
    policy
        .check(admin.password, false)
        .map_err(|e| BootstrapError::Invalid(format!("password: {e}")))?;
    let user_id = type_id("user", Uuid::now_v7());
    let vault = Vault::new(
        db.clone(),
        keyring.clone(),
        Arc::new(crate::ManualClock::new(now)),
    );
    let key = vault
        .create(SYSTEM_TENANT, &user_id)
        .await
        .map_err(|e| BootstrapError::Failed(e.to_string()))?;
    let phc = hasher
        .hash(admin.password)
        .await
        .map_err(|e| BootstrapError::Failed(e.to_string()))?;
    let aad = user_id.as_bytes();
    let credential = secrets::seal(&key, phc.as_bytes(), aad);
    let sealed_email = secrets::seal(&key, email.as_bytes(), aad);
    let sealed_name = secrets::seal(&key, name.as_bytes(), aad);
    let index = keyring.email_index(SYSTEM_TENANT, &email);
    let ctx = Context {
        actor: Actor::system(),
        now,
        correlation_id: None,
    };
    let failed = |e: String| BootstrapError::Failed(e);
    let reservation =
        StreamName::new(SYSTEM_TENANT, "email", &index).map_err(|e| failed(e.to_string()))?;
    commands::execute(
        store,
        None,
        &reservation,
        &ctx,
        Reservation::default(),
        email::evolve,
        |r| {
            email::decide(
                r,
                EmailCommand::Claim {
                    user_id: user_id.clone(),
                    holder_gone: false,
                },
            )
        },
    )
    .await
    .map_err(|e| match e {
        Failed::Refused(e) => failed(e.to_string()),
        Failed::Store(e) => failed(e.to_string()),
    })?;
    let user_stream =
        StreamName::new(SYSTEM_TENANT, "user", &user_id).map_err(|e| failed(e.to_string()))?;
    commands::execute(store, None, &user_stream, &ctx, None, user::evolve, |u| {
        user::decide(
            u.as_ref(),
            UserCommand::Create {
                kind: UserKind::Person,
                email: sealed_email.clone(),
                name: sealed_name.clone(),
                email_index: index.clone(),
                roles: vec![ROLE_PLATFORM_ADMIN.to_owned()],
                credential: Some(credential.clone()),
            },
        )
    })
    .await
    .map_err(|e| match e {
        Failed::Refused(e) => failed(e.to_string()),
        Failed::Store(e) => failed(e.to_string()),
    })?;
    Ok(user_id)
}
