//! Who is using the console: the session cookie, the caller it stands for, and the CSRF
//! token every form that changes something must carry.
//!
//! The cookie holds a random secret (the store keeps its hash): `HttpOnly` (no script
//! reads it), `SameSite=Strict` (no other site's page sends it), `Path=/ui`, and `Secure`
//! when the request came over HTTPS (through a proxy that says so with
//! `X-Forwarded-Proto: https`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::render::Problem;
use crate::api::AppState;
use crate::service::{Caller, csrf_token};

/// The cookie's name.
pub const COOKIE: &str = "outhook_session";

/// A signed-in user of the console.
pub struct Session {
    pub caller: Caller,
    /// The token this session's forms carry.
    pub csrf: String,
    /// The cookie's secret: what signing out ends.
    pub secret: String,
}

impl Session {
    /// Refused (403) unless `sent` is this session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), Problem> {
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "this form is not one of this session's pages (missing or wrong CSRF token); reload the page and try again",
            ))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session secret the request's cookie carries.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether the request came over HTTPS (as a proxy in front says).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The `Set-Cookie` value for a session secret, or one that removes the cookie (`None`).
pub fn set_cookie(headers: &HeaderMap, secret: Option<(&str, i64)>) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let value = match secret {
        Some((secret, max_age_secs)) => format!(
            "{COOKIE}={secret}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        ),
        None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).expect("a session secret is URL-safe base64")
}

/// A request from another site's page (its `Origin` is not this host) changes nothing:
/// a second guard beside the CSRF token and `SameSite=Strict`, which also covers the
/// sign-in form (no session yet).
pub fn check_origin(headers: &HeaderMap) -> Result<(), Problem> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if !host.is_empty() && origin_host == host {
        Ok(())
    } else {
        Err(Problem::forbidden("this form was sent from another site"))
    }
}

/// Without a live session, pages send the browser to the sign-in page.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/ui").into_response()
    }
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let Some(secret) = cookie_secret(&parts.headers) else {
            return Err(SignInFirst.into_response());
        };
        match state.service.session(&secret).await {
            Ok(Some(caller)) => Ok(Session {
                caller,
                csrf: csrf_token(&secret),
                secret,
            }),
            Ok(None) => Err(SignInFirst.into_response()),
            Err(err) => Err(Problem::from(err).into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; outhook_session=abc_-9; b=2"),
        );
        assert_eq!(cookie_secret(&headers).as_deref(), Some("abc_-9"));
        headers.insert(header::COOKIE, HeaderValue::from_static("outhook_session="));
        assert_eq!(cookie_secret(&headers), None);
    }

    #[test]
    fn the_cookie_is_secure_behind_tls_only() {
        let mut headers = HeaderMap::new();
        let plain = set_cookie(&headers, Some(("s", 60)));
        assert_eq!(
            plain,
            "outhook_session=s; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(
            set_cookie(&headers, None)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }

    #[test]
    fn a_form_from_another_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&headers).is_err());
    }
}
