//! Reading counters from the Prometheus text of `GET /metrics`.
//!
//! The recorder is process-wide: tests comparing values read a counter
//! before and after their action, and run alone in their binary
//! (`tests/metrics.rs`) so that no other test moves the same counter.

/// The value of the sample `name` whose labels are exactly `labels`
/// (0 when there is none yet).
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, l, _)| n == name && *l == want)
        .map_or(0.0, |(_, _, v)| v)
}

/// One sample: name, labels (sorted), value.
pub(crate) type Sample = (String, Vec<(String, String)>, f64);

/// `name{k="v",...} value` into its parts (labels sorted).
pub(crate) fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series.to_owned(), Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break,
                other => val.push(other),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels.sort();
    Some((name.to_owned(), labels, value))
}

/// The metrics text of the server at `base`.
pub(crate) async fn scrape(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    r.text().await.unwrap()
}
