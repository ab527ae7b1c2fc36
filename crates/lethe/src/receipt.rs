//! `lethe receipt verify FILE`: checks a deletion task's signed receipt offline, with no
//! access to the deployment: its signature, by the deployment's public key (`--public-key`,
//! from `GET /api/v1/keys`) or, without it, by the key the receipt names.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ReceiptArgs {
    #[command(subcommand)]
    command: ReceiptCommand,
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Check that a receipt was signed by the deployment and not changed since.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The receipt, as `GET /api/v1/deletion-tasks/{id}/receipt` answered it.
    file: PathBuf,
    /// The deployment's public key (hex), as `GET /api/v1/keys` shows it.
    #[arg(long)]
    public_key: Option<String>,
}

pub fn run(args: ReceiptArgs) -> anyhow::Result<()> {
    let ReceiptCommand::Verify(args) = args.command;
    let text = std::fs::read_to_string(&args.file)?;
    let document: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", args.file.display()))?;
    match lethe_delete::receipt::verify(&document, args.public_key.as_deref()) {
        Ok(key) => {
            let receipt = &document["receipt"];
            println!(
                "valid: the receipt of deletion task {} ({:?}), completed at {} ms, signed by {key}",
                receipt["task_id"], receipt["name"].as_str().unwrap_or_default(), receipt["completed_at"]
            );
            if args.public_key.is_none() {
                println!(
                    "note: checked against the key the receipt names; compare it with the \
                     deployment's (GET /api/v1/keys), or pass --public-key"
                );
            }
            Ok(())
        }
        Err(e) => {
            println!("invalid: {e}");
            std::process::exit(1);
        }
    }
}
