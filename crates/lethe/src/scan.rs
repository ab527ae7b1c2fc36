//! `lethe scan`: proves what is (not) stored. Searches every file under a data dir, on an
//! S3 deployment every object under its prefix, and on PostgreSQL every text column, for each
//! needle: the raw bytes (SQLite files and their WAL included), and the decoded values and
//! column names of every Parquet segment (compression hides values from a raw search).

use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow_array::{Array, StringArray};
use clap::Args;
use lethe_meta::{MetaPlace, MetaStore};
use lethe_store::{SegmentPlace, Storage};

use crate::deployment::DeploymentArgs;
use memchr::memmem;

#[derive(Args)]
pub struct ScanArgs {
    /// The data dir to search.
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    // The deployment, as given to `lethe serve`: on S3 every object under the prefix is
    // searched too, on PostgreSQL every text column of every table (read only).
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// A string to look for (repeat for several).
    #[arg(long = "needle", required = true)]
    needles: Vec<String>,
}

/// One place a needle was found.
pub struct Hit {
    pub needle: String,
    /// A file's path, or an object's URL.
    pub object: String,
    pub place: String,
}

pub fn run(args: ScanArgs) -> anyhow::Result<()> {
    let mut hits = scan(&args.data_dir, &args.needles)?;
    if let SegmentPlace::S3 { bucket, prefix } = &args.deployment.segments {
        Storage::s3(bucket, prefix)?
            .for_each_object(|object, bytes| search(object, bytes, &args.needles, &mut hits))?;
    }
    if let MetaPlace::Postgres(_) = &args.deployment.metadata.meta {
        let meta = MetaStore::open_at(&args.deployment.metadata.meta, Path::new(""))?;
        for needle in &args.needles {
            for column in meta.text_columns_holding(needle)? {
                hits.push(Hit {
                    needle: needle.clone(),
                    object: format!("{:?}", args.deployment.metadata.meta),
                    place: format!("column {column}"),
                });
            }
        }
    }
    for needle in &args.needles {
        let found: Vec<&Hit> = hits.iter().filter(|h| &h.needle == needle).collect();
        if found.is_empty() {
            println!("not found {needle:?}");
        }
        for h in found {
            println!("found {:?} in {} ({})", h.needle, h.object, h.place);
        }
    }
    Ok(())
}

/// Every place under `dir` that holds one of `needles`.
fn scan(dir: &Path, needles: &[String]) -> anyhow::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    for file in files(dir)? {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            // Deleted since the listing (a running server removed it): it holds nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        search(
            &file.display().to_string(),
            bytes.into(),
            needles,
            &mut hits,
        )?;
    }
    Ok(hits)
}

/// Searches one file or object: its raw bytes, and if it decodes as Parquet (a segment),
/// its column names and decoded values. A segment that does not decode is an error: what it
/// holds cannot be proven absent.
fn search(
    object: &str,
    bytes: bytes::Bytes,
    needles: &[String],
    hits: &mut Vec<Hit>,
) -> anyhow::Result<()> {
    let mut found = |needle: &String, place: String| {
        let seen = hits
            .iter()
            .any(|h| &h.needle == needle && h.object == object && h.place == place);
        if !seen {
            hits.push(Hit {
                needle: needle.clone(),
                object: object.to_string(),
                place,
            });
        }
    };
    for needle in needles {
        if memmem::find(&bytes, needle.as_bytes()).is_some() {
            found(needle, "raw bytes".into());
        }
    }
    if !bytes.starts_with(b"PAR1") {
        return Ok(());
    }
    let segment = lethe_store::SegmentBytes::whole(bytes);
    let batches = lethe_store::read_batches(&segment, None)
        .with_context(|| format!("{object} is a Parquet segment that does not decode"))?;
    for batch in batches {
        let schema = batch.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            let values = batch.column(i).as_any().downcast_ref::<StringArray>();
            for needle in needles {
                let in_name = field.name().contains(needle.as_str());
                let in_values =
                    values.is_some_and(|a| a.iter().flatten().any(|v| v.contains(needle.as_str())));
                if in_name || in_values {
                    found(needle, format!("decoded column {}", field.name()));
                }
            }
        }
    }
    Ok(())
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
