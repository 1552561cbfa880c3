//! Outbound HTTP. One pooled client for every webhook; redirects are not followed; the
//! destination must resolve to a public address unless the operator allowed its range
//! (SPEC §7). The check runs on the resolved addresses, so DNS rebinding cannot slip past;
//! requests never go through a proxy, which would resolve and connect out of its sight.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::address::AddressPolicy;
use crate::domain::delivery::{AttemptResult, ErrorKind};

/// How much of a response body is kept in the delivery log.
pub const EXCERPT_BYTES: usize = 1024;
/// How much of a response body is read at most (the rest is dropped with the connection).
const READ_LIMIT: usize = 64 * 1024;

/// The error a refused destination produces inside the HTTP client.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves names and keeps only the addresses the policy permits.
struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves only to addresses outhook may not reach ({}); allow them with OUTHOOK_ALLOW_PRIVATE",
                    shown.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// Why a request got no answer: its text is the delivery's reason in the log and in
/// `failureDetails`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The destination is not one outhook may reach (SPEC §7).
    #[error("{0}")]
    Refused(String),
    /// No answer in time: the webhook's timeout, or the client's own.
    #[error("{0}")]
    Timeout(String),
    /// No connection (refused, unreachable, a failed name look-up): its innermost cause.
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Other(String),
}

impl SendError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SendError::Refused(_) => ErrorKind::Refused,
            SendError::Timeout(_) => ErrorKind::Timeout,
            SendError::Connect(_) => ErrorKind::Connect,
            SendError::Other(_) => ErrorKind::Other,
        }
    }
}

impl From<SendError> for AttemptResult {
    fn from(error: SendError) -> Self {
        AttemptResult::error(error.kind(), error.to_string())
    }
}

/// One request to send.
pub struct OutboundRequest {
    pub method: reqwest::Method,
    pub url: url::Url,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    pub timeout: Duration,
}

/// What came of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub result: AttemptResult,
    pub duration_ms: i64,
    pub response_excerpt: Option<String>,
}

impl Sent {
    /// An outcome reached without sending anything.
    pub fn unsent(result: AttemptResult) -> Self {
        Self {
            result,
            duration_ms: 0,
            response_excerpt: None,
        }
    }
}

pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl Sender {
    pub fn new(policy: AddressPolicy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            // Proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) are ignored: a proxy
            // connects to the destination itself, where the address policy cannot see.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("outhook/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Sends one request and classifies the outcome; never panics, never retries.
    pub async fn send(&self, request: OutboundRequest) -> Sent {
        let started = Instant::now();
        let elapsed = |started: Instant| started.elapsed().as_millis() as i64;
        // A literal IP never goes through the resolver: check it here.
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = request.url.host() {
            let ip: Option<IpAddr> = match request.url.host() {
                Some(url::Host::Ipv4(v4)) => Some(v4.into()),
                Some(url::Host::Ipv6(v6)) => Some(v6.into()),
                _ => None,
            };
            if let Some(ip) = ip.filter(|ip| !self.policy.permits(*ip)) {
                let refused = SendError::Refused(format!(
                    "{ip} is not a public address; allow it with OUTHOOK_ALLOW_PRIVATE"
                ));
                return Sent::unsent(refused.into());
            }
        }
        let call = async {
            let response = self
                .client
                .request(request.method, request.url.clone())
                .headers(request.headers)
                .body(request.body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let excerpt = read_excerpt(response).await;
            Ok::<_, reqwest::Error>((status, excerpt))
        };
        match tokio::time::timeout(request.timeout, call).await {
            Err(_) => Sent {
                result: SendError::Timeout(format!(
                    "no answer within {} s",
                    request.timeout.as_secs()
                ))
                .into(),
                duration_ms: elapsed(started),
                response_excerpt: None,
            },
            Ok(Ok((status, excerpt))) => Sent {
                result: AttemptResult::from_status(status),
                duration_ms: elapsed(started),
                response_excerpt: excerpt,
            },
            Ok(Err(err)) => Sent {
                result: classify(&err).into(),
                duration_ms: elapsed(started),
                response_excerpt: None,
            },
        }
    }
}

/// The start of the response body, as text, for the delivery log.
async fn read_excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    if body.is_empty() {
        return None;
    }
    body.truncate(EXCERPT_BYTES);
    // PostgreSQL refuses NUL in text: a receiver answering one would make the attempt
    // impossible to record, and the webhook would stop on it.
    Some(String::from_utf8_lossy(&body).replace('\0', "\u{FFFD}"))
}

/// What a failed exchange comes to.
fn classify(err: &reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return SendError::Refused(refused.0.clone());
        }
        source = e.source();
    }
    let kind = if err.is_timeout() {
        SendError::Timeout
    } else if err.is_connect() {
        SendError::Connect
    } else {
        SendError::Other
    };
    // The innermost cause says the most (connection refused, DNS failure, …).
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text = e.to_string();
        source = e.source();
    }
    kind(text)
}

/// Builds a header map from validated custom headers; invalid ones cannot occur (checked
/// on write) and are skipped if they did.
pub fn header_map(pairs: impl IntoIterator<Item = (String, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            map.insert(name, value);
        }
    }
    map
}
