//! Public authentication routes: login, second factors, refresh, invitations, password resets and the signing keys.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(crate::login::jwks))
        .routes(routes!(crate::login::login))
        .routes(routes!(crate::login::mfa_verify))
        .routes(routes!(crate::login::refresh))
        .routes(routes!(crate::login::accept_invitation))
        .routes(routes!(crate::login::reset_password))
}
