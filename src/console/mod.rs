//! The web console at `/ui` (SPEC §9): pages rendered on the server from templates in the
//! binary, forms that post back, no script. Every page and action calls the same
//! [`crate::service::Service`] functions the API does, with the caller a session stands
//! for: a reader sees, an admin acts.
//!
//! - `session`: the cookie, the caller, CSRF and origin checks;
//! - `pages`: sign-in, the webhooks list, one webhook, the events;
//! - `actions`: sign in and out, test, resume, enable, disable, rotate the secret;
//! - `view`: filters in words, the chart's bars;
//! - `render`: templates, headers, the error page.

mod actions;
mod pages;
mod render;
mod session;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::api::AppState;

/// Most rows a console list shows at once.
const PAGE_SIZE: u32 = 20;

/// The console's routes, under `/ui`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(pages::home))
        .route("/ui/", get(pages::home))
        .route("/ui/style.css", get(style))
        .route("/ui/sign-in", post(actions::sign_in))
        .route("/ui/sign-out", post(actions::sign_out))
        .route("/ui/webhooks", get(pages::webhooks))
        .route("/ui/webhooks/{id}", get(pages::webhook))
        .route("/ui/webhooks/{id}/{action}", post(actions::act))
        .route("/ui/events", get(pages::events))
}

async fn style() -> impl IntoResponse {
    render::with_headers(
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            render::STYLE,
        )
            .into_response(),
    )
}
