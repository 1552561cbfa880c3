//! The console's pages: sign-in, the webhooks list, one webhook, the events.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use minijinja::value::Serde;
use minijinja::{Value, context};
use uuid::Uuid;

use super::PAGE_SIZE;
use super::render::{Problem, page};
use super::session::{Session, cookie_secret};
use super::view::{CHART_HEIGHT, bars, filters_in_words, pretty};
use crate::api::AppState;
use crate::api::extract::BaseUrl;
use crate::domain::token::Permission;
use crate::domain::webhook::{WebhookStatus, WebhookType};
use crate::service::{Cursor, EventSearch, Include, WebhookQuery, csrf_token};

type Params = Query<HashMap<String, String>>;

/// What every signed-in page shows of who is signed in.
pub(super) fn me(session: &Session, now: i64) -> Value {
    context! {
        name => session.caller.name.clone(),
        role => session.caller.role.to_string(),
        admin => session.caller.role.allows(Permission::Manage),
        csrf => session.csrf.clone(),
        now => now,
    }
}

/// The sign-in page, or the webhooks list when signed in.
pub async fn home(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if let Some(secret) = cookie_secret(&headers) {
        match state.service.session(&secret).await {
            Ok(Some(caller)) => {
                let session = Session {
                    caller,
                    csrf: csrf_token(&secret),
                    secret,
                };
                return webhooks(State(state), session, params).await;
            }
            Ok(None) => {}
            Err(err) => return Problem::from(err).into_response(),
        }
    }
    sign_in_page(StatusCode::OK, None)
}

pub(super) fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "sign_in.html",
        "Sign in",
        context! { error => error },
    )
}

/// A query parameter that must be one of an enum's values, or absent or empty.
fn choice<T: std::str::FromStr<Err = String>>(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, Problem> {
    match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| Problem::bad_request(format!("{name}: {e}"))),
    }
}

fn decode_name(cursor: &str) -> Result<String, Problem> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Problem::bad_request("not a cursor from this page"))
}

fn encode_name(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

/// The webhooks: name, type, status, pending events, last success, last failure, filters;
/// filtered by status (or failing) and type, searched by name, a page at a time.
pub async fn webhooks(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Params,
) -> Response {
    match webhooks_page(&state, &session, &params).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn webhooks_page(
    state: &AppState,
    session: &Session,
    params: &HashMap<String, String>,
) -> Result<Response, Problem> {
    session.caller.require(Permission::Read)?;
    let status_param = params.get("status").map(String::as_str).unwrap_or("");
    let failing = status_param == "failing";
    let status = if failing {
        None
    } else {
        choice::<WebhookStatus>(params, "status")?
    };
    let webhook_type = choice::<WebhookType>(params, "type")?;
    let search = params
        .get("q")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if search.as_ref().is_some_and(|q| q.chars().count() > 256) {
        return Err(Problem::bad_request("q: at most 256 characters"));
    }
    let cursor = match (params.get("after"), params.get("before")) {
        (Some(after), _) if !after.is_empty() => Some(Cursor::After(decode_name(after)?)),
        (_, Some(before)) if !before.is_empty() => Some(Cursor::Before(decode_name(before)?)),
        _ => None,
    };
    let query = WebhookQuery {
        status,
        webhook_type,
        include: Include::NonDeleted,
        failing,
        name_contains: search.clone(),
        limit: PAGE_SIZE,
        cursor,
    };
    let list = state.service.webhooks(&query).await?;
    let mut rows = Vec::with_capacity(list.items.len());
    for webhook in &list.items {
        let status = state.service.delivery_status(webhook.id).await?;
        rows.push(context! {
            id => webhook.id.to_string(),
            name => webhook.spec.name.as_str(),
            kind => webhook.spec.webhook_type.as_str(),
            status => status.status.as_str(),
            pending => status.pending_events,
            pending_more => status.pending_is_lower_bound,
            last_success => status.last_success_at,
            last_failure => status.failure_details.as_ref().and_then(|f| f.last_failed_reason.clone()),
            filters => filters_in_words(&webhook.spec.event_filters.0),
        });
    }
    // The page's links keep its filters.
    let keep = |cursor: (&str, String)| {
        let mut pairs = vec![cursor];
        for key in ["status", "type", "q"] {
            if let Some(v) = params.get(key).filter(|v| !v.is_empty()) {
                pairs.push((key, v.clone()));
            }
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    };
    let now = state.clock.now_ms();
    Ok(page(
        StatusCode::OK,
        "webhooks.html",
        "Webhooks",
        context! {
            me => me(session, now),
            rows => rows,
            total => list.total,
            statuses => ["failing"].into_iter().chain(WebhookStatus::ALL.iter().map(|s| s.as_str())).collect::<Vec<_>>(),
            types => WebhookType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            status => status_param,
            kind => params.get("type").cloned().unwrap_or_default(),
            q => search.unwrap_or_default(),
            older => list.after.as_deref().map(|n| keep(("after", encode_name(n)))),
            newer => list.before.as_deref().map(|n| keep(("before", encode_name(n)))),
        },
    ))
}

/// One webhook: its settings (secrets masked), status, health, chart, delivery log.
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    session: Session,
    base: BaseUrl,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let before = params.get("before").filter(|b| !b.is_empty());
    let shown = async {
        let before = before
            .map(|b| {
                b.parse::<i64>()
                    .map_err(|_| Problem::bad_request("before: not a cursor from this page"))
            })
            .transpose()?;
        webhook_page(&state, &session, &base, &id, before, Value::UNDEFINED).await
    };
    match shown.await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

/// The webhook page, with `notice` (what an action just did) on top.
pub(super) async fn webhook_page(
    state: &AppState,
    session: &Session,
    base: &BaseUrl,
    id: &str,
    before: Option<i64>,
    notice: Value,
) -> Result<Response, Problem> {
    session.caller.require(Permission::Read)?;
    let id = Uuid::parse_str(id).map_err(|_| Problem {
        status: StatusCode::NOT_FOUND,
        message: "no such webhook".into(),
    })?;
    let webhook = state.service.webhook(id, Include::NonDeleted).await?;
    let status = state.service.delivery_status(id).await?;
    let report = state.service.health_report(id).await?;
    let log = state.service.attempts(id, None, PAGE_SIZE, before).await?;
    let view = serde_json::to_value(webhook.view(&base.0)).unwrap_or_default();
    let (chart, chart_width) = bars(&report.hourly);
    let attempts: Vec<Value> = log
        .attempts
        .iter()
        .map(|a| {
            Value::from(Serde(serde_json::json!({
                "id": a.id,
                "attempt": a.attempt,
                "deliveryId": a.delivery_id,
                "eventIds": a.event_ids,
                "url": a.url,
                "requestBytes": a.request_bytes,
                "statusCode": a.status_code,
                "responseExcerpt": a.response_excerpt,
                "errorKind": a.error_kind.map(|k| k.as_str()),
                "error": a.error,
                "durationMs": a.duration_ms,
                "attemptedAt": a.attempted_at,
                "outcome": a.outcome.as_str(),
                "nextAttemptAt": a.next_attempt_at,
            })))
        })
        .collect();
    let now = state.clock.now_ms();
    Ok(page(
        StatusCode::OK,
        "webhook.html",
        webhook.spec.name.as_str(),
        context! {
            me => me(session, now),
            notice => notice,
            webhook => Value::from(Serde(&view)),
            config_json => pretty(&view["webhookConfig"]),
            filters => filters_in_words(&webhook.spec.event_filters.0),
            status => Value::from(Serde(&status)),
            chart => Serde(&chart),
            chart_width => chart_width,
            chart_height => CHART_HEIGHT,
            attempts => attempts,
            older => log.older,
        },
    ))
}

/// The most recent events in the log, searched by event id, entity FQN, entity type or
/// event type, each with its JSON.
pub async fn events(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Params,
) -> Response {
    match events_page(&state, &session, &params).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn events_page(
    state: &AppState,
    session: &Session,
    params: &HashMap<String, String>,
) -> Result<Response, Problem> {
    session.caller.require(Permission::Read)?;
    let by = params.get("by").map(String::as_str).unwrap_or("fqn");
    let q = params.get("q").map(|q| q.trim()).unwrap_or("");
    if q.chars().count() > 512 {
        return Err(Problem::bad_request("q: at most 512 characters"));
    }
    let search = match (by, q) {
        (_, "") => EventSearch::All,
        ("eventId", q) => EventSearch::EventId(
            Uuid::parse_str(q).map_err(|_| Problem::bad_request("an event id is a UUID"))?,
        ),
        ("fqn", q) => EventSearch::Fqn(q.to_owned()),
        ("entityType", q) => EventSearch::EntityType(q.to_owned()),
        ("eventType", q) => EventSearch::EventType(q.to_owned()),
        (other, _) => {
            return Err(Problem::bad_request(format!(
                "by: unknown '{other}', expected eventId, fqn, entityType or eventType"
            )));
        }
    };
    let before = match params.get("before").filter(|b| !b.is_empty()) {
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| Problem::bad_request("before: not a cursor from this page"))?,
        ),
        None => None,
    };
    let found = state
        .service
        .recent_events(&search, before, PAGE_SIZE)
        .await?;
    let events: Vec<Value> = found
        .events
        .iter()
        .map(|e| {
            context! {
                seq => e.seq,
                event_id => e.event_id.to_string(),
                event_type => e.event_type.clone(),
                entity_type => e.entity_type.clone(),
                fqn => e.fqn.clone(),
                timestamp => e.timestamp,
                json => e.json.clone(),
            }
        })
        .collect();
    let older = found.older.map(|seq| {
        serde_urlencoded::to_string([("by", by), ("q", q), ("before", &seq.to_string())])
            .unwrap_or_default()
    });
    let now = state.clock.now_ms();
    Ok(page(
        StatusCode::OK,
        "events.html",
        "Events",
        context! {
            me => me(session, now),
            events => events,
            by => by,
            q => q,
            older => older,
            searched_to => found.searched_to,
        },
    ))
}
