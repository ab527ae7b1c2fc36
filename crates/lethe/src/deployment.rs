//! Where a deployment keeps its state beyond the data dir: the flags `serve`, `scan`,
//! `verify` and `audit` share, so that each tool is pointed at a deployment the way the
//! server was.

use clap::Args;
use lethe_meta::{MetaPlace, MetaStore};
use lethe_store::{DataDir, SegmentPlace};

#[derive(Args)]
pub struct DeploymentArgs {
    /// Where segments go: `local` (under the data dir) or `s3://bucket/prefix` on
    /// S3-compatible storage (endpoint, region and credentials from the usual `AWS_*`
    /// variables). The prefix must hold nothing but lethe's segments, and the bucket must
    /// not keep versions (the server checks; `scan` and `verify` only read).
    #[arg(long, env = "LETHE_SEGMENTS", default_value = "local")]
    pub segments: SegmentPlace,
    #[command(flatten)]
    pub metadata: MetaArgs,
}

#[derive(Args)]
pub struct MetaArgs {
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

impl MetaArgs {
    /// Opens the metadata of an existing deployment whose data dir is `dir` (a tool never
    /// creates one: a mistyped path is an error, not a new empty database).
    pub fn open_existing(&self, dir: &DataDir) -> anyhow::Result<MetaStore> {
        if self.meta == MetaPlace::DataDir && !dir.meta_db().exists() {
            anyhow::bail!("{} holds no lethe data dir", dir.root().display());
        }
        Ok(MetaStore::open_at(&self.meta, &dir.meta_db())?)
    }
}
