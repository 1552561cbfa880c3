//! Command line and environment (SPEC §8). Every flag has an environment variable; both
//! are listed by `outhook serve --help`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::domain::address::Cidr;
use crate::domain::delivery::RetrySchedule;
use crate::domain::signature::SignatureScheme;

#[derive(Debug, Parser)]
#[command(
    name = "outhook",
    version,
    about = "Outbound event-notification dispatcher in the style of OpenMetadata webhooks",
    long_about = None
)]
pub struct Cli {
    /// How log lines on standard error look: `text` for people, `json` (one object a
    /// line) for log collectors.
    #[arg(
        long,
        env = "OUTHOOK_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event; coloured only when standard error is a terminal.
    Text,
    /// One JSON object per line: timestamp, level, target, the event's fields and its spans.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST API and the dispatcher (migrations run first).
    Serve(ServeArgs),
    /// Bring the database schema up to date and exit.
    Migrate(DatabaseArgs),
    /// Check a delivery's signature: reads the exact body (or, for GET, the query string)
    /// from standard input; exits 0 when it verifies, 1 when it does not.
    Verify(VerifyArgs),
    /// Exit 0 when a running `outhook serve` answers `/readyz` with 200, 1 otherwise: the
    /// container health check, with nothing else to install in the image.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The address `outhook serve` listens on; an unspecified address (`0.0.0.0`, `::`)
    /// is checked on loopback.
    #[arg(long, env = "OUTHOOK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// The URL to check instead of `/readyz` on the bind address.
    #[arg(long)]
    pub url: Option<String>,

    /// How long to wait for the answer (units ms, s, m, h, d).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl HealthcheckArgs {
    /// What the check asks: `--url`, or `/readyz` on the bind address.
    pub fn target(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let mut addr = self.bind;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}/readyz")
    }
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The webhook's secretKey (for standard-webhooks, the `whsec_…` secret).
    #[arg(long)]
    pub secret: String,

    /// openmetadata (X-OpenMetadata-Signature), openmetadata-base64 (X-OM-Signature) or
    /// standard-webhooks (webhook-signature).
    #[arg(long, default_value = "openmetadata")]
    pub scheme: SignatureScheme,

    /// The signature header's value, e.g. `sha256=…` or `v1,… v1,…`.
    #[arg(long)]
    pub signature: String,

    /// standard-webhooks: the `webhook-id` header.
    #[arg(long)]
    pub id: Option<String>,

    /// standard-webhooks: the `webhook-timestamp` header (seconds).
    #[arg(long)]
    pub timestamp: Option<i64>,

    /// standard-webhooks: refuse a timestamp further than this many seconds from now
    /// (replay protection; the Standard Webhooks libraries use 300).
    #[arg(long)]
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Where state lives: `postgres://user@host:5432/db`, or `sqlite://FILE` (an embedded
    /// file, created when missing).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://outhook.db")]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port the API listens on.
    #[arg(long, env = "OUTHOOK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// A bearer token that is always a valid admin token (at least 16 characters, not a
    /// placeholder such as `change-me…`). Without one, the first start generates an admin
    /// token and prints it once. Prefer the environment variable: flags are visible to
    /// other users of the machine.
    #[arg(long, env = "OUTHOOK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Comma-separated CIDR ranges that outbound deliveries may reach although they are
    /// private, loopback or link-local (e.g. `127.0.0.0/8,10.1.0.0/16`). Default: none.
    #[arg(long, env = "OUTHOOK_ALLOW_PRIVATE", value_delimiter = ',')]
    pub allow_private: Vec<Cidr>,

    /// Delays between attempts of a failed delivery, comma-separated (units ms, s, m, h, d).
    /// After the last one the webhook stops with status retryLimitReached.
    #[arg(
        long,
        env = "OUTHOOK_RETRY_SCHEDULE",
        default_value = "1m,5m,15m,1h,4h,12h",
        value_parser = parse_retry_schedule
    )]
    pub retry_schedule: RetrySchedule,

    /// How long accepted events are kept in the event log (units ms, s, m, h, d).
    #[arg(long, env = "OUTHOOK_RETENTION", default_value = "14d", value_parser = parse_duration)]
    pub retention: Duration,

    /// Publish requests per second allowed per token (POST /api/v1/events).
    #[arg(long, env = "OUTHOOK_PUBLISH_RATE", default_value_t = 1000.0)]
    pub publish_rate: f64,

    /// Publish requests a token may make at once above its rate.
    #[arg(long, env = "OUTHOOK_PUBLISH_BURST", default_value_t = 2000.0)]
    pub publish_burst: f64,

    /// Publish requests allowed per token per UTC day.
    #[arg(
        long,
        env = "OUTHOOK_PUBLISH_DAILY_QUOTA",
        default_value_t = 10_000_000
    )]
    pub publish_daily_quota: u64,

    /// Most events in one publish request (1–10000).
    #[arg(long, env = "OUTHOOK_MAX_EVENTS_PER_REQUEST", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_events_per_request: u32,

    /// Deliveries in flight at once, across all webhooks.
    #[arg(long, env = "OUTHOOK_MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,

    /// How long a silent instance keeps its webhooks before another instance takes them.
    #[arg(long, env = "OUTHOOK_LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// How often the event log is polled when no wake-up arrives (wake-ups are immediate).
    #[arg(long, env = "OUTHOOK_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// How long a client may take to send a request's headers (an idle kept-alive
    /// connection counts too); then its connection is closed.
    #[arg(long, env = "OUTHOOK_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Connections the API serves at once; further ones wait to be accepted.
    #[arg(long, env = "OUTHOOK_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// This instance's name among the instances sharing the database (default
    /// `<host name>:<pid>`). A starting instance takes back at once the leases of an
    /// earlier instance of the same name: give a stable name to an instance that restarts
    /// on another machine, and never one name to two running instances.
    #[arg(long, env = "OUTHOOK_INSTANCE_NAME", value_parser = parse_instance_name)]
    pub instance_name: Option<String>,

    #[command(flatten)]
    pub nats: NatsArgs,
}

/// NATS JetStream as a second entry for events, beside `POST /api/v1/events`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// A NATS server with JetStream (`nats://127.0.0.1:4222`) to read events from. Without
    /// it no bus is read. Credentials in it (`nats://user:password@host`) are never logged.
    #[arg(long, env = "OUTHOOK_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// The JetStream stream events are read from; created (file storage) when missing.
    #[arg(long, env = "OUTHOOK_NATS_STREAM", default_value = "OUTHOOK_EVENTS",
          value_parser = parse_nats_name)]
    pub nats_stream: String,

    /// Comma-separated subjects of the stream when outhook creates it.
    #[arg(
        long,
        env = "OUTHOOK_NATS_SUBJECTS",
        default_value = "outhook.events.>",
        value_delimiter = ','
    )]
    pub nats_subjects: Vec<String>,

    /// The durable pull consumer outhook reads through; instances sharing it share the
    /// messages.
    #[arg(long, env = "OUTHOOK_NATS_CONSUMER", default_value = "outhook",
          value_parser = parse_nats_name)]
    pub nats_consumer: String,
}

/// A stream or consumer name: 1–64 characters without whitespace, `.`, `*`, `>`, `/` or `\`.
fn parse_nats_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 64 {
        return Err("a NATS stream or consumer name has 1–64 characters".into());
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
    {
        return Err(format!(
            "'{text}' is not a NATS stream or consumer name (no spaces, '.', '*', '>', '/' or '\\')"
        ));
    }
    Ok(text.to_owned())
}

/// An instance name: 1–128 characters, no control characters.
fn parse_instance_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err("an instance name has 1–128 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("an instance name has no control characters".into());
    }
    Ok(name.to_owned())
}

/// Parses `500ms`, `30s`, `5m`, `4h`, `14d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30s, 5m, 4h or 14d"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{text}': the unit must be ms, s, m, h or d")),
    };
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("'{text}' is too long"))?;
    if ms == 0 {
        return Err(format!("'{text}' must be longer than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// Parses a retry schedule: delays separated by commas (`1m,5m,15m,1h,4h,12h`).
pub fn parse_retry_schedule(text: &str) -> Result<RetrySchedule, String> {
    let delays = text
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    RetrySchedule::new(delays).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_the_default_schedule() {
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(
            parse_duration("5").is_err()
                && parse_duration("0s").is_err()
                && parse_duration("1w").is_err()
        );
        let schedule = parse_retry_schedule("1m,5m,15m,1h,4h,12h").unwrap();
        let secs: Vec<u64> = schedule.0.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [60, 300, 900, 3600, 14_400, 43_200]);
    }

    #[test]
    fn the_cli_parses_the_spec_flags() {
        let cli = Cli::try_parse_from([
            "outhook",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://x.db",
            "--allow-private",
            "127.0.0.0/8,10.0.0.0/8",
            "--retry-schedule",
            "1s,2s",
            "--retention",
            "1h",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.allow_private.len(), 2);
        assert_eq!(args.retry_schedule.0.len(), 2);
        assert_eq!(args.retention, Duration::from_secs(3600));
        assert_eq!(args.instance_name, None);
    }

    #[test]
    fn instance_names() {
        assert_eq!(parse_instance_name(" api-1 ").unwrap(), "api-1");
        assert!(parse_instance_name("").is_err());
        assert!(parse_instance_name("a\nb").is_err());
        assert!(parse_instance_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn the_log_format_is_a_flag_on_every_command() {
        for argv in [
            ["outhook", "--log-format", "json", "migrate"],
            ["outhook", "migrate", "--log-format", "json"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(cli.log_format, LogFormat::Json);
        }
        assert!(Cli::try_parse_from(["outhook", "migrate", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn the_healthcheck_asks_readyz_on_loopback_for_an_unspecified_bind() {
        let target = |argv: &[&str]| {
            let Command::Healthcheck(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("healthcheck expected")
            };
            args.target()
        };
        let base = ["outhook", "healthcheck", "--bind"];
        assert_eq!(
            target(&[&base[..], &["0.0.0.0:8080"]].concat()),
            "http://127.0.0.1:8080/readyz"
        );
        assert_eq!(
            target(&[&base[..], &["[::]:9000"]].concat()),
            "http://[::1]:9000/readyz"
        );
        assert_eq!(
            target(&[&base[..], &["10.1.2.3:80"]].concat()),
            "http://10.1.2.3:80/readyz"
        );
        assert_eq!(
            target(&["outhook", "healthcheck", "--url", "http://[::1]:1/healthz"]),
            "http://[::1]:1/healthz"
        );
    }
}
