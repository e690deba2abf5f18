//! Tenant administration routes (platform administrators).

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(
            crate::tenants::create_tenant,
            crate::tenants::list_tenants
        ))
        .routes(routes!(
            crate::tenants::get_tenant,
            crate::tenants::update_tenant
        ))
        .routes(routes!(crate::tenants::suspend_tenant))
        .routes(routes!(crate::tenants::reactivate_tenant))
}
