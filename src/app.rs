//! Starting and stopping outhook: what `outhook serve` runs and what the tests start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{self, AppState};
use crate::bus::Ingestor;
use crate::bus::nats::{self, NatsSettings};
use crate::bus::ratelimit::{Limits, RateLimiter};
use crate::clock::Clock;
use crate::config::ServeArgs;
use crate::dispatch::{self, Dispatcher};
use crate::domain::token::{
    Role, Token, TokenName, check_configured_token, generate_secret, hash_secret,
};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::{self, Store};

/// The name the configured admin token is stored under.
pub const CONFIGURED_ADMIN: &str = "configured-admin";

/// A running instance.
pub struct Running {
    /// Where the API listens (the real port when the bind address asked for port 0).
    pub addr: SocketAddr,
    /// The admin token created because none existed and none was configured. It exists
    /// only here: the database keeps its hash.
    pub generated_admin_token: Option<String>,
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    /// Reads the NATS stream, when one is configured.
    bus: Option<JoinHandle<()>>,
    ingestor: JoinHandle<()>,
}

impl Running {
    /// Stops taking requests, lets the ones in flight finish, then stops the dispatcher
    /// (the attempt in flight is finished and recorded, leases are handed back).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// A token that stops this instance when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server ends (after [`Running::shutdown_token`] is cancelled), then
    /// drains the ingest queue and stops the dispatcher.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("the server task panicked")?;
        // The bus reader stops with the same token, after committing what it holds.
        if let Some(bus) = self.bus {
            let _ = bus.await;
        }
        // The API and the bus reader are gone, and with them every handle on the
        // ingestor: it drains and ends.
        let _ = self.ingestor.await;
        self.dispatcher.shutdown().await;
        served?;
        Ok(())
    }
}

/// Opens the database (running migrations), makes sure an admin token exists, binds the
/// address and starts serving.
pub async fn start(args: &ServeArgs, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    install_crypto_provider();
    let store = store::connect(&args.database.database_url)
        .await
        .context("opening the database")?;
    let generated_admin_token =
        ensure_admin_token(store.as_ref(), args.admin_token.as_deref(), clock.now_ms())
            .await
            .context("setting up the admin token")?;
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let settings = dispatch::Settings {
        retry_schedule: args.retry_schedule.0.clone(),
        retention: args.retention,
        allow_private: args.allow_private.clone(),
        lease_ttl: args.lease_ttl,
        poll_interval: args.poll_interval,
        max_in_flight: args.max_in_flight as usize,
        instance_name: args.instance_name.clone(),
    };
    let dispatcher =
        Arc::new(Dispatcher::start(store.clone(), clock.clone(), metrics.clone(), settings).await?);
    let wake = dispatcher.clone();
    let (ingestor, ingest_task) = Ingestor::start(
        store.clone(),
        clock.clone(),
        metrics.clone(),
        Arc::new(move |events, appended| wake.events_committed(events, appended)),
    );
    let service = Arc::new(Service::new(
        store.clone(),
        clock.clone(),
        dispatcher.clone(),
        ingestor,
    ));
    let shutdown = CancellationToken::new();
    let bus = args.nats.nats_url.as_ref().map(|url| {
        nats::start(
            NatsSettings {
                url: url.clone(),
                stream: args.nats.nats_stream.clone(),
                subjects: args.nats.nats_subjects.clone(),
                consumer: args.nats.nats_consumer.clone(),
                max_events: args.max_events_per_request as usize,
            },
            service.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
    });
    let state = Arc::new(AppState {
        service,
        clock,
        limiter: RateLimiter::new(Limits {
            per_second: args.publish_rate,
            burst: args.publish_burst,
            daily: args.publish_daily_quota,
        }),
        metrics,
        max_events_per_request: args.max_events_per_request as usize,
    });
    let stop = shutdown.clone();
    let app = api::router(state);
    let limits = api::server::Limits {
        header_read_timeout: args.header_read_timeout,
        max_connections: args.max_connections as usize,
    };
    let server = tokio::spawn(api::server::serve(listener, app, limits, stop));
    tracing::info!(%addr, backend = store.backend(), "outhook is serving");
    Ok(Running {
        addr,
        generated_admin_token,
        store,
        dispatcher,
        shutdown,
        server,
        bus,
        ingestor: ingest_task,
    })
}

/// A configured token becomes the stored `configured-admin` token (replacing an earlier
/// one); a placeholder or too short a token is refused before anything is stored. Without one, a new admin token is generated when no live admin token exists; it is
/// returned so that the caller can show it once.
pub async fn ensure_admin_token(
    store: &dyn Store,
    configured: Option<&str>,
    now: i64,
) -> anyhow::Result<Option<String>> {
    let token = |name: String, secret: &str, by: &str| Token {
        id: Uuid::new_v4(),
        name: TokenName::try_from(name).expect("a fixed, valid token name"),
        role: Role::Admin,
        hash: hash_secret(secret),
        signing_secret: None,
        created_at: now,
        created_by: by.to_owned(),
        revoked_at: None,
    };
    if let Some(secret) = configured {
        check_configured_token(secret).map_err(|rule| {
            anyhow::anyhow!(
                "OUTHOOK_ADMIN_TOKEN (--admin-token) {rule}; or leave it unset, and the \
                 first start creates an admin token and prints it once"
            )
        })?;
        store
            .upsert_token(&token(CONFIGURED_ADMIN.into(), secret, "configuration"))
            .await?;
        return Ok(None);
    }
    if store.count_live_tokens(Role::Admin).await? > 0 {
        return Ok(None);
    }
    let secret = generate_secret();
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    store
        .insert_token(&token(
            format!("bootstrap-admin-{suffix}"),
            &secret,
            "bootstrap",
        ))
        .await?;
    Ok(Some(secret))
}

/// TLS for outbound deliveries uses rustls with the *ring* provider (no C toolchain beyond
/// what ring needs). Installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
