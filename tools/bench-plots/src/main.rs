//! Renders the benchmark plots of the book (SVG) from a recorded run.
//!
//! `scripts/plots.sh` runs the benchmarks, records their JSON lines in
//! `docs/plots/run.jsonl` and then runs this program:
//!
//! ```text
//! cargo run -p es-bench-plots -- --run docs/plots/run.jsonl --out docs/plots
//! ```
//!
//! It writes `throughput.svg` (ops/s against concurrency, beside the
//! pgbench ceiling), `latency_cdf_c16.svg`, `projection_lag.svg` and
//! `rebuild.svg`.

mod charts;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line arguments.
#[derive(Parser)]
struct Args {
    /// The recorded run: one JSON object per line.
    #[arg(long, default_value = "docs/plots/run.jsonl")]
    run: PathBuf,
    /// Where the SVG files go.
    #[arg(long, default_value = "docs/plots")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = run::Run::load(&args.run).and_then(|run| charts::render_all(&run, &args.out));
    match result {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
