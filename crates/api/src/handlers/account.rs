//! Self-service routes of an authenticated user: profile, sessions, password and TOTP.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(crate::account::me))
        .routes(routes!(crate::account::logout))
        .routes(routes!(crate::account::my_sessions))
        .routes(routes!(crate::account::revoke_my_session))
        .routes(routes!(crate::account::change_password))
        .routes(routes!(crate::account::totp_enroll))
        .routes(routes!(crate::account::totp_confirm))
        .routes(routes!(crate::account::totp_disable))
        .routes(routes!(crate::account::regenerate_recovery_codes))
}
