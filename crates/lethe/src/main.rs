//! `lethe`: the server and its command-line tools in one binary.

mod audit;
mod deployment;
mod import;
mod receipt;
mod scan;
mod serve;
mod verify;

use clap::{Parser, Subcommand};

/// mimalloc: the server allocates many small, short-lived strings on several threads, where
/// glibc's allocator fragments and spends a fifth of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// lethe: a self-hosted product-analytics event store that forgets on purpose.
#[derive(Parser)]
#[command(name = "lethe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (Amplitude-compatible APIs, management API).
    Serve(Box<serve::ServeArgs>),
    /// Bulk-load NDJSON files (Amplitude export format, plain or gzip) into a project.
    Import(import::ImportArgs),
    /// Run a benchmark against a real server process (built with `--features bench`).
    #[cfg(feature = "bench")]
    Bench(lethe_bench::BenchArgs),
    /// Search every file of a data dir (raw and decoded) for strings that must be gone.
    Scan(scan::ScanArgs),
    /// Check every segment, WAL file and the metadata database of a data dir for damage.
    Verify(verify::VerifyArgs),
    /// The audit trail: `lethe audit verify` checks its hash chain.
    Audit(audit::AuditArgs),
    /// Deletion receipts: `lethe receipt verify FILE` checks one offline.
    Receipt(receipt::ReceiptArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Import(args) => import::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => lethe_bench::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Receipt(args) => receipt::run(args),
    }
}
