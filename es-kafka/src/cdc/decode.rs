//! Parsing `test_decoding` output lines into changes and events.
//!
//! The plugin prints one line per change, e.g.
//! `table bank.events: INSERT: global_position[bigint]:42 stream_id[text]:'acc-1' ...`,
//! with text values single-quoted (`''` inside) and `null` for NULL; and
//! `BEGIN` / `COMMIT (at 2026-01-01 10:00:00.1+00)` around each
//! transaction (options `include-xids=0`, `include-timestamp=1`).

use chrono::{DateTime, FixedOffset, Utc};
use es_core::{Metadata, RecordedEvent, StreamId};

/// One decoded line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A transaction starts.
    Begin,
    /// The transaction commits (at this time, when printed).
    Commit(Option<DateTime<Utc>>),
    /// A row was inserted into `table` (`schema.name`).
    Insert {
        /// Qualified table name.
        table: String,
        /// Column name and text value (`None` for NULL), in table order.
        columns: Vec<(String, Option<String>)>,
    },
    /// Anything else (updates, deletes, truncates, messages).
    Other,
}

/// Parses one line of `test_decoding` output.
pub(crate) fn parse_change(line: &str) -> Result<Change, String> {
    if line == "BEGIN" || line.starts_with("BEGIN ") {
        return Ok(Change::Begin);
    }
    if let Some(rest) = line.strip_prefix("COMMIT") {
        let at = match rest.find("(at ") {
            Some(i) => {
                let ts = rest[i + 4..].trim_end_matches(')');
                Some(parse_timestamp(ts)?)
            }
            None => None,
        };
        return Ok(Change::Commit(at));
    }
    let Some(rest) = line.strip_prefix("table ") else {
        return Ok(Change::Other);
    };
    let Some((table, rest)) = rest.split_once(": ") else {
        return Err(format!("no table separator in {line:?}"));
    };
    let Some(body) = rest.strip_prefix("INSERT: ") else {
        return Ok(Change::Other);
    };
    Ok(Change::Insert {
        table: table.to_owned(),
        columns: parse_columns(body)?,
    })
}

/// Parses `name[type]:value name[type]:value ...`.
fn parse_columns(mut s: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let open = s.find('[').ok_or_else(|| format!("column without type near {s:?}"))?;
        let name = s[..open].trim().to_owned();
        let close = s[open..]
            .find("]:")
            .ok_or_else(|| format!("unterminated type near {s:?}"))?
            + open;
        s = &s[close + 2..];
        let value;
        if let Some(quoted) = s.strip_prefix('\'') {
            let mut text = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        text.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    text.push(c);
                }
            }
            let end = end.ok_or_else(|| format!("unterminated string in column {name}"))?;
            value = Some(text);
            s = &quoted[end..];
        } else {
            let end = s.find(' ').unwrap_or(s.len());
            let raw = &s[..end];
            value = if raw == "null" { None } else { Some(raw.to_owned()) };
            s = &s[end..];
        }
        out.push((name, value));
        s = s.trim_start_matches(' ');
    }
    Ok(out)
}

/// Parses a `timestamptz` printed with `DateStyle=ISO` (the relay sets it).
pub(crate) fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    // PostgreSQL prints the offset as +00, +05:30 or +05:30:00.
    let s = s.trim();
    let fixed = match s.rfind(['+', '-']) {
        Some(i) if i > 10 => {
            let (head, off) = s.split_at(i);
            let off = match off.len() {
                3 => format!("{off}:00"),
                _ => off.chars().take(6).collect(),
            };
            format!("{head}{off}")
        }
        _ => return Err(format!("timestamp without offset: {s:?}")),
    };
    DateTime::<FixedOffset>::parse_from_str(&fixed, "%Y-%m-%d %H:%M:%S%.f%:z")
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("timestamp {s:?}: {e}"))
}

/// Builds the event of an inserted `events` row.
pub(crate) fn event_from_columns(columns: &[(String, Option<String>)]) -> Result<RecordedEvent, String> {
    let get = |name: &str| -> Result<&str, String> {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .ok_or_else(|| format!("column {name} missing or null"))
    };
    let num = |name: &str| -> Result<u64, String> { get(name)?.parse().map_err(|e| format!("{name}: {e}")) };
    let metadata: Metadata = serde_json::from_str(get("metadata")?).map_err(|e| format!("metadata: {e}"))?;
    Ok(RecordedEvent {
        global_position: num("global_position")?,
        stream_id: StreamId::from(get("stream_id")?),
        stream_type: get("stream_type")?.to_owned(),
        version: num("version")?,
        event_id: get("event_id")?.parse().map_err(|e| format!("event_id: {e}"))?,
        event_type: get("event_type")?.to_owned(),
        schema_version: get("schema_version")?
            .parse()
            .map_err(|e| format!("schema_version: {e}"))?,
        payload: serde_json::from_str(get("payload")?).map_err(|e| format!("payload: {e}"))?,
        metadata,
        recorded_at: parse_timestamp(get("recorded_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "table bank.events: INSERT: global_position[bigint]:1048577 stream_id[text]:'it''s \"1\"' \
        version[bigint]:1 stream_type[text]:'account' event_id[uuid]:'acce6e6c-5bde-47d3-b90f-945366b9be97' \
        event_type[text]:'Opened' schema_version[integer]:2 payload[jsonb]:'{\"a\": \"x''y\", \"b\": [1, 2]}' \
        metadata[jsonb]:'{}' recorded_at[timestamp with time zone]:'2026-11-27 14:12:18.955049+00'";

    #[test]
    fn parses_an_events_insert() {
        let Change::Insert { table, columns } = parse_change(LINE).unwrap() else {
            panic!("not an insert")
        };
        assert_eq!(table, "bank.events");
        let e = event_from_columns(&columns).unwrap();
        assert_eq!(e.global_position, 1_048_577);
        assert_eq!(e.stream_id.as_str(), "it's \"1\"");
        assert_eq!(e.schema_version, 2);
        assert_eq!(e.payload, serde_json::json!({"a": "x'y", "b": [1, 2]}));
        assert_eq!(e.recorded_at.to_rfc3339(), "2026-11-27T14:12:18.955049+00:00");
    }

    #[test]
    fn parses_nulls_multiline_text_and_transaction_lines() {
        let Change::Insert { columns, .. } =
            parse_change("table s.t: INSERT: a[text]:null b[text]:'multi\nline' c[boolean]:true").unwrap()
        else {
            panic!("not an insert")
        };
        assert_eq!(
            columns,
            vec![
                ("a".into(), None),
                ("b".into(), Some("multi\nline".into())),
                ("c".into(), Some("true".into()))
            ]
        );
        assert_eq!(parse_change("BEGIN").unwrap(), Change::Begin);
        let Change::Commit(Some(at)) = parse_change("COMMIT (at 2026-11-27 14:12:18.955557+05:30)").unwrap() else {
            panic!("no commit time")
        };
        assert_eq!(at.to_rfc3339(), "2026-11-27T08:42:18.955557+00:00");
        assert_eq!(parse_change("table s.t: DELETE: id[bigint]:1").unwrap(), Change::Other);
        assert!(parse_change("table s.t: INSERT: a[text]:'open").is_err());
        // A schema that is a keyword comes quoted.
        let Change::Insert { table, .. } = parse_change("table \"time\".events: INSERT: a[text]:'x'").unwrap() else {
            panic!("not an insert")
        };
        assert_eq!(table, "\"time\".events");
    }
}
