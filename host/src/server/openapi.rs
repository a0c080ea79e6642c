//! The API document, generated from the handlers' own annotations
//! (utoipa) and served at `/openapi.json`. A snapshot of it is kept beside
//! this file (`openapi.json`) and a test fails when the API changes without
//! the snapshot changing with it, as Flink's `rest_api_v1.snapshot` does;
//! `SLUICE_UPDATE_SNAPSHOT=1 cargo test` writes it anew.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::server::api::{actions, files, jobs, modules, streams, system, tenants};

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice serve", description = "Tenants deploy WebAssembly stream jobs: modules, jobs, savepoints, operations, files and metrics. Errors are application/problem+json.", version = "1"),
    paths(
        system::healthz, system::whoami, system::metrics, serve,
        tenants::create, tenants::list, tenants::get, tenants::change, tenants::quota,
        tenants::create_token, tenants::list_tokens, tenants::revoke_token,
        modules::upload, modules::list, modules::get, modules::delete,
        jobs::submit, jobs::list, jobs::get, jobs::cancel, jobs::start, jobs::delete,
        jobs::list_savepoints, jobs::checkpoints, jobs::exceptions, jobs::output,
        actions::savepoint, actions::stop, actions::rescale, actions::upgrade, actions::get_op, actions::list_ops,
        streams::events, streams::logs,
        files::put, files::list, files::get, files::delete,
    ),
    modifiers(&Bearer),
)]
struct ApiDoc;

/// The API document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "server", responses((status = 200, description = "the OpenAPI document")))]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

/// The API document, as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_document_matches_its_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/openapi.json");
        let now = super::document() + "\n";
        if std::env::var_os("SLUICE_UPDATE_SNAPSHOT").is_some() {
            std::fs::write(&path, &now).expect("write the snapshot");
            return;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == now,
            "the API changed: review the difference and run `SLUICE_UPDATE_SNAPSHOT=1 cargo test -p sluice-host openapi` to accept it\n{}",
            first_difference(&kept, &now)
        );
    }

    fn first_difference(a: &str, b: &str) -> String {
        for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
            if x != y {
                return format!("line {}:\n- {x}\n+ {y}", i + 1);
            }
        }
        format!(
            "lengths differ: {} vs {} lines",
            a.lines().count(),
            b.lines().count()
        )
    }
}
