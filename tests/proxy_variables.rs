//! Proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored: a proxy would
//! connect to the destination on outhook's behalf, out of reach of the address policy.
//!
//! A test binary of its own: environment variables are global to the process, and this
//! one test sets them before anything else runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::receiver::Receiver;
use outhook::dispatch::sender::{OutboundRequest, Sender};
use outhook::domain::address::AddressPolicy;
use outhook::domain::delivery::ErrorKind;
use reqwest::header::HeaderMap;

/// A listener on 127.0.0.1 that plays a proxy: it counts connections and answers 200.
async fn proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (url, connections)
}

fn get(url: &str) -> OutboundRequest {
    OutboundRequest {
        method: reqwest::Method::POST,
        url: url.parse().unwrap(),
        body: b"{}".to_vec(),
        headers: HeaderMap::new(),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn proxy_variables_are_ignored() {
    let (proxy_url, connections) = proxy().await;
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        // SAFETY: the only test of this binary, on a current-thread runtime: no other
        // thread reads the environment while it is written.
        unsafe { std::env::set_var(name, &proxy_url) };
    }
    for name in ["NO_PROXY", "no_proxy"] {
        // SAFETY: as above.
        unsafe { std::env::remove_var(name) };
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();

    // A destination the policy refuses is refused, by its own address: the proxy (on an
    // address the policy does not check) never sees the request.
    let strict = Sender::new(AddressPolicy::default()).unwrap();
    for url in [
        format!("http://localhost:{port}/internal"),
        format!("http://127.0.0.1:{port}/internal"),
    ] {
        let sent = strict.send(get(&url)).await;
        assert_eq!(
            sent.result.error_kind,
            Some(ErrorKind::Refused),
            "{url}: {:?}",
            sent.result
        );
    }
    assert!(receiver.requests("/internal").is_empty());

    // An allowed destination is reached directly, not through the proxy.
    let allowing = Sender::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])).unwrap();
    let sent = allowing
        .send(get(&format!("http://localhost:{port}/direct")))
        .await;
    assert_eq!(sent.result.status_code, Some(200), "{:?}", sent.result);
    assert_eq!(receiver.requests("/direct").len(), 1);

    assert_eq!(connections.load(Ordering::SeqCst), 0, "the proxy was used");
}
