//! Liveness, readiness and the OpenAPI document, outside the authenticated API.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::error::{ApiError, ErrorBody};

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

/// The document served at `/api/v1/openapi.json`, generated once from the routes.
pub static OPENAPI: OnceLock<String> = OnceLock::new();

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))))]
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    // A database that accepts connections but does not answer (a network partition) would
    // hold the ping as long as TCP does: a probe wants its answer within a second.
    match tokio::time::timeout(READY_WITHIN, state.service.ping()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err(ApiError::Unavailable("the database does not answer".into()))
        }
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer in time");
            Err(ApiError::Unavailable("the database does not answer".into()))
        }
    }
}

/// How long `/readyz` waits for the database.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(900);

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    let doc = OPENAPI
        .get()
        .expect("the router sets the document before serving");
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str())
}
