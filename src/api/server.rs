//! Serving the API over HTTP/1.1, with the limits a public listener needs: a client must
//! finish a request's headers within a timeout (an idle keep-alive connection too), at
//! most a set number of connections are served at once (beyond it, accepting waits), and
//! a request body the handler did not read is drained, within bounds, before the answer,
//! so that a client still sending reads the answer instead of a reset connection.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers, counted from the start of
    /// the connection or from the end of the previous answer on a kept-alive one. Past it
    /// the connection is closed. A request body may stall as long between two pieces
    /// (then 408).
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets the requests in
/// flight finish (idle connections close at once) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Handlers reading a body find the limits here (see `extract`).
    let app = app.layer(axum::Extension(limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        // A slot first: at the limit, connections wait in the listen queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // The client went away between connecting and being accepted.
            Err(err) if is_connection_error(&err) => continue,
            // Out of file descriptors, most likely: wait for some to be released.
            Err(err) => {
                tracing::error!(error = %err, "accepting a connection failed; trying again in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that closes, resets or times out is no error of the server's.
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Most bytes of an unread request body drained before answering: twice the largest body
/// any route accepts.
pub const DRAIN_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// Longest time spent draining an unread request body.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Middleware: when the handler answered without reading the whole request body (a 413,
/// a 415, a 401 before any look at it…), reads and drops the rest before the answer goes
/// out. A client that sends its whole body before reading (most do) otherwise meets a
/// closed connection and never sees the answer. Past [`DRAIN_MAX_BYTES`] or
/// [`DRAIN_MAX_TIME`] the answer goes out with `Connection: close`; a client that asked
/// `Expect: 100-continue` and was not told to continue has sent nothing, and is answered
/// at once.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if http_body::Body::is_end_stream(&body) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let shared = Arc::new(Mutex::new(Shared {
        body: Some(body),
        polled: false,
        ended: false,
    }));
    let response = next
        .run(Request::from_parts(
            parts,
            Body::new(SharedBody(shared.clone())),
        ))
        .await;
    let (rest, polled) = {
        let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
        let rest = if state.ended { None } else { state.body.take() };
        (rest, state.polled)
    };
    let Some(rest) = rest else {
        return response;
    };
    // A client told to wait, or one that stopped sending, is not waited for.
    if (expects_continue && !polled) || response.status() == StatusCode::REQUEST_TIMEOUT {
        return closing(response);
    }
    let declared = http_body::Body::size_hint(&rest).exact();
    if declared.is_some_and(|n| n > DRAIN_MAX_BYTES) {
        return closing(response);
    }
    match tokio::time::timeout(DRAIN_MAX_TIME, drain(rest, DRAIN_MAX_BYTES)).await {
        Ok(true) => response,
        _ => closing(response),
    }
}

/// Reads and drops a body; true when it ended within `max_bytes`.
async fn drain(mut body: Body, max_bytes: u64) -> bool {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
            if seen > max_bytes {
                return false;
            }
        }
    }
    true
}

fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The request body as the handler sees it; [`drain_unread_body`] keeps the other handle.
struct SharedBody(Arc<Mutex<Shared>>);

struct Shared {
    body: Option<Body>,
    /// The handler asked for the body (for `Expect: 100-continue`, the client was told to
    /// send it).
    polled: bool,
    ended: bool,
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.polled = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            state.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
