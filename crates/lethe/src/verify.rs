//! `lethe verify`: checks every segment (size, checksum, full decode; on a bucket too), the
//! WAL and the metadata database of a data dir; exits non-zero when anything is damaged.

use std::path::PathBuf;

use clap::Args;
use lethe_meta::{MetaPlace, MetaStore};
use lethe_store::{DataDir, SegmentPlace};

#[derive(Args)]
pub struct VerifyArgs {
    /// The data dir to verify (read only; a server may be running on it).
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    /// Where the deployment keeps its segments, as given to `lethe serve` (`local` or
    /// `s3://bucket/prefix` with the deployment's `AWS_*` variables).
    #[arg(long, env = "LETHE_SEGMENTS", default_value = "local")]
    segments: SegmentPlace,
    /// Where the deployment keeps its metadata, as given to `lethe serve` (`local` or
    /// `postgres://…`).
    #[arg(
        long,
        env = "LETHE_META",
        default_value = "local",
        hide_env_values = true
    )]
    meta: MetaPlace,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    if args.meta == MetaPlace::DataDir && !dir.meta_db().exists() {
        anyhow::bail!("{} holds no lethe data dir", args.data_dir.display());
    }
    let meta = MetaStore::open_at(&args.meta, &dir.meta_db())?;
    let report = lethe_store::verify(&dir, &meta, &args.segments)?;
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
