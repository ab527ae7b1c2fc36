//! `lethe scan`: proves what is (not) on disk. Searches every file under a data dir for each
//! needle: the raw bytes of every file (SQLite files and their WAL included), and the decoded
//! values and column names of every Parquet segment (compression hides values from a raw
//! search).

use std::path::{Path, PathBuf};

use arrow_array::{Array, StringArray};
use clap::Args;
use memchr::memmem;

#[derive(Args)]
pub struct ScanArgs {
    /// The data dir to search.
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    /// A string to look for (repeat for several).
    #[arg(long = "needle", required = true)]
    needles: Vec<String>,
}

/// One place a needle was found.
pub struct Hit {
    pub needle: String,
    pub file: PathBuf,
    pub place: String,
}

pub fn run(args: ScanArgs) -> anyhow::Result<()> {
    let hits = scan(&args.data_dir, &args.needles)?;
    for needle in &args.needles {
        let found: Vec<&Hit> = hits.iter().filter(|h| &h.needle == needle).collect();
        if found.is_empty() {
            println!("not found {needle:?}");
        }
        for h in found {
            println!("found {:?} in {} ({})", h.needle, h.file.display(), h.place);
        }
    }
    Ok(())
}

/// Every place under `dir` that holds one of `needles`.
pub fn scan(dir: &Path, needles: &[String]) -> anyhow::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    for file in files(dir)? {
        let bytes = std::fs::read(&file)?;
        for needle in needles {
            if memmem::find(&bytes, needle.as_bytes()).is_some() {
                hits.push(Hit {
                    needle: needle.clone(),
                    file: file.clone(),
                    place: "raw bytes".into(),
                });
            }
        }
        if file.extension().is_some_and(|e| e == "parquet") {
            decoded_hits(&file, bytes, needles, &mut hits)?;
        }
    }
    Ok(hits)
}

fn decoded_hits(
    file: &Path,
    bytes: Vec<u8>,
    needles: &[String],
    hits: &mut Vec<Hit>,
) -> anyhow::Result<()> {
    let segment = lethe_store::SegmentBytes::whole(bytes.into());
    for batch in lethe_store::read_batches(&segment, None)? {
        let schema = batch.schema();
        for (i, field) in schema.fields().iter().enumerate() {
            let values = batch.column(i).as_any().downcast_ref::<StringArray>();
            for needle in needles {
                let in_name = field.name().contains(needle.as_str());
                let in_values =
                    values.is_some_and(|a| a.iter().flatten().any(|v| v.contains(needle.as_str())));
                let seen = hits.iter().any(|h| {
                    &h.needle == needle
                        && h.file == file
                        && h.place.ends_with(field.name().as_str())
                });
                if (in_name || in_values) && !seen {
                    hits.push(Hit {
                        needle: needle.clone(),
                        file: file.to_path_buf(),
                        place: format!("decoded column {}", field.name()),
                    });
                }
            }
        }
    }
    Ok(())
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
