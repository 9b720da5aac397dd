//! The progress bar of a rebuild: indicatif on a terminal, plain lines
//! (at most one a second, and the last) anywhere else — a log file, a CI
//! job, a test — always with events/s and the ETA.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::sync::Mutex;

use crate::output::SharedWriter;

/// Where progress is drawn.
#[derive(Debug, Clone)]
pub(crate) enum ProgressTarget {
    /// The process's stderr, a terminal: a redrawn bar.
    Terminal,
    /// A writer that is not a terminal: one plain line per redraw.
    Lines(SharedWriter),
}

/// A bar of `len` events labelled `label`.
pub(crate) fn bar(target: &ProgressTarget, label: &str, len: u64) -> ProgressBar {
    let (draw, template) = match target {
        ProgressTarget::Terminal => (
            ProgressDrawTarget::stderr(),
            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
        ),
        ProgressTarget::Lines(w) => (
            ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines::new(w.clone())), 1),
            "{prefix}: {human_pos}/{human_len} events ({percent}%), {per_sec}, ETA {eta}",
        ),
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(Some(len), draw).with_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// An indicatif [`TermLike`] that turns each redraw into one line: what a
/// redraw writes is collected and written out, trimmed, on its flush.
#[derive(Debug)]
struct PlainLines {
    out: SharedWriter,
    pending: Mutex<String>,
}

impl PlainLines {
    fn new(out: SharedWriter) -> Self {
        Self {
            out,
            pending: Mutex::new(String::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, String> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

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
        let mut pending = self.pending();
        pending.push_str(s);
        let line = std::mem::take(&mut *pending);
        drop(pending);
        self.emit(&line)
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.pending().push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let line = std::mem::take(&mut *self.pending());
        self.emit(&line)
    }
}

impl PlainLines {
    fn emit(&self, raw: &str) -> std::io::Result<()> {
        let line = raw.replace('\r', "");
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        self.out.line(line)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{bar, ProgressTarget};
    use crate::output::SharedWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn off_a_terminal_each_redraw_is_one_plain_line_with_rate_and_eta() {
        let buf = Buf::default();
        let pb = bar(
            &ProgressTarget::Lines(SharedWriter::new(buf.clone())),
            "rebuild totals",
            40,
        );
        pb.set_position(10);
        pb.set_position(40);
        pb.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty(), "{text:?}");
        let last = lines[lines.len() - 1];
        assert!(last.starts_with("rebuild totals: 40/40 events (100%), "), "{last:?}");
        assert!(last.contains("/s, ETA "), "{last:?}");
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\r') && !l.contains('\u{1b}') && l.trim() == *l),
            "plain lines: {text:?}"
        );
    }
}
