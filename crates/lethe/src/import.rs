//! `lethe import`: sends NDJSON files to a server's import endpoint in parts, with a
//! progress bar, and sums up the server's answers.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lethe_server::IMPORT_PART_BYTES;
use serde_json::Value;

#[derive(Args)]
pub struct ImportArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of an administrator (from POST /api/v1/auth/login).
    #[arg(long, env = "LETHE_TOKEN", hide_env_values = true)]
    token: String,
    /// Project id to import into.
    #[arg(long)]
    project: i64,
    /// Bytes of NDJSON per request.
    #[arg(long, default_value_t = IMPORT_PART_BYTES)]
    part_bytes: usize,
    /// NDJSON files (`.gz` is decompressed).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Default)]
struct Totals {
    lines: u64,
    ingested: u64,
    duplicates: u64,
    rejected: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let url = format!(
        "{}/api/v1/projects/{}/import",
        args.url.trim_end_matches('/'),
        args.project
    );
    let total_bytes: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total_bytes).with_style(ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )?);
    let mut totals = Totals::default();
    for path in &args.files {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let counted = bar.wrap_read(file);
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(counted))
        } else {
            Box::new(counted)
        };
        let mut lines = BufReader::with_capacity(1 << 20, reader);
        let mut part = Vec::with_capacity(args.part_bytes + (1 << 20));
        let mut first_line = 1u64;
        let mut line_no = 0u64;
        loop {
            let read = lines.read_until(b'\n', &mut part)?;
            if read > 0 {
                line_no += 1;
            }
            if (read == 0 && !part.is_empty()) || part.len() >= args.part_bytes {
                let answer = send(&client, &url, &args.token, std::mem::take(&mut part))?;
                report(&answer, path, first_line, &mut totals, &bar);
                first_line = line_no + 1;
            }
            if read == 0 {
                break;
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "imported {} lines: {} stored, {} duplicates, {} rejected",
        totals.lines, totals.ingested, totals.duplicates, totals.rejected
    );
    Ok(())
}

fn send(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> anyhow::Result<Value> {
    let response = client.post(url).bearer_auth(token).body(body).send()?;
    let status = response.status();
    let answer: Value = response.json().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("the server refused the import ({status}): {answer}");
    }
    Ok(answer)
}

fn report(
    answer: &Value,
    path: &std::path::Path,
    first_line: u64,
    totals: &mut Totals,
    bar: &ProgressBar,
) {
    let n = |k: &str| answer[k].as_u64().unwrap_or(0);
    totals.lines += n("lines");
    totals.ingested += n("ingested");
    totals.duplicates += n("duplicates");
    totals.rejected += n("rejected");
    for e in answer["errors"].as_array().into_iter().flatten() {
        let line = e["line"].as_u64().unwrap_or(0) + first_line - 1;
        bar.println(format!("{}:{line}: rejected: {e}", path.display()));
    }
    bar.set_message(format!("{} stored", totals.ingested));
}
