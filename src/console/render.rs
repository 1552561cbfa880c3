//! Rendering console pages: templates embedded in the binary (minijinja, escaping every
//! value for HTML), the headers every page carries, and the error page.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};

use crate::api::error::ApiError;
use crate::clock::{Millis, utc};
use crate::service::ServiceError;

/// Templates, by name; a name ending in `.html` turns on HTML escaping of every value.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    ("events.html", include_str!("templates/events.html")),
    ("problem.html", include_str!("templates/problem.html")),
];

/// The style sheet, served at `/ui/style.css`.
pub const STYLE: &str = include_str!("style.css");

/// The policy of every console page: nothing but this origin's style sheet and forms
/// that post back here; no script, no frames, no other site.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

static TEMPLATE_ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .expect("the console's templates parse");
    }
    env.add_filter("utc", |ms: i64| utc(ms));
    env.add_filter("ago", |ms: i64, now: i64| ago(now - ms));
    env.add_filter("age", |ms: i64| ago(ms));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
});

/// A page: `template` rendered with `context`, inside the layout (which shows `title` and,
/// from the context, who is signed in), with the console's headers.
pub fn page(status: StatusCode, template: &str, title: &str, context: Value) -> Response {
    let rendered = TEMPLATE_ENV
        .get_template(template)
        .and_then(|t| t.render(&context))
        .and_then(|main| {
            TEMPLATE_ENV
                .get_template("base.html")?
                .render(minijinja::context! {
                    title => title,
                    me => context.get_attr("me").unwrap_or_default(),
                    // Escaped already, by its own rendering.
                    main => Value::from_safe_string(main),
                })
        });
    match rendered {
        Ok(html) => with_headers((status, Html(html)).into_response()),
        Err(err) => {
            tracing::error!(error = %err, template, "a console page did not render");
            with_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html("<!doctype html><title>Error</title><p>The page could not be shown.</p>"),
                )
                    .into_response(),
            )
        }
    }
}

/// The headers of every console answer: no caching (pages show secrets once, and what a
/// token may see), no framing, no sniffing, no referrer to other sites (`same-origin`:
/// with `no-referrer` a browser sends its own forms with `Origin: null`, which
/// [`super::session::check_origin`] refuses), and the content policy.
pub fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A page that says why something was refused or failed.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub message: String,
}

impl Problem {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// The service's refusals answer as the API does (same status, same message).
impl From<ServiceError> for Problem {
    fn from(err: ServiceError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<ApiError> for Problem {
    fn from(err: ApiError) -> Self {
        if let ApiError::Internal(inner) = &err {
            tracing::error!(error = format!("{inner:#}"), "console request failed");
        }
        Self {
            status: err.status(),
            message: err.to_string(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("");
        let context = minijinja::context! {
            code => self.status.as_u16(),
            reason => reason,
            message => self.message,
        };
        let title = format!("{} {reason}", self.status.as_u16());
        page(self.status, "problem.html", &title, context)
    }
}

/// A span of time in words: `42 s`, `5 min`, `3 h 20 min`, `2 d 4 h`.
pub fn ago(ms: Millis) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(ago(59_000), "59 s");
        assert_eq!(ago(3_720_000), "1 h 2 min");
    }

    #[test]
    fn values_are_escaped_and_pages_carry_the_headers() {
        let problem = TEMPLATE_ENV.get_template("problem.html").unwrap();
        let html = problem
            .render(minijinja::context! { code => 400, message => "<script>x</script>" })
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        let response = Problem::bad_request("no").into_response();
        assert_eq!(response.status(), 400);
        let headers = response.headers();
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
