//! `lethe audit verify`: recomputes the audit trail's hash chain and names the first entry
//! where it breaks (a changed, removed or inserted entry); exits 1 if it does. Prints the
//! head hash, which an auditor records to detect a later removal of the newest entries.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use lethe_store::DataDir;

use crate::deployment::MetaArgs;

#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check that no audit entry was changed, removed or inserted outside lethe.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The deployment's data dir (read only; a server may be running on it).
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    metadata: MetaArgs,
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let AuditCommand::Verify(args) = args.command;
    let meta = args.metadata.open_existing(&DataDir::new(&args.data_dir))?;
    let check = meta.verify_audit()?;
    for problem in &check.problems {
        println!("broken: {problem}");
    }
    if check.before_chain > 0 {
        println!(
            "note: the {} oldest entries predate the hash chain and are not covered",
            check.before_chain
        );
    }
    println!(
        "verified {} audit entries: {} problems; head {}",
        check.entries,
        check.problems.len(),
        check.head.as_deref().unwrap_or("(none)")
    );
    if !check.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
