//! Where a deployment keeps its state beyond the data dir: the flags `serve`, `scan` and
//! `verify` share, so that each tool is pointed at a deployment the way the server was.

use clap::Args;
use lethe_meta::MetaPlace;
use lethe_store::SegmentPlace;

#[derive(Args)]
pub struct DeploymentArgs {
    /// Where segments go: `local` (under the data dir) or `s3://bucket/prefix` on
    /// S3-compatible storage (endpoint, region and credentials from the usual `AWS_*`
    /// variables). The prefix must hold nothing but lethe's segments, and the bucket must
    /// not keep versions (the server checks; `scan` and `verify` only read).
    #[arg(long, env = "LETHE_SEGMENTS", default_value = "local")]
    pub segments: SegmentPlace,
    /// Where the metadata and the deletion queue go: `local` (SQLite in the data dir) or a
    /// PostgreSQL database, `postgres://user:password@host:port/database` (created by the
    /// operator; lethe creates its tables). One server per database, or several started
    /// with `--cluster`.
    #[arg(
        long,
        env = "LETHE_META",
        default_value = "local",
        hide_env_values = true
    )]
    pub meta: MetaPlace,
}
