//! The progress bar of a rebuild: indicatif on a terminal, plain lines
//! (at most one a second, and the last) anywhere else — a log file, a CI
//! job, a test — always with events/s and the ETA.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::output::SharedWriter;

/// Plain progress lines come at most this often (and the last one always).
const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// Where progress is drawn.
#[derive(Debug, Clone)]
pub(crate) enum ProgressTarget {
    /// The process's stderr, a terminal: a redrawn bar.
    Terminal,
    /// A writer that is not a terminal: plain lines.
    Lines(SharedWriter),
}

/// A progress bar in events; [`finish`](Self::finish) or
/// [`abandon`](Self::abandon) it so its last state is shown.
pub(crate) struct Bar {
    bar: ProgressBar,
    lines: Option<Arc<Lines>>,
}

impl Bar {
    /// A bar of `len` events labelled `label`.
    pub(crate) fn new(target: &ProgressTarget, label: &str, len: u64) -> Self {
        Self::with_interval(target, label, len, LINE_INTERVAL)
    }

    fn with_interval(target: &ProgressTarget, label: &str, len: u64, interval: Duration) -> Self {
        let (draw, lines, template) = match target {
            ProgressTarget::Terminal => (
                ProgressDrawTarget::stderr(),
                None,
                "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events  {per_sec:0}  ETA {eta}",
            ),
            ProgressTarget::Lines(w) => {
                let lines = Arc::new(Lines {
                    out: w.clone(),
                    interval,
                    state: Mutex::new(LinesState {
                        pending: String::new(),
                        held: None,
                        last: Instant::now(),
                    }),
                });
                (
                    ProgressDrawTarget::term_like(Box::new(PlainLines(Arc::clone(&lines)))),
                    Some(lines),
                    "{prefix}: {human_pos}/{human_len} events ({percent}%), {per_sec:0}, ETA {eta}",
                )
            }
        };
        let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(len), draw).with_style(style);
        bar.set_prefix(label.to_owned());
        Self { bar, lines }
    }

    /// The bar, to move from a progress callback.
    pub(crate) fn handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Done: the bar at its end.
    pub(crate) fn finish(self) {
        self.bar.finish();
        self.show_held();
    }

    /// Failed: the bar where it stopped.
    pub(crate) fn abandon(self) {
        self.bar.abandon();
        self.show_held();
    }

    fn show_held(&self) {
        if let Some(lines) = &self.lines {
            let held = lines.state().held.take();
            if let Some(line) = held {
                let _ = lines.out.line(&line);
            }
        }
    }
}

/// Redraws as plain lines, at most one per `interval`; the latest redraw
/// in between is held until the next is due or the bar ends.
#[derive(Debug)]
struct Lines {
    out: SharedWriter,
    interval: Duration,
    state: Mutex<LinesState>,
}

#[derive(Debug)]
struct LinesState {
    /// What the redraw in progress wrote so far.
    pending: String,
    /// The latest redraw not shown yet.
    held: Option<String>,
    /// When a line was last shown (or the bar was made).
    last: Instant,
}

impl Lines {
    fn state(&self) -> MutexGuard<'_, LinesState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end of a redraw: show it, or hold it until one is due.
    fn redrawn(&self) -> std::io::Result<()> {
        let mut state = self.state();
        let raw = std::mem::take(&mut state.pending);
        let line = raw.replace('\r', "");
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now.duration_since(state.last) >= self.interval {
            state.last = now;
            state.held = None;
            drop(state);
            self.out.line(line)
        } else {
            state.held = Some(line.to_owned());
            Ok(())
        }
    }
}

/// An indicatif [`TermLike`] that turns each redraw into one line: what a
/// redraw writes is collected and becomes a line on its flush.
#[derive(Debug)]
struct PlainLines(Arc<Lines>);

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps or cuts a line.
        200
    }

    fn height(&self) -> u16 {
        50
    }

    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.state().pending.push_str(s);
        self.0.redrawn()
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.state().pending.push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0.redrawn()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Bar, ProgressTarget};
    use crate::output::SharedWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(interval: Duration) -> Vec<String> {
        let buf = Buf::default();
        let target = ProgressTarget::Lines(SharedWriter::new(buf.clone()));
        let bar = Bar::with_interval(&target, "rebuild totals", 4000, interval);
        let handle = bar.handle();
        for done in [1000, 2000, 3000, 4000] {
            handle.set_position(done);
        }
        bar.finish();
        buf.lines()
    }

    #[test]
    fn off_a_terminal_redraws_are_plain_lines_with_rate_and_eta() {
        let lines = run(Duration::ZERO);
        assert!(lines.len() >= 4, "every redraw is due: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("rebuild totals: 2,000/4,000 events (50%), ")),
            "{lines:?}"
        );
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("rebuild totals: 4,000/4,000 events (100%), "),
            "{last:?}"
        );
        assert!(last.contains("/s, ETA "), "{last:?}");
        assert!(!last.contains('.'), "whole events per second: {last:?}");
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\r') && !l.contains('\u{1b}') && l.trim() == l),
            "plain lines: {lines:?}"
        );
    }

    #[test]
    fn lines_come_at_most_once_per_interval_and_the_last_state_always() {
        let lines = run(Duration::from_secs(3600));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("rebuild totals: 4,000/4,000 events (100%), "),
            "{lines:?}"
        );
    }
}
