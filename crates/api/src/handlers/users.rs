//! User administration routes within a tenant.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(crate::users::create_user, crate::users::list_users))
        .routes(routes!(crate::users::invite_user))
        .routes(routes!(
            crate::users::get_user,
            crate::users::update_user,
            crate::users::delete_user
        ))
        .routes(routes!(crate::users::disable_user))
        .routes(routes!(crate::users::enable_user))
        .routes(routes!(crate::users::issue_password_reset))
        .routes(routes!(
            crate::users::list_user_sessions,
            crate::users::revoke_user_sessions
        ))
        .routes(routes!(crate::users::list_credentials))
}
