//! The `gallop` binary: one command per job, each in its own module; no business logic here.

mod debug;
mod generate;
mod keys;
mod models;
mod serve;
mod serving;
mod state;
mod token;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gallop",
    version,
    about = "Self-hosted image-to-video and reference-to-video generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (with a worker inside unless --no-worker).
    Serve(serve::Args),
    /// Run only a worker: it claims jobs from the database that `gallop serve` processes share.
    Worker(worker::Args),
    /// Generate one video from the command line.
    Generate(generate::Args),
    /// Download checkpoints from the Hugging Face Hub.
    Models(models::Args),
    /// Manage API tokens.
    Token(token::Args),
    /// Manage accounts' own upstream keys (BYOK).
    Keys(keys::Args),
    /// Developer tools: run one model component on tensors from a file.
    Debug(debug::Args),
}

fn main() -> std::process::ExitCode {
    gallop_wan::memory::reuse_freed_memory();
    let cli = Cli::parse();
    // The service logs its work; the one-shot commands print their own lines and log only
    // warnings unless RUST_LOG asks for more.
    init_logging(match cli.command {
        Command::Serve(_) | Command::Worker(_) => "info",
        _ => "warn",
    });
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Token(a) => token::run(a),
        Command::Keys(a) => keys::run(a),
        Command::Models(a) => models::run(a),
        Command::Debug(a) => debug::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default`), with colour only on a terminal so a
/// log redirected to a file holds no escape codes.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
