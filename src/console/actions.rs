//! What the console's forms do: sign in and out, and a webhook's actions (test, resume,
//! enable, disable, rotate the secret). Every form that changes something carries the
//! session's CSRF token and is refused (403) without it; the action is the service's,
//! with the session's caller, so roles apply as in the API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use super::pages::{sign_in_page, webhook_page};
use super::render::{Problem, with_headers};
use super::session::{Session, check_origin, set_cookie};
use crate::api::AppState;
use crate::api::extract::BaseUrl;
use crate::domain::token::Permission;
use crate::service::{Rotation, SESSION_TTL_MS};

type Fields = Form<HashMap<String, String>>;

/// Signs in with an API token: a session for it, in a cookie.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(fields): Fields,
) -> Response {
    if let Err(problem) = check_origin(&headers) {
        return problem.into_response();
    }
    let token = fields.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() || token.len() > 512 {
        return sign_in_page(StatusCode::UNAUTHORIZED, Some("Give an API token."));
    }
    match state.service.sign_in(token).await {
        Ok(Some(signed_in)) => {
            let cookie = set_cookie(&headers, Some((&signed_in.secret, SESSION_TTL_MS / 1000)));
            with_headers(
                ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/webhooks")).into_response(),
            )
        }
        Ok(None) => sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not a live API token."),
        ),
        Err(err) => Problem::from(err).into_response(),
    }
}

/// Ends the session (with its CSRF token: another site cannot sign anyone out).
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    session: Session,
    Form(fields): Fields,
) -> Response {
    let done = async {
        check_origin(&headers)?;
        session.check_csrf(fields.get("csrf").map_or("", String::as_str))?;
        state.service.sign_out(&session.secret).await?;
        Ok::<_, Problem>(())
    };
    match done.await {
        Ok(()) => with_headers(
            (
                [(header::SET_COOKIE, set_cookie(&headers, None))],
                Redirect::to("/ui"),
            )
                .into_response(),
        ),
        Err(problem) => problem.into_response(),
    }
}

/// A webhook action from its page; the page comes back with what happened.
pub async fn act(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    session: Session,
    base: BaseUrl,
    Path((id, action)): Path<(String, String)>,
    Form(fields): Fields,
) -> Response {
    match act_on(&state, &headers, &session, &base, &id, &action, &fields).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn act_on(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
    base: &BaseUrl,
    id: &str,
    action: &str,
    fields: &HashMap<String, String>,
) -> Result<Response, Problem> {
    check_origin(headers)?;
    session.check_csrf(fields.get("csrf").map_or("", String::as_str))?;
    // The caller's role decides, as in the API.
    session.caller.require(Permission::Manage)?;
    let webhook_id = uuid::Uuid::parse_str(id).map_err(|_| Problem {
        status: StatusCode::NOT_FOUND,
        message: "no such webhook".into(),
    })?;
    let by = &session.caller;
    let service = &state.service;
    let notice = match action {
        "test" => {
            let outcome = service.test_webhook(webhook_id, by).await?;
            context! {
                kind => if outcome.outcome.as_str() == "success" { "ok" } else { "bad" },
                text => format!(
                    "Test message sent: {}{}{} in {} ms.",
                    outcome.outcome.as_str(),
                    outcome.status_code.map(|c| format!(", HTTP {c}")).unwrap_or_default(),
                    outcome.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
                    outcome.duration_ms
                ),
            }
        }
        "resume" => {
            service.resume_webhook(webhook_id, by).await?;
            context! { kind => "ok", text => "Delivery resumed." }
        }
        "enable" | "disable" => {
            let enabled = action == "enable";
            let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                {"op": "replace", "path": "/enabled", "value": enabled}
            ]))
            .expect("a fixed JSON Patch");
            service
                .patch_webhook(webhook_id, &patch, &base.0, by)
                .await?;
            context! { kind => "ok", text => if enabled { "Webhook enabled." } else { "Webhook disabled." } }
        }
        "rotate-secret" => {
            let rotation = Rotation {
                secret_key: None,
                grace_period_seconds: None,
            };
            let rotated = service.rotate_secret(webhook_id, rotation, by).await?;
            context! {
                kind => "ok",
                text => "Secret rotated. The new secret is shown this once; the previous one keeps signing for 24 hours.",
                secret => rotated.generated_secret,
            }
        }
        other => {
            return Err(Problem {
                status: StatusCode::NOT_FOUND,
                message: format!("no action '{other}'"),
            });
        }
    };
    webhook_page(state, session, base, id, None, notice).await
}
