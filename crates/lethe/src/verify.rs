//! `lethe verify`: checks every segment (size, checksum, full decode; on a bucket too), the
//! WAL and the metadata database of a data dir; exits non-zero when anything is damaged.

use std::path::PathBuf;

use clap::Args;
use lethe_store::DataDir;

use crate::deployment::DeploymentArgs;

#[derive(Args)]
pub struct VerifyArgs {
    /// The data dir to verify (read only; a server may be running on it).
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    deployment: DeploymentArgs,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    let meta = args.deployment.metadata.open_existing(&dir)?;
    let report = lethe_store::verify(&dir, &meta, &args.deployment.segments)?;
    for note in &report.notes {
        println!("note: {note}");
    }
    for problem in &report.problems {
        println!("damaged: {problem}");
    }
    println!(
        "verified {} segments ({} bytes), {} WAL files and the metadata database: {} problems",
        report.segments,
        report.segment_bytes,
        report.wal_files,
        report.problems.len()
    );
    if !report.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
