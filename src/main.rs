//! The `outhook` binary: parses the command line and calls into the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use outhook::clock::SystemClock;
use outhook::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("outhook: {err:#}");
            ExitCode::FAILURE
        }
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
    match outhook::dispatch::sign::verify(
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
