//! Formatting shared by the commands: tables, sizes, ages, log lines. Pure functions, so the exact
//! text users and scripts see is unit-tested.

use chrono::{DateTime, SecondsFormat, Utc};
use paas_common::api::LogLine;

/// Collapses all whitespace runs (newlines included) into single spaces: an error is one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `512 B`, `3.4 KiB`, `1.2 MiB`, `2.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `256M` or `2G`, the way `-m` takes it.
pub fn memory(mb: u64) -> String {
    if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{}G", mb / 1024)
    } else {
        format!("{mb}M")
    }
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `2026-11-26T10:00:00.123Z [APP/web/0] OUT message`; the stream is `OUT`/`ERR` for an app's
/// stdout/stderr and left out for other sources.
pub fn log_line(l: &LogLine) -> String {
    let ts = l.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true);
    let msg = l.message.trim_end_matches(['\n', '\r']);
    match l.stream.as_str() {
        "stdout" => format!("{ts} [{}] OUT {msg}", l.source),
        "stderr" => format!("{ts} [{}] ERR {msg}", l.source),
        _ => format!("{ts} [{}] {msg}", l.source),
    }
}

/// Left-aligned columns separated by three spaces, header first; no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `-` for a missing value in a table.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn line(stream: &str, source: &str, msg: &str) -> LogLine {
        LogLine {
            timestamp: Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
                + chrono::Duration::milliseconds(123),
            source: source.into(),
            stream: stream.into(),
            message: msg.into(),
            id: 1,
        }
    }

    #[test]
    fn log_lines() {
        assert_eq!(
            log_line(&line("stdout", "APP/web/0", "hello\n")),
            "2026-11-26T10:00:00.123Z [APP/web/0] OUT hello"
        );
        assert_eq!(
            log_line(&line("stderr", "APP/web/1", "boom")),
            "2026-11-26T10:00:00.123Z [APP/web/1] ERR boom"
        );
        assert_eq!(
            log_line(&line("out", "STG", "Detected python")),
            "2026-11-26T10:00:00.123Z [STG] Detected python"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_258_291), "1.2 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(memory(256), "256M");
        assert_eq!(memory(2048), "2G");
        assert_eq!(memory(1536), "1536M");
    }

    #[test]
    fn ages() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s");
        assert_eq!(age(now - chrono::Duration::seconds(300), now), "5m");
        assert_eq!(age(now - chrono::Duration::hours(3), now), "3h");
        assert_eq!(age(now - chrono::Duration::days(2), now), "2d");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "started".into()],
                vec!["longer".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME     STATE\na        started\nlonger   -\n");
    }

    #[test]
    fn one_line_flattens() {
        assert_eq!(one_line("a\n  b\r\nc "), "a b c");
    }
}
