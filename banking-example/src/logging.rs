//! [`PlainFields`]: the fields of spans and log lines as plain
//! `name=value` text, for logs written without colours.
//!
//! The `fmt` subscriber formats a span's fields when the span is created,
//! and the server opens one (`http`: method, path, request id) for every
//! request. Its default field formatter paints every name and `=` through
//! a colour style even when colours are off; at the server's request rate
//! that painting was about 2 % of a deposit's instructions (see
//! docs/benchmarks.md, the HTTP request path). [`PlainFields`] writes the
//! same text without it.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Formats fields exactly as the `fmt` subscriber's default does with
/// colours off (`name=value`, separated by spaces; `%` fields displayed,
/// others debug-printed), without its colour styling. Messages and errors
/// are left to the default formatter, which escapes control characters in
/// them and lists an error's sources.
///
/// Use it only for logs without colours (`with_ansi(false)`); on a
/// terminal keep the default, which styles the names.
///
/// ```
/// use banking_example::logging::PlainFields;
///
/// let subscriber = tracing_subscriber::fmt()
///     .with_ansi(false)
///     .fmt_fields(PlainFields)
///     .with_writer(std::io::sink)
///     .finish();
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("http", method = %"POST", path = %"/accounts");
///     let _entered = span.enter();
///     tracing::info!(status = 200, "request done");
/// });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes one set of fields; see [`PlainFields`].
struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Whether nothing has been written yet (no space before the next).
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Leaves one field to the default formatter.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.by_default(|v| v.record_str(field, value));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // Log records' own metadata, already written by the formatter.
        if name.starts_with("log.") {
            return;
        }
        if name == "message" || name.starts_with("r#") {
            self.by_default(|v| v.record_debug(field, value));
            return;
        }
        let pad = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        let writer = &mut self.writer;
        self.result = writer
            .write_str(pad)
            .and_then(|()| writer.write_str(name))
            .and_then(|()| writer.write_char('='))
            .and_then(|()| write!(writer, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::PlainFields;

    /// Everything written, kept.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    /// The lines the same events make with the default field formatter
    /// and with [`PlainFields`] (no colours, no timestamps).
    fn lines(plain: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(out.clone());
        let emit = || {
            let span = tracing::info_span!(
                "http",
                method = %"POST",
                path = %"/accounts/1/deposit",
                request_id = %"",
                attempt = 2u64
            );
            let _entered = span.enter();
            tracing::info!(
                status = 200,
                ok = true,
                name = "quoted \"text\"",
                "finished \x1b[31m request"
            );
            tracing::warn!(
                error = &Outer(Inner) as &(dyn std::error::Error + 'static),
                r#type = "x",
                "failed"
            );
            tracing::info!(count = -3i64, ratio = 0.5);
            span.record("attempt", 3u64);
            tracing::info!("after record");
        };
        if plain {
            tracing::subscriber::with_default(builder.fmt_fields(PlainFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let bytes = out.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn writes_what_the_default_writes_without_colours() {
        let default = lines(false);
        let plain = lines(true);
        assert!(default.contains("method=POST"), "{default}");
        assert!(default.contains("\\x1b"), "messages are escaped: {default}");
        assert!(default.contains("error.sources"), "{default}");
        assert_eq!(plain, default);
    }
}
