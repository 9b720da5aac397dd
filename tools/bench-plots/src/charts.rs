//! The four plots of the benchmarks chapter, drawn with plotters as SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::run::{PlotError, Run};

const SIZE: (u32, u32) = (760, 440);
const FONT: &str = "sans-serif";

/// Draws every plot into `out`; returns the files written.
pub(crate) fn render_all(run: &Run, out: &Path) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(out).map_err(|e| draw_error(out, &e))?;
    let files = vec![
        throughput(run, &out.join("throughput.svg"))?,
        latency_cdf(run, 16, &out.join("latency_cdf_c16.svg"))?,
        projection_lag(run, &out.join("projection_lag.svg"))?,
        rebuild(run, &out.join("rebuild.svg"))?,
    ];
    Ok(files)
}

fn draw_error(file: &Path, e: &dyn std::fmt::Display) -> PlotError {
    PlotError::Draw {
        file: file.to_owned(),
        reason: e.to_string(),
    }
}

/// Runs `draw` on a fresh SVG drawing area and writes the file.
fn svg(
    file: &Path,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<PathBuf, PlotError> {
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(file, &e))?;
    draw(&root).map_err(|e| draw_error(file, &e))?;
    root.present().map_err(|e| draw_error(file, &e))?;
    Ok(file.to_owned())
}

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// A chart of this tool: `f64` on both axes (linear or log), drawn as SVG.
type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// Draws one series: a line through `points` with a dot on each, named in
/// the legend when `label` is given.
fn series<X, Y>(
    chart: &mut Chart<'_, X, Y>,
    points: &[(f64, f64)],
    color: RGBColor,
    dot: i32,
    label: Option<&str>,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let line = chart
        .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    if let Some(label) = label {
        line.label(label).legend(legend_line(color));
    }
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, dot, color.filled())))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the legend of the labelled series, top left.
fn legend<X, Y>(chart: &mut Chart<'_, X, Y>) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Ops/s of the bank workload and the pgbench 1-row ceiling against
/// concurrency (log scale).
fn throughput(run: &Run, file: &Path) -> Result<PathBuf, PlotError> {
    let bank: Vec<(f64, f64)> = run
        .bank
        .keys()
        .filter_map(|c| run.bank_ops(*c).map(|ops| (f64::from(*c), ops)))
        .collect();
    let ceiling: Vec<(f64, f64)> = run.ceilings.iter().map(|(c, tps)| (f64::from(*c), *tps)).collect();
    if bank.is_empty() || ceiling.is_empty() {
        return Err(PlotError::Missing("bank_bench and ceiling records"));
    }
    let max_c = bank.iter().chain(&ceiling).map(|p| p.0).fold(1.0, f64::max);
    let max_y = bank.iter().chain(&ceiling).map(|p| p.1).fold(0.0, f64::max) * 1.15;
    svg(file, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Bank workload on PostgreSQL vs the pgbench ceiling ({})", run.caption),
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0..max_c * 1.2).log_scale(), 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("concurrent workers (log scale)")
            .y_desc("operations / s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        series(
            &mut chart,
            &bank,
            BLUE,
            4,
            Some("es-postgres: bank workload (commands/s)"),
        )?;
        series(
            &mut chart,
            &ceiling,
            RED,
            4,
            Some("pgbench: 1-row INSERT transactions/s"),
        )?;
        legend(&mut chart)
    })
}

/// The latency distribution of one concurrency: percentile against
/// milliseconds.
fn latency_cdf(run: &Run, concurrency: u32, file: &Path) -> Result<PathBuf, PlotError> {
    let line = run
        .bank
        .get(&concurrency)
        .and_then(|lines| lines.iter().find(|b| !b.latency_cdf_us.is_empty()))
        .ok_or(PlotError::Missing(
            "bank_bench record with latency_cdf_us at the plotted concurrency",
        ))?;
    let points: Vec<(f64, f64)> = line
        .latency_cdf_us
        .iter()
        .map(|(p, us)| (*us as f64 / 1000.0, *p))
        .collect();
    let max_ms = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    svg(file, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Command latency at {concurrency} workers: p99 {:.1} ms ({})",
                    line.p99_us as f64 / 1000.0,
                    run.caption
                ),
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_ms.max(0.1), 0.0..100.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("percentile")
            .draw()
            .map_err(|e| e.to_string())?;
        series(&mut chart, &points, BLUE, 3, None)
    })
}

/// Projection lag (event recorded -> projected) against concurrency.
fn projection_lag(run: &Run, file: &Path) -> Result<PathBuf, PlotError> {
    let followed: Vec<(f64, f64, f64)> = run
        .bank
        .iter()
        .filter_map(|(c, lines)| {
            let line = lines.iter().find(|b| b.projected > 0)?;
            Some((
                f64::from(*c),
                line.projection_lag_p50_us as f64 / 1000.0,
                line.projection_lag_p99_us as f64 / 1000.0,
            ))
        })
        .collect();
    if followed.is_empty() {
        return Err(PlotError::Missing("bank_bench record with a followed projection"));
    }
    let max_c = followed.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_ms = followed.iter().map(|p| p.2).fold(0.0, f64::max) * 1.15;
    svg(file, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Projection lag under load ({})", run.caption), (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1.0..max_c * 1.2).log_scale(), 0.0..max_ms.max(0.1))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("concurrent workers appending (log scale)")
            .y_desc("lag: recorded -> projected (ms)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        let p50: Vec<(f64, f64)> = followed.iter().map(|p| (p.0, p.1)).collect();
        let p99: Vec<(f64, f64)> = followed.iter().map(|p| (p.0, p.2)).collect();
        series(&mut chart, &p50, BLUE, 4, Some("p50"))?;
        series(&mut chart, &p99, RED, 4, Some("p99"))?;
        legend(&mut chart)
    })
}

/// Rebuild throughput of the account read model against the page size.
fn rebuild(run: &Run, file: &Path) -> Result<PathBuf, PlotError> {
    let mut points: Vec<(f64, f64)> = run
        .rebuilds
        .iter()
        .map(|r| (r.rebuild_page as f64, r.rebuild_events_per_sec))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let events = run
        .rebuilds
        .first()
        .map(|r| r.events)
        .ok_or(PlotError::Missing("rebuild records"))?;
    let max_page = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let min_page = points.iter().map(|p| p.0).fold(f64::MAX, f64::min);
    let max_y = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    svg(file, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Rebuilding the account read model from {events} events ({})",
                    run.caption
                ),
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((min_page / 1.5..max_page * 1.5).log_scale(), 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("events per page, one transaction each (log scale)")
            .y_desc("events / s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        series(&mut chart, &points, GREEN, 4, None)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::render_all;
    use crate::run::Run;

    /// The committed run renders: every plot is drawn from it.
    #[test]
    fn the_committed_run_renders_every_plot() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plots/run.jsonl");
        let run = Run::load(&root).unwrap_or_else(|e| panic!("{e}"));
        let out = std::env::temp_dir().join(format!("es-bench-plots-{}", std::process::id()));
        let files = render_all(&run, &out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files.len(), 4);
        for file in &files {
            let svg = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                svg.contains("<svg") && svg.contains("<text"),
                "{} is not a labelled SVG",
                file.display()
            );
        }
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn a_run_without_benchmarks_says_what_is_missing() {
        let run = Run::default();
        let out = std::env::temp_dir().join(format!("es-bench-plots-empty-{}", std::process::id()));
        let err = render_all(&run, &out).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("has no"), "{err}");
        let _ = std::fs::remove_dir_all(out);
    }
}
