//! Where commands write: text for people, or JSON for scripts, on stdout;
//! progress and errors on stderr.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use es_core::RecordedEvent;
use serde::Serialize;

use crate::AdminError;

/// A writer shared by the progress bar and the error report.
#[derive(Clone)]
pub(crate) struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl SharedWriter {
    pub(crate) fn new(w: impl Write + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Box::new(w))))
    }

    /// Writes `line` and a newline, and flushes.
    pub(crate) fn line(&self, line: &str) -> std::io::Result<()> {
        let mut w = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(w, "{line}")?;
        w.flush()
    }
}

impl std::fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWriter")
    }
}

/// stdout of a command.
pub(crate) struct Output {
    out: Box<dyn Write + Send>,
    json: bool,
}

impl Output {
    pub(crate) fn new(out: impl Write + Send + 'static, json: bool) -> Self {
        Self {
            out: Box::new(out),
            json,
        }
    }

    /// Whether the output is JSON.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// The command's JSON document (pretty-printed).
    pub(crate) fn document<T: Serialize + ?Sized>(&mut self, doc: &T) -> Result<(), AdminError> {
        serde_json::to_writer_pretty(&mut self.out, doc).map_err(std::io::Error::from)?;
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }

    /// One JSON document on one line (a stream of documents).
    pub(crate) fn json_line<T: Serialize + ?Sized>(&mut self, doc: &T) -> Result<(), AdminError> {
        serde_json::to_writer(&mut self.out, doc).map_err(std::io::Error::from)?;
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }

    /// A line of text.
    pub(crate) fn line(&mut self, line: impl Display) -> Result<(), AdminError> {
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    /// Flushes what was written.
    pub(crate) fn flush(&mut self) -> Result<(), AdminError> {
        self.out.flush()?;
        Ok(())
    }

    /// An event as one line of text: position, time, stream, version,
    /// type, payload.
    pub(crate) fn event(&mut self, e: &RecordedEvent) -> Result<(), AdminError> {
        self.line(format_args!(
            "{:>20}  {}  {}/{} v{}  {}  {}",
            e.global_position,
            timestamp(&e.recorded_at),
            e.stream_type,
            e.stream_id,
            e.version,
            e.event_type,
            e.payload
        ))
    }
}

/// RFC 3339 in UTC, to the millisecond.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A duration in seconds, short: `0s`, `4.2s`, `3m 05s`, `2h 07m`, `3d 04h`.
pub(crate) fn human_seconds(seconds: f64) -> String {
    if seconds < 0.05 {
        return "0s".into();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds as u64;
    match s {
        0..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Bytes, short: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub(crate) fn human_bytes(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    match bytes {
        i64::MIN..=1023 => format!("{} B", bytes.max(0)),
        1024..=1_048_575 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, human_seconds};

    #[test]
    fn durations_and_sizes_read_at_a_glance() {
        assert_eq!(human_seconds(0.0), "0s");
        assert_eq!(human_seconds(4.24), "4.2s");
        assert_eq!(human_seconds(185.0), "3m 05s");
        assert_eq!(human_seconds(2.0 * 3600.0 + 7.0 * 60.0), "2h 07m");
        assert_eq!(human_seconds(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(human_bytes(-5), "0 B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1_048_576 + 200_000), "3.2 MiB");
        assert_eq!(human_bytes(1_181_116_006), "1.1 GiB");
    }
}
