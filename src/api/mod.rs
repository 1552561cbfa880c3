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
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::clock::Clock;
use crate::service::Service;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    /// Every action a handler calls.
    pub service: Arc<Service>,
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
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(server::drain_unread_body))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A span per request naming its method and route (the matched path, ids left as
/// `{id}`), so that every log line written while serving it says which it belongs to; and
/// one log line per request: method, path, status, duration. Headers are never logged, so
/// tokens and secrets cannot end up in logs.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!("request", %method, route);
    async move {
        let response = next.run(request).await;
        tracing::debug!(
            path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "request"
        );
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::routing::get;
    use serde_json::Value;

    use super::*;

    /// What a subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// On the current-thread runtime the server's tasks run on this thread, where the
    /// subscriber is the default.
    #[tokio::test]
    async fn log_lines_written_in_a_request_name_its_method_and_route() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        crate::app::install_crypto_provider();

        let app = Router::new()
            .route(
                "/things/{id}",
                get(|| async {
                    tracing::info!("inside the handler");
                    "ok"
                }),
            )
            .layer(middleware::from_fn(log_request));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let limits = server::Limits {
            header_read_timeout: std::time::Duration::from_secs(5),
            max_connections: 4,
        };
        let served = tokio::spawn(server::serve(listener, app, limits, stop.clone()));
        let answer = reqwest::Client::new()
            .get(format!("http://{addr}/things/42"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        stop.cancel();
        served.await.unwrap().unwrap();

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let line = |message: &str| {
            lines
                .iter()
                .find(|l| l["fields"]["message"] == message)
                .unwrap_or_else(|| panic!("no line '{message}' in {text}"))
        };
        for message in ["inside the handler", "request"] {
            let span = &line(message)["span"];
            assert_eq!(
                (&span["name"], &span["method"], &span["route"]),
                (&"request".into(), &"GET".into(), &"/things/{id}".into()),
                "{text}"
            );
        }
        assert_eq!(line("request")["fields"]["path"], "/things/42");
    }
}
