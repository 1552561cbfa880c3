//! The `outhook` binary: parses the command line and calls into the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use outhook::clock::SystemClock;
use outhook::config::{Cli, Command, HealthcheckArgs, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("outhook: {err:#}"),
                // A log collector reading JSON lines gets the reason as one of them.
                LogFormat::Json => tracing::error!(error = format!("{err:#}"), "outhook stopped"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            // Colour codes are for a person at a terminal; in a file, a pipe or a container
            // log they are noise. NO_COLOR (no-color.org) turns them off at a terminal too.
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(db) => {
            let store = outhook::store::connect(&db.database_url)
                .await
                .context("migrating the database")?;
            tracing::info!(backend = store.backend(), "the schema is up to date");
            Ok(())
        }
        Command::Verify(args) => verify(args),
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::Serve(args) => {
            let running = outhook::app::start(&args, Arc::new(SystemClock)).await?;
            if let Some(token) = &running.generated_admin_token {
                // Shown once, on stdout; only its hash is stored.
                println!(
                    "No admin token was configured, so one was created. It is shown only now:\n\n    {token}\n"
                );
            }
            let stop = running.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing requests in flight");
                stop.cancel();
            });
            running.wait().await
        }
    }
}

/// `outhook verify`: prints why, and exits 1 when the signature does not verify.
fn verify(args: outhook::config::VerifyArgs) -> anyhow::Result<()> {
    use outhook::clock::Clock;
    use std::io::Read;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from standard input")?;
    if let (Some(max_age), Some(ts)) = (args.max_age, args.timestamp) {
        let now = SystemClock.now_ms() / 1000;
        if now.abs_diff(ts) > max_age {
            println!(
                "invalid: the timestamp is {} s away from now (more than {max_age} s)",
                now.abs_diff(ts)
            );
            std::process::exit(1);
        }
    }
    match outhook::domain::signature::verify(
        args.scheme,
        &args.secret,
        &args.signature,
        args.id.as_deref(),
        args.timestamp,
        &body,
    ) {
        Ok(()) => {
            println!("valid: {} signature over {} bytes", args.scheme, body.len());
            Ok(())
        }
        Err(reason) => {
            println!("invalid: {reason}");
            std::process::exit(1);
        }
    }
}

/// `outhook healthcheck`: one GET, success only on a 2xx answer.
async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    outhook::app::install_crypto_provider();
    let url = args.target();
    // No proxy: the instance checked is this machine's own, and a proxy variable set for
    // deliveries must not send the check elsewhere.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .context("outhook did not answer")?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url} answered {status}");
    println!("ready: GET {url} answered {status}");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
