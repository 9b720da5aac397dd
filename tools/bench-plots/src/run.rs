//! A recorded benchmark run: the JSON lines `scripts/plots.sh` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Why a run could not be read or plotted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// The run file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a record this program knows.
    #[error("{path}:{line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// serde's message.
        source: serde_json::Error,
    },
    /// The run lacks what a plot needs.
    #[error("the run has no {0}")]
    Missing(&'static str),
    /// Drawing or writing an SVG failed.
    #[error("cannot draw {file}: {reason}")]
    Draw {
        /// The SVG file.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Where and how the run was recorded.
#[derive(Debug, Deserialize)]
struct Meta {
    recorded_at: String,
    machine: String,
}

/// The pgbench 1-row INSERT ceiling at one client count.
#[derive(Debug, Deserialize)]
struct Ceiling {
    concurrency: u32,
    tps: f64,
}

/// The fields of a `bank_bench` line the plots use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BankBench {
    pub(crate) concurrency: u32,
    pub(crate) ops_per_sec: f64,
    pub(crate) p99_us: u64,
    #[serde(default)]
    pub(crate) latency_cdf_us: Vec<(f64, u64)>,
    #[serde(default)]
    pub(crate) projection_lag_p50_us: u64,
    #[serde(default)]
    pub(crate) projection_lag_p99_us: u64,
    #[serde(default)]
    pub(crate) projected: u64,
}

/// The fields of a `read_model_bench` line the plots use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Rebuild {
    pub(crate) events: u64,
    pub(crate) rebuild_page: u64,
    pub(crate) rebuild_events_per_sec: f64,
}

/// Everything the plots need, grouped.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// When and where, for the captions.
    pub(crate) caption: String,
    /// Ceiling tps per client count (mean of the rounds).
    pub(crate) ceilings: BTreeMap<u32, f64>,
    /// bank_bench lines per concurrency, in run order.
    pub(crate) bank: BTreeMap<u32, Vec<BankBench>>,
    /// Rebuilds, in run order.
    pub(crate) rebuilds: Vec<Rebuild>,
}

impl Run {
    /// Reads a run file.
    pub(crate) fn load(path: &Path) -> Result<Self, PlotError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlotError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a run file (`path` names it in errors).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, PlotError> {
        let mut run = Self::default();
        let mut ceilings: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // Read as a `Value` first, then by its `kind`: serde's tagged
            // enums buffer numbers in a way serde_json's
            // `arbitrary_precision` (on in this workspace) cannot read back.
            let parse_error = |source| PlotError::Parse {
                path: path.to_owned(),
                line: i + 1,
                source,
            };
            let value: Value = serde_json::from_str(line).map_err(parse_error)?;
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
            match kind.as_str() {
                "meta" => {
                    let m: Meta = serde_json::from_value(value).map_err(parse_error)?;
                    run.caption = format!("{}, {}", m.machine, m.recorded_at);
                }
                "ceiling" => {
                    let c: Ceiling = serde_json::from_value(value).map_err(parse_error)?;
                    ceilings.entry(c.concurrency).or_default().push(c.tps);
                }
                "bank_bench" => {
                    let b: BankBench = serde_json::from_value(value).map_err(parse_error)?;
                    run.bank.entry(b.concurrency).or_default().push(b);
                }
                "rebuild" => run.rebuilds.push(serde_json::from_value(value).map_err(parse_error)?),
                other => {
                    return Err(parse_error(serde::de::Error::custom(format!(
                        "unknown record kind {other:?} (meta, ceiling, bank_bench or rebuild)"
                    ))))
                }
            }
        }
        run.ceilings = ceilings
            .into_iter()
            .map(|(c, tps)| (c, tps.iter().sum::<f64>() / tps.len() as f64))
            .collect();
        Ok(run)
    }

    /// Mean ops/s of the bank workload at `concurrency`.
    pub(crate) fn bank_ops(&self, concurrency: u32) -> Option<f64> {
        let lines = self.bank.get(&concurrency)?;
        (!lines.is_empty()).then(|| lines.iter().map(|b| b.ops_per_sec).sum::<f64>() / lines.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{PlotError, Run};

    #[test]
    fn a_run_groups_its_records_and_averages_rounds() {
        let text = r#"{"kind":"meta","recorded_at":"2026-11-28","machine":"2 cores"}
{"kind":"ceiling","concurrency":16,"tps":100.0}
{"kind":"ceiling","concurrency":16,"tps":300.0}
{"kind":"bank_bench","concurrency":16,"ops_per_sec":400.0,"p99_us":900,"extra":"ignored"}
{"kind":"bank_bench","concurrency":16,"ops_per_sec":600.0,"p99_us":800}
{"kind":"rebuild","events":1000,"rebuild_page":500,"rebuild_events_per_sec":9000.0}
"#;
        let run = Run::parse(Path::new("run.jsonl"), text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.ceilings.get(&16), Some(&200.0));
        assert_eq!(run.bank_ops(16), Some(500.0));
        assert_eq!(run.bank_ops(64), None);
        assert_eq!(run.rebuilds.len(), 1);
        assert_eq!(run.caption, "2 cores, 2026-11-28");
    }

    #[test]
    fn a_broken_line_is_reported_with_its_number() {
        let err = Run::parse(
            Path::new("run.jsonl"),
            "{\"kind\":\"meta\",\"recorded_at\":\"x\",\"machine\":\"y\"}\n{\"kind\":\"nope\"}\n",
        )
        .err();
        assert!(matches!(err, Some(PlotError::Parse { line: 2, .. })), "{err:?}");
    }
}
