//! Hostile connections, with raw TCP clients on 127.0.0.1: headers never finished, more
//! connections than the server takes, and bodies far over the limit sent in one go. The
//! storage backend plays no part here; these run on SQLite.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Backend, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes the connection (or `within` passes); returns what came
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (received, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one answer's status line and headers (at most `within`).
async fn read_head(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            other => panic!(
                "no answer ({other:?}) after {:?}; got {:?}",
                within,
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.running.as_ref().unwrap().addr)
        .await
        .expect("connecting to the app")
}

/// Connections that never finish their headers (or never send a byte) are closed after
/// the header-read timeout, and the server answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_cut_off_after_the_timeout() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &["--admin-token", ADMIN_TOKEN, "--header-read-timeout", "1s"],
    )
    .await;
    const HALF: usize = 150;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..2 * HALF {
        let mut stream = connect(&app).await;
        if i < HALF {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        stalled.push(stream);
    }
    // Meanwhile, the server answers.
    for _ in 0..5 {
        let started = Instant::now();
        let response = app
            .client
            .get(app.url("/healthz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .expect("the server answers while 300 connections stall");
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    for (i, stream) in stalled.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(closed, "connection {i} is still open after 10 s");
    }
    let all_closed = opened.elapsed();
    assert!(
        all_closed < Duration::from_secs(5),
        "closing took {all_closed:?} with a 1 s timeout"
    );
    eprintln!("300 stalled connections closed {all_closed:?} after they opened");
    app.stop().await;
}

/// Beyond `--max-connections`, a connection waits to be accepted until one is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--max-connections",
            "4",
            "--header-read-timeout",
            "20s",
        ],
    )
    .await;
    // No kept-alive connection of the client's own takes a slot.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let health = || client.get(app.url("/healthz")).send();
    assert_eq!(health().await.unwrap().status(), 200);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::time::timeout(Duration::from_millis(500), health()).await;
    assert!(
        waiting.is_err(),
        "a fifth connection was served: {waiting:?}"
    );
    drop(held.pop());
    let answered = tokio::time::timeout(Duration::from_secs(5), health())
        .await
        .expect("a released slot lets the next connection in")
        .unwrap();
    assert_eq!(answered.status(), 200);
    drop(held);
    app.stop().await;
}

/// A client that sends its whole oversized body before reading reads the 413 (it got a
/// broken pipe), and so does one refused before its body was looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sent_in_full_gets_its_413() {
    let app = TestApp::start_with(Backend::Sqlite, &["--admin-token", ADMIN_TOKEN]).await;
    let body = vec![b'x'; 8 * 1024 * 1024];
    let send = |path: &'static str, head: String, body: Vec<u8>| {
        let app = &app;
        async move {
            let mut stream = connect(app).await;
            let started = Instant::now();
            stream.write_all(head.as_bytes()).await.unwrap();
            stream
                .write_all(&body)
                .await
                .unwrap_or_else(|e| panic!("{path}: writing the body failed: {e}"));
            let answer = read_head(&mut stream, Duration::from_secs(10)).await;
            (answer, started.elapsed(), stream)
        }
    };
    let head = |path: &str, auth: bool, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            if auth {
                format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")
            } else {
                String::new()
            }
        )
    };
    // Declared too large, refused on the declaration.
    let (answer, took, _) = send(
        "/api/v1/webhooks",
        head("/api/v1/webhooks", true, body.len()),
        body.clone(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    eprintln!("8 MiB to POST /api/v1/webhooks: 413 read after {took:?}");
    // Refused before the body is looked at: no token.
    let (answer, ..) = send(
        "/api/v1/webhooks",
        head("/api/v1/webhooks", false, body.len()),
        body.clone(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Chunked, with no length declared: refused once 1 MiB is passed.
    let mut chunked = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (answer, _, mut stream) = send(
        "/api/v1/webhooks",
        format!(
            "POST /api/v1/webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        chunked,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The body was read to its end: the connection serves the next request.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let next = read_head(&mut stream, Duration::from_secs(5)).await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    // Over the publish limit of 16 MiB.
    let large = vec![b'x'; 20 * 1024 * 1024];
    let (answer, ..) = send(
        "/api/v1/events",
        head("/api/v1/events", true, large.len()),
        large,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A client that waits for `100 Continue` is answered at once, and not asked for a
    // body that would be refused.
    let mut stream = connect(&app).await;
    stream
        .write_all(
            format!(
                "POST /api/v1/webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // So is one declaring more than the server would ever drain (it has sent nothing yet).
    let mut stream = connect(&app).await;
    stream
        .write_all(head("/api/v1/webhooks", true, 1 << 30).as_bytes())
        .await
        .unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(
        closed,
        "the connection stays open after a body it will not read"
    );
    app.stop().await;
}

/// A request body that stops arriving gets a 408 after the header-read timeout, and its
/// connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &["--admin-token", ADMIN_TOKEN, "--header-read-timeout", "1s"],
    )
    .await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST /api/v1/webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\": "
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_head(&mut stream, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(3), "the 408 took {took:?}");
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(closed, "the connection stays open");
    app.stop().await;
}
