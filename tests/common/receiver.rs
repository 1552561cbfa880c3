//! A real HTTP receiver on 127.0.0.1 that records every request. Each path answers 200
//! unless told otherwise: a fixed status, a sequence of statuses, a share of failures, or a
//! delay.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status the receiver chose for it when it arrived (it may be answered after a delay,
    /// or never reach a client that gave up).
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Behaviour {
    status: HashMap<String, u16>,
    sequence: HashMap<String, VecDeque<u16>>,
    flaky: HashMap<String, Flaky>,
    delay: HashMap<String, Duration>,
}

/// A path that fails a pseudo-random but reproducible share of its requests.
struct Flaky {
    status: u16,
    per_mille: u64,
    seed: u64,
    seen: u64,
}

/// Whether the `n`-th request (from 0) of a path made flaky with `seed` fails when
/// `per_mille` of 1000 requests fail: the same answer every run, so a test can tell in
/// advance how many failures in a row it will meet.
pub fn flaky_fails(seed: u64, per_mille: u64, n: u64) -> bool {
    // splitmix64: consecutive inputs give well-spread outputs.
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1000 < per_mille
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    /// Every request as it arrived, before any delay (`requests` has them once answered).
    arrivals: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    arrived: Notify,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Arc<Shared>>, request: Request) -> StatusCode {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let (status, delay) = {
        let mut b = shared.behaviour.lock().unwrap();
        let next = b.sequence.get_mut(&path).and_then(VecDeque::pop_front);
        let flaky = b.flaky.get_mut(&path).and_then(|f| {
            f.seen += 1;
            flaky_fails(f.seed, f.per_mille, f.seen - 1).then_some(f.status)
        });
        (
            next.or(flaky)
                .or_else(|| b.status.get(&path).copied())
                .unwrap_or(200),
            b.delay.get(&path).copied(),
        )
    };
    let received = Received {
        path,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        at: Instant::now(),
        status,
    };
    shared.arrivals.lock().unwrap().push(received.clone());
    shared.arrived.notify_waiters();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    shared.requests.lock().unwrap().push(Received {
        at: Instant::now(),
        ..received
    });
    shared.arrived.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}

fn on_path(list: &Mutex<Vec<Received>>, path: &str) -> Vec<Received> {
    let list = list.lock().unwrap();
    list.iter().filter(|r| r.path == path).cloned().collect()
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request to `path` answers `status` from now on.
    pub fn respond(&self, path: &str, status: u16) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .status
            .insert(path.to_owned(), status);
    }

    /// The next requests to `path` answer these, in order; then the fixed status.
    pub fn respond_sequence(&self, path: &str, statuses: &[u16]) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .sequence
            .insert(path.to_owned(), statuses.iter().copied().collect());
    }

    /// From now on, requests to `path` fail with `status` where [`flaky_fails`] says so (about
    /// `per_mille` of 1000), and otherwise answer as before.
    pub fn fail_share(&self, path: &str, status: u16, per_mille: u64, seed: u64) {
        self.shared.behaviour.lock().unwrap().flaky.insert(
            path.to_owned(),
            Flaky {
                status,
                per_mille,
                seed,
                seen: 0,
            },
        );
    }

    /// Requests to `path` are held this long before they are answered.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .delay
            .insert(path.to_owned(), delay);
    }

    /// The requests to `path` that were answered.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        on_path(&self.shared.requests, path)
    }

    /// The requests to `path` that arrived, answered or still held by a delay.
    pub fn arrivals(&self, path: &str) -> Vec<Received> {
        on_path(&self.shared.arrivals, path)
    }

    /// Waits (at most `within`) until `path` has received at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{path}: {} of {n} requests arrived within {within:?}",
                got.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), arrived).await;
        }
    }

    /// Checks that `path` has exactly `n` requests and gets no more for `quiet`.
    pub async fn assert_stays_at(&self, path: &str, n: usize, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        assert_eq!(self.requests(path).len(), n, "{path}: unexpected requests");
    }
}
