//! The HTTP API (SPEC §3). Each module builds its own routes; [`router`] merges them, adds
//! the OpenAPI document generated from the same route definitions, and the JSON 404/405.

pub mod auth;
pub mod error;
mod events;
pub mod extract;
mod health;
mod monitor;
mod schemas;
pub mod server;
mod tokens;
mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::clock::Clock;
use crate::service::Service;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    /// Every action a handler calls.
    pub service: Service,
    /// The time a publish is judged at (rate limits, events without a timestamp).
    pub clock: Arc<dyn Clock>,
    pub limiter: crate::bus::ratelimit::RateLimiter,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub max_events_per_request: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "outhook", description = "Outbound event-notification dispatcher in the style of OpenMetadata webhooks."),
    modifiers(&BearerAuth),
    // Query parameters refer to this schema; no body does, which would register it.
    components(schemas(webhooks::IncludeDeleted)),
    tags(
        (name = "webhooks", description = "The webhook resource"),
        (name = "events", description = "Publishing ChangeEvents"),
        (name = "deliveries", description = "Delivery log, status, test and resume"),
        (name = "tokens", description = "API tokens (admin only)"),
        (name = "health", description = "Liveness, readiness and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document and the router it describes, from the same definitions.
fn parts() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(webhooks::routes())
        .merge(events::routes())
        .merge(monitor::routes())
        .merge(tokens::routes())
        .merge(health::routes())
        .split_for_parts();
    // Run on the merged paths, which `#[openapi(modifiers)]` would not see.
    schemas::CommonResponses.modify(&mut doc);
    schemas::ResponseDescriptions.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> serde_json::Value {
    document(parts().1)
}

/// The generated document with the schemas written as JSON in their places.
fn document(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    for (name, schema) in schemas::written() {
        doc["components"]["schemas"][name] = schema;
    }
    doc
}

/// The whole HTTP application.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, doc) = parts();
    health::OPENAPI.get_or_init(|| document(doc).to_string());
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(server::drain_unread_body))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One log line per request: method, path, status, duration. Headers are never logged,
/// so tokens and secrets cannot end up in logs.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}
